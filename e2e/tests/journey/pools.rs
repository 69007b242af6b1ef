//! Step 8 of the journey: a second GameCluster, the README's two-pool example (`examples/pools.yaml`: a
//! `lobby` pool and a `battle` pool) in a namespace of its own. Pairs of players are matched through the
//! lobby onto battle nodes and play (see `duel.rs`) while `kubectl scale gamepool/my-game-battle` adds a
//! battle node and a new battle image rolls: matches keep going with zero failed requests and no missing
//! push, old battle nodes drain as their matches end, new matches land on the new nodes, and the lobby's
//! pods and Deployment are the same objects before and after.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DynamicObject;

use crate::cluster::{self, is_ready, name, settled_pods, wait_for};
use crate::duel::Duels;
use crate::load::PhaseStats;
use crate::rollout::DrainWatch;
use crate::{GATE_DRAIN_SECONDS, Journey, READY_TIMEOUT, ROLLED_IMAGE, assert_no_failures, repo_root};

/// Where the two-pool GameCluster lives (its name is the example's, [`crate::GC`]).
const POOLS_NS: &str = "pools";
/// Pairs of players (two per match).
const PAIRS: usize = 15;
/// Moves per match, and the time between two moves: a match lasts about 3 s.
const MOVES: i64 = 12;
const PACE: Duration = Duration::from_millis(250);
/// The battle pool's drain deadline: far longer than a match, so a drain ends when its matches do.
const BATTLE_DRAIN_SECONDS: u64 = 30;
const LOBBY_DRAIN_SECONDS: u64 = 20;

/// Labels of the two-pool cluster's pods: a component, or a pool's nodes.
fn selector(component: &str) -> String {
    format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
        crate::GC
    )
}

fn pool_selector(pool: &str) -> String {
    format!("{},switchyard.dev/pool={pool}", selector("node"))
}

/// `examples/pools.yaml` with test-speed drain deadlines, as JSON; and the index of the battle pool.
/// Requests of this second cluster's gates and nodes. The one node has 2 CPUs, and the first cluster (its
/// pods at the default 100m, old ones still terminating after step 7's rollouts), the operator and CoreDNS
/// stay on it: at the defaults the battle pool's pods were left Pending ("Insufficient cpu"). The defaults
/// themselves are checked by the chart install test and the operator's tests.
fn second_cluster_requests() -> serde_json::Value {
    serde_json::json!({"requests": {"cpu": "20m", "memory": "64Mi"}})
}

fn pools_cluster() -> (serde_json::Value, usize) {
    let path = repo_root().join("examples/pools.yaml");
    let text = std::fs::read_to_string(&path).expect("examples/pools.yaml");
    let mut cluster: serde_json::Value = serde_saphyr::from_str(&text).expect("the example parses");
    assert_eq!(cluster["kind"], "GameCluster");
    assert_eq!(cluster["metadata"]["name"], crate::GC);
    let pools = cluster["spec"]["pools"].as_array_mut().expect("spec.pools");
    let names: Vec<&str> = pools.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["lobby", "battle"], "the example's pools");
    for pool in pools.iter_mut() {
        let deadline = if pool["name"] == "battle" {
            BATTLE_DRAIN_SECONDS
        } else {
            LOBBY_DRAIN_SECONDS
        };
        pool["drainDeadlineSeconds"] = deadline.into();
        assert_eq!(pool["replicas"], 2, "{pool}");
        pool["resources"] = second_cluster_requests();
    }
    cluster["spec"]["gate"] = serde_json::json!({
        "drainDeadlineSeconds": GATE_DRAIN_SECONDS,
        "resources": second_cluster_requests(),
    });
    assert!(
        cluster["spec"]["locator"].is_null(),
        "the example uses the managed Redis"
    );
    cluster["spec"]["locator"] = crate::managed_redis();
    (cluster, 1)
}

/// Name → uid of each pod.
fn identities(pods: &[Pod]) -> BTreeMap<String, String> {
    pods.iter()
        .map(|p| (name(p), p.metadata.uid.clone().unwrap_or_default()))
        .collect()
}

/// What must not change in the lobby: its pods (names, uids, restarts) and its Deployment's generation.
#[derive(Debug, PartialEq, Eq)]
struct Lobby {
    pods: BTreeMap<String, String>,
    restarts: i32,
    generation: i64,
}

impl Journey<'_> {
    async fn lobby(&self, pods: &Api<Pod>) -> Lobby {
        let lobby = cluster::pods(pods, &pool_selector("lobby")).await;
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), POOLS_NS);
        let deployment = deployments
            .get(&format!("{}-node-lobby", crate::GC))
            .await
            .expect("the lobby Deployment");
        Lobby {
            pods: identities(&lobby),
            restarts: lobby.iter().map(cluster::restarts).sum(),
            generation: deployment.metadata.generation.unwrap_or(0),
        }
    }

    /// The two-pool cluster once it is Ready and not progressing.
    async fn settled_pools(&self, clusters: &Api<DynamicObject>, what: &str) -> DynamicObject {
        wait_for(what, READY_TIMEOUT, || async {
            clusters
                .get(crate::GC)
                .await
                .ok()
                .filter(cluster::cluster_settled)
        })
        .await
    }

    /// 8. The two-pool cluster: apply, play matches, scale the battle pool, roll its image.
    pub(crate) async fn pools(&mut self) {
        // The first cluster's players keep playing meanwhile: another namespace's rollout must not touch them.
        let game_phase = self.swarm.phase("8 my-game while pools roll");
        self.summary.promise(&game_phase.name, "failed = 0, moved = 0");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), POOLS_NS);
        let clusters = cluster::gameclusters(&self.client, POOLS_NS);
        self.harness.create_namespace(POOLS_NS).await.expect("namespace");
        let (manifest, battle_index) = pools_cluster();
        let path = self.dir.join("gamecluster-pools.json");
        std::fs::write(&path, serde_json::to_string_pretty(&manifest).expect("json")).expect("write");
        let applied = Instant::now();
        self.tools
            .kubectl(&["apply", "-n", POOLS_NS, "-f", path.to_str().expect("utf-8 path")])
            .await;
        self.settled_pools(&clusters, "the two-pool GameCluster to report Ready")
            .await;
        settled_pods(&pods, &selector("gate"), 2, READY_TIMEOUT).await;
        let lobby = settled_pods(&pods, &pool_selector("lobby"), 2, READY_TIMEOUT).await;
        let battle = settled_pods(&pods, &pool_selector("battle"), 2, READY_TIMEOUT).await;
        let ready_after = applied.elapsed();
        let gamepools = self
            .tools
            .kubectl(&["get", "gamepools", "-n", POOLS_NS, "-o", "name"])
            .await;
        let gamepool_names: BTreeSet<&str> = gamepools.lines().collect();
        assert_eq!(
            gamepool_names,
            BTreeSet::from([
                "gamepool.switchyard.dev/my-game-battle",
                "gamepool.switchyard.dev/my-game-lobby"
            ]),
            "one GamePool per pool"
        );
        self.summary.time(
            "kubectl apply (two pools) -> GameCluster Ready",
            ready_after,
            "2 gates, lobby 2, battle 2, managed Redis",
        );
        self.step(&format!(
            "8. kubectl apply examples/pools.yaml in {POOLS_NS}: Ready after {:.1}s; lobby {:?}, battle {:?}; {}",
            ready_after.as_secs_f64(),
            lobby.iter().map(name).collect::<Vec<_>>(),
            battle.iter().map(name).collect::<Vec<_>>(),
            gamepools.lines().collect::<Vec<_>>().join(", ")
        ));

        // Pairs log in through the lobby, are matched on battle nodes and play.
        let entrances = self.gate_entrances(POOLS_NS).await;
        let phase_name = "8 pools: pairs log in, first matches";
        self.summary
            .promise(phase_name, "failed = 0 (replies and pushes)");
        let duels = Duels::start(&entrances, phase_name, PAIRS, 5000, MOVES, PACE);
        wait_for(
            "every pair to be matched once",
            Duration::from_secs(90),
            || async { (duels.pairs_matched() == PAIRS).then_some(()) },
        )
        .await;
        assert_no_failures(&duels.shared.phase());
        let battle_names: BTreeSet<String> = battle.iter().map(name).collect();
        let phase = duels.shared.begin_phase("8 pools: matches");
        self.summary
            .promise(&phase.name, "failed = 0 (replies and pushes)");
        let since = Instant::now();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let on = duels.started_since(since);
        assert!(
            on.keys().all(|n| battle_names.contains(n)) && on.len() == 2,
            "matches land on both battle nodes, and only on them: {on:?}"
        );
        assert_no_failures(&phase);
        self.step(&format!(
            "   {PAIRS} pairs matched via the lobby; 5 s of play: matches started by battle node {on:?}; {}",
            phase.line()
        ));

        // kubectl scale the battle pool: a third battle node takes new matches; the lobby is untouched.
        let lobby_before = self.lobby(&pods).await;
        let phase = duels.shared.begin_phase("8 pools: scale battle 2->3");
        self.summary.promise(&phase.name, "failed = 0; lobby untouched");
        let scaled = Instant::now();
        self.tools
            .kubectl(&[
                "scale",
                "-n",
                POOLS_NS,
                &format!("gamepool/{}-battle", crate::GC),
                "--replicas=3",
            ])
            .await;
        let battle = settled_pods(&pods, &pool_selector("battle"), 3, READY_TIMEOUT).await;
        let added: Vec<String> = battle
            .iter()
            .map(name)
            .filter(|n| !battle_names.contains(n))
            .collect();
        assert_eq!(added.len(), 1, "one new battle pod: {added:?}");
        let new_pod = added[0].clone();
        let new_ready = Instant::now();
        let first_there = wait_for(
            &format!("a new match on {new_pod}"),
            Duration::from_secs(60),
            || async { duels.started_since(new_ready).get(&new_pod).copied() },
        )
        .await;
        let landed = scaled.elapsed();
        // The GamePool's scale does not change the GameCluster's generation: wait for its status to count 3.
        let battle_status = wait_for(
            "status.pools to count 3 ready battle nodes",
            READY_TIMEOUT,
            || async {
                let cluster = clusters.get(crate::GC).await.ok()?;
                let battle = cluster.data["status"]["pools"]
                    .as_array()?
                    .iter()
                    .find(|p| p["name"] == "battle")?
                    .clone();
                (cluster::cluster_settled(&cluster) && battle["ready"] == 3).then_some(battle)
            },
        )
        .await;
        assert_eq!(self.lobby(&pods).await, lobby_before, "the lobby is untouched");
        assert_no_failures(&phase);
        self.summary.time(
            "kubectl scale gamepool battle 2->3 -> a match on it",
            landed,
            new_pod.clone(),
        );
        self.step(&format!(
            "   kubectl scale gamepool/{}-battle --replicas=3: {new_pod} Ready, {first_there} new match(es) there after {:.1}s; status.pools battle {battle_status}; lobby unchanged; {}",
            crate::GC,
            landed.as_secs_f64(),
            phase.line()
        ));

        // Roll the battle pool's image under load.
        let phase = duels.shared.begin_phase("8 pools: battle rollout");
        self.summary.promise(
            &phase.name,
            "failed = 0; no match on a drained pod; lobby untouched",
        );
        let old_names: BTreeSet<String> = battle.iter().map(name).collect();
        let drain_watch = DrainWatch::start(&battle);
        let running_before = duels.running();
        let started = Instant::now();
        let patch =
            format!(r#"[{{"op":"add","path":"/spec/pools/{battle_index}/image","value":"{ROLLED_IMAGE}"}}]"#);
        self.tools
            .kubectl(&[
                "patch",
                "-n",
                POOLS_NS,
                &format!("gc/{}", crate::GC),
                "--type=json",
                "-p",
                &patch,
            ])
            .await;
        let drains = drain_watch
            .all_drained("the old battle pods to drain (readyz 503)")
            .await;
        let first_drain = drains.values().min().copied().expect("a drain");
        self.step(&format!(
            "   battle image -> {ROLLED_IMAGE}: old battle pods {old_names:?} drained after {:.1}s, running matches {running_before:?}",
            (first_drain - started).as_secs_f64()
        ));
        let mut took = BTreeMap::new();
        for pod in &old_names {
            let exit = self
                .exit_in(
                    POOLS_NS,
                    pod,
                    "node",
                    Duration::from_secs(BATTLE_DRAIN_SECONDS + 60),
                )
                .await;
            assert!(!exit.killed(), "{pod} exited by itself: {exit:?}");
            let t = exit.after_delete.unwrap_or_default();
            assert!(
                t < Duration::from_secs(BATTLE_DRAIN_SECONDS),
                "{pod} exited when its matches ended ({t:?}), before its drain deadline"
            );
            took.insert(pod.clone(), format!("{:.1}s", t.as_secs_f64()));
            assert_eq!(exit.exit_code, 0, "{pod}: {exit:?}");
            assert!(
                self.container_log_with(POOLS_NS, pod, "node", "drained: no player left")
                    .await
                    .contains("drained: no player left"),
                "{pod} drained empty"
            );
        }
        self.settled_pools(&clusters, "the GameCluster Ready after the battle rollout")
            .await;
        let rollout = started.elapsed();
        drop(drain_watch);
        let new = settled_pods(&pods, &pool_selector("battle"), 3, READY_TIMEOUT).await;
        for pod in &new {
            let image = pod.spec.as_ref().and_then(|s| s.containers[0].image.clone());
            assert_eq!(image.as_deref(), Some(ROLLED_IMAGE), "{}", name(pod));
            assert!(is_ready(pod));
        }
        let digests = crate::rollout::image_ids(&battle, &new);
        let new_names: BTreeSet<String> = new.iter().map(name).collect();
        // No match was queued on a pod after it drained; matches queued since went to the new pods.
        for record in duels.matches() {
            if let Some(drained) = drains.get(&record.node) {
                assert!(
                    record.queued < *drained,
                    "pair {} matched on {} after it drained",
                    record.pair,
                    record.node
                );
            }
        }
        // Matches queued once every old pod drained (the drains are seen up to 100 ms apart).
        let last_drain = drains.values().max().copied().expect("a drain");
        let after_drain = duels.started_since(last_drain);
        assert!(
            !after_drain.is_empty() && after_drain.keys().all(|n| new_names.contains(n)),
            "new matches land on the new battle pods: {after_drain:?}"
        );
        assert_eq!(self.lobby(&pods).await, lobby_before, "the lobby is untouched");
        assert_no_failures(&phase);
        let pushes = PhaseStats::get(&phase.pushes);
        assert!(
            pushes > 0 && PhaseStats::get(&phase.logins) > 0,
            "moves were pushed and lobby logins went on during the rollout: {}",
            phase.line()
        );
        assert!(
            running_before.keys().any(|n| old_names.contains(n)),
            "matches ran on the old battle pods when the rollout began: {running_before:?}"
        );
        self.summary.time(
            "battle image rollout under load -> Ready",
            rollout,
            format!("old pods exited after draining {took:?}"),
        );
        self.step(&format!(
            "   battle rolled in {:.1}s ({digests}): old pods exited (code 0) after draining {took:?}; matches since the drain {after_drain:?}; lobby pods {:?} unchanged; {pushes} pushes; {}",
            rollout.as_secs_f64(),
            lobby_before.pods.keys().collect::<Vec<_>>(),
            phase.line()
        ));

        // The pairs finish their matches and leave; the two-pool cluster goes.
        self.other_phases.extend(duels.shared.phases());
        duels.stop().await;
        self.tools
            .kubectl(&[
                "delete",
                "-n",
                POOLS_NS,
                &format!("gc/{}", crate::GC),
                "--wait=true",
            ])
            .await;
        wait_for(
            "every pod of the two-pool cluster to go",
            READY_TIMEOUT,
            || async {
                cluster::pods(&pods, &format!("app.kubernetes.io/instance={}", crate::GC))
                    .await
                    .is_empty()
                    .then_some(())
            },
        )
        .await;
        let left = wait_for(
            &format!("nothing left in {POOLS_NS}"),
            Duration::from_secs(60),
            || async {
                let left = self.leftovers(POOLS_NS).await;
                left.is_empty().then_some(left)
            },
        )
        .await;
        assert_no_failures(&game_phase);
        assert_eq!(
            PhaseStats::get(&game_phase.moved),
            0,
            "{:#?}",
            game_phase.samples()
        );
        self.step(&format!(
            "   two-pool cluster deleted, {left:?} left in {POOLS_NS}; {} meanwhile: {}",
            crate::GC,
            game_phase.line()
        ));
    }
}

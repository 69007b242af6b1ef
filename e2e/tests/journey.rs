//! The user journey, on a real control plane, with the real `switchyard` binary in every gate, node and
//! operator pod (the chart's image `switchyard:<appVersion>` runs as `target/debug/switchyard`; see
//! `e2e/README.md`). Each step asserts its outcome:
//!
//! 1. `helm install` the chart (two operator replicas): the operator pods become Ready and one of them
//!    holds the leader Lease.
//! 2. `kubectl apply` the README's example GameCluster (`examples/minimal.yaml`: managed Redis), with
//!    short drain deadlines for speed: gates, nodes and Redis become Ready, the GameCluster reports Ready,
//!    and the EndpointSlices list the pods.
//! 3. 200 players connect to the gates' pod IPs, log in and play: echo, whoami (names the node the login
//!    bound them to), rooms, and pushes that cross gates. Zero failed requests.
//! 4. `kubectl scale gc/my-game --replicas=4`: the new nodes take new logins. Most players of an old node
//!    leave the game, then `--replicas=2`: the two nodes with the fewest players go (pod-deletion-cost),
//!    each drains first (unready, still serving its players), its players log out and back in elsewhere,
//!    and it exits by itself before its deadline. Zero failed requests.
//! 5. The node image rolls while players play: old pods drain (no login lands on them), the players of one
//!    log out and in again elsewhere, the other keeps its players until its drain deadline.
//! 6. The gate image rolls: every client is told to reconnect elsewhere and keeps its node.
//! 7. Faults: kill -9 of a node process, the Redis pod deleted, the operator leader SIGKILLed mid-rollout.
//! 8. The two-pool example (`examples/pools.yaml`: `lobby` and `battle`) in a second namespace: pairs of
//!    players log in through the lobby, are matched onto battle nodes and play (moves and their pushes);
//!    `kubectl scale gamepool/my-game-battle` adds a battle node, then the battle image rolls under load.
//!    Zero failed requests or missing pushes; the lobby's pods and Deployment are untouched; the first
//!    cluster's players meanwhile see nothing (see `journey/pools.rs`).
//! 9. Players log out; deleting the GameClusters and `helm uninstall` leave nothing behind.
//!
//! The summary (timings, and requests sent / failed per phase) is printed at the end and written to
//! `summary.txt` in the run directory.

#[path = "journey/kube.rs"]
mod cluster;
#[path = "journey/duel.rs"]
mod duel;
#[path = "journey/load.rs"]
mod load;
#[path = "journey/pools.rs"]
mod pools;
#[path = "journey/summary.rs"]
mod summary;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DynamicObject;
use switchyard_e2e::{
    ContainerExit, ExitCause, Harness, KubeletConfig, KubeletEvent, PodKey, RunDir, http_get,
};

use cluster::{Clock, Tools, endpoints, gameclusters, is_ready, name, pod_ip, settled_pods, wait_for};
use load::{PhaseStats, Player, Swarm};
use summary::Summary;

/// Where the chart installs the operator.
const SYSTEM_NS: &str = "switchyard-system";
/// The release name (the operator's Deployment and Lease are `switchyard-operator`).
const RELEASE: &str = "switchyard";
const OPERATOR: &str = "switchyard-operator";
/// Where the GameCluster lives, and its name (the example's).
const NS: &str = "game";
const GC: &str = "my-game";
const PLAYERS: usize = 200;
/// Each player makes one request (or a join + say pair) per period while the load runs.
const PERIOD: Duration = Duration::from_secs(1);
/// Test-speed drain deadlines written into the example.
const NODE_DRAIN_SECONDS: i64 = 20;
const GATE_DRAIN_SECONDS: i64 = 5;

#[test]
#[ignore = "run via e2e/run.sh"]
fn journey() {
    let Some(run) = switchyard_e2e::isolate().expect("network namespace") else {
        return;
    };
    switchyard_e2e::runtime().block_on(journey_body(run));
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives in the workspace")
        .to_path_buf()
}

fn selector(component: &str) -> String {
    format!("app.kubernetes.io/instance={GC},app.kubernetes.io/component={component}")
}

const OPERATOR_SELECTOR: &str = "app.kubernetes.io/instance=switchyard,app.kubernetes.io/component=operator";

/// The README's example GameCluster with the journey's test-speed deadlines, as JSON (kubectl reads it).
fn example_cluster() -> serde_json::Value {
    let path = repo_root().join("examples/minimal.yaml");
    let text = std::fs::read_to_string(&path).expect("examples/minimal.yaml");
    let mut cluster: serde_json::Value = serde_saphyr::from_str(&text).expect("the example parses");
    assert_eq!(cluster["kind"], "GameCluster");
    assert_eq!(cluster["metadata"]["name"], GC);
    assert!(
        cluster["spec"]["locator"].is_null(),
        "the example uses the managed Redis"
    );
    cluster["spec"]["node"] = serde_json::json!({"drainDeadlineSeconds": NODE_DRAIN_SECONDS});
    cluster["spec"]["gate"] = serde_json::json!({"drainDeadlineSeconds": GATE_DRAIN_SECONDS});
    cluster
}

/// Keeps the swarm's gate list equal to the gate pods that are Ready and not terminating.
fn watch_gates(pods: Api<Pod>, shared: Arc<load::Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let ready: Vec<String> = cluster::pods(&pods, &selector("gate"))
                .await
                .iter()
                .filter(|p| is_ready(p))
                .map(pod_ip)
                .collect();
            if !ready.is_empty() {
                shared.set_gates(&ready);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

fn assert_no_failures(stats: &PhaseStats) {
    assert_eq!(
        PhaseStats::get(&stats.failed),
        0,
        "phase {:?}: failed requests: {:#?}",
        stats.name,
        stats.samples()
    );
}

/// What every phase uses.
struct Journey<'h> {
    harness: &'h Harness,
    client: kube::Client,
    tools: Tools,
    /// Pods of the GameCluster's namespace.
    pods: Api<Pod>,
    clusters: Api<DynamicObject>,
    swarm: Swarm,
    summary: Summary,
    /// Phases counted by other players than the swarm's (the two-pool cluster's pairs).
    other_phases: Vec<Arc<PhaseStats>>,
    clock: Clock,
    dir: PathBuf,
}

async fn journey_body(run: RunDir) {
    let clock = Clock(Instant::now());
    let dir = run.path().to_owned();
    let harness = Harness::start(run, KubeletConfig::default())
        .await
        .expect("the harness starts");
    clock.step("control plane ready, node registered");
    let client = harness.client();
    let mut journey = Journey {
        harness: &harness,
        tools: Tools::new(
            harness.control_plane().bin_dir(),
            harness.control_plane().kubeconfig(),
            &dir,
        ),
        pods: Api::namespaced(client.clone(), NS),
        clusters: gameclusters(&client, NS),
        client,
        swarm: Swarm::new(PERIOD),
        summary: Summary::default(),
        other_phases: Vec::new(),
        clock,
        dir,
    };
    journey.install().await;
    journey.apply().await;
    let gate_watch = watch_gates(journey.pods.clone(), journey.swarm.shared.clone());
    journey.play().await;
    journey.scale().await;
    journey.roll_nodes().await;
    journey.roll_gates().await;
    journey.kill_node().await;
    journey.delete_redis().await;
    journey.kill_operator().await;
    journey.pools().await;

    // The players log out and leave, then everything is uninstalled.
    journey.swarm.set_running(false);
    let phase = journey.swarm.phase("9 players log out");
    journey.summary.promise(&phase.name, "failed = 0");
    for chunk in journey.swarm.players().chunks(40) {
        let shared = &journey.swarm.shared;
        let results = futures_util::future::join_all(chunk.iter().map(|p| p.logout(shared))).await;
        assert!(results.iter().all(Result::is_ok), "logouts: {results:?}");
    }
    assert_no_failures(&phase);
    let mut phases = journey.swarm.phases();
    phases.append(&mut journey.other_phases);
    phases.sort_by_key(|p| p.started);
    let swarm = std::mem::replace(&mut journey.swarm, Swarm::new(PERIOD));
    swarm.stop().await;
    gate_watch.abort();
    journey.uninstall().await;

    // The end: the summary.
    let Journey {
        summary, clock, dir, ..
    } = journey;
    let table = summary.render(&phases);
    eprintln!("\n{table}");
    std::fs::write(dir.join("summary.txt"), &table).expect("write summary.txt");
    harness.shutdown().await;
    clock.step("torn down");
}

impl Journey<'_> {
    fn step(&self, what: &str) {
        self.clock.step(what);
    }

    /// 1. helm install: the operator becomes Ready and holds the leader Lease.
    async fn install(&mut self) {
        let chart = repo_root().join("charts/switchyard");
        let installed = Instant::now();
        self.tools
            .helm(&[
                "install",
                RELEASE,
                chart.to_str().expect("utf-8 path"),
                "--namespace",
                SYSTEM_NS,
                "--create-namespace",
                "--set",
                "replicas=2",
            ])
            .await;
        let system_pods: Api<Pod> = Api::namespaced(self.client.clone(), SYSTEM_NS);
        let operators = settled_pods(&system_pods, OPERATOR_SELECTOR, 2, Duration::from_secs(120)).await;
        let operator_names: BTreeSet<String> = operators.iter().map(name).collect();
        for pod in &operators {
            let (status, _) = http_get(&pod_ip(pod), 9090, "/readyz", &[])
                .await
                .expect("the operator's admin port answers");
            assert_eq!(status, 200, "{} is ready", name(pod));
        }
        let leader = self.leader(&operator_names, Duration::from_secs(60)).await;
        self.summary.time(
            "helm install -> operator Ready, Lease held",
            installed.elapsed(),
            format!("leader {leader}"),
        );
        self.step(&format!(
            "1. helm install: operators {operator_names:?} Ready; {leader} holds the Lease"
        ));
    }

    /// The holder of the operator's Lease, once it is one of `candidates`.
    async fn leader(&self, candidates: &BTreeSet<String>, timeout: Duration) -> String {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), SYSTEM_NS);
        wait_for("the leader Lease", timeout, || async {
            let lease = leases.get_opt(OPERATOR).await.ok()??;
            let holder = lease.spec?.holder_identity?;
            candidates.contains(&holder).then_some(holder)
        })
        .await
    }

    /// Waits until the GameCluster is Ready and no longer progressing (for its current generation).
    async fn ready_cluster(&self, what: &str, timeout: Duration) -> DynamicObject {
        wait_for(what, timeout, || async {
            self.clusters.get(GC).await.ok().filter(cluster::cluster_settled)
        })
        .await
    }

    /// 2. kubectl apply the example: gates, nodes and Redis Ready; the GameCluster Ready; EndpointSlices.
    async fn apply(&mut self) {
        self.harness.create_namespace(NS).await.expect("namespace");
        let manifest = self.dir.join("gamecluster.json");
        std::fs::write(
            &manifest,
            serde_json::to_string_pretty(&example_cluster()).expect("json"),
        )
        .expect("write the manifest");
        let applied = Instant::now();
        self.tools
            .kubectl(&["apply", "-n", NS, "-f", manifest.to_str().expect("utf-8 path")])
            .await;
        self.ready_cluster("the GameCluster to report Ready", Duration::from_secs(180))
            .await;
        let apply_to_ready = applied.elapsed();
        self.summary.time(
            "kubectl apply -> GameCluster Ready",
            apply_to_ready,
            "2 gates, 2 nodes, managed Redis",
        );
        let gates = settled_pods(&self.pods, &selector("gate"), 2, Duration::from_secs(30)).await;
        let nodes = settled_pods(&self.pods, &selector("node"), 2, Duration::from_secs(30)).await;
        let redis = settled_pods(&self.pods, &selector("redis"), 1, Duration::from_secs(30)).await;
        for (service, members) in [
            (format!("{GC}-node"), &nodes),
            (format!("{GC}-gate-headless"), &gates),
            (format!("{GC}-gate"), &gates),
            (format!("{GC}-redis"), &redis),
        ] {
            self.wait_endpoints(&service, members).await;
        }
        let status = self.clusters.get(GC).await.expect("the GameCluster").data["status"].clone();
        assert_eq!(status["gate"]["ready"], 2, "status: {status}");
        assert_eq!(status["node"]["ready"], 2, "status: {status}");
        self.swarm
            .set_gates(&gates.iter().map(pod_ip).collect::<Vec<_>>());
        self.step(&format!(
            "2. kubectl apply: GameCluster Ready after {:.1}s; gates {:?}, nodes {:?}, redis {:?}; EndpointSlices list them",
            apply_to_ready.as_secs_f64(),
            gates.iter().map(pod_ip).collect::<Vec<_>>(),
            nodes.iter().map(name).collect::<Vec<_>>(),
            redis.iter().map(pod_ip).collect::<Vec<_>>(),
        ));
    }

    /// Waits until the EndpointSlices of `service` list exactly `members`, ready.
    async fn wait_endpoints(&self, service: &str, members: &[Pod]) {
        let want: BTreeSet<(String, bool)> = members.iter().map(|p| (pod_ip(p), true)).collect();
        wait_for(
            &format!("the EndpointSlices of {service} to list {want:?}"),
            Duration::from_secs(30),
            || async { (endpoints(&self.client, NS, service).await == want).then_some(()) },
        )
        .await;
    }

    /// 3. 200 players log in through the gates' pod IPs and play.
    async fn play(&mut self) {
        let nodes = cluster::pods(&self.pods, &selector("node")).await;
        let phase = self.swarm.phase("3 login and play");
        self.summary.promise(&phase.name, "failed = 0, moved = 0");
        let players = self.swarm.add_players(PLAYERS);
        let failures = self.swarm.login(&players).await;
        assert!(failures.is_empty(), "logins failed: {failures:#?}");
        let node_names: BTreeSet<String> = nodes.iter().map(name).collect();
        let by_node = self.swarm.by_node();
        assert_eq!(
            by_node.keys().cloned().collect::<BTreeSet<_>>(),
            node_names,
            "logins land on both nodes (and only on them)"
        );
        let gate_addresses: BTreeSet<String> = players.iter().map(|p| p.gate()).collect();
        assert_eq!(gate_addresses.len(), 2, "players connect to both gates");
        self.step(&format!(
            "3. {PLAYERS} players logged in via {gate_addresses:?}: {}",
            count_by_node(&self.swarm)
        ));
        for player in &players {
            let node = player.whoami(&self.swarm.shared).await.expect("whoami");
            assert_eq!(node, player.node(), "whoami names the node of the login");
        }
        cross_gate_pushes(&self.swarm, &by_node).await;
        self.step("   whoami names each player's node; room pushes reach members on both gates");
        self.swarm.set_running(true);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_no_failures(&phase);
        assert_eq!(PhaseStats::get(&phase.moved), 0, "{:#?}", phase.samples());
        assert!(PhaseStats::get(&phase.pushes) > 0, "pushes arrive");
        self.step(&format!("   10 s of play: {}", phase.line()));
    }

    /// 4. kubectl scale up: the new nodes take new logins. Scale down: the nodes with the fewest players
    ///    go, each draining first; zero failed requests throughout.
    async fn scale(&mut self) {
        let phase = self.swarm.phase("4 scale up 2->4, new logins");
        self.summary.promise(&phase.name, "failed = 0, moved = 0");
        let before: BTreeSet<String> = cluster::pods(&self.pods, &selector("node"))
            .await
            .iter()
            .map(name)
            .collect();
        let scaled = Instant::now();
        self.tools
            .kubectl(&["scale", "-n", NS, &format!("gc/{GC}"), "--replicas=4"])
            .await;
        let nodes = settled_pods(&self.pods, &selector("node"), 4, Duration::from_secs(90)).await;
        self.ready_cluster("the GameCluster Ready with 4 nodes", Duration::from_secs(60))
            .await;
        self.summary
            .time("kubectl scale 2->4 -> GameCluster Ready", scaled.elapsed(), "");
        let added: BTreeSet<String> = nodes.iter().map(name).filter(|n| !before.contains(n)).collect();
        assert_eq!(added.len(), 2, "two new node pods");
        self.wait_endpoints(&format!("{GC}-node"), &nodes).await;
        // The gates learn of the new nodes from the EndpointSlices; new logins then reach them.
        let newcomers = self.swarm.add_players(40);
        let failures = self.swarm.login(&newcomers).await;
        assert!(failures.is_empty(), "logins failed: {failures:#?}");
        let landed = wait_for(
            "new logins to reach both new nodes",
            Duration::from_secs(30),
            || async {
                let on_new: BTreeMap<String, usize> = newcomers.iter().fold(BTreeMap::new(), |mut acc, p| {
                    if added.contains(&p.node()) {
                        *acc.entry(p.node()).or_default() += 1;
                    }
                    acc
                });
                if on_new.len() == added.len() {
                    return Some(on_new);
                }
                // A gate may not have linked to a new node yet: those players log in again.
                for player in newcomers.iter().filter(|p| !added.contains(&p.node())) {
                    player
                        .logout_and_login(&self.swarm.shared)
                        .await
                        .expect("log out and in again");
                }
                None
            },
        )
        .await;
        assert_no_failures(&phase);
        assert_eq!(PhaseStats::get(&phase.moved), 0, "{:#?}", phase.samples());
        self.step(&format!(
            "4. scaled to 4 nodes in {:.1}s; new logins reach the new nodes {landed:?}; {}",
            scaled.elapsed().as_secs_f64(),
            count_by_node(&self.swarm)
        ));

        // Make an old node the emptiest: most of its players leave the game (log out, stay connected). The
        // ReplicaSet must then pick it (by pod-deletion-cost), not just the newest pods.
        let phase = self.swarm.phase("4 scale down 4->2, drains");
        self.summary.promise(&phase.name, "failed = 0, moved = 0");
        let oldest = before.iter().next().expect("an old node").clone();
        let leavers: Vec<Arc<Player>> = self.swarm.by_node()[&oldest].iter().skip(3).cloned().collect();
        for player in &leavers {
            player.logout(&self.swarm.shared).await.expect("logout");
        }
        let counts = self.player_counts(&nodes);
        self.wait_reported(&counts).await;
        let mut ranked: Vec<(usize, String)> = counts.iter().map(|(n, c)| (*c, n.clone())).collect();
        ranked.sort();
        self.step(&format!(
            "   {} players of {oldest} left the game; bound players reported on the pods: {counts:?}",
            leavers.len()
        ));
        let scaled = Instant::now();
        self.tools
            .kubectl(&["scale", "-n", NS, &format!("gc/{GC}"), "--replicas=2"])
            .await;
        let victims: BTreeSet<String> = wait_for(
            "two node pods to start terminating",
            Duration::from_secs(30),
            || async {
                let terminating: BTreeSet<String> = cluster::pods(&self.pods, &selector("node"))
                    .await
                    .iter()
                    .filter(|p| cluster::is_terminating(p))
                    .map(name)
                    .collect();
                (terminating.len() == 2).then_some(terminating)
            },
        )
        .await;
        let most_leaving = victims.iter().map(|v| counts[v]).max().unwrap_or(0);
        let fewest_staying = counts
            .iter()
            .filter(|(n, _)| !victims.contains(*n))
            .map(|(_, c)| *c)
            .min()
            .unwrap_or(0);
        assert!(
            most_leaving <= fewest_staying && victims.contains(&oldest),
            "the nodes with the fewest players go: {victims:?} of {counts:?}"
        );
        // Each drains first: unready (no new players), yet its players keep playing on it.
        for victim in &victims {
            let ip = pod_ip(
                &nodes
                    .iter()
                    .find(|p| name(p) == *victim)
                    .expect("victim pod")
                    .clone(),
            );
            wait_for(
                &format!("{victim} to report not ready while draining"),
                Duration::from_secs(10),
                || async { (http_get(&ip, 9090, "/readyz", &[]).await?.0 == 503).then_some(()) },
            )
            .await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let staying: Vec<Arc<Player>> = self
            .swarm
            .players()
            .iter()
            .filter(|p| victims.contains(&p.node()))
            .cloned()
            .collect();
        for player in &staying {
            let node = player
                .whoami(&self.swarm.shared)
                .await
                .expect("whoami on a draining node");
            assert!(
                victims.contains(&node),
                "a draining node still serves its players"
            );
        }
        self.step(&format!(
            "   scaled down: {victims:?} draining (readyz 503), still serving their {} players",
            staying.len()
        ));
        // Their players log out and come back: they land on the remaining nodes, and the drained nodes exit.
        for player in &staying {
            let node = player
                .logout_and_login(&self.swarm.shared)
                .await
                .expect("log out and in again");
            assert!(!victims.contains(&node), "no login lands on a draining node");
        }
        for victim in &victims {
            let exit = self
                .exit_of(victim, Duration::from_secs(NODE_DRAIN_SECONDS as u64 + 20))
                .await;
            match exit.cause {
                ExitCause::Terminated { killed, took, .. } => {
                    assert!(!killed, "{victim} exited by itself");
                    assert!(
                        took < Duration::from_secs(NODE_DRAIN_SECONDS as u64),
                        "{victim} exited when its players left ({took:?}), before its drain deadline"
                    );
                }
                other => panic!("{victim} ended by {other:?}"),
            }
            assert_eq!(exit.exit_code, 0, "{victim}: {}", exit.status);
            let log = self.container_log(victim, "node");
            assert!(
                log.contains("drained: no player left"),
                "{victim} drained empty:\n{log}"
            );
        }
        self.ready_cluster("the GameCluster Ready with 2 nodes", Duration::from_secs(60))
            .await;
        let remaining = settled_pods(&self.pods, &selector("node"), 2, Duration::from_secs(30)).await;
        self.summary.time(
            "kubectl scale 4->2 -> drained, GameCluster Ready",
            scaled.elapsed(),
            "players of the drained nodes logged out and back in",
        );
        // The players who left come back.
        let failures = self.swarm.login(&leavers).await;
        assert!(failures.is_empty(), "logins failed: {failures:#?}");
        for player in &leavers {
            player.set_paused(false);
        }
        let remaining: BTreeSet<String> = remaining.iter().map(name).collect();
        for player in self.swarm.players() {
            assert!(
                remaining.contains(&player.node()),
                "uid {} on {}",
                player.uid,
                player.node()
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_no_failures(&phase);
        assert_eq!(PhaseStats::get(&phase.moved), 0, "{:#?}", phase.samples());
        self.step(&format!(
            "   {victims:?} drained and exited (code 0) in {:.1}s; GameCluster Ready; {}; {}",
            scaled.elapsed().as_secs_f64(),
            count_by_node(&self.swarm),
            phase.line()
        ));
    }

    /// 5. Roll the node template (a new image tag) while players are bound and the load runs.
    async fn roll_nodes(&mut self) {
        let phase = self.swarm.phase("5 node rollout");
        self.summary
            .promise(&phase.name, "failed = 0; no login on a drained pod");
        let old = settled_pods(&self.pods, &selector("node"), 2, Duration::from_secs(30)).await;
        let old_names: BTreeSet<String> = old.iter().map(name).collect();
        let (drained_at, drain_watches) = watch_drains(&old);
        let (progress, progress_watch) = watch_status(self.clusters.clone());
        // Players who keep logging out and in: a steady stream of new logins during the rollout.
        let churners: Vec<Arc<Player>> = self.swarm.players().iter().step_by(12).cloned().collect();
        let (stop_churn, churn) = churn(churners, self.swarm.shared.clone());

        let started = Instant::now();
        self.tools
            .kubectl(&[
                "patch",
                "-n",
                NS,
                &format!("gc/{GC}"),
                "--type=merge",
                "-p",
                r#"{"spec":{"node":{"image":"switchyard:rolled"}}}"#,
            ])
            .await;
        // Once a pod of the new template is ready, the operator drains every old pod at once.
        let drains: BTreeMap<String, Instant> = wait_for(
            "the old node pods to drain (readyz 503)",
            Duration::from_secs(60),
            || async {
                let drains = drained_at.lock().expect("drains").clone();
                (drains.len() == old_names.len()).then_some(drains)
            },
        )
        .await;
        let first_drain = drains.values().min().copied().expect("a drain");
        self.step(&format!(
            "5. node image -> switchyard:rolled: old pods {old_names:?} drained after {:.1}s",
            (first_drain - started).as_secs_f64()
        ));
        // Bound players keep playing on the draining pods for a while.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut old_iter = old_names.iter();
        let leaving = old_iter.next().expect("an old pod").clone();
        let staying = old_iter.next().expect("another old pod").clone();
        let on_leaving: Vec<Arc<Player>> = self
            .swarm
            .players()
            .iter()
            .filter(|p| p.node() == leaving)
            .cloned()
            .collect();
        let on_staying = self
            .swarm
            .players()
            .iter()
            .filter(|p| p.node() == staying)
            .count();
        assert!(
            !on_leaving.is_empty() && on_staying > 0,
            "both old pods still hold players while draining"
        );
        // The players of one old pod log out and in again: they land on new pods, and it exits. The other
        // keeps its players until its drain deadline, when it tells them to reconnect.
        for player in &on_leaving {
            let node = player
                .logout_and_login(&self.swarm.shared)
                .await
                .expect("log out and in again");
            assert!(
                !old_names.contains(&node),
                "uid {} landed on old pod {node}",
                player.uid
            );
        }
        let exit = self.exit_of(&leaving, Duration::from_secs(30)).await;
        let left_after = drains[&leaving].elapsed();
        assert!(
            matches!(exit.cause, ExitCause::Terminated { killed: false, .. }) && exit.exit_code == 0,
            "{leaving}: {exit:?}"
        );
        assert!(
            self.container_log(&leaving, "node")
                .contains("drained: no player left"),
            "{leaving} drained empty"
        );
        self.step(&format!(
            "   {leaving}: its {} players logged out and in again (all on new pods); it exited (code 0) {:.1}s after its drain began",
            on_leaving.len(),
            left_after.as_secs_f64()
        ));
        let exit = self
            .exit_of(&staying, Duration::from_secs(NODE_DRAIN_SECONDS as u64 + 30))
            .await;
        let stayed_for = drains[&staying].elapsed();
        assert!(
            matches!(exit.cause, ExitCause::Terminated { killed: false, .. }) && exit.exit_code == 0,
            "{staying}: {exit:?}"
        );
        assert!(
            stayed_for >= Duration::from_secs(NODE_DRAIN_SECONDS as u64 - 2),
            "{staying} kept its players until its deadline ({stayed_for:?})"
        );
        assert!(
            self.container_log(&staying, "node")
                .contains("drain deadline passed"),
            "{staying} reached its drain deadline"
        );
        self.step(&format!(
            "   {staying}: kept its {on_staying} players until its {NODE_DRAIN_SECONDS}s deadline, told them to reconnect, exited (code 0)"
        ));
        let ready = self
            .ready_cluster("the GameCluster Ready after the rollout", Duration::from_secs(60))
            .await;
        let rollout = started.elapsed();
        stop_churn.store(true, Ordering::Relaxed);
        churn.await.expect("churn");
        progress_watch.abort();
        for watch in drain_watches {
            watch.abort();
        }
        let new = settled_pods(&self.pods, &selector("node"), 2, Duration::from_secs(30)).await;
        for pod in &new {
            let image = pod.spec.as_ref().and_then(|s| s.containers[0].image.clone());
            assert_eq!(image.as_deref(), Some("switchyard:rolled"), "{}", name(pod));
        }
        let new_names: BTreeSet<String> = new.iter().map(name).collect();
        // Logins: none on a drained pod; those in the window before the first new pod was ready went to
        // the old pods (the only ones that could take players then).
        let mut window = 0;
        for landing in self.swarm.landings() {
            if let Some(drained) = drains.get(&landing.node) {
                assert!(
                    landing.sent < *drained,
                    "uid {} logged in to {} after it drained",
                    landing.uid,
                    landing.node
                );
                if landing.sent >= started {
                    window += 1;
                }
            }
        }
        let samples = progress.lock().expect("progress").clone();
        assert!(
            samples
                .iter()
                .any(|s| s.contains("RollingUpdate") && !s.contains("0 draining")),
            "the status showed the rollout and the draining pods: {samples:#?}"
        );
        // The players the deadline told to reconnect log in again on their next request.
        let on_old = || {
            self.swarm
                .players()
                .iter()
                .filter(|p| !p.node().is_empty() && !new_names.contains(&p.node()))
                .map(|p| p.uid)
                .collect::<Vec<i64>>()
        };
        load::eventually(Duration::from_secs(15), || on_old().is_empty()).await;
        let old_left = on_old();
        assert!(old_left.is_empty(), "players still on old pods: {old_left:?}");
        assert_no_failures(&phase);
        self.summary.time(
            "node rollout: patch -> old pods exited, Ready",
            rollout,
            format!(
                "old pods drained {:.1}s after the patch; {window} logins reached them before",
                (first_drain - started).as_secs_f64()
            ),
        );
        self.step(&format!(
            "   rollout done in {:.1}s: GameCluster Ready (generation {}); status went through {samples:?}; {}",
            rollout.as_secs_f64(),
            ready.metadata.generation.unwrap_or(0),
            phase.line()
        ));
    }

    /// 6. Roll the gates (a new image tag): every client is told to reconnect elsewhere, reconnects to a
    ///    new gate, logs in again and is still on its node.
    async fn roll_gates(&mut self) {
        let phase = self.swarm.phase("6 gate rollout");
        self.summary.promise(&phase.name, "failed = 0, moved = 0");
        let old = settled_pods(&self.pods, &selector("gate"), 2, Duration::from_secs(30)).await;
        let old_names: BTreeSet<String> = old.iter().map(name).collect();
        let nodes_before: BTreeMap<i64, String> =
            self.swarm.players().iter().map(|p| (p.uid, p.node())).collect();
        let started = Instant::now();
        self.tools
            .kubectl(&[
                "patch",
                "-n",
                NS,
                &format!("gc/{GC}"),
                "--type=merge",
                "-p",
                r#"{"spec":{"gate":{"image":"switchyard:rolled"}}}"#,
            ])
            .await;
        for gate in &old_names {
            let exit = self
                .exit_of(gate, Duration::from_secs(GATE_DRAIN_SECONDS as u64 + 60))
                .await;
            assert!(
                matches!(exit.cause, ExitCause::Terminated { killed: false, .. }) && exit.exit_code == 0,
                "{gate} drained and exited within its grace period: {exit:?}"
            );
        }
        let new = wait_for("two new gates, Ready", Duration::from_secs(60), || async {
            let gates = cluster::pods(&self.pods, &selector("gate")).await;
            (gates.len() == 2 && gates.iter().all(|g| is_ready(g) && !old_names.contains(&name(g))))
                .then_some(gates)
        })
        .await;
        let new_addresses: BTreeSet<String> = new
            .iter()
            .map(|g| format!("{}:{}", pod_ip(g), load::GATE_TCP_PORT))
            .collect();
        let moved_over = load::eventually(Duration::from_secs(20), || {
            self.swarm
                .players()
                .iter()
                .all(|p| new_addresses.contains(&p.gate()))
        })
        .await;
        let behind: Vec<(i64, String)> = self
            .swarm
            .players()
            .iter()
            .filter(|p| !new_addresses.contains(&p.gate()))
            .map(|p| (p.uid, p.gate()))
            .collect();
        assert!(
            moved_over,
            "every player reconnected to a new gate; not: {behind:?}"
        );
        self.ready_cluster(
            "the GameCluster Ready after the gate rollout",
            Duration::from_secs(60),
        )
        .await;
        let rollout = started.elapsed();
        for player in self.swarm.players() {
            let node = player.whoami(&self.swarm.shared).await.expect("whoami");
            assert_eq!(
                node, nodes_before[&player.uid],
                "uid {}: whoami names the node it had before the gate rollout",
                player.uid
            );
        }
        assert!(
            PhaseStats::get(&phase.reconnects) >= self.swarm.players().len() as u64,
            "every player reconnected: {}",
            phase.line()
        );
        assert_no_failures(&phase);
        assert_eq!(PhaseStats::get(&phase.moved), 0, "{:#?}", phase.samples());
        self.summary.time(
            "gate rollout: patch -> clients on new gates, Ready",
            rollout,
            format!("{} reconnects", PhaseStats::get(&phase.reconnects)),
        );
        self.step(&format!(
            "6. gates rolled in {:.1}s: old gates {old_names:?} exited (code 0); every player reconnected to {new_addresses:?} and whoami names its old node; {}",
            rollout.as_secs_f64(),
            phase.line()
        ));
    }

    /// 7a. kill -9 of a node process: the kubelet restarts it; its players' requests in flight fail, the
    ///     gates send their next ones to another node (which adopts them), and nothing fails after that.
    async fn kill_node(&mut self) {
        let phase = self.swarm.phase("7a fault: kill -9 a node");
        self.summary
            .promise(&phase.name, "only requests in flight to the killed node fail");
        let nodes = settled_pods(&self.pods, &selector("node"), 2, Duration::from_secs(30)).await;
        let victim = nodes.iter().map(name).max().expect("a node");
        let players: Vec<Arc<Player>> = self
            .swarm
            .players()
            .iter()
            .filter(|p| p.node() == victim)
            .cloned()
            .collect();
        assert!(!players.is_empty(), "{victim} holds players");
        let restarts = nodes
            .iter()
            .find(|p| name(p) == victim)
            .map(cluster::restarts)
            .unwrap_or(0);
        let killed = Instant::now();
        self.harness
            .kubelet()
            .kill_container(&PodKey::new(NS, &victim), "node")
            .await
            .expect("kill -9");
        // Every player of the killed node gets an answer again (from whichever node the gate picks).
        let mut recovered = Vec::new();
        for player in &players {
            let node = wait_for(
                &format!("uid {} to get an answer again", player.uid),
                Duration::from_secs(30),
                || async { player.whoami(&self.swarm.shared).await.ok() },
            )
            .await;
            recovered.push(node);
        }
        let players_back = killed.elapsed();
        let in_flight_note = if PhaseStats::get(&phase.failed) > 0 {
            " (a request in flight at the kill is lost: the client gives up after its 5 s timeout)"
        } else {
            ""
        };
        let pod = wait_for(
            &format!("{victim} restarted and Ready"),
            Duration::from_secs(60),
            || async {
                let pod = self.pods.get(&victim).await.ok()?;
                (is_ready(&pod) && cluster::restarts(&pod) > restarts).then_some(pod)
            },
        )
        .await;
        let pod_back = killed.elapsed();
        self.ready_cluster(
            "the GameCluster Ready after the node restart",
            Duration::from_secs(60),
        )
        .await;
        let failed_at_recovery = PhaseStats::get(&phase.failed);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            PhaseStats::get(&phase.failed),
            failed_at_recovery,
            "no failures after recovery: {:#?}",
            phase.samples()
        );
        assert!(
            failed_at_recovery <= players.len() as u64,
            "at most one request in flight per player of the killed node failed: {}",
            phase.line()
        );
        self.summary.time(
            "kill -9 node -> its players answered again",
            players_back,
            format!(
                "{} players; {failed_at_recovery} requests in flight failed{in_flight_note}",
                players.len()
            ),
        );
        self.summary.time(
            "kill -9 node -> pod restarted and Ready",
            pod_back,
            format!("restartCount {}", cluster::restarts(&pod)),
        );
        self.step(&format!(
            "7a. kill -9 {victim}: its {} players answered again after {:.1}s (by {:?}), the pod Ready again after {:.1}s; {}",
            players.len(),
            players_back.as_secs_f64(),
            recovered.iter().collect::<BTreeSet<_>>(),
            pod_back.as_secs_f64(),
            phase.line()
        ));
    }

    /// 7b. The Redis pod is deleted: its Deployment starts a new, empty one. Bound players keep playing
    ///     (routing never needs Redis); only pushes, which look players up in Redis, fail meanwhile. Once
    ///     Redis is back, gates and nodes write their bindings again: pushes reach the players who logged
    ///     in before, and a player who reconnects is still on its node.
    async fn delete_redis(&mut self) {
        let phase = self.swarm.phase("7b fault: delete the Redis pod");
        self.summary
            .promise(&phase.name, "only say (pushes need Redis) fails while it is down");
        let redis = settled_pods(&self.pods, &selector("redis"), 1, Duration::from_secs(30)).await;
        let old = name(&redis[0]);
        let deleted = Instant::now();
        self.pods
            .delete(&old, &kube::api::DeleteParams::default())
            .await
            .expect("delete the Redis pod");
        let new = wait_for("a new Redis pod, Ready", Duration::from_secs(60), || async {
            let pods = cluster::pods(&self.pods, &selector("redis")).await;
            (pods.len() == 1 && name(&pods[0]) != old && is_ready(&pods[0])).then(|| pods[0].clone())
        })
        .await;
        let redis_back = deleted.elapsed();
        self.wait_endpoints(&format!("{GC}-redis"), &[new]).await;
        // Pushes reach players who logged in before the outage again.
        let mut pending: Vec<Arc<Player>> = self.swarm.players().iter().step_by(10).cloned().collect();
        let sampled = pending.len();
        let mut round = 0;
        while !pending.is_empty() && deleted.elapsed() < Duration::from_secs(60) {
            round += 1;
            let mut still = Vec::new();
            for player in pending {
                if !pushes_reach(&player, &self.swarm.shared, round).await {
                    still.push(player);
                }
            }
            pending = still;
        }
        let pushes_back = deleted.elapsed();
        assert!(
            pending.is_empty(),
            "pushes never reached {} of {sampled} players who logged in before the Redis restart",
            pending.len()
        );
        // A player who reconnects finds its node again (the nodes restored their bindings).
        for player in self.swarm.players().iter().skip(5).step_by(20) {
            let before = player.node();
            let node = player.reconnect_now(&self.swarm.shared).await.expect("reconnect");
            assert_eq!(
                node, before,
                "uid {} keeps its node across a Redis restart",
                player.uid
            );
        }
        let failed_routes = phase.failed_routes();
        assert!(
            failed_routes.keys().all(|route| *route == 5),
            "only say fails while Redis is down: {failed_routes:?} {:#?}",
            phase.samples()
        );
        let failed_at_recovery = PhaseStats::get(&phase.failed);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            PhaseStats::get(&phase.failed),
            failed_at_recovery,
            "no failures once Redis is back: {:#?}",
            phase.samples()
        );
        assert_eq!(PhaseStats::get(&phase.moved), 0, "{:#?}", phase.samples());
        self.summary.time(
            "Redis pod deleted -> new Redis Ready",
            redis_back,
            format!("{failed_at_recovery} say requests failed meanwhile"),
        );
        self.summary.time(
            "Redis pod deleted -> pushes reach every player",
            pushes_back,
            "bindings restored by gates and nodes",
        );
        self.step(&format!(
            "7b. Redis pod deleted: new Redis Ready after {:.1}s; pushes reach the {sampled} sampled players again after {:.1}s; reconnecting players keep their node; failed by route {failed_routes:?}; {}",
            redis_back.as_secs_f64(),
            pushes_back.as_secs_f64(),
            phase.line()
        ));
    }

    /// 7c. The operator leader is killed (SIGKILL: its pod is force-deleted) right after it applied a node
    ///     rollout: the standby replica takes the Lease and finishes the rollout (drains, status).
    async fn kill_operator(&mut self) {
        let phase = self.swarm.phase("7c fault: operator killed mid-rollout");
        self.summary
            .promise(&phase.name, "failed = 0; another replica finishes the rollout");
        let system_pods: Api<Pod> = Api::namespaced(self.client.clone(), SYSTEM_NS);
        let operators = settled_pods(&system_pods, OPERATOR_SELECTOR, 2, Duration::from_secs(60)).await;
        let operator_names: BTreeSet<String> = operators.iter().map(name).collect();
        let leader = self.leader(&operator_names, Duration::from_secs(30)).await;
        let old = settled_pods(&self.pods, &selector("node"), 2, Duration::from_secs(30)).await;
        let old_names: BTreeSet<String> = old.iter().map(name).collect();
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), NS);
        let node_deployment = format!("{GC}-node");
        let generation = deployments
            .get(&node_deployment)
            .await
            .expect("the node Deployment")
            .metadata
            .generation
            .unwrap_or(0);
        let started = Instant::now();
        self.tools
            .kubectl(&[
                "patch",
                "-n",
                NS,
                &format!("gc/{GC}"),
                "--type=merge",
                "-p",
                r#"{"spec":{"node":{"env":[{"name":"GAME_MODE","value":"rolled-again"}]}}}"#,
            ])
            .await;
        // In the middle of the rollout: the leader applied the new template, the Deployment started on it.
        wait_for(
            "the leader to apply the new node template",
            Duration::from_secs(30),
            || async {
                let deployment = deployments.get(&node_deployment).await.ok()?;
                let surged = cluster::pods(&self.pods, &selector("node"))
                    .await
                    .iter()
                    .any(|p| !old_names.contains(&name(p)));
                (deployment.metadata.generation.unwrap_or(0) > generation && surged).then_some(())
            },
        )
        .await;
        let killed_wall = k8s_openapi::jiff::Timestamp::now();
        let killed = Instant::now();
        system_pods
            .delete(
                &leader,
                &kube::api::DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await
            .expect("force-delete the leader");
        let exit = wait_for("the leader to be SIGKILLed", Duration::from_secs(10), || async {
            self.harness.kubelet().events().into_iter().find_map(|e| match e {
                KubeletEvent::ContainerExited { pod, exit, .. } if pod == PodKey::new(SYSTEM_NS, &leader) => {
                    Some(exit)
                }
                _ => None,
            })
        })
        .await;
        assert!(exit.status.contains("SIGKILL"), "{leader} was killed: {exit:?}");
        self.step(&format!(
            "7c. node env changed; the leader {leader} applied it and was SIGKILLed {:.1}s later",
            (killed - started).as_secs_f64()
        ));
        let new_leader = wait_for("another replica to lead", Duration::from_secs(60), || async {
            let leases: Api<Lease> = Api::namespaced(self.client.clone(), SYSTEM_NS);
            let holder = leases.get_opt(OPERATOR).await.ok()??.spec?.holder_identity?;
            let live: BTreeSet<String> = cluster::pods(&system_pods, OPERATOR_SELECTOR)
                .await
                .iter()
                .map(name)
                .collect();
            (holder != leader && live.contains(&holder)).then_some(holder)
        })
        .await;
        let takeover = killed.elapsed();
        self.step(&format!(
            "    {new_leader} took the Lease {:.1}s after the kill",
            takeover.as_secs_f64()
        ));
        // The old pods drain (drained by the new leader, or deleted by the Deployment); their players log
        // out and in again, landing on new pods.
        wait_for("the old node pods to drain", Duration::from_secs(60), || async {
            let pods = cluster::pods(&self.pods, &selector("node")).await;
            pods.iter()
                .filter(|p| old_names.contains(&name(p)))
                .all(|p| {
                    cluster::is_terminating(p)
                        || cluster::annotation(p, "switchyard.dev/drain").as_deref() == Some("true")
                })
                .then_some(())
        })
        .await;
        let on_old: Vec<Arc<Player>> = self
            .swarm
            .players()
            .iter()
            .filter(|p| old_names.contains(&p.node()))
            .cloned()
            .collect();
        for player in &on_old {
            let node = player
                .logout_and_login(&self.swarm.shared)
                .await
                .expect("log out and in again");
            assert!(
                !old_names.contains(&node),
                "uid {} landed on old pod {node}",
                player.uid
            );
        }
        for pod in &old_names {
            let exit = self.exit_of(pod, Duration::from_secs(60)).await;
            assert!(
                matches!(exit.cause, ExitCause::Terminated { killed: false, .. }) && exit.exit_code == 0,
                "{pod}: {exit:?}"
            );
        }
        let done = self
            .ready_cluster(
                "the GameCluster Ready after the rollout (new leader)",
                Duration::from_secs(90),
            )
            .await;
        let finished = killed.elapsed();
        // The status that says so was written after the kill: by the new leader.
        let since = cluster::condition_time(&done, "Progressing").expect("Progressing's transition time");
        assert!(
            since > killed_wall,
            "the rollout's end ({since}) was recorded after the kill ({killed_wall})"
        );
        let nodes = settled_pods(&self.pods, &selector("node"), 2, Duration::from_secs(30)).await;
        for pod in &nodes {
            let env = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers[0].env.clone())
                .unwrap_or_default();
            assert!(
                env.iter()
                    .any(|e| e.name == "GAME_MODE" && e.value.as_deref() == Some("rolled-again")),
                "{} runs the new template",
                name(pod)
            );
        }
        let replaced = settled_pods(&system_pods, OPERATOR_SELECTOR, 2, Duration::from_secs(60)).await;
        assert!(replaced.iter().all(|p| name(p) != leader));
        assert_no_failures(&phase);
        self.summary.time(
            "operator SIGKILL mid-rollout -> new leader",
            takeover,
            format!("{new_leader}; lease duration 15 s"),
        );
        self.summary.time(
            "operator SIGKILL mid-rollout -> rollout done, Ready",
            finished,
            format!("{} players moved off the old pods", on_old.len()),
        );
        self.step(&format!(
            "    rollout finished {:.1}s after the kill: old pods exited (code 0), GameCluster Ready (recorded at {since}); {}",
            finished.as_secs_f64(),
            phase.line()
        ));
    }

    /// 9. Deleting the GameCluster and `helm uninstall` leave nothing behind.
    async fn uninstall(&mut self) {
        let deleted = Instant::now();
        self.tools
            .kubectl(&["delete", "-n", NS, &format!("gc/{GC}"), "--wait=true"])
            .await;
        wait_for(
            "every pod of the GameCluster to go",
            Duration::from_secs(120),
            || async {
                cluster::pods(&self.pods, &format!("app.kubernetes.io/instance={GC}"))
                    .await
                    .is_empty()
                    .then_some(())
            },
        )
        .await;
        let left = wait_for(
            "nothing left in the namespace",
            Duration::from_secs(60),
            || async {
                let left = self.leftovers(NS).await;
                left.is_empty().then_some(left)
            },
        )
        .await;
        let cluster_gone = deleted.elapsed();
        let uninstalled = Instant::now();
        self.tools
            .helm(&["uninstall", RELEASE, "--namespace", SYSTEM_NS, "--wait"])
            .await;
        wait_for("the operator pods to go", Duration::from_secs(60), || async {
            let system_pods: Api<Pod> = Api::namespaced(self.client.clone(), SYSTEM_NS);
            cluster::pods(&system_pods, OPERATOR_SELECTOR)
                .await
                .is_empty()
                .then_some(())
        })
        .await;
        let system_left = self.leftovers(SYSTEM_NS).await;
        let cluster_scoped = self
            .tools
            .kubectl(&["get", "clusterroles,clusterrolebindings", "-o", "name"])
            .await;
        let ours: Vec<&str> = cluster_scoped
            .lines()
            .filter(|l| l.contains("switchyard"))
            .collect();
        assert!(
            system_left.is_empty() && ours.is_empty(),
            "helm uninstall left {system_left:?} {ours:?}"
        );
        let kubelet = self.harness.kubelet();
        let stopped = load::eventually(Duration::from_secs(30), || kubelet.pods().is_empty()).await;
        assert!(stopped, "no pod runs any more: {:?}", kubelet.pods());
        // helm keeps CRDs on purpose (NOTES.txt says how to delete it).
        self.tools
            .kubectl(&["get", "crd", "gameclusters.switchyard.dev", "-o", "name"])
            .await;
        self.summary.time(
            "kubectl delete gc -> every child gone",
            cluster_gone,
            format!("{left:?} left"),
        );
        self.summary.time(
            "helm uninstall -> operator gone",
            uninstalled.elapsed(),
            "the CRD stays (helm policy)",
        );
        self.step(&format!(
            "9. GameCluster deleted: nothing left in {NS} after {:.1}s; helm uninstall: nothing left in {SYSTEM_NS} nor cluster-wide; no pod runs",
            cluster_gone.as_secs_f64()
        ));
    }

    /// Every object of every namespaced kind left in `namespace`, but what Kubernetes puts in every
    /// namespace (the `default` ServiceAccount, the `kube-root-ca.crt` ConfigMap) and Events (they expire).
    async fn leftovers(&self, namespace: &str) -> Vec<String> {
        let kinds = self
            .tools
            .kubectl(&["api-resources", "--verbs=list", "--namespaced", "-o", "name"])
            .await;
        let kinds: Vec<&str> = kinds.lines().filter(|k| !k.starts_with("events")).collect();
        let objects = self
            .tools
            .kubectl(&["get", &kinds.join(","), "-n", namespace, "-o", "name"])
            .await;
        objects
            .lines()
            .filter(|o| !matches!(*o, "serviceaccount/default" | "configmap/kube-root-ca.crt"))
            .map(str::to_owned)
            .collect()
    }

    /// The swarm's players per node pod (0 for a pod without players).
    fn player_counts(&self, nodes: &[Pod]) -> BTreeMap<String, usize> {
        let by_node = self.swarm.by_node();
        nodes
            .iter()
            .map(|p| (name(p), by_node.get(&name(p)).map_or(0, Vec::len)))
            .collect()
    }

    /// Waits until every node pod reports `counts` in its bound-players and pod-deletion-cost annotations.
    async fn wait_reported(&self, counts: &BTreeMap<String, usize>) {
        wait_for(
            &format!("the node pods to report {counts:?}"),
            Duration::from_secs(30),
            || async {
                let pods = cluster::pods(&self.pods, &selector("node")).await;
                let reported: BTreeMap<String, usize> = pods
                    .iter()
                    .filter_map(|p| {
                        let bound = cluster::annotation(p, "switchyard.dev/bound-players")?;
                        cluster::annotation(p, "controller.kubernetes.io/pod-deletion-cost")?;
                        Some((name(p), bound.parse().ok()?))
                    })
                    .collect();
                (reported == *counts).then_some(())
            },
        )
        .await;
    }

    /// How the (single) container of `pod` exited when the pod was deleted.
    async fn exit_of(&self, pod: &str, timeout: Duration) -> ContainerExit {
        self.exit_in(NS, pod, timeout).await
    }

    /// How the (single) container of `pod` in `namespace` exited when the pod was deleted.
    async fn exit_in(&self, namespace: &str, pod: &str, timeout: Duration) -> ContainerExit {
        let key = PodKey::new(namespace, pod);
        let event = self
            .harness
            .kubelet()
            .wait_for_event(&format!("{pod} to exit"), timeout, |e| {
                matches!(e, KubeletEvent::ContainerExited { pod, exit, .. }
                        if *pod == key && matches!(exit.cause, ExitCause::Terminated { .. }))
            })
            .await
            .expect("the container exits");
        match event {
            KubeletEvent::ContainerExited { exit, .. } => exit,
            other => unreachable!("matched an exit: {other:?}"),
        }
    }

    /// The log of `container` in `pod` (every start appended).
    fn container_log(&self, pod: &str, container: &str) -> String {
        self.container_log_in(NS, pod, container)
    }

    /// The log of `container` in `pod` of `namespace` (every start appended).
    fn container_log_in(&self, namespace: &str, pod: &str, container: &str) -> String {
        let prefix = format!("{namespace}_{pod}_");
        let dir = self
            .harness
            .kubelet()
            .pods_dir()
            .read_dir()
            .expect("pods dir")
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .unwrap_or_else(|| panic!("no pod directory for {pod}"));
        std::fs::read_to_string(dir.path().join(format!("{container}.log"))).unwrap_or_default()
    }
}

type Drains = Arc<std::sync::Mutex<BTreeMap<String, Instant>>>;

/// Polls each pod's `/readyz` every 100 ms and records when it first answers 503 (draining).
fn watch_drains(pods: &[Pod]) -> (Drains, Vec<tokio::task::JoinHandle<()>>) {
    let drains: Drains = Arc::default();
    let tasks = pods
        .iter()
        .map(|pod| {
            let (pod, ip, drains) = (name(pod), pod_ip(pod), drains.clone());
            tokio::spawn(async move {
                loop {
                    let answer =
                        tokio::time::timeout(Duration::from_secs(1), http_get(&ip, 9090, "/readyz", &[]))
                            .await;
                    if let Ok(Some((503, _))) = answer {
                        drains.lock().expect("drains").insert(pod, Instant::now());
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();
    (drains, tasks)
}

/// Records every distinct (Ready, Progressing, counts) the GameCluster's status goes through.
fn watch_status(
    clusters: Api<DynamicObject>,
) -> (Arc<std::sync::Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(cluster) = clusters.get(GC).await {
                    let ready = cluster::condition(&cluster, "Ready")
                        .map(|c| c.0)
                        .unwrap_or_default();
                    let (status, reason, message) =
                        cluster::condition(&cluster, "Progressing").unwrap_or_default();
                    let line = format!("Ready={ready} Progressing={status}/{reason}: {message}");
                    let mut seen = seen.lock().expect("seen");
                    if seen.last() != Some(&line) {
                        seen.push(line);
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    (seen, task)
}

/// Makes `players` log out and in again, one after the other, every 100 ms: a stream of new logins, until
/// the returned flag is set (never aborted: a player must not stay logged out).
fn churn(
    players: Vec<Arc<Player>>,
    shared: Arc<load::Shared>,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            for player in players.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let _ = player.logout_and_login(&shared).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    (stop, task)
}

/// Whether a say in the player's own room comes back to it as a push (within 2 s).
async fn pushes_reach(player: &Player, shared: &load::Shared, round: usize) -> bool {
    let text = format!("check-{}-{round}", player.uid);
    let room = format!("solo-{}", player.uid);
    player.join(shared, &room).await.is_ok()
        && player.say(shared, &room, &text).await.is_ok()
        && load::eventually(Duration::from_secs(2), || {
            player.messages().iter().any(|m| m.text == text)
        })
        .await
}

fn count_by_node(swarm: &Swarm) -> String {
    let counts: BTreeMap<String, usize> = swarm
        .by_node()
        .into_iter()
        .map(|(node, players)| {
            (
                if node.is_empty() {
                    "(logged out)".to_owned()
                } else {
                    node
                },
                players.len(),
            )
        })
        .collect();
    format!("{counts:?}")
}

/// In each node's room, one player speaks; every member, on either gate, gets the push.
async fn cross_gate_pushes(swarm: &Swarm, by_node: &std::collections::HashMap<String, Vec<Arc<Player>>>) {
    let shared = &swarm.shared;
    for (node, members) in by_node {
        let room = format!("room-{node}");
        for member in members {
            member.join(shared, &room).await.expect("join the node's room");
        }
        let gates: BTreeMap<String, usize> = members.iter().fold(BTreeMap::new(), |mut acc, p| {
            *acc.entry(p.gate()).or_default() += 1;
            acc
        });
        assert_eq!(
            gates.len(),
            2,
            "the room of {node} has members on both gates: {gates:?}"
        );
        let speaker = &members[0];
        let text = format!("hello from {} on {}", speaker.uid, speaker.gate());
        speaker.say(shared, &room, &text).await.expect("say");
        let all_got_it = load::eventually(Duration::from_secs(10), || {
            members.iter().all(|m| {
                m.messages()
                    .iter()
                    .any(|msg| msg.text == text && msg.room == room && msg.from == speaker.uid)
            })
        })
        .await;
        let missing: Vec<i64> = members
            .iter()
            .filter(|m| !m.messages().iter().any(|msg| msg.text == text))
            .map(|m| m.uid)
            .collect();
        assert!(
            all_got_it,
            "push 6 reached every member of {room}; missing {missing:?}"
        );
    }
}

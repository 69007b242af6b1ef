//! Steps 5 and 6 of the journey: the node image and then the gate image roll to a second image (another
//! build: another digest) while players play; and the watches the rollouts use (drains seen on the pods'
//! `/readyz`, the GameCluster's status, a stream of new logins).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DynamicObject;
use switchyard_testkit::http_get;

use crate::cluster::{self, is_ready, name, pod_ip, settled_pods, wait_for};
use crate::load::{self, PhaseStats, Player};
use crate::{
    GATE_DRAIN_SECONDS, GC, Journey, NODE_DRAIN_SECONDS, NS, READY_TIMEOUT, ROLLED_IMAGE, assert_no_failures,
    selector,
};

impl Journey<'_> {
    /// 5. Roll the node template (a new image tag) while players are bound and the load runs.
    pub(crate) async fn roll_nodes(&mut self) {
        let phase = self.swarm.phase("5 node rollout");
        self.summary
            .promise(&phase.name, "failed = 0; no login on a drained pod");
        let old = settled_pods(&self.pods, &selector("node"), 2, READY_TIMEOUT).await;
        let old_names: BTreeSet<String> = old.iter().map(name).collect();
        let drain_watch = DrainWatch::start(&old);
        let (progress, progress_watch) = watch_status(self.clusters.clone());
        // Players who keep logging out and in: a steady stream of new logins during the rollout.
        let churners: Vec<Arc<Player>> = self.swarm.players().iter().step_by(12).cloned().collect();
        let (stop_churn, churn) = churn(churners, self.swarm.shared.clone());

        let started = Instant::now();
        self.tools
            .patch_game_cluster(&format!(r#"{{"spec":{{"node":{{"image":"{ROLLED_IMAGE}"}}}}}}"#))
            .await;
        // Once a pod of the new template is ready, the operator drains every old pod at once.
        let drains = drain_watch
            .all_drained("the old node pods to drain (readyz 503)")
            .await;
        let first_drain = drains.values().min().copied().expect("a drain");
        self.step(&format!(
            "5. node image -> {ROLLED_IMAGE}: old pods {old_names:?} drained after {:.1}s",
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
        let exit = self.exit_of(&leaving, "node", Duration::from_secs(60)).await;
        let left_after = drains[&leaving].elapsed();
        assert!(!exit.killed() && exit.exit_code == 0, "{leaving}: {exit:?}");
        assert!(
            self.container_log_with(NS, &leaving, "node", "drained: no player left")
                .await
                .contains("drained: no player left"),
            "{leaving} drained empty"
        );
        self.step(&format!(
            "   {leaving}: its {} players logged out and in again (all on new pods); it exited (code 0) {:.1}s after its drain began",
            on_leaving.len(),
            left_after.as_secs_f64()
        ));
        let exit = self
            .exit_of(
                &staying,
                "node",
                Duration::from_secs(NODE_DRAIN_SECONDS as u64 + 60),
            )
            .await;
        let stayed_for = drains[&staying].elapsed();
        assert!(!exit.killed() && exit.exit_code == 0, "{staying}: {exit:?}");
        assert!(
            stayed_for >= Duration::from_secs(NODE_DRAIN_SECONDS as u64 - 2),
            "{staying} kept its players until its deadline ({stayed_for:?})"
        );
        assert!(
            self.container_log_with(NS, &staying, "node", "drain deadline passed")
                .await
                .contains("drain deadline passed"),
            "{staying} reached its drain deadline"
        );
        self.step(&format!(
            "   {staying}: kept its {on_staying} players until its {NODE_DRAIN_SECONDS}s deadline, told them to reconnect, exited (code 0)"
        ));
        let ready = self
            .ready_cluster("the GameCluster Ready after the rollout", READY_TIMEOUT)
            .await;
        let rollout = started.elapsed();
        stop_churn.store(true, Ordering::Relaxed);
        churn.await.expect("churn");
        progress_watch.abort();
        drop(drain_watch);
        let new = settled_pods(&self.pods, &selector("node"), 2, READY_TIMEOUT).await;
        for pod in &new {
            let image = pod.spec.as_ref().and_then(|s| s.containers[0].image.clone());
            assert_eq!(image.as_deref(), Some(ROLLED_IMAGE), "{}", name(pod));
        }
        let digests = image_ids(&old, &new);
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
        load::holds_within(Duration::from_secs(15), || on_old().is_empty()).await;
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
            "   rollout done in {:.1}s ({digests}): GameCluster Ready (generation {}); status went through {samples:?}; {}",
            rollout.as_secs_f64(),
            ready.metadata.generation.unwrap_or(0),
            phase.line()
        ));
    }

    /// 6. Roll the gates (a new image tag): every client is told to reconnect elsewhere, reconnects to a
    ///    new gate, logs in again and is still on its node.
    pub(crate) async fn roll_gates(&mut self) {
        let phase = self.swarm.phase("6 gate rollout");
        self.summary.promise(&phase.name, "failed = 0, moved = 0");
        let old = settled_pods(&self.pods, &selector("gate"), 2, READY_TIMEOUT).await;
        let old_names: BTreeSet<String> = old.iter().map(name).collect();
        let nodes_before: BTreeMap<i64, String> =
            self.swarm.players().iter().map(|p| (p.uid, p.node())).collect();
        let started = Instant::now();
        self.tools
            .patch_game_cluster(&format!(r#"{{"spec":{{"gate":{{"image":"{ROLLED_IMAGE}"}}}}}}"#))
            .await;
        for gate in &old_names {
            let exit = self
                .exit_of(gate, "gate", Duration::from_secs(GATE_DRAIN_SECONDS as u64 + 120))
                .await;
            assert!(
                !exit.killed() && exit.exit_code == 0,
                "{gate} drained and exited within its grace period: {exit:?}"
            );
        }
        let new = wait_for("two new gates, Ready", READY_TIMEOUT, || async {
            let gates = cluster::pods(&self.pods, &selector("gate")).await;
            (gates.len() == 2 && gates.iter().all(|g| is_ready(g) && !old_names.contains(&name(g))))
                .then_some(gates)
        })
        .await;
        let new_addresses: BTreeSet<String> = new
            .iter()
            .map(|g| format!("{}:{}", pod_ip(g), load::GATE_TCP_PORT))
            .collect();
        let moved_over = load::holds_within(Duration::from_secs(60), || {
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
        let digests = image_ids(&old, &new);
        self.ready_cluster("the GameCluster Ready after the gate rollout", READY_TIMEOUT)
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
            "6. gates rolled in {:.1}s ({digests}): old gates {old_names:?} exited (code 0); every player reconnected to {new_addresses:?} and whoami names its old node; {}",
            rollout.as_secs_f64(),
            phase.line()
        ));
    }
}

/// When each watched pod first answered `/readyz` with 503 (draining). The watches stop when this drops.
pub(crate) struct DrainWatch {
    drains: Arc<std::sync::Mutex<BTreeMap<String, Instant>>>,
    pods: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DrainWatch {
    /// Polls each pod's `/readyz` every 100 ms.
    pub(crate) fn start(pods: &[Pod]) -> DrainWatch {
        let drains: Arc<std::sync::Mutex<BTreeMap<String, Instant>>> = Arc::default();
        let tasks = pods
            .iter()
            .map(|pod| {
                let (pod, ip, drains) = (name(pod), pod_ip(pod), drains.clone());
                tokio::spawn(async move {
                    loop {
                        let readyz = http_get(format!("{ip}:9090"), "/readyz");
                        if let Ok((503, _)) = tokio::time::timeout(Duration::from_secs(1), readyz).await {
                            drains.lock().expect("drains").insert(pod, Instant::now());
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                })
            })
            .collect();
        DrainWatch {
            drains,
            pods: pods.len(),
            tasks,
        }
    }

    /// Waits until every watched pod drained; when each did.
    pub(crate) async fn all_drained(&self, what: &str) -> BTreeMap<String, Instant> {
        wait_for(what, READY_TIMEOUT, || async {
            let drains = self.drains.lock().expect("drains").clone();
            (drains.len() == self.pods).then_some(drains)
        })
        .await
    }
}

impl Drop for DrainWatch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Records every distinct (Ready, Progressing, counts) the GameCluster's status goes through.
pub(crate) fn watch_status(
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
pub(crate) fn churn(
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

/// The image ids (digests) the kubelet reports for the `old` and the `new` pods of a rollout, asserting
/// they differ: the rollout ran another image, not another name for the same one.
pub(crate) fn image_ids(old: &[Pod], new: &[Pod]) -> String {
    let ids = |pods: &[Pod]| -> BTreeSet<String> {
        pods.iter()
            .filter_map(|p| {
                let status = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
                Some(status.image_id.clone())
            })
            .filter(|id| !id.is_empty())
            .collect()
    };
    let (before, after) = (ids(old), ids(new));
    assert!(
        !before.is_empty() && !after.is_empty() && before.is_disjoint(&after),
        "the rollout runs another image digest: {before:?} -> {after:?}"
    );
    format!("image {before:?} -> {after:?}")
}

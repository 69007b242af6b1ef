//! Step 7 of the journey, faults: kill -9 of a node process (the kubelet restarts it), the managed Redis
//! pod deleted (its Deployment starts an empty one), and the operator leader SIGKILLed in the middle of a
//! rollout (the standby replica finishes it).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use switchyard_testkit::http_get;

use crate::cluster::{self, is_ready, name, pod_ip, settled_pods, wait_for};
use crate::load::{self, PhaseStats, Player};
use crate::{
    GC, Journey, NS, OPERATOR, OPERATOR_SELECTOR, READY_TIMEOUT, SYSTEM_NS, assert_no_failures, selector,
};

impl Journey<'_> {
    /// 7a. kill -9 of a node process: the kubelet restarts it; its players' requests in flight fail, the
    ///     gates send their next ones to another node (which adopts them), and nothing fails after that.
    pub(crate) async fn kill_node(&mut self) {
        let phase = self.swarm.phase("7a fault: kill -9 a node");
        self.summary
            .promise(&phase.name, "only requests in flight to the killed node fail");
        let nodes = settled_pods(&self.pods, &selector("node"), 2, READY_TIMEOUT).await;
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
            .node()
            .kill_container(NS, &victim, "node")
            .expect("kill -9 the node's process");
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
        let exit = self
            .harness
            .pods()
            .wait_exit(NS, &victim, "node", READY_TIMEOUT, |e| e.after_delete.is_none())
            .await
            .expect("the kubelet reports the crash");
        assert!(exit.killed(), "the kubelet saw a SIGKILL: {exit:?}");
        let pod = wait_for(
            &format!("{victim} restarted and Ready"),
            READY_TIMEOUT,
            || async {
                let pod = self.pods.get(&victim).await.ok()?;
                (is_ready(&pod) && cluster::restarts(&pod) > restarts).then_some(pod)
            },
        )
        .await;
        let pod_back = killed.elapsed();
        self.ready_cluster("the GameCluster Ready after the node restart", READY_TIMEOUT)
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
    pub(crate) async fn delete_redis(&mut self) {
        let phase = self.swarm.phase("7b fault: delete the Redis pod");
        self.summary
            .promise(&phase.name, "only say (pushes need Redis) fails while it is down");
        let redis = settled_pods(&self.pods, &selector("redis"), 1, READY_TIMEOUT).await;
        let old = name(&redis[0]);
        let nodes: Vec<String> = settled_pods(&self.pods, &selector("node"), 2, READY_TIMEOUT)
            .await
            .iter()
            .map(name)
            .collect();
        let restores_before: Vec<usize> = nodes.iter().map(|n| self.restores(n)).collect();
        let deleted = Instant::now();
        self.pods
            .delete(&old, &kube::api::DeleteParams::default())
            .await
            .expect("delete the Redis pod");
        let new = wait_for("a new Redis pod, Ready", READY_TIMEOUT, || async {
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
        while !pending.is_empty() && deleted.elapsed() < READY_TIMEOUT {
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
        // A player who reconnects finds its node again, once the nodes restored their bindings (each when
        // its own locator connection is back, as its log says).
        wait_for(
            "every node to restore its player bindings",
            READY_TIMEOUT,
            || async {
                nodes
                    .iter()
                    .zip(&restores_before)
                    .all(|(node, before)| self.restores(node) > *before)
                    .then_some(())
            },
        )
        .await;
        let bindings_back = deleted.elapsed();
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
            "bindings restored by the gates",
        );
        self.summary.time(
            "Redis pod deleted -> nodes restored their bindings",
            bindings_back,
            "reconnecting players keep their node",
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
    pub(crate) async fn kill_operator(&mut self) {
        let phase = self.swarm.phase("7c fault: operator killed mid-rollout");
        self.summary
            .promise(&phase.name, "failed = 0; another replica finishes the rollout");
        let system_pods: Api<Pod> = Api::namespaced(self.client.clone(), SYSTEM_NS);
        let operators = settled_pods(&system_pods, OPERATOR_SELECTOR, 2, READY_TIMEOUT).await;
        let operator_names: BTreeSet<String> = operators.iter().map(name).collect();
        let leader = self.leader(&operator_names, Duration::from_secs(30)).await;
        let old = settled_pods(&self.pods, &selector("node"), 2, READY_TIMEOUT).await;
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
            .patch_game_cluster(r#"{"spec":{"node":{"env":[{"name":"GAME_MODE","value":"rolled-again"}]}}}"#)
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
        // A crash: SIGKILL, no chance to release the Lease. The pod goes at once too (force-deleted), so the
        // kubelet does not restart the container under the same name (the same identity).
        let pid = self
            .harness
            .node()
            .kill_container(SYSTEM_NS, &leader, "operator")
            .expect("kill -9 the leader");
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
        wait_for(
            "the leader's process to be gone",
            Duration::from_secs(10),
            || async { (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(()) },
        )
        .await;
        self.step(&format!(
            "7c. node env changed; the leader {leader} applied it and was SIGKILLed {:.1}s later",
            (killed - started).as_secs_f64()
        ));
        let new_leader = wait_for("another replica to lead", READY_TIMEOUT, || async {
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
        // out and in again, landing on new pods. The annotation (or the deletion) is only the order: a
        // node drains once it has seen it (the kubelet refreshes the downward API file on its own period,
        // and sends SIGTERM after its own sync), and says so on its `/readyz` (503), when its gates have
        // also been told. So wait for each old pod's own answer, not for its object.
        wait_for("the old node pods to drain", READY_TIMEOUT, || async {
            let pods = cluster::pods(&self.pods, &selector("node")).await;
            for pod in pods.iter().filter(|p| old_names.contains(&name(p))) {
                let ordered = cluster::is_terminating(pod)
                    || cluster::annotation(pod, "switchyard.dev/drain").as_deref() == Some("true");
                let readyz = http_get(format!("{}:9090", pod_ip(pod)), "/readyz");
                let answer = tokio::time::timeout(Duration::from_secs(1), readyz).await;
                let draining = !matches!(answer, Ok((200, _)));
                if !(ordered && draining) {
                    return None;
                }
            }
            Some(())
        })
        .await;
        let on_old: Vec<Arc<Player>> = self
            .swarm
            .players()
            .iter()
            .filter(|p| old_names.contains(&p.node()))
            .cloned()
            .collect();
        // An old pod may reach its drain deadline meanwhile (the Deployment deleted it while the Lease was
        // vacant) and tell its players to reconnect: a logout cut off by that is interrupted, not failed,
        // and the player reconnects and logs in by itself (the periodic load), on a new pod.
        let mut told_to_reconnect = 0;
        for player in &on_old {
            match player.logout_and_login(&self.swarm.shared).await {
                Ok(node) => assert!(
                    !old_names.contains(&node),
                    "uid {} landed on old pod {node}",
                    player.uid
                ),
                Err(why) if why.contains("(after reconnect-elsewhere)") => told_to_reconnect += 1,
                Err(why) => panic!("uid {}: log out and in again: {why}", player.uid),
            }
        }
        let still_old = || {
            on_old
                .iter()
                .filter(|p| p.node().is_empty() || old_names.contains(&p.node()))
                .map(|p| p.uid)
                .collect::<Vec<i64>>()
        };
        load::holds_within(Duration::from_secs(60), || still_old().is_empty()).await;
        assert!(
            still_old().is_empty(),
            "players of the old pods not on a new pod: {:?} ({told_to_reconnect} were told to reconnect)",
            still_old()
        );
        for pod in &old_names {
            let exit = self.exit_of(pod, "node", READY_TIMEOUT).await;
            assert!(!exit.killed() && exit.exit_code == 0, "{pod}: {exit:?}");
        }
        let done = self
            .ready_cluster(
                "the GameCluster Ready after the rollout (new leader)",
                READY_TIMEOUT,
            )
            .await;
        let finished = killed.elapsed();
        // The status that says so was written after the kill: by the new leader.
        let since = cluster::condition_time(&done, "Progressing").expect("Progressing's transition time");
        assert!(
            since > killed_wall,
            "the rollout's end ({since}) was recorded after the kill ({killed_wall})"
        );
        let nodes = settled_pods(&self.pods, &selector("node"), 2, READY_TIMEOUT).await;
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
        let replaced = settled_pods(&system_pods, OPERATOR_SELECTOR, 2, READY_TIMEOUT).await;
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
            format!(
                "{} players moved off the old pods ({told_to_reconnect} by their pod's drain deadline)",
                on_old.len()
            ),
        );
        self.step(&format!(
            "    rollout finished {:.1}s after the kill: old pods exited (code 0), GameCluster Ready (recorded at {since}); {}",
            finished.as_secs_f64(),
            phase.line()
        ));
    }
}

/// Whether a say in the player's own room comes back to it as a push (within 2 s).
pub(crate) async fn pushes_reach(player: &Player, shared: &load::Shared, round: usize) -> bool {
    let text = format!("check-{}-{round}", player.uid);
    let room = format!("solo-{}", player.uid);
    player.join(shared, &room).await.is_ok()
        && player.say(shared, &room, &text).await.is_ok()
        && load::holds_within(Duration::from_secs(2), || {
            player.messages().iter().any(|m| m.text == text)
        })
        .await
}

impl Journey<'_> {
    /// How often node pod `node` logged that it restored its player bindings after a locator outage.
    fn restores(&self, node: &str) -> usize {
        self.container_log_in(NS, node, "node")
            .matches("player bindings restored after a locator outage")
            .count()
    }
}

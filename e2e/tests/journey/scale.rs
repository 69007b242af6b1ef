//! Step 4 of the journey: `kubectl scale gc/my-game` up (new nodes take new logins) and down (the nodes
//! with the fewest players go, each draining first, its players moving by logging out and in again).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_testkit::http_get;

use crate::cluster::{self, name, pod_ip, settled_pods, wait_for};
use crate::load::{PhaseStats, Player};
use crate::{
    GC, Journey, NODE_DRAIN_SECONDS, NS, READY_TIMEOUT, assert_no_failures, count_by_node, selector,
};

impl Journey<'_> {
    /// 4. kubectl scale up: the new nodes take new logins. Scale down: the nodes with the fewest players
    ///    go, each draining first; zero failed requests throughout.
    pub(crate) async fn scale(&mut self) {
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
        let nodes = settled_pods(&self.pods, &selector("node"), 4, READY_TIMEOUT).await;
        self.ready_cluster("the GameCluster Ready with 4 nodes", READY_TIMEOUT)
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
            Duration::from_secs(60),
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
                Duration::from_secs(30),
                || async { (http_get(format!("{ip}:9090"), "/readyz").await.0 == 503).then_some(()) },
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
                .exit_of(
                    victim,
                    "node",
                    Duration::from_secs(NODE_DRAIN_SECONDS as u64 + 60),
                )
                .await;
            assert!(!exit.killed(), "{victim} exited by itself: {exit:?}");
            let took = exit.after_delete.unwrap_or_default();
            assert!(
                took < Duration::from_secs(NODE_DRAIN_SECONDS as u64),
                "{victim} exited when its players left ({took:?}), before its drain deadline"
            );
            assert_eq!(exit.exit_code, 0, "{victim}: {exit:?}");
            let log = self
                .container_log_with(NS, victim, "node", "drained: no player left")
                .await;
            assert!(
                log.contains("drained: no player left"),
                "{victim} drained empty:\n{log}"
            );
        }
        self.ready_cluster("the GameCluster Ready with 2 nodes", READY_TIMEOUT)
            .await;
        let remaining = settled_pods(&self.pods, &selector("node"), 2, READY_TIMEOUT).await;
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
}

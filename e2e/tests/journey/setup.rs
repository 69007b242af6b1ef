//! Steps 1 to 3 of the journey: `helm install` of the chart with our image, `kubectl apply` of the
//! README's example GameCluster, and 200 players logging in through the gate Service and playing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::ListParams;
use switchyard_testkit::http_get;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::cluster::{self, name, pod_ip, settled_pods, wait_for};
use crate::load::{self, PhaseStats, Player, Swarm};
use crate::{
    GC, IMAGE_REPOSITORY, IMAGE_TAG, Journey, NS, OPERATOR_SELECTOR, PLAYERS, READY_TIMEOUT, RELEASE,
    SYSTEM_NS, assert_no_failures, count_by_node, example_cluster, repo_root, selector,
};

impl Journey<'_> {
    /// 1. helm install: the operator becomes Ready and holds the leader Lease.
    pub(crate) async fn install(&mut self) {
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
                "--set",
                &format!("image.repository={IMAGE_REPOSITORY}"),
                "--set",
                &format!("image.tag={IMAGE_TAG}"),
            ])
            .await;
        let system_pods: Api<Pod> = Api::namespaced(self.client.clone(), SYSTEM_NS);
        let operators = settled_pods(&system_pods, OPERATOR_SELECTOR, 2, READY_TIMEOUT).await;
        let operator_names: BTreeSet<String> = operators.iter().map(name).collect();
        for pod in &operators {
            let (status, _) = http_get(format!("{}:9090", pod_ip(pod)), "/readyz").await;
            assert_eq!(status, 200, "{}'s admin port answers that it is ready", name(pod));
        }
        let leader = self.leader(&operator_names, Duration::from_secs(120)).await;
        self.summary.time(
            "helm install -> operator Ready, Lease held",
            installed.elapsed(),
            format!("leader {leader}"),
        );
        self.step(&format!(
            "1. helm install: operators {operator_names:?} Ready; {leader} holds the Lease"
        ));
    }

    /// 2. kubectl apply the example: gates, nodes and Redis Ready; the GameCluster Ready; EndpointSlices.
    pub(crate) async fn apply(&mut self) {
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
        self.ready_cluster("the GameCluster to report Ready", READY_TIMEOUT)
            .await;
        let apply_to_ready = applied.elapsed();
        self.summary.time(
            "kubectl apply -> GameCluster Ready",
            apply_to_ready,
            "2 gates, 2 nodes, managed Redis",
        );
        let gates = settled_pods(&self.pods, &selector("gate"), 2, READY_TIMEOUT).await;
        let nodes = settled_pods(&self.pods, &selector("node"), 2, READY_TIMEOUT).await;
        let redis = settled_pods(&self.pods, &selector("redis"), 1, READY_TIMEOUT).await;
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
        self.trust_defaults(&redis).await;
        // Players come in through the gate Service: its ClusterIP and its NodePort, once kube-proxy
        // forwards them (its rules follow the EndpointSlices within a second or so).
        let entrances = self.gate_entrances(NS).await;
        for entrance in &entrances {
            wait_for(
                &format!("kube-proxy to forward {entrance} to a gate"),
                Duration::from_secs(60),
                || async {
                    let connect = tokio::net::TcpStream::connect(*entrance);
                    tokio::time::timeout(Duration::from_secs(1), connect)
                        .await
                        .ok()?
                        .ok()
                },
            )
            .await;
        }
        self.swarm.set_entrances(&entrances);
        self.step(&format!(
            "2. kubectl apply: GameCluster Ready after {:.1}s; gates {:?}, nodes {:?}, redis {:?}; EndpointSlices list them; gate Service at {entrances:?} (ClusterIP, NodePort)",
            apply_to_ready.as_secs_f64(),
            gates.iter().map(pod_ip).collect::<Vec<_>>(),
            nodes.iter().map(name).collect::<Vec<_>>(),
            redis.iter().map(pod_ip).collect::<Vec<_>>(),
        ));
    }

    /// The defaults the whole journey runs under: mutual TLS on the gate-node links (the operator's CA and
    /// leaves; the gates log it), a managed Redis that wants its generated password, and the default
    /// NetworkPolicies (enforced by the node's kube-network-policies).
    async fn trust_defaults(&self, redis: &[Pod]) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), NS);
        for secret in ["link-ca", "link-gate-tls", "link-node-tls", "redis-auth"] {
            let secret = format!("{GC}-{secret}");
            secrets
                .get(&secret)
                .await
                .unwrap_or_else(|error| panic!("the operator made the Secret {secret}: {error}"));
        }
        let policies: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), NS);
        let policies: Vec<String> = policies
            .list(&ListParams::default())
            .await
            .expect("list NetworkPolicies")
            .items
            .into_iter()
            .filter_map(|policy| policy.metadata.name)
            .collect();
        assert!(
            policies.len() >= 3,
            "gate, node and Redis NetworkPolicies: {policies:?}"
        );
        // The test runs as root on the node, which the policy controller does not judge: this reaches Redis
        // itself, which must refuse a client without the password.
        let address = format!("{}:6379", pod_ip(&redis[0]));
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect to Redis");
        stream.write_all(b"PING\r\n").await.expect("send PING");
        let mut answer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .expect("Redis answers")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(
            answer.starts_with("-NOAUTH"),
            "Redis without its password answered {answer:?}"
        );
        let gate = name(&settled_pods(&self.pods, &selector("gate"), 2, READY_TIMEOUT).await[0]);
        wait_for(
            &format!("{gate} to log that its node links are mutual TLS"),
            Duration::from_secs(10),
            || async {
                let log = self.harness.pods().log(NS, &gate, "gate");
                log.contains("node links are mutual TLS").then_some(())
            },
        )
        .await;
        self.step(&format!(
            "   trust defaults: link CA and leaves minted, Redis answers {:?} without its password, NetworkPolicies {policies:?}, gates link with mutual TLS",
            answer.trim_end()
        ));
    }

    /// 3. 200 players log in through the gate Service (ClusterIP and NodePort in turn) and play.
    pub(crate) async fn play(&mut self) {
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
        assert_eq!(
            gate_addresses.len(),
            2,
            "kube-proxy sends players to both gates: {gate_addresses:?}"
        );
        let entrances: BTreeMap<String, usize> = players.iter().fold(BTreeMap::new(), |mut acc, p| {
            *acc.entry(p.entrance()).or_default() += 1;
            acc
        });
        assert_eq!(
            entrances.len(),
            2,
            "players came through the ClusterIP and the NodePort: {entrances:?}"
        );
        self.step(&format!(
            "3. {PLAYERS} players logged in through {entrances:?}, reaching gates {gate_addresses:?}: {}",
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
}

/// In each node's room, one player speaks; every member, on either gate, gets the push.
pub(crate) async fn cross_gate_pushes(
    swarm: &Swarm,
    by_node: &std::collections::HashMap<String, Vec<Arc<Player>>>,
) {
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
        let all_got_it = load::holds_within(Duration::from_secs(10), || {
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

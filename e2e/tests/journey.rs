//! The user journey on a real node: a real control plane, and containerd + runc, the kubelet, kube-proxy
//! and CoreDNS running our container images (`registry.local/switchyard:e2e`, built by `scripts/image.sh`
//! and imported by e2e/run.sh; see `e2e/README.md`). Players connect through the gate Service: its
//! ClusterIP (kube-proxy's DNAT) and its NodePort on the node's address, in turn. Gates and nodes reach the
//! managed Redis and each other by their Service names through CoreDNS; probes, SIGTERM, grace periods,
//! restarts, security contexts and memory limits are the kubelet's, runc's and the cgroups'. Each step
//! asserts its outcome:
//!
//! 1. `helm install` the chart (two operator replicas, our image): the operator pods become Ready and one
//!    of them holds the leader Lease (`journey/setup.rs`).
//! 2. `kubectl apply` the README's example GameCluster (`examples/minimal.yaml`: managed Redis), with
//!    short drain deadlines for speed, a NodePort gate Service and the Redis image of the node: gates,
//!    nodes and Redis become Ready, the GameCluster reports Ready, and the EndpointSlices list the pods.
//! 3. 200 players connect through the gate Service, log in and play: echo, whoami (names the node the
//!    login bound them to), rooms, and pushes that cross gates. Zero failed requests.
//! 4. `kubectl scale gc/my-game --replicas=4`: the new nodes take new logins. Most players of an old node
//!    leave the game, then `--replicas=2`: the two nodes with the fewest players go (pod-deletion-cost),
//!    each drains first (unready, still serving its players), its players log out and back in elsewhere,
//!    and it exits by itself before its deadline. Zero failed requests (`journey/scale.rs`).
//! 5. The node image rolls to a second image (`registry.local/switchyard:rolled`, another digest) while
//!    players play: old pods drain (no login lands on them), the players of one log out and in again
//!    elsewhere, the other keeps its players until its drain deadline (`journey/rollout.rs`).
//! 6. The gate image rolls: every client is told to reconnect elsewhere and keeps its node.
//! 7. Faults: kill -9 of a node process, the Redis pod deleted, the operator leader SIGKILLed mid-rollout
//!    (`journey/faults.rs`).
//! 8. The two-pool example (`examples/pools.yaml`: `lobby` and `battle`) in a second namespace: pairs of
//!    players log in through the lobby, are matched onto battle nodes and play (moves and their pushes);
//!    `kubectl scale gamepool/my-game-battle` adds a battle node, then the battle image rolls under load.
//!    Zero failed requests or missing pushes; the lobby's pods and Deployment are untouched; the first
//!    cluster's players meanwhile see nothing (see `journey/pools.rs`).
//! 9. Players log out; deleting the GameClusters and `helm uninstall` leave nothing behind, and no pod
//!    runs on the node (`journey/teardown.rs`).
//!
//! The summary (timings, and requests sent / failed per phase) is printed at the end and written to
//! `summary.txt` in the run directory.

#[path = "journey/kube.rs"]
mod cluster;
#[path = "journey/counting.rs"]
mod counting;
#[path = "journey/duel.rs"]
mod duel;
#[path = "journey/faults.rs"]
mod faults;
#[path = "journey/load.rs"]
mod load;
#[path = "journey/pools.rs"]
mod pools;
#[path = "journey/rollout.rs"]
mod rollout;
#[path = "journey/scale.rs"]
mod scale;
#[path = "journey/setup.rs"]
mod setup;
#[path = "journey/summary.rs"]
mod summary;
#[path = "journey/teardown.rs"]
mod teardown;

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::DynamicObject;
use switchyard_e2e::{ContainerExit, Harness, RunDir};

use cluster::{Clock, Tools, gameclusters, name, pod_ip, wait_for};
use load::{PhaseStats, Swarm};
use summary::Summary;
use support::endpoints;

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
/// The images e2e/run.sh builds with scripts/image.sh and the node imports: the chart's (the operator's,
/// and so every gate's and node's by default), the rollouts' (the same binary with another version label:
/// another config, another digest), and the managed Redis's (Debian's redis-server).
const IMAGE_REPOSITORY: &str = "registry.local/switchyard";
const IMAGE_TAG: &str = "e2e";
const ROLLED_IMAGE: &str = "registry.local/switchyard:rolled";
const REDIS_IMAGE: &str = "registry.local/redis:e2e";
/// How long pods may take to become Ready: the machine is small and shared, and a pod on a real node
/// waits for the kubelet's sync, the sandbox, the CNI and its first probes.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
#[ignore = "run via e2e/run.sh"]
fn journey() {
    let Some(run) = switchyard_e2e::isolate().unwrap_or_else(|error| panic!("{error}")) else {
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

/// `spec.locator` of a managed Redis from the node's Redis image (the CRD's default names a public one).
fn managed_redis() -> serde_json::Value {
    serde_json::json!({"managedRedis": {"image": REDIS_IMAGE}})
}

/// The README's example GameCluster with the journey's test-speed deadlines, a NodePort gate Service and
/// the node's Redis image, as JSON (kubectl reads it).
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
    cluster["spec"]["locator"] = managed_redis();
    cluster["spec"]["node"] = serde_json::json!({"drainDeadlineSeconds": NODE_DRAIN_SECONDS});
    cluster["spec"]["gate"] = serde_json::json!({
        "drainDeadlineSeconds": GATE_DRAIN_SECONDS,
        "service": {"type": "NodePort"},
    });
    cluster
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
    let harness = Harness::start(run).await.expect("the harness starts");
    clock.step("control plane ready; node Ready (containerd, kubelet, kube-proxy, CoreDNS)");
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

    /// How `container` of `pod` exited when the pod was deleted (the kubelet's pod status).
    async fn exit_of(&self, pod: &str, container: &str, timeout: Duration) -> ContainerExit {
        self.exit_in(NS, pod, container, timeout).await
    }

    /// How `container` of `pod` in `namespace` exited when the pod was deleted.
    async fn exit_in(&self, namespace: &str, pod: &str, container: &str, timeout: Duration) -> ContainerExit {
        self.harness
            .pods()
            .wait_deleted_exit(namespace, pod, container, timeout)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// The log of `container` in `pod` of `namespace` (every start appended; kept after the kubelet
    /// removed the container). The last lines of an exit may reach the copy a moment after the exit is
    /// seen: waits up to 5 s for `want` to show.
    async fn container_log_with(&self, namespace: &str, pod: &str, container: &str, want: &str) -> String {
        let started = Instant::now();
        loop {
            let log = self.container_log_in(namespace, pod, container);
            if log.contains(want) || started.elapsed() > Duration::from_secs(5) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The log of `container` in `pod` of `namespace` (every start appended).
    fn container_log_in(&self, namespace: &str, pod: &str, container: &str) -> String {
        self.harness.pods().log(namespace, pod, container)
    }

    /// The gate Service's addresses in `namespace`: its ClusterIP, and its NodePort on the node's address
    /// when it is a NodePort Service.
    async fn gate_entrances(&self, namespace: &str) -> Vec<SocketAddrV4> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        let spec = services
            .get(&format!("{GC}-gate"))
            .await
            .expect("the gate Service")
            .spec
            .expect("its spec");
        let port = spec
            .ports
            .iter()
            .flatten()
            .find(|p| p.port == i32::from(load::GATE_TCP_PORT))
            .expect("the gate Service's TCP port")
            .clone();
        let cluster_ip: Ipv4Addr = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok())
            .expect("an IPv4 ClusterIP");
        let mut entrances = vec![SocketAddrV4::new(cluster_ip, load::GATE_TCP_PORT)];
        if let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok()) {
            entrances.push(SocketAddrV4::new(switchyard_e2e::netns::NODE_ADDRESS, node_port));
        }
        entrances
    }
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

//! NetworkPolicies enforced on the real node (kube-network-policies, `switchyard_e2e::network_policy`):
//! connections opened from inside pods (their own network namespaces, their own addresses), judged by
//! the node's controller.
//!
//! - `network_policy_plain`: a client pod reaches a server pod; a deny-all ingress policy stops new
//!   connections (the SYN is dropped: the attempt times out), an allow rule for the client's label opens
//!   them again, and a pod without that label stays shut out.
//! - `network_policy_game_cluster`: the operator's default NetworkPolicies (installed with the chart, a
//!   GameCluster with the managed Redis): a stranger pod in the cluster's namespace cannot reach a node pod's
//!   link port 7400 nor Redis 6379, while the gate pod reaches the node's link port and a player logs in
//!   through the gate Service.
//!
//! Run with `e2e/run.sh network_policy` (needs root, the toolchain and the images e2e/run.sh builds).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use switchyard_e2e::network_policy::{Reach, connect_from, verdicts};
use switchyard_e2e::{RealNode, RunDir};

mod support;
use support::{install_operator, is_ready, object, play, start_plane_and_node, tool};
use switchyard_testkit::eventually;

const IMAGE: &str = "registry.local/switchyard:e2e";
const PAUSE: &str = "registry.local/pause:e2e";
/// One connection attempt's limit: a dropped SYN is retransmitted after 1 s and 3 s, so 3 s is a clear
/// "no answer" while an open path answers in milliseconds.
const ATTEMPT: Duration = Duration::from_secs(3);
/// How long a policy change may take to reach the controller's informers.
const SETTLE: Duration = Duration::from_secs(30);

async fn create_namespace(client: &kube::Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": name}})),
        )
        .await
        .expect("namespace");
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), name);
    eventually("the default ServiceAccount", Duration::from_secs(60), || async {
        accounts.get_opt("default").await.ok().flatten()
    })
    .await;
}

/// A pod of one container `main` that only holds its network namespace (our pause image), labelled `app`.
fn idle_pod(name: &str, app: &str) -> Pod {
    object(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": PAUSE, "imagePullPolicy": "Never"}],
        },
    }))
}

/// Creates `pods` in `namespace` and waits until each is Ready; their IPs, in order.
async fn run_pods(pods: &Api<Pod>, specs: Vec<Pod>) -> Vec<Ipv4Addr> {
    for pod in &specs {
        pods.create(&PostParams::default(), pod)
            .await
            .expect("create a pod");
    }
    let mut ips = Vec::new();
    for pod in &specs {
        let name = pod.metadata.name.clone().expect("name");
        let ready = eventually(&format!("pod {name} Ready"), Duration::from_secs(180), || async {
            pods.get_opt(&name).await.ok().flatten().filter(is_ready)
        })
        .await;
        ips.push(pod_ip(&ready));
    }
    ips
}

fn pod_ip(pod: &Pod) -> Ipv4Addr {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .expect("an IPv4 pod address")
}

/// Polls connection attempts from `pid` to `target` until one comes to `want` (up to [`SETTLE`]), then
/// checks that the next two do too (the verdict holds, it was not a fluke); returns how long it took.
async fn settles(node: &RealNode, what: &str, pid: u32, target: SocketAddrV4, want: &Reach) -> Duration {
    let started = Instant::now();
    loop {
        let reach = connect_from(pid, target, ATTEMPT).await;
        if &reach == want {
            break;
        }
        if started.elapsed() > SETTLE {
            let dump = node.dump_network();
            panic!(
                "{what}: {target} still {reach:?} after {SETTLE:?}, want {want:?}; network in {}",
                dump.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = started.elapsed();
    for _ in 0..2 {
        let reach = connect_from(pid, target, ATTEMPT).await;
        assert_eq!(&reach, want, "{what}: {target} again");
    }
    took
}

#[test]
#[ignore = "run via e2e/run.sh"]
fn network_policy_plain() {
    let Some(run) = switchyard_e2e::isolate().unwrap_or_else(|error| panic!("{error}")) else {
        return;
    };
    switchyard_e2e::runtime().block_on(plain(run));
}

async fn plain(run: RunDir) {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[netpol {:6.1}s] {what}", started.elapsed().as_secs_f64());
    let (plane, node) = start_plane_and_node(&run).await;
    let client = plane.client();
    const NS: &str = "netpol";
    create_namespace(&client, NS).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let server: Pod = object(json!({
        "metadata": {"name": "server", "labels": {"app": "server"}},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532},
            "containers": [{
                "name": "main",
                "image": IMAGE,
                "imagePullPolicy": "Never",
                "args": ["dev", "--tcp", "0.0.0.0:3553", "--ws", "0.0.0.0:3554", "--http", "0.0.0.0:3555"],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 3555}, "periodSeconds": 1},
            }],
        },
    }));
    let ips = run_pods(
        &pods,
        vec![server, idle_pod("client", "client"), idle_pod("other", "other")],
    )
    .await;
    let server = SocketAddrV4::new(ips[0], 3553);
    let client_pid = node.container_pid(NS, "client", "main").expect("client pid");
    let other_pid = node.container_pid(NS, "other", "main").expect("other pid");
    step(&format!(
        "pods Ready: server {}, client {}, other {}",
        ips[0], ips[1], ips[2]
    ));

    settles(&node, "no policy", client_pid, server, &Reach::Connected).await;
    settles(&node, "no policy", other_pid, server, &Reach::Connected).await;
    step("no policy: client and other reach the server");

    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), NS);
    policies
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "deny-all"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
            })),
        )
        .await
        .expect("deny-all policy");
    let log = run.path().join("node/kube-network-policies.log");
    let before = verdicts(&log);
    let took = settles(&node, "deny-all", client_pid, server, &Reach::TimedOut).await;
    settles(&node, "deny-all", other_pid, server, &Reach::TimedOut).await;
    let after = verdicts(&log);
    // Each timed-out attempt is a SYN and its retransmissions, each dropped by the controller's verdict.
    assert!(
        after.dropped >= before.dropped + 6,
        "the controller dropped the SYNs: {before:?} -> {after:?}"
    );
    step(&format!(
        "deny-all ingress: the client's connections time out (within {took:?}); controller verdicts {before:?} -> {after:?}"
    ));

    policies
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "allow-client"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "server"}},
                    "policyTypes": ["Ingress"],
                    "ingress": [{
                        "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                        "ports": [{"protocol": "TCP", "port": 3553}],
                    }],
                },
            })),
        )
        .await
        .expect("allow policy");
    let took = settles(&node, "allow-client", client_pid, server, &Reach::Connected).await;
    settles(&node, "allow-client", other_pid, server, &Reach::TimedOut).await;
    // The rule names one port: the server's admin port stays shut for the client too.
    settles(
        &node,
        "allow-client, other port",
        client_pid,
        SocketAddrV4::new(ips[0], 3555),
        &Reach::TimedOut,
    )
    .await;
    step(&format!(
        "allow app=client on 3553: the client connects again (within {took:?}); other and port 3555 stay shut"
    ));
    node.stop().await;
    plane.stop().await;
}

#[test]
#[ignore = "run via e2e/run.sh"]
fn network_policy_game_cluster() {
    let Some(run) = switchyard_e2e::isolate().unwrap_or_else(|error| panic!("{error}")) else {
        return;
    };
    switchyard_e2e::runtime().block_on(game_cluster(run));
}

async fn game_cluster(run: RunDir) {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[netpol-gc {:6.1}s] {what}", started.elapsed().as_secs_f64());
    let (plane, node) = start_plane_and_node(&run).await;
    install_operator(&plane);
    const NS: &str = "game";
    let client = plane.client();
    create_namespace(&client, NS).await;
    let manifest = run.path().join("gamecluster.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: switchyard.dev/v1alpha1\nkind: GameCluster\nmetadata:\n  name: my-game\n  namespace: game\n\
         spec:\n  locator:\n    managedRedis:\n      image: registry.local/redis:e2e\n",
    )
    .expect("manifest");
    tool(
        &plane,
        "kubectl",
        &["apply", "-f", &manifest.display().to_string()],
    );
    tool(
        &plane,
        "kubectl",
        &[
            "-n",
            NS,
            "wait",
            "--for=condition=Ready",
            "gc/my-game",
            "--timeout=240s",
        ],
    );
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), NS);
    let names: Vec<String> = policies
        .list(&ListParams::default())
        .await
        .expect("list NetworkPolicies")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(names.len(), 3, "gate, node and Redis policies: {names:?}");
    step(&format!(
        "chart installed, GameCluster my-game Ready; NetworkPolicies {names:?}"
    ));

    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let component = |name: &'static str| {
        let pods = pods.clone();
        async move {
            let params = ListParams::default().labels(&format!(
                "app.kubernetes.io/instance=my-game,app.kubernetes.io/component={name}"
            ));
            eventually(
                &format!("a ready {name} pod"),
                Duration::from_secs(120),
                || async { pods.list(&params).await.ok()?.items.into_iter().find(is_ready) },
            )
            .await
        }
    };
    let gate = component("gate").await;
    let game_node = component("node").await;
    let redis = component("redis").await;
    let stranger = run_pods(&pods, vec![idle_pod("stranger", "stranger")]).await[0];
    let stranger_pid = node.container_pid(NS, "stranger", "main").expect("stranger pid");
    let gate_name = gate.metadata.name.clone().expect("gate name");
    let gate_container = gate
        .spec
        .as_ref()
        .map(|s| s.containers[0].name.clone())
        .expect("gate container");
    let gate_pid = node
        .container_pid(NS, &gate_name, &gate_container)
        .expect("gate pid");
    let link = SocketAddrV4::new(pod_ip(&game_node), 7400);
    let redis_port = SocketAddrV4::new(pod_ip(&redis), 6379);
    step(&format!(
        "gate {}, node {}, Redis {}, stranger {stranger}",
        pod_ip(&gate),
        link.ip(),
        redis_port.ip()
    ));

    // The stranger's own network works: the gate's client port is open to anyone.
    let gate_clients = SocketAddrV4::new(pod_ip(&gate), 3553);
    settles(
        &node,
        "stranger -> gate clients",
        stranger_pid,
        gate_clients,
        &Reach::Connected,
    )
    .await;
    let took = settles(&node, "gate -> node link", gate_pid, link, &Reach::Connected).await;
    settles(&node, "gate -> Redis", gate_pid, redis_port, &Reach::Connected).await;
    step(&format!(
        "stranger reaches the gate's client port; gate reaches the node's link port ({took:?}) and Redis"
    ));
    let log = run.path().join("node/kube-network-policies.log");
    let before = verdicts(&log);
    settles(
        &node,
        "stranger -> node link",
        stranger_pid,
        link,
        &Reach::TimedOut,
    )
    .await;
    settles(
        &node,
        "stranger -> Redis",
        stranger_pid,
        redis_port,
        &Reach::TimedOut,
    )
    .await;
    let after = verdicts(&log);
    assert!(
        after.dropped >= before.dropped + 6,
        "the controller dropped the stranger's SYNs: {before:?} -> {after:?}"
    );
    step(&format!(
        "the stranger's connections to {link} and {redis_port} time out (controller verdicts {before:?} -> {after:?})"
    ));

    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), NS);
    let cluster_ip = services
        .get("my-game-gate")
        .await
        .expect("the gate Service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    play(&format!("{cluster_ip}:3553"), 61).await;
    step("a player logs in through the gate Service (gate -> node over the link)");
    node.stop().await;
    plane.stop().await;
}

//! The Kubernetes components against a real etcd + kube-apiserver (no controller-manager, no kubelet).
//!
//! Starts both on 127.0.0.1 with `switchyard-testkit` (free ports, throwaway certificates, the binaries
//! from `e2e/toolchain/build.sh`), then, as a node whose RBAC is exactly what the module docs ask for:
//! - [`KubernetesRegistry`] publishes EndpointSlices created by hand (10.244.x.y / fd00:: addresses:
//!   the API refuses loopback ones; nothing connects to them), and follows ready → terminating and deletes;
//!   one registry over two Services (the node Services of two pools) lists both;
//! - [`PodReporter`] writes the count annotations and the routes on a pod, throttled, ending on the newest
//!   count, and retries until a pod that did not exist yet appears;
//! - [`DrainSignal`] (pod watch) sees the drain annotation come and go.
//!
//! Run: `cargo test -p switchyard-cluster --test kubernetes_apiserver -- --ignored --nocapture`.
//! It fails (never skips) when the binaries are missing. `SWITCHYARD_K8S_BIN` overrides the binary
//! directory; `SWITCHYARD_KEEP_KUBE=1` keeps the work dir (logs, kubeconfigs) after the run.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};
use serde_json::json;
use switchyard_cluster::kubernetes::{
    DrainSignal, KubernetesRegistry, PodRef, PodReporter, RegistryConfig, ReporterConfig,
};
use switchyard_cluster::registry::{NodeEndpoint, Registry};
use switchyard_testkit::{ControlPlane, ControlPlaneConfig, User, eventually, eventually_true};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const NS: &str = "switchyard-test";
const SERVICE: &str = "game-nodes";
const NODE_USER: &str = "switchyard-node";
const WAIT: Duration = Duration::from_secs(30);

// ---- the control plane ------------------------------------------------------------------------------------

/// etcd + kube-apiserver on free 127.0.0.1 ports (`switchyard-testkit`), with the node's user.
async fn start_control_plane() -> ControlPlane {
    let config = ControlPlaneConfig::local()
        .unwrap_or_else(|error| panic!("{error}"))
        .user(User::new("node", NODE_USER));
    ControlPlane::start_async(config)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// A client as one of the control plane's users (`admin`, `node`).
async fn client(plane: &ControlPlane, user: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(plane.kubeconfig(user)).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

// ---- helpers ----------------------------------------------------------------------------------------------

async fn create<K>(api: &Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap()
}

/// An EndpointSlice of `service` with a `link` port 7000 and an `admin` port 9000.
fn slice(name: &str, service: &str, address_type: &str, endpoints: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "switchyard-test",
            },
        },
        "addressType": address_type,
        "ports": [
            {"name": "admin", "port": 9000, "protocol": "TCP"},
            {"name": "link", "port": 7000, "protocol": "TCP"},
        ],
        "endpoints": endpoints,
    })
}

fn ep(address: &str, accepting: bool) -> NodeEndpoint {
    NodeEndpoint {
        address: address.to_owned(),
        accepting,
    }
}

async fn wait_nodes(rx: &mut watch::Receiver<Vec<NodeEndpoint>>, expected: &[NodeEndpoint], what: &str) {
    let result = tokio::time::timeout(WAIT, rx.wait_for(|nodes| nodes == expected))
        .await
        .map(|r| r.map(|_| ()));
    match result {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("{what}: the registry stopped"),
        Err(_) => panic!(
            "{what}: the registry did not publish {expected:?} within {WAIT:?}; it has {:?}",
            *rx.borrow()
        ),
    }
}

fn annotation(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.annotations.as_ref()?.get(key).cloned()
}

async fn wait_annotation(pods: &Api<Pod>, pod: &str, key: &str, value: &str, within: Duration) {
    eventually_true(
        &format!("pod {pod}: annotation {key} = {value:?}"),
        within,
        || async {
            pods.get(pod)
                .await
                .is_ok_and(|p| annotation(&p, key).as_deref() == Some(value))
        },
    )
    .await;
}

fn pod_json(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{"name": "node", "image": "registry.invalid/switchyard:test"}],
        },
    })
}

// ---- the test ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane from e2e/toolchain/build.sh; run by scripts/test.sh e2e tier"]
async fn registry_reporter_and_drain_against_a_real_api_server() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            std::env::var("SWITCHYARD_LOG").unwrap_or_else(|_| "switchyard_cluster=debug".to_owned()),
        )
        .try_init();
    let plane = start_control_plane().await;
    let admin = client(&plane, "admin").await;
    // The API server creates the `default` namespace once it serves.
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    eventually("the default namespace", WAIT, || async {
        namespaces.get("default").await.ok()
    })
    .await;

    // Namespace, the default ServiceAccount (no controller-manager creates it), and the node's RBAC: exactly
    // what the module docs list.
    create::<Namespace>(&Api::all(admin.clone()), json!({"metadata": {"name": NS}})).await;
    create::<ServiceAccount>(
        &Api::namespaced(admin.clone(), NS),
        json!({"metadata": {"name": "default"}}),
    )
    .await;
    create::<Role>(
        &Api::namespaced(admin.clone(), NS),
        json!({
            "metadata": {"name": "switchyard-node"},
            "rules": [
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods"], "resourceNames": ["node-0", "node-1"],
                 "verbs": ["get", "list", "watch", "patch"]},
            ],
        }),
    )
    .await;
    create::<RoleBinding>(
        &Api::namespaced(admin.clone(), NS),
        json!({
            "metadata": {"name": "switchyard-node"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "switchyard-node"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": NODE_USER}],
        }),
    )
    .await;
    let node = client(&plane, "node").await;
    let shutdown = CancellationToken::new();

    registry_follows_endpoint_slices(&admin, &node, &shutdown).await;
    reporter_and_drain(&admin, &node, &shutdown).await;

    shutdown.cancel();
}

async fn registry_follows_endpoint_slices(admin: &Client, node: &Client, shutdown: &CancellationToken) {
    let slices: Api<EndpointSlice> = Api::namespaced(admin.clone(), NS);
    create(
        &slices,
        slice(
            "game-nodes-a",
            SERVICE,
            "IPv4",
            json!([
                {"addresses": ["10.244.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false}},
                {"addresses": ["10.244.0.2"], "conditions": {"ready": true, "serving": true, "terminating": false}},
                {"addresses": ["10.244.0.4"], "conditions": {"ready": false, "serving": false, "terminating": false}},
            ]),
        ),
    )
    .await;
    create(
        &slices,
        slice(
            "game-nodes-b",
            SERVICE,
            "IPv4",
            json!([
                {"addresses": ["10.244.0.3"], "conditions": {}},
                {"addresses": ["10.244.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            ]),
        ),
    )
    .await;
    create(
        &slices,
        slice(
            "game-nodes-v6",
            SERVICE,
            "IPv6",
            json!([{"addresses": ["fd00:10:244::9"], "conditions": {"ready": true}}]),
        ),
    )
    .await;
    // Another Service's slice in the same namespace: never published.
    create(
        &slices,
        slice("gates-a", "gates", "IPv4", json!([{"addresses": ["10.244.9.9"]}])),
    )
    .await;

    let registry =
        KubernetesRegistry::start(node.clone(), RegistryConfig::new(NS, SERVICE), shutdown).unwrap();
    tokio::time::timeout(WAIT, registry.wait_synced())
        .await
        .expect("registry synced within 30 s")
        .expect("registry running");
    let mut nodes = registry.nodes();
    wait_nodes(
        &mut nodes,
        &[
            ep("10.244.0.1:7000", true),
            ep("10.244.0.2:7000", true), // accepting in slice a, draining in b: accepting wins
            ep("10.244.0.3:7000", true), // conditions all nil
            ep("10.244.0.4:7000", false), // listed but not ready: linked, not offered
            ep("[fd00:10:244::9]:7000", true),
        ],
        "initial list",
    )
    .await;

    // One registry over two Services (the node Services of two pools) lists the slices of both, still not
    // those of a third Service.
    let pools = KubernetesRegistry::start(
        node.clone(),
        RegistryConfig::for_services(NS, [SERVICE, "gates"]),
        shutdown,
    )
    .unwrap();
    tokio::time::timeout(WAIT, pools.wait_synced())
        .await
        .expect("two-Service registry synced within 30 s")
        .expect("registry running");
    let mut pool_nodes = pools.nodes();
    let listed: Vec<String> = tokio::time::timeout(WAIT, pool_nodes.wait_for(|nodes| !nodes.is_empty()))
        .await
        .expect("the two-Service registry published within 30 s")
        .expect("registry running")
        .iter()
        .map(|node| node.address.clone())
        .collect();
    assert!(
        listed.iter().any(|address| address.starts_with("10.244.9.9:"))
            && listed.contains(&"10.244.0.4:7000".to_owned()),
        "both Services' nodes: {listed:?}"
    );
    drop(pools);

    // 10.244.0.1 starts terminating: draining (present, not accepting).
    slices
        .patch(
            "game-nodes-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [
                {"addresses": ["10.244.0.1"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.244.0.2"], "conditions": {"ready": true, "serving": true, "terminating": false}},
            ]})),
        )
        .await
        .unwrap();
    wait_nodes(
        &mut nodes,
        &[
            ep("10.244.0.1:7000", false),
            ep("10.244.0.2:7000", true),
            ep("10.244.0.3:7000", true),
            ep("[fd00:10:244::9]:7000", true),
        ],
        "ready -> terminating",
    )
    .await;

    // Slice b and the IPv6 slice go away; then 10.244.0.1 stops serving (a draining node failing its
    // readiness probe: still linked), and finally leaves the slice (its pod is gone).
    slices
        .delete("game-nodes-b", &DeleteParams::default())
        .await
        .unwrap();
    slices
        .delete("game-nodes-v6", &DeleteParams::default())
        .await
        .unwrap();
    wait_nodes(
        &mut nodes,
        &[ep("10.244.0.1:7000", false), ep("10.244.0.2:7000", true)],
        "slices deleted",
    )
    .await;
    slices
        .patch(
            "game-nodes-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [
                {"addresses": ["10.244.0.1"], "conditions": {"ready": false, "serving": false, "terminating": true}},
                {"addresses": ["10.244.0.2"], "conditions": {"ready": true, "serving": true, "terminating": false}},
            ]})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        *nodes.borrow_and_update(),
        vec![ep("10.244.0.1:7000", false), ep("10.244.0.2:7000", true)],
        "a draining endpoint that fails readiness stays linked"
    );
    slices
        .patch(
            "game-nodes-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [
                {"addresses": ["10.244.0.2"], "conditions": {"ready": true, "serving": true, "terminating": false}},
            ]})),
        )
        .await
        .unwrap();
    wait_nodes(
        &mut nodes,
        &[ep("10.244.0.2:7000", true)],
        "endpoint gone with its pod",
    )
    .await;
}

async fn reporter_and_drain(admin: &Client, node: &Client, shutdown: &CancellationToken) {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    create(&pods, pod_json("node-0")).await;

    // Every distinct bound-players value the pod carries, in order, as a watcher sees them.
    let seen: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let observer = {
        let seen = seen.clone();
        let events = watcher(
            pods.clone(),
            watcher::Config::default().fields("metadata.name=node-0"),
        )
        .default_backoff()
        .applied_objects();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(Ok(pod)) = events.next().await {
                if let Some(value) = annotation(&pod, "switchyard.dev/bound-players") {
                    let mut seen = seen.lock().unwrap();
                    if seen.last().map(|(_, v)| v) != Some(&value) {
                        seen.push((Instant::now(), value));
                    }
                }
            }
        })
    };

    let interval = Duration::from_millis(500);
    let (bound_tx, bound_rx) = watch::channel(3usize);
    let config = ReporterConfig::new(PodRef::new(NS, "node-0"))
        .with_interval(interval)
        .with_routes([11, 1, 2, 1]);
    let reporter = PodReporter::start(node.clone(), config, bound_rx, shutdown).unwrap();
    wait_annotation(&pods, "node-0", "switchyard.dev/bound-players", "3", WAIT).await;
    wait_annotation(&pods, "node-0", "switchyard.dev/routes", "1,2,11", WAIT).await;
    wait_annotation(
        &pods,
        "node-0",
        "controller.kubernetes.io/pod-deletion-cost",
        "3",
        WAIT,
    )
    .await;
    let managers: Vec<String> = pods
        .get("node-0")
        .await
        .unwrap()
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.iter().any(|m| m == "switchyard"),
        "field managers {managers:?}"
    );

    // A burst of 17 changes in ~350 ms: a few patches, the last one with the newest value.
    let burst_start = Instant::now();
    for value in 4..=20 {
        bound_tx.send_replace(value);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_annotation(&pods, "node-0", "switchyard.dev/bound-players", "20", WAIT).await;
    wait_annotation(
        &pods,
        "node-0",
        "controller.kubernetes.io/pod-deletion-cost",
        "20",
        WAIT,
    )
    .await;
    let mut written = reporter.written();
    tokio::time::timeout(WAIT, written.wait_for(|w| *w == Some(20)))
        .await
        .expect("written() reports 20")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // let the observer catch up
    let during_burst: Vec<(Instant, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at >= burst_start)
        .cloned()
        .collect();
    let values: Vec<&str> = during_burst.iter().map(|(_, v)| v.as_str()).collect();
    eprintln!("bound-players values the pod carried during the burst: {values:?}");
    assert!(
        (1..=3).contains(&values.len()) && values.last() == Some(&"20"),
        "17 changes at a 500 ms interval gave these written values: {values:?}"
    );
    for pair in during_burst.windows(2) {
        // observed times jitter a little around the patch times
        assert!(
            pair[1].0 - pair[0].0 >= interval / 2,
            "two patches {:?} apart at a {interval:?} interval: {values:?}",
            pair[1].0 - pair[0].0
        );
    }
    observer.abort();

    // A reporter started before its pod exists retries (with backoff) until the pod appears.
    let (_late_tx, late_rx) = watch::channel(7usize);
    let late_config =
        ReporterConfig::new(PodRef::new(NS, "node-1")).with_interval(Duration::from_millis(200));
    let late = PodReporter::start(node.clone(), late_config, late_rx, shutdown).unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        *late.written().borrow(),
        None,
        "nothing can be written before the pod exists"
    );
    create(&pods, pod_json("node-1")).await;
    wait_annotation(&pods, "node-1", "switchyard.dev/bound-players", "7", WAIT).await;

    // The drain signal through a metadata watch of the pod, with the node's narrow RBAC.
    let drain = DrainSignal::from_pod_watch(node.clone(), PodRef::new(NS, "node-0"), shutdown).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!drain.is_requested(), "no drain annotation yet");
    pods.patch(
        "node-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"switchyard.dev/drain": "true"}}})),
    )
    .await
    .unwrap();
    tokio::time::timeout(WAIT, drain.requested())
        .await
        .expect("drain seen within 30 s")
        .expect("drain signal running");
    let mut requested = drain.subscribe();
    pods.patch(
        "node-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"switchyard.dev/drain": null}}})),
    )
    .await
    .unwrap();
    tokio::time::timeout(WAIT, requested.wait_for(|r| !*r))
        .await
        .expect("drain removal seen within 30 s")
        .unwrap();
    // The reporter's annotations survived the other writers' patches.
    let pod = pods.get("node-0").await.unwrap();
    assert_eq!(
        annotation(&pod, "switchyard.dev/bound-players").as_deref(),
        Some("20")
    );
    let all: BTreeMap<String, String> = pod.metadata.annotations.unwrap_or_default();
    assert!(!all.contains_key("switchyard.dev/drain"), "{all:?}");
}

//! What the real-node tests share: a control plane with a real node, building API objects from JSON, pod
//! readiness, a Service's endpoints, a player's round trip through a gate, and the toolchain's kubectl/helm
//! against the control plane.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use serde::de::DeserializeOwned;
use serde_json::json;
use switchyard_client::{Client, ClientOptions, PacketConfig};
use switchyard_e2e::{ControlPlane, ControlPlaneConfig, NodeConfig, RealNode, RunDir};

/// The run's tracing, a control plane and a real node (containerd, the kubelet, kube-proxy, CoreDNS and
/// kube-network-policies) in the run's directory, both started.
pub async fn start_plane_and_node(run: &RunDir) -> (ControlPlane, RealNode) {
    run.init_tracing();
    let plane =
        ControlPlane::start(ControlPlaneConfig::new(run.path().join("control-plane")).expect("config"))
            .await
            .expect("control plane");
    let node = RealNode::start(
        &plane,
        NodeConfig::new(&plane, run.path().join("node")).expect("node config"),
    )
    .await
    .expect("the node starts");
    (plane, node)
}

/// An API object from its JSON; panics when it does not fit the type.
pub fn object<T: DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

/// Whether the pod is Ready and not being deleted.
pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The addresses of a Service's EndpointSlices as (address, ready); an endpoint without a ready condition
/// counts as ready, as the API documents for consumers.
pub async fn endpoints(client: &kube::Client, namespace: &str, service: &str) -> BTreeSet<(String, bool)> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let Ok(list) = slices.list(&params).await else {
        return BTreeSet::new();
    };
    list.items
        .iter()
        .flat_map(|slice| slice.endpoints.iter().flatten())
        .flat_map(|e| {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            e.addresses.iter().map(move |a| (a.clone(), ready))
        })
        .collect()
}

/// Echo and login through `address`: the gate answers, and a node behind it binds the player.
pub async fn play(address: &str, uid: i64) {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    let client = Client::connect_tcp(address, PacketConfig::default(), options)
        .await
        .unwrap_or_else(|e| panic!("connect {address}: {e}"));
    let echo = client
        .request(
            1,
            serde_json::to_vec(&json!({"message": "through the node"})).expect("json"),
        )
        .await
        .unwrap_or_else(|e| panic!("echo via {address}: {e}"));
    let echo: serde_json::Value = serde_json::from_slice(&echo).expect("echo json");
    assert_eq!(echo, json!({"code": 0, "message": "through the node"}));
    let login = client
        .request(
            2,
            serde_json::to_vec(&json!({"uid": uid, "name": "node-test"})).expect("json"),
        )
        .await
        .unwrap_or_else(|e| panic!("login via {address}: {e}"));
    let login: serde_json::Value = serde_json::from_slice(&login).expect("login json");
    assert_eq!(login["code"], 0, "{login}");
    assert_eq!(login["uid"], uid);
}

/// Runs a toolchain command (kubectl, helm) against the control plane: whether it succeeded, and its
/// stdout and stderr.
pub fn tool_output(plane: &ControlPlane, name: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(plane.bin_dir().join(name))
        .args(args)
        .env("KUBECONFIG", plane.kubeconfig())
        .env("HOME", plane.dir())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// [`tool_output`] of a command that must succeed; panics with its output on failure.
pub fn tool(plane: &ControlPlane, name: &str, args: &[&str]) -> String {
    let (ok, text) = tool_output(plane, name, args);
    assert!(ok, "{name} {args:?} failed:\n{text}");
    text
}

/// `helm install` of the chart (the operator, image `registry.local/switchyard:e2e`) into
/// `switchyard-system`, waiting until it is deployed; helm's output.
pub fn install_operator(plane: &ControlPlane) -> String {
    let out = tool(
        plane,
        "helm",
        &[
            "install",
            "switchyard",
            "charts/switchyard",
            "--namespace",
            "switchyard-system",
            "--create-namespace",
            "--set",
            "image.repository=registry.local/switchyard",
            "--set",
            "image.tag=e2e",
            "--wait",
            "--timeout",
            "180s",
        ],
    );
    assert!(out.contains("STATUS: deployed"), "{out}");
    out
}

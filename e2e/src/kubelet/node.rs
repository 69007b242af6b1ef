//! The Node object and its heartbeat, so the scheduler places pods on it and the node lifecycle
//! controller keeps it Ready: a node Lease in `kube-node-lease` renewed every [`LEASE_RENEW`], and the
//! node status (conditions with `lastHeartbeatTime`) patched every [`STATUS_EVERY`].

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::Error;

/// How often the Lease is renewed (the kubelet's default: a quarter of the 40 s lease duration).
pub(crate) const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How often the node status is refreshed.
pub(crate) const STATUS_EVERY: Duration = Duration::from_secs(20);
const LEASE_SECONDS: i32 = 40;
const FIELD_MANAGER: &str = "switchyard-e2e-kubelet";

fn now() -> String {
    Timestamp::now().to_string()
}

/// The node status: capacity, Ready and the pressure conditions, addresses, node info.
fn status(name: &str, address: &str, max_pods: usize) -> serde_json::Value {
    let heartbeat = now();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": heartbeat, "lastTransitionTime": heartbeat})
    };
    let resources =
        json!({"cpu": "32", "memory": "64Gi", "pods": max_pods.to_string(), "ephemeral-storage": "100Gi"});
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("Ready", "True", "KubeletReady", "switchyard e2e pod runner is posting ready status"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "no PID pressure"),
        ],
        "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "architecture": std::env::consts::ARCH,
            "bootID": "switchyard-e2e",
            "containerRuntimeVersion": "switchyard-e2e://0.1.0",
            "kernelVersion": "",
            "kubeProxyVersion": "",
            "kubeletVersion": "v1.37.1",
            "machineID": "switchyard-e2e",
            "operatingSystem": "linux",
            "osImage": "switchyard e2e pod runner (local processes)",
            "systemUUID": "switchyard-e2e",
        },
    })
}

/// Creates (or replaces the status of) the Node and its Lease.
pub(crate) async fn register(
    client: &kube::Client,
    name: &str,
    address: &str,
    max_pods: usize,
) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": std::env::consts::ARCH,
            "switchyard.dev/e2e": "true",
        }},
        "status": status(name, address, max_pods),
    }))
    .map_err(|e| Error::Setup(format!("node object: {e}")))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(Error::kube(format!("create node {name}"))(error)),
    }
    patch_status(&nodes, name, address, max_pods).await?;
    renew_lease(client, name).await?;
    tracing::info!(node = name, %address, "node registered");
    Ok(())
}

async fn patch_status(nodes: &Api<Node>, name: &str, address: &str, max_pods: usize) -> Result<(), Error> {
    let patch = json!({"status": status(name, address, max_pods)});
    nodes
        .patch_status(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(format!("patch node {name} status")))?;
    Ok(())
}

async fn renew_lease(client: &kube::Client, name: &str) -> Result<(), Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("kube-node-lease".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.to_owned()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    leases
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&lease),
        )
        .await
        .map_err(Error::kube(format!("renew lease kube-node-lease/{name}")))?;
    Ok(())
}

/// Renews the Lease and refreshes the status until the task is aborted. Errors are logged and retried at
/// the next tick.
pub(crate) async fn heartbeat(client: kube::Client, name: String, address: String, max_pods: usize) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut lease = tokio::time::interval(LEASE_RENEW);
    let mut status = tokio::time::interval(STATUS_EVERY);
    lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = lease.tick() => {
                if let Err(error) = renew_lease(&client, &name).await {
                    tracing::warn!(%error, "node lease renewal failed");
                }
            }
            _ = status.tick() => {
                if let Err(error) = patch_status(&nodes, &name, &address, max_pods).await {
                    tracing::warn!(%error, "node status update failed");
                }
            }
        }
    }
}

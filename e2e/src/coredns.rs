//! CoreDNS as the cluster DNS of the e2e node: the toolchain's `coredns` binary in an image of its own
//! (`registry.local/coredns:e2e`), deployed the way clusters deploy it: a ServiceAccount allowed to watch
//! Services, EndpointSlices and Namespaces, a Corefile in a ConfigMap, a Deployment, and the Service
//! `kube-system/kube-dns` on [`CLUSTER_DNS`](crate::node::CLUSTER_DNS), which the kubelet writes into every
//! pod's resolv.conf. CoreDNS listens on 1053 (it runs as uid 65532 without capabilities); the Service maps
//! port 53 to it.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use serde_json::json;

use crate::Error;
use crate::node::{CLUSTER_DNS, COREDNS_IMAGE};
use crate::objects::create;

const NS: &str = "kube-system";
/// How setup errors name this component.
const COMPONENT: &str = "CoreDNS";
const NAME: &str = "coredns";

/// What the cluster DNS answers from: Services and pods of `cluster.local`; nothing is forwarded (the
/// namespace has no upstream resolver).
const COREFILE: &str = ".:1053 {
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    cache 5
    loop
    loadbalance
}
";

/// Creates CoreDNS's objects and waits (up to `timeout`) until its Deployment has a ready replica.
///
/// # Errors
/// When the API refuses an object or CoreDNS is not ready in time.
pub async fn deploy(client: kube::Client, timeout: Duration) -> Result<(), Error> {
    let labels = json!({"k8s-app": "kube-dns"});
    create(
        COMPONENT,
        Api::<ServiceAccount>::namespaced(client.clone(), NS),
        json!({"metadata": {"name": NAME, "namespace": NS}}),
    )
    .await?;
    create(
        COMPONENT,
        Api::<ClusterRole>::all(client.clone()),
        json!({
            "metadata": {"name": "system:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        }),
    )
    .await?;
    create(
        COMPONENT,
        Api::<ClusterRoleBinding>::all(client.clone()),
        json!({
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NS}],
        }),
    )
    .await?;
    create(
        COMPONENT,
        Api::<ConfigMap>::namespaced(client.clone(), NS),
        json!({"metadata": {"name": NAME, "namespace": NS}, "data": {"Corefile": COREFILE}}),
    )
    .await?;
    create(
        COMPONENT,
        Api::<Deployment>::namespaced(client.clone(), NS),
        json!({
            "metadata": {"name": NAME, "namespace": NS, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": NAME,
                        "dnsPolicy": "Default",
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532},
                        "containers": [{
                            "name": "coredns",
                            "image": COREDNS_IMAGE,
                            "imagePullPolicy": "Never",
                            "args": ["-conf", "/etc/coredns/Corefile"],
                            "ports": [
                                {"name": "dns", "containerPort": 1053, "protocol": "UDP"},
                                {"name": "dns-tcp", "containerPort": 1053, "protocol": "TCP"},
                            ],
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
                            "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10},
                            "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "50m", "memory": "32Mi"}},
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": true}],
                        }],
                        "volumes": [{"name": "config", "configMap": {"name": NAME}}],
                    },
                },
            },
        }),
    )
    .await?;
    create(
        COMPONENT,
        Api::<Service>::namespaced(client.clone(), NS),
        json!({
            "metadata": {"name": "kube-dns", "namespace": NS, "labels": labels},
            "spec": {
                "clusterIP": CLUSTER_DNS,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": 1053, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": 1053, "protocol": "TCP"},
                ],
            },
        }),
    )
    .await?;

    let deployments: Api<Deployment> = Api::namespaced(client, NS);
    let started = Instant::now();
    loop {
        let ready = deployments
            .get_opt(NAME)
            .await
            .ok()
            .flatten()
            .and_then(|d| d.status)
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        if ready >= 1 {
            tracing::info!(took = ?started.elapsed(), "CoreDNS ready");
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(Error::Timeout {
                what: "the CoreDNS Deployment to have a ready replica".into(),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One DNS A query for `name` over UDP to `server` (RFC 1035 by hand: the harness has no resolver library,
/// and the namespace's own resolver knows no cluster names): the addresses of the answer, none when the
/// query fails or times out (2 s). Reads at most one 512-byte datagram.
pub fn resolve_a(server: std::net::SocketAddr, name: &str) -> Vec<std::net::Ipv4Addr> {
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        let Ok(len) = u8::try_from(label.len()) else {
            return Vec::new();
        };
        query.push(len);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let Ok(socket) = std::net::UdpSocket::bind("0.0.0.0:0") else {
        return Vec::new();
    };
    if socket.set_read_timeout(Some(Duration::from_secs(2))).is_err()
        || socket.send_to(&query, server).is_err()
    {
        return Vec::new();
    }
    let mut answer = [0u8; 512];
    let Ok(len) = socket.recv(&mut answer) else {
        return Vec::new();
    };
    parse_a_records(&answer[..len], query.len())
}

/// The A records of a DNS answer whose question section ends at `question_end`.
fn parse_a_records(answer: &[u8], question_end: usize) -> Vec<std::net::Ipv4Addr> {
    let Some(count) = answer
        .get(6..8)
        .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])))
    else {
        return Vec::new();
    };
    let mut at = question_end;
    let mut found = Vec::new();
    for _ in 0..count {
        // The record's name: a compression pointer, or labels up to the root.
        if answer.get(at).is_some_and(|b| b & 0xc0 == 0xc0) {
            at += 2;
        } else {
            while at < answer.len() && answer[at] != 0 {
                at += usize::from(answer[at]) + 1;
            }
            at += 1;
        }
        let Some(header) = answer.get(at..at + 10) else {
            break;
        };
        let (kind, rdlen) = (
            u16::from_be_bytes([header[0], header[1]]),
            usize::from(u16::from_be_bytes([header[8], header[9]])),
        );
        at += 10;
        if kind == 1
            && rdlen == 4
            && let Some(ip) = answer.get(at..at + 4)
        {
            found.push(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]));
        }
        at += rdlen;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_of_an_answer() {
        // Header (1 answer), question for "a." (type A, class IN), one answer by pointer: 10.96.0.10.
        let mut answer = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        answer.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        let question_end = answer.len();
        answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 10]);
        assert_eq!(
            parse_a_records(&answer, question_end),
            vec![std::net::Ipv4Addr::new(10, 96, 0, 10)]
        );
        assert!(parse_a_records(&answer[..20], question_end).is_empty());
        assert!(parse_a_records(&[], 0).is_empty());
    }
}

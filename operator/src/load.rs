//! Node load → node pod annotations. Nodes may not write pods (RBAC cannot narrow `patch` to a pod's own, so
//! that right would let one compromised node rewrite every pod of its namespace, image included). Each node
//! instead tells its load on its admin server ([`switchyard_cluster::load`], `GET /load` on the container
//! port named `admin`), and the leading operator reads every node pod's report over the pod IP at an
//! interval and writes `switchyard.dev/bound-players`, `controller.kubernetes.io/pod-deletion-cost` (so a
//! scale-down removes the emptiest node) and `switchyard.dev/routes` on that pod. A node can only speak for
//! itself: the operator asks each pod at its own address.
//!
//! The decisions are pure ([`admin_address`], [`annotations_patch`], [`parse_response`]); [`fetch_load`] is a
//! bounded HTTP/1.1 GET (connect, request and response within one timeout, at most [`MAX_RESPONSE_BYTES`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use switchyard_cluster::kubernetes::{
    BOUND_PLAYERS_ANNOTATION, POD_DELETION_COST_ANNOTATION, ROUTES_ANNOTATION,
};
use switchyard_cluster::load::{LOAD_PATH, LoadError, MAX_LOAD_BYTES, NodeLoad, format_routes, parse_load};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::children::{APP_NAME, Component, LABEL_COMPONENT, LABEL_NAME};
use crate::metrics::Metrics;

/// The container port of a node pod that serves `/load`.
pub const ADMIN_PORT_NAME: &str = "admin";
/// The largest response read: the largest body plus room for the status line and headers.
pub const MAX_RESPONSE_BYTES: usize = MAX_LOAD_BYTES + 4096;
/// Node pods asked at once.
const CONCURRENT_READS: usize = 16;

/// How the operator reads node loads.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Time between two rounds over every node pod.
    pub interval: Duration,
    /// Connect, request and response of one pod, at most.
    pub timeout: Duration,
}

impl Default for LoadSettings {
    fn default() -> Self {
        LoadSettings {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Why a node's load could not be read (counted by `reason`, logged once per pod until it works again).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot reach {address}: {source}")]
    Io {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{address} did not answer within {timeout:?}")]
    Timeout { address: SocketAddr, timeout: Duration },
    #[error("{address} answered more than {MAX_RESPONSE_BYTES} bytes")]
    TooLong { address: SocketAddr },
    #[error("{address} answered something that is not an HTTP 200 load report: {detail}")]
    Response { address: SocketAddr, detail: String },
    #[error("{address} sent a load report the operator cannot read: {source}")]
    Report {
        address: SocketAddr,
        #[source]
        source: LoadError,
    },
}

impl FetchError {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::Io { .. } => "unreachable",
            FetchError::Timeout { .. } => "timeout",
            FetchError::TooLong { .. } | FetchError::Response { .. } | FetchError::Report { .. } => {
                "bad_report"
            }
        }
    }
}

/// Where a node pod's load is read: its pod IP and the container port named [`ADMIN_PORT_NAME`]; `None`
/// while the pod has no IP or is not running.
pub fn admin_address(pod: &Pod) -> Option<SocketAddr> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    let port = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|container| container.ports.iter().flatten())
        .find(|port| port.name.as_deref() == Some(ADMIN_PORT_NAME))?
        .container_port;
    Some(SocketAddr::new(ip, u16::try_from(port).ok()?))
}

/// The merge patch that makes the pod's annotations tell `load`; `None` when they already do.
pub fn annotations_patch(current: &BTreeMap<String, String>, load: &NodeLoad) -> Option<serde_json::Value> {
    // pod-deletion-cost is an int32; a count beyond it (never in practice) saturates.
    let cost = i32::try_from(load.bound_players).unwrap_or(i32::MAX);
    let wanted = [
        (BOUND_PLAYERS_ANNOTATION, load.bound_players.to_string()),
        (POD_DELETION_COST_ANNOTATION, cost.to_string()),
        (ROUTES_ANNOTATION, format_routes(&load.routes)),
    ];
    if wanted.iter().all(|(key, value)| current.get(*key) == Some(value)) {
        return None;
    }
    let annotations: serde_json::Map<String, serde_json::Value> = wanted
        .into_iter()
        .map(|(key, value)| (key.to_owned(), serde_json::Value::String(value)))
        .collect();
    Some(serde_json::json!({ "metadata": { "annotations": annotations } }))
}

/// Reads a whole HTTP/1.1 response (the server closed the connection): status 200 and a load report body.
///
/// # Errors
/// [`FetchError::Response`] for another status, a body that is not framed by `Content-Length` (chunked is
/// not expected from the node) or not UTF-8; [`FetchError::Report`] for a body [`parse_load`] refuses.
pub fn parse_response(address: SocketAddr, response: &[u8]) -> Result<NodeLoad, FetchError> {
    let bad = |detail: &str| FetchError::Response {
        address,
        detail: detail.to_owned(),
    };
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&response[..split]).map_err(|_| bad("headers are not UTF-8"))?;
    let body = &response[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut words = status.split(' ');
    if !matches!(words.next(), Some("HTTP/1.1" | "HTTP/1.0")) || words.next() != Some("200") {
        return Err(bad(&format!(
            "status line {:?}",
            status.chars().take(64).collect::<String>()
        )));
    }
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad("a header line without a colon"));
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse::<usize>().map_err(|_| bad("Content-Length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad("a Transfer-Encoding body"));
        }
    }
    if length.is_some_and(|length| length != body.len()) {
        return Err(bad("a body shorter or longer than its Content-Length"));
    }
    let text = std::str::from_utf8(body).map_err(|_| bad("a body that is not UTF-8"))?;
    parse_load(text).map_err(|source| FetchError::Report { address, source })
}

/// `GET /load` from `address`, all of it within `timeout`, reading at most [`MAX_RESPONSE_BYTES`].
///
/// # Errors
/// [`FetchError`].
pub async fn fetch_load(address: SocketAddr, timeout: Duration) -> Result<NodeLoad, FetchError> {
    let exchange = async {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|source| FetchError::Io { address, source })?;
        let request = format!(
            "GET {LOAD_PATH} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAccept: text/plain\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|source| FetchError::Io { address, source })?;
        let mut response = Vec::with_capacity(1024);
        // One byte more than allowed tells "too long" from "exactly the limit".
        let mut limited = (&mut stream).take(MAX_RESPONSE_BYTES as u64 + 1);
        limited
            .read_to_end(&mut response)
            .await
            .map_err(|source| FetchError::Io { address, source })?;
        if response.len() > MAX_RESPONSE_BYTES {
            return Err(FetchError::TooLong { address });
        }
        parse_response(address, &response)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| FetchError::Timeout { address, timeout })?
}

/// The node pods of every GameCluster (of `namespace`, or of all namespaces).
fn node_pods(client: &Client, namespace: Option<&str>) -> Api<Pod> {
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Reads every node pod's load each `settings.interval` and writes its annotations, until `stop`. Failures
/// are counted, logged once per pod until it answers again, and never stop the loop.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    settings: LoadSettings,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let selector = format!(
        "{LABEL_NAME}={APP_NAME},{LABEL_COMPONENT}={}",
        Component::Node.as_str()
    );
    let list = ListParams::default().labels(&selector);
    let pods_api = node_pods(&client, namespace.as_deref());
    let params = PatchParams {
        field_manager: Some(crate::FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    // Pods whose last read failed: logged once, then quiet until they answer again.
    let mut failing: BTreeSet<(String, String)> = BTreeSet::new();
    let mut list_failed = false;
    loop {
        match pods_api.list(&list).await {
            Ok(pods) => {
                if list_failed {
                    tracing::info!("listing node pods for their load works again");
                    list_failed = false;
                }
                let seen = round(&client, pods.items, &settings, &metrics, &params, &mut failing).await;
                failing.retain(|key| seen.contains(key));
            }
            Err(error) => {
                if !list_failed {
                    tracing::warn!(%error, "cannot list node pods to read their load; retrying");
                    list_failed = true;
                }
                metrics
                    .node_load_reads
                    .get_or_create(&crate::metrics::ReasonLabels {
                        reason: "list_failed",
                    })
                    .inc();
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(settings.interval) => {}
        }
    }
}

/// One round: reads every addressable pod at once (bounded), patches the ones whose annotations differ.
/// Returns the pods it saw.
async fn round(
    client: &Client,
    pods: Vec<Pod>,
    settings: &LoadSettings,
    metrics: &Metrics,
    params: &PatchParams,
    failing: &mut BTreeSet<(String, String)>,
) -> BTreeSet<(String, String)> {
    let seen = pods
        .iter()
        .map(|pod| (pod.namespace().unwrap_or_default(), pod.name_any()))
        .collect();
    let timeout = settings.timeout;
    let mut reads = futures_util::stream::iter(pods.into_iter().filter_map(|pod| {
        let address = admin_address(&pod)?;
        Some(async move { (pod, fetch_load(address, timeout).await) })
    }))
    .buffer_unordered(CONCURRENT_READS);
    while let Some((pod, result)) = reads.next().await {
        let key = (pod.namespace().unwrap_or_default(), pod.name_any());
        let load = match result {
            Ok(load) => load,
            Err(error) => {
                metrics
                    .node_load_reads
                    .get_or_create(&crate::metrics::ReasonLabels {
                        reason: error.reason(),
                    })
                    .inc();
                if failing.insert(key.clone()) {
                    tracing::warn!(
                        pod = %format!("{}/{}", key.0, key.1),
                        "cannot read the node's load (its annotations keep their last values; logged once until it works): {error}"
                    );
                }
                continue;
            }
        };
        metrics
            .node_load_reads
            .get_or_create(&crate::metrics::ReasonLabels { reason: "ok" })
            .inc();
        if failing.remove(&key) {
            tracing::info!(pod = %format!("{}/{}", key.0, key.1), "the node's load is readable again");
        }
        let Some(patch) = annotations_patch(pod.annotations(), &load) else {
            continue;
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), &key.0);
        match api.patch_metadata(&key.1, params, &Patch::Merge(&patch)).await {
            Ok(_) => tracing::trace!(
                pod = %format!("{}/{}", key.0, key.1),
                bound = load.bound_players,
                "node load written to the pod"
            ),
            // The pod may be gone since the list; the next round tries again.
            Err(error) => {
                metrics
                    .node_load_reads
                    .get_or_create(&crate::metrics::ReasonLabels {
                        reason: "patch_failed",
                    })
                    .inc();
                tracing::debug!(%error, pod = %format!("{}/{}", key.0, key.1), "writing the node's load failed");
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, PodStatus};

    fn pod(phase: &str, ip: Option<&str>, port: Option<(&str, i32)>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "node".into(),
                    ports: port.map(|(name, number)| {
                        vec![ContainerPort {
                            name: Some(name.into()),
                            container_port: number,
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                pod_ip: ip.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_address_is_the_pod_ip_and_the_admin_port_of_a_running_pod() {
        let address = admin_address(&pod("Running", Some("10.1.2.3"), Some(("admin", 9090))));
        assert_eq!(address, Some("10.1.2.3:9090".parse().unwrap()));
        let v6 = admin_address(&pod("Running", Some("fd00::7"), Some(("admin", 9090))));
        assert_eq!(v6, Some("[fd00::7]:9090".parse().unwrap()));
        assert_eq!(
            admin_address(&pod("Pending", Some("10.1.2.3"), Some(("admin", 9090)))),
            None
        );
        assert_eq!(admin_address(&pod("Running", None, Some(("admin", 9090)))), None);
        assert_eq!(
            admin_address(&pod("Running", Some("nope"), Some(("admin", 9090)))),
            None
        );
        assert_eq!(
            admin_address(&pod("Running", Some("10.1.2.3"), Some(("link", 7400)))),
            None
        );
        assert_eq!(
            admin_address(&pod("Running", Some("10.1.2.3"), Some(("admin", 70000)))),
            None
        );
    }

    #[test]
    fn the_patch_sets_all_three_annotations_and_only_when_one_differs() {
        let load = NodeLoad {
            bound_players: 42,
            routes: vec![11, 1, 2],
        };
        let patch = annotations_patch(&BTreeMap::new(), &load).expect("a patch");
        assert_eq!(
            patch,
            serde_json::json!({"metadata": {"annotations": {
                "switchyard.dev/bound-players": "42",
                "controller.kubernetes.io/pod-deletion-cost": "42",
                "switchyard.dev/routes": "1,2,11",
            }}})
        );
        let mut current = BTreeMap::from([
            (BOUND_PLAYERS_ANNOTATION.to_owned(), "42".to_owned()),
            (POD_DELETION_COST_ANNOTATION.to_owned(), "42".to_owned()),
            (ROUTES_ANNOTATION.to_owned(), "1,2,11".to_owned()),
            ("other".to_owned(), "x".to_owned()),
        ]);
        assert_eq!(annotations_patch(&current, &load), None);
        // someone (or an old node) changed the cost: it is put back
        current.insert(POD_DELETION_COST_ANNOTATION.to_owned(), "1000".to_owned());
        assert!(annotations_patch(&current, &load).is_some());
        let huge = NodeLoad {
            bound_players: u64::MAX,
            routes: vec![],
        };
        let patch = annotations_patch(&BTreeMap::new(), &huge).expect("a patch");
        assert_eq!(
            patch["metadata"]["annotations"][POD_DELETION_COST_ANNOTATION],
            i32::MAX.to_string()
        );
    }

    #[test]
    fn responses_must_be_a_framed_200_with_a_report() {
        let address: SocketAddr = "10.0.0.1:9090".parse().unwrap();
        let body = "bound_players 3\nroutes 1,2\n";
        let ok = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(
            parse_response(address, ok.as_bytes()).unwrap(),
            NodeLoad {
                bound_players: 3,
                routes: vec![1, 2]
            }
        );
        let unframed = format!("HTTP/1.1 200 OK\r\n\r\n{body}");
        assert!(parse_response(address, unframed.as_bytes()).is_ok());
        for bad in [
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_owned(),
            format!("HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n{body}"),
            format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{body}"),
            format!("HTTP/1.1 200 OK\r\nno colon\r\n\r\n{body}"),
            format!("HTTP/1.1 200 OK\r\n{body}"),
            "SSH-2.0-OpenSSH\r\n\r\n".to_owned(),
        ] {
            assert!(
                matches!(
                    parse_response(address, bad.as_bytes()),
                    Err(FetchError::Response { .. })
                ),
                "{bad:?}"
            );
        }
        let wrong = "HTTP/1.1 200 OK\r\n\r\nbound_players many\nroutes\n";
        let error = parse_response(address, wrong.as_bytes()).unwrap_err();
        assert_eq!(error.reason(), "bad_report");
        assert!(error.to_string().contains("10.0.0.1:9090"), "{error}");
    }

    #[tokio::test]
    async fn a_node_admin_server_is_read_over_a_real_socket() {
        let (bound_tx, bound) = tokio::sync::watch::channel(5usize);
        let router = switchyard_cluster::load::router(bound, &[3, 1]);
        let server = switchyard_cluster::admin::AdminServer::start_with(
            "127.0.0.1:0".parse().unwrap(),
            prometheus_client::registry::Registry::default(),
            vec![],
            router,
        )
        .await
        .unwrap();
        let timeout = Duration::from_secs(5);
        let load = fetch_load(server.address(), timeout).await.unwrap();
        assert_eq!(
            load,
            NodeLoad {
                bound_players: 5,
                routes: vec![1, 3]
            }
        );
        bound_tx.send_replace(0);
        assert_eq!(
            fetch_load(server.address(), timeout).await.unwrap().bound_players,
            0
        );
        let address = server.address();
        server.stop().await;
        let error = fetch_load(address, timeout).await.unwrap_err();
        assert_eq!(error.reason(), "unreachable", "{error}");
    }

    #[tokio::test]
    async fn a_silent_or_endless_peer_is_given_up() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            // first: accept and never answer; second: answer without end
            let (_silent, _) = listener.accept().await.unwrap();
            let (mut endless, _) = listener.accept().await.unwrap();
            let chunk = vec![b'x'; 8192];
            while endless.write_all(&chunk).await.is_ok() {}
            drop(_silent);
        });
        let timeout = Duration::from_millis(300);
        let error = fetch_load(address, timeout).await.unwrap_err();
        assert_eq!(error.reason(), "timeout", "{error}");
        let error = fetch_load(address, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(error, FetchError::TooLong { .. }), "{error}");
        server.abort();
    }
}

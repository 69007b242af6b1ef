//! Container probes (startup, readiness, liveness) with the kubelet's semantics: the first check after
//! `initialDelaySeconds`, then one every `periodSeconds`, each bounded by `timeoutSeconds`; a result
//! changes after `successThreshold` consecutive successes or `failureThreshold` consecutive failures
//! (defaults 10 s, 1 s, 1, 3).
//!
//! Handlers: `httpGet` (HTTP only, on the pod IP unless `host` is set; 200–399 is success; at most 4 KiB of
//! the answer are read), `tcpSocket` (the connection opens), and `exec` (the command runs as a local process
//! with the container's environment; exit 0 is success). `grpc` and HTTPS are not supported and always fail
//! (with a warning), so a pod relying on them never becomes ready instead of looking healthy.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

/// A probe's result changed (or, for liveness and startup, a failure that must act).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProbeResult {
    pub(crate) kind: ProbeKind,
    pub(crate) success: bool,
}

/// Everything a probe needs besides its spec.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) pod_ip: String,
    pub(crate) ports: Vec<ContainerPort>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: std::path::PathBuf,
}

fn secs(value: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(value.unwrap_or(default).max(0)).unwrap_or(0))
}

/// Runs `probe` until the receiver is gone (or, for a startup probe, until it succeeds), sending each change
/// of result to `results`.
pub(crate) async fn run(kind: ProbeKind, probe: Probe, target: Target, results: mpsc::Sender<ProbeResult>) {
    let period = secs(probe.period_seconds, 10).max(Duration::from_secs(1));
    let timeout = secs(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    let success_threshold = u32::try_from(probe.success_threshold.unwrap_or(1).max(1)).unwrap_or(1);
    let failure_threshold = u32::try_from(probe.failure_threshold.unwrap_or(3).max(1)).unwrap_or(3);
    tokio::time::sleep(secs(probe.initial_delay_seconds, 0)).await;
    let (mut successes, mut failures) = (0u32, 0u32);
    let mut reported: Option<bool> = None;
    loop {
        let success = check(&probe, &target, timeout).await;
        if success {
            successes = successes.saturating_add(1);
            failures = 0;
        } else {
            failures = failures.saturating_add(1);
            successes = 0;
        }
        let result = if successes >= success_threshold {
            Some(true)
        } else if failures >= failure_threshold {
            Some(false)
        } else {
            None
        };
        if let Some(result) = result
            && reported != Some(result)
        {
            reported = Some(result);
            if results
                .send(ProbeResult {
                    kind,
                    success: result,
                })
                .await
                .is_err()
            {
                return;
            }
            if kind == ProbeKind::Startup && result {
                return;
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// One check, bounded by `timeout`.
pub(crate) async fn check(probe: &Probe, target: &Target, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, check_unbounded(probe, target))
        .await
        .unwrap_or(false)
}

async fn check_unbounded(probe: &Probe, target: &Target) -> bool {
    if let Some(get) = &probe.http_get {
        if get
            .scheme
            .as_deref()
            .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
        {
            tracing::warn!(
                "httpGet probe with scheme {:?} is not supported: failing",
                get.scheme
            );
            return false;
        }
        let Some(port) = resolve_port(&get.port, &target.ports) else {
            tracing::warn!(port = ?get.port, "probe port not found among the container ports: failing");
            return false;
        };
        let host = get.host.clone().unwrap_or_else(|| target.pod_ip.clone());
        let path = get.path.clone().unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> = get
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        return http_status(&host, port, &path, &headers)
            .await
            .is_some_and(|status| (200..400).contains(&status));
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = resolve_port(&tcp.port, &target.ports) else {
            return false;
        };
        let host = tcp.host.clone().unwrap_or_else(|| target.pod_ip.clone());
        return TcpStream::connect((host.as_str(), port)).await.is_ok();
    }
    if let Some(exec) = &probe.exec {
        let Some((program, args)) = exec.command.as_deref().and_then(<[String]>::split_first) else {
            return false;
        };
        let status = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .envs(&target.env)
            .current_dir(&target.cwd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status()
            .await;
        return status.is_ok_and(|s| s.success());
    }
    tracing::warn!("probe handler (grpc?) is not supported by the e2e pod runner: failing");
    false
}

/// A numeric port, or a named one looked up among the container's ports.
pub(crate) fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`; the status code of the answer. Reads at most 4 KiB.
pub async fn http_status(host: &str, port: u16, path: &str, headers: &[(String, String)]) -> Option<u16> {
    let (status, _) = http_get(host, port, path, headers).await?;
    Some(status)
}

/// `GET path` over HTTP/1.1 with `Connection: close`: the status code and up to 4 KiB of the answer
/// (headers included). No timeout of its own: callers bound it.
pub async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Option<(u16, String)> {
    const MAX: usize = 4096;
    let mut stream = TcpStream::connect((host, port)).await.ok()?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.37\r\nAccept: */*\r\n\
         Connection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while buf.len() < MAX {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n.min(MAX - buf.len())]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn server(answer: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        port
    }

    fn target(ports: serde_json::Value) -> Target {
        Target {
            pod_ip: "127.0.0.1".into(),
            ports: serde_json::from_value(ports).unwrap(),
            env: BTreeMap::new(),
            cwd: std::env::temp_dir(),
        }
    }

    #[tokio::test]
    async fn http_probe_by_named_port() {
        let ok = server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        let unready = server("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let probe = |port: &str| -> Probe {
            serde_json::from_value(serde_json::json!({"httpGet": {"path": "/readyz", "port": port}})).unwrap()
        };
        let t = target(
            serde_json::json!([{"name": "admin", "containerPort": ok}, {"name": "bad", "containerPort": unready}]),
        );
        assert!(check(&probe("admin"), &t, Duration::from_secs(1)).await);
        assert!(!check(&probe("bad"), &t, Duration::from_secs(1)).await);
        assert!(!check(&probe("nope"), &t, Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn tcp_and_exec_probes() {
        let port = server("").await;
        let t = target(serde_json::json!([]));
        let tcp: Probe = serde_json::from_value(serde_json::json!({"tcpSocket": {"port": port}})).unwrap();
        assert!(check(&tcp, &t, Duration::from_secs(1)).await);
        let exec = |cmd: &str| -> Probe {
            serde_json::from_value(serde_json::json!({"exec": {"command": ["/bin/sh", "-c", cmd]}})).unwrap()
        };
        assert!(check(&exec("exit 0"), &t, Duration::from_secs(1)).await);
        assert!(!check(&exec("exit 1"), &t, Duration::from_secs(1)).await);
        assert!(
            !check(&exec("sleep 5"), &t, Duration::from_millis(1100)).await,
            "timeout fails"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn thresholds_gate_result_changes() {
        // A readiness probe against nothing: 3 failures (the default) before the first report.
        let t = target(serde_json::json!([]));
        let probe: Probe = serde_json::from_value(
            serde_json::json!({"tcpSocket": {"port": 1}, "periodSeconds": 1, "failureThreshold": 2}),
        )
        .unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(run(ProbeKind::Readiness, probe, t, tx));
        let result = rx.recv().await.unwrap();
        assert_eq!(result.kind, ProbeKind::Readiness);
        assert!(!result.success);
        task.abort();
    }
}

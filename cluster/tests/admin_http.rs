//! The admin HTTP server's bounds over real sockets: a client that opens connections and never sends its
//! request headers is closed after the header-read timeout without keeping `/healthz` from answering, and
//! connections over the cap are closed at accept; both are counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use prometheus_client::registry::Registry;
use switchyard_cluster::admin::{AdminLimits, Readiness, serve_limited};
use switchyard_testkit::http_get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

async fn start(limits: AdminLimits) -> (std::net::SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let stop = CancellationToken::new();
    let ready = Readiness::default();
    ready.set(true);
    tokio::spawn(serve_limited(
        listener,
        Arc::new(Registry::default()),
        vec![ready],
        Router::new(),
        limits,
        stop.clone(),
    ));
    (address, stop)
}

/// Reads until the server closes the connection; how long that took.
async fn closed_after(mut stream: TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut sink))
        .await
        .unwrap_or_else(|_| panic!("the server kept a silent connection open for {within:?}"))
        .ok();
    started.elapsed()
}

fn sample(metrics: &str, reason: &str) -> Option<f64> {
    let prefix = format!("switchyard_admin_connections_closed_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
}

#[tokio::test]
async fn silent_clients_are_closed_after_the_header_timeout_and_probes_still_answer() {
    let timeout = Duration::from_millis(400);
    let (address, stop) = start(AdminLimits {
        header_read_timeout: timeout,
        max_connections: 16,
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(address).await.expect("connect"));
    }
    // One half-sent request too: headers started, never finished.
    let mut partial = TcpStream::connect(address).await.expect("connect");
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: ad")
        .await
        .expect("write");
    silent.push(partial);

    // Meanwhile probes are answered at once.
    let started = Instant::now();
    assert_eq!(http_get(address, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(http_get(address, "/readyz").await.0, 200);
    assert!(
        started.elapsed() < timeout,
        "probes waited {:?}",
        started.elapsed()
    );

    let opened = Instant::now();
    for stream in silent {
        let waited = closed_after(stream, Duration::from_secs(5)).await;
        assert!(waited < Duration::from_secs(3), "closed only after {waited:?}");
    }
    assert!(
        opened.elapsed() + Duration::from_millis(50) >= timeout,
        "closed before the timeout: {:?}",
        opened.elapsed()
    );
    let (status, metrics) = http_get(address, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(sample(&metrics, "header_timeout"), Some(6.0), "{metrics}");
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    assert_eq!(metrics.matches("# EOF").count(), 1, "{metrics}");
    stop.cancel();
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_accept_until_one_ends() {
    let (address, stop) = start(AdminLimits {
        header_read_timeout: Duration::from_secs(30),
        max_connections: 3,
    })
    .await;
    let mut holders = Vec::new();
    for _ in 0..3 {
        holders.push(TcpStream::connect(address).await.expect("connect"));
    }
    // Let the server accept the three before the fourth arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let over = TcpStream::connect(address).await.expect("connect");
    let waited = closed_after(over, Duration::from_secs(2)).await;
    assert!(waited < Duration::from_secs(1), "{waited:?}");

    // One holder leaves: a probe gets its slot.
    drop(holders.pop());
    let mut answered = None;
    for _ in 0..50 {
        let (status, _) = http_get(address, "/healthz").await;
        if status == 200 {
            answered = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answered, Some(200), "no slot came free");
    drop(holders);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, metrics) = http_get(address, "/metrics").await;
    assert!(sample(&metrics, "over_cap").unwrap_or(0.0) >= 1.0, "{metrics}");
    stop.cancel();
}

//! A gate is not ready before it has seen its first node list and tried each node once: a client never
//! lands on a gate that has not linked the nodes yet, where a logged-in player would look node-less and be
//! re-homed with empty state.

mod support;

use std::time::{Duration, Instant};

use support::procs::{Proc, TempDir, free_port};
use support::{http_get, switchyard_binary};

#[tokio::test]
async fn a_gate_becomes_ready_only_after_its_first_link_attempts() {
    let dir = TempDir::new("gate-readiness");
    // A node that takes the link but never says hello: the gate's first attempt ends at its handshake
    // timeout (5 s).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let link = silent.local_addr().expect("address").to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let admin = format!("127.0.0.1:{}", free_port());
    let tcp = format!("127.0.0.1:{}", free_port());
    let args: Vec<String> = [
        "gate", "--id", "gate-r", "--tcp", &tcp, "--ws", "", "--http", &admin, "--nodes", &link,
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let _gate = Proc::spawn("gate-r", switchyard_binary(), &args, dir.path());
    let base = format!("http://{admin}");
    let started = Instant::now();
    while tokio::net::TcpStream::connect(&admin).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the gate's admin endpoint came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut first_ready = None;
    let mut seen_unready = false;
    while started.elapsed() < Duration::from_secs(15) {
        match http_get(&base, "/readyz").await {
            (503, _) => seen_unready = true,
            (200, _) => {
                first_ready = Some(started.elapsed());
                break;
            }
            (status, body) => panic!("/readyz answered {status}: {body}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hold.abort();
    assert!(
        seen_unready,
        "the gate said it was unready while its first link attempt ran"
    );
    let ready_after = first_ready.expect("the gate became ready after the attempt ended");
    assert!(
        ready_after >= Duration::from_secs(4),
        "ready after {ready_after:?}, before the node's handshake could have ended"
    );
}

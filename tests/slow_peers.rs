//! One slow or hostile client never costs the others: against a real `switchyard dev`, a client that never
//! reads is closed as a slow reader before it pins more than a few MiB of the gate, and one player flooding
//! a slow route (demo route 10) leaves another player's echo answered at once.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::procs::rss_kib;
use support::{Conn, Dev, Wire, metric_sum};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn a_client_that_never_reads_costs_the_gate_at_most_a_few_mib() {
    let dev = Dev::start(&["--max-packet-bytes", "65536"]);
    // Warm up the allocator and the runtime's threads with a little ordinary traffic first.
    let mut warm = Conn::tcp(&dev.tcp, Wire::DEFAULT).await;
    for seq in 1..=20 {
        warm.request(1, seq, json!({"message": "x".repeat(60_000)})).await;
    }
    let (before, _) = rss_kib(dev.pid());

    let mut stream = tokio::net::TcpStream::connect(&dev.tcp).await.expect("connect");
    let payload = serde_json::to_vec(&json!({"message": "y".repeat(60_000)})).expect("json");
    let packet = Wire::DEFAULT.data(1, 1, &payload);
    let started = Instant::now();
    // 60 MB of echo requests, never reading an answer, paced so that the node answers them all (a faster
    // flood is refused at the node's lane instead): the gate must close this client long before the end.
    let mut sent = 0usize;
    while sent < 1000 && started.elapsed() < Duration::from_secs(30) {
        match tokio::time::timeout(Duration::from_secs(5), stream.write_all(&packet)).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => break, // closed by the gate
            Err(_) => break,     // the gate stopped reading: it has closed or is closing us
        }
        if sent.is_multiple_of(4) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let closed = metric_sum(
            &dev.metrics().await,
            "switchyard_gate_connections_closed_total",
            &["reason=\"slow_reader\""],
        );
        if closed >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the never-reading client was not closed as a slow reader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, peak) = rss_kib(dev.pid());
    let grown_mib = peak.saturating_sub(before) as f64 / 1024.0;
    println!("never-reading client: {sent} requests of 60 KB sent; gate peak RSS grew {grown_mib:.1} MiB");
    assert!(
        grown_mib < 8.0,
        "gate peak RSS grew {grown_mib:.1} MiB for one never-reading client"
    );
    // Everyone else is still served.
    assert_eq!(
        warm.request(1, 99, json!({"message": "still here"})).await["message"],
        "still here"
    );
}

#[tokio::test]
async fn one_players_slow_requests_leave_another_players_echo_fast() {
    let dev = Dev::start(&[]);
    let mut slow = Conn::tcp(&dev.tcp, Wire::DEFAULT).await;
    // Route 10 waits the asked time, then answers code 0; more than 5000 ms is refused as a bad request.
    let started = Instant::now();
    assert_eq!(slow.request(10, 1, json!({"ms": 300})).await, json!({"code": 0}));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let refused = slow.request(10, 2, json!({"ms": 5001})).await;
    assert_eq!(refused["code"], 1, "{refused}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused without waiting"
    );
    // Far more slow requests than one connection's lane holds (256): the overflow is refused, not queued
    // in front of other players.
    for seq in 1..=400 {
        slow.send(10, seq, json!({"ms": 3000})).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut other = Conn::tcp(&dev.tcp, Wire::DEFAULT).await;
    for seq in 1..=5 {
        let started = Instant::now();
        let reply = other.request(1, seq, json!({"message": "hi"})).await;
        let took = started.elapsed();
        assert_eq!(reply, json!({"code": 0, "message": "hi"}));
        assert!(
            took < Duration::from_millis(250),
            "echo took {took:?} behind a flood of slow requests"
        );
    }
    let refused = metric_sum(
        &dev.metrics().await,
        "switchyard_node_packets_dropped_total",
        &["reason=\"lane_full\""],
    );
    assert!(
        refused >= 100.0,
        "the flood's overflow was refused and counted: {refused}"
    );
}

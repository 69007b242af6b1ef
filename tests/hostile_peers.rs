//! Hostile or broken peers on the gate ↔ node links, against real `switchyard gate` and `switchyard node`
//! processes over real sockets (plaintext links; mutual TLS peers are covered by tests/link_tls.rs):
//!
//! - a fake node registered with a gate sends garbage, an oversized frame length, a forged `Deliver` before
//!   its hello, and at last says hello and keeps heartbeating while it never reads: the gate stays up, closes
//!   each of those links (counted by reason, the last one as `write_timeout` within the write deadline), and
//!   a player served by a healthy node keeps being answered throughout;
//! - a fake gate opens traffic for thousands of distinct connections on one node: the node keeps at most
//!   `--max-lanes-per-link` lanes for that link and `--link-lane-bytes` queued over them, refuses and counts
//!   the rest, and a real gate's player keeps flowing;
//! - a fake gate that stops reading (still heartbeating) is closed by the node within its write deadline.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::{admin_metrics, strings};
use support::link::{
    client_packet, gate_frames, gate_hello, node_frames, start_gate, start_node, wait_listening,
};
use support::procs::{TempDir, rss_kib};
use support::{Conn, Wire, metric_sum};
use switchyard_protocol::link::{GateToNode, NodeState, NodeToGate, RouteSpec, Target};
use switchyard_testkit::eventually_true;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A route only the fake node serves.
const FAKE_ROUTE: i64 = 4242;

async fn metric(admin: &str, name: &str, filters: &[&str]) -> f64 {
    metric_sum(&admin_metrics(admin).await, name, filters)
}

async fn link_closed(admin: &str, prefix: &str, reason: &str) -> f64 {
    metric(
        admin,
        &format!("{prefix}_link_closed_total"),
        &[&format!("reason=\"{reason}\"")],
    )
    .await
}

/// A listener whose accepted sockets have a small receive buffer, so a peer that stops reading backs its
/// sender up after little data.
fn small_buffer_listener() -> TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("receive buffer");
    socket
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("bind");
    socket.listen(64).expect("listen")
}

/// The next link connection the gate opens to the fake node.
async fn next_link(listener: &TcpListener) -> TcpStream {
    tokio::time::timeout(Duration::from_secs(15), listener.accept())
        .await
        .expect("the gate reconnects to the fake node")
        .expect("accept")
        .0
}

/// Reads until the peer closes the connection (at most `within`); whether it did.
async fn closed_by_peer(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// Echoes on demo route 1 every 50 ms until `stop`, returning the slowest answer.
async fn keep_echoing(mut conn: Conn, stop: tokio_util::sync::CancellationToken) -> Duration {
    let mut slowest = Duration::ZERO;
    let mut seq = 1;
    while !stop.is_cancelled() {
        let started = Instant::now();
        let answer = conn
            .request(1, seq, json!({"message": format!("ping {seq}")}))
            .await;
        assert_eq!(answer["message"], format!("ping {seq}"));
        slowest = slowest.max(started.elapsed());
        seq += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    slowest
}

#[tokio::test]
async fn a_hostile_node_is_cut_off_and_the_other_players_keep_being_served() {
    let dir = TempDir::new("hostile-node");
    let node = start_node(&dir, "node-a", &[]);
    wait_listening(&node.link).await;
    let fake = small_buffer_listener();
    let fake_address = fake.local_addr().unwrap().to_string();
    let (mut gate, tcp, admin) = start_gate(
        &dir,
        "gate-a",
        &[&node.link, &fake_address],
        // A write deadline past the gate's 2 s forward deadline, so that both act on the stuck node (step 4).
        &strings(&["--link-write-timeout", "4s", "--node-link-grace", "60s"]),
    );

    // 1. Garbage: a frame type no node sends.
    let mut link = next_link(&fake).await;
    link.write_all(&[0, 0, 0, 1, 0x7e]).await.unwrap();
    assert!(
        closed_by_peer(&mut link, Duration::from_secs(5)).await,
        "garbage left the link open"
    );

    // The healthy node is linked meanwhile; a player on it starts echoing and must never notice the rest.
    eventually_true("gate linked to node-a", Duration::from_secs(15), || async {
        metric(&admin, "switchyard_gate_node_links", &[]).await >= 1.0
    })
    .await;
    let mut player = Conn::tcp(&tcp, Wire::DEFAULT).await;
    assert_eq!(
        player.request(1, 1, json!({"message": "hi"})).await["message"],
        "hi"
    );
    let mut witness = Conn::tcp(&tcp, Wire::DEFAULT).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let echoing = tokio::spawn(keep_echoing(player, stop.clone()));

    // 2. An oversized frame length: closed before a byte of it is buffered.
    let mut link = next_link(&fake).await;
    link.write_all(&[0xff, 0xff, 0xff, 0xff, 0x83]).await.unwrap();
    assert!(
        closed_by_peer(&mut link, Duration::from_secs(5)).await,
        "an oversized frame left the link open"
    );
    assert!(link_closed(&admin, "switchyard_gate", "invalid_frame").await >= 2.0);

    // 3. A forged delivery to every session, and one to a uid, before any hello: the link is dropped and no
    //    client receives either.
    let mut link = next_link(&fake).await;
    let forged = node_frames([
        NodeToGate::Deliver {
            target: Target::Broadcast,
            packet: Wire::DEFAULT.data(77, 0, b"{\"forged\":true}").into(),
            trace: None,
        },
        NodeToGate::Deliver {
            target: Target::Users(vec![1, 2, 3]),
            packet: Wire::DEFAULT.data(77, 0, b"{\"forged\":true}").into(),
            trace: None,
        },
    ]);
    link.write_all(&forged).await.unwrap();
    assert!(
        closed_by_peer(&mut link, Duration::from_secs(10)).await,
        "a link without a hello stayed open"
    );
    witness.expect_silence(Duration::from_millis(300)).await;

    // 4. A proper hello for a route of its own, heartbeats, and never a byte read.
    let mut link = next_link(&fake).await;
    let hello = node_frames([NodeToGate::Hello {
        node_id: "fake-node".into(),
        state: NodeState::Work,
        routes: vec![RouteSpec {
            route: FAKE_ROUTE as i32,
            stateful: false,
            authorized: false,
            internal: false,
        }],
        pool: Some("game".into()),
    }]);
    link.write_all(&hello).await.unwrap();
    let heartbeats = tokio::spawn(async move {
        let beat = node_frames([NodeToGate::Heartbeat]);
        while link.write_all(&beat).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    eventually_true("the fake node linked", Duration::from_secs(10), || async {
        metric(&admin, "switchyard_gate_node_links", &[]).await == 2.0
    })
    .await;
    let (rss_before, _) = rss_kib(gate.pid());

    // A client floods the fake node's route: the gate's writes to it back up and stall.
    let mut flooder = TcpStream::connect(&tcp).await.unwrap();
    let big = Wire::DEFAULT.data(FAKE_ROUTE, 1, &vec![b'x'; 60_000]);
    let flood_started = Instant::now();
    let flood = tokio::spawn(async move {
        for _ in 0..600 {
            match tokio::time::timeout(Duration::from_secs(5), flooder.write_all(&big)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    });
    eventually_true(
        "the stuck fake node's link closed by the write deadline",
        Duration::from_secs(30),
        || async { link_closed(&admin, "switchyard_gate", "write_timeout").await >= 1.0 },
    )
    .await;
    let closed_after = flood_started.elapsed();
    let (rss_after, peak) = rss_kib(gate.pid());
    // Before the link closed, the flooder's packets waited the forward deadline (2 s) for room on the full
    // link, then were dropped and counted, so its reads went on.
    let busy = metric(
        &admin,
        "switchyard_gate_packets_dropped_total",
        &["reason=\"node_busy\""],
    )
    .await;
    assert!(
        busy >= 1.0,
        "packets to the stuck node were dropped at the forward deadline: {busy}"
    );
    flood.abort();
    heartbeats.abort();
    // The link queue is bounded in bytes (4 MiB by default): the stuck node never pinned much of the gate
    // (with a queue bounded in messages only, this flood grew the gate by about 32 MiB).
    assert!(
        peak.saturating_sub(rss_before) < 16 * 1024,
        "the stuck node grew the gate from {rss_before} KiB to a peak of {peak} KiB"
    );

    // The healthy node's player was answered all along; the gate is up and still linked to node-a.
    stop.cancel();
    let slowest = echoing.await.expect("the player's echoes were all answered");
    assert!(slowest < Duration::from_secs(2), "an echo took {slowest:?}");
    assert!(gate.is_running(), "the gate died");
    let mut late = Conn::tcp(&tcp, Wire::DEFAULT).await;
    assert_eq!(
        late.request(1, 1, json!({"message": "still"})).await["message"],
        "still"
    );
    assert!(metric(&admin, "switchyard_gate_node_link_failures_total", &[]).await >= 3.0);
    println!(
        "stuck fake node: link closed {closed_after:?} after the flood began; gate RSS {rss_before} KiB before, \
         {rss_after} KiB after (peak {peak} KiB); slowest echo {slowest:?}"
    );
}

/// A raw plaintext "gate" linked to the node at `address`: says hello and drains whatever the node sends
/// in the background (so only the lanes are under test), returning the write half.
async fn fake_gate(address: &str, gate_id: &str) -> tokio::net::tcp::OwnedWriteHalf {
    let stream = TcpStream::connect(address).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(&gate_frames([gate_hello(gate_id)]))
        .await
        .expect("the node takes the hello");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    write
}

#[tokio::test]
async fn a_flood_of_lanes_is_capped_per_link_and_other_gates_keep_flowing() {
    let dir = TempDir::new("lane-flood");
    let node = start_node(
        &dir,
        "node-l",
        &strings(&["--max-lanes-per-link", "500", "--link-lane-bytes", "2000000"]),
    );
    wait_listening(&node.link).await;
    let (_gate, tcp, gate_admin) = start_gate(&dir, "gate-a", &[&node.link], &[]);
    eventually_true("gate linked", Duration::from_secs(15), || async {
        metric(&gate_admin, "switchyard_gate_node_links", &[]).await == 1.0
    })
    .await;
    let player = Conn::tcp(&tcp, Wire::DEFAULT).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let echoing = tokio::spawn(keep_echoing(player, stop.clone()));

    // 20,000 connections claimed on one link, one echo each, never disconnected.
    let mut flood = fake_gate(&node.link, "gate-flood").await;
    let claimed = 20_000u64;
    for first in (1..=claimed).step_by(1000) {
        let packets = (first..first + 1000).map(|cid| client_packet(cid, 0, 1, b"{\"message\":\"m\"}"));
        flood.write_all(&gate_frames(packets)).await.unwrap();
    }
    let refused = |reason: &'static str| {
        let admin = node.admin.clone();
        async move {
            metric(
                &admin,
                "switchyard_node_packets_dropped_total",
                &[&format!("reason=\"{reason}\"")],
            )
            .await
        }
    };
    eventually_true(
        "every packet over the lane cap refused",
        Duration::from_secs(30),
        || async { refused("too_many_lanes").await == (claimed - 500) as f64 },
    )
    .await;
    // The flood's link holds 500 lanes; the real gate's player has its own.
    let lanes = metric(&node.admin, "switchyard_node_lanes", &[]).await;
    assert!((500.0..=502.0).contains(&lanes), "{lanes} lanes open");

    // Its connections leaving free their lanes for new ones.
    let gone = (1..=100).map(|cid| GateToNode::Disconnected { cid, uid: 0 });
    flood.write_all(&gate_frames(gone)).await.unwrap();
    let fresh = (claimed + 1..=claimed + 100).map(|cid| client_packet(cid, 0, 1, b"{\"message\":\"m\"}"));
    flood.write_all(&gate_frames(fresh)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(refused("too_many_lanes").await, (claimed - 500) as f64);

    // Slow requests with large payloads on ten of its lanes: within each lane's own bound (1 MiB), but 3 MB
    // in all, over the link's 2 MB: the excess is refused as link_full.
    let work = format!("{{\"ms\":3000,\"pad\":\"{}\"}}", "p".repeat(50_000));
    let slow = (0..60u64).map(|i| client_packet(101 + i % 10, 0, 10, work.as_bytes()));
    flood.write_all(&gate_frames(slow)).await.unwrap();
    eventually_true(
        "the flood link's lane bytes refused",
        Duration::from_secs(10),
        || async { refused("link_full").await >= 10.0 },
    )
    .await;
    assert_eq!(refused("lane_full").await, 0.0);

    stop.cancel();
    let slowest = echoing.await.expect("the player's echoes were all answered");
    assert!(slowest < Duration::from_secs(2), "an echo took {slowest:?}");
    assert_eq!(
        metric(
            &node.admin,
            "switchyard_node_link_closed_total",
            &["reason=\"invalid_frame\""]
        )
        .await,
        0.0
    );
}

#[tokio::test]
async fn a_gate_that_stops_reading_is_closed_within_the_write_deadline() {
    let dir = TempDir::new("stuck-gate");
    let mut node = start_node(&dir, "node-s", &strings(&["--link-write-timeout", "1s"]));
    wait_listening(&node.link).await;
    let (_gate, tcp, gate_admin) = start_gate(&dir, "gate-a", &[&node.link], &[]);
    eventually_true("gate linked", Duration::from_secs(15), || async {
        metric(&gate_admin, "switchyard_gate_node_links", &[]).await == 1.0
    })
    .await;
    let player = Conn::tcp(&tcp, Wire::DEFAULT).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let echoing = tokio::spawn(keep_echoing(player, stop.clone()));
    let (rss_before, _) = rss_kib(node.proc.pid());

    // A "gate" with a small receive buffer that asks for large echoes, heartbeats, and reads nothing.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let stuck = socket.connect(node.link.parse().unwrap()).await.expect("connect");
    let (_read, mut write) = stuck.into_split();
    write
        .write_all(&gate_frames([gate_hello("gate-stuck")]))
        .await
        .unwrap();
    let message = format!("{{\"message\":\"{}\"}}", "y".repeat(50_000));
    let started = Instant::now();
    for cid in 1..=300u64 {
        let asks = gate_frames([
            client_packet(cid, 0, 1, message.as_bytes()),
            GateToNode::Heartbeat,
        ]);
        if write.write_all(&asks).await.is_err() {
            break;
        }
    }
    let heartbeats = tokio::spawn(async move {
        let beat = gate_frames([GateToNode::Heartbeat]);
        while write.write_all(&beat).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    eventually_true(
        "the stuck gate's link closed by the write deadline",
        Duration::from_secs(20),
        || async { link_closed(&node.admin, "switchyard_node", "write_timeout").await == 1.0 },
    )
    .await;
    let closed_after = started.elapsed();
    let (rss_after, peak) = rss_kib(node.proc.pid());
    heartbeats.abort();
    assert!(
        closed_after < Duration::from_secs(10),
        "closed only after {closed_after:?}"
    );

    stop.cancel();
    let slowest = echoing.await.expect("the player's echoes were all answered");
    assert!(slowest < Duration::from_secs(2), "an echo took {slowest:?}");
    assert!(node.proc.is_running(), "the node died");
    println!(
        "stuck gate: link closed {closed_after:?} after its requests; node RSS {rss_before} KiB before, \
         {rss_after} KiB after (peak {peak} KiB); slowest echo {slowest:?}"
    );
}

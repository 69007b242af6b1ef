//! `switchyard dev` spoken to with raw bytes over real TCP and WebSocket sockets, with due's default packet
//! settings and with little-endian route 4 / seq 0: everything a due client relies on, plus the refusals
//! docs/protocol.md promises (oversize closes, malformed and unknown are dropped and counted).

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Conn, Dev, Packet, Transport, Wire, metric_sum};

const TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Ws];
const WIRES: [Wire; 2] = [Wire::DEFAULT, Wire::LE_ROUTE4_SEQ0];

/// Runs `scenario` for every transport and packet setting, each against its own dev process.
async fn for_each_setting<F, Fut>(extra: &[&str], scenario: F)
where
    F: Fn(Dev, Transport, Wire) -> Fut,
    Fut: Future<Output = ()>,
{
    for wire in WIRES {
        for transport in TRANSPORTS {
            let mut flags = wire.flags();
            flags.extend_from_slice(extra);
            eprintln!("-- {transport:?} {wire:?}");
            scenario(Dev::start(&flags), transport, wire).await;
        }
    }
}

#[tokio::test]
async fn echo_login_whoami_and_logout() {
    for_each_setting(&[], |dev, transport, wire| async move {
        let mut conn = Conn::open(&dev, transport, wire).await;
        let echo = conn.request(1, 1, json!({"message": "hi"})).await;
        assert_eq!(echo, json!({"code": 0, "message": "hi"}));

        // Authorized routes before login are dropped without a reply and without a disconnect.
        conn.send(3, 2, json!({})).await;
        conn.expect_silence(Duration::from_millis(300)).await;

        let login = conn.request(2, 3, json!({"uid": 42, "name": "ada"})).await;
        assert_eq!(login["code"], 0);
        assert_eq!(login["uid"], 42);
        assert_eq!(login["node"], "dev-lobby", "login is the lobby pool's");
        let whoami = conn.request(3, 4, json!({})).await;
        assert_eq!(
            whoami,
            json!({"code": 0, "uid": 42, "node": "dev-battle"}),
            "whoami is the battle pool's"
        );

        let unparseable = conn.request(1, 5, json!({"nope": true})).await;
        assert_eq!(unparseable["code"], 1);
        assert!(
            unparseable["error"]
                .as_str()
                .is_some_and(|why| why.contains("message")),
            "{unparseable}"
        );

        assert_eq!(conn.request(7, 6, json!({})).await, json!({"code": 0}));
        conn.send(3, 7, json!({})).await;
        conn.expect_silence(Duration::from_millis(300)).await;

        let metrics = dev.metrics().await;
        assert!(
            metric_sum(
                &metrics,
                "switchyard_gate_packets_dropped_total",
                &["unauthorized"]
            ) >= 2.0,
            "{metrics}"
        );
        // Responses are timed by seq; without a seq field there is nothing to match them by.
        let timed = metric_sum(&metrics, "switchyard_gate_request_duration_seconds_count", &[]);
        if wire.seq_bytes > 0 {
            assert!(timed >= 5.0, "{timed} responses timed");
        } else {
            assert_eq!(timed, 0.0);
        }
    })
    .await;
}

#[tokio::test]
async fn room_messages_reach_every_member() {
    for_each_setting(&[], |dev, transport, wire| async move {
        let mut alice = Conn::open(&dev, transport, wire).await;
        let mut bob = Conn::open(&dev, transport, wire).await;
        alice.request(2, 1, json!({"uid": 1, "name": "alice"})).await;
        bob.request(2, 1, json!({"uid": 2, "name": "bob"})).await;
        assert_eq!(
            alice.request(4, 2, json!({"room": "lobby"})).await,
            json!({"code": 0, "members": 1})
        );
        assert_eq!(
            bob.request(4, 2, json!({"room": "lobby"})).await,
            json!({"code": 0, "members": 2})
        );

        bob.send(5, 3, json!({"room": "lobby", "text": "hello"})).await;
        let push = alice.expect_data(6, 0).await;
        assert_eq!(push, json!({"room": "lobby", "from": 2, "text": "hello"}));
        // The sender is a member too: bob gets the push (sent first), then the response.
        assert_eq!(bob.expect_data(6, 0).await["from"], 2);
        assert_eq!(bob.expect_data(5, 3).await, json!({"code": 0}));
    })
    .await;
}

#[tokio::test]
async fn duplicate_login_kicks_the_older_connection() {
    for_each_setting(&[], |dev, transport, wire| async move {
        let mut first = Conn::open(&dev, transport, wire).await;
        let mut second = Conn::open(&dev, transport, wire).await;
        first.request(2, 1, json!({"uid": 9, "name": "a"})).await;
        second.request(2, 1, json!({"uid": 9, "name": "a"})).await;
        assert_eq!(
            first.expect_data(8, 0).await,
            json!({"reason": "duplicate login"})
        );
        first.expect_closed(Duration::from_secs(3)).await;
        assert_eq!(
            second.request(3, 2, json!({})).await["uid"],
            9,
            "the newer connection plays on"
        );
    })
    .await;
}

#[tokio::test]
async fn heartbeats_are_answered_and_idle_connections_closed() {
    for_each_setting(
        &["--heartbeat-interval", "400ms"],
        |dev, transport, wire| async move {
            let mut conn = Conn::open(&dev, transport, wire).await;
            let heartbeat = wire.heartbeat();
            conn.send_raw(&heartbeat).await;
            assert_eq!(conn.recv().await, Some(Packet::Heartbeat { extcode: 0 }));

            // Traffic keeps it alive past twice the interval...
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                conn.send_raw(&wire.size(0)).await; // a zero-size frame counts as liveness
            }
            // ...silence closes it after 2 x 400 ms.
            let idle = Instant::now();
            conn.expect_closed(Duration::from_secs(3)).await;
            let waited = idle.elapsed();
            assert!(
                waited >= Duration::from_millis(700),
                "closed too early: {waited:?}"
            );
            let metrics = dev.metrics().await;
            assert_eq!(
                metric_sum(
                    &metrics,
                    "switchyard_gate_connections_closed_total",
                    &["reason=\"idle\""]
                ),
                1.0
            );
        },
    )
    .await;
}

#[tokio::test]
async fn heartbeat_tick_mode_with_server_time() {
    let dev = Dev::start(&[
        "--heartbeat-interval",
        "300ms",
        "--heartbeat-mode",
        "tick",
        "--heartbeat-time",
    ]);
    let mut conn = Conn::tcp(&dev.tcp, Wire::DEFAULT).await;
    // The client sends no heartbeat, only zero-size liveness frames; the gate still ticks every interval.
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(conn.recv().await, Some(Packet::Heartbeat { extcode: 0 }));
        conn.send_raw(&Wire::DEFAULT.size(0)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "ticks come one interval apart"
    );

    let mut raw = tokio::net::TcpStream::connect(&dev.tcp).await.unwrap();
    let mut tick = [0u8; 13];
    tokio::io::AsyncReadExt::read_exact(&mut raw, &mut tick)
        .await
        .unwrap();
    assert_eq!(
        &tick[..5],
        &[0, 0, 0, 9, 0x80],
        "size 9: header + 8 bytes of server time"
    );
    let nanos = i64::from_be_bytes(tick[5..].try_into().unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert!(
        (now - nanos).abs() < 5_000_000_000,
        "server time {nanos} is not near now {now}"
    );
}

#[tokio::test]
async fn oversize_closes_only_that_connection() {
    for_each_setting(
        &["--max-packet-bytes", "1024"],
        |dev, transport, wire| async move {
            let mut bystander = Conn::open(&dev, transport, wire).await;
            let mut offender = Conn::open(&dev, transport, wire).await;
            match transport {
                // On TCP the size field alone is enough: nothing is allocated for the announced 1 GiB.
                Transport::Tcp => offender.send_raw(&wire.size(1 << 30)).await,
                Transport::Ws => offender.send_raw(&wire.data(1, 1, &vec![b'x'; 2000])).await,
            }
            offender.expect_closed(Duration::from_secs(3)).await;
            assert_eq!(
                bystander.request(1, 1, json!({"message": "still here"})).await["message"],
                "still here"
            );
            let metrics = dev.metrics().await;
            assert_eq!(
                metric_sum(
                    &metrics,
                    "switchyard_gate_connections_closed_total",
                    &["oversize"]
                ),
                1.0
            );
        },
    )
    .await;
}

#[tokio::test]
async fn malformed_and_unknown_packets_are_dropped_without_disconnect() {
    for_each_setting(&[], |dev, transport, wire| async move {
        let mut conn = Conn::open(&dev, transport, wire).await;
        // A data packet shorter than header + route + seq.
        let mut short = wire.size(2);
        short.extend([0, 1]);
        conn.send_raw(&short).await;
        // A route no node serves.
        conn.send(99, 1, json!({"message": "nobody"})).await;
        if transport == Transport::Ws {
            conn.send_text_frame("not a packet").await;
            let mut two = wire.data(1, 1, b"{}");
            two.extend(wire.data(1, 2, b"{}"));
            conn.send_raw(&two).await; // not exactly one packet
            conn.send_raw(&[0, 0]).await; // not even a size field
        }
        conn.expect_silence(Duration::from_millis(300)).await;
        assert_eq!(
            conn.request(1, 3, json!({"message": "ok"})).await["message"],
            "ok"
        );
        let metrics = dev.metrics().await;
        let malformed = metric_sum(&metrics, "switchyard_gate_packets_dropped_total", &["malformed"]);
        let expected = if transport == Transport::Ws { 3.0 } else { 1.0 };
        assert_eq!(malformed, expected, "{metrics}");
        assert_eq!(
            metric_sum(
                &metrics,
                "switchyard_gate_packets_dropped_total",
                &["unknown_route"]
            ),
            1.0
        );
    })
    .await;
}

#[tokio::test]
async fn a_thousand_concurrent_connections() {
    for transport in TRANSPORTS {
        let dev = Dev::start(&[]);
        let mut conns = Vec::new();
        for _ in 0..1000 {
            conns.push(Conn::open(&dev, transport, Wire::DEFAULT).await);
        }
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, mut conn)| {
                tokio::spawn(async move {
                    let message = format!("conn {i}");
                    let reply = conn.request(1, 7, json!({"message": message})).await;
                    assert_eq!(reply["message"], message);
                    conn
                })
            })
            .collect();
        let mut open = Vec::new();
        for task in tasks {
            open.push(task.await.expect("every connection served"));
        }
        let metrics = dev.metrics().await;
        assert_eq!(
            metric_sum(&metrics, "switchyard_gate_connections", &[]),
            1000.0,
            "all open at once"
        );
        drop(open);
    }
}

#[tokio::test]
async fn more_than_max_connections_are_refused_and_counted() {
    let dev = Dev::start(&["--max-connections", "2"]);
    let mut first = Conn::tcp(&dev.tcp, Wire::DEFAULT).await;
    let _second = Conn::tcp(&dev.tcp, Wire::DEFAULT).await;
    let mut third = Conn::tcp(&dev.tcp, Wire::DEFAULT).await;
    third.expect_closed(Duration::from_secs(2)).await;
    assert_eq!(first.request(1, 1, json!({"message": "x"})).await["code"], 0);
    let metrics = dev.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "switchyard_gate_connections_refused_total",
            &["max_connections"]
        ),
        1.0
    );
}

#[tokio::test]
async fn sigterm_tells_clients_to_reconnect_and_exits() {
    let mut dev = Dev::start(&["--gate-drain-deadline", "1s"]);
    let mut conn = Conn::tcp(&dev.tcp, Wire::DEFAULT).await;
    conn.request(1, 1, json!({"message": "x"})).await;
    let started = Instant::now();
    let status = std::thread::scope(|scope| {
        let exit = scope.spawn(|| dev.terminate(Duration::from_secs(5)));
        exit.join().expect("terminate thread")
    });
    assert_eq!(
        conn.recv().await,
        Some(Packet::Heartbeat { extcode: 1 }),
        "reconnect-elsewhere extcode"
    );
    conn.expect_closed(Duration::from_secs(2)).await;
    assert!(
        status.is_some_and(|status| status.success()),
        "exit status {status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn admin_endpoints() {
    let dev = Dev::start(&[]);
    assert_eq!(support::http_get(&dev.admin, "/healthz").await.0, 200);
    assert_eq!(support::http_get(&dev.admin, "/readyz").await.0, 200);
    let (status, metrics) = support::http_get(&dev.admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("switchyard_gate_connections"), "{metrics}");
    assert!(metrics.contains("switchyard_node_bound_players"), "{metrics}");
}

#[test]
fn bad_flags_exit_with_a_clear_message() {
    let output = std::process::Command::new(support::switchyard_binary())
        .args(["dev", "--route-bytes", "3"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("route width 3 bytes is not one of: 1, 2, 4"),
        "{stderr}"
    );
}

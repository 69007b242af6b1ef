//! Client-facing safety of the gate, against real `switchyard dev` processes: TLS on the TCP listener and
//! WSS on the WebSocket one (with a self-signed certificate made here), the authorize deadline, and the
//! per-connection packet-rate limit.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::certs::Certs;
use support::{Conn, Dev, Packet, Transport, Wire, metric_sum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Ws];

/// `switchyard dev` with `flags`, once its gate has linked the demo node (a packet sent before that would
/// be dropped for want of a node, failing a test for the wrong reason).
async fn dev(flags: &[&str]) -> Dev {
    let dev = Dev::start(flags);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_sum(&dev.metrics().await, "switchyard_gate_node_links", &[]) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the gate links the demo node within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    dev
}

async fn dev_with(flags: &[String]) -> Dev {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    dev(&flags).await
}

/// `host:port` of the WebSocket listener (the banner prints it as `ws://host:port/`).
fn ws_host(dev: &Dev) -> String {
    let rest = dev.ws.trim_start_matches("ws://");
    rest.split('/').next().expect("host:port").to_owned()
}

/// Reads one whole packet from a byte stream: `None` when it ends.
async fn read_packet(stream: &mut (impl AsyncReadExt + Unpin), wire: Wire) -> Option<Packet> {
    let read = async {
        let mut size = [0u8; 4];
        stream.read_exact(&mut size).await.ok()?;
        let mut packet = size.to_vec();
        packet.resize(4 + u32::from_be_bytes(size) as usize, 0);
        stream.read_exact(&mut packet[4..]).await.ok()?;
        Some(wire.parse(&packet))
    };
    tokio::time::timeout(support::READ_TIMEOUT, read)
        .await
        .expect("a packet within the timeout")
}

#[tokio::test]
async fn tls_over_tcp_and_wss_echo_and_plain_clients_are_refused() {
    let certs = Certs::new("echo");
    let dev = dev_with(&certs.flags()).await;
    let wire = Wire::DEFAULT;
    let request = wire.data(1, 1, br#"{"message":"hi"}"#);

    // TCP over TLS: the same raw bytes as plain TCP, inside TLS.
    let mut tls = certs.tls_connect(&dev.tcp).await;
    tls.write_all(&request).await.expect("request written");
    let reply = read_packet(&mut tls, wire).await.expect("an echo");
    assert!(
        matches!(reply, Packet::Data { route: 1, seq: 1, .. }),
        "{reply:?}"
    );
    assert_eq!(reply.json(), json!({"code": 0, "message": "hi"}));

    // WSS: WebSocket over TLS, one packet per binary message.
    let host = ws_host(&dev);
    let tls = certs.tls_connect(&host).await;
    let (mut wss, _) = tokio_tungstenite::client_async(format!("wss://localhost:{}/", port(&host)), tls)
        .await
        .expect("WebSocket upgrade over TLS");
    wss.send(Message::Binary(request.clone().into()))
        .await
        .expect("request sent");
    let reply = loop {
        match tokio::time::timeout(support::READ_TIMEOUT, wss.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => break wire.parse(&data),
            Ok(Some(Ok(_))) => {}
            other => panic!("expected an echo over WSS, got {other:?}"),
        }
    };
    assert!(
        matches!(reply, Packet::Data { route: 1, seq: 1, .. }),
        "{reply:?}"
    );
    assert_eq!(reply.json(), json!({"code": 0, "message": "hi"}));

    // A plain TCP client speaks the game protocol to the TLS port: the handshake fails, the socket closes.
    let mut plain = TcpStream::connect(&dev.tcp).await.expect("TCP connect");
    plain.write_all(&request).await.expect("write");
    let mut sink = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut sink)).await;
    assert!(ended.is_ok(), "the gate closes a plain client on its TLS port");
    assert!(
        !sink.windows(7).any(|w| w == b"message"),
        "no game reply to a plain client"
    );

    // A plain WebSocket client to the WSS port fails too.
    let refused =
        tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(&dev.ws)).await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "plain WebSocket upgrade on a WSS port must fail"
    );

    let metrics = dev.metrics().await;
    let refused = |protocol: &str| {
        metric_sum(
            &metrics,
            "switchyard_gate_connections_refused_total",
            &[&format!("protocol=\"{protocol}\""), "reason=\"handshake\""],
        )
    };
    assert_eq!(refused("tcp"), 1.0, "{metrics}");
    assert_eq!(refused("ws"), 1.0, "{metrics}");
    assert_eq!(
        metric_sum(&metrics, "switchyard_gate_connections_opened_total", &[]),
        2.0,
        "{metrics}"
    );
}

fn port(host: &str) -> &str {
    host.rsplit(':').next().expect("port")
}

/// Runs `switchyard dev` with `flags` expecting it to refuse to start; returns its stderr.
fn refused_start(flags: &[String]) -> String {
    let mut child = Command::new(support::switchyard_binary())
        .args([
            "dev",
            "--tcp",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .args(flags)
        .env("SWITCHYARD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("switchyard starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "switchyard dev {flags:?} must not start");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("switchyard dev {flags:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
    stderr
}

#[test]
fn bad_tls_files_stop_the_start_with_a_message_naming_the_file() {
    let certs = Certs::new("bad");
    let missing = certs.dir.join("missing-cert.pem");
    let garbage = certs.dir.join("garbage-key.pem");
    std::fs::write(&garbage, "this is not PEM\n").expect("written");
    let path = |p: &PathBuf| p.display().to_string();

    let stderr = refused_start(&[
        "--tls-cert".into(),
        path(&missing),
        "--tls-key".into(),
        path(&certs.key),
    ]);
    assert!(stderr.contains(&path(&missing)), "{stderr}");

    let stderr = refused_start(&[
        "--tls-cert".into(),
        path(&certs.cert),
        "--tls-key".into(),
        path(&garbage),
    ]);
    assert!(stderr.contains(&path(&garbage)), "{stderr}");

    let stderr = refused_start(&["--tls-cert".into(), path(&certs.cert)]);
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

#[tokio::test]
async fn the_authorize_timeout_closes_silent_connections_but_not_logged_in_ones() {
    let timeout = Duration::from_secs(1);
    let dev = dev(&["--authorize-timeout", "1s"]).await;
    for (uid, transport) in (1..).zip(TRANSPORTS) {
        let started = Instant::now();
        let mut silent = Conn::open(&dev, transport, Wire::DEFAULT).await;
        let mut player = Conn::open(&dev, transport, Wire::DEFAULT).await;
        let login = player.request(2, 1, json!({"uid": uid, "name": "ada"})).await;
        assert_eq!(login["code"], 0, "{login}");

        silent.expect_closed(Duration::from_secs(5)).await;
        let closed_after = started.elapsed();
        assert!(
            closed_after >= timeout - Duration::from_millis(50),
            "{transport:?}: closed after {closed_after:?}, before the deadline"
        );
        assert!(
            closed_after < timeout + Duration::from_secs(2),
            "{transport:?}: closed after {closed_after:?}"
        );

        // Past the deadline, the player is still connected and served.
        tokio::time::sleep((started + timeout * 2).saturating_duration_since(Instant::now())).await;
        let echo = player.request(1, 2, json!({"message": "still here"})).await;
        assert_eq!(echo, json!({"code": 0, "message": "still here"}));
        player.expect_silence(Duration::from_millis(200)).await;

        let metrics = dev.metrics().await;
        let protocol = match transport {
            Transport::Tcp => "protocol=\"tcp\"",
            Transport::Ws => "protocol=\"ws\"",
        };
        assert_eq!(
            metric_sum(
                &metrics,
                "switchyard_gate_connections_closed_total",
                &[protocol, "reason=\"unauthorized\""]
            ),
            1.0,
            "{metrics}"
        );
    }
}

async fn dropped_rate_limited(dev: &Dev) -> f64 {
    metric_sum(
        &dev.metrics().await,
        "switchyard_gate_packets_dropped_total",
        &["reason=\"rate_limited\""],
    )
}

/// Sends `count` echo requests back to back (one write on TCP, one flush on WebSocket) with seqs from
/// `first_seq`. Write errors are ignored: an abusive flood is cut short by the gate closing the connection.
async fn flood(conn: &mut Conn, first_seq: i64, count: i64) {
    let wire = conn.wire();
    let packets = (first_seq..first_seq + count).map(|seq| wire.data(1, seq, br#"{"message":"x"}"#));
    match conn {
        Conn::Tcp { stream, .. } => {
            let bytes: Vec<u8> = packets.flatten().collect();
            let _ = stream.write_all(&bytes).await;
        }
        Conn::Ws { ws, .. } => {
            for packet in packets {
                if ws.feed(Message::Binary(packet.into())).await.is_err() {
                    return;
                }
            }
            let _ = ws.flush().await;
        }
    }
}

#[tokio::test]
async fn the_rate_limit_drops_bursts_and_closes_persistent_abusers() {
    // 20 packets/s, 10 at once; more than 100 drops within 10 s close the connection.
    let dev = dev(&["--rate-limit", "20", "--rate-burst", "10"]).await;
    for transport in TRANSPORTS {
        let mut conn = Conn::open(&dev, transport, Wire::DEFAULT).await;
        let dropped_before = dropped_rate_limited(&dev).await;

        // A burst of 40: about the burst's worth is answered, the rest dropped without a reply.
        flood(&mut conn, 1, 40).await;
        let mut answered = 0;
        while let Ok(packet) = conn.recv_within(Duration::from_secs(1)).await {
            let packet = packet.expect("the connection stays open");
            assert!(matches!(packet, Packet::Data { route: 1, .. }), "{packet:?}");
            answered += 1;
        }
        // The bucket refills 2 packets per 100 ms: a little more than the burst may pass on a busy machine.
        assert!(
            (10..=30).contains(&answered),
            "{transport:?}: {answered} of 40 answered"
        );
        let dropped = dropped_rate_limited(&dev).await - dropped_before;
        assert_eq!(dropped, f64::from(40 - answered), "{transport:?}");

        // At a normal rate (10/s, under the limit) every request is answered.
        for seq in 100..110 {
            let echo = conn.request(1, seq, json!({"message": "calm"})).await;
            assert_eq!(echo, json!({"code": 0, "message": "calm"}));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(dropped_rate_limited(&dev).await - dropped_before, dropped);

        // Persistent abuse: far more than 10 × burst drops at once closes the connection.
        flood(&mut conn, 1000, 300).await;
        conn.expect_closed(Duration::from_secs(5)).await;
        let metrics = dev.metrics().await;
        let protocol = match transport {
            Transport::Tcp => "protocol=\"tcp\"",
            Transport::Ws => "protocol=\"ws\"",
        };
        assert_eq!(
            metric_sum(
                &metrics,
                "switchyard_gate_connections_closed_total",
                &[protocol, "reason=\"rate_limited\""]
            ),
            1.0,
            "{metrics}"
        );

        // Another connection has its own bucket.
        let mut other = Conn::open(&dev, transport, Wire::DEFAULT).await;
        let echo = other.request(1, 1, json!({"message": "fresh"})).await;
        assert_eq!(echo, json!({"code": 0, "message": "fresh"}));
    }
}

#[tokio::test]
async fn without_the_flags_nothing_is_limited() {
    let dev = dev(&[]).await;
    let mut conn = Conn::open(&dev, Transport::Tcp, Wire::DEFAULT).await;
    flood(&mut conn, 1, 200).await;
    for _ in 0..200 {
        assert!(matches!(conn.recv().await, Some(Packet::Data { route: 1, .. })));
    }
    let metrics = dev.metrics().await;
    for series in [
        ("switchyard_gate_packets_dropped_total", "reason=\"rate_limited\""),
        (
            "switchyard_gate_connections_closed_total",
            "reason=\"rate_limited\"",
        ),
        (
            "switchyard_gate_connections_closed_total",
            "reason=\"unauthorized\"",
        ),
    ] {
        // Created up front at zero, so dashboards see 0 rather than no data.
        assert!(metrics.contains(series.1), "{metrics}");
        assert_eq!(metric_sum(&metrics, series.0, &[series.1]), 0.0, "{metrics}");
    }
}

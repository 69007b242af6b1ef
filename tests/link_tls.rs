//! Mutual TLS on gate ↔ node links, against real `switchyard node` and `switchyard gate` processes given
//! `--link-tls-*` files minted here with rcgen: a stranger on a node's link port (plaintext with a forged
//! hello, TLS without a certificate, with another cluster's certificate, with a node's certificate posing
//! as a gate) gets no frame back and is counted by reason; a gate of the cluster links and serves clients;
//! replaced files are used by new links while established links stay up; half the flags, or a certificate
//! of another CA or for the other role, stop the process;
//! link connections per node are bounded; and even a gate of the cluster cannot reach an internal route, or
//! an authorized one without a uid: the node checks route flags itself.

mod support;

use std::time::Duration;

use bytes::BytesMut;
use serde_json::json;
use support::certs::{LinkLeaf, LinkPki, LinkRole};
use support::cluster::{admin_metrics, strings};
use support::link::{Node, client_packet, gate_frames, gate_hello, start_gate, start_node, wait_listening};
use support::procs::TempDir;
use support::{Conn, Wire, metric_sum, switchyard_binary};
use switchyard_protocol::link::{GateToNode, LinkDecoder, NodeToGate, Target};
use switchyard_testkit::eventually_true;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client packet as a gate forwards it, `{}` on `route`.
fn packet(cid: u64, uid: i64, route: i64) -> GateToNode {
    client_packet(cid, uid, route, b"{}")
}

fn hello() -> GateToNode {
    gate_hello("intruder")
}

fn frames(messages: impl IntoIterator<Item = GateToNode>) -> Vec<u8> {
    gate_frames(messages)
}

/// A gate's hello and a packet claiming uid 4242 on demo route 3, as the link protocol frames them.
fn forged_frames() -> Vec<u8> {
    frames([hello(), packet(1, 4242, 3)])
}

/// Everything the peer sends until it closes (or 3 s pass).
async fn read_all(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Speaks the link protocol over `stream` as an intruder would; returns what came back.
async fn forge(mut stream: impl AsyncRead + AsyncWrite + Unpin) -> Vec<u8> {
    let _ = stream.write_all(&forged_frames()).await;
    let _ = stream.flush().await;
    read_all(&mut stream).await
}

/// A TLS "gate" presenting `identity` (or nothing) to the node at `address`: what the link sent back,
/// `None` when the handshake itself failed on this side.
async fn tls_intruder(pki: &LinkPki, identity: Option<&LinkLeaf>, address: &str) -> Option<Vec<u8>> {
    let tcp = TcpStream::connect(address).await.expect("node accepts TCP");
    match pki.client(identity).connect(LinkPki::server_name(), tcp).await {
        Ok(stream) => Some(forge(stream).await),
        Err(_) => None,
    }
}

async fn refused(node: &Node, reason: &str) -> f64 {
    metric_sum(
        &admin_metrics(&node.admin).await,
        "switchyard_node_link_refused_total",
        &[&format!("reason=\"{reason}\"")],
    )
}

#[tokio::test]
async fn strangers_get_no_frame_and_a_gate_of_the_cluster_serves() {
    let dir = TempDir::new("link-tls-strangers");
    let pki = LinkPki::new("arena");
    let other = LinkPki::new("elsewhere");
    let node_leaf = pki.leaf(LinkRole::Node, "node");
    let gate_leaf = pki.leaf(LinkRole::Gate, "gate");
    let foreign_gate = other.leaf(LinkRole::Gate, "gate");
    let node = start_node(&dir, "node-a", &pki.flags(&node_leaf));
    wait_listening(&node.link).await;

    // Plaintext, the documented hello and a packet as uid 4242: no link frame comes back (at most a TLS
    // alert record, content type 21).
    let received = forge(TcpStream::connect(&node.link).await.expect("connect")).await;
    assert!(
        received.is_empty() || received[0] == 21,
        "a plaintext intruder got {received:?}"
    );
    // TLS without a certificate, with another cluster's, and with a node's own (server-only) certificate:
    // the handshake fails, or no byte of application data ever arrives.
    for (what, pki, identity) in [
        ("no certificate", &pki, None),
        ("another cluster's certificate", &pki, Some(&foreign_gate)),
        ("a node certificate posing as a gate", &pki, Some(&node_leaf)),
    ] {
        if let Some(received) = tls_intruder(pki, identity, &node.link).await {
            assert!(received.is_empty(), "{what}: got {} bytes", received.len());
        }
    }
    eventually_true("every refusal counted", Duration::from_secs(5), || async {
        refused(&node, "not_tls").await >= 1.0
            && refused(&node, "no_certificate").await >= 1.0
            && refused(&node, "bad_certificate").await >= 2.0
    })
    .await;
    let metrics = admin_metrics(&node.admin).await;
    assert_eq!(
        metric_sum(&metrics, "switchyard_node_gate_links", &[]),
        0.0,
        "no intruder was linked"
    );
    // Logged once per reason, not once per attempt (two bad certificates, one line).
    let log = node.proc.log_text();
    assert_eq!(log.matches("reason=\"bad_certificate\"").count(), 1, "{log}");

    // A gate of another cluster is refused too (its CA does not vouch for the node, nor the node's for it).
    let (_foreign, _, foreign_admin) = start_gate(&dir, "gate-x", &[&node.link], &other.flags(&foreign_gate));
    eventually_true("the foreign gate tried", Duration::from_secs(15), || async {
        metric_sum(
            &admin_metrics(&foreign_admin).await,
            "switchyard_gate_node_link_failures_total",
            &[],
        ) >= 1.0
    })
    .await;
    assert_eq!(
        metric_sum(
            &admin_metrics(&foreign_admin).await,
            "switchyard_gate_node_links",
            &[]
        ),
        0.0
    );

    // The cluster's own gate links and serves a client.
    let (_gate, tcp, admin) = start_gate(&dir, "gate-a", &[&node.link], &pki.flags(&gate_leaf));
    eventually_true("gate linked over mutual TLS", Duration::from_secs(15), || async {
        metric_sum(&admin_metrics(&admin).await, "switchyard_gate_node_links", &[]) == 1.0
    })
    .await;
    let mut conn = Conn::tcp(&tcp, Wire::DEFAULT).await;
    let reply = conn.request(1, 1, json!({"message": "through mTLS"})).await;
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(reply["message"], "through mTLS", "{reply}");
}

#[tokio::test]
async fn replaced_files_serve_new_links_and_established_links_stay_up() {
    let dir = TempDir::new("link-tls-rotation");
    let pki = LinkPki::new("rotating");
    let node_leaf = pki.leaf(LinkRole::Node, "node");
    let gate_leaf = pki.leaf(LinkRole::Gate, "gate");
    let fast = strings(&["--link-tls-reload-interval", "200ms"]);
    let node = start_node(&dir, "node-r", &[pki.flags(&node_leaf), fast.clone()].concat());
    wait_listening(&node.link).await;
    let (_gate, tcp, admin) = start_gate(
        &dir,
        "gate-r",
        &[&node.link],
        &[pki.flags(&gate_leaf), fast].concat(),
    );
    eventually_true("gate linked", Duration::from_secs(15), || async {
        metric_sum(&admin_metrics(&admin).await, "switchyard_gate_node_links", &[]) == 1.0
    })
    .await;
    let mut conn = Conn::tcp(&tcp, Wire::DEFAULT).await;
    assert_eq!(conn.request(1, 1, json!({"message": "before"})).await["code"], 0);

    /// The certificate the node presents to a new link now.
    async fn presented(pki: &LinkPki, identity: &LinkLeaf, address: &str) -> Vec<u8> {
        let tcp = TcpStream::connect(address).await.expect("connect");
        let stream = pki
            .client(Some(identity))
            .connect(LinkPki::server_name(), tcp)
            .await
            .expect("a gate of the cluster completes the handshake");
        stream.get_ref().1.peer_certificates().expect("node certificate")[0].to_vec()
    }
    assert_eq!(
        presented(&pki, &gate_leaf, &node.link).await,
        node_leaf.der.to_vec()
    );

    // Renewal: both leaves replaced in place, as the operator's Secret update does.
    let renewed_node = pki.leaf(LinkRole::Node, "node");
    let renewed_gate = pki.leaf(LinkRole::Gate, "gate");
    eventually_true(
        "the node presents its renewed certificate",
        Duration::from_secs(10),
        || async { presented(&pki, &renewed_gate, &node.link).await == renewed_node.der.to_vec() },
    )
    .await;
    // The established link was not dropped: same link, no reconnect, and it still carries traffic.
    let metrics = admin_metrics(&admin).await;
    assert_eq!(
        metric_sum(&metrics, "switchyard_gate_node_link_reconnects_total", &[]),
        0.0
    );
    assert_eq!(metric_sum(&metrics, "switchyard_gate_node_links", &[]), 1.0);
    assert_eq!(
        conn.request(1, 2, json!({"message": "after"})).await["message"],
        "after"
    );
}

#[test]
fn half_the_link_tls_flags_stop_the_process_with_a_message() {
    for kind in ["node", "gate"] {
        let mut args = vec![
            kind,
            "--link-tls-cert",
            "/tmp/cert.pem",
            "--link-tls-key",
            "/tmp/key.pem",
        ];
        if kind == "gate" {
            args.extend(["--nodes", "127.0.0.1:1", "--tcp", "127.0.0.1:0", "--ws", ""]);
        } else {
            args.extend(["--link", "127.0.0.1:0"]);
        }
        let output = std::process::Command::new(switchyard_binary())
            .args(&args)
            .args(["--http", "127.0.0.1:0", "--locator", "memory"])
            .env("NO_COLOR", "1")
            .output()
            .expect("switchyard runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !output.status.success(),
            "{kind} started with half the flags: {text}"
        );
        assert!(
            text.contains("--link-tls-ca (SWITCHYARD_LINK_TLS_CA)") && text.contains("missing"),
            "{kind}: {text}"
        );
    }
}

#[test]
fn a_certificate_for_the_other_role_or_another_ca_stops_the_process() {
    let pki = LinkPki::new("roles");
    let other = LinkPki::new("roles-other");
    let gate_leaf = pki.leaf(LinkRole::Gate, "gate");
    let foreign_node = other.leaf(LinkRole::Node, "node");
    // A node given a gate's certificate; a node given a node certificate of another CA.
    for (flags, wanted) in [
        (pki.flags(&gate_leaf), "not a valid node certificate"),
        (
            [
                strings(&["--link-tls-ca", &pki.ca.display().to_string()]),
                other.flags(&foreign_node)[2..].to_vec(),
            ]
            .concat(),
            "not a valid node certificate",
        ),
    ] {
        let output = std::process::Command::new(switchyard_binary())
            .args([
                "node",
                "--link",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--locator",
                "memory",
            ])
            .args(&flags)
            .env("NO_COLOR", "1")
            .output()
            .expect("switchyard runs");
        let text =
            String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
        assert!(
            !output.status.success() && text.contains(wanted),
            "{flags:?}: {text}"
        );
    }
}

#[tokio::test]
async fn link_connections_per_node_are_bounded() {
    let dir = TempDir::new("link-max");
    let node = start_node(&dir, "node-m", &strings(&["--max-links", "2"]));
    wait_listening(&node.link).await;
    // The wait above held a connection briefly; let it go before counting.
    eventually_true("no link connection open", Duration::from_secs(5), || async {
        metric_sum(
            &admin_metrics(&node.admin).await,
            "switchyard_node_link_connections",
            &[],
        ) == 0.0
    })
    .await;
    let _first = TcpStream::connect(&node.link).await.expect("connect");
    let _second = TcpStream::connect(&node.link).await.expect("connect");
    eventually_true("two link connections open", Duration::from_secs(5), || async {
        metric_sum(
            &admin_metrics(&node.admin).await,
            "switchyard_node_link_connections",
            &[],
        ) == 2.0
    })
    .await;
    let third = TcpStream::connect(&node.link).await.expect("the kernel accepts");
    assert!(
        forge(third).await.is_empty(),
        "the link over the cap got an answer"
    );
    eventually_true("the third connection counted", Duration::from_secs(5), || async {
        refused(&node, "max_links").await == 1.0
    })
    .await;
}

#[tokio::test]
async fn even_a_gate_of_the_cluster_cannot_reach_internal_or_unauthorized_routes() {
    let dir = TempDir::new("link-route-flags");
    let pki = LinkPki::new("flags");
    let node_leaf = pki.leaf(LinkRole::Node, "node");
    let gate_leaf = pki.leaf(LinkRole::Gate, "gate");
    let node = start_node(&dir, "node-f", &pki.flags(&node_leaf));
    wait_listening(&node.link).await;
    let tcp = TcpStream::connect(&node.link).await.expect("connect");
    let mut link = pki
        .client(Some(&gate_leaf))
        .connect(LinkPki::server_name(), tcp)
        .await
        .expect("handshake");
    // Internal route 111 (node-to-node only) even with a uid, authorized routes 11 and 3 without one; then
    // an echo (route 1, stateless) on cid 9, answered only once the three before it were handled.
    let messages = [
        hello(),
        packet(1, 4242, 111),
        packet(2, 0, 11),
        packet(3, 0, 3),
        packet(9, 0, 1),
    ];
    link.write_all(&frames(messages)).await.expect("written");
    link.flush().await.expect("flushed");
    let mut decoder = LinkDecoder::new(switchyard_protocol::link::DEFAULT_MAX_FRAME_BYTES);
    let mut buf = BytesMut::new();
    let mut delivered = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !delivered.contains(&9) {
        while let Some(message) = decoder.decode_node_to_gate(&mut buf).expect("valid frames") {
            if let NodeToGate::Deliver {
                target: Target::Connection(cid),
                ..
            } = message
            {
                delivered.push(cid);
            }
        }
        let read = tokio::time::timeout_at(deadline, link.read_buf(&mut buf))
            .await
            .expect("the echo answered within 5 s")
            .expect("link open");
        assert!(read > 0, "the node closed the link");
    }
    assert_eq!(delivered, vec![9], "only the echo was answered");
    let metrics = admin_metrics(&node.admin).await;
    assert_eq!(
        metric_sum(
            &metrics,
            "switchyard_node_packets_dropped_total",
            &["reason=\"forbidden\""]
        ),
        3.0
    );
}

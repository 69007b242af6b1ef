//! Real `switchyard node`s and `switchyard gate`s linked over plaintext or mutual TLS, each with a memory
//! locator, and the raw link frames a fake gate or a fake node speaks to them (encoded with the protocol
//! crate, whose byte layout `protocol/src/link/codec.rs` specifies and its own tests pin).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use switchyard_protocol::link::{GateToNode, NodeToGate, encode_gate_to_node, encode_node_to_gate, feature};
use switchyard_testkit::eventually_true;
use tokio::net::TcpStream;

use super::Wire;
use super::cluster::strings;
use super::procs::{Proc, TempDir, free_port};
use super::switchyard_binary;

/// A running node: its process, link address and admin URL.
pub struct Node {
    pub proc: Proc,
    pub link: String,
    pub admin: String,
}

/// Starts a demo node with a memory locator and `extra` flags.
pub fn start_node(dir: &TempDir, id: &str, extra: &[String]) -> Node {
    let (link, admin) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut args = strings(&[
        "node",
        "--id",
        id,
        "--link",
        &link,
        "--http",
        &admin,
        "--locator",
        "memory",
    ]);
    args.extend_from_slice(extra);
    Node {
        proc: Proc::spawn(id, switchyard_binary(), &args, dir.path()),
        link,
        admin: format!("http://{admin}"),
    }
}

/// A running gate linked (or trying to link) to the node link addresses `nodes`: its process, client TCP
/// address and admin URL.
pub fn start_gate(dir: &TempDir, id: &str, nodes: &[&str], extra: &[String]) -> (Proc, String, String) {
    let (tcp, admin) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut args = strings(&[
        "gate",
        "--id",
        id,
        "--tcp",
        &tcp,
        "--ws",
        "",
        "--http",
        &admin,
        "--locator",
        "memory",
        "--nodes",
        &nodes.join(","),
    ]);
    args.extend_from_slice(extra);
    (
        Proc::spawn(id, switchyard_binary(), &args, dir.path()),
        tcp,
        format!("http://{admin}"),
    )
}

/// Waits until something accepts TCP connections at `address`.
pub async fn wait_listening(address: &str) {
    eventually_true("listening", Duration::from_secs(15), || async {
        TcpStream::connect(address).await.is_ok()
    })
    .await;
}

/// A client packet as a gate forwards it: its body, after the 4-byte size field.
pub fn client_packet(cid: u64, uid: i64, route: i64, payload: &[u8]) -> GateToNode {
    GateToNode::Packet {
        cid,
        uid,
        body: Bytes::from(Wire::DEFAULT.data(route, 1, payload)[4..].to_vec()),
        trace: None,
        peer: None,
    }
}

/// A gate's hello, as a gate named `gate_id` with every feature sends it.
pub fn gate_hello(gate_id: &str) -> GateToNode {
    GateToNode::Hello {
        gate_id: gate_id.into(),
        features: feature::ALL,
    }
}

/// Gate → node messages as link frames.
pub fn gate_frames(messages: impl IntoIterator<Item = GateToNode>) -> Vec<u8> {
    let mut frames = BytesMut::new();
    for message in messages {
        encode_gate_to_node(&message, &mut frames).expect("encodable");
    }
    frames.to_vec()
}

/// Node → gate messages as link frames.
pub fn node_frames(messages: impl IntoIterator<Item = NodeToGate>) -> Vec<u8> {
    let mut frames = BytesMut::new();
    for message in messages {
        encode_node_to_gate(&message, &mut frames).expect("encodable");
    }
    frames.to_vec()
}

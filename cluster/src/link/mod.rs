//! Gate ↔ node links as pairs of bounded channels, whatever carries them.
//!
//! Gates and nodes only ever see a [`GateLink`] or a [`NodeLink`]: a bounded sender and a receiver of
//! [`switchyard_protocol::link`] messages. A transport's job is to produce those ends: the in-process
//! transport here hands the channels over directly; the TCP transport bridges them to a socket, in plaintext
//! or mutual TLS ([`tls`]). Because the
//! gate and node code is the same for both, `switchyard dev` exercises the exact logic of a real cluster.
//!
//! Bounded channels are the backpressure: a node that cannot keep up makes the gate's readers wait instead of
//! letting memory grow. Each direction is bounded in messages and in bytes ([`queue`]), so what a peer that
//! stops taking messages can pin is bounded too.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use switchyard_protocol::link::{GateToNode, NodeToGate};
use tokio::sync::mpsc;

pub mod queue;
pub mod tcp;
pub mod tls;

pub use queue::{DEFAULT_LINK_QUEUE_BYTES, LinkReceiver, LinkSender};

/// Messages a link holds in each direction before the sender waits.
pub const DEFAULT_LINK_CAPACITY: usize = 4096;

/// The gate's end of a link to one node.
#[derive(Debug)]
pub struct GateLink {
    pub tx: LinkSender<GateToNode>,
    pub rx: LinkReceiver<NodeToGate>,
}

/// The node's end of a link to one gate.
#[derive(Debug)]
pub struct NodeLink {
    pub tx: LinkSender<NodeToGate>,
    pub rx: LinkReceiver<GateToNode>,
}

/// Both ends of a fresh in-process link, each direction bounded to `capacity` messages and `bytes` of
/// message weight.
pub fn link_pair(capacity: usize, bytes: usize) -> (GateLink, NodeLink) {
    let (gate_tx, node_rx) = queue::channel(capacity, bytes);
    let (node_tx, gate_rx) = queue::channel(capacity, bytes);
    (
        GateLink {
            tx: gate_tx,
            rx: gate_rx,
        },
        NodeLink {
            tx: node_tx,
            rx: node_rx,
        },
    )
}

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("no node listens at {0:?} (the registry names a node that is not running)")]
    NoListener(String),
    #[error("address {0:?} is already taken by another in-process node")]
    AddressInUse(String),
    #[error("the node at {0:?} stopped accepting links")]
    ListenerClosed(String),
    #[error("link to {address:?} failed: {source}")]
    Io { address: String, source: std::io::Error },
    #[error("link handshake with {address:?} failed: {reason}")]
    Handshake { address: String, reason: String },
}

/// How a gate opens a link to a node address taken from the registry.
#[async_trait]
pub trait Connector: Send + Sync + fmt::Debug + 'static {
    /// Opens a link. The returned ends are fresh: no message has been exchanged yet.
    ///
    /// # Errors
    /// The node is not reachable at `address`.
    async fn connect(&self, address: &str) -> Result<GateLink, LinkError>;
}

/// How a node receives the links gates open to it.
#[async_trait]
pub trait Acceptor: Send + fmt::Debug + 'static {
    /// The next link, or `None` once the acceptor is closed.
    async fn accept(&mut self) -> Option<NodeLink>;
}

/// In-process transport: nodes listen on a name, gates connect to that name. Used by `switchyard dev`
/// and by tests that want a whole cluster in one process.
#[derive(Debug, Clone)]
pub struct InProcessHub {
    listeners: Arc<Mutex<HashMap<String, mpsc::Sender<NodeLink>>>>,
    capacity: usize,
}

impl Default for InProcessHub {
    fn default() -> Self {
        Self::new(DEFAULT_LINK_CAPACITY)
    }
}

impl InProcessHub {
    pub fn new(link_capacity: usize) -> Self {
        InProcessHub {
            listeners: Arc::default(),
            capacity: link_capacity,
        }
    }

    /// Starts listening on `address`; the name is free again once the acceptor is dropped.
    ///
    /// # Errors
    /// Another live acceptor already listens on `address`.
    pub fn listen(&self, address: &str) -> Result<InProcessAcceptor, LinkError> {
        let mut listeners = self.listeners.lock();
        if listeners.get(address).is_some_and(|tx| !tx.is_closed()) {
            return Err(LinkError::AddressInUse(address.to_owned()));
        }
        let (tx, rx) = mpsc::channel(16);
        listeners.insert(address.to_owned(), tx);
        Ok(InProcessAcceptor { rx })
    }
}

#[async_trait]
impl Connector for InProcessHub {
    async fn connect(&self, address: &str) -> Result<GateLink, LinkError> {
        let listener = self.listeners.lock().get(address).cloned();
        let listener = listener.ok_or_else(|| LinkError::NoListener(address.to_owned()))?;
        let (gate_end, node_end) = link_pair(self.capacity, DEFAULT_LINK_QUEUE_BYTES);
        listener
            .send(node_end)
            .await
            .map_err(|_| LinkError::ListenerClosed(address.to_owned()))?;
        Ok(gate_end)
    }
}

/// The node side of an [`InProcessHub`] listener.
#[derive(Debug)]
pub struct InProcessAcceptor {
    rx: mpsc::Receiver<NodeLink>,
}

#[async_trait]
impl Acceptor for InProcessAcceptor {
    async fn accept(&mut self) -> Option<NodeLink> {
        self.rx.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_protocol::link::NodeState;

    #[tokio::test]
    async fn in_process_link_carries_both_directions() {
        let hub = InProcessHub::new(8);
        let mut acceptor = hub.listen("node-a").unwrap();
        assert!(matches!(hub.listen("node-a"), Err(LinkError::AddressInUse(_))));
        let mut gate = hub.connect("node-a").await.unwrap();
        let mut node = acceptor.accept().await.unwrap();
        gate.tx
            .send(GateToNode::Hello {
                gate_id: "g".into(),
                features: 0,
            })
            .await
            .unwrap();
        assert_eq!(
            node.rx.recv().await,
            Some(GateToNode::Hello {
                gate_id: "g".into(),
                features: 0,
            })
        );
        node.tx
            .send(NodeToGate::State(NodeState::Draining))
            .await
            .unwrap();
        assert_eq!(gate.rx.recv().await, Some(NodeToGate::State(NodeState::Draining)));
    }

    #[tokio::test]
    async fn connecting_to_nobody_says_so() {
        let hub = InProcessHub::default();
        assert!(matches!(
            hub.connect("ghost").await,
            Err(LinkError::NoListener(_))
        ));
        drop(hub.listen("gone").unwrap());
        assert!(matches!(
            hub.connect("gone").await,
            Err(LinkError::ListenerClosed(_))
        ));
        assert!(hub.listen("gone").is_ok(), "a dropped acceptor frees its name");
    }
}

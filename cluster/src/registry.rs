//! Which nodes exist and which of them take new players.
//!
//! A registry publishes the current set of node endpoints on a [`watch`] channel; gates keep one link per
//! present endpoint. `accepting` is the registry's view of readiness (an EndpointSlice's `ready`); the node's
//! own state, pushed on the link, is combined with it by the gate, so a draining node stops getting new
//! players as soon as either says so.

use std::fmt;

use tokio::sync::watch;

/// One node as a registry sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeEndpoint {
    /// What a [`crate::link::Connector`] connects to: `host:port` for TCP, a name in-process.
    pub address: String,
    /// Whether the registry offers this node to new players.
    pub accepting: bool,
}

/// A source of the current node set.
pub trait Registry: Send + Sync + fmt::Debug + 'static {
    /// A receiver that always holds the newest node set.
    fn nodes(&self) -> watch::Receiver<Vec<NodeEndpoint>>;
}

/// A fixed list of nodes from flags or configuration: bare metal, local clusters and tests.
#[derive(Debug)]
pub struct StaticRegistry {
    tx: watch::Sender<Vec<NodeEndpoint>>,
}

impl StaticRegistry {
    pub fn new(addresses: impl IntoIterator<Item = String>) -> Self {
        let nodes = addresses
            .into_iter()
            .map(|address| NodeEndpoint {
                address,
                accepting: true,
            })
            .collect();
        StaticRegistry {
            tx: watch::Sender::new(nodes),
        }
    }

    /// Replaces the node set (tests and configuration reloads).
    pub fn set(&self, nodes: Vec<NodeEndpoint>) {
        self.tx.send_replace(nodes);
    }
}

impl Registry for StaticRegistry {
    fn nodes(&self) -> watch::Receiver<Vec<NodeEndpoint>> {
        self.tx.subscribe()
    }
}

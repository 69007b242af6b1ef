//! Where players are: uid → gate (the connection) and uid → node per node pool (the game state).
//!
//! Writes are compare-and-delete on unbind: an instance only removes a binding that is still its own, so
//! a late unbind from an old gate or node never erases a newer binding. Every change is also published as a
//! [`LocatorEvent`] so that caches (the gates' per-session bindings) stay right.
//!
//! Routing a packet never calls the locator: gates keep bindings in memory. The locator serves cross-gate
//! pushes and recovery after a reconnect.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use switchyard_protocol::link::Uid;
use tokio::sync::broadcast;

/// The node pool of the demo game and of clusters with a single pool.
pub const DEFAULT_POOL: &str = "game";
/// Events a subscriber may fall behind by before it sees [`broadcast::error::RecvError::Lagged`].
const EVENT_CAPACITY: usize = 4096;

/// A change of a binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocatorEvent {
    GateBound { uid: Uid, gate_id: String },
    GateUnbound { uid: Uid, gate_id: String },
    NodeBound { uid: Uid, pool: String, node_id: String },
    NodeUnbound { uid: Uid, pool: String, node_id: String },
}

/// The locator's backing store failed. Not the caller's fault; the operation may be retried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LocatorError {
    #[error("locator store unavailable: {0}")]
    Unavailable(String),
    #[error("locator store answered something unexpected: {0}")]
    Protocol(String),
}

/// uid → gate and uid → node bindings.
#[async_trait]
pub trait Locator: Send + Sync + fmt::Debug + 'static {
    /// Binds `uid` to `gate_id`, replacing any earlier gate binding.
    async fn bind_gate(&self, uid: Uid, gate_id: &str) -> Result<(), LocatorError>;
    /// Removes the gate binding if it still names `gate_id`; returns whether it did.
    async fn unbind_gate(&self, uid: Uid, gate_id: &str) -> Result<bool, LocatorError>;
    async fn locate_gate(&self, uid: Uid) -> Result<Option<String>, LocatorError>;
    /// Binds `uid` in `pool` to `node_id`, replacing any earlier node binding in that pool.
    async fn bind_node(&self, uid: Uid, pool: &str, node_id: &str) -> Result<(), LocatorError>;
    /// Removes the node binding if it still names `node_id`; returns whether it did.
    async fn unbind_node(&self, uid: Uid, pool: &str, node_id: &str) -> Result<bool, LocatorError>;
    async fn locate_node(&self, uid: Uid, pool: &str) -> Result<Option<String>, LocatorError>;
    /// Every binding change from now on, from every instance sharing the store.
    fn events(&self) -> broadcast::Receiver<LocatorEvent>;
}

/// A locator for one process: the embedded default of `switchyard dev`.
#[derive(Debug, Clone)]
pub struct MemoryLocator {
    inner: Arc<MemoryInner>,
}

#[derive(Debug)]
struct MemoryInner {
    gates: Mutex<HashMap<Uid, String>>,
    nodes: Mutex<HashMap<(Uid, String), String>>,
    events: broadcast::Sender<LocatorEvent>,
}

impl Default for MemoryLocator {
    fn default() -> Self {
        MemoryLocator {
            inner: Arc::new(MemoryInner {
                gates: Mutex::default(),
                nodes: Mutex::default(),
                events: broadcast::Sender::new(EVENT_CAPACITY),
            }),
        }
    }
}

impl MemoryLocator {
    fn publish(&self, event: LocatorEvent) {
        // No subscriber is not an error: nobody caches yet.
        let _ = self.inner.events.send(event);
    }
}

#[async_trait]
impl Locator for MemoryLocator {
    async fn bind_gate(&self, uid: Uid, gate_id: &str) -> Result<(), LocatorError> {
        self.inner.gates.lock().insert(uid, gate_id.to_owned());
        self.publish(LocatorEvent::GateBound {
            uid,
            gate_id: gate_id.to_owned(),
        });
        Ok(())
    }

    async fn unbind_gate(&self, uid: Uid, gate_id: &str) -> Result<bool, LocatorError> {
        let removed = remove_if_owned(&mut self.inner.gates.lock(), &uid, gate_id);
        if removed {
            self.publish(LocatorEvent::GateUnbound {
                uid,
                gate_id: gate_id.to_owned(),
            });
        }
        Ok(removed)
    }

    async fn locate_gate(&self, uid: Uid) -> Result<Option<String>, LocatorError> {
        Ok(self.inner.gates.lock().get(&uid).cloned())
    }

    async fn bind_node(&self, uid: Uid, pool: &str, node_id: &str) -> Result<(), LocatorError> {
        self.inner
            .nodes
            .lock()
            .insert((uid, pool.to_owned()), node_id.to_owned());
        self.publish(LocatorEvent::NodeBound {
            uid,
            pool: pool.to_owned(),
            node_id: node_id.to_owned(),
        });
        Ok(())
    }

    async fn unbind_node(&self, uid: Uid, pool: &str, node_id: &str) -> Result<bool, LocatorError> {
        let removed = remove_if_owned(&mut self.inner.nodes.lock(), &(uid, pool.to_owned()), node_id);
        if removed {
            self.publish(LocatorEvent::NodeUnbound {
                uid,
                pool: pool.to_owned(),
                node_id: node_id.to_owned(),
            });
        }
        Ok(removed)
    }

    async fn locate_node(&self, uid: Uid, pool: &str) -> Result<Option<String>, LocatorError> {
        Ok(self.inner.nodes.lock().get(&(uid, pool.to_owned())).cloned())
    }

    fn events(&self) -> broadcast::Receiver<LocatorEvent> {
        self.inner.events.subscribe()
    }
}

/// Compare-and-delete: removes `key` only while it still maps to `owner`.
fn remove_if_owned<K: std::hash::Hash + Eq>(map: &mut HashMap<K, String>, key: &K, owner: &str) -> bool {
    if map.get(key).is_some_and(|current| current == owner) {
        map.remove(key);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unbind_only_removes_own_binding() {
        let locator = MemoryLocator::default();
        let mut events = locator.events();
        locator.bind_gate(7, "gate-a").await.unwrap();
        locator.bind_gate(7, "gate-b").await.unwrap();
        assert!(
            !locator.unbind_gate(7, "gate-a").await.unwrap(),
            "a stale owner must not unbind"
        );
        assert_eq!(locator.locate_gate(7).await.unwrap().as_deref(), Some("gate-b"));
        assert!(locator.unbind_gate(7, "gate-b").await.unwrap());
        assert_eq!(locator.locate_gate(7).await.unwrap(), None);

        locator.bind_node(7, DEFAULT_POOL, "node-1").await.unwrap();
        assert!(!locator.unbind_node(7, DEFAULT_POOL, "node-2").await.unwrap());
        assert_eq!(
            locator.locate_node(7, DEFAULT_POOL).await.unwrap().as_deref(),
            Some("node-1")
        );
        assert_eq!(locator.locate_node(7, "other-pool").await.unwrap(), None);

        let seen: Vec<_> = std::iter::from_fn(|| events.try_recv().ok()).collect();
        assert_eq!(
            seen,
            vec![
                LocatorEvent::GateBound {
                    uid: 7,
                    gate_id: "gate-a".into()
                },
                LocatorEvent::GateBound {
                    uid: 7,
                    gate_id: "gate-b".into()
                },
                LocatorEvent::GateUnbound {
                    uid: 7,
                    gate_id: "gate-b".into()
                },
                LocatorEvent::NodeBound {
                    uid: 7,
                    pool: DEFAULT_POOL.into(),
                    node_id: "node-1".into()
                },
            ]
        );
    }
}

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
    GateBound {
        uid: Uid,
        gate_id: String,
    },
    GateUnbound {
        uid: Uid,
        gate_id: String,
    },
    NodeBound {
        uid: Uid,
        pool: String,
        node_id: String,
    },
    NodeUnbound {
        uid: Uid,
        pool: String,
        node_id: String,
    },
    /// The store was unreachable (the event subscription broke) and is reachable again. Events were missed
    /// meanwhile, and bindings may have been lost (a Redis without persistence restarts empty): every
    /// instance re-asserts the bindings it holds with [`Locator::restore_gate`] and
    /// [`Locator::restore_node`] (see [`restore_all`]).
    Reconnected,
}

/// The locator's backing store failed. Not the caller's fault; the operation may be retried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LocatorError {
    #[error("locator store unavailable: {0}")]
    Unavailable(String),
    #[error("locator store answered something unexpected: {0}")]
    Protocol(String),
    /// The store refused this client: wrong credentials, or a TLS certificate that is not trusted. Waiting
    /// does not help; the settings must change.
    #[error("locator store refused this client: {0}")]
    Refused(String),
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
    /// Binds `uid` to `gate_id` unless `uid` has a gate binding already, which it leaves alone (it may be
    /// newer: the player moved meanwhile). Returns whether it bound. For re-asserting a binding after
    /// [`LocatorEvent::Reconnected`].
    async fn restore_gate(&self, uid: Uid, gate_id: &str) -> Result<bool, LocatorError>;
    /// Binds `uid` in `pool` to `node_id` unless `uid` has a binding in `pool` already; returns whether it
    /// bound. For re-asserting a binding after [`LocatorEvent::Reconnected`].
    async fn restore_node(&self, uid: Uid, pool: &str, node_id: &str) -> Result<bool, LocatorError>;
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

    async fn restore_gate(&self, uid: Uid, gate_id: &str) -> Result<bool, LocatorError> {
        let bound = insert_if_absent(&mut self.inner.gates.lock(), uid, gate_id);
        if bound {
            self.publish(LocatorEvent::GateBound {
                uid,
                gate_id: gate_id.to_owned(),
            });
        }
        Ok(bound)
    }

    async fn restore_node(&self, uid: Uid, pool: &str, node_id: &str) -> Result<bool, LocatorError> {
        let bound = insert_if_absent(&mut self.inner.nodes.lock(), (uid, pool.to_owned()), node_id);
        if bound {
            self.publish(LocatorEvent::NodeBound {
                uid,
                pool: pool.to_owned(),
                node_id: node_id.to_owned(),
            });
        }
        Ok(bound)
    }

    fn events(&self) -> broadcast::Receiver<LocatorEvent> {
        self.inner.events.subscribe()
    }
}

fn insert_if_absent<K: std::hash::Hash + Eq>(map: &mut HashMap<K, String>, key: K, owner: &str) -> bool {
    match map.entry(key) {
        std::collections::hash_map::Entry::Occupied(_) => false,
        std::collections::hash_map::Entry::Vacant(slot) => {
            slot.insert(owner.to_owned());
            true
        }
    }
}

/// How often [`restore_all`] tries a binding that could not be restored.
pub const RESTORE_ATTEMPTS: usize = 5;
/// The pause between two rounds of [`restore_all`].
pub const RESTORE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// What [`restore_all`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Bindings that were missing and are back.
    pub restored: usize,
    /// Bindings that were there already (or newer).
    pub present: usize,
    /// Bindings that could not be written in [`RESTORE_ATTEMPTS`] rounds.
    pub failed: usize,
}

/// Re-asserts one binding per uid of `uids` with `restore` (a [`Locator::restore_gate`] or
/// [`Locator::restore_node`] call), retrying the failed ones every [`RESTORE_RETRY`], at most
/// [`RESTORE_ATTEMPTS`] times.
pub async fn restore_all<F, Fut>(uids: Vec<Uid>, mut restore: F) -> Restored
where
    F: FnMut(Uid) -> Fut,
    Fut: std::future::Future<Output = Result<bool, LocatorError>>,
{
    let mut outcome = Restored::default();
    let mut pending = uids;
    for attempt in 0..RESTORE_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(RESTORE_RETRY).await;
        }
        let mut failed = Vec::new();
        for uid in pending {
            match restore(uid).await {
                Ok(true) => outcome.restored += 1,
                Ok(false) => outcome.present += 1,
                Err(_) => failed.push(uid),
            }
        }
        pending = failed;
        if pending.is_empty() {
            break;
        }
    }
    outcome.failed = pending.len();
    outcome
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

    #[tokio::test]
    async fn restore_binds_only_what_is_missing() {
        let locator = MemoryLocator::default();
        locator.bind_gate(1, "gate-new").await.unwrap();
        locator.bind_node(1, DEFAULT_POOL, "node-new").await.unwrap();
        let mut events = locator.events();
        assert!(
            !locator.restore_gate(1, "gate-old").await.unwrap(),
            "a newer binding stays"
        );
        assert!(!locator.restore_node(1, DEFAULT_POOL, "node-old").await.unwrap());
        assert!(locator.restore_gate(2, "gate-a").await.unwrap());
        assert!(locator.restore_node(2, DEFAULT_POOL, "node-a").await.unwrap());
        assert_eq!(locator.locate_gate(1).await.unwrap().as_deref(), Some("gate-new"));
        assert_eq!(locator.locate_gate(2).await.unwrap().as_deref(), Some("gate-a"));
        assert_eq!(
            locator.locate_node(2, DEFAULT_POOL).await.unwrap().as_deref(),
            Some("node-a")
        );
        let seen: Vec<_> = std::iter::from_fn(|| events.try_recv().ok()).collect();
        assert_eq!(
            seen,
            vec![
                LocatorEvent::GateBound {
                    uid: 2,
                    gate_id: "gate-a".into()
                },
                LocatorEvent::NodeBound {
                    uid: 2,
                    pool: DEFAULT_POOL.into(),
                    node_id: "node-a".into()
                },
            ],
            "only real changes are announced"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn restore_all_retries_failures_a_bounded_number_of_times() {
        let calls = std::sync::Arc::new(Mutex::new(HashMap::<Uid, usize>::new()));
        let outcome = restore_all(vec![1, 2, 3, 4], |uid| {
            let calls = calls.clone();
            async move {
                let n = {
                    let mut calls = calls.lock();
                    let n = calls.entry(uid).or_default();
                    *n += 1;
                    *n
                };
                match uid {
                    1 => Ok(true),
                    2 => Ok(false),
                    3 if n < 3 => Err(LocatorError::Unavailable("down".into())),
                    3 => Ok(true),
                    _ => Err(LocatorError::Unavailable("down".into())),
                }
            }
        })
        .await;
        assert_eq!(
            outcome,
            Restored {
                restored: 2,
                present: 1,
                failed: 1
            }
        );
        let calls = calls.lock();
        assert_eq!((calls[&1], calls[&2], calls[&3]), (1, 1, 3));
        assert_eq!(calls[&4], RESTORE_ATTEMPTS);
    }
}

//! The players bound to this node (their stateful routes come here) and whether each one's connection is
//! live, which is how the node tells a player's reconnect from their first login.
//!
//! Pure bookkeeping under one lock: the locator writes and the gate notices around it live in
//! [`crate::outbound`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use switchyard_protocol::link::Uid;
use tokio::sync::watch;

/// Where a bound player was last seen connected.
#[derive(Debug, Clone)]
struct Presence {
    gate: Arc<str>,
    connected: bool,
}

/// uid → presence of every player bound here, players evicted at the drain deadline, and the count.
#[derive(Debug)]
pub(crate) struct Bindings {
    bound: Mutex<HashMap<Uid, Presence>>,
    /// Players this node evicted at its drain deadline: never bound here again.
    evicted: Mutex<HashSet<Uid>>,
    /// The bound-player count, for whoever reports it (metrics, pod annotations).
    count: watch::Sender<usize>,
}

impl Default for Bindings {
    fn default() -> Self {
        Bindings {
            bound: Mutex::default(),
            evicted: Mutex::default(),
            count: watch::Sender::new(0),
        }
    }
}

/// What a gate binding seen in the locator means for this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GateSeen {
    /// Not a player of this node, or the connection it already knows.
    Nothing,
    /// A player of this node logged in again (after a disconnect, or through another gate).
    Reconnected,
}

impl Bindings {
    pub(crate) fn is_evicted(&self, uid: Uid) -> bool {
        self.evicted.lock().contains(&uid)
    }

    pub(crate) fn contains(&self, uid: Uid) -> bool {
        self.bound.lock().contains_key(&uid)
    }

    pub(crate) fn len(&self) -> usize {
        self.bound.lock().len()
    }

    pub(crate) fn uids(&self) -> Vec<Uid> {
        self.bound.lock().keys().copied().collect()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// Binds `uid`, connected through `gate`; returns the new count.
    pub(crate) fn insert(&self, uid: Uid, gate: Arc<str>) -> usize {
        let mut bound = self.bound.lock();
        bound.insert(
            uid,
            Presence {
                gate,
                connected: true,
            },
        );
        self.publish(bound.len())
    }

    /// Unbinds `uid`; returns the new count.
    pub(crate) fn remove(&self, uid: Uid) -> usize {
        let mut bound = self.bound.lock();
        bound.remove(&uid);
        self.publish(bound.len())
    }

    /// Marks every bound player as evicted (never to be bound here again) and returns them; they stay
    /// bound until [`Bindings::remove_all`], so their packets in flight are still served.
    pub(crate) fn mark_evicted(&self) -> Vec<Uid> {
        let uids = self.uids();
        self.evicted.lock().extend(uids.iter().copied());
        uids
    }

    /// Unbinds `uids`; returns the new count.
    pub(crate) fn remove_all(&self, uids: &[Uid]) -> usize {
        let mut bound = self.bound.lock();
        for uid in uids {
            bound.remove(uid);
        }
        self.publish(bound.len())
    }

    /// The connection of `uid` through `gate` closed.
    pub(crate) fn disconnected(&self, uid: Uid, gate: &str) {
        if let Some(presence) = self.bound.lock().get_mut(&uid)
            && &*presence.gate == gate
        {
            presence.connected = false;
        }
    }

    /// The locator says `uid` is now connected through `gate`.
    pub(crate) fn gate_bound(&self, uid: Uid, gate: &str) -> GateSeen {
        let mut bound = self.bound.lock();
        let Some(presence) = bound.get_mut(&uid) else {
            return GateSeen::Nothing;
        };
        if presence.connected && &*presence.gate == gate {
            return GateSeen::Nothing;
        }
        *presence = Presence {
            gate: Arc::from(gate),
            connected: true,
        };
        GateSeen::Reconnected
    }

    fn publish(&self, count: usize) -> usize {
        self.count.send_replace(count);
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_login_is_not_a_reconnect_but_a_return_or_a_move_is() {
        let bindings = Bindings::default();
        assert_eq!(bindings.gate_bound(7, "g1"), GateSeen::Nothing, "not bound here");
        bindings.insert(7, Arc::from("g1"));
        // The login's own gate binding, seen after the node bound the player.
        assert_eq!(bindings.gate_bound(7, "g1"), GateSeen::Nothing);
        // Back after a disconnect, through the same gate.
        bindings.disconnected(7, "g1");
        assert_eq!(bindings.gate_bound(7, "g1"), GateSeen::Reconnected);
        assert_eq!(bindings.gate_bound(7, "g1"), GateSeen::Nothing, "told once");
        // Logged in through another gate while the old connection lived.
        assert_eq!(bindings.gate_bound(7, "g2"), GateSeen::Reconnected);
        // A disconnect reported by a gate the player left does not count.
        bindings.disconnected(7, "g1");
        assert_eq!(bindings.gate_bound(7, "g2"), GateSeen::Nothing);
    }

    #[test]
    fn evicted_players_are_remembered_and_the_count_follows() {
        let bindings = Bindings::default();
        let count = bindings.watch();
        bindings.insert(1, Arc::from("g"));
        bindings.insert(2, Arc::from("g"));
        assert_eq!(*count.borrow(), 2);
        let mut evicted = bindings.mark_evicted();
        evicted.sort_unstable();
        assert_eq!(evicted, [1, 2]);
        assert!(
            bindings.is_evicted(1) && bindings.contains(1),
            "still served until removed"
        );
        assert_eq!(bindings.remove_all(&evicted), 0);
        assert!(!bindings.contains(1));
        assert_eq!(*count.borrow(), 0);
    }
}

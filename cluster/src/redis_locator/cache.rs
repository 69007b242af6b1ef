//! The `locate_gate` cache: two generations, invalidated by events, trusted only while subscribed.

use std::collections::HashMap;

use parking_lot::Mutex;
use switchyard_protocol::link::Uid;

use super::EPOCH_SLOTS;

/// A cached `locate_gate` answer: the gate, or `None` for "not bound".
pub(super) type Cached = Option<String>;

/// Proof that no invalidation of a uid happened between a miss and the store of the answer read after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ticket {
    generation: u64,
    epoch: u64,
}

#[derive(Debug)]
pub(super) enum Lookup {
    Hit(Cached),
    Miss(Ticket),
    /// The subscription is down: the cache may be stale.
    Bypass,
    Disabled,
}

#[derive(Debug)]
pub(super) struct GateCache {
    /// Most entries of each generation; 0 when the cache is disabled.
    half: usize,
    pub(super) state: Mutex<CacheState>,
}

#[derive(Debug)]
pub(super) struct CacheState {
    /// Whether events are being received, so entries can be trusted.
    live: bool,
    /// Bumped whenever `live` changes.
    generation: u64,
    /// Invalidations per slot of uids.
    epochs: Box<[u64]>,
    pub(super) young: HashMap<Uid, Cached>,
    pub(super) old: HashMap<Uid, Cached>,
}

impl CacheState {
    /// Makes room in `young`, returning the dropped generation so it is freed outside the lock.
    pub(super) fn rotate_if_full(&mut self, half: usize) -> Option<HashMap<Uid, Cached>> {
        if self.young.len() >= half {
            let young = std::mem::take(&mut self.young);
            Some(std::mem::replace(&mut self.old, young))
        } else {
            None
        }
    }
}

pub(super) fn epoch_slot(uid: Uid) -> usize {
    // Fibonacci hashing: the top bits of uid × 2^64/φ.
    let hash = u64::from_ne_bytes(uid.to_ne_bytes()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    usize::try_from(hash >> (64 - EPOCH_SLOTS.trailing_zeros())).unwrap_or(0) % EPOCH_SLOTS
}

impl GateCache {
    pub(super) fn new(capacity: usize) -> Self {
        GateCache {
            half: capacity.div_ceil(2),
            state: Mutex::new(CacheState {
                live: false,
                generation: 0,
                epochs: vec![0; EPOCH_SLOTS].into_boxed_slice(),
                young: HashMap::new(),
                old: HashMap::new(),
            }),
        }
    }

    pub(super) fn lookup(&self, uid: Uid) -> Lookup {
        if self.half == 0 {
            return Lookup::Disabled;
        }
        let mut state = self.state.lock();
        if !state.live {
            return Lookup::Bypass;
        }
        if let Some(cached) = state.young.get(&uid) {
            return Lookup::Hit(cached.clone());
        }
        if let Some(cached) = state.old.remove(&uid) {
            let dropped = state.rotate_if_full(self.half);
            state.young.insert(uid, cached.clone());
            drop(state);
            drop(dropped);
            return Lookup::Hit(cached);
        }
        Lookup::Miss(Ticket {
            generation: state.generation,
            epoch: state.epochs[epoch_slot(uid)],
        })
    }

    /// Stores an answer read after a [`Lookup::Miss`], unless the uid was invalidated meanwhile.
    pub(super) fn store(&self, uid: Uid, cached: Cached, ticket: Ticket) {
        let mut state = self.state.lock();
        let current = Ticket {
            generation: state.generation,
            epoch: state.epochs[epoch_slot(uid)],
        };
        if !state.live || current != ticket {
            return;
        }
        state.old.remove(&uid);
        let dropped = state.rotate_if_full(self.half);
        state.young.insert(uid, cached);
        drop(state);
        drop(dropped);
    }

    pub(super) fn invalidate(&self, uid: Uid) {
        if self.half == 0 {
            return;
        }
        let mut state = self.state.lock();
        let slot = epoch_slot(uid);
        state.epochs[slot] = state.epochs[slot].wrapping_add(1);
        state.young.remove(&uid);
        state.old.remove(&uid);
    }

    /// Starts or stops serving; either way everything cached so far is forgotten.
    pub(super) fn set_live(&self, live: bool) {
        let mut state = self.state.lock();
        state.live = live;
        state.generation = state.generation.wrapping_add(1);
        let young = std::mem::take(&mut state.young);
        let old = std::mem::take(&mut state.old);
        drop(state);
        drop((young, old));
    }
}

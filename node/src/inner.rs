//! The parts of a node that its links, lanes and public handle share (including the table of per-connection
//! lanes); below all of them.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use futures_util::FutureExt as _;
use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use switchyard_cluster::admin::Readiness;
use switchyard_protocol::link::{ConnectionId, NodeState, Uid};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::Incoming;
use crate::metrics::{HookLabels, NodeMetrics};
use crate::outbound::Outbound;
use crate::router::{Disconnect, Hook, Route, Routes};

#[derive(Debug)]
pub(crate) struct NodeInner {
    pub(crate) outbound: Outbound,
    pub(crate) routes: Routes,
    pub(crate) state: watch::Sender<NodeState>,
    pub(crate) lanes: Lanes,
    /// Packets accepted and not yet handled: a drain waits for them.
    pub(crate) in_flight: AtomicUsize,
    pub(crate) next_link: AtomicU64,
    /// Calls from other nodes this node may run at once.
    pub(crate) call_slots: Arc<Semaphore>,
    pub(crate) readiness: Readiness,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

impl NodeInner {
    pub(crate) fn id(&self) -> &str {
        self.outbound.node_id()
    }

    pub(crate) fn metrics(&self) -> &NodeMetrics {
        &self.outbound.shared.metrics
    }

    /// Runs a game hook to its end; a panic is caught, logged and counted, never fatal to the node.
    pub(crate) async fn run_hook<E>(&self, name: &'static str, hook: &Hook<E>, event: E) {
        if AssertUnwindSafe(hook(event)).catch_unwind().await.is_err() {
            tracing::error!(node = %self.id(), hook = name, "game hook panicked");
            self.metrics()
                .hook_panics
                .get_or_create(&HookLabels { hook: name })
                .inc();
        }
    }
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("routes", &self.specs().len())
            .finish_non_exhaustive()
    }
}

/// The lanes of every connection that reached this node, by (link serial, connection id), and how many each
/// link holds (for [`crate::NodeConfig::max_lanes_per_link`]).
#[derive(Debug, Default)]
pub(crate) struct Lanes {
    table: Mutex<LaneTable>,
}

#[derive(Debug, Default)]
pub(crate) struct LaneTable {
    lanes: HashMap<(u64, ConnectionId), Lane>,
    per_link: HashMap<u64, usize>,
    /// Lanes open, exported as `switchyard_node_lanes`.
    open: Gauge,
}

#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) tx: mpsc::Sender<LaneItem>,
    pub(crate) uid: Uid,
    /// Payload bytes queued and not yet handled.
    pub(crate) queued: Arc<AtomicUsize>,
    /// The same, summed over every lane of the lane's link.
    pub(crate) link_queued: Arc<AtomicUsize>,
}

pub(crate) enum LaneItem {
    Packet(Incoming, Arc<Route>),
    Disconnected(Disconnect),
}

impl LaneTable {
    pub(crate) fn get_mut(&mut self, key: &(u64, ConnectionId)) -> Option<&mut Lane> {
        self.lanes.get_mut(key)
    }

    /// Lanes link `serial` holds.
    pub(crate) fn of_link(&self, serial: u64) -> usize {
        self.per_link.get(&serial).copied().unwrap_or(0)
    }

    pub(crate) fn insert(&mut self, key: (u64, ConnectionId), lane: Lane) {
        if self.lanes.insert(key, lane).is_none() {
            *self.per_link.entry(key.0).or_default() += 1;
            self.open.inc();
        }
    }

    pub(crate) fn remove(&mut self, key: &(u64, ConnectionId)) -> Option<Lane> {
        let lane = self.lanes.remove(key)?;
        self.open.dec();
        if let Some(count) = self.per_link.get_mut(&key.0) {
            *count -= 1;
            if *count == 0 {
                self.per_link.remove(&key.0);
            }
        }
        Some(lane)
    }
}

impl Lanes {
    /// An empty table that keeps `open` at the number of lanes.
    pub(crate) fn new(open: Gauge) -> Self {
        Lanes {
            table: Mutex::new(LaneTable {
                open,
                ..LaneTable::default()
            }),
        }
    }

    /// Ends the lane of `cid` on link `serial` with `event` (its hook runs after the lane's packets).
    /// Returns `event` back when the connection has no lane.
    pub(crate) fn end(&self, serial: u64, cid: ConnectionId, event: Disconnect) -> Option<Disconnect> {
        let lane = self.table.lock().remove(&(serial, cid));
        match lane {
            Some(lane) => match lane.tx.try_send(LaneItem::Disconnected(event)) {
                Ok(()) => None,
                // A full lane ends when its sender drops; the hook then runs outside it.
                Err(mpsc::error::TrySendError::Full(LaneItem::Disconnected(event)))
                | Err(mpsc::error::TrySendError::Closed(LaneItem::Disconnected(event))) => Some(event),
                Err(_) => None,
            },
            None => Some(event),
        }
    }

    /// Removes every lane of link `serial`, returning each connection and the uid it was bound to.
    pub(crate) fn end_link(&self, serial: u64) -> Vec<(ConnectionId, Uid, mpsc::Sender<LaneItem>)> {
        let mut table = self.table.lock();
        let keys: Vec<_> = table
            .lanes
            .keys()
            .filter(|(s, _)| *s == serial)
            .copied()
            .collect();
        keys.into_iter()
            .filter_map(|key| table.remove(&key).map(|lane| (key.1, lane.uid, lane.tx)))
            .collect()
    }

    pub(crate) fn clear(&self) {
        let mut table = self.table.lock();
        table.lanes.clear();
        table.per_link.clear();
        table.open.set(0);
    }

    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, LaneTable> {
        self.table.lock()
    }
}

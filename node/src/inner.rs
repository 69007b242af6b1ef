//! The parts of a node that its links, lanes and public handle share (including the table of per-connection
//! lanes); below all of them.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use futures_util::FutureExt as _;
use parking_lot::Mutex;
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

/// The lanes of every connection that reached this node, by (link serial, connection id).
#[derive(Debug, Default)]
pub(crate) struct Lanes {
    map: Mutex<HashMap<(u64, ConnectionId), Lane>>,
}

#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) tx: mpsc::Sender<LaneItem>,
    pub(crate) uid: Uid,
    /// Payload bytes queued and not yet handled.
    pub(crate) queued: Arc<AtomicUsize>,
}

pub(crate) enum LaneItem {
    Packet(Incoming, Arc<Route>),
    Disconnected(Disconnect),
}

impl Lanes {
    /// Ends the lane of `cid` on link `serial` with `event` (its hook runs after the lane's packets).
    /// Returns `event` back when the connection has no lane.
    pub(crate) fn end(&self, serial: u64, cid: ConnectionId, event: Disconnect) -> Option<Disconnect> {
        let lane = self.map.lock().remove(&(serial, cid));
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
        let mut lanes = self.map.lock();
        let keys: Vec<_> = lanes.keys().filter(|(s, _)| *s == serial).copied().collect();
        keys.into_iter()
            .filter_map(|key| lanes.remove(&key).map(|lane| (key.1, lane.uid, lane.tx)))
            .collect()
    }

    pub(crate) fn clear(&self) {
        self.map.lock().clear();
    }

    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<(u64, ConnectionId), Lane>> {
        self.map.lock()
    }
}

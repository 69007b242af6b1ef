//! The gate's state that every stage shares: the handle ([`Gate`]) and what it points to ([`GateInner`]):
//! config, sessions, node table, locator, metrics, and the signals and tasks of a running gate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use switchyard_cluster::admin::Readiness;
use switchyard_cluster::locator::Locator;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::calls::CallTable;
use crate::config::GateConfig;
use crate::metrics::GateMetrics;
use crate::nodes::NodeTable;
use crate::session::SessionTable;

/// A running gate. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gate {
    pub(crate) inner: Arc<GateInner>,
}

#[derive(Debug)]
pub(crate) struct GateInner {
    pub(crate) config: GateConfig,
    pub(crate) sessions: SessionTable,
    pub(crate) nodes: NodeTable,
    pub(crate) locator: Arc<dyn Locator>,
    pub(crate) metrics: GateMetrics,
    /// Node-to-node calls in flight through this gate.
    pub(crate) calls: CallTable,
    pub(crate) next_cid: AtomicU64,
    pub(crate) routing_turn: AtomicUsize,
    pub(crate) connection_slots: Arc<Semaphore>,
    /// Live connections per source address (`max_connections_per_ip`).
    pub(crate) per_ip: Arc<crate::per_ip::PerIpLimit>,
    pub(crate) readiness: Readiness,
    /// Cancelled when the gate stops accepting clients (drain or shutdown).
    pub(crate) accepting: CancellationToken,
    /// Cancelled when everything must stop.
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

impl Gate {
    pub(crate) fn heartbeat_packet(&self, extcode: u8) -> Bytes {
        let config = &self.inner.config;
        let time = config.heartbeat_time.then(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_nanos() as i64)
        });
        config.packet.heartbeat_packet(extcode, time)
    }
}

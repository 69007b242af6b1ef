//! The parts of a node that its links, lanes and public handle share; below all of them.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use futures_util::FutureExt as _;
use switchyard_cluster::admin::Readiness;
use switchyard_protocol::link::NodeState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::lanes::Lanes;
use crate::metrics::{HookLabels, NodeMetrics};
use crate::outbound::Outbound;
use crate::router::{Hook, Routes};

#[derive(Debug)]
pub(crate) struct NodeInner {
    pub(crate) outbound: Outbound,
    pub(crate) routes: Routes,
    pub(crate) state: watch::Sender<NodeState>,
    pub(crate) lanes: Lanes,
    /// Packets accepted and not yet handled: a drain waits for them.
    pub(crate) in_flight: AtomicUsize,
    pub(crate) next_link: AtomicU64,
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

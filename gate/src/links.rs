//! The gate's links to nodes: one task per node address the registry lists, which connects, shakes hands,
//! applies the node's messages, and reconnects with jittered backoff when the link drops. A node whose
//! link is down is out of the routing snapshot, so no packet waits on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use switchyard_cluster::link::{Connector, GateLink};
use switchyard_cluster::locator::DEFAULT_POOL;
use switchyard_cluster::registry::NodeEndpoint;
use switchyard_protocol::link::{GateToNode, NodeToGate, feature};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::control::ControlQueue;
use crate::downlink::LinkContext;
use crate::nodes::NodeHandle;
use crate::shared::Gate;

/// How long a node has to answer the gate's hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The longest pause between tries to a node this gate has never linked, for its first
/// [`FIRST_LINK_EAGER_TRIES`] tries. A new node is listed by the registry before it listens (it waits for
/// Redis first), and it may take players as soon as it is ready: a gate still backing off then would route
/// its players' packets for that node elsewhere (it does not know the node yet). Every gate should link a
/// new node before the kubelet marks it ready.
const FIRST_LINK_BACKOFF_MAX: Duration = Duration::from_millis(200);
/// About 10 s of eager tries; a node that has not come up by then gets the normal backoff.
const FIRST_LINK_EAGER_TRIES: u32 = 50;

/// Counts the nodes of the registry's first list whose first link attempt is still running; the gate
/// becomes ready when it reaches zero, so no client lands on a gate that cannot reach any node yet (and no
/// player is re-homed because this gate has not linked their node yet).
#[derive(Debug)]
struct FirstSync {
    gate: Gate,
    remaining: AtomicUsize,
}

impl FirstSync {
    fn start(gate: Gate, nodes: usize) -> Option<Arc<FirstSync>> {
        if nodes == 0 {
            gate.first_sync_done();
            return None;
        }
        Some(Arc::new(FirstSync {
            gate,
            remaining: AtomicUsize::new(nodes),
        }))
    }

    /// One node's first attempt ended (linked or failed).
    fn attempted(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.gate.first_sync_done();
        }
    }
}

/// One node's share of the [`FirstSync`]: its first attempt counts as ended when this drops (linked,
/// failed, or the link task stopped before trying).
#[derive(Debug)]
struct FirstAttempt(Arc<FirstSync>);

impl Drop for FirstAttempt {
    fn drop(&mut self) {
        self.0.attempted();
    }
}

/// Follows the registry: starts a link task for every new address, stops the ones that disappeared.
pub(crate) async fn maintain_links(
    gate: Gate,
    mut nodes: watch::Receiver<Vec<NodeEndpoint>>,
    connector: Arc<dyn Connector>,
) {
    let shutdown = gate.inner.shutdown.clone();
    let mut running: HashMap<String, CancellationToken> = HashMap::new();
    let mut first_sync = None;
    let mut synced = false;
    loop {
        let endpoints = nodes.borrow_and_update().clone();
        gate.registry_accepting(&endpoints);
        if !std::mem::replace(&mut synced, true) {
            first_sync = FirstSync::start(gate.clone(), endpoints.len());
        }
        running.retain(|address, stop| {
            let present = endpoints.iter().any(|endpoint| &endpoint.address == address);
            if !present {
                tracing::info!(%address, "node left the registry; closing its link");
                stop.cancel();
            }
            present
        });
        for endpoint in &endpoints {
            if !running.contains_key(&endpoint.address) {
                let stop = shutdown.child_token();
                running.insert(endpoint.address.clone(), stop.clone());
                let task = keep_link(
                    gate.clone(),
                    endpoint.address.clone(),
                    connector.clone(),
                    stop,
                    first_sync.clone().map(FirstAttempt),
                );
                gate.inner.tasks.spawn(task);
            }
        }
        // Only the first list's nodes hold readiness back.
        first_sync = None;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = nodes.changed() => if changed.is_err() { return },
        }
    }
}

/// Keeps one link to `address` open until `stop`.
async fn keep_link(
    gate: Gate,
    address: String,
    connector: Arc<dyn Connector>,
    stop: CancellationToken,
    mut first_attempt: Option<FirstAttempt>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u32;
    let mut was_up = false;
    while !stop.is_cancelled() {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            connected = connector.connect(&address) => connected,
        };
        match connected {
            Ok(link) => match run_link(&gate, &address, link, &stop, &mut was_up, &mut first_attempt).await {
                Ok(()) => {
                    backoff = BACKOFF_MIN;
                    failures = 0;
                }
                Err(reason) => {
                    gate.inner.metrics.node_link_failures.inc();
                    log_failure(&address, &reason, failures);
                    failures += 1;
                }
            },
            Err(error) => {
                gate.inner.metrics.node_link_failures.inc();
                log_failure(&address, &error.to_string(), failures);
                failures += 1;
            }
        }
        first_attempt = None;
        let jitter = rand::rng().random_range(0.5..1.5);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
        }
        backoff = next_backoff(backoff, was_up, failures);
    }
}

/// The pause after `backoff` (before jitter): doubling up to [`BACKOFF_MAX`], or up to
/// [`FIRST_LINK_BACKOFF_MAX`] while a node that never linked is in its first tries.
fn next_backoff(backoff: Duration, was_up: bool, failures: u32) -> Duration {
    let max = if !was_up && failures < FIRST_LINK_EAGER_TRIES {
        FIRST_LINK_BACKOFF_MAX
    } else {
        BACKOFF_MAX
    };
    (backoff * 2).min(max)
}

/// Logs the first failure of a streak loudly and the rest quietly.
fn log_failure(address: &str, reason: &str, failures_before: u32) {
    if failures_before == 0 {
        tracing::warn!(%address, %reason, "node link failed; retrying with backoff");
    } else {
        tracing::debug!(%address, %reason, failures = failures_before + 1, "node link still failing");
    }
}

/// Runs one link: hello both ways, then the node's messages until the link or the gate ends.
/// Returns `Ok` when the link ran and ended, `Err` when it never came up.
async fn run_link(
    gate: &Gate,
    address: &str,
    link: GateLink,
    stop: &CancellationToken,
    was_up: &mut bool,
    first_attempt: &mut Option<FirstAttempt>,
) -> Result<(), String> {
    let GateLink { tx, mut rx } = link;
    tx.send(GateToNode::Hello {
        gate_id: gate.id().to_owned(),
        features: feature::ALL,
    })
    .await
    .map_err(|_| "link closed before the hello".to_owned())?;
    let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, rx.recv())
        .await
        .map_err(|_| format!("no hello within {HANDSHAKE_TIMEOUT:?}"))?;
    let Some(NodeToGate::Hello {
        node_id,
        state,
        routes,
        pool,
    }) = hello
    else {
        return Err(format!("expected a hello, got {hello:?}"));
    };
    let pool: Arc<str> = Arc::from(pool.as_deref().unwrap_or(DEFAULT_POOL));
    // The control queue's task ends with this link (or the gate).
    let link_ended = stop.child_token();
    let _end_control = link_ended.clone().drop_guard();
    let node = Arc::new(NodeHandle {
        id: Arc::from(node_id.as_str()),
        pool: pool.clone(),
        address: address.to_owned(),
        tx: tx.clone(),
        control: ControlQueue::start(tx.clone(), &gate.inner.tasks, link_ended),
        bound: AtomicUsize::new(0),
    });
    tracing::info!(%address, node = %node_id, %pool, %state, routes = routes.len(), "node linked");
    gate.inner.nodes.insert(node.clone(), state, routes);
    gate.inner.metrics.node_links.inc();
    *first_attempt = None;
    if std::mem::replace(was_up, true) {
        gate.inner.metrics.node_link_reconnects.inc();
    }
    let context = LinkContext {
        node: node.clone(),
        tx,
    };
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            message = rx.recv() => message,
        };
        match message {
            Some(message) => gate.on_node_message(&context, message),
            None => {
                tracing::warn!(%address, node = %node_id, "node link closed");
                break;
            }
        }
    }
    gate.inner.metrics.node_links.dec();
    gate.fail_calls_to(&node);
    if stop.is_cancelled() {
        // The registry dropped the node (or the gate stops): it is gone.
        gate.inner.nodes.remove(&node);
    } else {
        // Only the link dropped: the node keeps its players for a grace period, in case it comes back.
        gate.inner.nodes.unlink(&node);
        let gate = gate.clone();
        gate.inner.tasks.clone().spawn(async move {
            tokio::select! {
                _ = gate.inner.shutdown.cancelled() => {}
                _ = tokio::time::sleep(gate.inner.config.node_link_grace) => gate.inner.nodes.expire(&node),
            }
        });
    }
    Ok(())
}

impl Gate {
    /// The first registry list was seen and each of its nodes linked or failed once: ready, unless the gate
    /// drains already.
    pub(crate) fn first_sync_done(&self) {
        if !self.inner.accepting.is_cancelled() {
            self.inner.readiness.set(true);
            tracing::info!(gate = %self.inner.config.id, nodes = self.inner.nodes.len(), "registry synced and nodes linked; ready");
        }
    }

    /// Applies the registry's readiness of every node address.
    pub(crate) fn registry_accepting(&self, nodes: &[NodeEndpoint]) {
        let accepting: HashMap<String, bool> = nodes
            .iter()
            .map(|node| (node.address.clone(), node.accepting))
            .collect();
        self.inner.nodes.set_accepting(accepting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_never_linked_is_retried_eagerly_then_with_the_normal_backoff() {
        let mut backoff = BACKOFF_MIN;
        for failures in 1..FIRST_LINK_EAGER_TRIES {
            backoff = next_backoff(backoff, false, failures);
            assert!(backoff <= FIRST_LINK_BACKOFF_MAX, "try {failures}: {backoff:?}");
        }
        assert_eq!(backoff, FIRST_LINK_BACKOFF_MAX);
        for failures in FIRST_LINK_EAGER_TRIES..FIRST_LINK_EAGER_TRIES + 10 {
            backoff = next_backoff(backoff, false, failures);
        }
        assert_eq!(backoff, BACKOFF_MAX, "past the eager tries");
        // A node that was linked before backs off normally at once.
        let mut backoff = BACKOFF_MIN;
        for failures in 1..10 {
            backoff = next_backoff(backoff, true, failures);
        }
        assert_eq!(backoff, BACKOFF_MAX);
    }
}

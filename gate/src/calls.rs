//! Node-to-node calls relayed by the gate: a node's `Call` goes to the node the snapshot picks (any node of
//! a pool by the routing policy, or a named node), under a call id of the gate's own; the callee's
//! `CallReply` goes back to the caller under the caller's id. The gate answers itself when the call cannot
//! be delivered (no node, unknown route, a full link, too many calls in flight) or when the callee's link
//! ends first.
//!
//! The table of calls in flight is bounded: a node that floods calls, or a callee that never answers, costs
//! at most [`MAX_PENDING_CALLS`] entries, and entries older than [`MAX_CALL_AGE`] are swept.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use switchyard_cluster::link::LinkSender;
use switchyard_protocol::link::{CallId, CallStatus, CallTarget, GateToNode, TraceParent, Uid};
use tokio::time::Instant;

use crate::metrics::CallOutcome;
use crate::nodes::{NoCallee, NodeHandle};
use crate::shared::Gate;

/// Calls in flight through one gate, at most.
pub(crate) const MAX_PENDING_CALLS: usize = 65_536;
/// A call the callee has not answered after this long is forgotten (callers time out well before).
pub(crate) const MAX_CALL_AGE: Duration = Duration::from_secs(120);

/// One call waiting for its callee's reply.
#[derive(Debug)]
struct PendingCall {
    caller: LinkSender<GateToNode>,
    caller_call: CallId,
    callee: Arc<NodeHandle>,
    sent: Instant,
}

/// The calls in flight through this gate.
#[derive(Debug, Default)]
pub(crate) struct CallTable {
    pending: Mutex<HashMap<CallId, PendingCall>>,
    next: AtomicU64,
}

/// A call as a node sent it to the gate.
#[derive(Debug)]
pub(crate) struct OutgoingCall {
    pub(crate) call: CallId,
    pub(crate) target: CallTarget,
    pub(crate) route: i32,
    pub(crate) uid: Uid,
    pub(crate) oneway: bool,
    pub(crate) body: Bytes,
    pub(crate) trace: Option<TraceParent>,
}

impl Gate {
    /// Relays a call from the node on `caller` (whose link sends on `reply_to`).
    pub(crate) fn relay_call(
        &self,
        caller: &NodeHandle,
        reply_to: &LinkSender<GateToNode>,
        call: OutgoingCall,
    ) {
        let inner = &self.inner;
        let snapshot = inner.nodes.snapshot();
        let callee = match snapshot.callee(&call.target, call.route, &inner.config, &inner.routing_turn) {
            Ok(callee) => callee,
            Err(why) => {
                let status = match why {
                    NoCallee::NoNode => CallStatus::NoNode,
                    NoCallee::UnknownRoute => CallStatus::UnknownRoute,
                };
                tracing::debug!(caller = %caller.id, target = ?call.target, route = call.route, ?status, "call has no callee");
                self.answer_call(reply_to, call.call, call.oneway, status);
                return;
            }
        };
        let relayed_id = inner.calls.next.fetch_add(1, Ordering::Relaxed);
        if !call.oneway {
            let mut pending = inner.calls.pending.lock();
            if pending.len() >= MAX_PENDING_CALLS {
                drop(pending);
                tracing::warn!(caller = %caller.id, "call table full; call refused");
                self.answer_call(reply_to, call.call, false, CallStatus::Overloaded);
                return;
            }
            pending.insert(
                relayed_id,
                PendingCall {
                    caller: reply_to.clone(),
                    caller_call: call.call,
                    callee: callee.clone(),
                    sent: Instant::now(),
                },
            );
            inner.metrics.calls_in_flight.set(pending.len() as i64);
        }
        let message = GateToNode::Call {
            call: relayed_id,
            from: caller.id.to_string(),
            route: call.route,
            uid: call.uid,
            oneway: call.oneway,
            body: call.body,
            trace: call.trace,
        };
        if callee.tx.try_send(message).is_err() {
            // A full or closed link: the callee cannot take it now.
            let waiting = inner.calls.pending.lock().remove(&relayed_id);
            let status = if callee.tx.is_closed() {
                CallStatus::NodeGone
            } else {
                CallStatus::Overloaded
            };
            if waiting.is_some() || call.oneway {
                self.answer_call(reply_to, call.call, call.oneway, status);
            }
        } else if call.oneway {
            inner.metrics.call(CallOutcome::Ok);
        }
    }

    /// Relays a callee's reply to its caller.
    pub(crate) fn relay_call_reply(
        &self,
        callee: &NodeHandle,
        call: CallId,
        status: CallStatus,
        body: Bytes,
    ) {
        let inner = &self.inner;
        let waiting = {
            let mut pending = inner.calls.pending.lock();
            let waiting = pending
                .get(&call)
                .is_some_and(|waiting| waiting.callee.id == callee.id)
                .then(|| pending.remove(&call))
                .flatten();
            inner.metrics.calls_in_flight.set(pending.len() as i64);
            waiting
        };
        let Some(waiting) = waiting else {
            tracing::debug!(node = %callee.id, call, "reply to a call that is not waiting (swept, or not this node's)");
            return;
        };
        inner.metrics.call(CallOutcome::from(status));
        let reply = GateToNode::CallReply {
            call: waiting.caller_call,
            status,
            body,
        };
        if waiting.caller.try_send(reply).is_err() {
            inner.metrics.call(CallOutcome::ReplyDropped);
        }
    }

    /// The gate's own answer to a call it could not deliver (none for a one-way call, which is only counted).
    fn answer_call(&self, reply_to: &LinkSender<GateToNode>, call: CallId, oneway: bool, status: CallStatus) {
        self.inner.metrics.call(CallOutcome::from(status));
        if oneway {
            return;
        }
        let reply = GateToNode::CallReply {
            call,
            status,
            body: Bytes::new(),
        };
        if reply_to.try_send(reply).is_err() {
            self.inner.metrics.call(CallOutcome::ReplyDropped);
        }
    }

    /// The link to `callee` ended: its calls in flight fail with `node gone`.
    pub(crate) fn fail_calls_to(&self, callee: &Arc<NodeHandle>) {
        self.fail_calls(
            |waiting| Arc::ptr_eq(&waiting.callee, callee),
            CallStatus::NodeGone,
        );
    }

    /// Forgets calls older than [`MAX_CALL_AGE`]; their callers have given up long ago.
    pub(crate) fn sweep_calls(&self) {
        let now = Instant::now();
        self.fail_calls(
            |waiting| now.duration_since(waiting.sent) > MAX_CALL_AGE,
            CallStatus::NodeGone,
        );
    }

    fn fail_calls(&self, matches: impl Fn(&PendingCall) -> bool, status: CallStatus) {
        let failed: Vec<PendingCall> = {
            let mut pending = self.inner.calls.pending.lock();
            let ids: Vec<CallId> = pending
                .iter()
                .filter(|(_, waiting)| matches(waiting))
                .map(|(id, _)| *id)
                .collect();
            let failed = ids.iter().filter_map(|id| pending.remove(id)).collect();
            self.inner.metrics.calls_in_flight.set(pending.len() as i64);
            failed
        };
        for waiting in failed {
            self.answer_call(&waiting.caller, waiting.caller_call, false, status);
        }
    }

    /// Sweeps stale calls now and then, until shutdown.
    pub(crate) fn spawn_call_sweeper(&self) {
        let gate = self.clone();
        self.inner.tasks.spawn(async move {
            let mut every = tokio::time::interval(MAX_CALL_AGE / 4);
            loop {
                tokio::select! {
                    _ = gate.inner.shutdown.cancelled() => return,
                    _ = every.tick() => gate.sweep_calls(),
                }
            }
        });
    }
}

//! What nodes send to the gate: deliveries to sessions, bind and unbind requests (acknowledged),
//! node bindings (per pool), disconnects and state changes, applied to the sessions they target; and
//! node-to-node calls and their replies, relayed by [`crate::calls`].

use std::sync::Arc;

use switchyard_cluster::link::LinkSender;
use switchyard_cluster::telemetry;
use switchyard_protocol::link::{GateToNode, NodeToGate, Target, TraceParent};

use crate::calls::OutgoingCall;
use crate::metrics::CloseReason;
use crate::nodes::NodeHandle;
use crate::session::Session;
use crate::shared::Gate;

/// What a link's message handler needs to know about the link.
#[derive(Debug)]
pub(crate) struct LinkContext {
    pub(crate) node: Arc<NodeHandle>,
    pub(crate) tx: LinkSender<GateToNode>,
}

impl Gate {
    /// Applies one message a node sent on its link.
    pub(crate) fn on_node_message(&self, link: &LinkContext, message: NodeToGate) {
        let inner = &self.inner;
        match message {
            NodeToGate::Deliver {
                target,
                packet,
                trace,
            } => {
                // Only a traced handler's answers and pushes carry a trace: the node never sends one when
                // tracing is off, and this is then the only cost.
                let span = trace.map(|parent| self.deliver_span(&target, parent));
                let _entered = span.as_ref().map(tracing::Span::enter);
                if let Target::Connection(cid) = target
                    && let Some(seq) = inner.config.packet.peek_seq(&packet)
                    && let Some(took) = inner
                        .sessions
                        .get(cid)
                        .and_then(|session| session.response_seen(seq))
                {
                    inner.metrics.request_duration.0.observe(took.as_secs_f64());
                }
                let push = !matches!(target, Target::Connection(_));
                let delivered = self.for_each_target(&target, |session| session.send(packet.clone()));
                if push {
                    inner.metrics.pushes_delivered.inc_by(delivered);
                }
                if let Some(span) = &span {
                    span.record("delivered", delivered);
                }
            }
            NodeToGate::BindUser { request, cid, uid } => {
                let result = inner.sessions.bind(cid, uid).map(|_| ());
                let session = result.is_ok().then(|| inner.sessions.get(cid)).flatten();
                let ack = GateToNode::Ack { request, result };
                match session {
                    // The binding is recorded in the locator first (I/O), then acknowledged.
                    Some(session) => {
                        let (gate, node) = (self.clone(), link.node.clone());
                        inner.tasks.spawn(async move {
                            gate.load_binding(&session, uid).await;
                            gate.send_control(&node, ack);
                        });
                    }
                    None => self.send_control(&link.node, ack),
                }
            }
            NodeToGate::UnbindUser { request, uid } => {
                let Some(session) = inner.sessions.unbind(uid) else {
                    let result = Err(switchyard_protocol::link::AckError::UnknownUser);
                    self.send_control(&link.node, GateToNode::Ack { request, result });
                    return;
                };
                self.release_all_nodes(&session);
                // The locator's binding is released first (I/O), then the unbind acknowledged.
                let (gate, node) = (self.clone(), link.node.clone());
                inner.tasks.spawn(async move {
                    gate.release_gate_binding(uid).await;
                    gate.send_control(
                        &node,
                        GateToNode::Ack {
                            request,
                            result: Ok(()),
                        },
                    );
                });
            }
            NodeToGate::UserNode { uid, node_id, pool } => {
                if let Some(session) = inner.sessions.by_uid(uid) {
                    let pool = Gate::binding_pool(pool, &link.node.pool);
                    self.set_session_node(&session, &pool, node_id.map(Arc::from));
                }
            }
            NodeToGate::Call {
                call,
                target,
                route,
                uid,
                oneway,
                body,
                trace,
            } => self.relay_call(
                &link.node,
                &link.tx,
                OutgoingCall {
                    call,
                    target,
                    route,
                    uid,
                    oneway,
                    body,
                    trace,
                },
            ),
            NodeToGate::CallReply { call, status, body } => {
                self.relay_call_reply(&link.node, call, status, body)
            }
            NodeToGate::Disconnect { target } => {
                self.for_each_target(&target, |session| {
                    session.close_after_queued(CloseReason::Kicked);
                    true
                });
            }
            NodeToGate::State(state) => {
                tracing::info!(node = %link.node.id, %state, "node state changed");
                inner.nodes.set_state(&link.node, state);
            }
            NodeToGate::Hello { .. } => {
                tracing::warn!(node = %link.node.id, "node sent a second hello; ignored");
            }
            NodeToGate::Heartbeat => {}
        }
    }

    /// The span of a traced delivery, continuing the trace of the node's span that sent it.
    pub(crate) fn deliver_span(&self, target: &Target, parent: TraceParent) -> tracing::Span {
        let kind = match target {
            Target::Connection(_) => "response",
            Target::User(_) | Target::Users(_) => "push",
            Target::Broadcast => "broadcast",
        };
        let span = tracing::info_span!(
            target: telemetry::SPAN_TARGET,
            parent: None,
            "gate.deliver",
            kind,
            delivered = tracing::field::Empty,
        );
        telemetry::continue_trace(&span, parent);
        span
    }

    /// Runs `apply` on every session `target` names on this gate; returns how many it accepted.
    pub(crate) fn for_each_target(&self, target: &Target, mut apply: impl FnMut(&Session) -> bool) -> u64 {
        let sessions = &self.inner.sessions;
        let mut count = 0;
        let mut one = |session: Option<Arc<Session>>| {
            if let Some(session) = session {
                count += u64::from(apply(&session));
            }
        };
        match target {
            Target::Connection(cid) => one(sessions.get(*cid)),
            Target::User(uid) => one(sessions.by_uid(*uid)),
            Target::Users(uids) => uids.iter().for_each(|uid| one(sessions.by_uid(*uid))),
            Target::Broadcast => sessions.all().into_iter().for_each(|session| one(Some(session))),
        }
        count
    }
}

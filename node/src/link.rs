//! One gate link, from hello to close: the node's receiving side. Client packets are checked against the
//! route table (the node enforces route flags itself, whatever the gate did) and queued on their
//! connection's lane; session events and acknowledgements go where they belong.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchyard_cluster::link::NodeLink;
use switchyard_cluster::telemetry;
use switchyard_protocol::link::{ConnectionId, GateToNode, NO_UID, NodeToGate, TraceParent, Uid};
use switchyard_protocol::{DataFrame, Frame};

use crate::calls::{self, IncomingCall};
use crate::context::Incoming;
use crate::inner::LaneItem;
use crate::inner::NodeInner;
use crate::lanes;
use crate::metrics::NodeDrop;
use crate::outbound::GateConn;
use crate::router::Disconnect;

/// How long a gate has to say hello on a new link.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn run_gate_link(inner: Arc<NodeInner>, link: NodeLink) {
    let NodeLink { tx, mut rx } = link;
    let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, rx.recv()).await;
    let (gate_id, features) = match hello {
        Ok(Some(GateToNode::Hello { gate_id, features })) => (gate_id, features),
        other => {
            tracing::warn!(?other, "gate link without a hello; closed");
            return;
        }
    };
    // Subscribe before reading the state for the hello, so no change can fall between the two.
    let mut state = inner.state.subscribe();
    let current = *state.borrow_and_update();
    let hello = NodeToGate::Hello {
        node_id: inner.id().to_owned(),
        state: current,
        routes: inner.routes.specs(),
        pool: Some(inner.outbound.pool().to_owned()),
    };
    if tx.send(hello).await.is_err() {
        return;
    }
    let conn = Arc::new(GateConn::new(
        Arc::from(gate_id.as_str()),
        inner.next_link.fetch_add(1, Ordering::Relaxed),
        tx.clone(),
        features,
    ));
    let gates = &inner.outbound.shared.gates;
    gates.lock().insert(conn.id.clone(), conn.clone());
    inner.metrics().gate_links.inc();
    tracing::info!(node = %inner.id(), gate = %gate_id, "gate linked");
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            message = rx.recv() => match message {
                Some(message) => on_gate_message(&inner, &conn, message).await,
                None => break,
            },
            changed = state.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = *state.borrow_and_update();
                if tx.send(NodeToGate::State(now)).await.is_err() {
                    break;
                }
            }
        }
    }
    tracing::info!(node = %inner.id(), gate = %gate_id, "gate link closed");
    inner.metrics().gate_links.dec();
    {
        let mut gates = gates.lock();
        if gates
            .get(&conn.id)
            .is_some_and(|current| current.serial == conn.serial)
        {
            gates.remove(&conn.id);
        }
    }
    conn.closed();
    // Connections of a gate that is gone are gone too: end their lanes with a disconnect.
    for (cid, uid, lane) in inner.lanes.end_link(conn.serial) {
        inner.outbound.shared.bindings.disconnected(uid, &conn.id);
        let event = disconnect_event(&inner, &conn, cid, uid);
        let _ = lane.try_send(LaneItem::Disconnected(event));
    }
}

fn disconnect_event(inner: &NodeInner, conn: &GateConn, cid: ConnectionId, uid: Uid) -> Disconnect {
    Disconnect {
        gate_id: conn.id.clone(),
        cid,
        uid,
        node: inner.outbound.clone(),
    }
}

async fn on_gate_message(inner: &Arc<NodeInner>, conn: &Arc<GateConn>, message: GateToNode) {
    match message {
        GateToNode::Packet {
            cid,
            uid,
            body,
            trace,
            peer,
        } => {
            let Frame::Data(data) = inner.outbound.config().packet.parse_body(body) else {
                inner.metrics().dropped(NodeDrop::Malformed);
                return;
            };
            let Some(route) = inner.routes.routes.get(&data.route()).cloned() else {
                inner.metrics().dropped(NodeDrop::UnknownRoute);
                return;
            };
            // The gate filters these too; a node does not rely on it.
            let needs_user = route.spec.authorized || route.spec.stateful;
            if route.spec.internal || (needs_user && uid == NO_UID) {
                inner.metrics().dropped(NodeDrop::Forbidden);
                return;
            }
            // Traces start at the gate: only a packet it traced (and sampled) is traced here, so a
            // node's sampler never starts traces of its own that the gate knows nothing of.
            let span = match trace {
                Some(parent) => handle_span(conn, cid, uid, &data, parent),
                None => tracing::Span::none(),
            };
            let packet = Incoming {
                gate: conn.clone(),
                cid,
                uid,
                route: data.route(),
                seq: data.seq(),
                payload: data.payload(),
                peer,
                span,
                call: None,
            };
            lanes::dispatch(inner, packet, route);
        }
        GateToNode::Disconnected { cid, uid } => {
            if uid != NO_UID {
                inner.outbound.shared.bindings.disconnected(uid, &conn.id);
            }
            let event = disconnect_event(inner, conn, cid, uid);
            if let Some(event) = inner.lanes.end(conn.serial, cid, event)
                && let Some(hook) = inner.routes.on_disconnect.clone()
            {
                let hooks = inner.clone();
                inner
                    .tasks
                    .spawn(async move { hooks.run_hook("disconnect", &hook, event).await });
            }
        }
        GateToNode::Ack { request, result } => conn.acknowledged(request, result),
        GateToNode::Call {
            call,
            from,
            route,
            uid,
            oneway,
            body,
            trace,
        } => calls::serve(
            inner,
            conn,
            IncomingCall {
                call,
                from,
                route,
                uid,
                oneway,
                body,
                trace,
            },
        ),
        GateToNode::CallReply { call, status, body } => conn.call_replied(call, status, body),
        GateToNode::Hello { .. } => tracing::warn!(gate = %conn.id, "gate sent a second hello; ignored"),
        GateToNode::Heartbeat => {}
    }
}

/// The span of a traced packet's handling, continuing the trace of the gate's span that sent it.
fn handle_span(
    conn: &GateConn,
    cid: ConnectionId,
    uid: Uid,
    data: &DataFrame,
    parent: TraceParent,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: telemetry::SPAN_TARGET,
        parent: None,
        "node.handle",
        route = data.route(),
        seq = data.seq(),
        cid,
        uid,
        gate = %conn.id,
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    telemetry::continue_trace(&span, parent);
    span
}

//! Per-connection lanes: the packets of one connection run one after another, in arrival order, on that
//! connection's lane (a task with a bounded queue); different connections run in parallel. A lane ends
//! when the gate reports the connection closed, after the `on_disconnect` hook ran.
//!
//! A lane that is full, in packets or in payload bytes, refuses the packet (counted) instead of making the
//! link wait: one player's slow handler never holds up the other players on the same gate link, and one
//! player's flood pins at most one lane's worth of memory.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::FutureExt as _;
use switchyard_protocol::link::{ConnectionId, Uid};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::context::{Context, Incoming};
use crate::handler::ReplyEncoder;
use crate::handler_error::{FailureReason, HandlerError};
use crate::inner::{Lane, LaneItem, NodeInner};
use crate::metrics::{FailureLabels, NodeDrop, RouteLabels};
use crate::router::Route;

/// Queues a packet on its connection's lane (created on the connection's first packet). A full lane
/// refuses it: the packet is dropped and counted.
pub(crate) fn dispatch(inner: &Arc<NodeInner>, packet: Incoming, route: Arc<Route>) {
    let key = (packet.gate.serial, packet.cid);
    let (uid, bytes) = (packet.uid, packet.payload.len());
    let byte_limit = inner.outbound.config().lane_queue_bytes;
    inner.in_flight.fetch_add(1, Ordering::AcqRel);
    let mut item = LaneItem::Packet(packet, route);
    // Twice at most: a lane that ended between lookup and send (a disconnect raced the packet) is replaced.
    for _ in 0..2 {
        let (tx, queued) = lane(inner, key, uid);
        if queued.fetch_add(bytes, Ordering::AcqRel) + bytes > byte_limit {
            queued.fetch_sub(bytes, Ordering::AcqRel);
            refuse(inner, key.1, uid);
            break;
        }
        match tx.try_send(item) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => {
                queued.fetch_sub(bytes, Ordering::AcqRel);
                refuse(inner, key.1, uid);
                break;
            }
            Err(mpsc::error::TrySendError::Closed(back)) => {
                queued.fetch_sub(bytes, Ordering::AcqRel);
                inner.lanes.lock().remove(&key);
                item = back;
            }
        }
    }
    inner.in_flight.fetch_sub(1, Ordering::AcqRel);
}

fn refuse(inner: &NodeInner, cid: ConnectionId, uid: Uid) {
    inner.metrics().dropped(NodeDrop::LaneFull);
    tracing::debug!(cid, uid, "connection's lane is full; packet refused");
}

fn lane(
    inner: &Arc<NodeInner>,
    key: (u64, ConnectionId),
    uid: Uid,
) -> (mpsc::Sender<LaneItem>, Arc<AtomicUsize>) {
    let mut lanes = inner.lanes.lock();
    if let Some(lane) = lanes.get_mut(&key) {
        lane.uid = uid;
        return (lane.tx.clone(), lane.queued.clone());
    }
    let (tx, rx) = mpsc::channel(inner.outbound.config().lane_queue);
    let queued = Arc::new(AtomicUsize::new(0));
    lanes.insert(
        key,
        Lane {
            tx: tx.clone(),
            uid,
            queued: queued.clone(),
        },
    );
    inner.tasks.spawn(run_lane(inner.clone(), rx, queued.clone()));
    (tx, queued)
}

async fn run_lane(inner: Arc<NodeInner>, mut rx: mpsc::Receiver<LaneItem>, queued: Arc<AtomicUsize>) {
    // One flag for the lane's packets, which run one at a time.
    let responded = Arc::new(AtomicBool::new(false));
    while let Some(item) = rx.recv().await {
        match item {
            LaneItem::Packet(packet, route) => {
                let bytes = packet.payload.len();
                let ctx = Context::new(inner.outbound.clone(), packet, responded.clone());
                let _ = handle(&inner, ctx, &route).await;
                queued.fetch_sub(bytes, Ordering::AcqRel);
                inner.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            LaneItem::Disconnected(event) => {
                if let Some(hook) = &inner.routes.on_disconnect {
                    inner.run_hook("disconnect", hook, event).await;
                }
                return;
            }
        }
    }
}

/// Runs one handler and answers a failure (an error or a panic) unless the handler answered already.
/// Returns whether the handler succeeded.
pub(crate) async fn handle(inner: &NodeInner, ctx: Context, route: &Route) -> bool {
    let started = Instant::now();
    let route_id = route.spec.route;
    // Kept until the outcome is recorded: the span ends when the last handle drops.
    let span = ctx.span().clone();
    let reply_to = ctx.clone();
    let outcome = AssertUnwindSafe((route.handler)(ctx))
        .catch_unwind()
        .instrument(span.clone())
        .await
        .unwrap_or_else(|_| Err(HandlerError::panic()));
    inner
        .metrics()
        .handler_duration
        .get_or_create(&RouteLabels { route: route_id })
        .observe(started.elapsed().as_secs_f64());
    let failure = match outcome {
        Ok(Some(reply)) => reply_to
            .respond_packet(reply)
            .await
            .err()
            .map(HandlerError::internal),
        Ok(None) => None,
        Err(error) => Some(error),
    };
    span.record(
        "outcome",
        failure.as_ref().map_or("ok", |error| error.reason().as_str()),
    );
    let Some(error) = failure else { return true };
    span.record("otel.status_code", "ERROR");
    let reason = error.reason();
    inner
        .metrics()
        .handler_failures
        .get_or_create(&FailureLabels {
            route: route_id,
            reason,
        })
        .inc();
    match reason {
        FailureReason::BadRequest | FailureReason::Game => {
            tracing::debug!(route = route_id, %error, "request refused");
        }
        FailureReason::Internal => tracing::warn!(route = route_id, %error, "handler failed"),
        FailureReason::Panic => tracing::error!(route = route_id, "handler panicked"),
    }
    if reply_to.has_responded() {
        return false;
    }
    let answer = (inner.routes.error_reply)(&error, &ReplyEncoder::of(&reply_to));
    match answer {
        Ok(packet) => {
            let _ = reply_to.respond_error(packet).await;
        }
        Err(unencodable) => tracing::warn!(route = route_id, %unencodable, "error reply does not encode"),
    }
    false
}

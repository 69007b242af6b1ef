//! Per-connection lanes: the packets of one connection run one after another, in arrival order, on that
//! connection's lane (a task with a bounded queue); different connections run in parallel. A lane ends
//! when the gate reports the connection closed, after the `on_disconnect` hook ran.
//!
//! A lane that is full, in packets or in payload bytes, refuses the packet (counted) instead of making the
//! link wait: one player's slow handler never holds up the other players on the same gate link, and one
//! player's flood pins at most one lane's worth of memory. One gate link holds at most
//! [`crate::NodeConfig::max_lanes_per_link`] lanes and [`crate::NodeConfig::link_lane_bytes`] of queued
//! payload over all of them, so a gate (or a peer posing as one) that claims ever more connections pins a
//! bounded share of the node, and the other gates' players keep flowing.

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
use crate::outbound::GateConn;
use crate::router::Route;

/// Queues a packet on its connection's lane (created on the connection's first packet). A full lane, a link
/// whose lanes hold their byte budget already, or a new connection on a link at its lane cap refuses it: the
/// packet is dropped and counted.
pub(crate) fn dispatch(inner: &Arc<NodeInner>, packet: Incoming, route: Arc<Route>) {
    let key = (packet.gate.serial, packet.cid);
    let (uid, bytes) = (packet.uid, packet.payload.len());
    let config = inner.outbound.config();
    inner.in_flight.fetch_add(1, Ordering::AcqRel);
    let gate = packet.gate.clone();
    let mut item = LaneItem::Packet(packet, route);
    // Twice at most: a lane that ended between lookup and send (a disconnect raced the packet) is replaced.
    for _ in 0..2 {
        let Some(LaneEnds {
            tx,
            queued,
            link_queued,
        }) = lane(inner, &gate, key, uid)
        else {
            refuse(inner, NodeDrop::TooManyLanes, &gate, key.1, uid);
            break;
        };
        if queued.fetch_add(bytes, Ordering::AcqRel) + bytes > config.lane_queue_bytes {
            queued.fetch_sub(bytes, Ordering::AcqRel);
            refuse(inner, NodeDrop::LaneFull, &gate, key.1, uid);
            break;
        }
        if link_queued.fetch_add(bytes, Ordering::AcqRel) + bytes > config.link_lane_bytes {
            link_queued.fetch_sub(bytes, Ordering::AcqRel);
            queued.fetch_sub(bytes, Ordering::AcqRel);
            refuse(inner, NodeDrop::LinkFull, &gate, key.1, uid);
            break;
        }
        match tx.try_send(item) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => {
                queued.fetch_sub(bytes, Ordering::AcqRel);
                link_queued.fetch_sub(bytes, Ordering::AcqRel);
                refuse(inner, NodeDrop::LaneFull, &gate, key.1, uid);
                break;
            }
            Err(mpsc::error::TrySendError::Closed(back)) => {
                queued.fetch_sub(bytes, Ordering::AcqRel);
                link_queued.fetch_sub(bytes, Ordering::AcqRel);
                inner.lanes.lock().remove(&key);
                item = back;
            }
        }
    }
    inner.in_flight.fetch_sub(1, Ordering::AcqRel);
}

fn refuse(inner: &NodeInner, reason: NodeDrop, gate: &GateConn, cid: ConnectionId, uid: Uid) {
    inner.metrics().dropped(reason);
    match reason {
        // What one player does to their own lane is theirs; a link at its caps is a gate's (or an intruder's)
        // doing, worth a line, once per link.
        NodeDrop::TooManyLanes | NodeDrop::LinkFull if gate.first_cap_warning() => {
            let config = inner.outbound.config();
            tracing::warn!(
                gate = %gate.id,
                cid,
                uid,
                reason = ?reason,
                max_lanes = config.max_lanes_per_link,
                max_bytes = config.link_lane_bytes,
                "gate link at its lane cap; packets of further connections are refused (logged once per link, \
                 counted in packets_dropped)"
            );
        }
        _ => tracing::debug!(cid, uid, ?reason, "packet refused at its lane"),
    }
}

/// What [`dispatch`] needs of one lane.
struct LaneEnds {
    tx: mpsc::Sender<LaneItem>,
    queued: Arc<AtomicUsize>,
    link_queued: Arc<AtomicUsize>,
}

/// The connection's lane, opened if the link is under its lane cap; `None` when it is at the cap.
fn lane(inner: &Arc<NodeInner>, gate: &GateConn, key: (u64, ConnectionId), uid: Uid) -> Option<LaneEnds> {
    let mut lanes = inner.lanes.lock();
    if let Some(lane) = lanes.get_mut(&key) {
        lane.uid = uid;
        return Some(LaneEnds {
            tx: lane.tx.clone(),
            queued: lane.queued.clone(),
            link_queued: lane.link_queued.clone(),
        });
    }
    let config = inner.outbound.config();
    if lanes.of_link(key.0) >= config.max_lanes_per_link {
        return None;
    }
    let (tx, rx) = mpsc::channel(config.lane_queue);
    let queued = Arc::new(AtomicUsize::new(0));
    let link_queued = gate.lane_bytes.clone();
    lanes.insert(
        key,
        Lane {
            tx: tx.clone(),
            uid,
            queued: queued.clone(),
            link_queued: link_queued.clone(),
        },
    );
    inner
        .tasks
        .spawn(run_lane(inner.clone(), rx, queued.clone(), link_queued.clone()));
    Some(LaneEnds {
        tx,
        queued,
        link_queued,
    })
}

async fn run_lane(
    inner: Arc<NodeInner>,
    mut rx: mpsc::Receiver<LaneItem>,
    queued: Arc<AtomicUsize>,
    link_queued: Arc<AtomicUsize>,
) {
    // One flag for the lane's packets, which run one at a time.
    let responded = Arc::new(AtomicBool::new(false));
    while let Some(item) = rx.recv().await {
        match item {
            LaneItem::Packet(packet, route) => {
                let bytes = packet.payload.len();
                let ctx = Context::new(inner.outbound.clone(), packet, responded.clone());
                let _ = handle(&inner, ctx, &route).await;
                queued.fetch_sub(bytes, Ordering::AcqRel);
                link_queued.fetch_sub(bytes, Ordering::AcqRel);
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

//! One client connection from its first packet to its cleanup: the read loop (rate limit, idle timeout,
//! routing each packet to a node) and the write loop (batches, tick heartbeats), in one task.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use prometheus_client::metrics::counter::Counter;
use switchyard_cluster::telemetry;
use switchyard_protocol::Frame;
use switchyard_protocol::link::{GateToNode, NO_UID};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::HeartbeatMode;
use crate::metrics::{CloseReason, DropReason, TrafficCounters, Transport};
use crate::nodes::{Decision, NodeHandle};
use crate::rate::{RateLimiter, Verdict};
use crate::session::{OutboxLimits, Session};
use crate::shared::Gate;
use crate::transport::{FrameSource, PacketSink, SourceEvent};

/// How long a client's packet waits for room on a full node link before it is dropped.
const FORWARD_DEADLINE: Duration = Duration::from_secs(2);
/// Packets one write batch holds at most.
const WRITE_BATCH_PACKETS: usize = 256;

impl Gate {
    /// Runs one client connection from its first packet to its cleanup. Reading and writing are two
    /// futures of the connection's one task: a second task per connection would cost its own allocation
    /// and a wake-up across tasks for every response. Source and sink are borrowed: owned, they would be
    /// stored twice in every connection's task (once as arguments, once as locals).
    pub(crate) async fn run_session<S: FrameSource, W: PacketSink>(
        &self,
        transport: Transport,
        peer: Option<SocketAddr>,
        source: &mut S,
        sink: &mut W,
    ) {
        let inner = &self.inner;
        let cid = inner.next_cid.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(Session::new(
            cid,
            peer,
            OutboxLimits {
                packets: inner.config.outbound_queue,
                bytes: inner.config.outbound_queue_bytes,
            },
        ));
        inner.sessions.insert(session.clone());
        let labels = crate::metrics::TransportLabels { protocol: transport };
        inner.metrics.connections.get_or_create(&labels).inc();
        inner.metrics.connections_opened.get_or_create(&labels).inc();
        let traffic = inner.metrics.traffic(transport);

        let reading = async {
            self.read_loop(&session, source, &traffic).await;
            session.close(CloseReason::Error); // no-op when a reason is already recorded
        };
        let ((), polite) = tokio::join!(reading, write_loop(self, &session, &mut *sink, &traffic));

        // Account for the connection before the client can see it closed.
        let owned_uid = inner.sessions.remove(&session);
        let reason = session.close_reason().unwrap_or(CloseReason::Error);
        inner.metrics.connections.get_or_create(&labels).dec();
        inner.metrics.closed(transport, reason);
        self.after_close(&session, owned_uid);
        if polite {
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.shutdown()).await;
        }
    }

    pub(crate) async fn read_loop<S: FrameSource>(
        &self,
        session: &Arc<Session>,
        source: &mut S,
        traffic: &TrafficCounters,
    ) {
        let inner = &self.inner;
        let idle_timeout = inner.config.idle_timeout();
        let mut last_seen = Instant::now();
        // Timers live on the heap and only when configured: most of a connection's life is spent waiting
        // here, and the waiting state is what every idle connection costs.
        let mut idle = idle_timeout.map(|timeout| Box::pin(tokio::time::sleep(timeout)));
        let authorize_timeout = inner.config.authorize_timeout;
        let mut authorize =
            (!authorize_timeout.is_zero()).then(|| Box::pin(tokio::time::sleep(authorize_timeout)));
        let mut limit = inner.config.rate_limit.map(|limit| {
            Box::new(ConnectionLimit {
                limiter: RateLimiter::new(limit, last_seen),
                dropped: inner.metrics.drop_counter(DropReason::RateLimited),
            })
        });
        loop {
            let event = tokio::select! {
                biased;
                _ = session.closed() => return,
                // Before the source: a client flooding packets must not postpone its deadline.
                () = expired(&mut authorize), if authorize.is_some() => {
                    if session.uid() == NO_UID {
                        tracing::debug!(cid = session.cid, timeout = ?authorize_timeout, "client did not log in within the authorize timeout");
                        session.close(CloseReason::Unauthorized);
                        return;
                    }
                    authorize = None;
                    continue;
                }
                event = source.next() => event,
                () = expired(&mut idle), if idle.is_some() => {
                    let timeout = idle_timeout.unwrap_or_default();
                    if last_seen.elapsed() >= timeout {
                        tracing::debug!(cid = session.cid, "client idle past twice the heartbeat interval");
                        session.close(CloseReason::Idle);
                        return;
                    }
                    if let Some(idle) = idle.as_mut() {
                        idle.as_mut().reset(last_seen + timeout);
                    }
                    continue;
                }
            };
            match event {
                SourceEvent::Frame(frame, wire_bytes) => {
                    last_seen = Instant::now();
                    traffic.packets_in.inc();
                    traffic.bytes_in.inc_by(wire_bytes as u64);
                    if admit(&mut limit, session, last_seen)
                        && let Some((node, packet)) = self.on_frame(session, frame)
                    {
                        // The node's link queue is full. Boxed, so that every connection's reader does not
                        // reserve room for this rare wait while idle.
                        Box::pin(self.forward_when_room(&node, packet)).await;
                    }
                }
                SourceEvent::Malformed => {
                    last_seen = Instant::now();
                    if admit(&mut limit, session, last_seen) {
                        inner.metrics.dropped(DropReason::Malformed);
                    }
                }
                SourceEvent::Oversize(error) => {
                    tracing::info!(cid = session.cid, %error, "closing client connection");
                    session.close(CloseReason::Oversize);
                    return;
                }
                SourceEvent::Closed => {
                    session.close(CloseReason::Client);
                    return;
                }
                SourceEvent::Failed(error) => {
                    tracing::debug!(cid = session.cid, %error, "client connection failed");
                    session.close(CloseReason::Error);
                    return;
                }
            }
        }
    }

    /// Handles one packet from a client. Returns a packet for a node whose link queue is full: the caller
    /// waits for room, which is the backpressure of a node that cannot keep up.
    pub(crate) fn on_frame(
        &self,
        session: &Arc<Session>,
        frame: Frame,
    ) -> Option<(Arc<NodeHandle>, GateToNode)> {
        let inner = &self.inner;
        match frame {
            Frame::Data(data) => {
                let uid = session.uid();
                let snapshot = inner.nodes.snapshot();
                let decision = snapshot.decide(
                    data.route(),
                    uid,
                    |pool| session.node(pool),
                    &inner.config,
                    &inner.routing_turn,
                );
                let node = match decision {
                    Decision::Forward(node) => node,
                    Decision::Rebind(node) => {
                        // The bound node vanished: forget it, so the game sees an unbound player and rebinds.
                        self.clear_stale_binding(session, uid, &node.pool);
                        node
                    }
                    Decision::Drop(reason) => {
                        inner.metrics.dropped(reason);
                        tracing::trace!(cid = session.cid, route = data.route(), ?reason, "packet dropped");
                        return None;
                    }
                };
                session.visited(&node);
                session.request_sent(data.seq());
                // Without a tracing layer the span is disabled by a cached callsite check, its fields are not
                // evaluated and `traceparent` returns at its first branch: tracing off costs nothing more.
                let span = tracing::info_span!(
                    target: telemetry::SPAN_TARGET,
                    "gate.request",
                    route = data.route(),
                    seq = data.seq(),
                    cid = session.cid,
                    uid,
                    node = %node.id,
                );
                let packet = GateToNode::Packet {
                    cid: session.cid,
                    uid,
                    body: data.into_body(),
                    trace: telemetry::traceparent(&span),
                    peer: session.peer,
                };
                match node.tx.try_send(packet) {
                    Ok(()) => {}
                    // The span ends here: the caller waits for room outside it.
                    Err(mpsc::error::TrySendError::Full(packet)) => return Some((node, packet)),
                    Err(mpsc::error::TrySendError::Closed(_)) => inner.metrics.dropped(DropReason::NoNode),
                }
            }
            Frame::Heartbeat { .. } => {
                inner.metrics.heartbeats.inc();
                if inner.config.heartbeat_mode == HeartbeatMode::Resp
                    && !inner.config.heartbeat_interval.is_zero()
                {
                    session.send(self.heartbeat_packet(0));
                }
            }
            Frame::Empty => {}
            Frame::Short { .. } => inner.metrics.dropped(DropReason::Malformed),
        }
        None
    }

    /// Queues `packet` for `node` once its link has room, waiting [`FORWARD_DEADLINE`] at most: a node
    /// that stops reading holds up this client's reads that long, then its packets are dropped (counted
    /// as `node_busy`) and the client's other traffic flows again.
    pub(crate) async fn forward_when_room(&self, node: &NodeHandle, packet: GateToNode) {
        match tokio::time::timeout(FORWARD_DEADLINE, node.tx.send(packet)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.inner.metrics.dropped(DropReason::NoNode),
            Err(_) => {
                self.inner.metrics.dropped(DropReason::NodeBusy);
                tracing::debug!(node = %node.id, "node link full past the forward deadline; packet dropped");
            }
        }
    }

    /// Tells the nodes that saw a closed connection, and releases its locator binding if it still held it.
    pub(crate) fn after_close(&self, session: &Arc<Session>, owned_uid: Option<i64>) {
        let inner = &self.inner;
        let uid = session.uid();
        let mut nodes = session.take_visited();
        let snapshot = inner.nodes.snapshot();
        for (_, bound) in session.bound_nodes() {
            let Some(node) = snapshot.known(&bound).cloned() else {
                continue;
            };
            if !nodes.iter().any(|seen| Arc::ptr_eq(seen, &node)) {
                nodes.push(node.clone());
            }
            node.bound.fetch_sub(1, Ordering::Relaxed);
        }
        for node in nodes {
            let message = GateToNode::Disconnected {
                cid: session.cid,
                uid,
            };
            self.send_control(&node, message);
        }
        if let Some(uid) = owned_uid {
            let gate = self.clone();
            inner
                .tasks
                .spawn(async move { gate.release_gate_binding(uid).await });
        }
    }
}

/// A connection's packet-rate limit, owned by its reader.
struct ConnectionLimit {
    limiter: RateLimiter,
    dropped: Counter,
}

/// Applies the rate limit, if any, to one received packet: true to handle it, false to drop it (counted).
/// A connection that keeps exceeding the limit is closed.
fn admit(limit: &mut Option<Box<ConnectionLimit>>, session: &Session, now: Instant) -> bool {
    let Some(limit) = limit else { return true };
    match limit.limiter.check(now) {
        Verdict::Pass => true,
        Verdict::Drop => {
            limit.dropped.inc();
            false
        }
        Verdict::Abuse => {
            limit.dropped.inc();
            // Logged once: the session closes, and its reader stops at the next turn of its loop.
            if !session.is_closed() {
                tracing::info!(
                    cid = session.cid,
                    "closing a client that keeps sending over the packet-rate limit"
                );
                session.close(CloseReason::RateLimited);
            }
            false
        }
    }
}

/// Writes queued packets to the client in batches; sends ticks in `tick` heartbeat mode.
/// Returns whether the connection may be shut down politely (false when writing failed).
async fn write_loop<W: PacketSink>(
    gate: &Gate,
    session: &Session,
    sink: &mut W,
    traffic: &TrafficCounters,
) -> bool {
    let config = &gate.inner.config;
    // Only a gate in tick mode keeps a timer per connection.
    let mut tick = (config.heartbeat_mode == HeartbeatMode::Tick && !config.heartbeat_interval.is_zero())
        .then(|| {
            let mut tick = tokio::time::interval(config.heartbeat_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.reset();
            tick
        });
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        let (mut bytes, close) =
            session.take_outbound(&mut batch, config.write_batch_bytes, WRITE_BATCH_PACKETS);
        // A client that always has packets queued still gets its ticks.
        if let Some(tick) = tick.as_mut()
            && !batch.is_empty()
            && tick.tick().now_or_never().is_some()
        {
            let heartbeat = gate.heartbeat_packet(0);
            bytes += heartbeat.len();
            batch.push(heartbeat);
        }
        if batch.is_empty() && close.is_none() {
            // Closing the session wakes this wait too, so an idle writer waits on one thing only.
            let Some(tick) = tick.as_mut() else {
                session.outbound_ready().await;
                if session.is_closed() {
                    break;
                }
                continue;
            };
            tokio::select! {
                biased;
                () = session.outbound_ready() => {
                    if session.is_closed() {
                        break;
                    }
                    continue;
                }
                _ = tick.tick() => {
                    let heartbeat = gate.heartbeat_packet(0);
                    bytes = heartbeat.len();
                    batch.push(heartbeat);
                }
            }
        }
        if !batch.is_empty() {
            let written = tokio::select! {
                _ = session.closed() => break,
                written = sink.write(&batch) => written,
            };
            if let Err(error) = written {
                tracing::debug!(cid = session.cid, %error, "writing to client failed");
                session.close(CloseReason::Error);
                return false;
            }
            traffic.packets_out.inc_by(batch.len() as u64);
            traffic.bytes_out.inc_by(bytes as u64);
            batch.clear();
            if batch.capacity() > WRITE_BATCH_PACKETS {
                batch = Vec::new();
            }
        }
        if let Some(reason) = close {
            session.close(reason);
            break;
        }
    }
    true
}

/// Completes when a configured timer expires; never when there is none.
async fn expired(timer: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match timer {
        Some(timer) => timer.await,
        None => std::future::pending().await,
    }
}

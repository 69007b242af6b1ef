//! The gate: accepts clients, runs their sessions, forwards their packets to nodes and delivers what nodes
//! send back. Everything it spawns runs on one [`TaskTracker`] and stops through one [`CancellationToken`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::FutureExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use switchyard_cluster::admin::Readiness;
use switchyard_cluster::link::Connector;
use switchyard_cluster::locator::{Locator, LocatorEvent};
use switchyard_cluster::registry::NodeEndpoint;
use switchyard_cluster::telemetry;
use switchyard_protocol::link::{GateToNode, NO_UID, NodeToGate, Target, TraceParent};
use switchyard_protocol::{Frame, extcode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{GateConfig, GateConfigError, HeartbeatMode};
use crate::links;
use crate::metrics::{CloseReason, DropReason, GateMetrics, RefuseReason, TrafficCounters, Transport};
use crate::nodes::{Decision, NodeHandle, NodeTable};
use crate::rate::{RateLimiter, Verdict};
use crate::session::{OutboxLimits, Session, SessionTable};
use crate::transport::{
    FrameSource, PacketSink, SourceEvent, StreamSink, StreamSource, TcpSource, ws_halves,
};

/// How long a WebSocket upgrade may take.
const WS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer of a WebSocket connection (tungstenite keeps it for the connection's life, zero-filled, so
/// it is resident memory): 4 KiB holds a few pipelined 1 KiB packets per read and grows for larger messages.
const WS_READ_BUFFER: usize = 4 * 1024;
/// Packets one write batch holds at most.
const WRITE_BATCH_PACKETS: usize = 256;

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
    pub(crate) node_pool: String,
    next_cid: AtomicU64,
    routing_turn: AtomicUsize,
    connection_slots: Arc<Semaphore>,
    readiness: Readiness,
    /// Cancelled when the gate stops accepting clients (drain or shutdown).
    accepting: CancellationToken,
    /// Cancelled when everything must stop.
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

impl Gate {
    /// Builds a gate and registers its metrics. Nothing runs until listeners and links are started.
    ///
    /// # Errors
    /// The config does not validate.
    pub fn new(
        config: GateConfig,
        locator: Arc<dyn Locator>,
        registry: &mut Registry,
    ) -> Result<Self, GateConfigError> {
        config.validate()?;
        // Ready after the first registry list and a first link attempt to each node it names.
        let readiness = Readiness::default();
        let metrics = GateMetrics::register(registry);
        metrics
            .max_connections
            .set(i64::try_from(config.max_connections).unwrap_or(i64::MAX));
        let inner = Arc::new(GateInner {
            connection_slots: Arc::new(Semaphore::new(config.max_connections)),
            config,
            sessions: SessionTable::default(),
            nodes: NodeTable::new(metrics.nodes.clone()),
            locator,
            metrics,
            node_pool: switchyard_cluster::locator::DEFAULT_POOL.to_owned(),
            next_cid: AtomicU64::new(1),
            routing_turn: AtomicUsize::new(0),
            readiness,
            accepting: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let gate = Gate { inner };
        gate.spawn_locator_watch();
        gate.spawn_link_gauges();
        Ok(gate)
    }

    pub fn id(&self) -> &str {
        &self.inner.config.id
    }

    /// Ready while the gate takes new clients.
    pub fn readiness(&self) -> Readiness {
        self.inner.readiness.clone()
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Live node links.
    pub fn linked_nodes(&self) -> usize {
        self.inner.nodes.len()
    }

    /// Whether the client listeners speak TLS (TCP over TLS, and WSS).
    pub fn tls(&self) -> bool {
        self.inner.config.tls.is_some()
    }

    /// Accepts TCP clients (over TLS when the config has it) on `listener` until the gate drains.
    pub fn serve_tcp(&self, listener: TcpListener) {
        let gate = self.clone();
        self.inner
            .tasks
            .spawn(async move { gate.accept_loop(listener, Transport::Tcp).await });
    }

    /// Accepts WebSocket clients (WSS when the config has TLS) on `listener`, upgrade path from the config,
    /// until the gate drains.
    pub fn serve_ws(&self, listener: TcpListener) {
        let gate = self.clone();
        self.inner
            .tasks
            .spawn(async move { gate.accept_loop(listener, Transport::Ws).await });
    }

    /// Keeps one link to every node the registry lists, reconnecting with backoff.
    pub fn connect_nodes(&self, nodes: watch::Receiver<Vec<NodeEndpoint>>, connector: Arc<dyn Connector>) {
        let gate = self.clone();
        self.inner
            .tasks
            .spawn(async move { links::maintain_links(gate, nodes, connector).await });
    }

    /// Stops taking clients, tells every client to reconnect elsewhere, and closes connections gradually
    /// within the drain deadline. Returns when no connection is left.
    pub async fn drain(&self) {
        let inner = &self.inner;
        inner.readiness.set(false);
        inner.accepting.cancel();
        inner.metrics.draining.set(1);
        let deadline = Instant::now() + inner.config.drain_deadline;
        let reconnect = inner
            .config
            .packet
            .heartbeat_packet(extcode::RECONNECT_ELSEWHERE, None);
        let sessions = inner.sessions.all();
        tracing::info!(gate = %inner.config.id, connections = sessions.len(), deadline = ?inner.config.drain_deadline, "gate draining");
        for session in &sessions {
            session.send(reconnect.clone());
        }
        // Spread the closes over most of the deadline so clients do not all reconnect at the same instant.
        let steps = 10u32;
        let step = inner.config.drain_deadline.mul_f64(0.8) / steps;
        let per_step = sessions.len().div_ceil(steps as usize).max(1);
        for chunk in sessions.chunks(per_step) {
            if inner.sessions.len() == 0 {
                break;
            }
            for session in chunk {
                session.close_after_queued(CloseReason::Draining);
            }
            tokio::time::sleep(step).await;
        }
        while inner.sessions.len() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for session in inner.sessions.all() {
            session.close(CloseReason::Draining);
        }
        while inner.sessions.len() > 0 && Instant::now() < deadline + Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops everything (after [`Gate::drain`] for a graceful exit) and waits for every task.
    pub async fn shutdown(&self) {
        self.inner.readiness.set(false);
        self.inner.accepting.cancel();
        self.inner.shutdown.cancel();
        for session in self.inner.sessions.all() {
            session.close(CloseReason::Draining);
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    async fn accept_loop(self, listener: TcpListener, transport: Transport) {
        let inner = &self.inner;
        loop {
            let accepted = tokio::select! {
                _ = inner.accepting.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, ?transport, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = inner.connection_slots.clone().try_acquire_owned() else {
                inner.metrics.refused(transport, RefuseReason::MaxConnections);
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let gate = self.clone();
            // Each kind of connection is its own task so that a task is only as large as its own future:
            // one future for all would reserve the TLS and WebSocket handshake states (over 11 KiB) in every
            // plain TCP connection.
            match (inner.config.tls.is_some(), transport) {
                (false, Transport::Tcp) => inner.tasks.spawn(gate.serve_plain_tcp(stream, permit)),
                (false, Transport::Ws) => inner.tasks.spawn(gate.accept_ws(stream, peer, permit)),
                (true, _) => inner
                    .tasks
                    .spawn(Box::pin(gate.serve_tls(stream, peer, transport, permit))),
            };
        }
    }

    /// Runs the session of a plain TCP client.
    async fn serve_plain_tcp(self, mut stream: TcpStream, permit: OwnedSemaphorePermit) {
        // Borrowed halves: reader and writer run in this one task, so the socket needs no shared handle.
        // Asked here rather than carried from accept: the spawned future stays smaller.
        let peer = stream.peer_addr().ok();
        let (read, write) = stream.split();
        let mut source = TcpSource::new(read, &self.inner.config.packet);
        let mut sink = StreamSink::new(write);
        self.run_session(Transport::Tcp, peer, &mut source, &mut sink)
            .await;
        drop(permit);
    }

    /// Takes an accepted socket through the TLS handshake and, on the WebSocket listener, the upgrade,
    /// then runs its session.
    async fn serve_tls(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        transport: Transport,
        permit: OwnedSemaphorePermit,
    ) {
        let Some(acceptor) = self.inner.config.tls.clone().map(TlsAcceptor::from) else {
            return;
        };
        let Some(stream) = self.tls_handshake(&acceptor, stream, peer, transport).await else {
            return;
        };
        match transport {
            Transport::Tcp => {
                let (read, write) = tokio::io::split(stream);
                let mut source = StreamSource::new(read, &self.inner.config.packet);
                let mut sink = StreamSink::new(write);
                self.run_session(Transport::Tcp, Some(peer), &mut source, &mut sink)
                    .await;
                drop(permit);
            }
            Transport::Ws => self.accept_ws(stream, peer, permit).await,
        }
    }

    /// The server side of a TLS handshake, within the configured timeout; a failure is counted as a
    /// refused connection.
    async fn tls_handshake(
        &self,
        acceptor: &TlsAcceptor,
        stream: TcpStream,
        peer: SocketAddr,
        transport: Transport,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let inner = &self.inner;
        let handshake = tokio::time::timeout(inner.config.tls_handshake_timeout, acceptor.accept(stream));
        let outcome = tokio::select! {
            _ = inner.shutdown.cancelled() => return None,
            outcome = handshake => outcome,
        };
        match outcome {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(error)) => tracing::debug!(%peer, %error, ?transport, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, ?transport, "TLS handshake timed out"),
        }
        inner.metrics.refused(transport, RefuseReason::Handshake);
        None
    }

    async fn accept_ws<S>(self, stream: S, peer: SocketAddr, permit: OwnedSemaphorePermit)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = &self.inner.config;
        let max_message = config.packet.max_packet_bytes() as usize + 4;
        // tungstenite allocates its read buffer up front (128 KiB by default): for a mostly idle player
        // connection a small one that grows for a large message costs a fraction of the memory.
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(WS_READ_BUFFER)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message))
            .max_write_buffer_size(config.write_batch_bytes.max(max_message) * 4);
        let path = config.ws_path.clone();
        #[allow(clippy::result_large_err)] // the signature is tungstenite's callback type
        let check_path = move |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
            if request.uri().path() == path {
                Ok(response)
            } else {
                let mut refusal = ErrorResponse::new(Some("no WebSocket endpoint at this path".into()));
                *refusal.status_mut() = StatusCode::NOT_FOUND;
                Err(refusal)
            }
        };
        let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(ws_config));
        match tokio::time::timeout(WS_HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(ws)) => {
                let (mut source, mut sink) = ws_halves(ws, &config.packet);
                self.run_session(Transport::Ws, Some(peer), &mut source, &mut sink)
                    .await;
                drop(permit);
            }
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "WebSocket handshake refused");
                self.inner.metrics.refused(Transport::Ws, RefuseReason::Handshake);
            }
            Err(_) => {
                tracing::debug!(%peer, "WebSocket handshake timed out");
                self.inner.metrics.refused(Transport::Ws, RefuseReason::Handshake);
            }
        }
    }

    /// Runs one client connection from its first packet to its cleanup. Reading and writing are two
    /// futures of the connection's one task: a second task per connection would cost its own allocation
    /// and a wake-up across tasks for every response. Source and sink are borrowed: owned, they would be
    /// stored twice in every connection's task (once as arguments, once as locals).
    async fn run_session<S: FrameSource, W: PacketSink>(
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

    async fn read_loop<S: FrameSource>(
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
    fn on_frame(&self, session: &Arc<Session>, frame: Frame) -> Option<(Arc<NodeHandle>, GateToNode)> {
        let inner = &self.inner;
        match frame {
            Frame::Data(data) => {
                let uid = session.uid();
                let bound = session.node();
                let snapshot = inner.nodes.snapshot();
                let decision = snapshot.decide(
                    data.route(),
                    uid,
                    bound.as_deref(),
                    inner.config.routing,
                    &inner.routing_turn,
                );
                let node = match decision {
                    Decision::Forward(node) => node,
                    Decision::Rebind(node) => {
                        // The bound node vanished: forget it, so the game sees an unbound player and rebinds.
                        self.clear_stale_binding(session, uid, bound);
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

    /// Queues `packet` for `node` once its link has room.
    async fn forward_when_room(&self, node: &NodeHandle, packet: GateToNode) {
        if node.tx.send(packet).await.is_err() {
            self.inner.metrics.dropped(DropReason::NoNode);
        }
    }

    fn clear_stale_binding(&self, session: &Arc<Session>, uid: i64, bound: Option<Arc<str>>) {
        let inner = &self.inner;
        session.set_node(None);
        inner.metrics.stale_bindings_cleared.inc();
        let Some(dead) = bound else { return };
        tracing::info!(uid, node = %dead, "cleared a binding to a vanished node");
        let locator = inner.locator.clone();
        let pool = inner.node_pool.clone();
        inner.tasks.spawn(async move {
            if let Err(error) = locator.unbind_node(uid, &pool, &dead).await {
                tracing::warn!(uid, %error, "could not clear a stale node binding in the locator");
            }
        });
    }

    pub(crate) fn heartbeat_packet(&self, extcode: u8) -> Bytes {
        let config = &self.inner.config;
        let time = config.heartbeat_time.then(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_nanos() as i64)
        });
        config.packet.heartbeat_packet(extcode, time)
    }

    /// Tells the nodes that saw a closed connection, and releases its locator binding if it still held it.
    fn after_close(&self, session: &Arc<Session>, owned_uid: Option<i64>) {
        let inner = &self.inner;
        let uid = session.uid();
        let mut nodes = session.take_visited();
        let snapshot = inner.nodes.snapshot();
        if let Some(node) = session.node().and_then(|bound| snapshot.known(&bound).cloned()) {
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
            if let Err(mpsc::error::TrySendError::Full(message)) = node.tx.try_send(message) {
                inner.tasks.spawn(async move {
                    let _ = node.tx.send(message).await;
                });
            }
        }
        if let Some(uid) = owned_uid {
            let gate = self.clone();
            inner
                .tasks
                .spawn(async move { gate.release_gate_binding(uid).await });
        }
    }

    /// Removes `uid`'s gate binding from the locator. A newer session of the same uid on this gate may have
    /// bound it meanwhile (this unbind races that bind): then the binding is written again.
    async fn release_gate_binding(&self, uid: i64) {
        let inner = &self.inner;
        if let Err(error) = inner.locator.unbind_gate(uid, &inner.config.id).await {
            tracing::warn!(uid, %error, "could not release a gate binding in the locator");
            return;
        }
        if inner.sessions.by_uid(uid).is_some()
            && let Err(error) = inner.locator.bind_gate(uid, &inner.config.id).await
        {
            tracing::warn!(uid, %error, "could not restore a gate binding in the locator");
        }
    }

    /// Applies one message a node sent on its link.
    pub(crate) fn on_node_message(&self, link: &links::LinkContext, message: NodeToGate) {
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
                let result = inner.sessions.bind(cid, uid);
                let session = result.as_ref().ok().and_then(|_| inner.sessions.get(cid));
                let gate = self.clone();
                let tx = link.tx.clone();
                inner.tasks.spawn(async move {
                    if let Some(session) = session {
                        gate.load_binding(&session, uid).await;
                    }
                    let _ = tx
                        .send(GateToNode::Ack {
                            request,
                            result: result.map(|_| ()),
                        })
                        .await;
                });
            }
            NodeToGate::UnbindUser { request, uid } => {
                let result = match inner.sessions.unbind(uid) {
                    Some(session) => {
                        self.release_node_count(&session, None);
                        Ok(())
                    }
                    None => Err(switchyard_protocol::link::AckError::UnknownUser),
                };
                let gate = self.clone();
                let tx = link.tx.clone();
                inner.tasks.spawn(async move {
                    if result.is_ok() {
                        gate.release_gate_binding(uid).await;
                    }
                    let _ = tx.send(GateToNode::Ack { request, result }).await;
                });
            }
            NodeToGate::UserNode { uid, node_id } => {
                if let Some(session) = inner.sessions.by_uid(uid) {
                    self.release_node_count(&session, node_id.map(Arc::from));
                }
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
    fn deliver_span(&self, target: &Target, parent: TraceParent) -> tracing::Span {
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

    /// Sets a session's node binding and keeps the per-node bound counts right.
    fn release_node_count(&self, session: &Session, node: Option<Arc<str>>) {
        let snapshot = self.inner.nodes.snapshot();
        if let Some(new) = node.as_deref().and_then(|id| snapshot.known(id)) {
            new.bound.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(old) = session
            .set_node(node)
            .as_deref()
            .and_then(|id| snapshot.known(id))
        {
            old.bound.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// After a login, brings the player's node binding from the locator into the session, so a player who
    /// reconnects (to this or another gate) keeps the node that holds their state. A binding to a node this
    /// gate has no link to is stale and is removed.
    async fn load_binding(&self, session: &Arc<Session>, uid: i64) {
        let inner = &self.inner;
        let pool = &inner.node_pool;
        let located = match inner.locator.locate_node(uid, pool).await {
            Ok(located) => located,
            Err(error) => {
                tracing::warn!(uid, %error, "could not look up a node binding; the player starts unbound");
                None
            }
        };
        if let Err(error) = inner.locator.bind_gate(uid, &inner.config.id).await {
            tracing::warn!(uid, %error, "could not record the gate binding; pushes from other gates may miss");
        }
        let Some(node_id) = located else { return };
        if inner.nodes.snapshot().known(&node_id).is_some() {
            if session.uid() == uid {
                self.release_node_count(session, Some(Arc::from(node_id)));
            }
        } else {
            inner.metrics.stale_bindings_cleared.inc();
            if let Err(error) = inner.locator.unbind_node(uid, pool, &node_id).await {
                tracing::warn!(uid, %error, "could not clear a stale node binding in the locator");
            }
        }
    }

    /// Runs `apply` on every session `target` names on this gate; returns how many it accepted.
    fn for_each_target(&self, target: &Target, mut apply: impl FnMut(&Session) -> bool) -> u64 {
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

    /// Samples the depth of the fullest node link once a second (a per-node label would grow without
    /// bound as pods come and go).
    fn spawn_link_gauges(&self) {
        let gate = self.clone();
        self.inner.tasks.spawn(async move {
            let inner = &gate.inner;
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    _ = every.tick() => {}
                }
                let snapshot = inner.nodes.snapshot();
                let deepest = snapshot
                    .nodes()
                    .map(|node| node.tx.max_capacity() - node.tx.capacity())
                    .max();
                inner.metrics.link_queue_depth.set(deepest.unwrap_or(0) as i64);
            }
        });
    }

    /// Keeps session caches right when bindings change elsewhere (another gate, another node).
    fn spawn_locator_watch(&self) {
        let gate = self.clone();
        let mut events = self.inner.locator.events();
        self.inner.tasks.spawn(async move {
            let inner = &gate.inner;
            loop {
                let event = tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    event = events.recv() => event,
                };
                match event {
                    Ok(LocatorEvent::GateBound { uid, gate_id }) if gate_id != inner.config.id => {
                        // The player logged in on another gate: this gate no longer delivers to them.
                        if let Some(session) = inner.sessions.unbind(uid) {
                            gate.release_node_count(&session, None);
                        }
                    }
                    Ok(LocatorEvent::NodeBound { uid, pool, node_id }) if pool == inner.node_pool => {
                        if let Some(session) = inner.sessions.by_uid(uid)
                            && session.node().as_deref() != Some(node_id.as_str())
                        {
                            gate.release_node_count(&session, Some(Arc::from(node_id)));
                        }
                    }
                    Ok(LocatorEvent::NodeUnbound { uid, pool, node_id }) if pool == inner.node_pool => {
                        // A draining node releases its players itself: on the link when they log out,
                        // and at its deadline by disconnecting them after telling them to reconnect
                        // (it unbinds them in the locator first, so that their next login goes
                        // elsewhere). Until it disconnects them, their packets must keep going to it:
                        // another node would adopt them without their state.
                        if let Some(session) = inner.sessions.by_uid(uid)
                            && session.node().as_deref() == Some(node_id.as_str())
                            && !inner.nodes.is_draining(&node_id)
                        {
                            gate.release_node_count(&session, None);
                        }
                    }
                    Ok(LocatorEvent::Reconnected) => {
                        // The store may have lost every binding: write this gate's players again.
                        let gate = gate.clone();
                        inner
                            .tasks
                            .spawn(async move { gate.restore_gate_bindings().await });
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "gate fell behind locator events; caches may be stale until next bind"
                        );
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Writes the gate binding of every logged-in session again where the locator lost it (after
    /// [`LocatorEvent::Reconnected`]), so that pushes reach them.
    async fn restore_gate_bindings(&self) {
        let inner = &self.inner;
        let uids: Vec<i64> = inner
            .sessions
            .all()
            .iter()
            .map(|session| session.uid())
            .filter(|uid| *uid != NO_UID)
            .collect();
        let locator = inner.locator.clone();
        let id = inner.config.id.clone();
        let outcome = switchyard_cluster::locator::restore_all(uids, |uid| {
            let (locator, id) = (locator.clone(), id.clone());
            async move { locator.restore_gate(uid, &id).await }
        })
        .await;
        if outcome.failed > 0 {
            tracing::warn!(
                ?outcome,
                "could not restore every gate binding after a locator outage"
            );
        } else {
            tracing::info!(?outcome, "gate bindings restored after a locator outage");
        }
    }

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

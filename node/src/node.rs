//! The node runtime: accepts links from gates, runs handlers, tracks bound players, drains.
//!
//! Ordering: packets of one connection run one after another, in arrival order, on that connection's lane
//! (a task with a bounded queue); different connections run in parallel. A lane ends when the gate reports
//! the connection closed, after the `on_disconnect` hook ran.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use serde::Serialize;
use switchyard_cluster::admin::Readiness;
use switchyard_cluster::link::{Acceptor, NodeLink};
use switchyard_cluster::locator::{Locator, LocatorError, LocatorEvent, restore_all};
use switchyard_cluster::telemetry;
use switchyard_protocol::link::{
    AckError, ConnectionId, GateToNode, NodeState, NodeToGate, RequestId, Target, TraceParent, Uid,
};
use switchyard_protocol::{DataFrame, EncodeError, Frame, PacketConfig, extcode};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::codec::{Codec, CodecError};
use crate::context::Context;
use crate::metrics::{
    DrainEnd, DrainLabels, Failure, FailureLabels, NodeDrop, NodeDropLabels, NodeMetrics, PushKind,
    PushLabels, RouteLabels, StateLabels,
};
use crate::router::{Disconnect, Route, Router};

/// How long a gate has to say hello on a new link.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a draining node checks whether it is empty.
const DRAIN_POLL: Duration = Duration::from_millis(25);

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Instance id: the pod name in Kubernetes.
    pub id: String,
    pub packet: PacketConfig,
    pub codec: Codec,
    /// The node pool this node belongs to (locator bindings are per pool).
    pub pool: String,
    /// How long a draining node waits for its players before telling them to reconnect.
    pub drain_deadline: Duration,
    /// Packets queued for one connection at most before the gate link waits.
    pub lane_queue: usize,
    /// How long an acknowledged operation waits for its gate.
    pub ack_timeout: Duration,
}

impl NodeConfig {
    pub fn new(id: impl Into<String>) -> Self {
        NodeConfig {
            id: id.into(),
            packet: PacketConfig::default(),
            codec: Codec::Json,
            pool: switchyard_cluster::locator::DEFAULT_POOL.to_owned(),
            drain_deadline: Duration::from_secs(60),
            lane_queue: 256,
            ack_timeout: Duration::from_secs(5),
        }
    }

    /// # Errors
    /// A message naming the setting at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() {
            return Err("node id must not be empty".into());
        }
        if self.pool.is_empty() {
            return Err("node pool must not be empty".into());
        }
        if self.lane_queue == 0 {
            return Err("lane queue must hold at least 1 packet".into());
        }
        Ok(())
    }
}

/// Why a node operation failed, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The game asked for a packet the settings cannot carry.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("gate {0:?} is not linked to this node")]
    GateGone(String),
    #[error("gate {0:?} did not acknowledge in time")]
    AckTimeout(String),
    #[error("gate refused: {0}")]
    Refused(#[from] AckError),
    #[error(transparent)]
    Locator(#[from] LocatorError),
    #[error("user {0} is not connected to any gate")]
    NotConnected(Uid),
    /// The player was evicted at this node's drain deadline and told to reconnect elsewhere.
    #[error("user {0} was evicted from this draining node")]
    Evicted(Uid),
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// No player was left bound and no handler was running.
    Empty,
    /// The deadline passed; the remaining players were told to reconnect.
    Deadline { players: usize },
}

/// A running node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

#[derive(Debug)]
pub(crate) struct NodeInner {
    pub(crate) config: NodeConfig,
    pub(crate) id: Arc<str>,
    router: Router,
    pub(crate) locator: Arc<dyn Locator>,
    state: watch::Sender<NodeState>,
    gates: Mutex<HashMap<Arc<str>, Arc<GateConn>>>,
    lanes: Mutex<HashMap<(u64, ConnectionId), Lane>>,
    bound: Mutex<HashSet<Uid>>,
    /// Players this node evicted at its drain deadline: never bound here again.
    evicted: Mutex<HashSet<Uid>>,
    /// The bound-player count, for whoever reports it (metrics, pod annotations).
    bound_count: watch::Sender<usize>,
    in_flight: AtomicUsize,
    next_request: AtomicU64,
    next_link: AtomicU64,
    pub(crate) metrics: NodeMetrics,
    readiness: Readiness,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// One linked gate.
#[derive(Debug)]
pub(crate) struct GateConn {
    pub(crate) id: Arc<str>,
    serial: u64,
    pub(crate) tx: mpsc::Sender<NodeToGate>,
    pending: Mutex<HashMap<RequestId, oneshot::Sender<Result<(), AckError>>>>,
}

#[derive(Debug)]
struct Lane {
    tx: mpsc::Sender<LaneItem>,
    uid: Uid,
}

enum LaneItem {
    Packet(Context, Arc<Route>),
    Disconnected(Disconnect),
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

impl Node {
    /// Builds a node and registers its metrics. Nothing runs until [`Node::serve`].
    ///
    /// # Errors
    /// The config does not validate.
    pub fn new(
        config: NodeConfig,
        router: Router,
        locator: Arc<dyn Locator>,
        registry: &mut Registry,
    ) -> Result<Self, String> {
        config.validate()?;
        let readiness = Readiness::default();
        readiness.set(true);
        let metrics = NodeMetrics::register(registry);
        metrics
            .state
            .get_or_create(&StateLabels {
                state: NodeState::Work.as_str(),
            })
            .set(1);
        Ok(Node {
            inner: Arc::new(NodeInner {
                id: Arc::from(config.id.as_str()),
                config,
                router,
                locator,
                state: watch::Sender::new(NodeState::Work),
                gates: Mutex::default(),
                lanes: Mutex::default(),
                bound: Mutex::default(),
                evicted: Mutex::default(),
                bound_count: watch::Sender::new(0),
                in_flight: AtomicUsize::new(0),
                next_request: AtomicU64::new(1),
                next_link: AtomicU64::new(1),
                metrics,
                readiness,
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        })
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Ready while the node takes new players.
    pub fn readiness(&self) -> Readiness {
        self.inner.readiness.clone()
    }

    pub fn state(&self) -> NodeState {
        *self.inner.state.borrow()
    }

    /// A receiver of every state change.
    pub fn watch_state(&self) -> watch::Receiver<NodeState> {
        self.inner.state.subscribe()
    }

    /// Changes the state and announces it on every gate link at once.
    pub fn set_state(&self, state: NodeState) {
        let previous = self.inner.state.send_replace(state);
        if previous != state {
            tracing::info!(node = %self.inner.id, from = %previous, to = %state, "node state changed");
            let metrics = &self.inner.metrics;
            metrics
                .state
                .get_or_create(&StateLabels {
                    state: previous.as_str(),
                })
                .set(0);
            metrics
                .state
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(1);
        }
        self.inner
            .readiness
            .set(matches!(state, NodeState::Work | NodeState::Busy));
    }

    /// Players bound to this node now.
    pub fn bound_players(&self) -> usize {
        self.inner.bound.lock().len()
    }

    /// A receiver of the bound-player count, updated on every change.
    pub fn watch_bound_players(&self) -> watch::Receiver<usize> {
        self.inner.bound_count.subscribe()
    }

    fn bound_changed(&self, count: usize) {
        self.inner.metrics.bound_players.set(count as i64);
        self.inner.bound_count.send_replace(count);
    }

    /// Linked gates now.
    pub fn linked_gates(&self) -> usize {
        self.inner.gates.lock().len()
    }

    /// Accepts gate links until shutdown (and keeps this node's player bindings in the locator: see
    /// [`LocatorEvent::Reconnected`]).
    pub fn serve<A: Acceptor>(&self, mut acceptor: A) {
        self.watch_locator();
        let node = self.clone();
        self.inner.tasks.spawn(async move {
            loop {
                let link = tokio::select! {
                    _ = node.inner.shutdown.cancelled() => return,
                    link = acceptor.accept() => link,
                };
                let Some(link) = link else { return };
                let task = node.clone().run_gate_link(link);
                node.inner.tasks.spawn(task);
            }
        });
    }

    /// After a locator outage ([`LocatorEvent::Reconnected`]) the store may have lost every binding: the
    /// node writes the bindings of its players again (where they are missing), so that their next login
    /// (a reconnect) finds this node and the state it holds.
    fn watch_locator(&self) {
        let node = self.clone();
        let mut events = self.inner.locator.events();
        self.inner.tasks.spawn(async move {
            let inner = &node.inner;
            loop {
                let event = tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    event = events.recv() => event,
                };
                match event {
                    Ok(LocatorEvent::Reconnected) => {
                        let uids: Vec<Uid> = inner.bound.lock().iter().copied().collect();
                        let (locator, pool, id) = (
                            inner.locator.clone(),
                            inner.config.pool.clone(),
                            inner.id.clone(),
                        );
                        let outcome = restore_all(uids, |uid| {
                            let (locator, pool, id) = (locator.clone(), pool.clone(), id.clone());
                            async move { locator.restore_node(uid, &pool, &id).await }
                        })
                        .await;
                        if outcome.failed > 0 {
                            tracing::warn!(node = %inner.id, ?outcome, "could not restore every player binding after a locator outage");
                        } else {
                            tracing::info!(node = %inner.id, ?outcome, "player bindings restored after a locator outage");
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Moves to `draining`, waits until no player is bound and no handler runs, or until the drain deadline
    /// (then the remaining players are unbound, told to reconnect and disconnected), and ends in `shut`.
    pub async fn drain(&self) -> DrainOutcome {
        let inner = &self.inner;
        let started = Instant::now();
        let deadline = started + inner.config.drain_deadline;
        self.set_state(NodeState::Draining);
        inner.metrics.drains_started.inc();
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        inner
            .metrics
            .drain_deadline_timestamp
            .set((unix_now + inner.config.drain_deadline).as_secs_f64());
        tracing::info!(node = %inner.id, bound = self.bound_players(), deadline = ?inner.config.drain_deadline, "node draining");
        let outcome = loop {
            if self.bound_players() == 0 && inner.in_flight.load(Ordering::Acquire) == 0 {
                break DrainOutcome::Empty;
            }
            if Instant::now() >= deadline {
                let players = self.evict_all().await;
                break DrainOutcome::Deadline { players };
            }
            tokio::select! {
                _ = inner.shutdown.cancelled() => break DrainOutcome::Deadline { players: self.bound_players() },
                _ = tokio::time::sleep(DRAIN_POLL) => {}
            }
        };
        self.set_state(NodeState::Shut);
        let end = match outcome {
            DrainOutcome::Empty => DrainEnd::Empty,
            DrainOutcome::Deadline { .. } => DrainEnd::Deadline,
        };
        inner
            .metrics
            .drains_finished
            .get_or_create(&DrainLabels { outcome: end })
            .inc();
        inner
            .metrics
            .drain_duration
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(node = %inner.id, ?outcome, elapsed = ?started.elapsed(), "node drained");
        outcome
    }

    /// Releases every bound player in the locator (so that their next login goes to another node), tells
    /// them to reconnect elsewhere and disconnects them.
    ///
    /// Until a gate has closed a player's connection, packets of that player may still be on their way
    /// here: they are answered as usual, since the player stays bound here (in memory) until the
    /// disconnects are sent, and an evicted player is never bound here again (see
    /// [`Node::bind_user_here`]), so a late packet cannot make this node adopt them. Gates keep routing a
    /// draining node's players to it despite the locator's unbind event, and this node sends no
    /// `UserNode { node_id: None }`: either would send those packets to another node, which knows nothing
    /// of the player.
    async fn evict_all(&self) -> usize {
        let inner = &self.inner;
        let uids: Vec<Uid> = inner.bound.lock().iter().copied().collect();
        inner.evicted.lock().extend(uids.iter().copied());
        let by_gate = self.group_by_gate(&uids).await;
        for uid in &uids {
            if let Err(error) = inner
                .locator
                .unbind_node(*uid, &inner.config.pool, &inner.id)
                .await
            {
                tracing::warn!(uid, %error, "could not release a node binding while evicting");
            }
        }
        let reconnect = inner
            .config
            .packet
            .heartbeat_packet(extcode::RECONNECT_ELSEWHERE, None);
        for (gate, uids) in by_gate {
            let target = Target::Users(uids);
            let _ = gate
                .tx
                .send(NodeToGate::Deliver {
                    target: target.clone(),
                    packet: reconnect.clone(),
                    trace: None,
                })
                .await;
            let _ = gate.tx.send(NodeToGate::Disconnect { target }).await;
        }
        let count = {
            let mut bound = inner.bound.lock();
            for uid in &uids {
                bound.remove(uid);
            }
            bound.len()
        };
        self.bound_changed(count);
        tracing::warn!(node = %inner.id, players = uids.len(), "drain deadline passed; players told to reconnect");
        uids.len()
    }

    /// Stops every task and waits for them. Links close, so gates drop this node at once.
    pub async fn shutdown(&self) {
        if self.state() != NodeState::Shut {
            self.set_state(NodeState::Shut);
        }
        // Give link tasks a moment to announce `shut` before they are cancelled.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.inner.shutdown.cancel();
        self.inner.lanes.lock().clear();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    async fn run_gate_link(self, link: NodeLink) {
        let inner = &self.inner;
        let NodeLink { tx, mut rx } = link;
        let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, rx.recv()).await;
        let gate_id = match hello {
            Ok(Some(GateToNode::Hello { gate_id })) => gate_id,
            other => {
                tracing::warn!(?other, "gate link without a hello; closed");
                return;
            }
        };
        // Subscribe before reading the state for the hello, so no change can fall between the two.
        let mut state = inner.state.subscribe();
        let current = *state.borrow_and_update();
        let hello = NodeToGate::Hello {
            node_id: inner.id.to_string(),
            state: current,
            routes: inner.router.specs(),
        };
        if tx.send(hello).await.is_err() {
            return;
        }
        let conn = Arc::new(GateConn {
            id: Arc::from(gate_id.as_str()),
            serial: inner.next_link.fetch_add(1, Ordering::Relaxed),
            tx: tx.clone(),
            pending: Mutex::default(),
        });
        inner.gates.lock().insert(conn.id.clone(), conn.clone());
        inner.metrics.gate_links.inc();
        tracing::info!(node = %inner.id, gate = %gate_id, "gate linked");
        loop {
            tokio::select! {
                _ = inner.shutdown.cancelled() => break,
                message = rx.recv() => match message {
                    Some(message) => self.on_gate_message(&conn, message).await,
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
        tracing::info!(node = %inner.id, gate = %gate_id, "gate link closed");
        inner.metrics.gate_links.dec();
        {
            let mut gates = inner.gates.lock();
            if gates
                .get(&conn.id)
                .is_some_and(|current| current.serial == conn.serial)
            {
                gates.remove(&conn.id);
            }
        }
        conn.pending.lock().clear();
        // Connections of a gate that is gone are gone too: end their lanes with a disconnect.
        let orphaned: Vec<((u64, ConnectionId), Lane)> = {
            let mut lanes = inner.lanes.lock();
            let keys: Vec<_> = lanes
                .keys()
                .filter(|(serial, _)| *serial == conn.serial)
                .copied()
                .collect();
            keys.into_iter()
                .filter_map(|key| lanes.remove(&key).map(|lane| (key, lane)))
                .collect()
        };
        for ((_, cid), lane) in orphaned {
            let event = Disconnect {
                gate_id: conn.id.clone(),
                cid,
                uid: lane.uid,
            };
            let _ = lane.tx.try_send(LaneItem::Disconnected(event));
        }
    }

    async fn on_gate_message(&self, conn: &Arc<GateConn>, message: GateToNode) {
        let inner = &self.inner;
        match message {
            GateToNode::Packet {
                cid,
                uid,
                body,
                trace,
            } => {
                let Frame::Data(data) = inner.config.packet.parse_body(body) else {
                    inner
                        .metrics
                        .dropped
                        .get_or_create(&NodeDropLabels {
                            reason: NodeDrop::Malformed,
                        })
                        .inc();
                    return;
                };
                let Some(route) = inner.router.routes.get(&data.route()).cloned() else {
                    inner
                        .metrics
                        .dropped
                        .get_or_create(&NodeDropLabels {
                            reason: NodeDrop::UnknownRoute,
                        })
                        .inc();
                    return;
                };
                // Traces start at the gate: only a packet it traced (and sampled) is traced here, so a
                // node's sampler never starts traces of its own that the gate knows nothing of.
                let span = match trace {
                    Some(parent) => handle_span(conn, cid, uid, &data, parent),
                    None => tracing::Span::none(),
                };
                let ctx = Context::new(self.clone(), conn.clone(), cid, uid, &data, span);
                inner.in_flight.fetch_add(1, Ordering::AcqRel);
                let lane = self.lane(conn, cid, uid);
                if let Err(mpsc::error::SendError(LaneItem::Packet(ctx, route))) =
                    lane.send(LaneItem::Packet(ctx, route)).await
                {
                    // The lane ended between lookup and send (a disconnect raced the packet): run it on a new one.
                    inner.lanes.lock().remove(&(conn.serial, cid));
                    let retry = self.lane(conn, cid, uid);
                    if retry.send(LaneItem::Packet(ctx, route)).await.is_err() {
                        inner.in_flight.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            }
            GateToNode::Disconnected { cid, uid } => {
                let event = Disconnect {
                    gate_id: conn.id.clone(),
                    cid,
                    uid,
                };
                let lane = inner.lanes.lock().remove(&(conn.serial, cid));
                match lane {
                    Some(lane) => {
                        let _ = lane.tx.send(LaneItem::Disconnected(event)).await;
                    }
                    None => {
                        if let Some(hook) = inner.router.on_disconnect.clone() {
                            inner.tasks.spawn(hook(event));
                        }
                    }
                }
            }
            GateToNode::Ack { request, result } => {
                if let Some(waiter) = conn.pending.lock().remove(&request) {
                    let _ = waiter.send(result);
                }
            }
            GateToNode::Hello { .. } => tracing::warn!(gate = %conn.id, "gate sent a second hello; ignored"),
            GateToNode::Heartbeat => {}
        }
    }

    /// The lane of a connection, created on its first packet.
    fn lane(&self, conn: &GateConn, cid: ConnectionId, uid: Uid) -> mpsc::Sender<LaneItem> {
        let mut lanes = self.inner.lanes.lock();
        if let Some(lane) = lanes.get_mut(&(conn.serial, cid)) {
            lane.uid = uid;
            return lane.tx.clone();
        }
        let (tx, rx) = mpsc::channel(self.inner.config.lane_queue);
        lanes.insert((conn.serial, cid), Lane { tx: tx.clone(), uid });
        self.inner.tasks.spawn(self.clone().run_lane(rx));
        tx
    }

    async fn run_lane(self, mut rx: mpsc::Receiver<LaneItem>) {
        let inner = &self.inner;
        while let Some(item) = rx.recv().await {
            match item {
                LaneItem::Packet(ctx, route) => {
                    let started = Instant::now();
                    let route_id = route.spec.route;
                    // Kept until the outcome is recorded: the span ends when the last handle drops.
                    let span = ctx.span().clone();
                    let outcome = AssertUnwindSafe((route.handler)(ctx))
                        .catch_unwind()
                        .instrument(span.clone())
                        .await;
                    inner.in_flight.fetch_sub(1, Ordering::AcqRel);
                    inner
                        .metrics
                        .handler_duration
                        .get_or_create(&RouteLabels { route: route_id })
                        .observe(started.elapsed().as_secs_f64());
                    let failure = match outcome {
                        Ok(Ok(())) => None,
                        Ok(Err(error)) => {
                            tracing::debug!(route = route_id, %error, "handler failed");
                            Some(Failure::Error)
                        }
                        Err(_) => {
                            tracing::error!(route = route_id, "handler panicked");
                            Some(Failure::Panic)
                        }
                    };
                    span.record(
                        "outcome",
                        match failure {
                            None => "ok",
                            Some(Failure::Error) => "error",
                            Some(Failure::Panic) => "panic",
                        },
                    );
                    if failure.is_some() {
                        span.record("otel.status_code", "ERROR");
                    }
                    if let Some(kind) = failure {
                        inner
                            .metrics
                            .handler_failures
                            .get_or_create(&FailureLabels {
                                route: route_id,
                                kind,
                            })
                            .inc();
                    }
                }
                LaneItem::Disconnected(event) => {
                    if let Some(hook) = inner.router.on_disconnect.clone() {
                        hook(event).await;
                    }
                    return;
                }
            }
        }
    }

    /// Sends an acknowledged operation to `gate` and waits for its answer.
    pub(crate) async fn request(
        &self,
        gate: &GateConn,
        make: impl FnOnce(RequestId) -> NodeToGate,
    ) -> Result<(), NodeError> {
        let id = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        gate.pending.lock().insert(id, tx);
        if gate.tx.send(make(id)).await.is_err() {
            gate.pending.lock().remove(&id);
            return Err(NodeError::GateGone(gate.id.to_string()));
        }
        match tokio::time::timeout(self.inner.config.ack_timeout, rx).await {
            Ok(Ok(result)) => result.map_err(NodeError::from),
            Ok(Err(_)) => Err(NodeError::GateGone(gate.id.to_string())),
            Err(_) => {
                gate.pending.lock().remove(&id);
                Err(NodeError::AckTimeout(gate.id.to_string()))
            }
        }
    }

    /// Packs a serde value as a packet with the node's codec.
    pub(crate) fn pack<T: Serialize + ?Sized>(
        &self,
        route: i32,
        seq: i32,
        value: &T,
    ) -> Result<Bytes, NodeError> {
        let config = &self.inner.config;
        let mut buf = BytesMut::with_capacity(128);
        let start = config.packet.begin_data(route, seq, &mut buf)?;
        config.codec.encode(value, &mut buf)?;
        config.packet.finish_data(&mut buf, start)?;
        Ok(buf.freeze())
    }

    /// Packs a prost message as a packet (protobuf codec).
    pub(crate) fn pack_message<M: prost::Message>(
        &self,
        route: i32,
        seq: i32,
        message: &M,
    ) -> Result<Bytes, NodeError> {
        let config = &self.inner.config;
        let mut buf = BytesMut::with_capacity(message.encoded_len() + 16);
        let start = config.packet.begin_data(route, seq, &mut buf)?;
        config.codec.encode_message(message, &mut buf)?;
        config.packet.finish_data(&mut buf, start)?;
        Ok(buf.freeze())
    }

    pub(crate) fn gate(&self, id: &str) -> Option<Arc<GateConn>> {
        self.inner.gates.lock().get(id).cloned()
    }

    /// The gate link of the gate `uid` is connected to.
    pub(crate) async fn gate_of(&self, uid: Uid) -> Result<Arc<GateConn>, NodeError> {
        let gate_id = self
            .inner
            .locator
            .locate_gate(uid)
            .await?
            .ok_or(NodeError::NotConnected(uid))?;
        self.gate(&gate_id).ok_or(NodeError::GateGone(gate_id))
    }

    async fn group_by_gate(&self, uids: &[Uid]) -> Vec<(Arc<GateConn>, Vec<Uid>)> {
        let mut groups: HashMap<Arc<str>, (Arc<GateConn>, Vec<Uid>)> = HashMap::new();
        for &uid in uids {
            match self.gate_of(uid).await {
                Ok(gate) => groups
                    .entry(gate.id.clone())
                    .or_insert_with(|| (gate, Vec::new()))
                    .1
                    .push(uid),
                Err(error) => tracing::debug!(uid, %error, "player not reachable"),
            }
        }
        groups.into_values().collect()
    }

    /// Pushes a packet (seq 0) to one player, wherever they are connected.
    ///
    /// # Errors
    /// The player is not connected, the value does not encode, or the locator failed.
    pub async fn push<T: Serialize + ?Sized>(
        &self,
        uid: Uid,
        route: i32,
        value: &T,
    ) -> Result<(), NodeError> {
        let packet = self.pack(route, 0, value)?;
        self.push_packet(uid, packet).await
    }

    /// Pushes an already packed packet to one player.
    ///
    /// # Errors
    /// The player is not connected, or the locator failed.
    pub async fn push_packet(&self, uid: Uid, packet: Bytes) -> Result<(), NodeError> {
        self.push_traced(uid, packet, None).await
    }

    /// [`Node::push_packet`], carrying the trace context of the span that pushes.
    pub(crate) async fn push_traced(
        &self,
        uid: Uid,
        packet: Bytes,
        trace: Option<TraceParent>,
    ) -> Result<(), NodeError> {
        let gate = self.gate_of(uid).await?;
        self.inner
            .metrics
            .pushes
            .get_or_create(&PushLabels {
                kind: PushKind::Unicast,
            })
            .inc();
        gate.tx
            .send(NodeToGate::Deliver {
                target: Target::User(uid),
                packet,
                trace,
            })
            .await
            .map_err(|_| NodeError::GateGone(gate.id.to_string()))
    }

    /// Pushes one packet to many players: one message per gate. Players not connected are skipped.
    ///
    /// # Errors
    /// The value does not encode.
    pub async fn multicast<T: Serialize + ?Sized>(
        &self,
        uids: &[Uid],
        route: i32,
        value: &T,
    ) -> Result<(), NodeError> {
        let packet = self.pack(route, 0, value)?;
        self.multicast_traced(uids, packet, None).await;
        Ok(())
    }

    /// Sends a packed push to many players, carrying the trace context of the span that pushes.
    pub(crate) async fn multicast_traced(&self, uids: &[Uid], packet: Bytes, trace: Option<TraceParent>) {
        self.inner
            .metrics
            .pushes
            .get_or_create(&PushLabels {
                kind: PushKind::Multicast,
            })
            .inc();
        for (gate, uids) in self.group_by_gate(uids).await {
            let _ = gate
                .tx
                .send(NodeToGate::Deliver {
                    target: Target::Users(uids),
                    packet: packet.clone(),
                    trace,
                })
                .await;
        }
    }

    /// Pushes one packet to every session of every linked gate.
    ///
    /// # Errors
    /// The value does not encode.
    pub async fn broadcast<T: Serialize + ?Sized>(&self, route: i32, value: &T) -> Result<(), NodeError> {
        let packet = self.pack(route, 0, value)?;
        self.broadcast_traced(packet, None).await;
        Ok(())
    }

    /// Sends a packed push to every session, carrying the trace context of the span that pushes.
    pub(crate) async fn broadcast_traced(&self, packet: Bytes, trace: Option<TraceParent>) {
        self.inner
            .metrics
            .pushes
            .get_or_create(&PushLabels {
                kind: PushKind::Broadcast,
            })
            .inc();
        let gates: Vec<Arc<GateConn>> = self.inner.gates.lock().values().cloned().collect();
        for gate in gates {
            let _ = gate
                .tx
                .send(NodeToGate::Deliver {
                    target: Target::Broadcast,
                    packet: packet.clone(),
                    trace,
                })
                .await;
        }
    }

    /// Closes a player's connection, wherever it is.
    ///
    /// # Errors
    /// The player is not connected, or the locator failed.
    pub async fn disconnect_user(&self, uid: Uid) -> Result<(), NodeError> {
        let gate = self.gate_of(uid).await?;
        gate.tx
            .send(NodeToGate::Disconnect {
                target: Target::User(uid),
            })
            .await
            .map_err(|_| NodeError::GateGone(gate.id.to_string()))
    }

    /// Whether `uid` is bound to this node.
    pub fn is_bound(&self, uid: Uid) -> bool {
        self.inner.bound.lock().contains(&uid)
    }

    /// Binds `uid`'s stateful traffic to this node: in the locator, and on `gate` (the player's gate) at once.
    pub(crate) async fn bind_user_here(&self, uid: Uid, gate: &GateConn) -> Result<(), NodeError> {
        let inner = &self.inner;
        if inner.evicted.lock().contains(&uid) {
            return Err(NodeError::Evicted(uid));
        }
        inner
            .locator
            .bind_node(uid, &inner.config.pool, &inner.id)
            .await?;
        let count = {
            let mut bound = inner.bound.lock();
            bound.insert(uid);
            bound.len()
        };
        self.bound_changed(count);
        let _ = gate
            .tx
            .send(NodeToGate::UserNode {
                uid,
                node_id: Some(inner.id.to_string()),
            })
            .await;
        Ok(())
    }

    /// Releases `uid`'s binding to this node (if it is still this node's).
    pub(crate) async fn unbind_user_here(&self, uid: Uid, gate: &GateConn) -> Result<(), NodeError> {
        let inner = &self.inner;
        let count = {
            let mut bound = inner.bound.lock();
            bound.remove(&uid);
            bound.len()
        };
        self.bound_changed(count);
        if inner
            .locator
            .unbind_node(uid, &inner.config.pool, &inner.id)
            .await?
        {
            let _ = gate.tx.send(NodeToGate::UserNode { uid, node_id: None }).await;
        }
        Ok(())
    }
}

//! Everything a node sends to gates: answers, pushes, binding notices and acknowledged operations.
//!
//! [`Outbound`] is the handle handlers, hooks and ticks hold: the linked gates, the locator, the codec and
//! this node's bindings, without the receiving side of the node (links, lanes, drain).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use serde::Serialize;
use switchyard_cluster::link::LinkSender;
use switchyard_cluster::locator::Locator;
use switchyard_protocol::EncodeError;
use switchyard_protocol::link::{
    AckError, CallId, CallStatus, NodeToGate, RequestId, Target, TraceParent, Uid, feature,
};
use switchyard_protocol::packet::SIZE_FIELD_BYTES;
use tokio::sync::{Semaphore, oneshot};

use crate::bindings::Bindings;
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::metrics::{NodeMetrics, PushKind, PushLabels};

/// One linked gate.
#[derive(Debug)]
pub(crate) struct GateConn {
    pub(crate) id: Arc<str>,
    /// Tells a link from an older one of the same gate.
    pub(crate) serial: u64,
    pub(crate) tx: LinkSender<NodeToGate>,
    /// The feature bits the gate announced ([`switchyard_protocol::link::feature`]).
    pub(crate) features: u32,
    pending: Mutex<HashMap<RequestId, oneshot::Sender<Result<(), AckError>>>>,
    /// Calls made through this gate that wait for their reply.
    pub(crate) calls: Mutex<HashMap<CallId, oneshot::Sender<(CallStatus, Bytes)>>>,
    /// Payload bytes queued on the lanes of this link ([`NodeConfig::link_lane_bytes`]).
    pub(crate) lane_bytes: Arc<AtomicUsize>,
    /// Whether this link's lane caps were logged already.
    cap_warned: AtomicBool,
}

impl GateConn {
    pub(crate) fn new(id: Arc<str>, serial: u64, tx: LinkSender<NodeToGate>, features: u32) -> Self {
        GateConn {
            id,
            serial,
            tx,
            features,
            pending: Mutex::default(),
            calls: Mutex::default(),
            lane_bytes: Arc::default(),
            cap_warned: AtomicBool::new(false),
        }
    }

    /// Hands a call's reply to the caller waiting for it (gone if it timed out).
    pub(crate) fn call_replied(&self, call: CallId, status: CallStatus, body: Bytes) {
        if let Some(waiter) = self.calls.lock().remove(&call) {
            let _ = waiter.send((status, body));
        }
    }

    /// True the first time this link hits a lane cap: it is logged once per link.
    pub(crate) fn first_cap_warning(&self) -> bool {
        !self.cap_warned.swap(true, Ordering::Relaxed)
    }

    /// Whether the gate relays calls and per-pool bindings.
    pub(crate) fn relays_calls(&self) -> bool {
        self.features & feature::CALLS != 0
    }

    /// Hands the gate's answer to the operation waiting for it.
    pub(crate) fn acknowledged(&self, request: RequestId, result: Result<(), AckError>) {
        if let Some(waiter) = self.pending.lock().remove(&request) {
            let _ = waiter.send(result);
        }
    }

    /// The link closed: every waiting operation and call fails at once.
    pub(crate) fn closed(&self) {
        self.pending.lock().clear();
        self.calls.lock().clear();
    }

    pub(crate) async fn send(&self, message: NodeToGate) -> Result<(), NodeError> {
        self.tx
            .send(message)
            .await
            .map_err(|_| NodeError::GateGone(self.id.to_string()))
    }
}

/// A node's sending side. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: NodeConfig,
    pub(crate) id: Arc<str>,
    pub(crate) locator: Arc<dyn Locator>,
    pub(crate) gates: Mutex<HashMap<Arc<str>, Arc<GateConn>>>,
    pub(crate) bindings: Bindings,
    pub(crate) metrics: NodeMetrics,
    pub(crate) next_request: AtomicU64,
    /// Calls this node may have waiting for replies.
    pub(crate) call_slots: Arc<Semaphore>,
    /// Spreads calls over the linked gates.
    pub(crate) call_turn: AtomicUsize,
}

impl Outbound {
    pub(crate) fn new(config: NodeConfig, locator: Arc<dyn Locator>, metrics: NodeMetrics) -> Self {
        let call_slots = Arc::new(Semaphore::new(config.max_calls_in_flight));
        Outbound {
            shared: Arc::new(Shared {
                id: Arc::from(config.id.as_str()),
                config,
                locator,
                gates: Mutex::default(),
                bindings: Bindings::default(),
                metrics,
                next_request: AtomicU64::new(1),
                call_slots,
                call_turn: AtomicUsize::new(0),
            }),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared.id
    }

    /// This node's pool.
    pub fn pool(&self) -> &str {
        &self.shared.config.pool
    }

    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// Players bound to this node now.
    pub fn bound_players(&self) -> usize {
        self.shared.bindings.len()
    }

    /// Whether `uid` is bound to this node.
    pub fn is_bound(&self, uid: Uid) -> bool {
        self.shared.bindings.contains(uid)
    }

    /// Linked gates now.
    pub fn linked_gates(&self) -> usize {
        self.shared.gates.lock().len()
    }

    /// The gate `uid` is connected to, per the locator.
    ///
    /// # Errors
    /// The locator failed.
    pub async fn locate_gate(&self, uid: Uid) -> Result<Option<String>, NodeError> {
        Ok(self.shared.locator.locate_gate(uid).await?)
    }

    /// The node `uid` is bound to in this node's pool, per the locator.
    ///
    /// # Errors
    /// The locator failed.
    pub async fn locate_node(&self, uid: Uid) -> Result<Option<String>, NodeError> {
        let shared = &self.shared;
        Ok(shared.locator.locate_node(uid, &shared.config.pool).await?)
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
        self.push_traced(uid, packet, None).await
    }

    /// Pushes an already packed packet to one player.
    ///
    /// # Errors
    /// The packet is over the largest client packet ([`NodeError::Encode`] with
    /// [`EncodeError::TooLarge`]: no client could read it, so it is not sent), the player is not connected,
    /// or the locator failed.
    pub async fn push_packet(&self, uid: Uid, packet: Bytes) -> Result<(), NodeError> {
        self.check_size(&packet)?;
        self.push_traced(uid, packet, None).await
    }

    /// Refuses (and counts) a whole packet over the largest client packet the settings allow. Packets this
    /// node packs are checked as they are packed; this is for packets the game packed itself.
    fn check_size(&self, packet: &[u8]) -> Result<(), NodeError> {
        let max = self.shared.config.packet.max_packet_bytes();
        let size = packet.len().saturating_sub(SIZE_FIELD_BYTES) as u64;
        if size > u64::from(max) {
            return Err(self.refused(EncodeError::TooLarge { size, max }));
        }
        Ok(())
    }

    /// A packet the game asked for that cannot be sent, counted when it is too large.
    pub(crate) fn refused(&self, error: EncodeError) -> NodeError {
        if matches!(error, EncodeError::TooLarge { .. }) {
            self.shared.metrics.oversize_sends.inc();
        }
        NodeError::Encode(error)
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

    /// Pushes one packet to every session of every linked gate.
    ///
    /// # Errors
    /// The value does not encode.
    pub async fn broadcast<T: Serialize + ?Sized>(&self, route: i32, value: &T) -> Result<(), NodeError> {
        let packet = self.pack(route, 0, value)?;
        self.broadcast_traced(packet, None).await;
        Ok(())
    }

    /// Closes a player's connection, wherever it is.
    ///
    /// # Errors
    /// The player is not connected, or the locator failed.
    pub async fn disconnect_user(&self, uid: Uid) -> Result<(), NodeError> {
        let gate = self.gate_of(uid).await?;
        gate.send(NodeToGate::Disconnect {
            target: Target::User(uid),
        })
        .await
    }

    /// Packs a serde value as a packet with the node's codec.
    pub(crate) fn pack<T: Serialize + ?Sized>(
        &self,
        route: i32,
        seq: i32,
        value: &T,
    ) -> Result<Bytes, NodeError> {
        let config = &self.shared.config;
        let mut buf = BytesMut::with_capacity(128);
        let start = config.packet.begin_data(route, seq, &mut buf)?;
        config.codec.encode(value, &mut buf)?;
        config
            .packet
            .finish_data(&mut buf, start)
            .map_err(|error| self.refused(error))?;
        Ok(buf.freeze())
    }

    /// Packs a prost message as a packet (protobuf codec).
    pub(crate) fn pack_message<M: prost::Message>(
        &self,
        route: i32,
        seq: i32,
        message: &M,
    ) -> Result<Bytes, NodeError> {
        let config = &self.shared.config;
        let mut buf = BytesMut::with_capacity(message.encoded_len() + 16);
        let start = config.packet.begin_data(route, seq, &mut buf)?;
        config.codec.encode_message(message, &mut buf)?;
        config
            .packet
            .finish_data(&mut buf, start)
            .map_err(|error| self.refused(error))?;
        Ok(buf.freeze())
    }

    /// Sends an acknowledged operation to `gate` and waits for its answer.
    pub(crate) async fn request(
        &self,
        gate: &GateConn,
        make: impl FnOnce(RequestId) -> NodeToGate,
    ) -> Result<(), NodeError> {
        let id = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        gate.pending.lock().insert(id, tx);
        if gate.tx.send(make(id)).await.is_err() {
            gate.pending.lock().remove(&id);
            return Err(NodeError::GateGone(gate.id.to_string()));
        }
        match tokio::time::timeout(self.shared.config.ack_timeout, rx).await {
            Ok(Ok(result)) => result.map_err(NodeError::from),
            Ok(Err(_)) => Err(NodeError::GateGone(gate.id.to_string())),
            Err(_) => {
                gate.pending.lock().remove(&id);
                Err(NodeError::AckTimeout(gate.id.to_string()))
            }
        }
    }

    pub(crate) fn gate(&self, id: &str) -> Option<Arc<GateConn>> {
        self.shared.gates.lock().get(id).cloned()
    }

    /// The gate link of the gate `uid` is connected to.
    pub(crate) async fn gate_of(&self, uid: Uid) -> Result<Arc<GateConn>, NodeError> {
        let gate_id = self
            .shared
            .locator
            .locate_gate(uid)
            .await?
            .ok_or(NodeError::NotConnected(uid))?;
        self.gate(&gate_id).ok_or(NodeError::GateGone(gate_id))
    }

    pub(crate) async fn group_by_gate(&self, uids: &[Uid]) -> Vec<(Arc<GateConn>, Vec<Uid>)> {
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

    fn count_push(&self, kind: PushKind) {
        self.shared
            .metrics
            .pushes
            .get_or_create(&PushLabels { kind })
            .inc();
    }

    /// [`Outbound::push_packet`], carrying the trace context of the span that pushes.
    pub(crate) async fn push_traced(
        &self,
        uid: Uid,
        packet: Bytes,
        trace: Option<TraceParent>,
    ) -> Result<(), NodeError> {
        let gate = self.gate_of(uid).await?;
        self.count_push(PushKind::Unicast);
        gate.send(NodeToGate::Deliver {
            target: Target::User(uid),
            packet,
            trace,
        })
        .await
    }

    /// Sends a packed push to many players, carrying the trace context of the span that pushes.
    pub(crate) async fn multicast_traced(&self, uids: &[Uid], packet: Bytes, trace: Option<TraceParent>) {
        self.count_push(PushKind::Multicast);
        for (gate, uids) in self.group_by_gate(uids).await {
            let _ = gate
                .send(NodeToGate::Deliver {
                    target: Target::Users(uids),
                    packet: packet.clone(),
                    trace,
                })
                .await;
        }
    }

    /// Sends a packed push to every session, carrying the trace context of the span that pushes.
    pub(crate) async fn broadcast_traced(&self, packet: Bytes, trace: Option<TraceParent>) {
        self.count_push(PushKind::Broadcast);
        let gates: Vec<Arc<GateConn>> = self.shared.gates.lock().values().cloned().collect();
        for gate in gates {
            let _ = gate
                .send(NodeToGate::Deliver {
                    target: Target::Broadcast,
                    packet: packet.clone(),
                    trace,
                })
                .await;
        }
    }

    fn bound_changed(&self, count: usize) {
        self.shared.metrics.bound_players.set(count as i64);
    }

    /// Binds `uid`'s stateful traffic to this node: in the locator, and on `gate` (the player's gate) at once.
    pub(crate) async fn bind_here(&self, uid: Uid, gate: &GateConn) -> Result<(), NodeError> {
        let shared = &self.shared;
        if shared.bindings.is_evicted(uid) {
            return Err(NodeError::Evicted(uid));
        }
        shared
            .locator
            .bind_node(uid, &shared.config.pool, &shared.id)
            .await?;
        self.bound_changed(shared.bindings.insert(uid, gate.id.clone()));
        let _ = gate
            .send(NodeToGate::UserNode {
                uid,
                node_id: Some(shared.id.to_string()),
                pool: None,
            })
            .await;
        Ok(())
    }

    /// Releases `uid`'s binding to this node (if it is still this node's).
    pub(crate) async fn unbind_here(&self, uid: Uid, gate: &GateConn) -> Result<(), NodeError> {
        let shared = &self.shared;
        self.bound_changed(shared.bindings.remove(uid));
        if shared
            .locator
            .unbind_node(uid, &shared.config.pool, &shared.id)
            .await?
        {
            let _ = gate
                .send(NodeToGate::UserNode {
                    uid,
                    node_id: None,
                    pool: None,
                })
                .await;
        }
        Ok(())
    }

    /// Binds `uid`'s stateful traffic in `pool` to the node `node_id` (a match host, say): in the locator,
    /// and on the player's gate at once (before anything this node sends the player afterwards), so the
    /// player's next packet for `pool` goes there without a locator read. The named node adopts the player
    /// (counts them, keeps them through a drain) when it sees the binding.
    ///
    /// # Errors
    /// The locator failed, or this node was named and evicted the player at its drain deadline.
    pub async fn bind_in(&self, pool: &str, uid: Uid, node_id: &str) -> Result<(), NodeError> {
        let shared = &self.shared;
        let here = pool == shared.config.pool && node_id == &*shared.id;
        if here && shared.bindings.is_evicted(uid) {
            return Err(NodeError::Evicted(uid));
        }
        shared.locator.bind_node(uid, pool, node_id).await?;
        let gate = self.gate_of(uid).await.ok();
        if here {
            let gate_id = gate
                .as_ref()
                .map_or_else(|| Arc::from(""), |gate| gate.id.clone());
            self.bound_changed(shared.bindings.insert(uid, gate_id));
        }
        if let Some(gate) = gate.filter(|gate| gate.relays_calls()) {
            let _ = gate
                .send(NodeToGate::UserNode {
                    uid,
                    node_id: Some(node_id.to_owned()),
                    pool: Some(pool.to_owned()),
                })
                .await;
        }
        Ok(())
    }

    /// Releases `uid`'s binding in `pool` if it still names `node_id` (a newer binding is left alone), and
    /// tells the player's gate at once. Returns whether a binding was released.
    ///
    /// # Errors
    /// The locator failed.
    pub async fn unbind_in(&self, pool: &str, uid: Uid, node_id: &str) -> Result<bool, NodeError> {
        let shared = &self.shared;
        if pool == shared.config.pool && node_id == &*shared.id {
            self.bound_changed(shared.bindings.remove(uid));
        }
        if !shared.locator.unbind_node(uid, pool, node_id).await? {
            return Ok(false);
        }
        if let Ok(gate) = self.gate_of(uid).await
            && gate.relays_calls()
        {
            let _ = gate
                .send(NodeToGate::UserNode {
                    uid,
                    node_id: None,
                    pool: Some(pool.to_owned()),
                })
                .await;
        }
        Ok(true)
    }

    /// Binds `uid` in `pool` to this node unless it is bound to a node there already, atomically, and
    /// returns the node it is bound to afterwards: a way for the nodes of a pool to elect one of them for a
    /// job (the owner of a matchmaking queue, say) with a key no player uses (a negative uid).
    ///
    /// # Errors
    /// The locator failed.
    pub async fn claim_in(&self, pool: &str, uid: Uid) -> Result<String, NodeError> {
        let shared = &self.shared;
        if shared.locator.restore_node(uid, pool, &shared.id).await? {
            return Ok(shared.id.to_string());
        }
        match shared.locator.locate_node(uid, pool).await? {
            Some(owner) => Ok(owner),
            // Released between the two calls: claim it again.
            None => Box::pin(self.claim_in(pool, uid)).await,
        }
    }

    /// The node `uid` is bound to in `pool`, per the locator.
    ///
    /// # Errors
    /// The locator failed.
    pub async fn locate_node_in(&self, pool: &str, uid: Uid) -> Result<Option<String>, NodeError> {
        Ok(self.shared.locator.locate_node(uid, pool).await?)
    }

    /// Adopts `uid`, whom another node bound to this one (see [`Outbound::bind_in`]): counted here and kept
    /// through a drain. A player this node evicted is not adopted again.
    pub(crate) async fn adopt(&self, uid: Uid) {
        let shared = &self.shared;
        if shared.bindings.contains(uid) || shared.bindings.is_evicted(uid) {
            return;
        }
        let gate = match shared.locator.locate_gate(uid).await {
            Ok(Some(gate)) => Arc::from(gate),
            _ => Arc::from(""),
        };
        self.bound_changed(shared.bindings.insert(uid, gate));
        tracing::debug!(node = %shared.id, uid, "player bound here by another node; adopted");
    }

    /// Forgets `uid`, whom another node of this pool has bound: the locator's binding is that node's now.
    pub(crate) fn released_elsewhere(&self, uid: Uid) {
        self.bound_changed(self.shared.bindings.remove(uid));
    }

    /// Releases every bound player in the locator (so that their next login goes to another node), tells
    /// them to reconnect elsewhere and disconnects them; returns how many there were.
    ///
    /// Until a gate has closed a player's connection, packets of that player may still be on their way
    /// here: they are answered as usual, since the player stays bound here (in memory) until the
    /// disconnects are sent, and an evicted player is never bound here again (see
    /// [`Outbound::bind_here`]), so a late packet cannot make this node adopt them. Gates keep routing a
    /// draining node's players to it despite the locator's unbind event, and this node sends no
    /// `UserNode { node_id: None }`: either would send those packets to another node, which knows nothing
    /// of the player.
    pub(crate) async fn evict_all(&self) -> usize {
        let shared = &self.shared;
        let uids = shared.bindings.mark_evicted();
        let by_gate = self.group_by_gate(&uids).await;
        for uid in &uids {
            if let Err(error) = shared
                .locator
                .unbind_node(*uid, &shared.config.pool, &shared.id)
                .await
            {
                tracing::warn!(uid, %error, "could not release a node binding while evicting");
            }
        }
        let reconnect = shared
            .config
            .packet
            .heartbeat_packet(switchyard_protocol::extcode::RECONNECT_ELSEWHERE, None);
        for (gate, uids) in by_gate {
            let target = Target::Users(uids);
            let _ = gate
                .send(NodeToGate::Deliver {
                    target: target.clone(),
                    packet: reconnect.clone(),
                    trace: None,
                })
                .await;
            let _ = gate.send(NodeToGate::Disconnect { target }).await;
        }
        self.bound_changed(shared.bindings.remove_all(&uids));
        tracing::warn!(node = %shared.id, players = uids.len(), "drain deadline passed; players told to reconnect");
        uids.len()
    }
}

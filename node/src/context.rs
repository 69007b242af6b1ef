//! What a handler sees of one client packet, and what it can do about it.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchyard_cluster::telemetry;
use switchyard_protocol::DataFrame;
use switchyard_protocol::link::{ConnectionId, NO_UID, NodeToGate, Target, Uid};
use tracing::{Instrument as _, Span};

use crate::codec::CodecError;
use crate::node::{GateConn, Node, NodeError};

/// One client packet being handled. Cheap to clone; answers go to the gate the packet came through.
#[derive(Debug, Clone)]
pub struct Context {
    node: Node,
    gate: Arc<GateConn>,
    cid: ConnectionId,
    uid: Uid,
    route: i32,
    seq: i32,
    payload: Bytes,
    /// `node.handle` when the gate traced this packet, else disabled.
    span: Span,
}

impl Context {
    pub(crate) fn new(
        node: Node,
        gate: Arc<GateConn>,
        cid: ConnectionId,
        uid: Uid,
        data: &DataFrame,
        span: Span,
    ) -> Self {
        Context {
            node,
            gate,
            cid,
            uid,
            route: data.route(),
            seq: data.seq(),
            payload: data.payload(),
            span,
        }
    }

    /// The trace span of this packet's handling (`node.handle`), disabled unless the gate traced the
    /// packet: a handler may create its own spans under it (`parent: ctx.span()`), which then cost
    /// nothing for untraced packets.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// A `node.push` span under this packet's span, or a disabled one (at the cost of one branch) when
    /// the packet is not traced.
    fn push_span(&self, kind: &'static str, route: i32) -> Span {
        if self.span.is_disabled() {
            return Span::none();
        }
        tracing::info_span!(target: telemetry::SPAN_TARGET, parent: &self.span, "node.push", kind, route)
    }

    /// The uid the session was bound to when the packet left the gate, or 0.
    pub fn uid(&self) -> Uid {
        self.uid
    }

    pub fn is_logged_in(&self) -> bool {
        self.uid != NO_UID
    }

    pub fn cid(&self) -> ConnectionId {
        self.cid
    }

    pub fn gate_id(&self) -> &str {
        &self.gate.id
    }

    pub fn route(&self) -> i32 {
        self.route
    }

    pub fn seq(&self) -> i32 {
        self.seq
    }

    /// The raw payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// This node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn node_id(&self) -> &str {
        self.node.id()
    }

    /// Decodes the payload with the node's codec (JSON or MessagePack).
    ///
    /// # Errors
    /// The client sent a payload that does not decode into `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        self.node.config().codec.decode(&self.payload)
    }

    /// Decodes the payload as a protobuf message (protobuf codec).
    ///
    /// # Errors
    /// The payload is not a valid `M`.
    pub fn parse_message<M: prost::Message + Default>(&self) -> Result<M, CodecError> {
        self.node.config().codec.decode_message(&self.payload)
    }

    /// Answers the packet: same route and seq, encoded with the node's codec.
    ///
    /// # Errors
    /// The value does not encode, or the gate is gone.
    pub async fn respond<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), NodeError> {
        let packet = self.node.pack(self.route, self.seq, value)?;
        self.deliver_here(Target::Connection(self.cid), packet).await
    }

    /// Answers with a protobuf message.
    ///
    /// # Errors
    /// The message does not encode with this codec, or the gate is gone.
    pub async fn respond_message<M: prost::Message>(&self, message: &M) -> Result<(), NodeError> {
        let packet = self.node.pack_message(self.route, self.seq, message)?;
        self.deliver_here(Target::Connection(self.cid), packet).await
    }

    /// Answers with raw payload bytes.
    ///
    /// # Errors
    /// The payload is too large for the packet settings, or the gate is gone.
    pub async fn respond_bytes(&self, payload: &[u8]) -> Result<(), NodeError> {
        let packet = self
            .node
            .config()
            .packet
            .data_packet(self.route, self.seq, payload)?;
        self.deliver_here(Target::Connection(self.cid), packet).await
    }

    async fn deliver_here(&self, target: Target, packet: Bytes) -> Result<(), NodeError> {
        self.gate
            .tx
            .send(NodeToGate::Deliver {
                target,
                packet,
                trace: telemetry::traceparent(&self.span),
            })
            .await
            .map_err(|_| NodeError::GateGone(self.gate.id.to_string()))
    }

    /// Pushes to one player, wherever connected (traced as `node.push` when the packet is).
    ///
    /// # Errors
    /// See [`Node::push`].
    pub async fn push<T: Serialize + ?Sized>(
        &self,
        uid: Uid,
        route: i32,
        value: &T,
    ) -> Result<(), NodeError> {
        let packet = self.node.pack(route, 0, value)?;
        let span = self.push_span("unicast", route);
        let trace = telemetry::traceparent(&span);
        self.node.push_traced(uid, packet, trace).instrument(span).await
    }

    /// Pushes to many players, one message per gate.
    ///
    /// # Errors
    /// See [`Node::multicast`].
    pub async fn multicast<T: Serialize + ?Sized>(
        &self,
        uids: &[Uid],
        route: i32,
        value: &T,
    ) -> Result<(), NodeError> {
        let packet = self.node.pack(route, 0, value)?;
        let span = self.push_span("multicast", route);
        let trace = telemetry::traceparent(&span);
        self.node
            .multicast_traced(uids, packet, trace)
            .instrument(span)
            .await;
        Ok(())
    }

    /// Pushes to every connected session.
    ///
    /// # Errors
    /// See [`Node::broadcast`].
    pub async fn broadcast<T: Serialize + ?Sized>(&self, route: i32, value: &T) -> Result<(), NodeError> {
        let packet = self.node.pack(route, 0, value)?;
        let span = self.push_span("broadcast", route);
        let trace = telemetry::traceparent(&span);
        self.node.broadcast_traced(packet, trace).instrument(span).await;
        Ok(())
    }

    /// Binds `uid` to this packet's connection (login). A different connection that held `uid` on the same
    /// gate loses it but stays open. Returns once the gate has applied it and recorded it in the locator.
    ///
    /// # Errors
    /// The connection is gone, or the gate did not answer.
    pub async fn bind_gate(&self, uid: Uid) -> Result<(), NodeError> {
        let cid = self.cid;
        self.node
            .request(&self.gate, |request| NodeToGate::BindUser { request, cid, uid })
            .await
    }

    /// Removes `uid`'s binding to its connection on this packet's gate; the connection stays open.
    ///
    /// # Errors
    /// The gate has no session of `uid`, or did not answer.
    pub async fn unbind_gate(&self, uid: Uid) -> Result<(), NodeError> {
        self.node
            .request(&self.gate, |request| NodeToGate::UnbindUser { request, uid })
            .await
    }

    /// Binds `uid`'s stateful routes to this node.
    ///
    /// # Errors
    /// The locator failed.
    pub async fn bind_node(&self, uid: Uid) -> Result<(), NodeError> {
        self.node.bind_user_here(uid, &self.gate).await
    }

    /// Releases `uid`'s binding to this node.
    ///
    /// # Errors
    /// The locator failed.
    pub async fn unbind_node(&self, uid: Uid) -> Result<(), NodeError> {
        self.node.unbind_user_here(uid, &self.gate).await
    }

    /// Whether `uid` is bound to this node. A stateful packet for a uid that is not means the player's
    /// binding was lost (their node vanished and the gate cleared it): the handler may rebind here.
    pub fn is_bound_here(&self, uid: Uid) -> bool {
        self.node.is_bound(uid)
    }

    /// The gate `uid` is connected to, per the locator.
    ///
    /// # Errors
    /// The locator failed.
    pub async fn locate_gate(&self, uid: Uid) -> Result<Option<String>, NodeError> {
        Ok(self.node.inner.locator.locate_gate(uid).await?)
    }

    /// The node `uid` is bound to in this node's pool, per the locator.
    ///
    /// # Errors
    /// The locator failed.
    pub async fn locate_node(&self, uid: Uid) -> Result<Option<String>, NodeError> {
        let inner = &self.node.inner;
        Ok(inner.locator.locate_node(uid, &inner.config.pool).await?)
    }

    /// Closes this packet's connection after what is queued for it.
    ///
    /// # Errors
    /// The gate is gone.
    pub async fn disconnect(&self) -> Result<(), NodeError> {
        self.gate
            .tx
            .send(NodeToGate::Disconnect {
                target: Target::Connection(self.cid),
            })
            .await
            .map_err(|_| NodeError::GateGone(self.gate.id.to_string()))
    }

    /// Closes `uid`'s connection, wherever it is.
    ///
    /// # Errors
    /// See [`Node::disconnect_user`].
    pub async fn disconnect_user(&self, uid: Uid) -> Result<(), NodeError> {
        self.node.disconnect_user(uid).await
    }
}

//! What a handler sees of one client packet (or one call from another node), and what it can do about it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchyard_cluster::telemetry;
use switchyard_protocol::Frame;
use switchyard_protocol::link::{CallId, CallStatus, ConnectionId, NO_UID, NodeToGate, Target, Uid};
use switchyard_protocol::packet::SIZE_FIELD_BYTES;
use tracing::{Instrument as _, Span};

use crate::codec::CodecError;
use crate::error::NodeError;
use crate::outbound::{GateConn, Outbound};

/// One client packet, as the link delivered it.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub(crate) gate: Arc<GateConn>,
    pub(crate) cid: ConnectionId,
    pub(crate) uid: Uid,
    pub(crate) route: i32,
    pub(crate) seq: i32,
    pub(crate) payload: Bytes,
    pub(crate) peer: Option<SocketAddr>,
    /// `node.handle` when the gate traced this packet, else disabled.
    pub(crate) span: Span,
    /// Set when this is a call from another node rather than a client packet.
    pub(crate) call: Option<Arc<CallOrigin>>,
}

/// Where a node-to-node call came from, and where its answer goes.
#[derive(Debug)]
pub(crate) struct CallOrigin {
    pub(crate) call: CallId,
    pub(crate) from: String,
    pub(crate) oneway: bool,
}

/// One client packet being handled. Cheap to clone; answers go to the gate the packet came through.
#[derive(Debug, Clone)]
pub struct Context {
    outbound: Outbound,
    packet: Incoming,
    /// Whether the handler answered; an error after an answer is not answered again. Shared by the
    /// packets of one connection, which run one after another.
    responded: Arc<AtomicBool>,
}

impl Context {
    pub(crate) fn new(outbound: Outbound, packet: Incoming, responded: Arc<AtomicBool>) -> Self {
        responded.store(false, Ordering::Relaxed);
        Context {
            outbound,
            packet,
            responded,
        }
    }

    pub(crate) fn has_responded(&self) -> bool {
        self.responded.load(Ordering::Relaxed)
    }

    /// The trace span of this packet's handling (`node.handle`), disabled unless the gate traced the
    /// packet: a handler may create its own spans under it (`parent: ctx.span()`), which then cost
    /// nothing for untraced packets.
    pub fn span(&self) -> &Span {
        &self.packet.span
    }

    /// A `node.push` span under this packet's span, or a disabled one (at the cost of one branch) when
    /// the packet is not traced.
    fn push_span(&self, kind: &'static str, route: i32) -> Span {
        if self.packet.span.is_disabled() {
            return Span::none();
        }
        tracing::info_span!(target: telemetry::SPAN_TARGET, parent: &self.packet.span, "node.push", kind, route)
    }

    /// The uid the session was bound to when the packet left the gate, or 0. For a call from another node:
    /// the player the call is on behalf of, or 0.
    pub fn uid(&self) -> Uid {
        self.packet.uid
    }

    /// The id of the node that made this call, or `None` for a client packet.
    pub fn caller_node(&self) -> Option<&str> {
        self.packet.call.as_ref().map(|call| call.from.as_str())
    }

    pub fn is_logged_in(&self) -> bool {
        self.packet.uid != NO_UID
    }

    pub fn cid(&self) -> ConnectionId {
        self.packet.cid
    }

    pub fn gate_id(&self) -> &str {
        &self.packet.gate.id
    }

    /// The client's IP address and port as the gate saw them (the source named by a PROXY protocol
    /// header behind a load balancer), when the gate sent it.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.packet.peer
    }

    pub fn route(&self) -> i32 {
        self.packet.route
    }

    pub fn seq(&self) -> i32 {
        self.packet.seq
    }

    /// The raw payload.
    pub fn payload(&self) -> &Bytes {
        &self.packet.payload
    }

    /// This node's sending side: pushes, lookups, outside of this packet.
    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    pub fn node_id(&self) -> &str {
        self.outbound.node_id()
    }

    /// Decodes the payload with the node's codec (JSON or MessagePack). With `?` in a handler, a payload
    /// that does not decode is answered with [`crate::code::BAD_REQUEST`].
    ///
    /// # Errors
    /// The client sent a payload that does not decode into `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        self.outbound.config().codec.decode(&self.packet.payload)
    }

    /// Decodes the payload as a protobuf message (protobuf codec).
    ///
    /// # Errors
    /// The payload is not a valid `M`.
    pub fn parse_message<M: prost::Message + Default>(&self) -> Result<M, CodecError> {
        self.outbound.config().codec.decode_message(&self.packet.payload)
    }

    /// Answers the packet: same route and seq, encoded with the node's codec.
    ///
    /// # Errors
    /// The value does not encode, or the gate is gone.
    pub async fn respond<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), NodeError> {
        let packet = self.outbound.pack(self.packet.route, self.packet.seq, value)?;
        self.respond_packet(packet).await
    }

    /// Answers with a protobuf message.
    ///
    /// # Errors
    /// The message does not encode with this codec, or the gate is gone.
    pub async fn respond_message<M: prost::Message>(&self, message: &M) -> Result<(), NodeError> {
        let packet = self
            .outbound
            .pack_message(self.packet.route, self.packet.seq, message)?;
        self.respond_packet(packet).await
    }

    /// Answers with raw payload bytes.
    ///
    /// # Errors
    /// The payload is too large for the packet settings, or the gate is gone.
    pub async fn respond_bytes(&self, payload: &[u8]) -> Result<(), NodeError> {
        let packet = self
            .outbound
            .config()
            .packet
            .data_packet(self.packet.route, self.packet.seq, payload)
            .map_err(|error| self.outbound.refused(error))?;
        self.respond_packet(packet).await
    }

    /// Sends a whole reply packet to this packet's connection, or its payload to the node that called.
    pub(crate) async fn respond_packet(&self, packet: Bytes) -> Result<(), NodeError> {
        if self.packet.call.is_some() {
            return self.respond_call(CallStatus::Ok, self.payload_of(packet)).await;
        }
        self.responded.store(true, Ordering::Relaxed);
        self.packet
            .gate
            .send(NodeToGate::Deliver {
                target: Target::Connection(self.packet.cid),
                packet,
                trace: telemetry::traceparent(&self.packet.span),
            })
            .await
    }

    /// Sends a handler's error reply: to a client like any answer, to a calling node as a failed call.
    pub(crate) async fn respond_error(&self, packet: Bytes) -> Result<(), NodeError> {
        if self.packet.call.is_some() {
            return self
                .respond_call(CallStatus::RemoteError, self.payload_of(packet))
                .await;
        }
        self.respond_packet(packet).await
    }

    /// Answers a call from another node (nothing for a one-way call, whose caller does not wait).
    pub(crate) async fn respond_call(&self, status: CallStatus, body: Bytes) -> Result<(), NodeError> {
        self.responded.store(true, Ordering::Relaxed);
        let Some(call) = self.packet.call.as_ref().filter(|call| !call.oneway) else {
            return Ok(());
        };
        self.packet
            .gate
            .send(NodeToGate::CallReply {
                call: call.call,
                status,
                body,
            })
            .await
    }

    /// The payload of a whole packet this node packed.
    fn payload_of(&self, packet: Bytes) -> Bytes {
        let body = packet.slice(SIZE_FIELD_BYTES.min(packet.len())..);
        match self.outbound.config().packet.parse_body(body) {
            Frame::Data(data) => data.payload(),
            _ => Bytes::new(),
        }
    }

    /// Fails for a call from another node, which has no client connection.
    fn client_only(&self) -> Result<(), NodeError> {
        match &self.packet.call {
            Some(call) => Err(NodeError::NoConnection {
                caller: call.from.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Pushes to one player, wherever connected (traced as `node.push` when the packet is).
    ///
    /// # Errors
    /// See [`Outbound::push`].
    pub async fn push<T: Serialize + ?Sized>(
        &self,
        uid: Uid,
        route: i32,
        value: &T,
    ) -> Result<(), NodeError> {
        let packet = self.outbound.pack(route, 0, value)?;
        let span = self.push_span("unicast", route);
        let trace = telemetry::traceparent(&span);
        self.outbound
            .push_traced(uid, packet, trace)
            .instrument(span)
            .await
    }

    /// Pushes to many players, one message per gate.
    ///
    /// # Errors
    /// See [`Outbound::multicast`].
    pub async fn multicast<T: Serialize + ?Sized>(
        &self,
        uids: &[Uid],
        route: i32,
        value: &T,
    ) -> Result<(), NodeError> {
        let packet = self.outbound.pack(route, 0, value)?;
        let span = self.push_span("multicast", route);
        let trace = telemetry::traceparent(&span);
        self.outbound
            .multicast_traced(uids, packet, trace)
            .instrument(span)
            .await;
        Ok(())
    }

    /// Pushes to every connected session.
    ///
    /// # Errors
    /// See [`Outbound::broadcast`].
    pub async fn broadcast<T: Serialize + ?Sized>(&self, route: i32, value: &T) -> Result<(), NodeError> {
        let packet = self.outbound.pack(route, 0, value)?;
        let span = self.push_span("broadcast", route);
        let trace = telemetry::traceparent(&span);
        self.outbound
            .broadcast_traced(packet, trace)
            .instrument(span)
            .await;
        Ok(())
    }

    /// Binds `uid` to this packet's connection (login). A different connection that held `uid` on the same
    /// gate loses it but stays open. Returns once the gate has applied it and recorded it in the locator.
    ///
    /// # Errors
    /// The connection is gone, or the gate did not answer.
    pub async fn bind_gate(&self, uid: Uid) -> Result<(), NodeError> {
        self.client_only()?;
        let cid = self.packet.cid;
        self.outbound
            .request(&self.packet.gate, |request| NodeToGate::BindUser {
                request,
                cid,
                uid,
            })
            .await
    }

    /// Removes `uid`'s binding to its connection on this packet's gate; the connection stays open.
    ///
    /// # Errors
    /// The gate has no session of `uid`, or did not answer.
    pub async fn unbind_gate(&self, uid: Uid) -> Result<(), NodeError> {
        self.client_only()?;
        self.outbound
            .request(&self.packet.gate, |request| NodeToGate::UnbindUser {
                request,
                uid,
            })
            .await
    }

    /// Binds `uid`'s stateful routes to this node.
    ///
    /// # Errors
    /// The locator failed, or the player was evicted from this draining node.
    pub async fn bind_node(&self, uid: Uid) -> Result<(), NodeError> {
        if self.packet.call.is_some() {
            // The call's gate is not the player's: bind through the player's own gate.
            let outbound = &self.outbound;
            return outbound.bind_in(outbound.pool(), uid, outbound.node_id()).await;
        }
        self.outbound.bind_here(uid, &self.packet.gate).await
    }

    /// Releases `uid`'s binding to this node.
    ///
    /// # Errors
    /// The locator failed.
    pub async fn unbind_node(&self, uid: Uid) -> Result<(), NodeError> {
        if self.packet.call.is_some() {
            let outbound = &self.outbound;
            return outbound
                .unbind_in(outbound.pool(), uid, outbound.node_id())
                .await
                .map(drop);
        }
        self.outbound.unbind_here(uid, &self.packet.gate).await
    }

    /// Whether `uid` is bound to this node. A stateful packet for a uid that is not means the player's
    /// binding was lost (their node vanished and the gate cleared it): the handler may rebind here.
    pub fn is_bound_here(&self, uid: Uid) -> bool {
        self.outbound.is_bound(uid)
    }

    /// The gate `uid` is connected to, per the locator.
    ///
    /// # Errors
    /// The locator failed.
    pub async fn locate_gate(&self, uid: Uid) -> Result<Option<String>, NodeError> {
        self.outbound.locate_gate(uid).await
    }

    /// The node `uid` is bound to in this node's pool, per the locator.
    ///
    /// # Errors
    /// The locator failed.
    pub async fn locate_node(&self, uid: Uid) -> Result<Option<String>, NodeError> {
        self.outbound.locate_node(uid).await
    }

    /// Closes this packet's connection after what is queued for it.
    ///
    /// # Errors
    /// The gate is gone.
    pub async fn disconnect(&self) -> Result<(), NodeError> {
        self.client_only()?;
        self.packet
            .gate
            .send(NodeToGate::Disconnect {
                target: Target::Connection(self.packet.cid),
            })
            .await
    }

    /// Closes `uid`'s connection, wherever it is.
    ///
    /// # Errors
    /// See [`Outbound::disconnect_user`].
    pub async fn disconnect_user(&self, uid: Uid) -> Result<(), NodeError> {
        self.outbound.disconnect_user(uid).await
    }
}

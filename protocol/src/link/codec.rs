//! The link wire format: how [`GateToNode`] and [`NodeToGate`] travel over TCP between processes.
//!
//! This text is the specification. An implementation that follows it byte for byte interoperates with
//! Switchyard gates and nodes of the same [`LINK_VERSION`].
//!
//! # Frames
//!
//! A link is a byte stream of frames, each:
//!
//! ```text
//! | length u32 | type u8 | fields ... | extensions ... |
//! ```
//!
//! - Every integer is big-endian; signed ones (uid, route) are two's complement.
//! - `length` counts every byte after itself, the type byte included, so a frame takes `4 + length`
//!   bytes. It is at least 1. A receiver compares it with its maximum before it buffers the frame and
//!   closes the link when it is larger ([`DEFAULT_MAX_FRAME_BYTES`] = 1 MiB + one maximal default client
//!   packet, size field included: 1 048 576 + 65 536 + 4 = 1 114 116 bytes).
//! - `type` names the message. Gate → node types are `0x01..=0x7f`, node → gate types `0x81..=0xff`,
//!   so a frame sent the wrong way round is recognised as such.
//! - `fields` are the message's fields in the order of the tables below, without padding.
//! - `extensions` are the bytes left in the frame after the fields (see [Extensions](#extensions)).
//!
//! Any error while reading a link (oversize, unknown type, truncated or invalid field) is the peer's
//! fault and leaves the stream unusable: the receiver closes the link.
//!
//! A sender never writes a frame over the receiver's maximum ([`encode_gate_to_node_within`],
//! [`encode_node_to_gate_within`]). A `Deliver` or `Disconnect` whose `users` target makes it too long is
//! sent as several frames of the same message, each naming a run of the uid list in order (the receiver
//! applies each as it would the whole, so it needs no reassembly); any other message over the maximum is
//! not sent at all, and the link stays up.
//!
//! ## Field encodings
//!
//! | field | bytes |
//! |---|---|
//! | `u16`, `u32`, `u64`, `i32`, `i64` | 2, 4, 8, 4, 8 bytes, big-endian |
//! | `id` (gate id, node id) | `len u8`, then `len` bytes of UTF-8: at most 255 bytes |
//! | `opt id` | `0x00` (none), or `0x01` then an `id` |
//! | `bytes` (a client packet) | `len u32`, then `len` bytes, carried opaque |
//! | `state` | `u8`: 0 work, 1 busy, 2 draining, 3 shut |
//! | `result` | `u8`: 0 ok, 1 unknown connection, 2 unknown user, 3 shutting down |
//! | `route` | `route i32`, then `flags u8`: bit 0 stateful, bit 1 authorized, bit 2 internal; bits 3–7 are 0 |
//! | `target` | `kind u8`, then 0 connection: `cid u64`; 1 user: `uid i64`; 2 users: `count u32`, `count` × `uid i64`; 3 broadcast: nothing |
//!
//! ## Gate → node
//!
//! | type | message | fields |
//! |---|---|---|
//! | `0x01` | `Hello` | `version u16`, `gate_id id` |
//! | `0x02` | `Packet` | `cid u64`, `uid i64`, `body bytes` (the client packet after its size field); extension `0x01` |
//! | `0x03` | `Disconnected` | `cid u64`, `uid i64` |
//! | `0x04` | `Ack` | `request u64`, `result` |
//! | `0x05` | `Heartbeat` | none |
//! | `0x06` | `Call` | `call u64`, `from id` (the calling node), `route i32`, `uid i64`, `flags u8` (bit 0 one-way; bits 1–7 are 0), `body bytes` (a payload in the cluster's codec); extension `0x01` |
//! | `0x07` | `CallReply` | `call u64`, `status`, `body bytes` |
//!
//! ## Node → gate
//!
//! | type | message | fields |
//! |---|---|---|
//! | `0x81` | `Hello` | `version u16`, `node_id id`, `state`, `count u32`, `count` × `route` |
//! | `0x82` | `State` | `state` |
//! | `0x83` | `Deliver` | `target`, `packet bytes` (a whole client packet, size field included); extension `0x01` |
//! | `0x84` | `BindUser` | `request u64`, `cid u64`, `uid i64` |
//! | `0x85` | `UnbindUser` | `request u64`, `uid i64` |
//! | `0x86` | `UserNode` | `uid i64`, `node_id opt id` |
//! | `0x87` | `Disconnect` | `target` |
//! | `0x88` | `Heartbeat` | none |
//! | `0x89` | `Call` | `call u64`, `call target`, `route i32`, `uid i64`, `flags u8` (bit 0 one-way; bits 1–7 are 0), `body bytes`; extension `0x01` |
//! | `0x8a` | `CallReply` | `call u64`, `status`, `body bytes` |
//!
//! ## Node-to-node calls
//!
//! A node calls a route of another node through any gate that announced the `calls` feature: it sends
//! `Call` with an id of its own, the gate picks the node (`call target` kind 0: any node of the named pool
//! that serves the route, by the gate's routing policy, never a draining one; kind 1: the node with that id)
//! and relays the call under an id of its own; the called node answers with `CallReply`, which the gate
//! relays back under the caller's id. The gate answers itself when it cannot deliver (`status` 2, 3 or 5).
//! A one-way call gets no reply at all. Internal routes are reachable this way and never from a client.
//!
//! | field | bytes |
//! |---|---|
//! | `call target` | `kind u8`, then an `id`: 0 pool name, 1 node id |
//! | `status` | `u8`: 0 ok, 1 the handler failed (the body is its error reply), 2 no node, 3 node gone, 4 unknown route, 5 overloaded |
//!
//! # Versions
//!
//! Each side sends its `Hello` as its first frame without waiting for the other's. The `version u16`
//! comes right after the type byte (frame bytes 5 and 6) in every version to come, whatever else
//! changes. This version is [`LINK_VERSION`] = 1. A receiver that reads a different version refuses the
//! Hello with [`LinkDecodeError::VersionMismatch`] and closes the link; as both sides send a Hello,
//! both log the mismatch. A change that an older peer could not safely ignore bumps the version;
//! anything else is an extension.
//!
//! # Extensions
//!
//! The bytes of a frame after its message's fields are a sequence of optional fields, each
//!
//! ```text
//! | tag u8 | len u16 | value (len bytes) |
//! ```
//!
//! A receiver skips every extension it does not know, so new optional fields can be added without a
//! version bump; an extension cut short by the end of the frame is an error. An absent extension costs
//! no byte. Version 1 defines these:
//!
//! | tag | in | value |
//! |---|---|---|
//! | `0x01` | gate → node `Packet`, node → gate `Deliver` | W3C `traceparent`: its 55-byte header value, `00-<32 hex>-<16 hex>-<2 hex>` (lower-case hex) |
//! | `0x02` | gate → node `Packet` | the client's address: `family u8` (4 or 6), the IP address (4 or 16 bytes), `port u16` |
//! | `0x03` | node → gate `Hello`, `UserNode` | a pool name, UTF-8, 1 to 255 bytes: the node's pool (absent: the default pool, `game`), or the pool a `UserNode` binds in (absent: the sender's pool) |
//! | `0x04` | gate → node `Hello` | `features u32`: bit 0 the gate relays calls and per-pool `UserNode`s; absent: 0 |
//!
//! Gates and nodes of this release always send `0x03` and `0x04`; a node sends `Call` and a `UserNode` for
//! another pool only to gates that announced the `calls` feature, so a gate of an older release in the
//! same cluster (during a rolling update) is never sent a message it cannot read.
//!
//! `traceparent` ([`TraceParent`]) is the context of the sender's span: a gate sends it on the
//! packets it traces (and only on those: an untraced packet carries no extension), a node on the
//! responses and pushes of a traced handler. A value that is not a valid version-00 `traceparent` (another
//! length or version, bad hex, upper case, an all-zero id) is ignored as if absent: it is the sender's
//! bug, not worth a player's packet, so it neither fails the frame nor is counted. When a frame carries
//! several, the first valid one counts. In other messages the tag is skipped like an unknown one.
//!
//! The peer address is what the gate saw of the client (the TCP peer, or the source a PROXY protocol
//! header named), so a node can log, rate-limit or geolocate by it. A malformed value is ignored as if
//! absent, for the same reason as an invalid `traceparent`.
//!
//! # Examples
//!
//! ```text
//! gate → node Heartbeat            00 00 00 01  05
//! gate → node Hello "g1" (calls)   00 00 00 0d  01  00 01  02 67 31  04 00 04 00 00 00 01
//! gate → node Packet cid 7 uid -1  00 00 00 1a  02  00 00 00 00 00 00 00 07  ff ff ff ff ff ff ff ff
//!   body 00 00 01 00 01                         00 00 00 05  00 00 01 00 01
//!   traced: length 00 00 00 54, the same fields, then  01  00 37  30 30 2d ... (55 bytes: "00-<trace id>-<span id>-01")
//! node → gate State draining       00 00 00 02  82  02
//! ```
//!
//! # Zero copy
//!
//! The decoder splits each whole frame off the read buffer ([`BytesMut::split_to`], then `freeze`) and
//! hands out `bytes` fields as slices of it ([`Bytes::slice`]): client packets are never copied. The
//! encoders append to a [`BytesMut`], so a writer can coalesce many frames into one write.

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};

use super::{
    AckError, CallId, CallStatus, CallTarget, GateToNode, NodeState, NodeToGate, RouteSpec, Target,
    TraceParent, Uid,
};
use crate::packet::{DEFAULT_MAX_PACKET_BYTES, PacketConfig, SIZE_FIELD_BYTES};

mod encode;
mod within;

use encode::{Users, put_deliver, put_disconnect, trace_len};
pub use encode::{encode_gate_to_node, encode_node_to_gate};

pub use within::{encode_gate_to_node_within, encode_node_to_gate_within, uids_per_frame};

/// The link protocol version this code speaks, carried in both Hellos.
pub const LINK_VERSION: u16 = 1;
/// Bytes taken by the length field in front of every frame.
pub const LENGTH_FIELD_BYTES: usize = 4;
/// The longest gate or node id the link can carry, in bytes of UTF-8.
pub const MAX_ID_BYTES: usize = u8::MAX as usize;
/// Room a frame limit leaves for everything but the one client packet it may carry: ids, uid lists, routes.
pub const FRAME_ALLOWANCE_BYTES: u32 = 1024 * 1024;
/// Default cap on the length field: 1 MiB plus one maximal default client packet (size field included).
pub const DEFAULT_MAX_FRAME_BYTES: u32 =
    FRAME_ALLOWANCE_BYTES + DEFAULT_MAX_PACKET_BYTES + SIZE_FIELD_BYTES as u32;

/// Extension tags. See the module documentation.
pub mod ext {
    /// The W3C `traceparent` ([`super::TraceParent`], 55 bytes) of a gate → node `Packet` or a node → gate
    /// `Deliver`.
    pub const TRACEPARENT: u8 = 0x01;
    /// The client's address as the gate saw it (after any PROXY protocol header), on a gate → node
    /// `Packet`: `family u8` (4 or 6), the address (4 or 16 bytes), `port u16`.
    pub const PEER_ADDR: u8 = 0x02;
    /// A pool name on a node → gate `Hello` or `UserNode`.
    pub const POOL: u8 = 0x03;
    /// The feature bits of a gate → node `Hello`.
    pub const FEATURES: u8 = 0x04;
}

mod ty {
    pub(super) const G_HELLO: u8 = 0x01;
    pub(super) const G_PACKET: u8 = 0x02;
    pub(super) const G_DISCONNECTED: u8 = 0x03;
    pub(super) const G_ACK: u8 = 0x04;
    pub(super) const G_HEARTBEAT: u8 = 0x05;
    pub(super) const G_CALL: u8 = 0x06;
    pub(super) const G_CALL_REPLY: u8 = 0x07;

    pub(super) const N_HELLO: u8 = 0x81;
    pub(super) const N_STATE: u8 = 0x82;
    pub(super) const N_DELIVER: u8 = 0x83;
    pub(super) const N_BIND_USER: u8 = 0x84;
    pub(super) const N_UNBIND_USER: u8 = 0x85;
    pub(super) const N_USER_NODE: u8 = 0x86;
    pub(super) const N_DISCONNECT: u8 = 0x87;
    pub(super) const N_HEARTBEAT: u8 = 0x88;
    pub(super) const N_CALL: u8 = 0x89;
    pub(super) const N_CALL_REPLY: u8 = 0x8a;

    /// Node → gate types have the high bit set.
    pub(super) const NODE_TO_GATE_BIT: u8 = 0x80;
}

mod target_kind {
    pub(super) const CONNECTION: u8 = 0;
    pub(super) const USER: u8 = 1;
    pub(super) const USERS: u8 = 2;
    pub(super) const BROADCAST: u8 = 3;
}

mod call_target {
    pub(super) const POOL: u8 = 0;
    pub(super) const NODE: u8 = 1;
}

mod call_flag {
    pub(super) const ONEWAY: u8 = 0x01;
}

mod route_flag {
    pub(super) const STATEFUL: u8 = 0x01;
    pub(super) const AUTHORIZED: u8 = 0x02;
    pub(super) const INTERNAL: u8 = 0x04;
    pub(super) const KNOWN: u8 = STATEFUL | AUTHORIZED | INTERNAL;
}

/// Which way a link frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    GateToNode,
    NodeToGate,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::GateToNode => "gate-to-node",
            Direction::NodeToGate => "node-to-gate",
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A link byte stream that cannot go on. The peer is at fault; the link must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkDecodeError {
    #[error("peer announced a link frame of {len} bytes, over the maximum of {max} bytes")]
    Oversize { len: u32, max: u32 },
    #[error("peer sent an empty link frame (length 0, no type byte)")]
    EmptyFrame,
    #[error("peer sent link frame type 0x{type_byte:02x}, which is no {expected} message type")]
    UnknownType { type_byte: u8, expected: Direction },
    #[error(
        "peer sent a {expected} link frame of type 0x{type_byte:02x}, which is a type of the other \
         direction (are both ends gates, or both nodes?)"
    )]
    WrongDirection { type_byte: u8, expected: Direction },
    #[error("peer sent a {message} link frame that ends inside its {field}")]
    Truncated {
        message: &'static str,
        field: &'static str,
    },
    #[error("peer sent a {message} link frame whose {field} is not UTF-8")]
    NotUtf8 {
        message: &'static str,
        field: &'static str,
    },
    #[error("peer speaks link protocol version {peer}, this side speaks version {ours}")]
    VersionMismatch { peer: u16, ours: u16 },
    #[error("peer sent node state {0}, which is not one of 0 work, 1 busy, 2 draining, 3 shut")]
    UnknownNodeState(u8),
    #[error(
        "peer sent ack result {0}, which is not one of 0 ok, 1 unknown connection, 2 unknown user, 3 shutting down"
    )]
    UnknownAckResult(u8),
    #[error("peer sent target kind {0}, which is not one of 0 connection, 1 user, 2 users, 3 broadcast")]
    UnknownTargetKind(u8),
    #[error("peer sent call target kind {0}, which is not one of 0 pool, 1 node")]
    UnknownCallTarget(u8),
    #[error("peer sent call status {0}, which is not one of 0 ok to 5 overloaded")]
    UnknownCallStatus(u8),
    #[error("peer sent call flags 0x{0:02x}; only bit 0 (one-way) is defined")]
    UnknownCallFlags(u8),
    #[error("peer sent a {message} link frame whose {field} presence byte is {value}, not 0 or 1")]
    InvalidPresence {
        message: &'static str,
        field: &'static str,
        value: u8,
    },
    #[error("peer sent route {route} with flags 0x{flags:02x}, which set bits this version does not know")]
    UnknownRouteFlags { route: i32, flags: u8 },
}

/// A link message this side was asked to send cannot be framed. The caller is at fault; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkEncodeError {
    #[error("{field} of {len} bytes is longer than the link's limit of 255 bytes")]
    IdTooLong { field: &'static str, len: usize },
    #[error("{field} has {len} entries or bytes, more than a link frame can count (u32)")]
    TooLong { field: &'static str, len: usize },
    #[error("link frame of {len} bytes does not fit the u32 length field")]
    FrameTooLarge { len: usize },
    /// The message alone is over the receiver's frame limit and cannot be split (only a `Users` target
    /// can be).
    #[error("link frame of {len} bytes (length field) is over the peer's limit of {max} bytes")]
    OverFrameLimit { len: usize, max: u32 },
}

/// The largest frame a receiver should accept when client packets are capped by `packet`: 1 MiB plus
/// one maximal client packet, size field included (saturating at `u32::MAX`).
pub fn max_frame_bytes_for(packet: &PacketConfig) -> u32 {
    FRAME_ALLOWANCE_BYTES
        .saturating_add(packet.max_packet_bytes())
        .saturating_add(SIZE_FIELD_BYTES as u32)
}

/// Splits a link byte stream into messages. Handles partial reads and many frames per read; checks each
/// frame's length against its maximum before it reserves room for the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkDecoder {
    max_frame_bytes: u32,
}

impl Default for LinkDecoder {
    fn default() -> Self {
        LinkDecoder::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl LinkDecoder {
    /// A decoder that refuses frames whose length field exceeds `max_frame_bytes`.
    pub fn new(max_frame_bytes: u32) -> Self {
        LinkDecoder { max_frame_bytes }
    }

    /// A decoder sized for links carrying client packets of `packet`'s settings
    /// (see [`max_frame_bytes_for`]).
    pub fn for_packets(packet: &PacketConfig) -> Self {
        LinkDecoder::new(max_frame_bytes_for(packet))
    }

    /// The cap on the length field (bytes after the length field itself).
    pub fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }

    /// Takes the next gate → node message off the front of `buf`, or returns `None` when more bytes are
    /// needed (having reserved room for the rest of an announced frame that is within the maximum).
    ///
    /// # Errors
    /// Any [`LinkDecodeError`]: the peer is at fault and the link must be closed.
    pub fn decode_gate_to_node(&mut self, buf: &mut BytesMut) -> Result<Option<GateToNode>, LinkDecodeError> {
        match self.next_frame(buf)? {
            Some(frame) => parse_gate_to_node(frame).map(Some),
            None => Ok(None),
        }
    }

    /// Takes the next node → gate message off the front of `buf`, or returns `None` when more bytes are
    /// needed (having reserved room for the rest of an announced frame that is within the maximum).
    ///
    /// # Errors
    /// Any [`LinkDecodeError`]: the peer is at fault and the link must be closed.
    pub fn decode_node_to_gate(&mut self, buf: &mut BytesMut) -> Result<Option<NodeToGate>, LinkDecodeError> {
        match self.next_frame(buf)? {
            Some(frame) => parse_node_to_gate(frame).map(Some),
            None => Ok(None),
        }
    }

    /// Splits one whole frame (type byte onwards) off `buf`.
    fn next_frame(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, LinkDecodeError> {
        let Some(&length_field) = buf.first_chunk::<LENGTH_FIELD_BYTES>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(length_field);
        if len > self.max_frame_bytes {
            return Err(LinkDecodeError::Oversize {
                len,
                max: self.max_frame_bytes,
            });
        }
        if len == 0 {
            return Err(LinkDecodeError::EmptyFrame);
        }
        let total = LENGTH_FIELD_BYTES + len as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        buf.advance(LENGTH_FIELD_BYTES);
        Ok(Some(buf.split_to(len as usize).freeze()))
    }
}

fn parse_gate_to_node(frame: Bytes) -> Result<GateToNode, LinkDecodeError> {
    let expected = Direction::GateToNode;
    let type_byte = frame[0];
    let mut r = Reader::new(frame, "");
    let msg = match type_byte {
        ty::G_HELLO => {
            r.message = "gate-to-node Hello";
            r.version()?;
            let gate_id = r.id("gate id")?;
            let features = r.extensions()?.features.unwrap_or(0);
            return Ok(GateToNode::Hello { gate_id, features });
        }
        ty::G_PACKET => {
            r.message = "gate-to-node Packet";
            let (cid, uid, body) = (r.u64("connection id")?, r.i64("uid")?, r.bytes("packet body")?);
            let Extensions { trace, peer, .. } = r.extensions()?;
            return Ok(GateToNode::Packet {
                cid,
                uid,
                body,
                trace,
                peer,
            });
        }
        ty::G_DISCONNECTED => {
            r.message = "gate-to-node Disconnected";
            GateToNode::Disconnected {
                cid: r.u64("connection id")?,
                uid: r.i64("uid")?,
            }
        }
        ty::G_ACK => {
            r.message = "gate-to-node Ack";
            let request = r.u64("request id")?;
            let result = match r.u8("result")? {
                0 => Ok(()),
                code => Err(AckError::from_u8(code).ok_or(LinkDecodeError::UnknownAckResult(code))?),
            };
            GateToNode::Ack { request, result }
        }
        ty::G_HEARTBEAT => {
            r.message = "gate-to-node Heartbeat";
            GateToNode::Heartbeat
        }
        ty::G_CALL => {
            r.message = "gate-to-node Call";
            let (call, from, route, uid) = (
                r.u64("call id")?,
                r.id("caller node id")?,
                r.i32("route")?,
                r.i64("uid")?,
            );
            let oneway = r.call_flags()?;
            let body = r.bytes("call body")?;
            let trace = r.extensions()?.trace;
            return Ok(GateToNode::Call {
                call,
                from,
                route,
                uid,
                oneway,
                body,
                trace,
            });
        }
        ty::G_CALL_REPLY => {
            r.message = "gate-to-node CallReply";
            let (call, status, body) = r.call_reply()?;
            GateToNode::CallReply { call, status, body }
        }
        other if other & ty::NODE_TO_GATE_BIT != 0 => {
            return Err(LinkDecodeError::WrongDirection {
                type_byte: other,
                expected,
            });
        }
        other => {
            return Err(LinkDecodeError::UnknownType {
                type_byte: other,
                expected,
            });
        }
    };
    r.extensions()?;
    Ok(msg)
}

fn parse_node_to_gate(frame: Bytes) -> Result<NodeToGate, LinkDecodeError> {
    let expected = Direction::NodeToGate;
    let type_byte = frame[0];
    let mut r = Reader::new(frame, "");
    let msg = match type_byte {
        ty::N_HELLO => {
            r.message = "node-to-gate Hello";
            r.version()?;
            let node_id = r.id("node id")?;
            let state = r.state()?;
            let count = r.count(5, "route list")?;
            let mut routes = Vec::with_capacity(count);
            for _ in 0..count {
                let route = r.i32("route")?;
                let flags = r.u8("route flags")?;
                if flags & !route_flag::KNOWN != 0 {
                    return Err(LinkDecodeError::UnknownRouteFlags { route, flags });
                }
                routes.push(RouteSpec {
                    route,
                    stateful: flags & route_flag::STATEFUL != 0,
                    authorized: flags & route_flag::AUTHORIZED != 0,
                    internal: flags & route_flag::INTERNAL != 0,
                });
            }
            let pool = r.extensions()?.pool;
            return Ok(NodeToGate::Hello {
                node_id,
                state,
                routes,
                pool,
            });
        }
        ty::N_STATE => {
            r.message = "node-to-gate State";
            NodeToGate::State(r.state()?)
        }
        ty::N_DELIVER => {
            r.message = "node-to-gate Deliver";
            let (target, packet) = (r.target()?, r.bytes("packet")?);
            return Ok(NodeToGate::Deliver {
                target,
                packet,
                trace: r.extensions()?.trace,
            });
        }
        ty::N_BIND_USER => {
            r.message = "node-to-gate BindUser";
            NodeToGate::BindUser {
                request: r.u64("request id")?,
                cid: r.u64("connection id")?,
                uid: r.i64("uid")?,
            }
        }
        ty::N_UNBIND_USER => {
            r.message = "node-to-gate UnbindUser";
            NodeToGate::UnbindUser {
                request: r.u64("request id")?,
                uid: r.i64("uid")?,
            }
        }
        ty::N_USER_NODE => {
            r.message = "node-to-gate UserNode";
            let uid = r.i64("uid")?;
            let node_id = match r.u8("node id presence")? {
                0 => None,
                1 => Some(r.id("node id")?),
                value => {
                    return Err(LinkDecodeError::InvalidPresence {
                        message: r.message,
                        field: "node id",
                        value,
                    });
                }
            };
            let pool = r.extensions()?.pool;
            return Ok(NodeToGate::UserNode { uid, node_id, pool });
        }
        ty::N_DISCONNECT => {
            r.message = "node-to-gate Disconnect";
            NodeToGate::Disconnect { target: r.target()? }
        }
        ty::N_HEARTBEAT => {
            r.message = "node-to-gate Heartbeat";
            NodeToGate::Heartbeat
        }
        ty::N_CALL => {
            r.message = "node-to-gate Call";
            let call = r.u64("call id")?;
            let target = match r.u8("call target")? {
                call_target::POOL => CallTarget::Pool(r.id("call target pool")?),
                call_target::NODE => CallTarget::Node(r.id("call target node id")?),
                other => return Err(LinkDecodeError::UnknownCallTarget(other)),
            };
            let (route, uid) = (r.i32("route")?, r.i64("uid")?);
            let oneway = r.call_flags()?;
            let body = r.bytes("call body")?;
            let trace = r.extensions()?.trace;
            return Ok(NodeToGate::Call {
                call,
                target,
                route,
                uid,
                oneway,
                body,
                trace,
            });
        }
        ty::N_CALL_REPLY => {
            r.message = "node-to-gate CallReply";
            let (call, status, body) = r.call_reply()?;
            NodeToGate::CallReply { call, status, body }
        }
        other if other & ty::NODE_TO_GATE_BIT == 0 => {
            return Err(LinkDecodeError::WrongDirection {
                type_byte: other,
                expected,
            });
        }
        other => {
            return Err(LinkDecodeError::UnknownType {
                type_byte: other,
                expected,
            });
        }
    };
    r.extensions()?;
    Ok(msg)
}

/// Reads the fields of one frame, whose type byte it has already passed.
struct Reader {
    frame: Bytes,
    pos: usize,
    message: &'static str,
}

impl Reader {
    fn new(frame: Bytes, message: &'static str) -> Self {
        Reader {
            frame,
            pos: 1,
            message,
        }
    }

    fn remaining(&self) -> usize {
        self.frame.len() - self.pos
    }

    fn truncated(&self, field: &'static str) -> LinkDecodeError {
        LinkDecodeError::Truncated {
            message: self.message,
            field,
        }
    }

    /// The next `n` bytes as a range of the frame.
    fn take(&mut self, n: usize, field: &'static str) -> Result<std::ops::Range<usize>, LinkDecodeError> {
        if self.remaining() < n {
            return Err(self.truncated(field));
        }
        let start = self.pos;
        self.pos += n;
        Ok(start..self.pos)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], LinkDecodeError> {
        let range = self.take(N, field)?;
        let mut out = [0; N];
        out.copy_from_slice(&self.frame[range]);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, LinkDecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, LinkDecodeError> {
        self.array(field).map(u16::from_be_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, LinkDecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, LinkDecodeError> {
        self.array(field).map(u64::from_be_bytes)
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, LinkDecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, LinkDecodeError> {
        self.array(field).map(i64::from_be_bytes)
    }

    fn version(&mut self) -> Result<(), LinkDecodeError> {
        let peer = self.u16("version")?;
        if peer != LINK_VERSION {
            return Err(LinkDecodeError::VersionMismatch {
                peer,
                ours: LINK_VERSION,
            });
        }
        Ok(())
    }

    fn id(&mut self, field: &'static str) -> Result<String, LinkDecodeError> {
        let len = self.u8(field)?;
        let range = self.take(len as usize, field)?;
        match std::str::from_utf8(&self.frame[range]) {
            Ok(id) => Ok(id.to_owned()),
            Err(_) => Err(LinkDecodeError::NotUtf8 {
                message: self.message,
                field,
            }),
        }
    }

    /// A `bytes` field, as a slice of the frame (no copy).
    fn bytes(&mut self, field: &'static str) -> Result<Bytes, LinkDecodeError> {
        let len = self.u32(field)?;
        let range = self.take(len as usize, field)?;
        Ok(self.frame.slice(range))
    }

    /// A `u32` count of entries of `entry_bytes` each, checked against the bytes left in the frame so
    /// that no hostile count can make the reader allocate more than the frame holds.
    fn count(&mut self, entry_bytes: usize, field: &'static str) -> Result<usize, LinkDecodeError> {
        let count = self.u32(field)? as usize;
        if count.saturating_mul(entry_bytes) > self.remaining() {
            return Err(self.truncated(field));
        }
        Ok(count)
    }

    fn state(&mut self) -> Result<NodeState, LinkDecodeError> {
        let value = self.u8("node state")?;
        NodeState::from_u8(value).ok_or(LinkDecodeError::UnknownNodeState(value))
    }

    fn target(&mut self) -> Result<Target, LinkDecodeError> {
        Ok(match self.u8("target")? {
            target_kind::CONNECTION => Target::Connection(self.u64("target connection id")?),
            target_kind::USER => Target::User(self.i64("target uid")?),
            target_kind::USERS => {
                let count = self.count(8, "target uid list")?;
                let mut uids = Vec::with_capacity(count);
                for _ in 0..count {
                    uids.push(self.i64("target uid list")?);
                }
                Target::Users(uids)
            }
            target_kind::BROADCAST => Target::Broadcast,
            other => return Err(LinkDecodeError::UnknownTargetKind(other)),
        })
    }

    /// A call's `flags`: whether it is one-way.
    fn call_flags(&mut self) -> Result<bool, LinkDecodeError> {
        let flags = self.u8("call flags")?;
        if flags & !call_flag::ONEWAY != 0 {
            return Err(LinkDecodeError::UnknownCallFlags(flags));
        }
        Ok(flags & call_flag::ONEWAY != 0)
    }

    /// The fields of a `CallReply`, either way.
    fn call_reply(&mut self) -> Result<(CallId, CallStatus, Bytes), LinkDecodeError> {
        let call = self.u64("call id")?;
        let status = self.u8("call status")?;
        let status = CallStatus::from_u8(status).ok_or(LinkDecodeError::UnknownCallStatus(status))?;
        Ok((call, status, self.bytes("call reply body")?))
    }

    /// Reads the extension section: returns the first valid value of each known extension, skips
    /// everything else (unknown tags, invalid values). Messages that carry none drop the result.
    fn extensions(mut self) -> Result<Extensions, LinkDecodeError> {
        let mut found = Extensions::default();
        while self.remaining() > 0 {
            let tag = self.u8("extension tag")?;
            let len = self.u16("extension length")?;
            let value = self.take(len as usize, "extension value")?;
            match tag {
                ext::TRACEPARENT if found.trace.is_none() => {
                    found.trace = TraceParent::parse(&self.frame[value]);
                }
                ext::PEER_ADDR if found.peer.is_none() => {
                    found.peer = parse_peer(&self.frame[value]);
                }
                ext::POOL if found.pool.is_none() => {
                    // A pool name that is empty or not UTF-8 is the sender's bug: refused, as an id would be.
                    let name = std::str::from_utf8(&self.frame[value])
                        .ok()
                        .filter(|name| !name.is_empty());
                    found.pool = Some(
                        name.ok_or(LinkDecodeError::NotUtf8 {
                            message: self.message,
                            field: "pool name",
                        })?
                        .to_owned(),
                    );
                }
                ext::FEATURES if found.features.is_none() => {
                    found.features = <[u8; 4]>::try_from(&self.frame[value])
                        .ok()
                        .map(u32::from_be_bytes);
                }
                _ => {}
            }
        }
        Ok(found)
    }
}

/// The known extensions of one frame.
#[derive(Debug, Default)]
struct Extensions {
    trace: Option<TraceParent>,
    peer: Option<SocketAddr>,
    pool: Option<String>,
    features: Option<u32>,
}

/// A `PEER_ADDR` value; anything malformed is ignored as if absent, like an invalid `traceparent`.
fn parse_peer(value: &[u8]) -> Option<SocketAddr> {
    match value {
        [4, a, b, c, d, p0, p1] => Some(SocketAddr::from((
            [*a, *b, *c, *d],
            u16::from_be_bytes([*p0, *p1]),
        ))),
        [6, rest @ ..] if rest.len() == 18 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&rest[..16]);
            Some(SocketAddr::from((
                octets,
                u16::from_be_bytes([rest[16], rest[17]]),
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;

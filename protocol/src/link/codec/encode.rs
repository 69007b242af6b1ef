//! The link encoders: one message to one frame appended to a [`BytesMut`], fields written in the order the
//! frame rules in [`super`] give, and checked (id lengths, counts, frame size) before anything is appended.

use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};

use super::*;

/// Bytes of the `PEER_ADDR` extension: none when the address is unknown.
fn peer_len(peer: Option<SocketAddr>) -> usize {
    match peer {
        None => 0,
        Some(SocketAddr::V4(_)) => 3 + 7,
        Some(SocketAddr::V6(_)) => 3 + 19,
    }
}

fn put_peer(dst: &mut BytesMut, peer: Option<SocketAddr>) {
    match peer {
        None => {}
        Some(SocketAddr::V4(addr)) => {
            dst.put_u8(ext::PEER_ADDR);
            dst.put_u16(7);
            dst.put_u8(4);
            dst.put_slice(&addr.ip().octets());
            dst.put_u16(addr.port());
        }
        Some(SocketAddr::V6(addr)) => {
            dst.put_u8(ext::PEER_ADDR);
            dst.put_u16(19);
            dst.put_u8(6);
            dst.put_slice(&addr.ip().octets());
            dst.put_u16(addr.port());
        }
    }
}

/// Appends one gate → node frame to `dst` and returns its length on the wire (length field included).
///
/// # Errors
/// A gate id over 255 bytes or a body or frame too large for its length field; `dst` is then unchanged.
pub fn encode_gate_to_node(msg: &GateToNode, dst: &mut BytesMut) -> Result<usize, LinkEncodeError> {
    match msg {
        GateToNode::Hello { gate_id, features } => frame(dst, ty::G_HELLO, 10 + gate_id.len(), |dst| {
            dst.put_u16(LINK_VERSION);
            put_id(dst, "gate id", gate_id)?;
            dst.put_u8(ext::FEATURES);
            dst.put_u16(4);
            dst.put_u32(*features);
            Ok(())
        }),
        GateToNode::Packet {
            cid,
            uid,
            body,
            trace,
            peer,
        } => frame(
            dst,
            ty::G_PACKET,
            20 + body.len() + trace_len(*trace) + peer_len(*peer),
            |dst| {
                dst.put_u64(*cid);
                dst.put_i64(*uid);
                put_bytes(dst, "packet body", body)?;
                put_trace(dst, *trace);
                put_peer(dst, *peer);
                Ok(())
            },
        ),
        GateToNode::Disconnected { cid, uid } => frame(dst, ty::G_DISCONNECTED, 16, |dst| {
            dst.put_u64(*cid);
            dst.put_i64(*uid);
            Ok(())
        }),
        GateToNode::Ack { request, result } => frame(dst, ty::G_ACK, 9, |dst| {
            dst.put_u64(*request);
            dst.put_u8(match result {
                Ok(()) => 0,
                Err(error) => error.to_u8(),
            });
            Ok(())
        }),
        GateToNode::Heartbeat => frame(dst, ty::G_HEARTBEAT, 0, |_| Ok(())),
        GateToNode::Call {
            call,
            from,
            route,
            uid,
            oneway,
            body,
            trace,
        } => {
            let hint = 26 + from.len() + body.len() + trace_len(*trace);
            frame(dst, ty::G_CALL, hint, |dst| {
                dst.put_u64(*call);
                put_id(dst, "caller node id", from)?;
                dst.put_i32(*route);
                dst.put_i64(*uid);
                dst.put_u8(if *oneway { call_flag::ONEWAY } else { 0 });
                put_bytes(dst, "call body", body)?;
                put_trace(dst, *trace);
                Ok(())
            })
        }
        GateToNode::CallReply { call, status, body } => {
            put_call_reply(dst, ty::G_CALL_REPLY, *call, *status, body)
        }
    }
}

/// Appends one node → gate frame to `dst` and returns its length on the wire (length field included).
///
/// The receiver refuses frames over its maximum ([`DEFAULT_MAX_FRAME_BYTES`] by default): a sender
/// compares the returned length with it, or splits long uid lists ahead.
///
/// # Errors
/// A node id over 255 bytes, or a list, packet or frame too large for its length field; `dst` is then
/// unchanged.
pub fn encode_node_to_gate(msg: &NodeToGate, dst: &mut BytesMut) -> Result<usize, LinkEncodeError> {
    match msg {
        NodeToGate::Hello {
            node_id,
            state,
            routes,
            pool,
        } => frame(
            dst,
            ty::N_HELLO,
            8 + node_id.len() + 5 * routes.len() + pool_len(pool.as_deref()),
            |dst| {
                dst.put_u16(LINK_VERSION);
                put_id(dst, "node id", node_id)?;
                dst.put_u8(state.to_u8());
                put_count(dst, "route list", routes.len())?;
                for spec in routes {
                    dst.put_i32(spec.route);
                    let mut flags = 0;
                    if spec.stateful {
                        flags |= route_flag::STATEFUL;
                    }
                    if spec.authorized {
                        flags |= route_flag::AUTHORIZED;
                    }
                    if spec.internal {
                        flags |= route_flag::INTERNAL;
                    }
                    dst.put_u8(flags);
                }
                put_pool(dst, pool.as_deref())
            },
        ),
        NodeToGate::State(state) => frame(dst, ty::N_STATE, 1, |dst| {
            dst.put_u8(state.to_u8());
            Ok(())
        }),
        NodeToGate::Deliver {
            target,
            packet,
            trace,
        } => put_deliver(dst, target, packet, *trace),
        NodeToGate::BindUser { request, cid, uid } => frame(dst, ty::N_BIND_USER, 24, |dst| {
            dst.put_u64(*request);
            dst.put_u64(*cid);
            dst.put_i64(*uid);
            Ok(())
        }),
        NodeToGate::UnbindUser { request, uid } => frame(dst, ty::N_UNBIND_USER, 16, |dst| {
            dst.put_u64(*request);
            dst.put_i64(*uid);
            Ok(())
        }),
        NodeToGate::UserNode { uid, node_id, pool } => {
            let hint = 10 + node_id.as_ref().map_or(0, String::len) + pool_len(pool.as_deref());
            frame(dst, ty::N_USER_NODE, hint, |dst| {
                dst.put_i64(*uid);
                match node_id {
                    None => dst.put_u8(0),
                    Some(node_id) => {
                        dst.put_u8(1);
                        put_id(dst, "node id", node_id)?;
                    }
                }
                put_pool(dst, pool.as_deref())
            })
        }
        NodeToGate::Disconnect { target } => put_disconnect(dst, target),
        NodeToGate::Heartbeat => frame(dst, ty::N_HEARTBEAT, 0, |_| Ok(())),
        NodeToGate::Call {
            call,
            target,
            route,
            uid,
            oneway,
            body,
            trace,
        } => {
            let (kind, name) = match target {
                CallTarget::Pool(pool) => (call_target::POOL, pool),
                CallTarget::Node(node) => (call_target::NODE, node),
            };
            let hint = 27 + name.len() + body.len() + trace_len(*trace);
            frame(dst, ty::N_CALL, hint, |dst| {
                dst.put_u64(*call);
                dst.put_u8(kind);
                put_id(dst, "call target", name)?;
                dst.put_i32(*route);
                dst.put_i64(*uid);
                dst.put_u8(if *oneway { call_flag::ONEWAY } else { 0 });
                put_bytes(dst, "call body", body)?;
                put_trace(dst, *trace);
                Ok(())
            })
        }
        NodeToGate::CallReply { call, status, body } => {
            put_call_reply(dst, ty::N_CALL_REPLY, *call, *status, body)
        }
    }
}

/// Writes a frame: a length placeholder, the type byte and the fields `body` puts, then the length.
/// On error `dst` is truncated back to where it was.
fn frame(
    dst: &mut BytesMut,
    type_byte: u8,
    fields_hint: usize,
    body: impl FnOnce(&mut BytesMut) -> Result<(), LinkEncodeError>,
) -> Result<usize, LinkEncodeError> {
    let start = dst.len();
    dst.reserve((LENGTH_FIELD_BYTES + 1).saturating_add(fields_hint));
    dst.put_u32(0);
    dst.put_u8(type_byte);
    if let Err(error) = body(dst) {
        dst.truncate(start);
        return Err(error);
    }
    let total = dst.len() - start;
    let Ok(len) = u32::try_from(total - LENGTH_FIELD_BYTES) else {
        dst.truncate(start);
        return Err(LinkEncodeError::FrameTooLarge { len: total });
    };
    dst[start..start + LENGTH_FIELD_BYTES].copy_from_slice(&len.to_be_bytes());
    Ok(total)
}

fn put_id(dst: &mut BytesMut, field: &'static str, id: &str) -> Result<(), LinkEncodeError> {
    let Ok(len) = u8::try_from(id.len()) else {
        return Err(LinkEncodeError::IdTooLong { field, len: id.len() });
    };
    dst.put_u8(len);
    dst.put_slice(id.as_bytes());
    Ok(())
}

fn put_count(dst: &mut BytesMut, field: &'static str, len: usize) -> Result<(), LinkEncodeError> {
    let Ok(count) = u32::try_from(len) else {
        return Err(LinkEncodeError::TooLong { field, len });
    };
    dst.put_u32(count);
    Ok(())
}

fn put_bytes(dst: &mut BytesMut, field: &'static str, bytes: &[u8]) -> Result<(), LinkEncodeError> {
    put_count(dst, field, bytes.len())?;
    dst.put_slice(bytes);
    Ok(())
}

fn put_call_reply(
    dst: &mut BytesMut,
    type_byte: u8,
    call: CallId,
    status: CallStatus,
    body: &[u8],
) -> Result<usize, LinkEncodeError> {
    frame(dst, type_byte, 13 + body.len(), |dst| {
        dst.put_u64(call);
        dst.put_u8(status.to_u8());
        put_bytes(dst, "call reply body", body)
    })
}

/// Bytes of the `POOL` extension: none when absent.
fn pool_len(pool: Option<&str>) -> usize {
    pool.map_or(0, |pool| 3 + pool.len())
}

/// Writes the `POOL` extension (a name of 1 to 255 bytes, like an id).
fn put_pool(dst: &mut BytesMut, pool: Option<&str>) -> Result<(), LinkEncodeError> {
    let Some(pool) = pool else { return Ok(()) };
    if pool.is_empty() || pool.len() > MAX_ID_BYTES {
        return Err(LinkEncodeError::IdTooLong {
            field: "pool name",
            len: pool.len(),
        });
    }
    dst.put_u8(ext::POOL);
    dst.put_u16(pool.len() as u16);
    dst.put_slice(pool.as_bytes());
    Ok(())
}

/// Bytes of the `traceparent` extension: none when there is no trace.
pub(super) fn trace_len(trace: Option<TraceParent>) -> usize {
    trace.map_or(0, |_| 3 + TraceParent::LEN)
}

fn put_trace(dst: &mut BytesMut, trace: Option<TraceParent>) {
    if let Some(trace) = trace {
        dst.put_u8(ext::TRACEPARENT);
        dst.put_u16(TraceParent::LEN as u16);
        dst.put_slice(&trace.encode());
    }
}

/// One `Deliver` frame.
pub(super) fn put_deliver(
    dst: &mut BytesMut,
    target: impl PutTarget,
    packet: &[u8],
    trace: Option<TraceParent>,
) -> Result<usize, LinkEncodeError> {
    let hint = target.len() + 4 + packet.len() + trace_len(trace);
    frame(dst, ty::N_DELIVER, hint, |dst| {
        target.put(dst)?;
        put_bytes(dst, "packet", packet)?;
        put_trace(dst, trace);
        Ok(())
    })
}

/// One `Disconnect` frame.
pub(super) fn put_disconnect(dst: &mut BytesMut, target: impl PutTarget) -> Result<usize, LinkEncodeError> {
    frame(dst, ty::N_DISCONNECT, target.len(), |dst| target.put(dst))
}

/// A `target` field: a whole [`Target`], or a run of a `Users` target's uids ([`Users`]) when a message is
/// split.
pub(super) trait PutTarget: Copy {
    fn len(self) -> usize;
    fn put(self, dst: &mut BytesMut) -> Result<(), LinkEncodeError>;
}

/// A users target naming these uids.
#[derive(Clone, Copy)]
pub(super) struct Users<'a>(pub(super) &'a [Uid]);

impl PutTarget for Users<'_> {
    fn len(self) -> usize {
        5 + 8 * self.0.len()
    }

    fn put(self, dst: &mut BytesMut) -> Result<(), LinkEncodeError> {
        dst.put_u8(target_kind::USERS);
        put_count(dst, "target uid list", self.0.len())?;
        for uid in self.0 {
            dst.put_i64(*uid);
        }
        Ok(())
    }
}

impl PutTarget for &Target {
    fn len(self) -> usize {
        match self {
            Target::Connection(_) | Target::User(_) => 9,
            Target::Users(uids) => Users(uids).len(),
            Target::Broadcast => 1,
        }
    }

    fn put(self, dst: &mut BytesMut) -> Result<(), LinkEncodeError> {
        match self {
            Target::Connection(cid) => {
                dst.put_u8(target_kind::CONNECTION);
                dst.put_u64(*cid);
            }
            Target::User(uid) => {
                dst.put_u8(target_kind::USER);
                dst.put_i64(*uid);
            }
            Target::Users(uids) => return Users(uids).put(dst),
            Target::Broadcast => dst.put_u8(target_kind::BROADCAST),
        }
        Ok(())
    }
}

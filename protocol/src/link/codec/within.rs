//! Encoding within the receiver's frame limit: what a writer calls instead of [`super::encode_gate_to_node`]
//! and [`super::encode_node_to_gate`], so that no frame it writes is one the peer must treat as fatal. A
//! `users` delivery or disconnect too long for one frame is split into runs of its uid list (see the frame
//! rules in [`super`]); anything else over the limit is refused.

use bytes::{Bytes, BytesMut};

use super::{
    GateToNode, LENGTH_FIELD_BYTES, LinkEncodeError, NodeToGate, Target, TraceParent, Uid, Users,
    encode_gate_to_node, encode_node_to_gate, put_deliver, put_disconnect, trace_len,
};

/// Appends `msg` to `dst` as gate → node frames whose length fields are at most `max_frame_bytes` (the
/// receiver's limit) and returns how many frames that took (always 1: no gate → node message is split).
///
/// # Errors
/// As [`encode_gate_to_node`], or [`LinkEncodeError::OverFrameLimit`]; `dst` is then unchanged.
pub fn encode_gate_to_node_within(
    msg: &GateToNode,
    max_frame_bytes: u32,
    dst: &mut BytesMut,
) -> Result<usize, LinkEncodeError> {
    let start = dst.len();
    let written = encode_gate_to_node(msg, dst)?;
    within(dst, start, written, max_frame_bytes)?;
    Ok(1)
}

/// Appends `msg` to `dst` as node → gate frames whose length fields are at most `max_frame_bytes` (the
/// receiver's limit) and returns how many frames that took.
///
/// A `Deliver` or `Disconnect` to a `Users` target too long for one frame is split into several frames of
/// the same message, each for a run of the uid list in order: the gate applies each as it would the whole.
/// Anything else over the limit is refused.
///
/// # Errors
/// As [`encode_node_to_gate`], or [`LinkEncodeError::OverFrameLimit`] for a message that does not fit even
/// alone (one uid); `dst` is then unchanged.
pub fn encode_node_to_gate_within(
    msg: &NodeToGate,
    max_frame_bytes: u32,
    dst: &mut BytesMut,
) -> Result<usize, LinkEncodeError> {
    let users = match msg {
        NodeToGate::Deliver {
            target: Target::Users(uids),
            packet,
            trace,
        } => Some((uids, DeliverRest::Deliver(packet, *trace))),
        NodeToGate::Disconnect {
            target: Target::Users(uids),
        } => Some((uids, DeliverRest::Disconnect)),
        _ => None,
    };
    match users {
        Some((uids, rest)) => {
            let per_frame = uids_per_frame(max_frame_bytes, rest.len());
            if per_frame == 0 || uids.is_empty() {
                // Nothing to split, or not even one uid fits: encoded whole, refused if over the limit.
                let start = dst.len();
                let written = rest.encode(dst, uids)?;
                within(dst, start, written, max_frame_bytes)?;
                return Ok(1);
            }
            let start = dst.len();
            let mut frames = 0;
            for run in uids.chunks(per_frame) {
                if let Err(error) = rest.encode(dst, run) {
                    dst.truncate(start);
                    return Err(error);
                }
                frames += 1;
            }
            Ok(frames)
        }
        None => {
            let start = dst.len();
            let written = encode_node_to_gate(msg, dst)?;
            within(dst, start, written, max_frame_bytes)?;
            Ok(1)
        }
    }
}

/// The uids of a `Users` target that fit one frame of at most `max_frame_bytes` (length field value) next
/// to `rest_bytes` of the message's other fields and extensions; 0 when not even one does.
pub fn uids_per_frame(max_frame_bytes: u32, rest_bytes: usize) -> usize {
    // type byte, target kind, uid count
    let fixed = 1 + 1 + 4 + rest_bytes;
    (max_frame_bytes as usize).saturating_sub(fixed) / 8
}

/// Whether the frame just written at `start` (`written` bytes, length field included) is within the limit;
/// if not it is taken back off `dst`.
fn within(
    dst: &mut BytesMut,
    start: usize,
    written: usize,
    max_frame_bytes: u32,
) -> Result<(), LinkEncodeError> {
    let len = written - LENGTH_FIELD_BYTES;
    if len > max_frame_bytes as usize {
        dst.truncate(start);
        return Err(LinkEncodeError::OverFrameLimit {
            len,
            max: max_frame_bytes,
        });
    }
    Ok(())
}

/// What a splittable node → gate message carries besides its uid list.
#[derive(Clone, Copy)]
enum DeliverRest<'a> {
    Deliver(&'a Bytes, Option<TraceParent>),
    Disconnect,
}

impl DeliverRest<'_> {
    /// Bytes of the fields and extensions after the target.
    fn len(self) -> usize {
        match self {
            DeliverRest::Deliver(packet, trace) => 4 + packet.len() + trace_len(trace),
            DeliverRest::Disconnect => 0,
        }
    }

    /// One frame of this message for `uids`.
    fn encode(self, dst: &mut BytesMut, uids: &[Uid]) -> Result<usize, LinkEncodeError> {
        match self {
            DeliverRest::Deliver(packet, trace) => put_deliver(dst, Users(uids), packet, trace),
            DeliverRest::Disconnect => put_disconnect(dst, Users(uids)),
        }
    }
}

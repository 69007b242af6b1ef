//! Property tests of the link wire format: arbitrary messages (traced or not) round-trip, streams split at
//! arbitrary offsets decode the same, unknown extensions and invalid trace contexts are skipped, and
//! arbitrary or mutated bytes never panic the decoder nor make it allocate past its frame limit.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use switchyard_protocol::link::codec::{LENGTH_FIELD_BYTES, MAX_ID_BYTES, ext};
use switchyard_protocol::link::{
    AckError, CallStatus, CallTarget, DEFAULT_MAX_FRAME_BYTES, GateToNode, LinkDecodeError, LinkDecoder,
    LinkEncodeError, NodeState, NodeToGate, RouteSpec, Target, TraceParent, encode_gate_to_node,
    encode_node_to_gate, encode_node_to_gate_within,
};

/// Any id the link can carry: UTF-8 of at most 255 bytes, cut at a character boundary.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{0,24}",
        "\\PC{0,100}".prop_map(|s| {
            let mut end = s.len().min(MAX_ID_BYTES);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_owned()
        }),
        Just("x".repeat(MAX_ID_BYTES)),
    ]
}

/// A trace context with non-zero ids, any flags.
fn trace_parent() -> impl Strategy<Value = TraceParent> {
    (any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>()).prop_map(|(mut trace_id, mut span_id, flags)| {
        trace_id[0] |= 1;
        span_id[7] |= 1;
        TraceParent::new(trace_id, span_id, flags).expect("non-zero ids")
    })
}

/// Traced or not, half and half.
fn trace() -> impl Strategy<Value = Option<TraceParent>> {
    proptest::option::of(trace_parent())
}

fn payload() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..600).prop_map(Bytes::from)
}

fn state() -> impl Strategy<Value = NodeState> {
    prop_oneof![
        Just(NodeState::Work),
        Just(NodeState::Busy),
        Just(NodeState::Draining),
        Just(NodeState::Shut),
    ]
}

fn ack_result() -> impl Strategy<Value = Result<(), AckError>> {
    prop_oneof![
        Just(Ok(())),
        Just(Err(AckError::UnknownConnection)),
        Just(Err(AckError::UnknownUser)),
        Just(Err(AckError::ShuttingDown)),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        any::<u64>().prop_map(Target::Connection),
        any::<i64>().prop_map(Target::User),
        vec(any::<i64>(), 0..40).prop_map(Target::Users),
        Just(Target::Broadcast),
    ]
}

fn route_spec() -> impl Strategy<Value = RouteSpec> {
    (any::<i32>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(route, stateful, authorized, internal)| RouteSpec {
            route,
            stateful,
            authorized,
            internal,
        },
    )
}

fn peer() -> impl Strategy<Value = Option<std::net::SocketAddr>> {
    proptest::option::of(prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| std::net::SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| std::net::SocketAddr::from((ip, port))),
    ])
}

/// A pool name: 1 to 255 bytes of UTF-8.
fn pool() -> impl Strategy<Value = String> {
    id().prop_filter("a pool name is not empty", |name| !name.is_empty())
}

fn call_target() -> impl Strategy<Value = CallTarget> {
    prop_oneof![id().prop_map(CallTarget::Pool), id().prop_map(CallTarget::Node)]
}

fn call_status() -> impl Strategy<Value = CallStatus> {
    (0u8..=5).prop_map(|value| CallStatus::from_u8(value).expect("0 to 5 are statuses"))
}

fn gate_to_node() -> impl Strategy<Value = GateToNode> {
    prop_oneof![
        (id(), any::<u32>()).prop_map(|(gate_id, features)| GateToNode::Hello { gate_id, features }),
        (
            any::<u64>(),
            id(),
            any::<i32>(),
            any::<i64>(),
            any::<bool>(),
            payload(),
            trace()
        )
            .prop_map(|(call, from, route, uid, oneway, body, trace)| GateToNode::Call {
                call,
                from,
                route,
                uid,
                oneway,
                body,
                trace,
            }),
        (any::<u64>(), call_status(), payload()).prop_map(|(call, status, body)| GateToNode::CallReply {
            call,
            status,
            body
        }),
        (any::<u64>(), any::<i64>(), payload(), trace(), peer()).prop_map(|(cid, uid, body, trace, peer)| {
            GateToNode::Packet {
                cid,
                uid,
                body,
                trace,
                peer,
            }
        }),
        (any::<u64>(), any::<i64>()).prop_map(|(cid, uid)| GateToNode::Disconnected { cid, uid }),
        (any::<u64>(), ack_result()).prop_map(|(request, result)| GateToNode::Ack { request, result }),
        Just(GateToNode::Heartbeat),
    ]
}

fn node_to_gate() -> impl Strategy<Value = NodeToGate> {
    prop_oneof![
        (
            id(),
            state(),
            vec(route_spec(), 0..40),
            proptest::option::of(pool())
        )
            .prop_map(|(node_id, state, routes, pool)| NodeToGate::Hello {
                node_id,
                state,
                routes,
                pool
            }),
        (
            any::<u64>(),
            call_target(),
            any::<i32>(),
            any::<i64>(),
            any::<bool>(),
            payload(),
            trace()
        )
            .prop_map(
                |(call, target, route, uid, oneway, body, trace)| NodeToGate::Call {
                    call,
                    target,
                    route,
                    uid,
                    oneway,
                    body,
                    trace,
                }
            ),
        (any::<u64>(), call_status(), payload()).prop_map(|(call, status, body)| NodeToGate::CallReply {
            call,
            status,
            body
        }),
        state().prop_map(NodeToGate::State),
        (target(), payload(), trace()).prop_map(|(target, packet, trace)| NodeToGate::Deliver {
            target,
            packet,
            trace
        }),
        (any::<u64>(), any::<u64>(), any::<i64>()).prop_map(|(request, cid, uid)| NodeToGate::BindUser {
            request,
            cid,
            uid
        }),
        (any::<u64>(), any::<i64>()).prop_map(|(request, uid)| NodeToGate::UnbindUser { request, uid }),
        (
            any::<i64>(),
            proptest::option::of(id()),
            proptest::option::of(pool())
        )
            .prop_map(|(uid, node_id, pool)| NodeToGate::UserNode { uid, node_id, pool }),
        target().prop_map(|target| NodeToGate::Disconnect { target }),
        Just(NodeToGate::Heartbeat),
    ]
}

/// Extension bytes: `tag u8 | len u16 | value`, any tag but `traceparent`'s (the only one version 1
/// knows), or `traceparent` with a value that is not one (random bytes of any length, or a valid value
/// with one byte changed to something that is not a lower-case hex digit).
fn extensions() -> impl Strategy<Value = Vec<u8>> {
    let unknown = (
        any::<u8>().prop_filter("unknown tag", |tag| {
            ![ext::TRACEPARENT, ext::PEER_ADDR, ext::POOL, ext::FEATURES].contains(tag)
        }),
        vec(any::<u8>(), 0..60),
    );
    let random_trace = vec(any::<u8>(), 0..60).prop_map(|value| (ext::TRACEPARENT, value));
    let broken_trace = (trace_parent(), 0..TraceParent::LEN, any::<u8>()).prop_map(|(trace, at, byte)| {
        let mut value = trace.encode().to_vec();
        value[at] = if byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte) {
            b'X'
        } else {
            byte
        };
        (ext::TRACEPARENT, value)
    });
    vec(prop_oneof![unknown, random_trace, broken_trace], 0..4).prop_map(|exts| {
        let mut out = Vec::new();
        for (tag, value) in exts {
            out.push(tag);
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
            out.extend_from_slice(&value);
        }
        out
    })
}

fn encode_all_gate(msgs: &[GateToNode]) -> BytesMut {
    let mut dst = BytesMut::new();
    for msg in msgs {
        let before = dst.len();
        let n = encode_gate_to_node(msg, &mut dst).expect("encodable");
        assert_eq!(dst.len() - before, n);
    }
    dst
}

fn encode_all_node(msgs: &[NodeToGate]) -> BytesMut {
    let mut dst = BytesMut::new();
    for msg in msgs {
        let before = dst.len();
        let n = encode_node_to_gate(msg, &mut dst).expect("encodable");
        assert_eq!(dst.len() - before, n);
    }
    dst
}

/// Turns arbitrary split points into sorted chunk boundaries within `len`.
fn cuts(len: usize, raw: &[usize]) -> Vec<usize> {
    let mut cuts: Vec<usize> = raw.iter().map(|c| c % (len + 1)).collect();
    cuts.push(0);
    cuts.push(len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// `msg` without its optional extensions: what a frame cut right after its fields decodes to.
fn without_extensions(msg: &NodeToGate) -> NodeToGate {
    let mut bare = msg.clone();
    match &mut bare {
        NodeToGate::Deliver { trace, .. } | NodeToGate::Call { trace, .. } => *trace = None,
        NodeToGate::Hello { pool, .. } | NodeToGate::UserNode { pool, .. } => *pool = None,
        _ => {}
    }
    bare
}

/// Appends `ext` to the single frame in `frame` and fixes its length field.
fn with_extensions(mut frame: Vec<u8>, ext: &[u8]) -> Vec<u8> {
    frame.extend_from_slice(ext);
    let len = (frame.len() - LENGTH_FIELD_BYTES) as u32;
    frame[..LENGTH_FIELD_BYTES].copy_from_slice(&len.to_be_bytes());
    frame
}

/// Feeds `input` to both decoders; checks nothing panics and growth stays under the frame limit.
fn decode_anything(max_frame_bytes: u32, input: &[u8]) -> Result<(), TestCaseError> {
    let limit = max_frame_bytes as usize + LENGTH_FIELD_BYTES;
    let mut decoder = LinkDecoder::new(max_frame_bytes);

    let mut buf = BytesMut::from(input);
    let initial = buf.capacity();
    loop {
        match decoder.decode_gate_to_node(&mut buf) {
            Ok(Some(msg)) => {
                // Whatever decodes re-encodes to a frame that decodes to the same message.
                let mut again = encode_all_gate(std::slice::from_ref(&msg));
                prop_assert_eq!(
                    LinkDecoder::new(u32::MAX).decode_gate_to_node(&mut again),
                    Ok(Some(msg))
                );
            }
            Ok(None) => {
                prop_assert!(buf.capacity() <= limit.max(2 * initial));
                break;
            }
            Err(_) => {
                prop_assert!(buf.capacity() <= initial);
                break;
            }
        }
    }

    let mut buf = BytesMut::from(input);
    loop {
        match decoder.decode_node_to_gate(&mut buf) {
            Ok(Some(msg)) => {
                let mut again = encode_all_node(std::slice::from_ref(&msg));
                prop_assert_eq!(
                    LinkDecoder::new(u32::MAX).decode_node_to_gate(&mut again),
                    Ok(Some(msg))
                );
            }
            Ok(None) => {
                prop_assert!(buf.capacity() <= limit.max(2 * initial));
                break;
            }
            Err(_) => {
                prop_assert!(buf.capacity() <= initial);
                break;
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn gate_to_node_round_trip(msg in gate_to_node()) {
        let mut buf = encode_all_gate(std::slice::from_ref(&msg));
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let decoded = LinkDecoder::default().decode_gate_to_node(&mut buf).expect("valid frame");
        prop_assert!(buf.is_empty());
        if let Some(GateToNode::Packet { body, .. }) = &decoded {
            // Zero copy: the body is a slice of the read buffer.
            prop_assert!(body.is_empty() || range.contains(&(body.as_ptr() as usize)));
        }
        prop_assert_eq!(decoded, Some(msg));
    }

    #[test]
    fn node_to_gate_round_trip(msg in node_to_gate()) {
        let mut buf = encode_all_node(std::slice::from_ref(&msg));
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let decoded = LinkDecoder::default().decode_node_to_gate(&mut buf).expect("valid frame");
        prop_assert!(buf.is_empty());
        if let Some(NodeToGate::Deliver { packet, .. }) = &decoded {
            prop_assert!(packet.is_empty() || range.contains(&(packet.as_ptr() as usize)));
        }
        prop_assert_eq!(decoded, Some(msg));
    }

    #[test]
    fn gate_to_node_chunked_stream(
        msgs in vec(gate_to_node(), 0..10),
        raw_cuts in vec(any::<usize>(), 0..16),
    ) {
        let stream = encode_all_gate(&msgs).freeze();
        let mut decoder = LinkDecoder::default();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for window in cuts(stream.len(), &raw_cuts).windows(2) {
            buf.extend_from_slice(&stream[window[0]..window[1]]);
            while let Some(msg) = decoder.decode_gate_to_node(&mut buf).expect("valid stream") {
                decoded.push(msg);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, msgs);
    }

    #[test]
    fn node_to_gate_chunked_stream(
        msgs in vec(node_to_gate(), 0..10),
        raw_cuts in vec(any::<usize>(), 0..16),
    ) {
        let stream = encode_all_node(&msgs).freeze();
        let mut decoder = LinkDecoder::default();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for window in cuts(stream.len(), &raw_cuts).windows(2) {
            buf.extend_from_slice(&stream[window[0]..window[1]]);
            while let Some(msg) = decoder.decode_node_to_gate(&mut buf).expect("valid stream") {
                decoded.push(msg);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, msgs);
    }

    #[test]
    fn traceparent_is_exactly_the_extension(gate in gate_to_node(), node in node_to_gate()) {
        // A traced message costs one extension of 3 + 55 bytes, an untraced one no byte; the peer address
        // extension (3 + 7 or 3 + 19 bytes) follows it when present.
        let (traced, peer_bytes) = match &gate {
            GateToNode::Packet { trace, peer, .. } => (
                trace.is_some(),
                peer.map_or(0, |peer| if peer.is_ipv4() { 10 } else { 22 }),
            ),
            _ => (false, 0),
        };
        let bytes = encode_all_gate(std::slice::from_ref(&gate));
        if traced {
            let end = bytes.len() - peer_bytes;
            let tail = &bytes[end - 58..end];
            prop_assert_eq!(&tail[..3], &[ext::TRACEPARENT, 0, 55][..]);
            prop_assert!(TraceParent::parse(&tail[3..]).is_some());
        }
        let traced = match &node {
            NodeToGate::Deliver { trace, .. } => trace.is_some(),
            _ => false,
        };
        let bytes = encode_all_node(std::slice::from_ref(&node));
        if traced {
            prop_assert_eq!(&bytes[bytes.len() - 58..bytes.len() - 55], &[ext::TRACEPARENT, 0, 55][..]);
        }
    }

    #[test]
    fn any_55_bytes_are_a_trace_or_ignored(value in vec(any::<u8>(), TraceParent::LEN..=TraceParent::LEN)) {
        // Whatever the value, the frame decodes; a value that parses is carried exactly (parse ∘ encode
        // is the identity), one that does not is as if absent.
        let packet = GateToNode::Packet { cid: 1, uid: 2, body: Bytes::from_static(b"z"), trace: None, peer: None };
        let mut extension = vec![ext::TRACEPARENT, 0, 55];
        extension.extend_from_slice(&value);
        let frame = with_extensions(encode_all_gate(std::slice::from_ref(&packet)).to_vec(), &extension);
        let decoded = LinkDecoder::default().decode_gate_to_node(&mut BytesMut::from(&frame[..]));
        let expected = TraceParent::parse(&value);
        if let Some(trace) = expected {
            prop_assert_eq!(&trace.encode()[..], &value[..]);
        }
        prop_assert_eq!(
            decoded,
            Ok(Some(GateToNode::Packet { cid: 1, uid: 2, body: Bytes::from_static(b"z"), trace: expected, peer: None }))
        );
    }

    #[test]
    fn unknown_extensions_are_skipped(
        gate in gate_to_node(),
        node in node_to_gate(),
        ext in extensions(),
    ) {
        let frame = with_extensions(encode_all_gate(std::slice::from_ref(&gate)).to_vec(), &ext);
        prop_assert_eq!(
            LinkDecoder::default().decode_gate_to_node(&mut BytesMut::from(&frame[..])),
            Ok(Some(gate))
        );
        let frame = with_extensions(encode_all_node(std::slice::from_ref(&node)).to_vec(), &ext);
        prop_assert_eq!(
            LinkDecoder::default().decode_node_to_gate(&mut BytesMut::from(&frame[..])),
            Ok(Some(node))
        );
    }

    #[test]
    fn truncated_frames_are_errors_not_panics(msg in node_to_gate(), cut in any::<usize>()) {
        // The same fields in a frame whose length field claims fewer bytes: every cut inside the
        // fields is either an error or, at an extension boundary, the message with the extensions
        // before the cut (a traced Deliver cut before its trace is the untraced Deliver).
        let full = encode_all_node(std::slice::from_ref(&msg)).to_vec();
        let body_len = full.len() - LENGTH_FIELD_BYTES;
        let keep = 1 + cut % body_len;
        let mut frame = full[..LENGTH_FIELD_BYTES + keep].to_vec();
        frame[..LENGTH_FIELD_BYTES].copy_from_slice(&(keep as u32).to_be_bytes());
        let result = LinkDecoder::default().decode_node_to_gate(&mut BytesMut::from(&frame[..]));
        let bare = without_extensions(&msg);
        let bare_len = encode_all_node(std::slice::from_ref(&bare)).len() - LENGTH_FIELD_BYTES;
        if keep == body_len {
            prop_assert_eq!(result, Ok(Some(msg)));
        } else if keep == bare_len {
            prop_assert_eq!(result, Ok(Some(bare)));
        } else {
            prop_assert!(result.is_err(), "cut at {} of {} decoded: {:?}", keep, body_len, result);
        }
    }

    /// Whatever the limit, a node → gate message is written as frames that each fit it and decode back to
    /// the message (a users target as runs of its uid list, in order), or refused with nothing written.
    #[test]
    fn messages_over_the_frame_limit_are_split_to_fit_or_refused(
        msg in prop_oneof![
            3 => (vec(any::<i64>(), 0..400), payload(), trace()).prop_map(|(uids, packet, trace)| {
                NodeToGate::Deliver { target: Target::Users(uids), packet, trace }
            }),
            1 => vec(any::<i64>(), 0..400).prop_map(|uids| NodeToGate::Disconnect { target: Target::Users(uids) }),
            1 => node_to_gate(),
        ],
        max_frame_bytes in prop_oneof![1u32..64, 64u32..800, 800u32..5000],
    ) {
        let mut buf = BytesMut::from(&b"before"[..]);
        let whole = encode_all_node(std::slice::from_ref(&msg));
        match encode_node_to_gate_within(&msg, max_frame_bytes, &mut buf) {
            Ok(frames) => {
                prop_assert_eq!(&buf[..6], b"before");
                let mut decoder = LinkDecoder::new(max_frame_bytes);
                let mut rest = buf.split_off(6);
                let mut decoded = Vec::new();
                while let Some(part) = decoder.decode_node_to_gate(&mut rest).expect("every frame fits") {
                    decoded.push(part);
                }
                prop_assert!(rest.is_empty());
                prop_assert_eq!(decoded.len(), frames);
                if frames == 1 {
                    prop_assert_eq!(&encode_all_node(&decoded), &whole);
                } else {
                    let uids = |msg: &NodeToGate| match msg {
                        NodeToGate::Deliver { target: Target::Users(uids), .. }
                        | NodeToGate::Disconnect { target: Target::Users(uids) } => uids.clone(),
                        other => panic!("split a message without a users target: {other:?}"),
                    };
                    let joined: Vec<i64> = decoded.iter().flat_map(&uids).collect();
                    prop_assert_eq!(joined, uids(&msg));
                    for part in &decoded {
                        prop_assert!(!uids(part).is_empty());
                        let same = match (part, &msg) {
                            (NodeToGate::Deliver { packet, trace, .. }, NodeToGate::Deliver { packet: p, trace: t, .. }) => {
                                packet == p && trace == t
                            }
                            (NodeToGate::Disconnect { .. }, NodeToGate::Disconnect { .. }) => true,
                            _ => false,
                        };
                        prop_assert!(same, "a part differs from the message beyond its uids: {:?}", part);
                    }
                }
            }
            Err(LinkEncodeError::OverFrameLimit { len, max }) => {
                prop_assert_eq!(&buf[..], b"before");
                prop_assert_eq!(max, max_frame_bytes);
                prop_assert!(len > max as usize);
                // Refused only when not even one uid (or the message, unsplittable) fits.
                prop_assert!(whole.len() - LENGTH_FIELD_BYTES > max as usize);
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        max_frame_bytes in prop_oneof![Just(16u32), 0u32..5000, Just(DEFAULT_MAX_FRAME_BYTES)],
        input in vec(any::<u8>(), 0..4096),
    ) {
        decode_anything(max_frame_bytes, &input)?;
    }

    #[test]
    fn mutated_frames_never_panic(
        gate in vec(gate_to_node(), 1..4),
        node in vec(node_to_gate(), 1..4),
        flips in vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        for mut bytes in [encode_all_gate(&gate).to_vec(), encode_all_node(&node).to_vec()] {
            let len = bytes.len();
            for (at, xor) in &flips {
                bytes[at % len] ^= xor;
            }
            decode_anything(DEFAULT_MAX_FRAME_BYTES, &bytes)?;
        }
    }

    #[test]
    fn hostile_length_reserves_at_most_the_limit(max_frame_bytes in 0u32..100_000, len in any::<u32>()) {
        let mut buf = BytesMut::with_capacity(LENGTH_FIELD_BYTES);
        buf.put_u32(len);
        let result = LinkDecoder::new(max_frame_bytes).decode_gate_to_node(&mut buf);
        if len > max_frame_bytes {
            prop_assert_eq!(result, Err(LinkDecodeError::Oversize { len, max: max_frame_bytes }));
        } else if len == 0 {
            prop_assert_eq!(result, Err(LinkDecodeError::EmptyFrame));
        } else {
            prop_assert_eq!(result, Ok(None));
        }
        prop_assert!(buf.capacity() <= (max_frame_bytes as usize + LENGTH_FIELD_BYTES).max(2 * LENGTH_FIELD_BYTES));
    }

    #[test]
    fn ids_over_255_bytes_refuse_to_encode(extra in 1usize..300) {
        let long = "é".repeat((MAX_ID_BYTES + extra).div_ceil(2));
        let mut dst = BytesMut::from(&b"queued"[..]);
        let err = encode_node_to_gate(
            &NodeToGate::Hello { node_id: long.clone(), state: NodeState::Work, routes: vec![], pool: None },
            &mut dst,
        );
        prop_assert_eq!(err, Err(LinkEncodeError::IdTooLong { field: "node id", len: long.len() }));
        prop_assert_eq!(&dst[..], b"queued");
    }
}

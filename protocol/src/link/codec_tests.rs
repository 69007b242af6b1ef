//! Byte-exact and error-path tests of the link codec ([`super`]).

use super::*;
use crate::link::feature;
use bytes::BufMut;

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn gate_bytes(msg: &GateToNode) -> BytesMut {
    let mut buf = BytesMut::new();
    let n = encode_gate_to_node(msg, &mut buf).unwrap();
    assert_eq!(n, buf.len());
    buf
}

fn node_bytes(msg: &NodeToGate) -> BytesMut {
    let mut buf = BytesMut::new();
    let n = encode_node_to_gate(msg, &mut buf).unwrap();
    assert_eq!(n, buf.len());
    buf
}

fn decode_node(bytes: &[u8]) -> Result<Option<NodeToGate>, LinkDecodeError> {
    LinkDecoder::default().decode_node_to_gate(&mut BytesMut::from(bytes))
}

fn decode_gate(bytes: &[u8]) -> Result<Option<GateToNode>, LinkDecodeError> {
    LinkDecoder::default().decode_gate_to_node(&mut BytesMut::from(bytes))
}

#[test]
fn documented_examples() {
    assert_eq!(hex(&gate_bytes(&GateToNode::Heartbeat)), "00 00 00 01 05");
    assert_eq!(
        hex(&gate_bytes(&GateToNode::Hello {
            gate_id: "g1".into(),
            features: feature::CALLS,
        })),
        "00 00 00 0d 01 00 01 02 67 31 04 00 04 00 00 00 01"
    );
    let packet = GateToNode::Packet {
        cid: 7,
        uid: -1,
        body: Bytes::from_static(&[0, 0, 1, 0, 1]),
        trace: None,
        peer: None,
    };
    assert_eq!(
        hex(&gate_bytes(&packet)),
        "00 00 00 1a 02 00 00 00 00 00 00 00 07 ff ff ff ff ff ff ff ff 00 00 00 05 00 00 01 00 01"
    );
    let traced = traced(packet, TRACEPARENT);
    let bytes = gate_bytes(&traced);
    assert_eq!(
        hex(&bytes[..33]),
        "00 00 00 54 02 00 00 00 00 00 00 00 07 ff ff ff ff ff ff ff ff 00 00 00 05 00 00 01 00 01 01 00 37"
    );
    assert_eq!(&bytes[33..], TRACEPARENT);
    assert_eq!(decode_gate(&bytes), Ok(Some(traced)));
    assert_eq!(
        hex(&node_bytes(&NodeToGate::State(NodeState::Draining))),
        "00 00 00 02 82 02"
    );
}

#[test]
fn node_hello_exact_bytes() {
    let hello = NodeToGate::Hello {
        node_id: "n".into(),
        state: NodeState::Busy,
        routes: vec![
            RouteSpec {
                route: 1,
                stateful: false,
                authorized: false,
                internal: false,
            },
            RouteSpec {
                route: -2,
                stateful: true,
                authorized: true,
                internal: true,
            },
        ],
        pool: None,
    };
    let bytes = node_bytes(&hello);
    assert_eq!(
        hex(&bytes),
        "00 00 00 14 81 00 01 01 6e 01 00 00 00 02 00 00 00 01 00 ff ff ff fe 07"
    );
    assert_eq!(decode_node(&bytes), Ok(Some(hello.clone())));
    // With its pool: extension 0x03 after the routes.
    let NodeToGate::Hello {
        node_id,
        state,
        routes,
        ..
    } = hello
    else {
        unreachable!()
    };
    let pooled = NodeToGate::Hello {
        node_id,
        state,
        routes,
        pool: Some("lobby".into()),
    };
    let bytes = node_bytes(&pooled);
    assert_eq!(hex(&bytes[24..]), "03 00 05 6c 6f 62 62 79");
    assert_eq!(decode_node(&bytes), Ok(Some(pooled)));
}

#[test]
fn deliver_and_user_node_exact_bytes() {
    let deliver = NodeToGate::Deliver {
        target: Target::Users(vec![1, -1]),
        packet: Bytes::from_static(&[0, 0, 0, 1, 0x80]),
        trace: None,
    };
    assert_eq!(
        hex(&node_bytes(&deliver)),
        "00 00 00 1f 83 02 00 00 00 02 00 00 00 00 00 00 00 01 ff ff ff ff ff ff ff ff \
         00 00 00 05 00 00 00 01 80"
    );
    let user_node = NodeToGate::UserNode {
        uid: 3,
        node_id: Some("ab".into()),
        pool: None,
    };
    assert_eq!(
        hex(&node_bytes(&user_node)),
        "00 00 00 0d 86 00 00 00 00 00 00 00 03 01 02 61 62"
    );
    let ack = GateToNode::Ack {
        request: 9,
        result: Err(AckError::UnknownUser),
    };
    assert_eq!(
        hex(&gate_bytes(&ack)),
        "00 00 00 0a 04 00 00 00 00 00 00 00 09 02"
    );
}

#[test]
fn packet_body_is_a_slice_of_the_read_buffer() {
    let body = Bytes::from(vec![0x5a; 300]);
    let mut buf = gate_bytes(&GateToNode::Packet {
        cid: 1,
        uid: 2,
        body,
        trace: None,
        peer: None,
    });
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Some(GateToNode::Packet { body, .. }) = LinkDecoder::default().decode_gate_to_node(&mut buf).unwrap()
    else {
        panic!("no packet")
    };
    assert_eq!(body.len(), 300);
    assert!(range.contains(&(body.as_ptr() as usize)));
}

#[test]
fn version_mismatch_is_refused() {
    assert_eq!(
        decode_gate(&[0, 0, 0, 4, 0x01, 0, 2, 0]),
        Err(LinkDecodeError::VersionMismatch { peer: 2, ours: 1 })
    );
    assert_eq!(
        decode_node(&[0, 0, 0, 3, 0x81, 0x01, 0x00]),
        Err(LinkDecodeError::VersionMismatch { peer: 256, ours: 1 })
    );
    let message = LinkDecodeError::VersionMismatch { peer: 2, ours: 1 }.to_string();
    assert_eq!(
        message,
        "peer speaks link protocol version 2, this side speaks version 1"
    );
}

const TRACEPARENT: &[u8] = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// `frame` (one encoded frame) with `extensions` appended and its length fixed.
fn with_extensions(frame: &[u8], extensions: &[&[u8]]) -> Vec<u8> {
    let mut bytes = frame.to_vec();
    for extension in extensions {
        bytes.extend_from_slice(extension);
    }
    let len = (bytes.len() - 4) as u32;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    bytes
}

/// `packet` (a gate → node Packet) with the trace context `value`.
fn traced(packet: GateToNode, value: &[u8]) -> GateToNode {
    let GateToNode::Packet {
        cid, uid, body, peer, ..
    } = packet
    else {
        panic!("not a packet")
    };
    let trace = TraceParent::parse(value);
    assert!(trace.is_some());
    GateToNode::Packet {
        cid,
        uid,
        body,
        trace,
        peer,
    }
}

fn traceparent_ext(value: &[u8]) -> Vec<u8> {
    let mut ext = vec![ext::TRACEPARENT];
    ext.extend_from_slice(&(value.len() as u16).to_be_bytes());
    ext.extend_from_slice(value);
    ext
}

#[test]
fn extensions_are_skipped_and_checked() {
    // A Packet carrying an unknown extension, then the traceparent.
    let packet = GateToNode::Packet {
        cid: 1,
        uid: 0,
        body: Bytes::from_static(b"x"),
        trace: None,
        peer: None,
    };
    let bytes = with_extensions(
        &gate_bytes(&packet),
        &[&[0x7e, 0x00, 0x01, 0xaa], &traceparent_ext(TRACEPARENT)],
    );
    assert_eq!(decode_gate(&bytes), Ok(Some(traced(packet.clone(), TRACEPARENT))));
    // Elsewhere the tag is skipped like any unknown one.
    let disconnected = GateToNode::Disconnected { cid: 1, uid: 2 };
    let bytes = with_extensions(&gate_bytes(&disconnected), &[&traceparent_ext(TRACEPARENT)]);
    assert_eq!(decode_gate(&bytes), Ok(Some(disconnected)));
    // An extension cut short by the end of the frame.
    assert_eq!(
        decode_gate(&[0, 0, 0, 4, 0x05, 0x01, 0x00, 0x02]),
        Err(LinkDecodeError::Truncated {
            message: "gate-to-node Heartbeat",
            field: "extension value"
        })
    );
}

#[test]
fn peer_addresses_round_trip_and_malformed_ones_are_ignored() {
    for peer in ["203.0.113.7:40123", "[2001:db8::1]:443"] {
        let packet = GateToNode::Packet {
            cid: 9,
            uid: 5,
            body: Bytes::from_static(b"p"),
            trace: None,
            peer: Some(peer.parse().expect("address")),
        };
        assert_eq!(decode_gate(&gate_bytes(&packet)), Ok(Some(packet)));
    }
    let ipv4 = GateToNode::Packet {
        cid: 9,
        uid: 5,
        body: Bytes::from_static(b"p"),
        trace: None,
        peer: Some("10.0.0.1:80".parse().expect("address")),
    };
    let bytes = gate_bytes(&ipv4);
    assert_eq!(hex(&bytes[bytes.len() - 10..]), "02 00 07 04 0a 00 00 01 00 50");
    let plain = GateToNode::Packet {
        cid: 9,
        uid: 5,
        body: Bytes::from_static(b"p"),
        trace: None,
        peer: None,
    };
    // A family byte that is neither 4 nor 6, and an IPv4 value one byte short.
    for bad in [
        &[0x02, 0x00, 0x07, 0x05, 1, 2, 3, 4, 0, 80][..],
        &[0x02, 0x00, 0x06, 0x04, 1, 2, 3, 4, 0],
    ] {
        let bytes = with_extensions(&gate_bytes(&plain), &[bad]);
        assert_eq!(decode_gate(&bytes), Ok(Some(plain.clone())));
    }
}

#[test]
fn invalid_traceparents_are_ignored_not_errors() {
    let packet = GateToNode::Packet {
        cid: 3,
        uid: 4,
        body: Bytes::from_static(b"y"),
        trace: None,
        peer: None,
    };
    let mut upper = TRACEPARENT.to_vec();
    upper.make_ascii_uppercase();
    for value in [
        &TRACEPARENT[..54],
        &upper[..],
        b"00-00000000000000000000000000000000-b7ad6b7169203331-01",
        b"",
    ] {
        let bytes = with_extensions(&gate_bytes(&packet), &[&traceparent_ext(value)]);
        assert_eq!(decode_gate(&bytes), Ok(Some(packet.clone())));
    }
    // The first valid one counts.
    let second = b"00-0af7651916cd43dd8448eb211c80319c-00000000000000aa-00";
    let bytes = with_extensions(
        &gate_bytes(&packet),
        &[
            &traceparent_ext(&upper),
            &traceparent_ext(TRACEPARENT),
            &traceparent_ext(second),
        ],
    );
    assert_eq!(decode_gate(&bytes), Ok(Some(traced(packet.clone(), TRACEPARENT))));
    // A node's Deliver carries one the same way.
    let deliver = NodeToGate::Deliver {
        target: Target::Connection(3),
        packet: Bytes::from_static(&[0, 0, 0, 1, 0x80]),
        trace: TraceParent::parse(second),
    };
    let bytes = node_bytes(&deliver);
    assert_eq!(bytes.len(), 4 + 1 + 9 + 4 + 5 + 3 + TraceParent::LEN);
    assert_eq!(decode_node(&bytes), Ok(Some(deliver)));
}

#[test]
fn bad_input_errors() {
    assert_eq!(decode_gate(&[0, 0, 0, 0]), Err(LinkDecodeError::EmptyFrame));
    assert_eq!(
        decode_gate(&[0, 0, 0, 1, 0x81]),
        Err(LinkDecodeError::WrongDirection {
            type_byte: 0x81,
            expected: Direction::GateToNode
        })
    );
    assert_eq!(
        decode_node(&[0, 0, 0, 1, 0x05]),
        Err(LinkDecodeError::WrongDirection {
            type_byte: 0x05,
            expected: Direction::NodeToGate
        })
    );
    assert_eq!(
        decode_gate(&[0, 0, 0, 1, 0x00]),
        Err(LinkDecodeError::UnknownType {
            type_byte: 0,
            expected: Direction::GateToNode
        })
    );
    assert_eq!(
        decode_gate(&[0, 0, 0, 2, 0x03, 0]),
        Err(LinkDecodeError::Truncated {
            message: "gate-to-node Disconnected",
            field: "connection id"
        })
    );
    assert_eq!(
        decode_gate(&[0, 0, 0, 5, 0x01, 0, 1, 1, 0xff]),
        Err(LinkDecodeError::NotUtf8 {
            message: "gate-to-node Hello",
            field: "gate id"
        })
    );
    assert_eq!(
        decode_gate(&[0, 0, 0, 10, 0x04, 0, 0, 0, 0, 0, 0, 0, 1, 4]),
        Err(LinkDecodeError::UnknownAckResult(4))
    );
    assert_eq!(
        decode_node(&[0, 0, 0, 2, 0x82, 4]),
        Err(LinkDecodeError::UnknownNodeState(4))
    );
    assert_eq!(
        decode_node(&[0, 0, 0, 2, 0x87, 9]),
        Err(LinkDecodeError::UnknownTargetKind(9))
    );
    assert_eq!(
        decode_node(&[0, 0, 0, 10, 0x86, 0, 0, 0, 0, 0, 0, 0, 1, 2]),
        Err(LinkDecodeError::InvalidPresence {
            message: "node-to-gate UserNode",
            field: "node id",
            value: 2
        })
    );
    assert_eq!(
        decode_node(&[0, 0, 0, 14, 0x81, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 5, 0x08]),
        Err(LinkDecodeError::UnknownRouteFlags { route: 5, flags: 8 })
    );
    // A hostile uid count is checked against the frame before anything is allocated.
    assert_eq!(
        decode_node(&[0, 0, 0, 6, 0x87, 2, 0xff, 0xff, 0xff, 0xff]),
        Err(LinkDecodeError::Truncated {
            message: "node-to-gate Disconnect",
            field: "target uid list"
        })
    );
}

#[test]
fn oversize_is_refused_before_allocating() {
    let mut decoder = LinkDecoder::new(100);
    let mut buf = BytesMut::from(&[0, 0, 0, 101][..]);
    let capacity = buf.capacity();
    assert_eq!(
        decoder.decode_gate_to_node(&mut buf),
        Err(LinkDecodeError::Oversize { len: 101, max: 100 })
    );
    assert_eq!(buf.capacity(), capacity);
    let mut buf = BytesMut::from(&[0, 0, 0, 100, 0x02][..]);
    assert_eq!(decoder.decode_gate_to_node(&mut buf), Ok(None));
    assert!(buf.capacity() >= 104);
}

#[test]
fn partial_frames_wait_for_more() {
    let bytes = gate_bytes(&GateToNode::Disconnected { cid: 5, uid: 6 });
    let mut decoder = LinkDecoder::default();
    let mut buf = BytesMut::new();
    for (i, &byte) in bytes.iter().enumerate() {
        buf.put_u8(byte);
        let decoded = decoder.decode_gate_to_node(&mut buf).unwrap();
        assert_eq!(decoded.is_some(), i + 1 == bytes.len());
    }
    assert!(buf.is_empty());
}

#[test]
fn encode_errors_leave_dst_unchanged() {
    let mut dst = BytesMut::from(&b"keep"[..]);
    let long = "x".repeat(256);
    assert_eq!(
        encode_gate_to_node(
            &GateToNode::Hello {
                gate_id: long.clone(),
                features: 0,
            },
            &mut dst
        ),
        Err(LinkEncodeError::IdTooLong {
            field: "gate id",
            len: 256
        })
    );
    assert_eq!(
        encode_node_to_gate(
            &NodeToGate::UserNode {
                uid: 1,
                node_id: Some(long),
                pool: None,
            },
            &mut dst
        ),
        Err(LinkEncodeError::IdTooLong {
            field: "node id",
            len: 256
        })
    );
    assert_eq!(&dst[..], b"keep");
    let max_id = "y".repeat(MAX_ID_BYTES);
    let hello = GateToNode::Hello {
        gate_id: max_id,
        features: 0,
    };
    encode_gate_to_node(&hello, &mut dst).unwrap();
    assert_eq!(decode_gate(&dst[4..]), Ok(Some(hello)));
}

#[test]
fn frame_limit_follows_packet_settings() {
    assert_eq!(DEFAULT_MAX_FRAME_BYTES, 1_114_116);
    assert_eq!(
        LinkDecoder::for_packets(&PacketConfig::default()),
        LinkDecoder::default()
    );
    let huge = PacketConfig::new(crate::ByteOrder::Big, 2, 2, u32::MAX).unwrap();
    assert_eq!(max_frame_bytes_for(&huge), u32::MAX);
}

#[test]
fn call_messages_exact_bytes_and_round_trip() {
    let call = NodeToGate::Call {
        call: 5,
        target: CallTarget::Pool("b".into()),
        route: 101,
        uid: 7,
        oneway: false,
        body: Bytes::from_static(b"{}"),
        trace: None,
    };
    assert_eq!(
        hex(&node_bytes(&call)),
        "00 00 00 1f 89 00 00 00 00 00 00 00 05 00 01 62 00 00 00 65 00 00 00 00 00 00 00 07 00 \
         00 00 00 02 7b 7d"
    );
    assert_eq!(decode_node(&node_bytes(&call)), Ok(Some(call)));
    let relayed = GateToNode::Call {
        call: 9,
        from: "n1".into(),
        route: 101,
        uid: 0,
        oneway: true,
        body: Bytes::from_static(b"x"),
        trace: None,
    };
    assert_eq!(
        hex(&gate_bytes(&relayed)),
        "00 00 00 1e 06 00 00 00 00 00 00 00 09 02 6e 31 00 00 00 65 00 00 00 00 00 00 00 00 01 \
         00 00 00 01 78"
    );
    assert_eq!(decode_gate(&gate_bytes(&relayed)), Ok(Some(relayed)));
    let reply = NodeToGate::CallReply {
        call: 5,
        status: CallStatus::RemoteError,
        body: Bytes::new(),
    };
    assert_eq!(
        hex(&node_bytes(&reply)),
        "00 00 00 0e 8a 00 00 00 00 00 00 00 05 01 00 00 00 00"
    );
    assert_eq!(decode_node(&node_bytes(&reply)), Ok(Some(reply)));
}

#[test]
fn unknown_call_fields_are_refused() {
    let mut bytes = node_bytes(&NodeToGate::CallReply {
        call: 1,
        status: CallStatus::Ok,
        body: Bytes::new(),
    });
    bytes[13] = 9;
    assert_eq!(decode_node(&bytes), Err(LinkDecodeError::UnknownCallStatus(9)));
    let mut bytes = node_bytes(&NodeToGate::Call {
        call: 1,
        target: CallTarget::Node("n".into()),
        route: 1,
        uid: 0,
        oneway: false,
        body: Bytes::new(),
        trace: None,
    });
    bytes[13] = 7;
    assert_eq!(decode_node(&bytes), Err(LinkDecodeError::UnknownCallTarget(7)));
    bytes[13] = 1;
    let flags = bytes.len() - 5;
    bytes[flags] = 0x02;
    assert_eq!(decode_node(&bytes), Err(LinkDecodeError::UnknownCallFlags(0x02)));
    // A gate that announces no features (an older gate) reads as features 0.
    assert_eq!(
        decode_gate(&[0, 0, 0, 6, 1, 0, 1, 2, b'g', b'1']),
        Ok(Some(GateToNode::Hello {
            gate_id: "g1".into(),
            features: 0
        }))
    );
}

/// Decodes every node → gate frame of `bytes` with a decoder of `max` (so none may be over it).
fn decode_all_node(bytes: &[u8], max: u32) -> Vec<NodeToGate> {
    let mut decoder = LinkDecoder::new(max);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(msg) = decoder.decode_node_to_gate(&mut buf).unwrap() {
        out.push(msg);
    }
    assert!(buf.is_empty(), "a frame was cut short");
    out
}

#[test]
fn a_users_delivery_over_the_limit_is_split_in_order_and_each_frame_fits() {
    let uids: Vec<Uid> = (1..=1000).collect();
    let packet = Bytes::from_static(b"\x00\x00\x00\x05\x00\x01\x00\x00{");
    let trace = TraceParent::new([3; 16], [4; 8], 1);
    let deliver = NodeToGate::Deliver {
        target: Target::Users(uids.clone()),
        packet: packet.clone(),
        trace,
    };
    // Room for 100 uids next to the packet and its trace context.
    let max = (1 + 1 + 4 + 4 + packet.len() + 3 + TraceParent::LEN + 100 * 8) as u32;
    assert_eq!(uids_per_frame(max, 4 + packet.len() + 3 + TraceParent::LEN), 100);
    let mut buf = BytesMut::new();
    assert_eq!(encode_node_to_gate_within(&deliver, max, &mut buf), Ok(10));
    let frames = decode_all_node(&buf, max);
    assert_eq!(frames.len(), 10);
    let mut seen = Vec::new();
    for frame in frames {
        let NodeToGate::Deliver {
            target: Target::Users(run),
            packet: got,
            trace: got_trace,
        } = frame
        else {
            panic!("not a users delivery: {frame:?}");
        };
        assert_eq!((got, got_trace), (packet.clone(), trace));
        assert_eq!(run.len(), 100);
        seen.extend(run);
    }
    assert_eq!(seen, uids);

    // Within the limit: one frame, byte for byte what the plain encoder writes.
    let mut whole = BytesMut::new();
    assert_eq!(
        encode_node_to_gate_within(&deliver, DEFAULT_MAX_FRAME_BYTES, &mut whole),
        Ok(1)
    );
    assert_eq!(whole, node_bytes(&deliver));

    // A users disconnect splits the same way.
    let disconnect = NodeToGate::Disconnect {
        target: Target::Users(uids.clone()),
    };
    let mut buf = BytesMut::new();
    assert_eq!(
        encode_node_to_gate_within(&disconnect, 6 + 8 * 300, &mut buf),
        Ok(4)
    );
    let runs: Vec<Vec<Uid>> = decode_all_node(&buf, 6 + 8 * 300)
        .into_iter()
        .map(|msg| match msg {
            NodeToGate::Disconnect {
                target: Target::Users(run),
            } => run,
            other => panic!("not a users disconnect: {other:?}"),
        })
        .collect();
    assert_eq!(
        runs.iter().map(Vec::len).collect::<Vec<_>>(),
        [300, 300, 300, 100]
    );
    assert_eq!(runs.concat(), uids);
}

#[test]
fn what_cannot_be_split_over_the_limit_is_refused_and_writes_nothing() {
    let big = Bytes::from(vec![7u8; 2000]);
    let mut buf = BytesMut::from(&b"kept"[..]);
    for msg in [
        NodeToGate::Deliver {
            target: Target::Users(vec![1, 2, 3]),
            packet: big.clone(),
            trace: None,
        },
        NodeToGate::Deliver {
            target: Target::Broadcast,
            packet: big.clone(),
            trace: None,
        },
        NodeToGate::CallReply {
            call: 1,
            status: CallStatus::Ok,
            body: big.clone(),
        },
    ] {
        assert!(matches!(
            encode_node_to_gate_within(&msg, 1000, &mut buf),
            Err(LinkEncodeError::OverFrameLimit { max: 1000, .. })
        ));
        assert_eq!(&buf[..], b"kept");
    }
    let packet = GateToNode::Packet {
        cid: 1,
        uid: 2,
        body: big,
        trace: None,
        peer: None,
    };
    assert_eq!(
        encode_gate_to_node_within(&packet, 1000, &mut buf),
        Err(LinkEncodeError::OverFrameLimit { len: 2021, max: 1000 })
    );
    assert_eq!(&buf[..], b"kept");
    assert_eq!(encode_gate_to_node_within(&packet, 2021, &mut buf), Ok(1));
}

#[test]
fn the_frame_allowance_holds_a_largest_packet_for_one_user_with_a_trace() {
    // The node refuses packets over the client limit at its API; this is why such a packet never needs
    // the link to refuse it.
    let packet = PacketConfig::default();
    let largest = packet.max_packet_bytes() as usize + SIZE_FIELD_BYTES;
    let deliver = NodeToGate::Deliver {
        target: Target::Users(vec![1]),
        packet: Bytes::from(vec![0; largest]),
        trace: TraceParent::new([1; 16], [1; 8], 1),
    };
    let mut buf = BytesMut::new();
    assert_eq!(
        encode_node_to_gate_within(&deliver, max_frame_bytes_for(&packet), &mut buf),
        Ok(1)
    );
}

//! Property tests of the due packet codec over every byte order and field width: round trips, streams
//! split at arbitrary offsets, hostile input (no panic, no allocation driven by a hostile size field),
//! heartbeats, payloads written in place, and the signed ranges of route and seq.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use proptest::sample::select;
use switchyard_protocol::packet::{HEARTBEAT_BIT, MessageError, SIZE_FIELD_BYTES};
use switchyard_protocol::{ByteOrder, DecodeError, EncodeError, Frame, PacketConfig};

/// Largest `max_packet_bytes` the generated settings use; keeps payloads small enough for many cases.
const MAX_CAP: u32 = 2048;

fn byte_order() -> impl Strategy<Value = ByteOrder> {
    prop_oneof![Just(ByteOrder::Big), Just(ByteOrder::Little)]
}

/// Any valid settings: both byte orders, every allowed width, caps from the smallest allowed up.
fn config() -> impl Strategy<Value = PacketConfig> {
    (
        byte_order(),
        select(vec![1u8, 2, 4]),
        select(vec![0u8, 1, 2, 4]),
        9u32..=MAX_CAP,
    )
        .prop_map(|(order, route_bytes, seq_bytes, max)| {
            PacketConfig::new(order, route_bytes, seq_bytes, max).expect("valid settings")
        })
}

fn signed_range(bytes: u8) -> std::ops::RangeInclusive<i32> {
    match bytes {
        0 => 0..=0,
        4 => i32::MIN..=i32::MAX,
        n => {
            let max = (1i32 << (n * 8 - 1)) - 1;
            -max - 1..=max
        }
    }
}

/// A value in the signed range of `bytes`, biased towards the edges.
fn in_range(bytes: u8) -> BoxedStrategy<i32> {
    let range = signed_range(bytes);
    let (lo, hi) = (*range.start(), *range.end());
    prop_oneof![Just(lo), Just(hi), Just(0), Just((-1i32).max(lo)), range].boxed()
}

/// A value outside the signed range of `bytes` (which must not be 4: every i32 fits 4 bytes).
fn out_of_range(bytes: u8) -> BoxedStrategy<i32> {
    let range = signed_range(bytes);
    let (lo, hi) = (*range.start(), *range.end());
    prop_oneof![Just(hi + 1), Just(lo - 1), (hi + 1)..=i32::MAX, i32::MIN..lo].boxed()
}

/// Settings plus a data packet that fits them.
fn data_packet() -> impl Strategy<Value = (PacketConfig, i32, i32, Vec<u8>)> {
    config().prop_flat_map(|config| {
        let room = config.max_packet_bytes() as usize - config.data_header_len();
        (
            Just(config),
            in_range(config.route_bytes()),
            in_range(config.seq_bytes()),
            prop_oneof![
                1 => Just(room),
                4 => 0..=room.min(256),
                1 => 0..=room,
            ]
            .prop_flat_map(|len| proptest::collection::vec(any::<u8>(), len)),
        )
    })
}

/// One packet of a stream: encoded data, encoded heartbeat, or raw bytes after a valid size field.
#[derive(Debug, Clone)]
enum Item {
    Data { route: i32, seq: i32, payload: Vec<u8> },
    Heartbeat { extcode: u8, time: Option<i64> },
    Raw(Vec<u8>),
}

fn items(config: PacketConfig) -> impl Strategy<Value = Vec<Item>> {
    let room = (config.max_packet_bytes() as usize - config.data_header_len()).min(300);
    let max_raw = (config.max_packet_bytes() as usize).min(300);
    let item = prop_oneof![
        3 => (
            in_range(config.route_bytes()),
            in_range(config.seq_bytes()),
            proptest::collection::vec(any::<u8>(), 0..=room)
        )
            .prop_map(|(route, seq, payload)| Item::Data { route, seq, payload }),
        1 => (any::<u8>(), proptest::option::of(any::<i64>()))
            .prop_map(|(extcode, time)| Item::Heartbeat { extcode, time }),
        1 => proptest::collection::vec(any::<u8>(), 0..=max_raw).prop_map(Item::Raw),
    ];
    proptest::collection::vec(item, 0..12)
}

fn put_size(config: &PacketConfig, dst: &mut BytesMut, size: u32) {
    match config.byte_order() {
        ByteOrder::Big => dst.put_u32(size),
        ByteOrder::Little => dst.put_u32_le(size),
    }
}

fn encode_items(config: &PacketConfig, items: &[Item]) -> BytesMut {
    let mut stream = BytesMut::new();
    for item in items {
        match item {
            Item::Data { route, seq, payload } => {
                config
                    .encode_data(*route, *seq, payload, &mut stream)
                    .expect("fits");
            }
            Item::Heartbeat { extcode, time } => config.encode_heartbeat(*extcode, *time, &mut stream),
            Item::Raw(body) => {
                put_size(config, &mut stream, body.len() as u32);
                stream.put_slice(body);
            }
        }
    }
    stream
}

/// Decodes everything in `buf`, stopping at the first `None`.
fn drain(config: &PacketConfig, buf: &mut BytesMut) -> Result<Vec<Frame>, DecodeError> {
    let mut decoder = config.decoder();
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(buf)? {
        frames.push(frame);
    }
    Ok(frames)
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

proptest! {
    #[test]
    fn data_round_trip((config, route, seq, payload) in data_packet()) {
        let mut buf = BytesMut::new();
        config.encode_data(route, seq, &payload, &mut buf).expect("fits");
        prop_assert_eq!(buf.len(), SIZE_FIELD_BYTES + config.data_header_len() + payload.len());
        let packet = buf.clone().freeze();

        let frame = config.decoder().decode(&mut buf).expect("valid stream");
        prop_assert!(buf.is_empty());
        let Some(Frame::Data(data)) = frame.clone() else {
            return Err(TestCaseError::fail(format!("not data: {frame:?}")));
        };
        prop_assert_eq!(data.route(), route);
        prop_assert_eq!(data.seq(), seq);
        prop_assert_eq!(data.extcode(), 0);
        prop_assert_eq!(&data.payload()[..], &payload[..]);
        prop_assert_eq!(&data.body()[..], &packet[SIZE_FIELD_BYTES..]);

        // The same packet as one WebSocket message, and the one-shot helper, agree.
        prop_assert_eq!(config.parse_message(packet.clone()).expect("one packet"), frame.expect("some"));
        prop_assert_eq!(config.data_packet(route, seq, &payload).expect("fits"), packet);
    }

    #[test]
    fn payload_written_in_place_matches_data_packet(
        (config, route, seq, payload) in data_packet(),
        prefix in proptest::collection::vec(any::<u8>(), 0..16),
        extra in 1usize..64,
    ) {
        let mut dst = BytesMut::from(&prefix[..]);
        let start = config.begin_data(route, seq, &mut dst).expect("in range");
        prop_assert_eq!(start, prefix.len());
        dst.extend_from_slice(&payload);
        config.finish_data(&mut dst, start).expect("fits");
        prop_assert_eq!(&dst[..start], &prefix[..]);
        prop_assert_eq!(&dst[start..], &config.data_packet(route, seq, &payload).expect("fits")[..]);

        // One byte over the cap (or more) is refused and leaves `dst` as it was before `begin_data`.
        let room = config.max_packet_bytes() as usize - config.data_header_len();
        let mut dst = BytesMut::from(&prefix[..]);
        let start = config.begin_data(route, seq, &mut dst).expect("in range");
        dst.extend_from_slice(&vec![0; room + extra]);
        let refused = matches!(config.finish_data(&mut dst, start), Err(EncodeError::TooLarge { .. }));
        prop_assert!(refused);
        prop_assert_eq!(&dst[..], &prefix[..]);
    }

    #[test]
    fn payload_cap_is_exact(config in config()) {
        let room = config.max_packet_bytes() as usize - config.data_header_len();
        prop_assert!(config.data_packet(0, 0, &vec![7; room]).is_ok());
        let mut dst = BytesMut::from(&b"prefix"[..]);
        prop_assert_eq!(
            config.encode_data(0, 0, &vec![7; room + 1], &mut dst),
            Err(EncodeError::TooLarge { size: u64::from(config.max_packet_bytes()) + 1, max: config.max_packet_bytes() })
        );
        prop_assert_eq!(&dst[..], b"prefix");
    }

    #[test]
    fn chunked_stream_decodes_like_whole(
        (config, items, raw_cuts) in config().prop_flat_map(|c| (
            Just(c),
            items(c),
            proptest::collection::vec(any::<usize>(), 0..16),
        ))
    ) {
        let stream = encode_items(&config, &items).freeze();
        let whole = drain(&config, &mut BytesMut::from(&stream[..])).expect("valid stream");
        prop_assert_eq!(whole.len(), items.len());
        for (frame, item) in whole.iter().zip(&items) {
            match (item, frame) {
                (Item::Data { route, seq, payload }, Frame::Data(data)) => {
                    prop_assert_eq!((data.route(), data.seq()), (*route, *seq));
                    prop_assert_eq!(&data.payload()[..], &payload[..]);
                }
                (Item::Heartbeat { extcode, time }, Frame::Heartbeat { extcode: got, server_time_nanos }) => {
                    prop_assert_eq!(*got, extcode & 0x7f);
                    prop_assert_eq!(server_time_nanos, time);
                }
                (Item::Raw(body), frame) => {
                    prop_assert_eq!(frame, &config.parse_body(Bytes::from(body.clone())));
                }
                (item, frame) => return Err(TestCaseError::fail(format!("{item:?} decoded as {frame:?}"))),
            }
        }

        let mut buf = BytesMut::new();
        let mut decoder = config.decoder();
        let mut chunked = Vec::new();
        for window in cuts(stream.len(), &raw_cuts).windows(2) {
            buf.extend_from_slice(&stream[window[0]..window[1]]);
            while let Some(frame) = decoder.decode(&mut buf).expect("valid stream") {
                chunked.push(frame);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(chunked, whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_overallocate(
        config in config(),
        input in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let max_total = config.max_packet_bytes() as usize + SIZE_FIELD_BYTES;
        let mut buf = BytesMut::from(&input[..]);
        let initial = buf.capacity();
        let mut decoder = config.decoder();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    // Growth is bounded by the cap, never by the announced size (the allocator may
                    // double the buffer it already had).
                    prop_assert!(buf.capacity() <= max_total.max(2 * initial));
                    break;
                }
                Err(DecodeError::Oversize { size, max }) => {
                    prop_assert!(size > max);
                    prop_assert!(buf.capacity() <= initial);
                    break;
                }
            }
        }
        let message = Bytes::from(input.clone());
        match config.parse_message(message) {
            Ok(_) => prop_assert_eq!(input.len() - SIZE_FIELD_BYTES, read_size(&config, &input) as usize),
            Err(MessageError::NoSizeField { len }) => prop_assert!(len < SIZE_FIELD_BYTES),
            Err(MessageError::NotOnePacket { .. }) | Err(MessageError::Oversize(_)) => {}
        }
        let _ = config.parse_body(Bytes::from(input));
    }

    #[test]
    fn hostile_size_field_reserves_at_most_the_cap(config in config(), size in any::<u32>()) {
        let mut buf = BytesMut::with_capacity(SIZE_FIELD_BYTES);
        put_size(&config, &mut buf, size);
        let result = config.decoder().decode(&mut buf);
        if size > config.max_packet_bytes() {
            prop_assert_eq!(result, Err(DecodeError::Oversize { size, max: config.max_packet_bytes() }));
        } else if size == 0 {
            prop_assert_eq!(result, Ok(Some(Frame::Empty)));
        } else {
            prop_assert_eq!(result, Ok(None));
            prop_assert!(buf.capacity() >= SIZE_FIELD_BYTES + size as usize);
        }
        prop_assert!(buf.capacity() <= config.max_packet_bytes() as usize + SIZE_FIELD_BYTES);
    }

    #[test]
    fn heartbeat_round_trip(
        config in config(),
        extcode in any::<u8>(),
        time in proptest::option::of(any::<i64>()),
    ) {
        let packet = config.heartbeat_packet(extcode, time);
        prop_assert_eq!(packet.len(), SIZE_FIELD_BYTES + if time.is_some() { 9 } else { 1 });
        let expected = Frame::Heartbeat { extcode: extcode & 0x7f, server_time_nanos: time };
        let mut buf = BytesMut::from(&packet[..]);
        prop_assert_eq!(config.decoder().decode(&mut buf), Ok(Some(expected.clone())));
        prop_assert_eq!(config.parse_message(packet), Ok(expected));
    }

    #[test]
    fn heartbeat_of_any_length_is_a_heartbeat(
        config in config(),
        header in any::<u8>(),
        rest in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let mut body = vec![header | HEARTBEAT_BIT];
        body.extend_from_slice(&rest);
        let Frame::Heartbeat { extcode, server_time_nanos } = config.parse_body(Bytes::from(body.clone())) else {
            return Err(TestCaseError::fail("not a heartbeat"));
        };
        prop_assert_eq!(extcode, header & 0x7f);
        prop_assert_eq!(server_time_nanos.is_some(), body.len() >= 9);
        if let Some(nanos) = server_time_nanos {
            let bytes: [u8; 8] = body[1..9].try_into().expect("8 bytes");
            let expected = match config.byte_order() {
                ByteOrder::Big => i64::from_be_bytes(bytes),
                ByteOrder::Little => i64::from_le_bytes(bytes),
            };
            prop_assert_eq!(nanos, expected);
        }
    }

    #[test]
    fn out_of_range_route_refuses_to_encode(
        (config, route) in config()
            .prop_filter("every i32 fits 4 bytes", |c| c.route_bytes() < 4)
            .prop_flat_map(|c| (Just(c), out_of_range(c.route_bytes()))),
    ) {
        let mut dst = BytesMut::new();
        prop_assert_eq!(
            config.encode_data(route, 0, b"x", &mut dst),
            Err(EncodeError::RouteOutOfRange { route, bytes: config.route_bytes() })
        );
        prop_assert!(dst.is_empty());
    }

    #[test]
    fn out_of_range_seq_refuses_to_encode(
        (config, seq) in config()
            .prop_filter("every i32 fits 4 bytes", |c| c.seq_bytes() < 4)
            .prop_flat_map(|c| (Just(c), out_of_range(c.seq_bytes()))),
    ) {
        let mut dst = BytesMut::new();
        prop_assert_eq!(
            config.encode_data(0, seq, b"x", &mut dst),
            Err(EncodeError::SeqOutOfRange { seq, bytes: config.seq_bytes() })
        );
        prop_assert!(dst.is_empty());
    }
}

fn read_size(config: &PacketConfig, bytes: &[u8]) -> u32 {
    let field: [u8; 4] = bytes[..4].try_into().expect("4 bytes");
    match config.byte_order() {
        ByteOrder::Big => u32::from_be_bytes(field),
        ByteOrder::Little => u32::from_le_bytes(field),
    }
}

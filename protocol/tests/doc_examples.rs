//! Every worked hex example in `docs/protocol.md` is checked against the codec, both ways: the packet the
//! `<!-- packet {...} -->` line describes encodes to exactly the bytes of the block under it, and those
//! bytes decode back to it. The TypeScript SDK's unit tests check the same blocks against its codec.

use bytes::BytesMut;
use serde_json::Value;
use switchyard_protocol::{ByteOrder, DecodeError, Frame, PacketConfig};

/// One example: what the comment line says and the bytes of the block under it.
struct Example {
    line: usize,
    meta: Value,
    bytes: Vec<u8>,
}

fn examples() -> Vec<Example> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol.md is readable");
    let lines: Vec<&str> = doc.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(json) = line
            .strip_prefix("<!-- packet ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        else {
            continue;
        };
        let meta: Value = serde_json::from_str(json)
            .unwrap_or_else(|err| panic!("line {}: bad example description: {err}", i + 1));
        assert_eq!(
            lines.get(i + 1),
            Some(&"```hex"),
            "line {}: a ```hex block must follow",
            i + 1
        );
        let mut bytes = Vec::new();
        for body in lines[i + 2..].iter().take_while(|l| **l != "```") {
            let hex = body.split('#').next().unwrap_or_default();
            for pair in hex.split_whitespace() {
                bytes.push(
                    u8::from_str_radix(pair, 16)
                        .unwrap_or_else(|_| panic!("line {}: {pair:?} is not a hex byte", i + 1)),
                );
            }
        }
        found.push(Example {
            line: i + 1,
            meta,
            bytes,
        });
    }
    found
}

fn config(meta: &Value) -> PacketConfig {
    let order: ByteOrder = meta["order"]
        .as_str()
        .expect("order")
        .parse()
        .expect("byte order");
    let max = meta["max_packet_bytes"].as_u64().unwrap_or(65536) as u32;
    PacketConfig::new(
        order,
        meta["route_bytes"].as_u64().expect("route_bytes") as u8,
        meta["seq_bytes"].as_u64().expect("seq_bytes") as u8,
        max,
    )
    .expect("valid settings")
}

/// Decodes `bytes` as a TCP stream would: exactly one frame, nothing left over.
fn decode_one(config: &PacketConfig, bytes: &[u8]) -> Result<Frame, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let frame = config.decoder().decode(&mut buf)?.expect("a whole packet");
    assert!(buf.is_empty(), "{} bytes left after the packet", buf.len());
    Ok(frame)
}

#[test]
fn every_hex_example_in_the_protocol_doc_matches_the_codec() {
    let examples = examples();
    assert!(
        examples.len() >= 10,
        "only {} examples found in docs/protocol.md",
        examples.len()
    );
    for Example { line, meta, bytes } in examples {
        let config = config(&meta);
        match meta["kind"].as_str().expect("kind") {
            "data" => {
                let route = meta["route"].as_i64().expect("route") as i32;
                let seq = meta["seq"].as_i64().expect("seq") as i32;
                let payload = meta["payload"].as_str().expect("payload").as_bytes();
                let encoded = config.data_packet(route, seq, payload).expect("encodes");
                assert_eq!(&encoded[..], &bytes[..], "line {line}: encoding differs");
                let Frame::Data(frame) = decode_one(&config, &bytes).expect("decodes") else {
                    panic!("line {line}: not a data packet");
                };
                assert_eq!((frame.route(), frame.seq()), (route, seq), "line {line}");
                assert_eq!(&frame.payload()[..], payload, "line {line}");
                // Over WebSocket the same bytes are one message.
                let message = config.parse_message(bytes.clone().into()).expect("one message");
                assert_eq!(message, Frame::Data(frame), "line {line}");
            }
            "heartbeat" => {
                let extcode = meta["extcode"].as_u64().expect("extcode") as u8;
                let time = meta["time"]
                    .as_str()
                    .map(|t| t.parse::<i64>().expect("time is an i64"));
                let encoded = config.heartbeat_packet(extcode, time);
                assert_eq!(&encoded[..], &bytes[..], "line {line}: encoding differs");
                assert_eq!(
                    decode_one(&config, &bytes).expect("decodes"),
                    Frame::Heartbeat {
                        extcode,
                        server_time_nanos: time
                    },
                    "line {line}"
                );
            }
            "oversize" => {
                let size = meta["size"].as_u64().expect("size") as u32;
                assert_eq!(
                    decode_one(&config, &bytes).expect_err("refused"),
                    DecodeError::Oversize {
                        size,
                        max: config.max_packet_bytes()
                    },
                    "line {line}"
                );
            }
            other => panic!("line {line}: unknown example kind {other:?}"),
        }
    }
}

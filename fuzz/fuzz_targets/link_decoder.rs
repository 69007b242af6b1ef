//! Fuzzes the gate <-> node link decoder in both directions: arbitrary bytes, whole and in chunks.
//!
//! Input layout: byte 0 picks the frame limit, byte 1 the chunk size of the chunked pass; the rest is
//! the stream. Checks: no panic; chunked decoding yields the same messages and error as whole
//! decoding; the buffer never grows past the frame limit because of a length field; every decoded
//! message re-encodes to a frame that decodes to the same message.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_protocol::link::codec::LENGTH_FIELD_BYTES;
use switchyard_protocol::link::{
    DEFAULT_MAX_FRAME_BYTES, LinkDecodeError, LinkDecoder, encode_gate_to_node, encode_node_to_gate,
};

/// Decodes `stream` in chunks of `chunk` bytes with `next`, stopping at the first error.
fn decode<T>(
    max_frame_bytes: u32,
    stream: &[u8],
    chunk: usize,
    mut next: impl FnMut(&mut LinkDecoder, &mut BytesMut) -> Result<Option<T>, LinkDecodeError>,
) -> (Vec<T>, Option<LinkDecodeError>) {
    let mut decoder = LinkDecoder::new(max_frame_bytes);
    let mut buf = BytesMut::new();
    let mut msgs = Vec::new();
    let mut fed = 0;
    for piece in stream.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            match next(&mut decoder, &mut buf) {
                Ok(Some(msg)) => msgs.push(msg),
                Ok(None) => break,
                Err(error) => return (msgs, Some(error)),
            }
        }
        // The buffer only grows by amortised doubling towards what it holds or one frame within
        // the limit: never towards a hostile length field.
        let limit = max_frame_bytes as usize + LENGTH_FIELD_BYTES;
        assert!(buf.capacity() <= 2 * limit.max(fed), "grew past the frame limit");
    }
    (msgs, None)
}

fuzz_target!(|data: &[u8]| {
    let [limit, chunk, stream @ ..] = data else {
        return;
    };
    let max_frame_bytes = match limit {
        0 => DEFAULT_MAX_FRAME_BYTES,
        n => u32::from(*n) * 16,
    };
    let chunk = usize::from(*chunk);

    let whole = decode(
        max_frame_bytes,
        stream,
        stream.len(),
        LinkDecoder::decode_gate_to_node,
    );
    let chunked = decode(max_frame_bytes, stream, chunk, LinkDecoder::decode_gate_to_node);
    assert_eq!(whole, chunked, "chunked gate-to-node decoding differs from whole");
    for msg in whole.0 {
        let mut buf = BytesMut::new();
        encode_gate_to_node(&msg, &mut buf).expect("a decoded message re-encodes");
        assert_eq!(
            LinkDecoder::new(u32::MAX).decode_gate_to_node(&mut buf),
            Ok(Some(msg))
        );
        assert!(buf.is_empty());
    }

    let whole = decode(
        max_frame_bytes,
        stream,
        stream.len(),
        LinkDecoder::decode_node_to_gate,
    );
    let chunked = decode(max_frame_bytes, stream, chunk, LinkDecoder::decode_node_to_gate);
    assert_eq!(whole, chunked, "chunked node-to-gate decoding differs from whole");
    for msg in whole.0 {
        let mut buf = BytesMut::new();
        encode_node_to_gate(&msg, &mut buf).expect("a decoded message re-encodes");
        assert_eq!(
            LinkDecoder::new(u32::MAX).decode_node_to_gate(&mut buf),
            Ok(Some(msg))
        );
        assert!(buf.is_empty());
    }
});

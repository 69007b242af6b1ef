//! Fuzzes the due client packet codec: arbitrary bytes through the streaming `Decoder` (whole and in
//! chunks, under settings chosen by the first input bytes), `parse_message` and `parse_body`.
//!
//! Input layout: byte 0 picks byte order (bit 0), route width (bits 1–2), seq width (bits 3–4);
//! byte 1 picks the chunk size for the chunked pass; bytes 2–3 the packet cap; the rest is the stream.
//! Checks: no panic; chunked decoding yields the same frames and error as whole decoding; the buffer
//! never grows past the cap because of a size field; every decoded data packet re-encodes to the same
//! bytes.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use switchyard_protocol::packet::SIZE_FIELD_BYTES;
use switchyard_protocol::{ByteOrder, DecodeError, Frame, PacketConfig};

fn config(selector: u8, cap: u16) -> PacketConfig {
    let order = if selector & 1 == 0 {
        ByteOrder::Big
    } else {
        ByteOrder::Little
    };
    let route_bytes = [1, 2, 4, 2][usize::from((selector >> 1) & 3)];
    let seq_bytes = [0, 1, 2, 4][usize::from((selector >> 3) & 3)];
    let max = u32::from(cap).max(9);
    PacketConfig::new(order, route_bytes, seq_bytes, max).expect("valid settings")
}

/// Decodes `stream` fed in chunks of `chunk` bytes, stopping at the first error.
fn decode(config: &PacketConfig, stream: &[u8], chunk: usize) -> (Vec<Frame>, Option<DecodeError>) {
    let mut decoder = config.decoder();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    for piece in stream.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => return (frames, Some(error)),
            }
        }
        // The buffer only grows by amortised doubling towards what it holds or one frame within
        // the limit: never towards a hostile length field.
        let limit = config.max_packet_bytes() as usize + SIZE_FIELD_BYTES;
        assert!(buf.capacity() <= 2 * limit.max(fed), "grew past the cap");
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let [selector, chunk, cap_hi, cap_lo, stream @ ..] = data else {
        return;
    };
    let config = config(*selector, u16::from_be_bytes([*cap_hi, *cap_lo]));

    let whole = decode(&config, stream, stream.len());
    let chunked = decode(&config, stream, usize::from(*chunk));
    assert_eq!(whole, chunked, "chunked decoding differs from whole");

    for frame in &whole.0 {
        if let Frame::Data(data) = frame {
            let again = config
                .data_packet(data.route(), data.seq(), &data.payload())
                .expect("a decoded packet fits its own settings");
            if data.extcode() == 0 {
                assert_eq!(&again[SIZE_FIELD_BYTES..], &data.body()[..]);
            }
        }
    }

    let _ = config.parse_message(Bytes::copy_from_slice(stream));
    let _ = config.parse_body(Bytes::copy_from_slice(stream));
});

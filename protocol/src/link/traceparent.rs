//! The W3C `traceparent` a link frame may carry, so that one trace spans gate and node.
//!
//! A traced gate → node `Packet` (and a node → gate `Deliver` sent on behalf of a traced handler) carries
//! the context of the span that sent it as the 55-byte header value of W3C Trace Context
//! (<https://www.w3.org/TR/trace-context/#traceparent-header>), version `00`:
//!
//! ```text
//! 00-<trace id: 32 lowercase hex>-<parent span id: 16 lowercase hex>-<trace flags: 2 lowercase hex>
//! ```
//!
//! [`TraceParent`] is its parsed form: fixed size and `Copy`, so carrying it costs no allocation. The wire
//! form is parsed before anything uses it, and anything that is not exactly a valid version-00 value
//! (another length or version, upper-case or non-hex digits, misplaced dashes, an all-zero trace or span
//! id, which W3C declares invalid) is not a `TraceParent`: the link codec then ignores the extension, as
//! if it were absent, and keeps the frame (a bad trace context must never cost a player a packet).

use std::fmt;

/// A W3C trace context: trace id, parent span id and trace flags. Both ids are non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl TraceParent {
    /// Bytes of the wire form.
    pub const LEN: usize = 55;
    /// Trace flag: the sender sampled (records) the trace.
    pub const SAMPLED: u8 = 0x01;

    /// A trace context, or `None` when an id is all zeros (invalid in W3C Trace Context).
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Option<Self> {
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The id of the span that sent the frame: the parent of the receiver's span.
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    pub fn flags(&self) -> u8 {
        self.flags
    }

    pub fn is_sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// Parses a wire form; `None` for anything but a valid version-00 value of exactly [`Self::LEN`] bytes.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let value: &[u8; Self::LEN] = value.try_into().ok()?;
        if &value[..3] != b"00-" || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0; 16];
        hex_decode(&value[3..35], &mut trace_id)?;
        let mut span_id = [0; 8];
        hex_decode(&value[36..52], &mut span_id)?;
        let mut flags = [0; 1];
        hex_decode(&value[53..55], &mut flags)?;
        TraceParent::new(trace_id, span_id, flags[0])
    }

    /// The wire form, without allocating.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [b'-'; Self::LEN];
        out[..2].copy_from_slice(b"00");
        hex_encode(&self.trace_id, &mut out[3..35]);
        hex_encode(&self.span_id, &mut out[36..52]);
        hex_encode(&[self.flags], &mut out[53..55]);
        out
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The wire form is ASCII by construction.
        f.write_str(std::str::from_utf8(&self.encode()).map_err(|_| fmt::Error)?)
    }
}

fn hex_encode(bytes: &[u8], out: &mut [u8]) {
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
}

/// Lower-case hex only: W3C Trace Context requires it, and it keeps parse ∘ encode the identity.
fn hex_decode(hex: &[u8], out: &mut [u8]) -> Option<()> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            _ => None,
        }
    }
    for (pair, byte) in hex.chunks_exact(2).zip(out.iter_mut()) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &[u8] = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn parses_and_encodes_the_w3c_example() {
        let parsed = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(
            parsed.trace_id(),
            [
                0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31,
                0x9c
            ]
        );
        assert_eq!(parsed.span_id(), [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]);
        assert!(parsed.is_sampled());
        assert_eq!(&parsed.encode()[..], EXAMPLE);
        assert_eq!(parsed.to_string().as_bytes(), EXAMPLE);
    }

    #[test]
    fn refuses_everything_but_a_valid_version_00_value() {
        let mut bad: Vec<Vec<u8>> = vec![
            Vec::new(),
            EXAMPLE[..54].to_vec(),
            [EXAMPLE, b"-"].concat(),
            b"00-00000000000000000000000000000000-b7ad6b7169203331-01".to_vec(),
            b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01".to_vec(),
            b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01".to_vec(),
        ];
        for (at, byte) in [
            (0, b'f'),
            (1, b'1'),
            (2, b'_'),
            (35, b'0'),
            (52, b'x'),
            (10, b'g'),
            (54, b' '),
        ] {
            let mut value = EXAMPLE.to_vec();
            value[at] = byte;
            bad.push(value);
        }
        for value in bad {
            assert_eq!(
                TraceParent::parse(&value),
                None,
                "{:?}",
                String::from_utf8_lossy(&value)
            );
        }
        assert_eq!(TraceParent::new([0; 16], [1; 8], 1), None);
        assert_eq!(TraceParent::new([1; 16], [0; 8], 1), None);
    }

    #[test]
    fn every_flag_byte_round_trips() {
        for flags in 0..=u8::MAX {
            let trace = TraceParent::new([0xab; 16], [0x01; 8], flags).unwrap();
            assert_eq!(TraceParent::parse(&trace.encode()), Some(trace));
            assert_eq!(trace.is_sampled(), flags & 1 == 1);
        }
    }
}

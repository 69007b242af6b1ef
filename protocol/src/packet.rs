//! The due-compatible client packet, byte for byte (see `docs/protocol.md`).
//!
//! ```text
//! data:      | size u32 | header u8 | route (1|2|4 B) | seq (0|1|2|4 B) | payload ... |
//! heartbeat: | size u32 | header u8 | [server time i64, nanoseconds, downlink only, optional] |
//! ```
//!
//! `size` counts the bytes after itself. The decoder reads the size first and refuses anything over
//! [`PacketConfig::max_packet_bytes`] before it reserves a single byte, so a hostile size field can never
//! make it allocate. Decoded payloads are slices of the read buffer ([`Bytes`]), never copies.

use std::fmt;
use std::str::FromStr;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes taken by the size field in front of every packet.
pub const SIZE_FIELD_BYTES: usize = 4;
/// Header bit that marks a heartbeat.
pub const HEARTBEAT_BIT: u8 = 0x80;
/// Header bits that carry the extcode (reserved by due, ignored by due clients).
pub const EXTCODE_MASK: u8 = 0x7f;
/// Default cap on the size field: 64 KiB.
pub const DEFAULT_MAX_PACKET_BYTES: u32 = 64 * 1024;
/// Length of a heartbeat body that carries the server time: header + i64.
const HEARTBEAT_WITH_TIME_BYTES: usize = 9;

/// Extcode values Switchyard gives meaning to. due clients ignore every extcode.
pub mod extcode {
    /// Sent on a downlink heartbeat: this server is going away, reconnect (to any gate).
    pub const RECONNECT_ELSEWHERE: u8 = 0x01;
}

/// Byte order of the size, route, seq and heartbeat-time fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum ByteOrder {
    /// Network order, due's default.
    #[default]
    Big,
    /// due's `little` option.
    Little,
}

impl ByteOrder {
    /// The name used in flags and configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            ByteOrder::Big => "big",
            ByteOrder::Little => "little",
        }
    }
}

impl fmt::Display for ByteOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ByteOrder {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "big" | "big-endian" | "be" => Ok(ByteOrder::Big),
            "little" | "little-endian" | "le" => Ok(ByteOrder::Little),
            _ => Err(ConfigError::ByteOrder(s.to_owned())),
        }
    }
}

/// A packet setting that client, gate and node cannot agree on. The operator or the user is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("byte order {0:?} is not one of: big, little")]
    ByteOrder(String),
    #[error("route width {0} bytes is not one of: 1, 2, 4")]
    RouteBytes(u8),
    #[error("seq width {0} bytes is not one of: 0, 1, 2, 4")]
    SeqBytes(u8),
    #[error(
        "maximum packet size {max} bytes is below the smallest data packet of these widths ({min} bytes)"
    )]
    MaxPacketBytes { max: u32, min: u32 },
}

/// A packet this side was asked to send does not fit the settings. The caller is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("route {route} does not fit a signed {bytes}-byte field")]
    RouteOutOfRange { route: i32, bytes: u8 },
    #[error("seq {seq} does not fit a signed {bytes}-byte field")]
    SeqOutOfRange { seq: i32, bytes: u8 },
    #[error("packet of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge { size: u64, max: u32 },
}

/// A byte stream that cannot go on. The peer is at fault; the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("peer announced a packet of {size} bytes, over the maximum of {max} bytes")]
    Oversize { size: u32, max: u32 },
}

/// A WebSocket message that is not exactly one whole packet. The peer is at fault; the message is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message of {len} bytes is shorter than a size field")]
    NoSizeField { len: usize },
    #[error("message of {len} bytes does not hold exactly the one packet of {size} bytes it announces")]
    NotOnePacket { len: usize, size: u32 },
    #[error(transparent)]
    Oversize(#[from] DecodeError),
}

/// The packet settings that client, gate and node share. Construct with [`PacketConfig::new`], which
/// validates; [`Default`] is due's default (big-endian, route 2, seq 2) with a 64 KiB cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketConfig {
    byte_order: ByteOrder,
    route_bytes: u8,
    seq_bytes: u8,
    max_packet_bytes: u32,
}

impl Default for PacketConfig {
    fn default() -> Self {
        PacketConfig {
            byte_order: ByteOrder::Big,
            route_bytes: 2,
            seq_bytes: 2,
            max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
        }
    }
}

impl PacketConfig {
    /// Validates and builds the settings.
    ///
    /// # Errors
    /// A width that due does not allow, or a maximum too small to hold a data packet's header.
    pub fn new(
        byte_order: ByteOrder,
        route_bytes: u8,
        seq_bytes: u8,
        max_packet_bytes: u32,
    ) -> Result<Self, ConfigError> {
        if !matches!(route_bytes, 1 | 2 | 4) {
            return Err(ConfigError::RouteBytes(route_bytes));
        }
        if !matches!(seq_bytes, 0 | 1 | 2 | 4) {
            return Err(ConfigError::SeqBytes(seq_bytes));
        }
        let min = (1 + route_bytes + seq_bytes).max(HEARTBEAT_WITH_TIME_BYTES as u8) as u32;
        if max_packet_bytes < min {
            return Err(ConfigError::MaxPacketBytes {
                max: max_packet_bytes,
                min,
            });
        }
        Ok(PacketConfig {
            byte_order,
            route_bytes,
            seq_bytes,
            max_packet_bytes,
        })
    }

    pub fn byte_order(&self) -> ByteOrder {
        self.byte_order
    }

    pub fn route_bytes(&self) -> u8 {
        self.route_bytes
    }

    pub fn seq_bytes(&self) -> u8 {
        self.seq_bytes
    }

    /// The cap on the size field (bytes after the size field itself).
    pub fn max_packet_bytes(&self) -> u32 {
        self.max_packet_bytes
    }

    /// Header byte + route + seq: the smallest body of a data packet.
    pub fn data_header_len(&self) -> usize {
        1 + self.route_bytes as usize + self.seq_bytes as usize
    }

    /// The largest seq value the seq field can carry (0 when there is no seq field).
    pub fn max_seq(&self) -> i32 {
        max_signed(self.seq_bytes)
    }

    /// The largest route value the route field can carry.
    pub fn max_route(&self) -> i32 {
        max_signed(self.route_bytes)
    }

    /// A streaming decoder for these settings.
    pub fn decoder(&self) -> Decoder {
        Decoder { config: *self }
    }

    /// Appends one data packet to `dst`.
    ///
    /// # Errors
    /// Route or seq outside the signed range of their width, or a packet over the maximum size.
    pub fn encode_data(
        &self,
        route: i32,
        seq: i32,
        payload: &[u8],
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if !fits_signed(route, self.route_bytes) {
            return Err(EncodeError::RouteOutOfRange {
                route,
                bytes: self.route_bytes,
            });
        }
        if !fits_signed(seq, self.seq_bytes) {
            return Err(EncodeError::SeqOutOfRange {
                seq,
                bytes: self.seq_bytes,
            });
        }
        let size = self.data_header_len() as u64 + payload.len() as u64;
        if size > u64::from(self.max_packet_bytes) {
            return Err(EncodeError::TooLarge {
                size,
                max: self.max_packet_bytes,
            });
        }
        dst.reserve(SIZE_FIELD_BYTES + size as usize);
        self.put_uint(dst, size, 4);
        dst.put_u8(0);
        self.put_uint(dst, route as u32 as u64, self.route_bytes);
        self.put_uint(dst, seq as u32 as u64, self.seq_bytes);
        dst.put_slice(payload);
        Ok(())
    }

    /// Starts a data packet whose payload the caller appends to `dst` itself (for example by serializing
    /// straight into it); returns the offset to pass to [`PacketConfig::finish_data`].
    ///
    /// # Errors
    /// Route or seq outside the signed range of their width.
    pub fn begin_data(&self, route: i32, seq: i32, dst: &mut BytesMut) -> Result<usize, EncodeError> {
        let start = dst.len();
        self.encode_data(route, seq, &[], dst)?;
        Ok(start)
    }

    /// Completes a packet begun at `start` with [`PacketConfig::begin_data`]: writes its size field.
    ///
    /// # Errors
    /// The packet exceeds the maximum size; `dst` is truncated back to `start`.
    pub fn finish_data(&self, dst: &mut BytesMut, start: usize) -> Result<(), EncodeError> {
        let size = (dst.len() - start - SIZE_FIELD_BYTES) as u64;
        if size > u64::from(self.max_packet_bytes) {
            dst.truncate(start);
            return Err(EncodeError::TooLarge {
                size,
                max: self.max_packet_bytes,
            });
        }
        let field = match self.byte_order {
            ByteOrder::Big => (size as u32).to_be_bytes(),
            ByteOrder::Little => (size as u32).to_le_bytes(),
        };
        dst[start..start + SIZE_FIELD_BYTES].copy_from_slice(&field);
        Ok(())
    }

    /// One data packet as its own buffer.
    ///
    /// # Errors
    /// As [`PacketConfig::encode_data`].
    pub fn data_packet(&self, route: i32, seq: i32, payload: &[u8]) -> Result<Bytes, EncodeError> {
        let mut dst = BytesMut::with_capacity(SIZE_FIELD_BYTES + self.data_header_len() + payload.len());
        self.encode_data(route, seq, payload, &mut dst)?;
        Ok(dst.freeze())
    }

    /// Appends one heartbeat to `dst`: the header alone, or with the server time in nanoseconds.
    pub fn encode_heartbeat(&self, extcode: u8, server_time_nanos: Option<i64>, dst: &mut BytesMut) {
        let header = HEARTBEAT_BIT | (extcode & EXTCODE_MASK);
        match server_time_nanos {
            None => {
                dst.reserve(SIZE_FIELD_BYTES + 1);
                self.put_uint(dst, 1, 4);
                dst.put_u8(header);
            }
            Some(nanos) => {
                dst.reserve(SIZE_FIELD_BYTES + HEARTBEAT_WITH_TIME_BYTES);
                self.put_uint(dst, HEARTBEAT_WITH_TIME_BYTES as u64, 4);
                dst.put_u8(header);
                self.put_uint(dst, nanos as u64, 8);
            }
        }
    }

    /// One heartbeat as its own buffer.
    pub fn heartbeat_packet(&self, extcode: u8, server_time_nanos: Option<i64>) -> Bytes {
        let mut dst = BytesMut::with_capacity(SIZE_FIELD_BYTES + HEARTBEAT_WITH_TIME_BYTES);
        self.encode_heartbeat(extcode, server_time_nanos, &mut dst);
        dst.freeze()
    }

    /// Classifies the body of one packet (everything after the size field). Never fails: a body too
    /// short for its kind becomes [`Frame::Short`], which the receiver drops and counts.
    pub fn parse_body(&self, body: Bytes) -> Frame {
        let Some(&header) = body.first() else {
            return Frame::Empty;
        };
        if header & HEARTBEAT_BIT != 0 {
            let server_time_nanos = (body.len() >= HEARTBEAT_WITH_TIME_BYTES)
                .then(|| self.read_uint(&body[1..HEARTBEAT_WITH_TIME_BYTES]) as i64);
            return Frame::Heartbeat {
                extcode: header & EXTCODE_MASK,
                server_time_nanos,
            };
        }
        let header_len = self.data_header_len();
        if body.len() < header_len {
            return Frame::Short {
                size: body.len() as u32,
            };
        }
        let route_end = 1 + self.route_bytes as usize;
        let route = sign_extend(self.read_uint(&body[1..route_end]), self.route_bytes);
        let seq = sign_extend(self.read_uint(&body[route_end..header_len]), self.seq_bytes);
        Frame::Data(DataFrame {
            body,
            route,
            seq,
            payload_offset: header_len as u8,
        })
    }

    /// Parses a WebSocket binary message, which must hold exactly one whole packet, size field included.
    ///
    /// # Errors
    /// A message shorter than the size field, an announced size over the maximum, or a size that does not
    /// match the message length.
    pub fn parse_message(&self, message: Bytes) -> Result<Frame, MessageError> {
        let len = message.len();
        if len < SIZE_FIELD_BYTES {
            return Err(MessageError::NoSizeField { len });
        }
        let size = self.read_uint(&message[..SIZE_FIELD_BYTES]) as u32;
        if size > self.max_packet_bytes {
            return Err(DecodeError::Oversize {
                size,
                max: self.max_packet_bytes,
            }
            .into());
        }
        if len - SIZE_FIELD_BYTES != size as usize {
            return Err(MessageError::NotOnePacket { len, size });
        }
        Ok(self.parse_body(message.slice(SIZE_FIELD_BYTES..)))
    }

    /// The seq of a whole data packet (size field included) without decoding it, or `None` for a heartbeat,
    /// a packet too short to hold one, or settings without a seq field. Gates use it to time responses.
    pub fn peek_seq(&self, packet: &[u8]) -> Option<i32> {
        let route_end = SIZE_FIELD_BYTES + 1 + self.route_bytes as usize;
        let seq_end = route_end + self.seq_bytes as usize;
        let header = *packet.get(SIZE_FIELD_BYTES)?;
        if header & HEARTBEAT_BIT != 0 || self.seq_bytes == 0 || packet.len() < seq_end {
            return None;
        }
        Some(sign_extend(
            self.read_uint(&packet[route_end..seq_end]),
            self.seq_bytes,
        ))
    }

    /// Reads the size field at the start of `buf` (which must hold at least 4 bytes).
    fn read_size(&self, buf: &[u8]) -> u32 {
        self.read_uint(&buf[..SIZE_FIELD_BYTES]) as u32
    }

    fn read_uint(&self, bytes: &[u8]) -> u64 {
        match self.byte_order {
            ByteOrder::Big => bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
            ByteOrder::Little => bytes.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
        }
    }

    fn put_uint(&self, dst: &mut BytesMut, value: u64, width: u8) {
        let width = width as usize;
        if width == 0 {
            return;
        }
        match self.byte_order {
            ByteOrder::Big => dst.put_uint(value, width),
            ByteOrder::Little => dst.put_uint_le(value, width),
        }
    }
}

/// One decoded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A zero-size packet: counts as liveness, otherwise ignored.
    Empty,
    /// A heartbeat. Senders of uplink heartbeats send the header alone; the time is optional downlink.
    Heartbeat {
        extcode: u8,
        server_time_nanos: Option<i64>,
    },
    /// A data packet.
    Data(DataFrame),
    /// A data packet shorter than header + route + seq: dropped without closing the connection.
    Short { size: u32 },
}

/// A data packet whose route and seq are read and whose payload is left undecoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFrame {
    body: Bytes,
    route: i32,
    seq: i32,
    payload_offset: u8,
}

impl DataFrame {
    pub fn route(&self) -> i32 {
        self.route
    }

    pub fn seq(&self) -> i32 {
        self.seq
    }

    /// The header's extcode bits (0 from due senders).
    pub fn extcode(&self) -> u8 {
        self.body[0] & EXTCODE_MASK
    }

    /// The payload, a slice of the received buffer.
    pub fn payload(&self) -> Bytes {
        self.body.slice(self.payload_offset as usize..)
    }

    /// The packet as received, after the size field: what a gate forwards to a node untouched.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    pub fn into_body(self) -> Bytes {
        self.body
    }
}

/// Splits a byte stream into packets. Handles partial reads and many packets per read.
#[derive(Debug, Clone)]
pub struct Decoder {
    config: PacketConfig,
}

impl Decoder {
    pub fn config(&self) -> &PacketConfig {
        &self.config
    }

    /// Takes the next whole packet off the front of `buf`, or returns `None` when more bytes are needed
    /// (having reserved room for the rest of an announced packet that is within the maximum).
    ///
    /// # Errors
    /// [`DecodeError::Oversize`] when the peer announces a packet over the maximum; nothing is allocated
    /// for it and the stream cannot be resynchronised, so the connection must be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if buf.len() < SIZE_FIELD_BYTES {
            return Ok(None);
        }
        let size = self.config.read_size(buf);
        if size > self.config.max_packet_bytes {
            return Err(DecodeError::Oversize {
                size,
                max: self.config.max_packet_bytes,
            });
        }
        let total = SIZE_FIELD_BYTES + size as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        buf.advance(SIZE_FIELD_BYTES);
        let body = buf.split_to(size as usize).freeze();
        Ok(Some(self.config.parse_body(body)))
    }
}

fn max_signed(bytes: u8) -> i32 {
    match bytes {
        0 => 0,
        4 => i32::MAX,
        n => (1i32 << (n * 8 - 1)) - 1,
    }
}

fn fits_signed(value: i32, bytes: u8) -> bool {
    match bytes {
        0 => value == 0,
        4 => true,
        n => {
            let max = max_signed(n);
            (-max - 1..=max).contains(&value)
        }
    }
}

fn sign_extend(raw: u64, bytes: u8) -> i32 {
    match bytes {
        0 => 0,
        1 => raw as u8 as i8 as i32,
        2 => raw as u16 as i16 as i32,
        _ => raw as u32 as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn protocol_md_example_data_packet() {
        let config = PacketConfig::default();
        let packet = config.data_packet(1, 1, br#"{"message":"hi"}"#).unwrap();
        assert_eq!(hex(&packet[..9]), "00 00 00 15 00 00 01 00 01");
        assert_eq!(&packet[9..], br#"{"message":"hi"}"#);
    }

    #[test]
    fn protocol_md_example_heartbeats() {
        let config = PacketConfig::default();
        assert_eq!(hex(&config.heartbeat_packet(0, None)), "00 00 00 01 80");
        let with_time = config.heartbeat_packet(extcode::RECONNECT_ELSEWHERE, Some(0x0102_0304_0506_0708));
        assert_eq!(hex(&with_time), "00 00 00 09 81 01 02 03 04 05 06 07 08");
    }

    #[test]
    fn little_endian_route4_seq0() {
        let config = PacketConfig::new(ByteOrder::Little, 4, 0, 1024).unwrap();
        let packet = config.data_packet(-2, 0, b"x").unwrap();
        assert_eq!(hex(&packet), "06 00 00 00 00 fe ff ff ff 78");
        let mut buf = BytesMut::from(&packet[..]);
        let Some(Frame::Data(frame)) = config.decoder().decode(&mut buf).unwrap() else {
            panic!("no data")
        };
        assert_eq!(
            (frame.route(), frame.seq(), &frame.payload()[..]),
            (-2, 0, &b"x"[..])
        );
    }

    #[test]
    fn signed_ranges_are_enforced_when_packing() {
        let config = PacketConfig::new(ByteOrder::Big, 1, 1, 1024).unwrap();
        assert!(config.data_packet(127, -128, b"").is_ok());
        assert_eq!(
            config.data_packet(128, 0, b""),
            Err(EncodeError::RouteOutOfRange { route: 128, bytes: 1 })
        );
        assert_eq!(
            config.data_packet(0, -129, b""),
            Err(EncodeError::SeqOutOfRange { seq: -129, bytes: 1 })
        );
        let no_seq = PacketConfig::new(ByteOrder::Big, 2, 0, 1024).unwrap();
        assert!(no_seq.data_packet(1, 1, b"").is_err());
    }

    #[test]
    fn oversize_is_refused_before_allocating() {
        let config = PacketConfig::new(ByteOrder::Big, 2, 2, 100).unwrap();
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let capacity = buf.capacity();
        assert_eq!(
            config.decoder().decode(&mut buf),
            Err(DecodeError::Oversize {
                size: u32::MAX,
                max: 100
            })
        );
        assert_eq!(buf.capacity(), capacity);
        assert_eq!(
            config.data_packet(1, 1, &[0; 96]),
            Err(EncodeError::TooLarge { size: 101, max: 100 })
        );
    }

    #[test]
    fn empty_short_and_heartbeat_of_any_length() {
        let config = PacketConfig::default();
        let mut buf = BytesMut::from(&[0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 3, 0x80, 1, 2][..]);
        let mut decoder = config.decoder();
        assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Frame::Empty));
        assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Frame::Short { size: 2 }));
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Some(Frame::Heartbeat {
                extcode: 0,
                server_time_nanos: None
            })
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn websocket_message_must_be_one_packet() {
        let config = PacketConfig::default();
        let packet = config.data_packet(1, 2, b"abc").unwrap();
        assert!(matches!(config.parse_message(packet.clone()), Ok(Frame::Data(_))));
        let mut two = BytesMut::from(&packet[..]);
        two.extend_from_slice(&packet);
        assert!(matches!(
            config.parse_message(two.freeze()),
            Err(MessageError::NotOnePacket { .. })
        ));
        assert!(matches!(
            config.parse_message(packet.slice(..3)),
            Err(MessageError::NoSizeField { .. })
        ));
    }

    #[test]
    fn payload_written_in_place() {
        let config = PacketConfig::new(ByteOrder::Little, 2, 1, 16).unwrap();
        let mut dst = BytesMut::from(&b"prefix"[..]);
        let start = config.begin_data(3, 4, &mut dst).unwrap();
        dst.extend_from_slice(b"hello");
        config.finish_data(&mut dst, start).unwrap();
        assert_eq!(&dst[start..], &config.data_packet(3, 4, b"hello").unwrap()[..]);
        let start = config.begin_data(3, 4, &mut dst).unwrap();
        dst.extend_from_slice(&[0; 20]);
        assert!(matches!(
            config.finish_data(&mut dst, start),
            Err(EncodeError::TooLarge { .. })
        ));
        assert_eq!(dst.len(), start, "a refused packet leaves nothing behind");
    }

    #[test]
    fn peek_seq_reads_whole_packets_only() {
        let config = PacketConfig::new(ByteOrder::Little, 4, 2, 1024).unwrap();
        assert_eq!(
            config.peek_seq(&config.data_packet(9, -3, b"{}").unwrap()),
            Some(-3)
        );
        assert_eq!(config.peek_seq(&config.heartbeat_packet(0, None)), None);
        assert_eq!(config.peek_seq(&[0, 0, 0]), None);
        let no_seq = PacketConfig::new(ByteOrder::Big, 2, 0, 1024).unwrap();
        assert_eq!(no_seq.peek_seq(&no_seq.data_packet(1, 0, b"").unwrap()), None);
    }

    #[test]
    fn config_validation() {
        assert_eq!(
            PacketConfig::new(ByteOrder::Big, 3, 2, 100),
            Err(ConfigError::RouteBytes(3))
        );
        assert_eq!(
            PacketConfig::new(ByteOrder::Big, 2, 3, 100),
            Err(ConfigError::SeqBytes(3))
        );
        assert!(matches!(
            PacketConfig::new(ByteOrder::Big, 4, 4, 8),
            Err(ConfigError::MaxPacketBytes { .. })
        ));
        assert_eq!("LITTLE".parse::<ByteOrder>(), Ok(ByteOrder::Little));
        assert!("middle".parse::<ByteOrder>().is_err());
    }
}

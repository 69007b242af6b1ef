//! Wire formats of Switchyard, free of any I/O runtime so they can be fuzzed and property-tested alone.
//!
//! - [`packet`]: the client packet of the Go framework due (see `docs/protocol.md`), byte for byte, with a
//!   streaming decoder that checks sizes before it allocates and hands out payloads without copying.
//! - [`link`]: the messages gates and nodes exchange, whatever carries them (in-process channels or TCP).

pub mod link;
pub mod packet;

pub use packet::{
    ByteOrder, ConfigError, DataFrame, DecodeError, Decoder, EncodeError, Frame, PacketConfig, extcode,
};

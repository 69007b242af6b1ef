//! Payload codecs, chosen per node (clients and nodes of one cluster must agree): JSON (the default),
//! MessagePack, and Protocol Buffers. Gates never see payloads; only nodes and clients decode them.
//!
//! JSON and MessagePack work with any serde type ([`Codec::encode`], [`Codec::decode`]); Protocol Buffers
//! work with prost messages ([`Codec::encode_message`], [`Codec::decode_message`]). Asking a codec for the
//! other family is a programming error reported as [`CodecError::WrongFamily`].

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    #[default]
    Json,
    Msgpack,
    Protobuf,
}

/// A payload that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The client sent a payload that does not decode: the client is at fault.
    #[error("payload is not valid {codec}: {reason}")]
    Invalid { codec: Codec, reason: String },
    /// The handler's value could not be encoded: the game code is at fault.
    #[error("value does not encode as {codec}: {reason}")]
    Unencodable { codec: Codec, reason: String },
    /// serde types with the protobuf codec, or prost messages with a serde codec.
    #[error("the {codec} codec does not handle {family} values")]
    WrongFamily { codec: Codec, family: &'static str },
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Json => "json",
            Codec::Msgpack => "msgpack",
            Codec::Protobuf => "protobuf",
        })
    }
}

impl FromStr for Codec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Codec::Json),
            "msgpack" => Ok(Codec::Msgpack),
            "protobuf" | "proto" => Ok(Codec::Protobuf),
            other => Err(format!("codec {other:?} is not one of: json, msgpack, protobuf")),
        }
    }
}

impl Codec {
    /// Appends the encoding of a serde value to `dst`.
    ///
    /// # Errors
    /// The value does not encode, or this is the protobuf codec.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T, dst: &mut BytesMut) -> Result<(), CodecError> {
        let unencodable = |reason: String| CodecError::Unencodable { codec: self, reason };
        match self {
            Codec::Json => serde_json::to_writer(dst.writer(), value).map_err(|e| unencodable(e.to_string())),
            Codec::Msgpack => {
                let mut writer = dst.writer();
                rmp_serde::encode::write_named(&mut writer, value).map_err(|e| unencodable(e.to_string()))
            }
            Codec::Protobuf => Err(CodecError::WrongFamily {
                codec: self,
                family: "serde",
            }),
        }
    }

    /// Decodes a serde value.
    ///
    /// # Errors
    /// The payload does not decode into `T`, or this is the protobuf codec.
    pub fn decode<T: DeserializeOwned>(self, payload: &[u8]) -> Result<T, CodecError> {
        let invalid = |reason: String| CodecError::Invalid { codec: self, reason };
        match self {
            Codec::Json => serde_json::from_slice(payload).map_err(|e| invalid(e.to_string())),
            Codec::Msgpack => rmp_serde::from_slice(payload).map_err(|e| invalid(e.to_string())),
            Codec::Protobuf => Err(CodecError::WrongFamily {
                codec: self,
                family: "serde",
            }),
        }
    }

    /// Appends the encoding of a prost message to `dst`.
    ///
    /// # Errors
    /// This is not the protobuf codec.
    pub fn encode_message<M: prost::Message>(
        self,
        message: &M,
        dst: &mut BytesMut,
    ) -> Result<(), CodecError> {
        match self {
            Codec::Protobuf => message.encode(dst).map_err(|e| CodecError::Unencodable {
                codec: self,
                reason: e.to_string(),
            }),
            _ => Err(CodecError::WrongFamily {
                codec: self,
                family: "protobuf",
            }),
        }
    }

    /// Decodes a prost message.
    ///
    /// # Errors
    /// The payload is not a valid message, or this is not the protobuf codec.
    pub fn decode_message<M: prost::Message + Default>(self, payload: &[u8]) -> Result<M, CodecError> {
        match self {
            Codec::Protobuf => M::decode(payload).map_err(|e| CodecError::Invalid {
                codec: self,
                reason: e.to_string(),
            }),
            _ => Err(CodecError::WrongFamily {
                codec: self,
                family: "protobuf",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Echo {
        message: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct EchoProto {
        #[prost(string, tag = "1")]
        message: String,
    }

    #[test]
    fn serde_codecs_round_trip_and_blame_bad_payloads() {
        for codec in [Codec::Json, Codec::Msgpack] {
            let mut buf = BytesMut::new();
            codec.encode(&Echo { message: "hi".into() }, &mut buf).unwrap();
            assert_eq!(codec.decode::<Echo>(&buf).unwrap(), Echo { message: "hi".into() });
            assert!(matches!(
                codec.decode::<Echo>(b"\xc1garbage"),
                Err(CodecError::Invalid { .. })
            ));
        }
        let mut buf = BytesMut::new();
        Codec::Json
            .encode(&Echo { message: "hi".into() }, &mut buf)
            .unwrap();
        assert_eq!(&buf[..], br#"{"message":"hi"}"#);
    }

    #[test]
    fn protobuf_codec_takes_prost_messages_only() {
        let mut buf = BytesMut::new();
        Codec::Protobuf
            .encode_message(&EchoProto { message: "hi".into() }, &mut buf)
            .unwrap();
        assert_eq!(
            Codec::Protobuf.decode_message::<EchoProto>(&buf).unwrap().message,
            "hi"
        );
        assert!(matches!(
            Codec::Protobuf.encode(&Echo { message: "x".into() }, &mut buf),
            Err(CodecError::WrongFamily { .. })
        ));
        assert!(matches!(
            Codec::Json.decode_message::<EchoProto>(&buf),
            Err(CodecError::WrongFamily { .. })
        ));
    }
}

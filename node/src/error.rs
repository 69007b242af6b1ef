//! What the node's own operations (push, bind, respond, ...) fail with, and whose fault it is.

use switchyard_cluster::locator::LocatorError;
use switchyard_protocol::EncodeError;
use switchyard_protocol::link::{AckError, Uid};

use crate::codec::CodecError;

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A value the game asked to send does not encode with the node's codec (the game's fault).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The game asked for a packet the settings cannot carry (the game's fault).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The gate's link closed (the gate stopped or the network failed).
    #[error("gate {0:?} is not linked to this node")]
    GateGone(String),
    #[error("gate {0:?} did not acknowledge in time")]
    AckTimeout(String),
    /// The gate refused the operation (e.g. the connection closed meanwhile).
    #[error("gate refused: {0}")]
    Refused(#[from] AckError),
    /// The locator's store failed (not the caller's fault; may be retried).
    #[error(transparent)]
    Locator(#[from] LocatorError),
    #[error("user {0} is not connected to any gate")]
    NotConnected(Uid),
    /// The player was evicted at this node's drain deadline and told to reconnect elsewhere.
    #[error("user {0} was evicted from this draining node")]
    Evicted(Uid),
    /// A connection operation (bind the gate, disconnect) in a handler serving another node's call, which
    /// has no client connection (the game's fault).
    #[error("this handler serves a call from node {caller:?}, which has no client connection")]
    NoConnection { caller: String },
}

//! What a handler fails with, and how a failure becomes the reply the player sees.
//!
//! Every failure is answered: a client that sent a request always gets a reply, never a timeout. The
//! default reply is `{"code": n, "error": "..."}` in the node's codec ([`default_error_reply`]); a game
//! replaces it with [`crate::Router::error_reply`]. Internal failures (a locator outage, a panic) are
//! answered with a generic message: their details go to the node's log, not to players.

use std::fmt;

use serde::Serialize;

use crate::codec::CodecError;
use crate::error::NodeError;

/// Reply codes the SDK uses; a game picks its own for [`HandlerError::new`] (0 means success).
pub mod code {
    /// The request's payload does not decode (the client's fault). The demo game's documented code.
    pub const BAD_REQUEST: i32 = 1;
    /// The node failed (its fault, or a store's): a locator outage, a gate gone, a panic.
    pub const INTERNAL: i32 = 2;
}

/// Why a handler failed; the label of `switchyard_node_handler_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The request did not decode into what the handler takes.
    BadRequest,
    /// The game refused the request ([`HandlerError::new`]).
    Game,
    /// Anything else that went wrong in the node: the game's code or a store.
    Internal,
    /// The handler panicked.
    Panic,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::BadRequest => "bad_request",
            FailureReason::Game => "game",
            FailureReason::Internal => "internal",
            FailureReason::Panic => "panic",
        }
    }
}

/// A handler's failure. Any `std::error::Error` converts into one with `?` (a payload that does not
/// decode becomes [`FailureReason::BadRequest`], anything else [`FailureReason::Internal`]); a game states
/// its own refusals with [`HandlerError::new`].
///
/// Like `anyhow::Error`, it deliberately does not implement `std::error::Error` itself, so that the
/// blanket conversion can exist.
pub struct HandlerError {
    code: i32,
    message: String,
    reason: FailureReason,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl HandlerError {
    /// A refusal the player sees as is: `code` (non-zero) and `message`.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        HandlerError {
            code,
            message: message.into(),
            reason: FailureReason::Game,
            source: None,
        }
    }

    /// The request's payload is not what the route takes.
    pub fn bad_request(message: impl Into<String>) -> Self {
        HandlerError {
            code: code::BAD_REQUEST,
            message: message.into(),
            reason: FailureReason::BadRequest,
            source: None,
        }
    }

    /// A failure of the node; the player sees a generic message, the log sees `error`.
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        HandlerError {
            code: code::INTERNAL,
            message: "internal error".to_owned(),
            reason: FailureReason::Internal,
            source: Some(error.into()),
        }
    }

    pub(crate) fn panic() -> Self {
        HandlerError {
            code: code::INTERNAL,
            message: "internal error".to_owned(),
            reason: FailureReason::Panic,
            source: None,
        }
    }

    /// The reply code.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// What the player is told.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn reason(&self) -> FailureReason {
        self.reason
    }

    /// The underlying error of an internal failure, for logs.
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("code", &self.code)
            .field("message", &self.message)
            .field("reason", &self.reason)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{} (code {}): {source}", self.message, self.code),
            None => write!(f, "{} (code {})", self.message, self.code),
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        let any: &dyn std::any::Any = &error;
        let invalid_payload = |codec: &CodecError| matches!(codec, CodecError::Invalid { .. });
        let bad_request = any.downcast_ref::<CodecError>().is_some_and(invalid_payload)
            || any
                .downcast_ref::<NodeError>()
                .is_some_and(|node| matches!(node, NodeError::Codec(codec) if invalid_payload(codec)));
        if bad_request {
            return HandlerError::bad_request(error.to_string());
        }
        HandlerError::internal(error)
    }
}

/// The default error reply's payload: `{"code": n, "error": "..."}`.
#[derive(Debug, Serialize)]
pub struct ErrorReply<'a> {
    pub code: i32,
    pub error: &'a str,
}

/// The default mapper: [`ErrorReply`] of the error's code and message.
pub fn default_error_reply(error: &HandlerError) -> ErrorReply<'_> {
    ErrorReply {
        code: error.code,
        error: &error.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;

    #[test]
    fn a_payload_that_does_not_decode_is_the_clients_fault_anything_else_the_nodes() {
        let invalid: HandlerError = Codec::Json.decode::<u32>(b"{").expect_err("not json").into();
        assert_eq!(invalid.reason(), FailureReason::BadRequest);
        assert_eq!(invalid.code(), code::BAD_REQUEST);
        assert!(invalid.message().contains("json"), "{invalid}");

        let io: HandlerError = std::io::Error::other("disk on fire").into();
        assert_eq!(io.reason(), FailureReason::Internal);
        assert_eq!(io.message(), "internal error", "details stay in the log");
        assert!(io.to_string().contains("disk on fire"));

        let game = HandlerError::new(42, "room is full");
        assert_eq!(
            (game.code(), game.message(), game.reason()),
            (42, "room is full", FailureReason::Game)
        );
        let reply = serde_json::to_string(&default_error_reply(&game)).expect("json");
        assert_eq!(reply, r#"{"code":42,"error":"room is full"}"#);
    }
}

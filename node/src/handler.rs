//! Handlers: async functions of a [`Context`] and up to three extractors ([`State`], [`Payload`], or a
//! game's own [`FromContext`]), returning anything that is [`IntoReply`].
//!
//! ```no_run
//! # use switchyard_node::{Context, HandlerError, Payload, State};
//! # #[derive(Clone)] struct Game;
//! # #[derive(serde::Deserialize)] struct Join { room: String }
//! # #[derive(serde::Serialize)] struct Joined { code: i32, members: usize }
//! async fn join(ctx: Context, State(game): State<Game>, Payload(join): Payload<Join>)
//!     -> Result<Payload<Joined>, HandlerError>
//! {
//!     Ok(Payload(Joined { code: 0, members: 1 }))
//! }
//! ```

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::handler_error::HandlerError;
use crate::outbound::Outbound;

/// What a route's handler produced: an encoded reply packet, or none (it answered itself or the
/// packet needs no answer).
pub(crate) type Outcome = Result<Option<Bytes>, HandlerError>;
pub(crate) type BoxedHandler = Arc<dyn Fn(Context) -> BoxFuture<'static, Outcome> + Send + Sync>;

/// Something a handler takes from its packet or its router. Failing with a [`HandlerError`] answers the
/// client with it; the handler does not run.
pub trait FromContext<S>: Sized {
    /// # Errors
    /// The packet does not provide it (e.g. the payload does not decode).
    fn from_context(ctx: &Context, state: &S) -> Result<Self, HandlerError>;
}

/// The router's state ([`crate::Router::with_state`]), cloned for the handler: make it an `Arc` or a
/// handle that is cheap to clone.
#[derive(Debug, Clone, Copy, Default)]
pub struct State<S>(pub S);

impl<S: Clone> FromContext<S> for State<S> {
    fn from_context(_: &Context, state: &S) -> Result<Self, HandlerError> {
        Ok(State(state.clone()))
    }
}

/// A payload in the node's codec: as an extractor, the request decoded into `T` (a client payload that
/// does not decode is answered with [`crate::code::BAD_REQUEST`]); as a return value, the reply encoded
/// from `T`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Payload<T>(pub T);

impl<S, T: DeserializeOwned> FromContext<S> for Payload<T> {
    fn from_context(ctx: &Context, _: &S) -> Result<Self, HandlerError> {
        Ok(Payload(ctx.parse()?))
    }
}

/// Encodes replies to one packet: same route and seq, the node's codec.
#[derive(Debug)]
pub struct ReplyEncoder {
    outbound: Outbound,
    route: i32,
    seq: i32,
}

impl ReplyEncoder {
    pub(crate) fn of(ctx: &Context) -> Self {
        ReplyEncoder {
            outbound: ctx.outbound().clone(),
            route: ctx.route(),
            seq: ctx.seq(),
        }
    }

    /// The whole reply packet carrying `value`.
    ///
    /// # Errors
    /// `value` does not encode with the node's codec or is too large for a packet (the game's fault).
    pub fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, HandlerError> {
        self.outbound
            .pack(self.route, self.seq, value)
            .map_err(HandlerError::internal)
    }
}

/// What a handler may return.
pub trait IntoReply {
    /// The reply packet, or `None` for no reply.
    ///
    /// # Errors
    /// The handler failed, or its reply does not encode.
    fn into_reply(self, encoder: &ReplyEncoder) -> Result<Option<Bytes>, HandlerError>;
}

impl IntoReply for () {
    fn into_reply(self, _: &ReplyEncoder) -> Result<Option<Bytes>, HandlerError> {
        Ok(None)
    }
}

impl<T: Serialize> IntoReply for Payload<T> {
    fn into_reply(self, encoder: &ReplyEncoder) -> Result<Option<Bytes>, HandlerError> {
        encoder.encode(&self.0).map(Some)
    }
}

impl<R: IntoReply, E: Into<HandlerError>> IntoReply for Result<R, E> {
    fn into_reply(self, encoder: &ReplyEncoder) -> Result<Option<Bytes>, HandlerError> {
        self.map_err(Into::into)?.into_reply(encoder)
    }
}

/// An async function usable as a route's handler. `T` tells the argument lists apart; it is inferred.
pub trait Handler<T, S>: Send + Sync + 'static {
    /// Runs the handler on one packet.
    fn call(&self, ctx: Context, state: &S) -> BoxFuture<'static, Outcome>;
}

impl<F, Fut, R, S> Handler<(), S> for F
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoReply,
{
    fn call(&self, ctx: Context, _: &S) -> BoxFuture<'static, Outcome> {
        let encoder = ReplyEncoder::of(&ctx);
        let running = self(ctx);
        Box::pin(async move { running.await.into_reply(&encoder) })
    }
}

macro_rules! handler_with_extractors {
    ($($extractor:ident),+) => {
        impl<F, Fut, R, S, $($extractor),+> Handler<($($extractor,)+), S> for F
        where
            F: Fn(Context, $($extractor),+) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoReply,
            $($extractor: FromContext<S> + Send + 'static),+
        {
            #[allow(non_snake_case)]
            fn call(&self, ctx: Context, state: &S) -> BoxFuture<'static, Outcome> {
                $(
                    let $extractor = match $extractor::from_context(&ctx, state) {
                        Ok(value) => value,
                        Err(error) => return Box::pin(std::future::ready(Err(error))),
                    };
                )+
                let encoder = ReplyEncoder::of(&ctx);
                let running = self(ctx, $($extractor),+);
                Box::pin(async move { running.await.into_reply(&encoder) })
            }
        }
    };
}

handler_with_extractors!(A);
handler_with_extractors!(A, B);
handler_with_extractors!(A, B, C);

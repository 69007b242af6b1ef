//! The Switchyard node SDK: write a game's handlers against it and run them behind Switchyard gates.
//!
//! ```no_run
//! use switchyard_node::{Context, HandlerError, Payload, RouteOptions, Router};
//!
//! #[derive(serde::Deserialize)]
//! struct Hello { name: String }
//! #[derive(serde::Serialize)]
//! struct Greeting { code: i32, greeting: String }
//!
//! async fn hello(_: Context, Payload(hello): Payload<Hello>) -> Result<Payload<Greeting>, HandlerError> {
//!     if hello.name.is_empty() {
//!         return Err(HandlerError::new(10, "who are you?"));
//!     }
//!     Ok(Payload(Greeting { code: 0, greeting: format!("hello, {}", hello.name) }))
//! }
//!
//! let router = Router::new().route(100, RouteOptions::stateless(), hello);
//! ```
//!
//! A game's `main` is its router and one call, [`run`] (see [`runtime`]): it reads the pod contract, starts
//! the link listener, locator, admin HTTP, telemetry and Kubernetes reporting, and drains on SIGTERM.
//!
//! Cargo features, on by default so [`run`] works in Kubernetes behind the operator: `redis` (the Redis
//! locator), `kubernetes` (pod reporter and drain annotation; the game binary selects the k8s-openapi
//! version, e.g. `k8s-openapi = { version = "0.29", features = ["v1_37"] }`), `otlp` (trace export).
//!
//! Handlers of one connection run in arrival order; different connections run in parallel. A handler's
//! error or panic is answered (`{"code": n, "error": "..."}` by default, see [`Router::error_reply`]) and
//! counted; the node keeps serving. Nodes move through the states `work` → `draining` → `shut`
//! ([`Node::drain`]); a draining node keeps serving the players bound to it and takes no new ones.

mod bindings;
mod calls;
pub mod codec;
mod config;
mod context;
pub mod demo;
mod error;
mod handler;
mod handler_error;
mod inner;
mod lanes;
mod link;
mod metrics;
mod node;
mod outbound;
mod router;
pub mod runtime;

pub use calls::{CallError, Callee};
pub use codec::{Codec, CodecError};
pub use config::{
    ConfigError, DEFAULT_LINK_LANE_BYTES, DEFAULT_MAX_LANES_PER_LINK, MAX_CALL_TIMEOUT, NodeConfig,
};
pub use context::Context;
pub use error::NodeError;
pub use handler::{FromContext, Handler, IntoReply, Payload, ReplyEncoder, State};
pub use handler_error::{ErrorReply, FailureReason, HandlerError, code, default_error_reply};
pub use node::{DrainOutcome, Node};
pub use outbound::Outbound;
pub use router::{Disconnect, Lifecycle, Reconnect, RouteOptions, Router, Tick};
pub use runtime::{NodeArgs, Runtime, RuntimeError, run, run_with};
pub use switchyard_protocol::link::{NodeState, Uid};

/// What a handler that answers by itself returns.
pub type HandlerResult = Result<(), HandlerError>;

/// The README's Rust examples compile against this crate.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

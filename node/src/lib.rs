//! The Switchyard node SDK: write a game's handlers against it and run them behind Switchyard gates.
//!
//! ```no_run
//! use switchyard_node::{Context, HandlerResult, RouteOptions, Router};
//!
//! async fn hello(ctx: Context) -> HandlerResult {
//!     #[derive(serde::Deserialize)]
//!     struct Hello { name: String }
//!     let hello: Hello = ctx.parse()?;
//!     ctx.respond(&serde_json::json!({ "code": 0, "greeting": format!("hello, {}", hello.name) })).await?;
//!     Ok(())
//! }
//!
//! let router = Router::new().route(100, RouteOptions::stateless(), hello);
//! ```
//!
//! Handlers of one connection run in arrival order; different connections run in parallel. Nodes move
//! through the states `work` → `draining` → `shut` ([`Node::drain`]); a draining node keeps serving the
//! players bound to it and takes no new ones.

pub mod codec;
mod context;
pub mod demo;
mod metrics;
mod node;
mod router;

pub use codec::{Codec, CodecError};
pub use context::Context;
pub use node::{DrainOutcome, Node, NodeConfig, NodeError};
pub use router::{Disconnect, HandlerError, HandlerResult, RouteOptions, Router};
pub use switchyard_protocol::link::{NodeState, Uid};

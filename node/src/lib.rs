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
//! A game's `main` is its router and one call, [`run`] (see [`runtime`]): it reads the pod contract, starts
//! the link listener, locator, admin HTTP, telemetry and Kubernetes reporting, and drains on SIGTERM.
//!
//! Cargo features, on by default so [`run`] works in Kubernetes behind the operator: `redis` (the Redis
//! locator), `kubernetes` (pod reporter and drain annotation; the game binary selects the k8s-openapi
//! version, e.g. `k8s-openapi = { version = "0.29", features = ["v1_37"] }`), `otlp` (trace export).
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
pub mod runtime;

pub use codec::{Codec, CodecError};
pub use context::Context;
pub use node::{DrainOutcome, Node, NodeConfig, NodeError};
pub use router::{Disconnect, HandlerError, HandlerResult, RouteOptions, Router};
pub use runtime::{NodeArgs, Runtime, RuntimeError, run, run_with};
pub use switchyard_protocol::link::{NodeState, Uid};

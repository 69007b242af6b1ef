//! Runtime pieces that gates and nodes share, each behind an interface with more than one implementation:
//!
//! - [`link`]: the duplex channel between one gate and one node (in-process now, TCP between processes);
//! - [`locator`]: where a player is connected (uid → gate) and which node holds their state (uid → node);
//! - [`registry`]: which nodes exist and which of them take new players;
//! - [`admin`]: the admin HTTP server every component runs (`/healthz`, `/readyz`, `/metrics`).

pub mod admin;
pub mod link;
pub mod locator;
pub mod registry;

pub use switchyard_protocol as protocol;

//! The Switchyard gate: where players connect.
//!
//! A gate accepts clients over TCP and WebSocket (both optionally over TLS), keeps one session per
//! connection, and forwards each client packet, undecoded, to the node that must handle it: a `work` node for
//! stateless routes, the player's bound node for stateful ones. It writes whatever nodes send back
//! (responses, pushes, multicasts, broadcasts) to the right sessions, and drains gracefully: clients are told
//! to reconnect elsewhere and are closed gradually within a deadline.

mod accept;
mod bindings;
mod calls;
pub mod config;
mod connection;
mod control;
mod downlink;
mod gate;
mod links;
pub mod metrics;
mod nodes;
mod per_ip;
mod proxy_protocol;
mod rate;
mod session;
mod shared;
mod tls;
mod transport;

pub use config::{
    DEFAULT_NODE_LINK_GRACE, DEFAULT_OUTBOUND_QUEUE_BYTES, GateConfig, GateConfigError, HeartbeatMode,
    RateLimit, RoutingPolicy,
};
pub use metrics::GateMetrics;
pub use shared::Gate;
pub use tls::{
    DEFAULT_TLS_RELOAD_INTERVAL, TlsConfigError, load_server_config, load_server_config_with_reload,
};

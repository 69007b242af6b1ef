//! Runtime pieces that gates and nodes share, each behind an interface with more than one implementation:
//!
//! - [`link`]: the duplex channel between one gate and one node (in-process now, TCP between processes);
//! - [`locator`]: where a player is connected (uid → gate) and which node holds their state (uid → node);
//! - [`redis_locator`]: the locator on Redis (one server or a Redis Cluster), with pub/sub events and a
//!   `locate_gate` cache;
//! - [`registry`]: which nodes exist and which of them take new players;
//! - [`admin`]: the admin HTTP server every component runs (`/healthz`, `/readyz`, `/metrics`);
//! - [`kubernetes`]: the registry on EndpointSlices, the pod reporter (bound players, deletion cost) and the
//!   drain signal (pod annotation) for running inside Kubernetes;
//! - [`telemetry`]: OpenTelemetry traces (sampling, the tracer provider and its `tracing` layer, the trace
//!   context carried over links).

pub mod admin;
pub mod kubernetes;
pub mod link;
pub mod locator;
pub mod metrics;
pub mod redis_locator;
pub mod registry;
pub mod telemetry;

pub use switchyard_protocol as protocol;

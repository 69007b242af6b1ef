//! Runtime pieces that gates and nodes share, each behind an interface with more than one implementation:
//!
//! - [`link`]: the duplex channel between one gate and one node (in-process now, TCP between processes);
//! - [`locator`]: where a player is connected (uid → gate) and which node holds their state (uid → node);
//! - [`redis_locator`]: the locator on Redis (one server or a Redis Cluster), with pub/sub events and a
//!   `locate_gate` cache;
//! - [`registry`]: which nodes exist and which of them take new players;
//! - [`admin`]: the admin HTTP server every component runs (`/healthz`, `/readyz`, `/metrics`);
//! - [`load`]: a node's load report on its admin server (`/load`: bound players, routes), which the
//!   operator turns into the node pod's annotations;
//! - [`kubernetes`]: the registry on EndpointSlices, the pod reporter (bound players, deletion cost) and the
//!   drain signal (pod annotation) for running inside Kubernetes;
//! - [`telemetry`]: OpenTelemetry traces (sampling, the tracer provider and its `tracing` layer, the trace
//!   context carried over links);
//! - [`contract`]: the pod contract (environment names, duration grammar, locator URL schemes), shared by
//!   the operator that writes it and the processes that read it;
//! - [`process`]: the process plumbing gates and nodes share, read from the pod contract (clap args for
//!   identity, packet settings, locator, Kubernetes and telemetry, and what they start).
//!
//! Cargo features (all on by default): `redis` (the Redis locator), `kubernetes` (the EndpointSlice
//! registry, pod reporter and drain signal; this crate selects no k8s-openapi version: the application
//! does), `otlp` (the OTLP/gRPC trace exporter). Without one, the settings that need it are refused with an
//! error naming the feature.

pub mod admin;
// The pure decoders of untrusted input that live next to their feature's code are declared here, so that
// the `fuzzing` feature compiles them without the feature (and its dependencies).
#[cfg(any(feature = "kubernetes", feature = "fuzzing"))]
#[cfg_attr(not(feature = "kubernetes"), allow(unreachable_pub))]
#[path = "kubernetes/annotations_file.rs"]
mod annotations_file;
pub mod contract;
/// Entry points of the fuzz targets (`fuzz/`): not an API (hidden, `fuzzing` feature only).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod link;
pub mod load;
pub mod locator;
#[cfg(any(feature = "redis", feature = "fuzzing"))]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[path = "redis_locator/events.rs"]
mod locator_events;
pub mod metrics;
pub mod process;
#[cfg(feature = "redis")]
pub mod redis_locator;
pub mod registry;
pub mod telemetry;

pub use switchyard_protocol as protocol;

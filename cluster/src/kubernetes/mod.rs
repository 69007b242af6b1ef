//! Running inside Kubernetes: who exists, what this pod reports, and when it is asked to drain.
//!
//! - [`KubernetesRegistry`]: a [`Registry`](crate::registry::Registry) fed by the EndpointSlices of the node
//!   Services of every pool (one watch, a set-based selector), watched with a kube-rs reflector; the
//!   translation from slices to [`NodeEndpoint`]s is the pure function [`node_endpoints`].
//! - [`PodReporter`]: keeps this pod's annotations [`BOUND_PLAYERS_ANNOTATION`] and
//!   [`POD_DELETION_COST_ANNOTATION`] equal to the bound-player count (changed values only, throttled), so
//!   scale-down removes the emptiest node, and [`ROUTES_ANNOTATION`] equal to the routes the node serves.
//!   For nodes run without the operator only (`--report-pod`): it needs `patch` on pods, which RBAC cannot
//!   narrow to the pod's own. Under the operator, nodes report at `/load` ([`crate::load`]) and the
//!   operator writes these annotations.
//! - [`DrainSignal`]: tells when this pod gets the annotation [`DRAIN_ANNOTATION`]` = "true"`, read from a
//!   downward API volume file or from a watch on the pod itself.
//!
//! Every component is started with a [`kube::Client`] (callers build one with
//! [`Client::try_default`](kube::Client::try_default)), a validated config and a [`CancellationToken`]; it
//! runs one tokio task that stops when the token is cancelled or when the component is dropped. API errors
//! never end a task: they are logged once (at `warn`, then at `debug` until the next success, which is logged
//! at `info`) and retried with backoff.
//!
//! RBAC that the pod's service account needs: `get`, `list`, `watch` on `endpointslices`
//! (`discovery.k8s.io`) in the registry's namespace; `patch` on its own pod for the reporter; `get`, `list`,
//! `watch` on its own pod for [`DrainSource::PodWatch`] (a `resourceNames` rule works: the watch uses the field
//! selector `metadata.name=<pod>`).
//!
//! [`NodeEndpoint`]: crate::registry::NodeEndpoint
//! [`CancellationToken`]: tokio_util::sync::CancellationToken

mod config;
mod drain;
mod registry;
mod reporter;
mod translate;

use std::fmt;
use std::time::Duration;

pub use crate::annotations_file::{AnnotationsFileError, parse_annotations_file};
pub use config::{ConfigError, DrainConfig, DrainSource, PodRef, RegistryConfig, ReporterConfig};
pub use drain::DrainSignal;
pub use registry::KubernetesRegistry;
pub use reporter::PodReporter;
pub use translate::{SERVICE_NAME_LABEL, node_endpoints};

/// The annotation that asks a node to drain (maintenance): value `"true"`.
pub const DRAIN_ANNOTATION: &str = "switchyard.dev/drain";
/// The annotation that carries a node's bound-player count, in decimal.
pub const BOUND_PLAYERS_ANNOTATION: &str = "switchyard.dev/bound-players";
/// The annotation that carries the routes a node serves (internal ones included): sorted, distinct decimal
/// numbers separated by commas, e.g. `1,2,11` ([`format_routes`](crate::load::format_routes),
/// [`parse_routes`](crate::load::parse_routes)). The operator writes it from each node's load report and
/// reads it back from every node pod to find two pools claiming one route.
pub const ROUTES_ANNOTATION: &str = "switchyard.dev/routes";
/// Kubernetes' own annotation: a ReplicaSet scaling down deletes the pods with the lowest cost first.
pub const POD_DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
/// The field manager recorded for every write Switchyard makes.
pub const FIELD_MANAGER: &str = "switchyard";

/// Errors of the Kubernetes components' public APIs (API errors inside the tasks are retried, not returned).
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// The configuration is invalid; the message names the field (the caller's fault).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The component's task has stopped (its cancellation token was cancelled) before the awaited event.
    #[error("the Kubernetes {component} task stopped before {awaited}")]
    Stopped {
        /// Which component: `registry`, `pod reporter`, `drain signal`.
        component: &'static str,
        /// What the caller was waiting for.
        awaited: &'static str,
    },
}

/// Logs a failing operation once, stays quiet while it keeps failing, and logs its recovery.
///
/// Retrying loops would otherwise log one line per attempt for as long as the API server is away.
#[derive(Debug)]
struct ErrorLatch {
    what: String,
    failures: u64,
}

impl ErrorLatch {
    fn new(what: impl Into<String>) -> Self {
        ErrorLatch {
            what: what.into(),
            failures: 0,
        }
    }

    fn failed(&mut self, error: &dyn fmt::Display, retry: Option<Duration>) {
        self.failures += 1;
        if self.failures == 1 {
            match retry {
                Some(delay) => tracing::warn!(
                    "{} failed, retrying in {delay:?} and logging no more failures until it works: {error}",
                    self.what
                ),
                None => tracing::warn!(
                    "{} failed, retrying and logging no more failures until it works: {error}",
                    self.what
                ),
            }
        } else {
            tracing::debug!(failures = self.failures, "{} failed again: {error}", self.what);
        }
    }

    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "{} works again", self.what);
            self.failures = 0;
        }
    }
}

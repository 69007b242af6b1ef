//! [`RuntimeError`]: why the node runtime could not start or stopped with an error.

use std::fmt;

use switchyard_cluster::process::ProcessError;

/// Why [`run`](super::run) failed. Its `Debug` form is its message (which carries its cause's), so a game's
/// `main() -> Result<(), RuntimeError>` prints a readable line.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A setting of the pod contract is wrong, or something the process needs (Redis, the Kubernetes API,
    /// a listen address) is not available.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The node refused its configuration.
    #[error("node configuration: {0}")]
    Node(#[from] crate::ConfigError),
    /// The link listener gates connect to could not be bound.
    #[error("cannot accept gate links: {0}")]
    Link(#[from] switchyard_cluster::link::LinkError),
    /// The admin HTTP server could not start.
    #[error("admin HTTP: {0}")]
    Admin(#[source] std::io::Error),
}

impl fmt::Debug for RuntimeError {
    /// The message: every variant's message already carries its cause's.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

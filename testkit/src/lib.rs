//! Test support for Switchyard, shared by every test that needs it instead of copied between test files:
//!
//! - [`ControlPlane`]: a real Kubernetes control plane (etcd, kube-apiserver, and on request
//!   kube-controller-manager and kube-scheduler) from the binaries `e2e/toolchain/build.sh` builds, with
//!   throwaway certificates and one kubeconfig per client identity. The `switchyard` package's tests, the
//!   cluster crate's tests and the e2e harness all start it from here.
//! - [`free_port`], [`eventually`] / [`eventually_true`], [`http_get`] / [`http_get_blocking`],
//!   [`TempDir`], [`Helm`], [`run_ok`] and friends, [`tool`] and [`workspace`]: the small helpers every
//!   such test needs.
//!
//! A dev-dependency only (and a dependency of the e2e harness, itself a test crate): no library crate of
//! the workspace depends on it. Missing tools are a failure with instructions, never a silent skip.

mod command;
pub mod control_plane;
mod helm;
mod http;
mod ports;
mod temp;
mod tools;
mod wait;

pub use command::{describe, output, run_err, run_ok, run_with_input};
pub use control_plane::{ControlPlane, ControlPlaneConfig, Ports, User};
pub use helm::Helm;
pub use http::{HttpTarget, http_get, http_get_blocking, parse_response};
pub use ports::free_port;
pub use temp::TempDir;
pub use tools::{HOW_TO_BUILD, on_path, tool, toolchain_bin_dir, workspace};
pub use wait::{eventually, eventually_true, holds_within};

use std::path::PathBuf;
use std::time::Duration;

/// Why a control plane (or a tool it needs) could not be set up. Each message says what failed and, where
/// the fix is on the caller's side, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The environment lacks something (a binary, a tool); the message says how to get it.
    #[error("{0}")]
    Setup(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Generating the certificates failed.
    #[error("certificate generation: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A control-plane process exited while it was awaited; its log's end says why.
    #[error("{what} exited early; last lines of {log}:\n{tail}")]
    Exited {
        /// Which process.
        what: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// Something did not become ready in time.
    #[error("{what}: not ready after {after:?}\n{logs}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        after: Duration,
        /// The end of every process's log.
        logs: String,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

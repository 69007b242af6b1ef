//! The process plumbing gates and nodes share, each piece read from the pod contract ([`crate::contract`]):
//! flags that are also `SWITCHYARD_*` variables (clap [`Args`] structs to flatten into a command), and what
//! they start.
//!
//! - [`ProcessArgs`]: identity and admin HTTP address; [`PacketArgs`]: the packet settings;
//! - [`LocatorArgs`]: the locator, memory or Redis, with the start-up wait for a Redis still starting;
//! - [`KubernetesArgs`]: the node registry on EndpointSlices (gates), the drain signal and the pod
//!   reporter (nodes);
//! - [`LinkTlsArgs`]: mutual TLS on gate ↔ node links, or plaintext;
//! - [`TelemetryArgs`]: the log filter and OpenTelemetry from the standard `OTEL_*` variables, and the
//!   global `tracing` subscriber they install.
//!
//! The node runtime (`switchyard_node::runtime`) and `switchyard gate` are built on these.

mod kubernetes;
mod link_tls;
mod locator;
mod telemetry;

use std::net::SocketAddr;

use clap::Args;
use switchyard_protocol::{ByteOrder, PacketConfig};

pub use kubernetes::KubernetesArgs;
pub use link_tls::LinkTlsArgs;
pub use locator::{LocatorArgs, STARTUP_WAIT};
pub use telemetry::{Telemetry, TelemetryArgs};

/// Why a process cannot start: the settings are wrong, or something it needs is away.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The packet settings do not fit together.
    #[error("packet settings: {0}")]
    Packet(#[from] switchyard_protocol::ConfigError),
    /// `--locator` is neither `memory` nor a Redis URL.
    #[error("--locator {0:?} is neither `memory` nor a Redis URL ({schemes})", schemes = crate::contract::redis_url_schemes_text())]
    LocatorUrl(String),
    /// A Redis locator was asked for, and this build has no Redis support.
    #[error(
        "--locator {0} needs Redis support: enable the `redis` feature of switchyard-node or switchyard-cluster"
    )]
    RedisNotBuilt(String),
    /// The CA bundle of `--locator-ca` cannot be read.
    #[error("cannot read the Redis CA bundle {path} (--locator-ca, SWITCHYARD_LOCATOR_CA): {source}")]
    LocatorCa {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The Redis locator cannot work (bad URL, wrong password, untrusted certificate, Redis away past the
    /// start-up wait, ...).
    #[error("cannot use the Redis locator at {url}: {reason}")]
    Redis { url: String, reason: String },
    /// Shutdown came while the process waited for Redis.
    #[error("stopped while waiting for the Redis locator at {0}")]
    RedisWaitStopped(String),
    /// A setting that this configuration needs is not set.
    #[error("{needed_by} needs {env} (--{flag})")]
    Missing {
        needed_by: &'static str,
        env: &'static str,
        flag: &'static str,
    },
    /// Kubernetes settings were given, and this build has no Kubernetes support.
    #[error(
        "{0} needs Kubernetes support: enable the `kubernetes` feature of switchyard-node or switchyard-cluster"
    )]
    KubernetesNotBuilt(&'static str),
    /// The Kubernetes API cannot be reached (no in-cluster config, no kubeconfig).
    #[cfg(feature = "kubernetes")]
    #[error("cannot reach the Kubernetes API (in-cluster or kubeconfig): {0}")]
    KubernetesClient(#[source] kube::Error),
    /// A Kubernetes component refused its settings.
    #[cfg(feature = "kubernetes")]
    #[error(transparent)]
    Kubernetes(#[from] crate::kubernetes::KubernetesError),
    /// The trace settings are refused.
    #[error(transparent)]
    Trace(#[from] crate::telemetry::TelemetryError),
    /// Some of the link TLS files are given, not all: links would be neither plaintext nor mutual TLS.
    #[error(
        "link TLS needs all three of --link-tls-ca, --link-tls-cert and --link-tls-key (or none, for plaintext links): {given} given, {missing} missing"
    )]
    LinkTlsPartial { given: String, missing: String },
    /// A link TLS file cannot be used.
    #[error("{0} (--link-tls-ca, --link-tls-cert, --link-tls-key)")]
    LinkTls(#[from] crate::link::tls::LinkTlsError),
    /// The OTLP exporter settings are refused (endpoint, protocol), or this build cannot export.
    #[error("OTLP trace export: {0}")]
    Otlp(String),
}

/// Identity and admin endpoint of a process.
#[derive(Debug, Clone, Args)]
pub struct ProcessArgs {
    /// Instance id; in Kubernetes the pod name (downward API). Defaults to the host name and process id.
    #[arg(long, env = "SWITCHYARD_ID")]
    pub id: Option<String>,
    /// Admin HTTP address: /healthz, /readyz, /metrics [default: 127.0.0.1:3555 for gates, 127.0.0.1:3556 for nodes].
    #[arg(long, env = "SWITCHYARD_HTTP")]
    pub http: Option<SocketAddr>,
}

impl ProcessArgs {
    /// The instance id: `--id`, else `KIND-HOST-PID`.
    pub fn id(&self, kind: &str) -> String {
        self.id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_else(|_| "local".to_owned());
            format!("{kind}-{host}-{}", std::process::id())
        })
    }

    /// The admin HTTP address, `default` when unset.
    pub fn http_or(&self, default: SocketAddr) -> SocketAddr {
        self.http.unwrap_or(default)
    }
}

/// Packet settings; client, gate and node must agree on them.
#[derive(Debug, Clone, Args)]
pub struct PacketArgs {
    /// Byte order of size, route, seq and heartbeat time: big or little.
    #[arg(long, env = "SWITCHYARD_BYTE_ORDER", default_value = "big")]
    pub byte_order: ByteOrder,
    /// Width of the route field in bytes: 1, 2 or 4.
    #[arg(long, env = "SWITCHYARD_ROUTE_BYTES", default_value_t = 2)]
    pub route_bytes: u8,
    /// Width of the seq field in bytes: 0, 1, 2 or 4.
    #[arg(long, env = "SWITCHYARD_SEQ_BYTES", default_value_t = 2)]
    pub seq_bytes: u8,
    /// Largest packet accepted (size field value); a client announcing more is disconnected.
    #[arg(long, env = "SWITCHYARD_MAX_PACKET_BYTES", default_value_t = 64 * 1024)]
    pub max_packet_bytes: u32,
}

impl PacketArgs {
    /// # Errors
    /// [`ProcessError::Packet`] when the widths and the maximum do not fit together.
    pub fn config(&self) -> Result<PacketConfig, ProcessError> {
        Ok(PacketConfig::new(
            self.byte_order,
            self.route_bytes,
            self.seq_bytes,
            self.max_packet_bytes,
        )?)
    }
}

/// Link settings derived from the packet settings, so a maximal client packet always fits a frame.
pub fn link_config(packet: &PacketConfig) -> crate::link::tcp::TcpLinkConfig {
    crate::link::tcp::TcpLinkConfig {
        max_frame_bytes: switchyard_protocol::link::codec::max_frame_bytes_for(packet),
        ..Default::default()
    }
}

/// How gate ↔ node links treat a peer that stops reading; gates and nodes take the same flags.
#[derive(Debug, Clone, Args)]
pub struct LinkArgs {
    /// Close a gate-node link whose write makes no progress this long: the peer stopped reading (it may
    /// still send heartbeats). Counted in link_closed{reason="write_timeout"}.
    #[arg(long, env = "SWITCHYARD_LINK_WRITE_TIMEOUT", default_value = "6s", value_parser = parse_duration)]
    pub link_write_timeout: std::time::Duration,
    /// Bytes of packets and bodies queued per gate-node link direction before senders wait (a gate's
    /// forward waits at most 2 s, then drops and counts the packet): what a peer that stops reading can pin.
    #[arg(long, env = "SWITCHYARD_LINK_QUEUE_BYTES", default_value_t = crate::link::DEFAULT_LINK_QUEUE_BYTES)]
    pub link_queue_bytes: usize,
}

impl LinkArgs {
    /// [`link_config`] for `packet`, with these settings.
    pub fn config(&self, packet: &PacketConfig) -> crate::link::tcp::TcpLinkConfig {
        crate::link::tcp::TcpLinkConfig {
            write_timeout: self.link_write_timeout,
            queue_bytes: self.link_queue_bytes,
            ..link_config(packet)
        }
    }
}

/// A clap value parser for durations of the contract's grammar ([`crate::contract::parse_duration`]).
///
/// # Errors
/// The text is not a duration.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, crate::contract::DurationError> {
    crate::contract::parse_duration(text)
}

/// A token cancelled on the first Ctrl-C or SIGTERM (what the kubelet sends to stop a pod). Must be called
/// inside a Tokio runtime.
pub fn shutdown_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut terminate) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = terminate.recv() => {}
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        cancel.cancel();
    });
    token
}

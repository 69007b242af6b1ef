//! What every long-running `switchyard` process shares: its identity, its admin HTTP server, and the
//! choice of locator.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;
use prometheus_client::registry::Registry;
use switchyard_cluster::admin::Readiness;
use switchyard_cluster::locator::{Locator, MemoryLocator};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Identity and admin endpoint of a process.
#[derive(Debug, Clone, Args)]
pub(crate) struct ProcessArgs {
    /// Instance id; in Kubernetes the pod name (downward API). Defaults to the host name and process id.
    #[arg(long, env = "SWITCHYARD_ID")]
    pub(crate) id: Option<String>,
    /// Admin HTTP address: /healthz, /readyz, /metrics.
    #[arg(long, env = "SWITCHYARD_HTTP")]
    pub(crate) http: Option<SocketAddr>,
}

impl ProcessArgs {
    pub(crate) fn id(&self, kind: &str) -> String {
        self.id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_else(|_| "local".to_owned());
            format!("{kind}-{host}-{}", std::process::id())
        })
    }
}

/// Where player bindings live.
#[derive(Debug, Clone, Args)]
pub(crate) struct LocatorArgs {
    /// `memory` (one process only) or a Redis URL: `redis://host:6379`, or `redis+cluster://h1:p1,h2:p2`.
    #[arg(long, env = "SWITCHYARD_LOCATOR", default_value = "memory")]
    pub(crate) locator: String,
    /// Key prefix in Redis (one prefix per cluster sharing a Redis).
    #[arg(long, env = "SWITCHYARD_LOCATOR_PREFIX", default_value = "switchyard")]
    pub(crate) locator_prefix: String,
}

impl LocatorArgs {
    /// The locator; a Redis that cannot be reached yet is waited for (see [`crate::redis::STARTUP_WAIT`])
    /// unless `shutdown` comes first.
    pub(crate) async fn build(
        &self,
        registry: &mut Registry,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Arc<dyn Locator>> {
        if self.locator == "memory" {
            return Ok(Arc::new(MemoryLocator::default()));
        }
        if self.locator.starts_with("redis://")
            || self.locator.starts_with("rediss://")
            || self.locator.starts_with("redis+cluster://")
        {
            return crate::redis::connect(&self.locator, &self.locator_prefix, registry, shutdown).await;
        }
        anyhow::bail!(
            "--locator {:?} is neither `memory` nor a redis:// URL",
            self.locator
        )
    }
}

/// A running admin server; stop it last so probes and scrapes see the whole shutdown.
pub(crate) struct Admin {
    pub(crate) address: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Admin {
    pub(crate) async fn start(
        address: SocketAddr,
        registry: Registry,
        readiness: Vec<Readiness>,
    ) -> anyhow::Result<Admin> {
        let listener = switchyard_cluster::admin::bind(address).await?;
        let address = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(switchyard_cluster::admin::serve(
            listener,
            Arc::new(registry),
            readiness,
            stop.clone(),
        ));
        Ok(Admin { address, stop, task })
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Link settings derived from the packet settings, so a maximal client packet always fits a frame.
pub(crate) fn link_config(
    packet: &switchyard_protocol::PacketConfig,
) -> switchyard_cluster::link::tcp::TcpLinkConfig {
    switchyard_cluster::link::tcp::TcpLinkConfig {
        max_frame_bytes: switchyard_protocol::link::codec::max_frame_bytes_for(packet),
        ..Default::default()
    }
}

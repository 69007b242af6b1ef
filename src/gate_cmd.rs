//! `switchyard gate`: a gate process. Nodes come from a registry (a static list, or Kubernetes
//! EndpointSlices); bindings live in the locator (Redis for more than one process).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use prometheus_client::registry::Registry;
use switchyard_cluster::admin::AdminServer;
use switchyard_cluster::link::tcp::{TcpConnector, TcpLinkConfig};
use switchyard_cluster::process::{
    KubernetesArgs, LinkArgs, LinkTlsArgs, LocatorArgs, PacketArgs, ProcessArgs, TelemetryArgs,
};
use switchyard_cluster::registry::{Registry as NodeRegistry, StaticRegistry};
use switchyard_gate::Gate;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::GateArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum RegistryKind {
    /// The node addresses given with --nodes.
    Static,
    /// The EndpointSlices of the cluster's node Service.
    Kubernetes,
}

#[derive(Debug, Args)]
pub(crate) struct GateCommand {
    #[command(flatten)]
    pub(crate) process: ProcessArgs,
    #[command(flatten)]
    pub(crate) gate: GateArgs,
    #[command(flatten)]
    pub(crate) packet: PacketArgs,
    #[command(flatten)]
    pub(crate) locator: LocatorArgs,
    /// Where the node list comes from.
    #[arg(long, env = "SWITCHYARD_REGISTRY", value_enum, default_value = "static")]
    pub(crate) registry: RegistryKind,
    /// Node link addresses (host:port), comma-separated, for --registry static.
    #[arg(long, env = "SWITCHYARD_NODES", value_delimiter = ',')]
    pub(crate) nodes: Vec<String>,
    #[command(flatten)]
    pub(crate) kubernetes: KubernetesArgs,
    #[command(flatten)]
    pub(crate) link_tls: LinkTlsArgs,
    #[command(flatten)]
    pub(crate) link: LinkArgs,
    #[command(flatten)]
    pub(crate) telemetry: TelemetryArgs,
}

pub(crate) async fn run(command: GateCommand, shutdown: CancellationToken) -> anyhow::Result<()> {
    let packet = command.packet.config()?;
    let (tcp_addr, ws_addr) = command.gate.listen_addresses()?;
    let id = command.process.id("gate");
    let config = command.gate.config(id.clone(), packet)?;
    let link_tls = command
        .link_tls
        .load(switchyard_cluster::link::tls::LinkRole::Gate)?;
    let admin_addr = command.process.http_or(SocketAddr::from(([127, 0, 0, 1], 3555)));

    let mut registry = Registry::default();
    let locator = command.locator.build(&mut registry, &shutdown).await?;
    let gate = Gate::new(config, locator, &mut registry).map_err(anyhow::Error::msg)?;
    tracing::info!(gate = %id, link_tls = link_tls.is_some(), "node links are {}", if link_tls.is_some() { "mutual TLS" } else { "plaintext" });
    let connector = Arc::new(TcpConnector::new(TcpLinkConfig {
        tls: link_tls,
        ..command.link.config(&packet)
    }));
    connector
        .metrics()
        .register(registry.sub_registry_with_prefix("switchyard_gate"));
    // Held until the end: the registry feeds the gate's link manager.
    let nodes: Arc<dyn NodeRegistry> = match command.registry {
        RegistryKind::Static => {
            anyhow::ensure!(
                !command.nodes.is_empty(),
                "--registry static needs --nodes host:port[,host:port...]"
            );
            Arc::new(StaticRegistry::new(command.nodes.clone()))
        }
        RegistryKind::Kubernetes => command.kubernetes.node_registry(&shutdown).await?,
    };
    gate.connect_nodes(nodes.nodes(), connector);

    if let Some(addr) = tcp_addr {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for TCP on {addr}"))?;
        tracing::info!(address = %listener.local_addr()?, tls = gate.tls(), "clients over TCP");
        gate.serve_tcp(listener);
    }
    if let Some(addr) = ws_addr {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for WebSocket on {addr}"))?;
        tracing::info!(address = %listener.local_addr()?, path = %command.gate.ws_path, tls = gate.tls(), "clients over WebSocket");
        gate.serve_ws(listener);
    }
    let admin = AdminServer::start(admin_addr, registry, vec![gate.readiness()]).await?;
    tracing::info!(gate = %id, admin = %admin.address(), "gate running");

    shutdown.cancelled().await;
    tracing::info!(gate = %id, connections = gate.connections(), "SIGTERM: draining the gate");
    gate.drain().await;
    gate.shutdown().await;
    admin.stop().await;
    drop(nodes);
    tracing::info!(gate = %id, "gate stopped");
    Ok(())
}

//! `switchyard node`: the demo game node as its own process. It listens for gate links, binds players in
//! the locator, and drains on SIGTERM or on the pod annotation `switchyard.dev/drain: "true"`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use prometheus_client::registry::Registry;
use switchyard_cluster::link::tcp::TcpAcceptor;
use switchyard_node::{DrainOutcome, Node, NodeConfig, demo};
use tokio_util::sync::CancellationToken;

use crate::cli::{PacketArgs, parse_duration};
use crate::process::{Admin, LocatorArgs, ProcessArgs};

#[derive(Debug, Args)]
pub(crate) struct NodeCommand {
    #[command(flatten)]
    pub(crate) process: ProcessArgs,
    #[command(flatten)]
    pub(crate) packet: PacketArgs,
    #[command(flatten)]
    pub(crate) locator: LocatorArgs,
    /// Address gates connect to.
    #[arg(long, env = "SWITCHYARD_LINK", default_value = "127.0.0.1:7400")]
    pub(crate) link: SocketAddr,
    /// Node pool (locator bindings are per pool).
    #[arg(long, env = "SWITCHYARD_POOL", default_value = "game")]
    pub(crate) pool: String,
    /// How long a draining node waits for its players before telling them to reconnect.
    #[arg(long, env = "SWITCHYARD_DRAIN_DEADLINE", default_value = "60s", value_parser = parse_duration)]
    pub(crate) drain_deadline: Duration,
    #[command(flatten)]
    pub(crate) kubernetes: crate::kube_args::KubernetesArgs,
    #[command(flatten)]
    pub(crate) trace: crate::telemetry::TraceArgs,
}

pub(crate) async fn run(command: NodeCommand, shutdown: CancellationToken) -> anyhow::Result<()> {
    let packet = command.packet.config()?;
    let id = command.process.id("node");
    let admin_addr = command
        .process
        .http
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 3556)));
    let config = NodeConfig {
        packet,
        pool: command.pool.clone(),
        drain_deadline: command.drain_deadline,
        ..NodeConfig::new(id.clone())
    };

    let mut registry = Registry::default();
    let locator = command.locator.build(&mut registry, &shutdown).await?;
    let node = Node::new(config, demo::router(), locator, &mut registry).map_err(anyhow::Error::msg)?;
    let acceptor = TcpAcceptor::bind(command.link, crate::process::link_config(&packet)).await?;
    tracing::info!(node = %id, link = %acceptor.local_addr(), "accepting gate links");
    node.serve(acceptor);
    let admin = Admin::start(admin_addr, registry, vec![node.readiness()]).await?;
    let drain_requested = command.kubernetes.drain_signal(&node, shutdown.clone()).await?;
    tracing::info!(node = %id, admin = %admin.address, "node running");

    let by_annotation = tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = drain_requested.cancelled() => true,
    };
    let trigger = if by_annotation {
        "drain annotation"
    } else {
        "SIGTERM"
    };
    tracing::info!(node = %id, bound = node.bound_players(), "{trigger}: draining");
    match node.drain().await {
        DrainOutcome::Empty => tracing::info!(node = %id, "drained: no player left"),
        DrainOutcome::Deadline { players } => {
            tracing::warn!(node = %id, players, "drain deadline passed; players were told to reconnect");
        }
    }
    if by_annotation {
        // A maintenance drain leaves the node idle and unready; exiting would only make the kubelet
        // restart it. It waits for the pod's deletion instead.
        tracing::info!(node = %id, "drained for maintenance; waiting for SIGTERM");
        shutdown.cancelled().await;
    }
    node.shutdown().await;
    admin.stop().await;
    tracing::info!(node = %id, "node stopped");
    Ok(())
}

//! `switchyard dev`: a gate and the demo's two pools (one `lobby` node, one `battle` node) in one process,
//! linked in-process, with the in-memory locator. The same gate and node code as a real cluster; only the
//! transports are embedded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use prometheus_client::registry::Registry;
use switchyard_cluster::link::InProcessHub;
use switchyard_cluster::locator::MemoryLocator;
use switchyard_cluster::process::{PacketArgs, TelemetryArgs};
use switchyard_cluster::registry::{Registry as _, StaticRegistry};
use switchyard_gate::Gate;
use switchyard_node::{Node, NodeConfig, demo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::GateArgs;

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    #[command(flatten)]
    pub(crate) gate: GateArgs,
    #[command(flatten)]
    pub(crate) packet: PacketArgs,
    /// Admin HTTP address: /healthz, /readyz, /metrics.
    #[arg(long, env = "SWITCHYARD_HTTP", default_value = "127.0.0.1:3555")]
    pub(crate) http: SocketAddr,
    #[command(flatten)]
    pub(crate) telemetry: TelemetryArgs,
}

pub(crate) async fn run(args: DevArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let packet = args.packet.config()?;
    let (tcp_addr, ws_addr) = args.gate.listen_addresses()?;
    let gate_config = args.gate.config("dev-gate".to_owned(), packet)?;

    let mut registry = Registry::default();
    let locator = Arc::new(MemoryLocator::default());
    let hub = InProcessHub::default();

    let mut nodes = Vec::new();
    for pool in [demo::LOBBY_POOL, demo::BATTLE_POOL] {
        let id = format!("dev-{pool}");
        let node_config = NodeConfig {
            packet,
            pool: pool.to_owned(),
            drain_deadline: Duration::from_secs(5),
            ..NodeConfig::new(id.as_str())
        };
        // Both nodes share one registry: their metrics differ by the `pool` label a scraper adds in a
        // cluster, which `dev` has not; the counts add up.
        let node = Node::new(
            node_config,
            demo::router_for_pool(pool),
            locator.clone(),
            &mut registry,
        )?;
        node.serve(hub.listen(&id)?);
        nodes.push((id, node));
    }

    let gate_rate_limit = gate_config.rate_limit;
    let gate = Gate::new(gate_config, locator, &mut registry)?;
    let registry_nodes = StaticRegistry::new(nodes.iter().map(|(id, _)| id.clone()));
    gate.connect_nodes(registry_nodes.nodes(), Arc::new(hub));
    // Clients may connect as soon as the listeners are up: let the in-process links to the nodes come up
    // first, or on a busy machine their first packets find no node and are dropped.
    let linked_by = tokio::time::Instant::now() + Duration::from_secs(5);
    while gate.linked_nodes() < nodes.len() && tokio::time::Instant::now() < linked_by {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // With TLS the addresses keep their tcp:// and ws:// form (scripts read them) and say TLS after them.
    let mut bound = Vec::new();
    let mut ws_url = None;
    if let Some(addr) = tcp_addr {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for TCP on {addr}"))?;
        let local = listener.local_addr()?;
        bound.push(if gate.tls() {
            format!("tcp://{local}  (TLS)")
        } else {
            format!("tcp://{local}")
        });
        gate.serve_tcp(listener);
    }
    if let Some(addr) = ws_addr {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for WebSocket on {addr}"))?;
        let (local, path) = (listener.local_addr()?, &args.gate.ws_path);
        let scheme = if gate.tls() { "wss" } else { "ws" };
        ws_url = Some(format!("{scheme}://{local}{path}"));
        bound.push(if gate.tls() {
            format!("ws://{local}{path}  (TLS: connect to wss://{local}{path})")
        } else {
            format!("ws://{local}{path}")
        });
        gate.serve_ws(listener);
    }
    let admin = switchyard_cluster::admin::bind(args.http).await?;
    let admin_addr = admin.local_addr()?;
    let admin_stop = CancellationToken::new();
    let demo_page = crate::demo_page::DemoConfig {
        ws_url,
        packet,
        heartbeat_ms: (args.gate.heartbeat_interval / 2).as_millis(),
    };
    let admin_task = tokio::spawn(switchyard_cluster::admin::serve_with(
        admin,
        Arc::new(registry),
        std::iter::once(gate.readiness())
            .chain(nodes.iter().map(|(_, node)| node.readiness()))
            .collect(),
        crate::demo_page::router(demo_page),
        admin_stop.clone(),
    ));

    println!("switchyard dev: gate + demo nodes (pools lobby and battle), in-memory locator");
    for address in &bound {
        println!("  clients   {address}");
    }
    println!(
        "  browser   http://{admin_addr}{}  (chat demo)",
        crate::demo_page::PATH
    );
    println!("  admin     http://{admin_addr}  (/healthz /readyz /metrics)");
    println!(
        "  packets   {} byte order, route {} B, seq {} B, max {} B; heartbeat {:?} ({})",
        packet.byte_order(),
        packet.route_bytes(),
        packet.seq_bytes(),
        packet.max_packet_bytes(),
        args.gate.heartbeat_interval,
        args.gate.heartbeat_mode,
    );
    let mut limits = Vec::new();
    if !args.gate.authorize_timeout.is_zero() {
        limits.push(format!("log in within {:?}", args.gate.authorize_timeout));
    }
    if let Some(limit) = gate_rate_limit {
        limits.push(format!(
            "{} packets/s, burst {} per connection",
            limit.per_second, limit.burst
        ));
    }
    if !limits.is_empty() {
        println!("  limits    {}", limits.join("; "));
    }
    println!(
        "  demo      lobby: 1 echo, 2 login, 10 work, 11 queue; battle: 3 whoami, 4 join, 5 say, 7 logout, 13 move (see README)"
    );

    shutdown.cancelled().await;
    tracing::info!("shutting down: draining the gate");
    gate.drain().await;
    gate.shutdown().await;
    for (_, node) in &nodes {
        node.shutdown().await;
    }
    admin_stop.cancel();
    let _ = admin_task.await;
    Ok(())
}

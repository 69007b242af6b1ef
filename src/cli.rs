//! The gate's command-line options (shared by `switchyard gate` and `switchyard dev`), and their validation
//! into the gate's config. What gates and nodes share lives in [`switchyard_cluster::process`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use switchyard_cluster::process::parse_duration;
use switchyard_gate::{GateConfig, HeartbeatMode, RateLimit, RoutingPolicy};
use switchyard_protocol::PacketConfig;

/// How the gate treats clients.
#[derive(Debug, Clone, Args)]
pub(crate) struct GateArgs {
    /// Client TCP listen address (empty to disable).
    #[arg(long = "tcp", env = "SWITCHYARD_TCP", default_value = "127.0.0.1:3553")]
    pub(crate) tcp: String,
    /// Client WebSocket listen address (empty to disable).
    #[arg(long = "ws", env = "SWITCHYARD_WS", default_value = "127.0.0.1:3554")]
    pub(crate) ws: String,
    /// WebSocket upgrade path.
    #[arg(long, env = "SWITCHYARD_WS_PATH", default_value = "/")]
    pub(crate) ws_path: String,
    /// Heartbeat interval (e.g. 10s, 500ms; 0 disables heartbeats and the idle timeout).
    #[arg(long, env = "SWITCHYARD_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub(crate) heartbeat_interval: Duration,
    /// resp: answer each client heartbeat; tick: send one every interval.
    #[arg(long, env = "SWITCHYARD_HEARTBEAT_MODE", default_value = "resp")]
    pub(crate) heartbeat_mode: HeartbeatMode,
    /// Attach the server time (ns) to downlink heartbeats.
    #[arg(long, env = "SWITCHYARD_HEARTBEAT_TIME")]
    pub(crate) heartbeat_time: bool,
    /// Open client connections at most.
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub(crate) max_connections: usize,
    /// Every client connection starts with a PROXY protocol v2 header from an L4 load balancer, naming the
    /// client's address (for --max-connections-per-ip and the nodes); one without is refused.
    #[arg(long, env = "SWITCHYARD_PROXY_PROTOCOL")]
    pub(crate) proxy_protocol: bool,
    /// Open client connections from one source IP address at most (0: no cap).
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub(crate) max_connections_per_ip: usize,
    /// Packets queued per client at most; a client that lets the queue fill is disconnected.
    #[arg(long, env = "SWITCHYARD_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub(crate) outbound_queue: usize,
    /// Bytes queued per client at most (default 1 MiB); a client that lets the queue fill is disconnected.
    #[arg(long, env = "SWITCHYARD_OUTBOUND_QUEUE_BYTES", default_value_t = switchyard_gate::DEFAULT_OUTBOUND_QUEUE_BYTES)]
    pub(crate) outbound_queue_bytes: usize,
    /// How stateless packets pick a node: round-robin, random, least-bound.
    #[arg(long, env = "SWITCHYARD_ROUTING", default_value = "round-robin")]
    pub(crate) routing: RoutingPolicy,
    /// Pools routed by another policy than --routing: POOL=POLICY,... (e.g. battle=least-bound).
    #[arg(long, env = "SWITCHYARD_POOL_ROUTING", default_value = "")]
    pub(crate) pool_routing: String,
    /// How long a draining gate takes to close its connections.
    #[arg(long = "gate-drain-deadline", env = "SWITCHYARD_GATE_DRAIN_DEADLINE", default_value = "30s", value_parser = parse_duration)]
    pub(crate) drain_deadline: Duration,
    /// How long a node whose link dropped, but which the registry still lists, keeps its players before
    /// they are re-homed on another node.
    #[arg(long, env = "SWITCHYARD_NODE_LINK_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub(crate) node_link_grace: Duration,
    /// PEM certificate chain: with --tls-key, the TCP listener speaks TLS and the WebSocket one WSS.
    #[arg(long, env = "SWITCHYARD_TLS_CERT")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWITCHYARD_TLS_KEY")]
    pub(crate) tls_key: Option<PathBuf>,
    /// How often --tls-cert and --tls-key are checked for a replacement (0: never); new handshakes use a
    /// replaced pair, live connections keep theirs.
    #[arg(long, env = "SWITCHYARD_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub(crate) tls_reload_interval: Duration,
    /// Close a connection not logged in (bound to a uid) this long after it opened (0 disables).
    #[arg(long, env = "SWITCHYARD_AUTHORIZE_TIMEOUT", default_value = "0", value_parser = parse_duration)]
    pub(crate) authorize_timeout: Duration,
    /// Packets per second a connection may send on average; more are dropped (0 disables).
    #[arg(long, env = "SWITCHYARD_RATE_LIMIT", default_value_t = 0)]
    pub(crate) rate_limit: u32,
    /// Packets a connection may send in one go before --rate-limit applies (0: one second's worth).
    #[arg(long, env = "SWITCHYARD_RATE_BURST", default_value_t = 0)]
    pub(crate) rate_burst: u32,
}

impl GateArgs {
    /// The gate's config. TLS files are read and checked here, so a bad one stops the process at start-up
    /// with a message naming it.
    pub(crate) fn config(&self, id: String, packet: PacketConfig) -> anyhow::Result<GateConfig> {
        let config = GateConfig {
            packet,
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_mode: self.heartbeat_mode,
            heartbeat_time: self.heartbeat_time,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            proxy_protocol: self.proxy_protocol,
            outbound_queue: self.outbound_queue,
            outbound_queue_bytes: self.outbound_queue_bytes,
            routing: self.routing,
            pool_routing: switchyard_cluster::contract::parse_pool_routing(&self.pool_routing)?
                .into_iter()
                .map(|(pool, policy)| Ok((pool, policy.parse().map_err(anyhow::Error::msg)?)))
                .collect::<anyhow::Result<_>>()?,
            ws_path: self.ws_path.clone(),
            drain_deadline: self.drain_deadline,
            node_link_grace: self.node_link_grace,
            tls: match (&self.tls_cert, &self.tls_key) {
                (None, None) => None,
                (Some(cert), Some(key)) => Some(
                    switchyard_gate::load_server_config_with_reload(cert, key, self.tls_reload_interval)
                        .map_err(anyhow::Error::msg)?,
                ),
                (Some(_), None) => anyhow::bail!("--tls-cert needs --tls-key"),
                (None, Some(_)) => anyhow::bail!("--tls-key needs --tls-cert"),
            },
            authorize_timeout: self.authorize_timeout,
            rate_limit: self.rate_limit()?,
            ..GateConfig::new(id)
        };
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }

    fn rate_limit(&self) -> anyhow::Result<Option<RateLimit>> {
        if self.rate_limit == 0 {
            anyhow::ensure!(self.rate_burst == 0, "--rate-burst needs --rate-limit");
            return Ok(None);
        }
        Ok(Some(RateLimit {
            per_second: self.rate_limit,
            burst: if self.rate_burst == 0 {
                self.rate_limit
            } else {
                self.rate_burst
            },
        }))
    }

    /// The TCP and WebSocket addresses, `None` where disabled.
    pub(crate) fn listen_addresses(&self) -> anyhow::Result<(Option<SocketAddr>, Option<SocketAddr>)> {
        let tcp = parse_optional_addr("--tcp", &self.tcp)?;
        let ws = parse_optional_addr("--ws", &self.ws)?;
        anyhow::ensure!(
            tcp.is_some() || ws.is_some(),
            "at least one of --tcp and --ws must be set"
        );
        Ok((tcp, ws))
    }
}

fn parse_optional_addr(flag: &str, value: &str) -> anyhow::Result<Option<SocketAddr>> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|error| anyhow::anyhow!("{flag} {value:?} is not an address like 127.0.0.1:3553: {error}"))
}

//! The gate's validated settings. The binary maps flags and environment onto [`GateConfig`]; a gate is only
//! ever built from a config that passed [`GateConfig::validate`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_protocol::PacketConfig;

/// The default of [`crate::GateConfig::node_link_grace`]: how long a node whose link dropped, but which
/// the registry still lists, keeps its players on this gate before they are re-homed. A link flap is not a
/// dead node; the registry (the node's endpoint leaving the EndpointSlice) declares a node gone at once.
pub const DEFAULT_NODE_LINK_GRACE: Duration = Duration::from_secs(10);

/// Default cap on the bytes queued for one client: 1 MiB.
pub const DEFAULT_OUTBOUND_QUEUE_BYTES: usize = 1 << 20;

/// How the gate keeps clients alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeartbeatMode {
    /// Answer each client heartbeat with one (due's default).
    #[default]
    Resp,
    /// Send one every interval, whatever the client does.
    Tick,
}

impl FromStr for HeartbeatMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "resp" => Ok(HeartbeatMode::Resp),
            "tick" => Ok(HeartbeatMode::Tick),
            other => Err(format!("heartbeat mode {other:?} is not one of: resp, tick")),
        }
    }
}

impl fmt::Display for HeartbeatMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeartbeatMode::Resp => "resp",
            HeartbeatMode::Tick => "tick",
        })
    }
}

/// How a stateless packet picks among the nodes that take new players.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoutingPolicy {
    #[default]
    RoundRobin,
    Random,
    /// The node with the fewest players bound through this gate.
    LeastBound,
}

/// What picks the routing policy of a pool: one policy for all, or a gate's config.
pub(crate) trait PolicyOf {
    fn policy_of(&self, pool: &str) -> RoutingPolicy;
}

impl PolicyOf for RoutingPolicy {
    fn policy_of(&self, _pool: &str) -> RoutingPolicy {
        *self
    }
}

impl PolicyOf for &GateConfig {
    fn policy_of(&self, pool: &str) -> RoutingPolicy {
        self.pool_routing
            .iter()
            .find(|(named, _)| named == pool)
            .map_or(self.routing, |(_, policy)| *policy)
    }
}

impl FromStr for RoutingPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round-robin" => Ok(RoutingPolicy::RoundRobin),
            "random" => Ok(RoutingPolicy::Random),
            "least-bound" => Ok(RoutingPolicy::LeastBound),
            other => Err(format!(
                "routing policy {other:?} is not one of: round-robin, random, least-bound"
            )),
        }
    }
}

impl fmt::Display for RoutingPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoutingPolicy::RoundRobin => "round-robin",
            RoutingPolicy::Random => "random",
            RoutingPolicy::LeastBound => "least-bound",
        })
    }
}

/// A per-connection packet-rate limit: `per_second` packets a second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// Everything a gate needs to know about how to behave.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// Instance id: the pod name in Kubernetes.
    pub id: String,
    pub packet: PacketConfig,
    /// Heartbeat interval; zero disables heartbeats and the idle timeout.
    pub heartbeat_interval: Duration,
    pub heartbeat_mode: HeartbeatMode,
    /// Attach the server time to downlink heartbeats.
    pub heartbeat_time: bool,
    /// Open client connections at most; one more is closed at once and counted.
    pub max_connections: usize,
    /// Open client connections from one source address at most (0: no cap); one more is closed at accept
    /// and counted as refused with reason `per_ip`.
    pub max_connections_per_ip: usize,
    /// Packets queued for one client at most; a client that lets it fill up is disconnected.
    pub outbound_queue: usize,
    /// Bytes queued for one client at most (whole packets); a client that lets it fill up is disconnected,
    /// so one client that never reads costs the gate at most this much (plus one write batch).
    pub outbound_queue_bytes: usize,
    /// Bytes a connection writes in one batch at most.
    pub write_batch_bytes: usize,
    pub routing: RoutingPolicy,
    /// Pools routed by another policy than [`GateConfig::routing`] (the GameCluster's `spec.pools[].routing`).
    pub pool_routing: Vec<(String, RoutingPolicy)>,
    /// WebSocket upgrade path.
    pub ws_path: String,
    /// How long a draining gate takes to close its connections.
    pub drain_deadline: Duration,
    /// How long the players of a node whose link dropped (while the registry still lists it) stay bound to
    /// it: their packets are dropped meanwhile (`node_unlinked`); after it they are re-homed.
    pub node_link_grace: Duration,
    /// When set, both client listeners speak TLS (the WebSocket one is then WSS).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// A connection not bound to a uid (logged in) this long after it opened is closed; zero disables.
    pub authorize_timeout: Duration,
    /// Packets over this rate are dropped, and a connection that keeps exceeding it is closed.
    pub rate_limit: Option<RateLimit>,
    /// Every client connection starts with a PROXY protocol v2 header (from an L4 load balancer) naming
    /// the client's address; one without is refused.
    pub proxy_protocol: bool,
}

impl GateConfig {
    /// A config with Switchyard's defaults and the given id.
    pub fn new(id: impl Into<String>) -> Self {
        GateConfig {
            id: id.into(),
            packet: PacketConfig::default(),
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_mode: HeartbeatMode::Resp,
            heartbeat_time: false,
            max_connections: 100_000,
            max_connections_per_ip: 0,
            outbound_queue: 1024,
            outbound_queue_bytes: DEFAULT_OUTBOUND_QUEUE_BYTES,
            write_batch_bytes: 64 * 1024,
            routing: RoutingPolicy::RoundRobin,
            pool_routing: Vec::new(),
            ws_path: "/".to_owned(),
            drain_deadline: Duration::from_secs(30),
            node_link_grace: DEFAULT_NODE_LINK_GRACE,
            tls: None,
            tls_handshake_timeout: Duration::from_secs(10),
            authorize_timeout: Duration::ZERO,
            rate_limit: None,
            proxy_protocol: false,
        }
    }

    /// Checks what the types cannot.
    ///
    /// # Errors
    /// The setting at fault.
    pub fn validate(&self) -> Result<(), GateConfigError> {
        if self.id.is_empty() {
            return Err(GateConfigError::EmptyId);
        }
        if self.max_connections == 0 {
            return Err(GateConfigError::NoConnections);
        }
        if self.outbound_queue == 0 {
            return Err(GateConfigError::EmptyOutboundQueue);
        }
        let largest_packet = self.packet.max_packet_bytes() as usize + 4;
        if self.outbound_queue_bytes < largest_packet {
            return Err(GateConfigError::OutboundQueueBytes {
                bytes: self.outbound_queue_bytes,
                largest_packet,
            });
        }
        if !self.ws_path.starts_with('/') {
            return Err(GateConfigError::WsPath(self.ws_path.clone()));
        }
        if self.tls.is_some() && self.tls_handshake_timeout.is_zero() {
            return Err(GateConfigError::TlsHandshakeTimeout);
        }
        if let Some(limit) = self.rate_limit {
            if limit.per_second == 0 {
                return Err(GateConfigError::RateLimit);
            }
            if limit.burst == 0 {
                return Err(GateConfigError::RateBurst);
            }
        }
        Ok(())
    }

    /// How long a connection may stay silent: twice the heartbeat interval, or forever when it is zero.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (!self.heartbeat_interval.is_zero()).then(|| self.heartbeat_interval * 2)
    }
}

/// A gate setting that cannot work: found before anything starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateConfigError {
    #[error("gate id must not be empty")]
    EmptyId,
    #[error("max connections must be at least 1")]
    NoConnections,
    #[error("outbound queue must hold at least 1 packet")]
    EmptyOutboundQueue,
    #[error("outbound queue of {bytes} bytes cannot hold one largest packet ({largest_packet} bytes)")]
    OutboundQueueBytes { bytes: usize, largest_packet: usize },
    #[error("WebSocket path {0:?} must start with '/'")]
    WsPath(String),
    #[error("TLS handshake timeout must be more than 0")]
    TlsHandshakeTimeout,
    #[error("rate limit must be at least 1 packet per second")]
    RateLimit,
    #[error("rate burst must be at least 1 packet")]
    RateBurst,
}

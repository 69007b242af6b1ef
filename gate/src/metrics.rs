//! The gate's Prometheus metrics. Labels are bounded sets (protocol, reason); never a uid or connection id.
//! Hot-path counters are resolved once per connection, so counting a packet is one atomic add.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use switchyard_cluster::snake_case_labels;

/// Client transport of a connection.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Ws,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TransportLabels {
    pub(crate) protocol: Transport,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it.
    Client,
    /// No traffic for twice the heartbeat interval.
    Idle,
    /// The client announced a packet over the maximum size.
    Oversize,
    /// The client did not read its packets fast enough.
    SlowReader,
    /// A node asked for it (logout elsewhere, duplicate login, drain deadline).
    Kicked,
    /// The gate is draining or shutting down.
    Draining,
    /// The socket failed.
    Error,
    /// Not bound to a uid (logged in) within the authorize timeout.
    Unauthorized,
    /// Kept sending faster than the packet-rate limit.
    RateLimited,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CloseLabels {
    pub(crate) protocol: Transport,
    pub(crate) reason: CloseReason,
}

/// Why a client packet was not forwarded.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than header + route + seq, or a WebSocket message that is not one packet.
    Malformed,
    /// No node serves the route (or it is internal).
    UnknownRoute,
    /// An authorized or stateful route from a session without a uid.
    Unauthorized,
    /// The route exists but no node takes it now.
    NoNode,
    /// Over the connection's packet-rate limit.
    RateLimited,
    /// The player's node is still listed by the registry but this gate has no link to it right now (a
    /// link flap): the packet is dropped rather than the player re-homed with empty state.
    NodeUnlinked,
    /// The node's link stayed full past the gate's forward deadline (the node stopped reading).
    NodeBusy,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DropLabels {
    pub(crate) reason: DropReason,
}

/// Why a connection was refused before a session existed.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RefuseReason {
    MaxConnections,
    /// The source address holds `max_connections_per_ip` connections already.
    PerIp,
    Draining,
    Handshake,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefuseLabels {
    pub(crate) protocol: Transport,
    pub(crate) reason: RefuseReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NodeStateLabels {
    pub(crate) state: &'static str,
}

/// A histogram of request round trips: 50 µs to about 26 s.
#[derive(Debug, Clone)]
pub(crate) struct LatencyHistogram(pub(crate) Histogram);

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram(Histogram::new(exponential_buckets(0.000_05, 2.0, 20)))
    }
}

/// How a relayed node-to-node call ended, as the gate saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    Ok,
    RemoteError,
    NoNode,
    NodeGone,
    UnknownRoute,
    Overloaded,
    /// The caller's link was full or gone when its reply came.
    ReplyDropped,
}

impl CallOutcome {
    const ALL: [CallOutcome; 7] = [
        CallOutcome::Ok,
        CallOutcome::RemoteError,
        CallOutcome::NoNode,
        CallOutcome::NodeGone,
        CallOutcome::UnknownRoute,
        CallOutcome::Overloaded,
        CallOutcome::ReplyDropped,
    ];
}

impl From<switchyard_protocol::link::CallStatus> for CallOutcome {
    fn from(status: switchyard_protocol::link::CallStatus) -> Self {
        use switchyard_protocol::link::CallStatus;
        match status {
            CallStatus::Ok => CallOutcome::Ok,
            CallStatus::RemoteError => CallOutcome::RemoteError,
            CallStatus::NoNode => CallOutcome::NoNode,
            CallStatus::NodeGone => CallOutcome::NodeGone,
            CallStatus::UnknownRoute => CallOutcome::UnknownRoute,
            CallStatus::Overloaded => CallOutcome::Overloaded,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct CallLabels {
    pub(crate) outcome: CallOutcome,
}

/// Every metric the gate exports.
#[derive(Debug, Clone, Default)]
pub struct GateMetrics {
    pub(crate) connections: Family<TransportLabels, Gauge>,
    pub(crate) connections_opened: Family<TransportLabels, Counter>,
    pub(crate) connections_closed: Family<CloseLabels, Counter>,
    pub(crate) connections_refused: Family<RefuseLabels, Counter>,
    pub(crate) packets_in: Family<TransportLabels, Counter>,
    pub(crate) bytes_in: Family<TransportLabels, Counter>,
    pub(crate) packets_out: Family<TransportLabels, Counter>,
    pub(crate) bytes_out: Family<TransportLabels, Counter>,
    pub(crate) packets_dropped: Family<DropLabels, Counter>,
    pub(crate) heartbeats: Counter,
    pub(crate) pushes_delivered: Counter,
    pub(crate) stale_bindings_cleared: Counter,
    /// Acks and disconnect notices dropped: a node's link and its control queue were both full.
    pub(crate) link_control_dropped: Counter,
    pub(crate) node_links: Gauge,
    /// Gate → node → gate time of requests, from forwarding to the response reaching the session's queue.
    pub(crate) request_duration: LatencyHistogram,
    /// Messages waiting in the fullest node link.
    pub(crate) link_queue_depth: Gauge,
    /// Bytes of packets waiting in the fullest node link (by bytes).
    pub(crate) link_queue_bytes: Gauge,
    pub(crate) node_link_reconnects: Counter,
    /// Linked nodes by the state they announced.
    pub(crate) nodes: Family<NodeStateLabels, Gauge>,
    pub(crate) node_link_failures: Counter,
    pub(crate) draining: Gauge,
    /// `--max-connections`.
    pub(crate) max_connections: Gauge,
    /// Routes claimed by more than one node pool now.
    pub(crate) route_conflicts: Gauge,
    /// Node-to-node calls relayed or answered by the gate, by outcome.
    pub(crate) calls: Family<CallLabels, Counter>,
    /// Node-to-node calls waiting for their callee's reply.
    pub(crate) calls_in_flight: Gauge,
}

impl GateMetrics {
    /// Creates the metrics and registers them under `switchyard_gate_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = GateMetrics::default();
        let gate = registry.sub_registry_with_prefix("switchyard_gate");
        gate.register(
            "connections",
            "Open client connections",
            metrics.connections.clone(),
        );
        gate.register(
            "connections_opened",
            "Client connections accepted",
            metrics.connections_opened.clone(),
        );
        gate.register(
            "connections_closed",
            "Client connections closed, by reason",
            metrics.connections_closed.clone(),
        );
        gate.register(
            "connections_refused",
            "Client connections refused before a session existed",
            metrics.connections_refused.clone(),
        );
        gate.register(
            "packets_in",
            "Client packets received",
            metrics.packets_in.clone(),
        );
        gate.register(
            "bytes_in",
            "Client packet bytes received",
            metrics.bytes_in.clone(),
        );
        gate.register(
            "packets_out",
            "Packets written to clients",
            metrics.packets_out.clone(),
        );
        gate.register("bytes_out", "Bytes written to clients", metrics.bytes_out.clone());
        gate.register(
            "packets_dropped",
            "Client packets not forwarded, by reason",
            metrics.packets_dropped.clone(),
        );
        gate.register(
            "heartbeats",
            "Client heartbeats received",
            metrics.heartbeats.clone(),
        );
        gate.register(
            "pushes_delivered",
            "Node pushes queued to client sessions",
            metrics.pushes_delivered.clone(),
        );
        gate.register(
            "stale_bindings_cleared",
            "Stateful bindings to vanished nodes cleared",
            metrics.stale_bindings_cleared.clone(),
        );
        gate.register(
            "link_control_dropped",
            "Acks and disconnect notices dropped because a node's link and its control queue were both full",
            metrics.link_control_dropped.clone(),
        );
        gate.register("node_links", "Live links to nodes", metrics.node_links.clone());
        gate.register(
            "node_link_failures",
            "Node links that failed or could not open",
            metrics.node_link_failures.clone(),
        );
        gate.register("draining", "1 while the gate drains", metrics.draining.clone());
        gate.register(
            "max_connections",
            "Connections the gate accepts at most (--max-connections)",
            metrics.max_connections.clone(),
        );
        gate.register(
            "request_duration_seconds",
            "Gate to node to gate time of requests",
            metrics.request_duration.0.clone(),
        );
        gate.register(
            "link_queue_depth",
            "Messages waiting in the fullest node link",
            metrics.link_queue_depth.clone(),
        );
        gate.register(
            "link_queue_bytes",
            "Bytes of client packets waiting in the fullest node link (at most --link-queue-bytes)",
            metrics.link_queue_bytes.clone(),
        );
        gate.register(
            "node_link_reconnects",
            "Node links opened again after they had been up",
            metrics.node_link_reconnects.clone(),
        );
        gate.register("nodes", "Linked nodes by announced state", metrics.nodes.clone());
        gate.register(
            "route_conflicts",
            "Routes claimed by more than one node pool (the pool whose name sorts first keeps each)",
            metrics.route_conflicts.clone(),
        );
        gate.register(
            "calls",
            "Node-to-node calls relayed by the gate, by outcome",
            metrics.calls.clone(),
        );
        gate.register(
            "calls_in_flight",
            "Node-to-node calls waiting for their callee's reply",
            metrics.calls_in_flight.clone(),
        );
        for outcome in CallOutcome::ALL {
            let _ = metrics.calls.get_or_create(&CallLabels { outcome });
        }
        // Create every series up front: a dashboard query should see 0, not "no data".
        for protocol in [Transport::Tcp, Transport::Ws] {
            let _ = metrics.connections.get_or_create(&TransportLabels { protocol });
            metrics.traffic(protocol);
            for reason in [
                CloseReason::Client,
                CloseReason::Idle,
                CloseReason::Oversize,
                CloseReason::SlowReader,
                CloseReason::Kicked,
                CloseReason::Draining,
                CloseReason::Error,
                CloseReason::Unauthorized,
                CloseReason::RateLimited,
            ] {
                let _ = metrics
                    .connections_closed
                    .get_or_create(&CloseLabels { protocol, reason });
            }
            for reason in [
                RefuseReason::MaxConnections,
                RefuseReason::PerIp,
                RefuseReason::Draining,
                RefuseReason::Handshake,
            ] {
                let _ = metrics
                    .connections_refused
                    .get_or_create(&RefuseLabels { protocol, reason });
            }
        }
        for reason in [
            DropReason::Malformed,
            DropReason::UnknownRoute,
            DropReason::Unauthorized,
            DropReason::NoNode,
            DropReason::RateLimited,
            DropReason::NodeUnlinked,
            DropReason::NodeBusy,
        ] {
            let _ = metrics.packets_dropped.get_or_create(&DropLabels { reason });
        }
        metrics
    }

    pub(crate) fn call(&self, outcome: CallOutcome) {
        self.calls.get_or_create(&CallLabels { outcome }).inc();
    }

    pub(crate) fn dropped(&self, reason: DropReason) {
        self.packets_dropped.get_or_create(&DropLabels { reason }).inc();
    }

    /// One drop counter, resolved once (for a connection's hot path).
    pub(crate) fn drop_counter(&self, reason: DropReason) -> Counter {
        self.packets_dropped.get_or_create(&DropLabels { reason }).clone()
    }

    pub(crate) fn refused(&self, protocol: Transport, reason: RefuseReason) {
        self.connections_refused
            .get_or_create(&RefuseLabels { protocol, reason })
            .inc();
    }

    pub(crate) fn closed(&self, protocol: Transport, reason: CloseReason) {
        self.connections_closed
            .get_or_create(&CloseLabels { protocol, reason })
            .inc();
    }

    /// The per-connection counters of one transport, resolved once.
    pub(crate) fn traffic(&self, protocol: Transport) -> TrafficCounters {
        let labels = TransportLabels { protocol };
        TrafficCounters {
            packets_in: self.packets_in.get_or_create(&labels).clone(),
            bytes_in: self.bytes_in.get_or_create(&labels).clone(),
            packets_out: self.packets_out.get_or_create(&labels).clone(),
            bytes_out: self.bytes_out.get_or_create(&labels).clone(),
        }
    }
}

/// Counters a connection touches per packet.
#[derive(Debug, Clone)]
pub(crate) struct TrafficCounters {
    pub(crate) packets_in: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) packets_out: Counter,
    pub(crate) bytes_out: Counter,
}

snake_case_labels!(Transport { Tcp => "tcp", Ws => "ws" });
snake_case_labels!(CloseReason {
    Client => "client",
    Idle => "idle",
    Oversize => "oversize",
    SlowReader => "slow_reader",
    Kicked => "kicked",
    Draining => "draining",
    Error => "error",
    Unauthorized => "unauthorized",
    RateLimited => "rate_limited",
});
snake_case_labels!(DropReason {
    Malformed => "malformed",
    UnknownRoute => "unknown_route",
    Unauthorized => "unauthorized",
    NoNode => "no_node",
    RateLimited => "rate_limited",
    NodeUnlinked => "node_unlinked",
    NodeBusy => "node_busy",
});
snake_case_labels!(CallOutcome {
    Ok => "ok",
    RemoteError => "remote_error",
    NoNode => "no_node",
    NodeGone => "node_gone",
    UnknownRoute => "unknown_route",
    Overloaded => "overloaded",
    ReplyDropped => "reply_dropped",
});
snake_case_labels!(RefuseReason { MaxConnections => "max_connections", PerIp => "per_ip", Draining => "draining", Handshake => "handshake" });

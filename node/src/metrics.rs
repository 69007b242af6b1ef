//! The node's Prometheus metrics. Route labels are bounded by the router; never a uid.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use switchyard_cluster::snake_case_labels;

use crate::handler_error::FailureReason;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) route: i32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabels {
    pub(crate) route: i32,
    pub(crate) reason: FailureReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HookLabels {
    pub(crate) hook: &'static str,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum NodeDrop {
    UnknownRoute,
    Malformed,
    /// An internal route, or one that needs a logged-in player, reached without one.
    Forbidden,
    /// The connection's lane was full: one player sent faster than their handlers ran.
    LaneFull,
    /// A new connection's packet on a gate link that holds `--max-lanes-per-link` lanes already.
    TooManyLanes,
    /// The lanes of the packet's gate link hold `--link-lane-bytes` of payload already.
    LinkFull,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NodeDropLabels {
    pub(crate) reason: NodeDrop,
}

/// Which way a node-to-node call went.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum CallDirection {
    /// This node called another.
    Out,
    /// Another node called this one.
    In,
}

/// How a node-to-node call ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum CallOutcome {
    Ok,
    RemoteError,
    NoNode,
    UnknownRoute,
    NotBound,
    NodeGone,
    Timeout,
    Overloaded,
    NoGate,
    /// Encoding, decoding or the locator failed.
    Error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallLabels {
    pub(crate) direction: CallDirection,
    pub(crate) route: i32,
    pub(crate) outcome: CallOutcome,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum PushKind {
    Unicast,
    Multicast,
    Broadcast,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PushLabels {
    pub(crate) kind: PushKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabels {
    pub(crate) state: &'static str,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum DrainEnd {
    /// Every player left.
    Empty,
    /// The deadline passed with players still bound.
    Deadline,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DrainLabels {
    pub(crate) outcome: DrainEnd,
}

fn latency_histogram() -> Histogram {
    // 20 µs .. ~10 s
    Histogram::new(exponential_buckets(0.000_02, 2.0, 20))
}

/// Every metric the node exports.
#[derive(Debug, Clone)]
pub(crate) struct NodeMetrics {
    pub(crate) handler_duration: Family<RouteLabels, Histogram>,
    pub(crate) handler_failures: Family<FailureLabels, Counter>,
    pub(crate) hook_panics: Family<HookLabels, Counter>,
    pub(crate) dropped: Family<NodeDropLabels, Counter>,
    pub(crate) bound_players: Gauge,
    pub(crate) state: Family<StateLabels, Gauge>,
    pub(crate) drains_started: Counter,
    pub(crate) drains_finished: Family<DrainLabels, Counter>,
    pub(crate) drain_duration: Histogram,
    pub(crate) pushes: Family<PushLabels, Counter>,
    pub(crate) gate_links: Gauge,
    /// Lanes open (connections with a queue on this node), over all gate links.
    pub(crate) lanes: Gauge,
    /// Packets the game asked to send that are over the largest client packet, refused with an error.
    pub(crate) oversize_sends: Counter,
    /// Node-to-node calls made and served, by direction, route and outcome.
    pub(crate) calls: Family<CallLabels, Counter>,
    /// Round-trip time of calls this node made, by route.
    pub(crate) call_duration: Family<RouteLabels, Histogram>,
    /// Calls this node made that wait for their reply.
    pub(crate) calls_in_flight: Gauge,
    /// Unix time at which the running (or last) drain's deadline passes; 0 before any drain.
    pub(crate) drain_deadline_timestamp: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl NodeMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = NodeMetrics {
            handler_duration: Family::new_with_constructor(latency_histogram),
            handler_failures: Family::default(),
            hook_panics: Family::default(),
            dropped: Family::default(),
            bound_players: Gauge::default(),
            state: Family::default(),
            drains_started: Counter::default(),
            drains_finished: Family::default(),
            drain_duration: Histogram::new(exponential_buckets(0.1, 2.0, 14)),
            pushes: Family::default(),
            gate_links: Gauge::default(),
            lanes: Gauge::default(),
            oversize_sends: Counter::default(),
            calls: Family::default(),
            call_duration: Family::new_with_constructor(latency_histogram),
            calls_in_flight: Gauge::default(),
            drain_deadline_timestamp: Gauge::default(),
        };
        let node = registry.sub_registry_with_prefix("switchyard_node");
        node.register(
            "handler_duration_seconds",
            "Handler run time per route",
            metrics.handler_duration.clone(),
        );
        node.register(
            "handler_failures",
            "Handlers that failed (each answered with an error reply), by route and reason",
            metrics.handler_failures.clone(),
        );
        node.register(
            "hook_panics",
            "Game hooks and ticks that panicked, by hook",
            metrics.hook_panics.clone(),
        );
        node.register(
            "packets_dropped",
            "Packets from gates not handled, by reason",
            metrics.dropped.clone(),
        );
        node.register(
            "bound_players",
            "Players bound to this node",
            metrics.bound_players.clone(),
        );
        node.register("state", "1 for the node's current state", metrics.state.clone());
        node.register("drains_started", "Drains started", metrics.drains_started.clone());
        node.register(
            "drains_finished",
            "Drains finished, by outcome",
            metrics.drains_finished.clone(),
        );
        node.register(
            "drain_duration_seconds",
            "How long drains took",
            metrics.drain_duration.clone(),
        );
        node.register("pushes", "Pushes sent to gates, by kind", metrics.pushes.clone());
        node.register("gate_links", "Live links to gates", metrics.gate_links.clone());
        node.register(
            "lanes",
            "Lanes open (connections with a queue on this node), over all gate links",
            metrics.lanes.clone(),
        );
        node.register(
            "oversize_sends",
            "Answers and pushes the game asked to send that are over the largest client packet \
             (--max-packet-bytes), refused with an error to the caller",
            metrics.oversize_sends.clone(),
        );
        node.register(
            "calls",
            "Node-to-node calls made (direction out) and served (in), by route and outcome",
            metrics.calls.clone(),
        );
        node.register(
            "call_duration_seconds",
            "Round-trip time of node-to-node calls this node made, by route",
            metrics.call_duration.clone(),
        );
        node.register(
            "calls_in_flight",
            "Node-to-node calls this node made that wait for their reply",
            metrics.calls_in_flight.clone(),
        );
        node.register(
            "drain_deadline_timestamp_seconds",
            "Unix time at which the running (or last) drain's deadline passes; 0 before any drain",
            metrics.drain_deadline_timestamp.clone(),
        );
        for reason in [
            NodeDrop::UnknownRoute,
            NodeDrop::Malformed,
            NodeDrop::Forbidden,
            NodeDrop::LaneFull,
            NodeDrop::TooManyLanes,
            NodeDrop::LinkFull,
        ] {
            let _ = metrics.dropped.get_or_create(&NodeDropLabels { reason });
        }
        for kind in [PushKind::Unicast, PushKind::Multicast, PushKind::Broadcast] {
            let _ = metrics.pushes.get_or_create(&PushLabels { kind });
        }
        for outcome in [DrainEnd::Empty, DrainEnd::Deadline] {
            let _ = metrics.drains_finished.get_or_create(&DrainLabels { outcome });
        }
        metrics
    }

    pub(crate) fn dropped(&self, reason: NodeDrop) {
        self.dropped.get_or_create(&NodeDropLabels { reason }).inc();
    }
}

snake_case_labels!(FailureReason {
    BadRequest => "bad_request",
    Game => "game",
    Internal => "internal",
    Panic => "panic",
});
snake_case_labels!(NodeDrop {
    UnknownRoute => "unknown_route",
    Malformed => "malformed",
    Forbidden => "forbidden",
    LaneFull => "lane_full",
    TooManyLanes => "too_many_lanes",
    LinkFull => "link_full",
});
snake_case_labels!(CallDirection { Out => "out", In => "in" });
snake_case_labels!(CallOutcome {
    Ok => "ok",
    RemoteError => "remote_error",
    NoNode => "no_node",
    UnknownRoute => "unknown_route",
    NotBound => "not_bound",
    NodeGone => "node_gone",
    Timeout => "timeout",
    Overloaded => "overloaded",
    NoGate => "no_gate",
    Error => "error",
});
snake_case_labels!(PushKind { Unicast => "unicast", Multicast => "multicast", Broadcast => "broadcast" });
snake_case_labels!(DrainEnd { Empty => "empty", Deadline => "deadline" });

//! The locator's metrics: operation durations, errors, cache results, the subscription's state and lag.

use std::fmt;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What an operation, an error or a duration is about; a fixed set, so labels stay bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    BindGate,
    UnbindGate,
    LocateGate,
    BindNode,
    UnbindNode,
    LocateNode,
    Subscribe,
    Event,
}

impl Op {
    const ALL: [Op; 8] = [
        Op::BindGate,
        Op::UnbindGate,
        Op::LocateGate,
        Op::BindNode,
        Op::UnbindNode,
        Op::LocateNode,
        Op::Subscribe,
        Op::Event,
    ];
    /// The operations that are Redis round trips, the first of [`Op::ALL`].
    const TIMED: usize = 6;

    pub(super) fn name(self) -> &'static str {
        match self {
            Op::BindGate => "bind_gate",
            Op::UnbindGate => "unbind_gate",
            Op::LocateGate => "locate_gate",
            Op::BindNode => "bind_node",
            Op::UnbindNode => "unbind_node",
            Op::LocateNode => "locate_node",
            Op::Subscribe => "subscribe",
            Op::Event => "event",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

fn duration_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

#[derive(Debug)]
pub(super) struct Metrics {
    durations: Family<OpLabels, Histogram>,
    errors: Family<OpLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    /// Handles into the families above, indexed by `Op as usize`, so hot paths do not hash labels.
    pub(super) duration: Vec<Histogram>,
    pub(super) error: Vec<Counter>,
    pub(super) cache_hit: Counter,
    pub(super) cache_miss: Counter,
    pub(super) cache_bypass: Counter,
    pub(super) pubsub_connected: Gauge,
    pub(super) pubsub_lag: Histogram,
}

impl Metrics {
    pub(super) fn new() -> Self {
        let durations: Family<OpLabels, Histogram> = Family::new_with_constructor(duration_histogram);
        let errors: Family<OpLabels, Counter> = Family::default();
        let cache: Family<CacheLabels, Counter> = Family::default();
        let duration = Op::ALL[..Op::TIMED]
            .iter()
            .map(|op| durations.get_or_create(&OpLabels { op: op.name() }).clone())
            .collect();
        let error = Op::ALL
            .iter()
            .map(|op| errors.get_or_create(&OpLabels { op: op.name() }).clone())
            .collect();
        let cache_counter = |result| cache.get_or_create(&CacheLabels { result }).clone();
        let (cache_hit, cache_miss, cache_bypass) = (
            cache_counter("hit"),
            cache_counter("miss"),
            cache_counter("bypass"),
        );
        Metrics {
            duration,
            error,
            cache_hit,
            cache_miss,
            cache_bypass,
            durations,
            errors,
            cache,
            pubsub_connected: Gauge::default(),
            // 100 µs .. ~13 s
            pubsub_lag: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
        }
    }

    pub(super) fn register(&self, registry: &mut Registry) {
        let locator = registry.sub_registry_with_prefix("switchyard_locator");
        locator.register(
            "operation_duration_seconds",
            "Redis round trips of locator operations",
            self.durations.clone(),
        );
        locator.register("errors", "Locator operations that failed", self.errors.clone());
        locator.register(
            "cache",
            "locate_gate cache lookups: hit, miss, or bypass (pub/sub down)",
            self.cache.clone(),
        );
        locator.register(
            "pubsub_connected",
            "1 while the locator's Redis pub/sub subscription is up",
            self.pubsub_connected.clone(),
        );
        locator.register(
            "pubsub_lag_seconds",
            "Time from publishing a locator event to receiving it",
            self.pubsub_lag.clone(),
        );
    }

    pub(super) fn error(&self, op: Op) {
        if let Some(counter) = self.error.get(op as usize) {
            counter.inc();
        }
    }

    pub(super) fn duration(&self, op: Op, elapsed: Duration) {
        if let Some(histogram) = self.duration.get(op as usize) {
            histogram.observe(elapsed.as_secs_f64());
        }
    }
}

//! The Redis locator: uid → gate and uid → node bindings kept in Redis (one server or a Redis Cluster) and
//! shared by every gate and node, with pub/sub events and a small cache in front of `locate_gate`.
//!
//! # URLs
//!
//! [`RedisLocatorConfig::url`] chooses the deployment:
//!
//! - `redis://[user:password@]host:port[/db][?protocol=resp2|resp3]` (or `redis+unix:///path`): one Redis
//!   server, reached through a [`ConnectionManager`] that reconnects by itself. Unless the URL names a
//!   protocol, commands use RESP3 (Redis ≥ 6), which lets the manager notice a closed connection at once
//!   instead of failing the first command after a Redis restart. Add `?protocol=resp2` for older servers.
//! - `redis+cluster://[user:password@]host:port,host:port,...[?query]`: a Redis Cluster, reached through
//!   the redis-rs async cluster connection. The listed nodes are seeds: the rest of the cluster is
//!   discovered from them. Credentials and the query apply to every seed.
//!
//! TLS (`rediss://`) is not compiled in.
//!
//! # Keys
//!
//! Every key lives under [`RedisLocatorConfig::prefix`] (default `switchyard`):
//!
//! | key | value |
//! |---|---|
//! | `{prefix}:gate:{uid}` | the gate id the player is connected to |
//! | `{prefix}:node:{pool}:{uid}` | the node id that holds the player in `pool` |
//!
//! Bindings have no TTL: they live until unbound. Every operation touches exactly one key, so keys need no
//! hash tags and spread over all slots of a cluster. Writes are Lua scripts (sent as `EVALSHA`, loaded on
//! `NOSCRIPT`) whose only key is that one key: `SET` + `PUBLISH` for a bind, compare-and-delete
//! (`GET` = owner → `DEL`) + `PUBLISH` for an unbind. The change and its event are therefore atomic: an
//! event is published if and only if the binding changed.
//!
//! # Events
//!
//! Every bind and every successful unbind publishes one message on the channel `{prefix}:events` (classic
//! `PUBLISH`, which Redis Cluster forwards to every node). The payload is UTF-8 text, fields separated by
//! one space:
//!
//! ```text
//! G+ <uid> <published_us> <gate_id>                          gate bound
//! G- <uid> <published_us> <gate_id>                          gate unbound
//! N+ <uid> <published_us> <pool_len> <pool> <node_id>        node bound
//! N- <uid> <published_us> <pool_len> <pool> <node_id>        node unbound
//! ```
//!
//! `uid` is a signed decimal, `published_us` the publisher's wall clock in microseconds since the Unix
//! epoch, `pool_len` the length of `pool` in bytes. The last field runs to the end of the message, so ids
//! and pools may contain spaces. Example: `N+ 42 1718000000123456 4 game node-7`. Messages that do not
//! parse (another version, another writer) are dropped and counted in
//! `switchyard_locator_errors_total{op="event"}`.
//!
//! Each [`RedisLocator`] keeps one subscription (a dedicated connection; for a cluster, to one seed at a
//! time) and forwards every event, its own included, to [`Locator::events`]. Events reach subscribers after
//! the pub/sub round trip, never directly. When the subscription breaks (closed connection, or no answer
//! to the `PING` sent every [`PUBSUB_PING_INTERVAL`]) it is re-established with exponential backoff from
//! 100 ms to 5 s (rotating over the seeds of a cluster); the outage is logged once at `warn` and the
//! recovery at `info`. Pub/sub is at-most-once: events published while the subscription is down are lost.
//!
//! # The `locate_gate` cache
//!
//! Pushes look up the gate of a uid each time, so answers of `locate_gate` (including "not bound") are
//! cached locally, up to [`RedisLocatorConfig::cache_capacity`] entries (0 disables the cache). The cache is
//! two generations of at most half the capacity each: entries go into the young generation; when it is
//! full it becomes the old one and the previous old generation is dropped; a hit in the old generation
//! moves the entry back into the young one. That approximates LRU with O(1) work per lookup and no miss
//! storm when the cache fills.
//!
//! An entry is removed when an event for its uid (`G+`/`G-`, from any instance) arrives, and at once when
//! this instance itself binds or unbinds the uid (read-your-writes without waiting for the event). A lookup
//! that raced with such an event does not store its (possibly stale) answer. While the subscription is
//! down the cache is neither read nor written, and it is emptied when the subscription goes down and again
//! when it is back, since events may have been missed.
//!
//! When the subscription is back after an outage, [`Locator::events`] yields
//! [`LocatorEvent::Reconnected`]: Redis may have restarted without its data (the managed Redis keeps none),
//! so gates and nodes write the bindings they hold again with `restore_gate` / `restore_node`, a
//! set-if-absent (`SET NX` + `PUBLISH`, announced only when it set) that never overwrites a newer binding.
//!
//! # Failures
//!
//! [`RedisLocator::connect`] fails, with an error that names the address, when Redis cannot be reached,
//! the subscription cannot be made, or the URL names the wrong kind of deployment: a misconfigured URL is
//! loud at startup. After that, outages are survived: every operation is bounded by
//! [`RedisLocatorConfig::timeout`] and fails with [`LocatorError::Unavailable`] (Redis unreachable, timed
//! out, cluster down, loading, failing over) or [`LocatorError::Protocol`] (Redis answered with an error or
//! something unexpected), and the connections recover by themselves when Redis is back.
//!
//! # Metrics
//!
//! Registered by [`RedisLocator::connect`]; `op` is one of `bind_gate`, `unbind_gate`, `locate_gate`,
//! `bind_node`, `unbind_node`, `locate_node`, plus `subscribe` and `event` for errors:
//!
//! - `switchyard_locator_operation_duration_seconds{op}`: Redis round trips (cache hits are not timed);
//! - `switchyard_locator_errors_total{op}`;
//! - `switchyard_locator_cache_total{result="hit|miss|bypass"}` (`bypass`: subscription down);
//! - `switchyard_locator_pubsub_connected`: 1 while the subscription is up;
//! - `switchyard_locator_pubsub_lag_seconds`: receive time minus the publisher's timestamp.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::StreamExt;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    ConnectionInfo, ErrorKind, FromRedisValue, IntoConnectionInfo, ProtocolVersion, RedisError, Script,
    ScriptInvocation, ServerErrorKind,
};
use switchyard_protocol::link::Uid;
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::locator::{Locator, LocatorError, LocatorEvent};

/// The key prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "switchyard";
/// The bound on every Redis operation when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The `locate_gate` cache size when none is configured.
pub const DEFAULT_CACHE_CAPACITY: usize = 65_536;
/// How often an idle subscription is checked with a `PING`; a half-open connection is noticed within this
/// interval plus the timeout.
pub const PUBSUB_PING_INTERVAL: Duration = Duration::from_secs(3);

/// The longest prefix accepted, in bytes.
const MAX_PREFIX_BYTES: usize = 128;
/// The longest timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Events a subscriber of [`Locator::events`] may fall behind by.
const EVENT_CAPACITY: usize = 4096;
/// Backoff between attempts to re-establish the subscription.
const RESUBSCRIBE_MIN_BACKOFF: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Invalidation counters of the cache; a miss only races with invalidations of uids in its slot.
const EPOCH_SLOTS: usize = 1024;
const URL_SCHEME_CLUSTER: &str = "redis+cluster://";

/// `SET` the binding and announce it. KEYS[1] binding; ARGV: owner, channel, event.
static BIND_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1",
    )
});

/// Set-if-absent, announced only when it set. KEYS[1] binding; ARGV: owner, channel, event.
static RESTORE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0",
    )
});

/// Compare-and-delete, announced only when it deleted. KEYS[1] binding; ARGV: owner, channel, event.
static UNBIND_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0",
    )
});

// ---------------------------------------------------------------------------------------------------------
// Configuration

/// How to reach Redis and how to use it. Build with [`RedisLocatorConfig::new`], then adjust the fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisLocatorConfig {
    /// `redis://host:port` for one server, `redis+cluster://host:port,host:port` for a Redis Cluster (see
    /// the module documentation).
    pub url: String,
    /// Prefix of every key and of the event channel: non-empty, at most 128 bytes, no whitespace, control
    /// characters or braces (a `{...}` hash tag would put every key in one cluster slot).
    pub prefix: String,
    /// Bound on every Redis operation, and on each network step of [`RedisLocator::connect`]; at most 60 s.
    pub timeout: Duration,
    /// Most entries the `locate_gate` cache holds (rounded up to an even number); 0 disables it.
    pub cache_capacity: usize,
}

impl RedisLocatorConfig {
    /// A configuration for `url` with the default prefix, timeout and cache size.
    pub fn new(url: impl Into<String>) -> Self {
        RedisLocatorConfig {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
        }
    }

    /// Checks the configuration without connecting, so that a bad one can be reported at startup.
    ///
    /// # Errors
    /// The URL does not parse or names an unsupported scheme, or the prefix or timeout is out of range.
    pub fn validate(&self) -> Result<(), RedisConfigError> {
        self.parse().map(|_| ())
    }

    /// The URL with its password, if any, replaced by `***`: the form to put in logs and error messages.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    fn parse(&self) -> Result<Target, RedisConfigError> {
        validate_prefix(&self.prefix)?;
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(RedisConfigError::Timeout(self.timeout));
        }
        Target::parse(&self.url)
    }
}

impl fmt::Debug for RedisLocatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLocatorConfig")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("cache_capacity", &self.cache_capacity)
            .finish()
    }
}

/// A [`RedisLocatorConfig`] that cannot work. The operator's fault, not Redis's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisConfigError {
    /// The URL does not parse or has an unsupported scheme. The password, if any, is redacted.
    #[error("Redis URL {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("Redis key prefix {0:?} must be 1 to 128 bytes without whitespace, control characters or braces")]
    Prefix(String),
    #[error("Redis timeout {0:?} must be more than zero and at most 60s")]
    Timeout(Duration),
}

fn validate_prefix(prefix: &str) -> Result<(), RedisConfigError> {
    let bad_char = |c: char| c.is_whitespace() || c.is_control() || c == '{' || c == '}';
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_BYTES || prefix.contains(bad_char) {
        return Err(RedisConfigError::Prefix(prefix.to_owned()));
    }
    Ok(())
}

/// The parsed URL.
#[derive(Debug, Clone)]
enum Target {
    Standalone(ConnectionInfo),
    Cluster(Vec<ConnectionInfo>),
}

impl Target {
    fn parse(url: &str) -> Result<Target, RedisConfigError> {
        let error = |reason: String| RedisConfigError::Url {
            url: redact_url(url),
            reason,
        };
        let parse_one = |one: &str| one.into_connection_info().map_err(|e| error(e.to_string()));
        if let Some(rest) = url.strip_prefix(URL_SCHEME_CLUSTER) {
            let seeds = cluster_seed_urls(rest).map_err(|reason| error(reason.to_owned()))?;
            let infos = seeds
                .iter()
                .map(|seed| parse_one(seed))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Target::Cluster(infos));
        }
        if url.starts_with("rediss://") || url.starts_with("rediss+cluster://") {
            return Err(error("TLS (rediss://) is not supported by this build".to_owned()));
        }
        if !(url.starts_with("redis://") || url.starts_with("redis+unix://") || url.starts_with("unix://")) {
            return Err(error(
                "expected redis://host:port for one server or redis+cluster://host:port,host:port for a \
                 Redis Cluster"
                    .to_owned(),
            ));
        }
        let mut info = parse_one(url)?;
        let names_protocol = redis::parse_redis_url(url)
            .is_some_and(|parsed| parsed.query_pairs().any(|(name, _)| name == "protocol"));
        if !names_protocol {
            let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
        }
        Ok(Target::Standalone(info))
    }

    /// The connections the subscriber may use, in the order it tries them. The dedicated pub/sub
    /// connection speaks RESP2.
    fn subscribe_infos(&self) -> Vec<ConnectionInfo> {
        let infos = match self {
            Target::Standalone(info) => std::slice::from_ref(info),
            Target::Cluster(seeds) => seeds.as_slice(),
        };
        infos
            .iter()
            .map(|info| {
                let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP2);
                info.clone().set_redis_settings(settings)
            })
            .collect()
    }

    /// Where Redis is, for messages: addresses only, never credentials.
    fn describe(&self) -> String {
        match self {
            Target::Standalone(info) => info.addr().to_string(),
            Target::Cluster(seeds) => {
                let addresses: Vec<String> = seeds.iter().map(|seed| seed.addr().to_string()).collect();
                format!("cluster {}", addresses.join(","))
            }
        }
    }
}

/// Splits the part of a `redis+cluster://` URL after the scheme into one `redis://` URL per seed.
fn cluster_seed_urls(rest: &str) -> Result<Vec<String>, &'static str> {
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    if tail.starts_with('/') && !matches!(tail.split('?').next(), Some("/" | "/0")) {
        return Err("Redis Cluster has only database 0; remove the path");
    }
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let seeds: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(|host| match userinfo {
            Some(userinfo) => format!("redis://{userinfo}@{host}{tail}"),
            None => format!("redis://{host}{tail}"),
        })
        .collect();
    if seeds.is_empty() {
        return Err("expected at least one host:port after redis+cluster://");
    }
    Ok(seeds)
}

/// The URL with the password, if any, replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{hosts}{tail}")
        }
        None => url.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Keys and events

#[derive(Debug)]
struct Keys {
    prefix: String,
    channel: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            channel: format!("{prefix}:events"),
        }
    }

    fn gate(&self, uid: Uid) -> String {
        format!("{}:gate:{uid}", self.prefix)
    }

    fn node(&self, uid: Uid, pool: &str) -> String {
        format!("{}:node:{pool}:{uid}", self.prefix)
    }
}

const GATE_BOUND: &str = "G+";
const GATE_UNBOUND: &str = "G-";
const NODE_BOUND: &str = "N+";
const NODE_UNBOUND: &str = "N-";

fn encode_gate_event(tag: &str, uid: Uid, published_us: u64, gate_id: &str) -> String {
    format!("{tag} {uid} {published_us} {gate_id}")
}

fn encode_node_event(tag: &str, uid: Uid, published_us: u64, pool: &str, node_id: &str) -> String {
    format!("{tag} {uid} {published_us} {} {pool} {node_id}", pool.len())
}

/// A payload on the event channel that is not an event of this format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("undecodable locator event: {0}")]
struct BadEvent(&'static str);

/// Parses an event payload into the event and its publish time (µs since the Unix epoch).
fn decode_event(payload: &[u8]) -> Result<(LocatorEvent, u64), BadEvent> {
    let text = std::str::from_utf8(payload).map_err(|_| BadEvent("not UTF-8"))?;
    let (tag, rest) = text.split_once(' ').ok_or(BadEvent("no uid"))?;
    let (uid, rest) = rest.split_once(' ').ok_or(BadEvent("no timestamp"))?;
    let uid: Uid = uid.parse().map_err(|_| BadEvent("uid is not an integer"))?;
    let (published_us, rest) = rest.split_once(' ').ok_or(BadEvent("no owner"))?;
    let published_us: u64 = published_us
        .parse()
        .map_err(|_| BadEvent("timestamp is not an integer"))?;
    let event = match tag {
        GATE_BOUND => LocatorEvent::GateBound {
            uid,
            gate_id: rest.to_owned(),
        },
        GATE_UNBOUND => LocatorEvent::GateUnbound {
            uid,
            gate_id: rest.to_owned(),
        },
        NODE_BOUND | NODE_UNBOUND => {
            let (pool_len, rest) = rest.split_once(' ').ok_or(BadEvent("no pool"))?;
            let pool_len: usize = pool_len
                .parse()
                .map_err(|_| BadEvent("pool length is not an integer"))?;
            let pool = rest.get(..pool_len).ok_or(BadEvent("pool length out of range"))?;
            let node_id = rest
                .get(pool_len..)
                .and_then(|tail| tail.strip_prefix(' '))
                .ok_or(BadEvent("no node id after the pool"))?;
            let (pool, node_id) = (pool.to_owned(), node_id.to_owned());
            if tag == NODE_BOUND {
                LocatorEvent::NodeBound { uid, pool, node_id }
            } else {
                LocatorEvent::NodeUnbound { uid, pool, node_id }
            }
        }
        _ => return Err(BadEvent("unknown kind")),
    };
    Ok((event, published_us))
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------------------------------------
// Metrics

/// What an operation, an error or a duration is about; a fixed set, so labels stay bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
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

    fn name(self) -> &'static str {
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
struct Metrics {
    durations: Family<OpLabels, Histogram>,
    errors: Family<OpLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    /// Handles into the families above, indexed by `Op as usize`, so hot paths do not hash labels.
    duration: Vec<Histogram>,
    error: Vec<Counter>,
    cache_hit: Counter,
    cache_miss: Counter,
    cache_bypass: Counter,
    pubsub_connected: Gauge,
    pubsub_lag: Histogram,
}

impl Metrics {
    fn new() -> Self {
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

    fn register(&self, registry: &mut Registry) {
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

    fn error(&self, op: Op) {
        if let Some(counter) = self.error.get(op as usize) {
            counter.inc();
        }
    }

    fn duration(&self, op: Op, elapsed: Duration) {
        if let Some(histogram) = self.duration.get(op as usize) {
            histogram.observe(elapsed.as_secs_f64());
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The locate_gate cache

/// A cached `locate_gate` answer: the gate, or `None` for "not bound".
type Cached = Option<String>;

/// Proof that no invalidation of a uid happened between a miss and the store of the answer read after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ticket {
    generation: u64,
    epoch: u64,
}

#[derive(Debug)]
enum Lookup {
    Hit(Cached),
    Miss(Ticket),
    /// The subscription is down: the cache may be stale.
    Bypass,
    Disabled,
}

#[derive(Debug)]
struct GateCache {
    /// Most entries of each generation; 0 when the cache is disabled.
    half: usize,
    state: Mutex<CacheState>,
}

#[derive(Debug)]
struct CacheState {
    /// Whether events are being received, so entries can be trusted.
    live: bool,
    /// Bumped whenever `live` changes.
    generation: u64,
    /// Invalidations per slot of uids.
    epochs: Box<[u64]>,
    young: HashMap<Uid, Cached>,
    old: HashMap<Uid, Cached>,
}

impl CacheState {
    /// Makes room in `young`, returning the dropped generation so it is freed outside the lock.
    fn rotate_if_full(&mut self, half: usize) -> Option<HashMap<Uid, Cached>> {
        if self.young.len() >= half {
            let young = std::mem::take(&mut self.young);
            Some(std::mem::replace(&mut self.old, young))
        } else {
            None
        }
    }
}

fn epoch_slot(uid: Uid) -> usize {
    // Fibonacci hashing: the top bits of uid × 2^64/φ.
    let hash = u64::from_ne_bytes(uid.to_ne_bytes()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    usize::try_from(hash >> (64 - EPOCH_SLOTS.trailing_zeros())).unwrap_or(0) % EPOCH_SLOTS
}

impl GateCache {
    fn new(capacity: usize) -> Self {
        GateCache {
            half: capacity.div_ceil(2),
            state: Mutex::new(CacheState {
                live: false,
                generation: 0,
                epochs: vec![0; EPOCH_SLOTS].into_boxed_slice(),
                young: HashMap::new(),
                old: HashMap::new(),
            }),
        }
    }

    fn lookup(&self, uid: Uid) -> Lookup {
        if self.half == 0 {
            return Lookup::Disabled;
        }
        let mut state = self.state.lock();
        if !state.live {
            return Lookup::Bypass;
        }
        if let Some(cached) = state.young.get(&uid) {
            return Lookup::Hit(cached.clone());
        }
        if let Some(cached) = state.old.remove(&uid) {
            let dropped = state.rotate_if_full(self.half);
            state.young.insert(uid, cached.clone());
            drop(state);
            drop(dropped);
            return Lookup::Hit(cached);
        }
        Lookup::Miss(Ticket {
            generation: state.generation,
            epoch: state.epochs[epoch_slot(uid)],
        })
    }

    /// Stores an answer read after a [`Lookup::Miss`], unless the uid was invalidated meanwhile.
    fn store(&self, uid: Uid, cached: Cached, ticket: Ticket) {
        let mut state = self.state.lock();
        let current = Ticket {
            generation: state.generation,
            epoch: state.epochs[epoch_slot(uid)],
        };
        if !state.live || current != ticket {
            return;
        }
        state.old.remove(&uid);
        let dropped = state.rotate_if_full(self.half);
        state.young.insert(uid, cached);
        drop(state);
        drop(dropped);
    }

    fn invalidate(&self, uid: Uid) {
        if self.half == 0 {
            return;
        }
        let mut state = self.state.lock();
        let slot = epoch_slot(uid);
        state.epochs[slot] = state.epochs[slot].wrapping_add(1);
        state.young.remove(&uid);
        state.old.remove(&uid);
    }

    /// Starts or stops serving; either way everything cached so far is forgotten.
    fn set_live(&self, live: bool) {
        let mut state = self.state.lock();
        state.live = live;
        state.generation = state.generation.wrapping_add(1);
        let young = std::mem::take(&mut state.young);
        let old = std::mem::take(&mut state.old);
        drop(state);
        drop((young, old));
    }
}

// ---------------------------------------------------------------------------------------------------------
// The locator

/// State shared by the locator and its subscriber task.
#[derive(Debug)]
struct Shared {
    cache: GateCache,
    events: broadcast::Sender<LocatorEvent>,
    metrics: Metrics,
    subscribed: AtomicBool,
    warned_bad_event: AtomicBool,
}

impl Shared {
    fn set_subscribed(&self, subscribed: bool) {
        self.subscribed.store(subscribed, Ordering::Release);
        self.metrics.pubsub_connected.set(i64::from(subscribed));
        self.cache.set_live(subscribed);
    }

    fn deliver(&self, payload: &[u8]) {
        match decode_event(payload) {
            Ok((event, published_us)) => {
                let lag_us = now_us().saturating_sub(published_us);
                self.metrics
                    .pubsub_lag
                    .observe(Duration::from_micros(lag_us).as_secs_f64());
                if let LocatorEvent::GateBound { uid, .. } | LocatorEvent::GateUnbound { uid, .. } = &event {
                    self.cache.invalidate(*uid);
                }
                // No subscriber is not an error.
                let _ = self.events.send(event);
            }
            Err(error) => {
                self.metrics.error(Op::Event);
                if self.warned_bad_event.swap(true, Ordering::Relaxed) {
                    tracing::debug!(%error, "dropped a locator event");
                } else {
                    tracing::warn!(
                        %error,
                        "dropped a locator event from Redis (another version or writer on the channel?); \
                         further ones are logged at debug level and counted"
                    );
                }
            }
        }
    }
}

/// The connection that carries commands.
#[derive(Clone)]
enum Store {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Store::Standalone(_) => "Store::Standalone",
            Store::Cluster(_) => "Store::Cluster",
        })
    }
}

/// One command, sent over either kind of connection.
enum Request<'a> {
    Get(&'a str),
    Script(ScriptInvocation<'a>),
}

impl Request<'_> {
    async fn send<T: FromRedisValue>(
        &self,
        connection: &mut impl redis::aio::ConnectionLike,
    ) -> redis::RedisResult<T> {
        match self {
            Request::Get(key) => redis::cmd("GET").arg(*key).query_async(connection).await,
            Request::Script(invocation) => invocation.invoke_async(connection).await,
        }
    }
}

impl Store {
    async fn query<T: FromRedisValue>(&self, request: &Request<'_>) -> redis::RedisResult<T> {
        match self {
            Store::Standalone(manager) => request.send(&mut manager.clone()).await,
            Store::Cluster(cluster) => request.send(&mut cluster.clone()).await,
        }
    }
}

/// The [`Locator`] on Redis. Cheap to clone; the subscription ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct RedisLocator {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    keys: Keys,
    timeout: Duration,
    /// Where Redis is, for error messages.
    target: String,
    shared: Arc<Shared>,
    _subscriber: DropGuard,
}

impl fmt::Debug for Inner {
    /// Where and how, never the cache's contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLocator")
            .field("redis", &self.target)
            .field("store", &self.store)
            .field("prefix", &self.keys.prefix)
            .field("timeout", &self.timeout)
            .field(
                "pubsub_connected",
                &self.shared.subscribed.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl RedisLocator {
    /// Connects to Redis, subscribes to the event channel, and registers the locator's metrics in
    /// `registry` (once per registry: a second locator in the same registry would duplicate them).
    ///
    /// Returns once the subscription is confirmed, so every change made after this returns is seen by
    /// [`Locator::events`]. Each network step is bounded by the configured timeout.
    ///
    /// # Errors
    /// [`LocatorError::Unavailable`] when the configuration is invalid (see
    /// [`RedisLocatorConfig::validate`]), when Redis cannot be reached or subscribed to, or when a
    /// `redis://` URL names a Redis Cluster node; [`LocatorError::Protocol`] when Redis answers the startup
    /// checks with an error.
    pub async fn connect(config: RedisLocatorConfig, registry: &mut Registry) -> Result<Self, LocatorError> {
        let target = config.parse().map_err(|error| {
            LocatorError::Unavailable(format!("invalid Redis locator configuration: {error}"))
        })?;
        let description = target.describe();
        let keys = Keys::new(&config.prefix);
        let timeout = config.timeout;

        let subscribe_infos = target.subscribe_infos();
        let (subscription, next_seed) = subscribe_any(&subscribe_infos, 0, &keys.channel, timeout)
            .await
            .map_err(|error| {
                LocatorError::Unavailable(format!(
                    "cannot subscribe to Redis pub/sub channel {} at {description}: {error}",
                    keys.channel
                ))
            })?;

        let store = match target {
            Target::Standalone(info) => connect_standalone(info, timeout, &description).await?,
            Target::Cluster(seeds) => connect_cluster(seeds, timeout, &description).await?,
        };

        let shared = Arc::new(Shared {
            cache: GateCache::new(config.cache_capacity),
            events: broadcast::Sender::new(EVENT_CAPACITY),
            metrics: Metrics::new(),
            subscribed: AtomicBool::new(false),
            warned_bad_event: AtomicBool::new(false),
        });
        shared.set_subscribed(true);
        shared.metrics.register(registry);

        let cancel = CancellationToken::new();
        let subscriber = Subscriber {
            shared: Arc::clone(&shared),
            infos: subscribe_infos,
            next_seed,
            channel: keys.channel.clone(),
            timeout,
        };
        tokio::spawn(subscriber.run(subscription, cancel.clone()));
        tracing::info!(redis = %description, prefix = %keys.prefix, "Redis locator connected");

        Ok(RedisLocator {
            inner: Arc::new(Inner {
                store,
                keys,
                timeout,
                target: description,
                shared,
                _subscriber: cancel.drop_guard(),
            }),
        })
    }

    /// Whether the event subscription is up. While it is down, `locate_gate` skips the cache and
    /// [`Locator::events`] is silent.
    pub fn pubsub_connected(&self) -> bool {
        self.inner.shared.subscribed.load(Ordering::Acquire)
    }

    /// Sends `request` with the timeout, recording duration and errors.
    async fn run<T: FromRedisValue>(&self, op: Op, request: Request<'_>) -> Result<T, LocatorError> {
        let inner = &*self.inner;
        let started = Instant::now();
        let attempts = async {
            match inner.store.query(&request).await {
                Err(error) if worth_retrying(op, &error) => inner.store.query(&request).await,
                result => result,
            }
        };
        let result = tokio::time::timeout(inner.timeout, attempts).await;
        inner.shared.metrics.duration(op, started.elapsed());
        let error = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => redis_error(&inner.target, op, &error),
            Err(_) => LocatorError::Unavailable(format!(
                "Redis at {} did not answer {op} within {:?}",
                inner.target, inner.timeout
            )),
        };
        inner.shared.metrics.error(op);
        Err(error)
    }

    async fn bind(&self, op: Op, key: &str, owner: &str, event: &str) -> Result<(), LocatorError> {
        let mut invocation = BIND_SCRIPT.prepare_invoke();
        invocation
            .key(key)
            .arg(owner)
            .arg(&self.inner.keys.channel)
            .arg(event);
        self.run::<i64>(op, Request::Script(invocation)).await.map(|_| ())
    }

    /// A restore is counted as the bind it is in the metrics.
    async fn restore(&self, op: Op, key: &str, owner: &str, event: &str) -> Result<bool, LocatorError> {
        let mut invocation = RESTORE_SCRIPT.prepare_invoke();
        invocation
            .key(key)
            .arg(owner)
            .arg(&self.inner.keys.channel)
            .arg(event);
        self.run::<i64>(op, Request::Script(invocation))
            .await
            .map(|bound| bound == 1)
    }

    async fn unbind(&self, op: Op, key: &str, owner: &str, event: &str) -> Result<bool, LocatorError> {
        let mut invocation = UNBIND_SCRIPT.prepare_invoke();
        invocation
            .key(key)
            .arg(owner)
            .arg(&self.inner.keys.channel)
            .arg(event);
        self.run::<i64>(op, Request::Script(invocation))
            .await
            .map(|removed| removed == 1)
    }
}

#[async_trait]
impl Locator for RedisLocator {
    async fn bind_gate(&self, uid: Uid, gate_id: &str) -> Result<(), LocatorError> {
        let event = encode_gate_event(GATE_BOUND, uid, now_us(), gate_id);
        let result = self
            .bind(Op::BindGate, &self.inner.keys.gate(uid), gate_id, &event)
            .await;
        // Even after an error: the write may have been applied.
        self.inner.shared.cache.invalidate(uid);
        result
    }

    async fn unbind_gate(&self, uid: Uid, gate_id: &str) -> Result<bool, LocatorError> {
        let event = encode_gate_event(GATE_UNBOUND, uid, now_us(), gate_id);
        let result = self
            .unbind(Op::UnbindGate, &self.inner.keys.gate(uid), gate_id, &event)
            .await;
        self.inner.shared.cache.invalidate(uid);
        result
    }

    async fn locate_gate(&self, uid: Uid) -> Result<Option<String>, LocatorError> {
        let shared = &self.inner.shared;
        let ticket = match shared.cache.lookup(uid) {
            Lookup::Hit(cached) => {
                shared.metrics.cache_hit.inc();
                return Ok(cached);
            }
            Lookup::Miss(ticket) => {
                shared.metrics.cache_miss.inc();
                Some(ticket)
            }
            Lookup::Bypass => {
                shared.metrics.cache_bypass.inc();
                None
            }
            Lookup::Disabled => None,
        };
        let key = self.inner.keys.gate(uid);
        let gate: Option<String> = self.run(Op::LocateGate, Request::Get(&key)).await?;
        if let Some(ticket) = ticket {
            shared.cache.store(uid, gate.clone(), ticket);
        }
        Ok(gate)
    }

    async fn bind_node(&self, uid: Uid, pool: &str, node_id: &str) -> Result<(), LocatorError> {
        let event = encode_node_event(NODE_BOUND, uid, now_us(), pool, node_id);
        self.bind(Op::BindNode, &self.inner.keys.node(uid, pool), node_id, &event)
            .await
    }

    async fn unbind_node(&self, uid: Uid, pool: &str, node_id: &str) -> Result<bool, LocatorError> {
        let event = encode_node_event(NODE_UNBOUND, uid, now_us(), pool, node_id);
        self.unbind(Op::UnbindNode, &self.inner.keys.node(uid, pool), node_id, &event)
            .await
    }

    async fn locate_node(&self, uid: Uid, pool: &str) -> Result<Option<String>, LocatorError> {
        let key = self.inner.keys.node(uid, pool);
        self.run(Op::LocateNode, Request::Get(&key)).await
    }

    async fn restore_gate(&self, uid: Uid, gate_id: &str) -> Result<bool, LocatorError> {
        let event = encode_gate_event(GATE_BOUND, uid, now_us(), gate_id);
        let result = self
            .restore(Op::BindGate, &self.inner.keys.gate(uid), gate_id, &event)
            .await;
        self.inner.shared.cache.invalidate(uid);
        result
    }

    async fn restore_node(&self, uid: Uid, pool: &str, node_id: &str) -> Result<bool, LocatorError> {
        let event = encode_node_event(NODE_BOUND, uid, now_us(), pool, node_id);
        self.restore(Op::BindNode, &self.inner.keys.node(uid, pool), node_id, &event)
            .await
    }

    fn events(&self) -> broadcast::Receiver<LocatorEvent> {
        self.inner.shared.events.subscribe()
    }
}

/// Whether a failed request is retried once, within the same timeout. After an outage the connection
/// manager answers the first request with the error that ended its last reconnect attempt, and only then
/// reconnects: a refused connection means nothing was sent, so any operation may be retried. A dropped
/// connection may have executed a write, so only reads are retried then.
fn worth_retrying(op: Op, error: &RedisError) -> bool {
    let read = matches!(op, Op::LocateGate | Op::LocateNode);
    error.is_connection_refusal() || (read && (error.is_io_error() || error.is_connection_dropped()))
}

/// Whether an error means Redis could not serve (rather than served an error).
fn is_unavailable(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::Moved
                        | ServerErrorKind::Ask
                )
        )
        || error.code() == Some("BUSY")
}

fn redis_error(target: &str, op: Op, error: &RedisError) -> LocatorError {
    if is_unavailable(error) {
        LocatorError::Unavailable(format!("Redis at {target} failed {op}: {error}"))
    } else {
        LocatorError::Protocol(format!("Redis at {target} answered {op} with an error: {error}"))
    }
}

async fn connect_standalone(
    info: ConnectionInfo,
    timeout: Duration,
    target: &str,
) -> Result<Store, LocatorError> {
    let startup_error = |step: &str, error: &RedisError| {
        let hint = if error.kind() == ErrorKind::RESP3NotSupported {
            " (RESP3 needs Redis 6 or later; add ?protocol=resp2 to the URL for older servers)"
        } else {
            ""
        };
        let message = format!("Redis at {target} failed {step} at startup: {error}{hint}");
        if is_unavailable(error) {
            LocatorError::Unavailable(message)
        } else {
            LocatorError::Protocol(message)
        }
    };
    let client = redis::Client::open(info).map_err(|error| startup_error("to configure", &error))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    let manager = ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|error| startup_error("to configure", &error))?;

    // A cluster node behind a redis:// URL would answer MOVED to most keys: refuse it now.
    let mut connection = manager.clone();
    let mut info_cmd = redis::cmd("INFO");
    info_cmd.arg("cluster");
    let info_cluster = info_cmd.query_async::<String>(&mut connection);
    match tokio::time::timeout(timeout, info_cluster).await {
        Err(_) => {
            return Err(LocatorError::Unavailable(format!(
                "Redis at {target} did not answer within {timeout:?} at startup"
            )));
        }
        Ok(Ok(text)) if text.contains("cluster_enabled:1") => {
            return Err(LocatorError::Unavailable(format!(
                "Redis at {target} is a Redis Cluster node: use a \
                 redis+cluster://host:port,host:port URL"
            )));
        }
        Ok(Ok(_)) => {}
        Ok(Err(error)) if is_unavailable(&error) => return Err(startup_error("INFO", &error)),
        // INFO may be renamed or forbidden: PING is enough.
        Ok(Err(_)) => {
            let ping_cmd = redis::cmd("PING");
            let ping = ping_cmd.query_async::<String>(&mut connection);
            match tokio::time::timeout(timeout, ping).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(startup_error("PING", &error)),
                Err(_) => {
                    return Err(LocatorError::Unavailable(format!(
                        "Redis at {target} did not answer PING within {timeout:?} at startup"
                    )));
                }
            }
        }
    }
    Ok(Store::Standalone(manager))
}

async fn connect_cluster(
    seeds: Vec<ConnectionInfo>,
    timeout: Duration,
    target: &str,
) -> Result<Store, LocatorError> {
    let startup_error = |error: &RedisError| {
        let message = format!("Redis at {target} failed to connect to the cluster at startup: {error}");
        if is_unavailable(error) {
            LocatorError::Unavailable(message)
        } else {
            LocatorError::Protocol(message)
        }
    };
    let client = ClusterClientBuilder::new(seeds)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(2)
        .min_retry_wait(50)
        .max_retry_wait(500)
        .build()
        .map_err(|error| startup_error(&error))?;
    match tokio::time::timeout(timeout, client.get_async_connection()).await {
        Ok(Ok(connection)) => Ok(Store::Cluster(connection)),
        Ok(Err(error)) => Err(startup_error(&error)),
        Err(_) => Err(LocatorError::Unavailable(format!(
            "Redis at {target} did not complete the cluster connection within {timeout:?} at startup"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------------------
// The subscriber

/// A live subscription: the sink sends `PING`s, the stream yields messages.
type Subscription = (PubSubSink, PubSubStream);

/// Subscribes through the first of `infos` (starting at `start`, wrapping) that works. Returns the
/// subscription and the index to start from next time; the error names every failed attempt.
async fn subscribe_any(
    infos: &[ConnectionInfo],
    start: usize,
    channel: &str,
    timeout: Duration,
) -> Result<(Subscription, usize), String> {
    let mut failures = Vec::new();
    for offset in 0..infos.len() {
        let index = (start + offset) % infos.len();
        let Some(info) = infos.get(index) else { continue };
        match subscribe_one(info, channel, timeout).await {
            Ok(subscription) => return Ok((subscription, index)),
            Err(error) if infos.len() == 1 => return Err(error),
            Err(error) => failures.push(format!("{}: {error}", info.addr())),
        }
    }
    Err(failures.join("; "))
}

async fn subscribe_one(
    info: &ConnectionInfo,
    channel: &str,
    timeout: Duration,
) -> Result<Subscription, String> {
    let client = redis::Client::open(info.clone()).map_err(|error| error.to_string())?;
    let pubsub = match tokio::time::timeout(timeout, client.get_async_pubsub()).await {
        Ok(result) => result.map_err(|error| error.to_string())?,
        Err(_) => return Err(format!("no connection within {timeout:?}")),
    };
    let (mut sink, stream) = pubsub.split();
    match tokio::time::timeout(timeout, sink.subscribe(channel)).await {
        Ok(result) => result.map_err(|error| error.to_string())?,
        Err(_) => return Err(format!("SUBSCRIBE not confirmed within {timeout:?}")),
    }
    Ok((sink, stream))
}

/// Why a subscription ended.
enum Ended {
    Cancelled,
    Lost(String),
}

/// The task that owns the subscription: forwards events, notices outages, resubscribes.
struct Subscriber {
    shared: Arc<Shared>,
    infos: Vec<ConnectionInfo>,
    next_seed: usize,
    channel: String,
    timeout: Duration,
}

impl Subscriber {
    async fn run(mut self, first: Subscription, cancel: CancellationToken) {
        let mut subscription = first;
        loop {
            let reason = match self.pump(&mut subscription, &cancel).await {
                Ended::Cancelled => return,
                Ended::Lost(reason) => reason,
            };
            self.shared.set_subscribed(false);
            let address = self.address();
            tracing::warn!(
                redis = %address,
                %reason,
                "lost the Redis locator subscription; locate_gate skips its cache and locator events are \
                 missed until it is back"
            );
            let down_since = Instant::now();
            // Try another seed first: this one just failed.
            self.next_seed += 1;
            match self.resubscribe(&cancel).await {
                Some(next) => subscription = next,
                None => return,
            }
            self.shared.set_subscribed(true);
            tracing::info!(
                redis = %self.address(),
                outage = ?down_since.elapsed(),
                "Redis locator subscription is back; bindings are restored"
            );
            // Redis may have restarted empty: whoever holds bindings writes them again.
            let _ = self.shared.events.send(LocatorEvent::Reconnected);
        }
    }

    fn address(&self) -> String {
        self.infos
            .get(self.next_seed % self.infos.len().max(1))
            .map_or_else(String::new, |info| info.addr().to_string())
    }

    /// Forwards messages until the subscription breaks or the locator is dropped.
    async fn pump(&self, (sink, stream): &mut Subscription, cancel: &CancellationToken) -> Ended {
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + PUBSUB_PING_INTERVAL,
            PUBSUB_PING_INTERVAL,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ended::Cancelled,
                message = stream.next() => match message {
                    Some(message) => self.shared.deliver(message.get_payload_bytes()),
                    None => return Ended::Lost("connection closed".to_owned()),
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return Ended::Lost(format!("PING failed: {error}")),
                        Err(_) => {
                            return Ended::Lost(format!("no answer to PING within {:?}", self.timeout));
                        }
                    }
                }
            }
        }
    }

    /// Tries until subscribed again (or cancelled), with exponential backoff, one seed per attempt.
    async fn resubscribe(&mut self, cancel: &CancellationToken) -> Option<Subscription> {
        let mut backoff = RESUBSCRIBE_MIN_BACKOFF;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            let index = self.next_seed % self.infos.len().max(1);
            let info = self.infos.get(index)?;
            let attempt = tokio::select! {
                () = cancel.cancelled() => return None,
                attempt = subscribe_one(info, &self.channel, self.timeout) => attempt,
            };
            match attempt {
                Ok(subscription) => {
                    self.next_seed = index;
                    return Some(subscription);
                }
                Err(error) => {
                    self.shared.metrics.error(Op::Subscribe);
                    tracing::debug!(redis = %info.addr(), %error, ?backoff, "Redis locator resubscribe failed");
                    self.next_seed = index + 1;
                    backoff = (backoff * 2).min(RESUBSCRIBE_MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let cases = [
            (
                encode_gate_event(GATE_BOUND, 42, 7, "gate-1"),
                LocatorEvent::GateBound {
                    uid: 42,
                    gate_id: "gate-1".into(),
                },
            ),
            (
                encode_gate_event(GATE_UNBOUND, -3, 7, "gate with spaces"),
                LocatorEvent::GateUnbound {
                    uid: -3,
                    gate_id: "gate with spaces".into(),
                },
            ),
            (
                encode_node_event(NODE_BOUND, i64::MAX, 7, "game", "node-7"),
                LocatorEvent::NodeBound {
                    uid: i64::MAX,
                    pool: "game".into(),
                    node_id: "node-7".into(),
                },
            ),
            (
                encode_node_event(NODE_UNBOUND, 1, 7, "pool é 2", " n 1 "),
                LocatorEvent::NodeUnbound {
                    uid: 1,
                    pool: "pool é 2".into(),
                    node_id: " n 1 ".into(),
                },
            ),
            (
                encode_gate_event(GATE_BOUND, 5, 7, ""),
                LocatorEvent::GateBound {
                    uid: 5,
                    gate_id: String::new(),
                },
            ),
        ];
        for (payload, event) in cases {
            assert_eq!(decode_event(payload.as_bytes()), Ok((event, 7)), "{payload:?}");
        }
        assert_eq!(
            encode_node_event(NODE_BOUND, 42, 1_718_000_000_123_456, "game", "node-7"),
            "N+ 42 1718000000123456 4 game node-7"
        );
    }

    #[test]
    fn garbage_events_are_rejected() {
        for payload in [
            &b""[..],
            b"G+",
            b"G+ 1",
            b"G+ 1 2",
            b"G+ x 2 gate",
            b"G+ 1 -2 gate",
            b"X+ 1 2 gate",
            b"N+ 1 2 game node",
            b"N+ 1 2 9 game node",
            b"N+ 1 2 4 gamenode",
            b"N+ 1 2 2 \xc3\xa9x",
            b"\xff\xfe",
        ] {
            assert!(decode_event(payload).is_err(), "{payload:?}");
        }
        // A pool length that splits a UTF-8 character.
        assert!(decode_event("N+ 1 2 1 é n".as_bytes()).is_err());
    }

    #[test]
    fn keys_are_prefixed() {
        let keys = Keys::new("sy");
        assert_eq!(keys.gate(-5), "sy:gate:-5");
        assert_eq!(keys.node(9, "game"), "sy:node:game:9");
        assert_eq!(keys.channel, "sy:events");
    }

    #[test]
    fn urls() {
        let Ok(Target::Standalone(info)) = Target::parse("redis://127.0.0.1:6390/2") else {
            panic!("standalone URL");
        };
        assert_eq!(info.addr().to_string(), "127.0.0.1:6390");
        assert_eq!(info.redis_settings().db(), 2);
        assert_eq!(info.redis_settings().protocol(), ProtocolVersion::RESP3);
        let Ok(Target::Standalone(info)) = Target::parse("redis://h:1/?protocol=resp2") else {
            panic!("explicit protocol");
        };
        assert_eq!(info.redis_settings().protocol(), ProtocolVersion::RESP2);

        let Ok(Target::Cluster(seeds)) = Target::parse("redis+cluster://u:secret@a:7000,b:7001, c:7002")
        else {
            panic!("cluster URL");
        };
        let addresses: Vec<String> = seeds.iter().map(|seed| seed.addr().to_string()).collect();
        assert_eq!(addresses, ["a:7000", "b:7001", "c:7002"]);
        assert!(
            seeds
                .iter()
                .all(|seed| seed.redis_settings().password() == Some("secret"))
        );
        assert_eq!(
            Target::parse("redis+cluster://a:7000,b:7001")
                .map(|target| target.describe())
                .ok(),
            Some("cluster a:7000,b:7001".to_owned())
        );

        for bad in [
            "redis+cluster://",
            "redis+cluster://a:1/3",
            "http://a:1",
            "rediss://a:1",
            "a:1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        let Err(error) = Target::parse("redis+cluster://u:secret@") else {
            panic!("no hosts");
        };
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        let mut config = RedisLocatorConfig::new("redis+cluster://u:pw@a:1,b:2");
        config.prefix = "p".into();
        assert!(!format!("{config:?}").contains("pw"));
        assert_eq!(config.redacted_url(), "redis+cluster://u:***@a:1,b:2");
    }

    #[test]
    fn config_is_validated() {
        assert!(RedisLocatorConfig::new("redis://h:1").validate().is_ok());
        for prefix in ["", "a b", "{tag}", "x\n", &"p".repeat(129)] {
            let mut config = RedisLocatorConfig::new("redis://h:1");
            config.prefix = prefix.to_owned();
            assert_eq!(
                config.validate(),
                Err(RedisConfigError::Prefix(prefix.to_owned()))
            );
        }
        for timeout in [Duration::ZERO, Duration::from_secs(61)] {
            let mut config = RedisLocatorConfig::new("redis://h:1");
            config.timeout = timeout;
            assert_eq!(config.validate(), Err(RedisConfigError::Timeout(timeout)));
        }
    }

    fn miss(cache: &GateCache, uid: Uid) -> Ticket {
        match cache.lookup(uid) {
            Lookup::Miss(ticket) => ticket,
            other => panic!("expected a miss, got {other:?}"),
        }
    }

    #[test]
    fn cache_serves_only_while_live() {
        let cache = GateCache::new(8);
        assert!(matches!(cache.lookup(1), Lookup::Bypass));
        cache.set_live(true);
        let ticket = miss(&cache, 1);
        cache.store(1, Some("g1".into()), ticket);
        assert!(matches!(cache.lookup(1), Lookup::Hit(Some(ref gate)) if gate == "g1"));
        let ticket = miss(&cache, 2);
        cache.store(2, None, ticket);
        assert!(matches!(cache.lookup(2), Lookup::Hit(None)));

        cache.set_live(false);
        assert!(matches!(cache.lookup(1), Lookup::Bypass));
        cache.set_live(true);
        miss(&cache, 1);
        assert!(matches!(GateCache::new(0).lookup(1), Lookup::Disabled));
    }

    #[test]
    fn a_lookup_that_raced_an_invalidation_is_not_stored() {
        let cache = GateCache::new(8);
        cache.set_live(true);
        let ticket = miss(&cache, 1);
        cache.invalidate(1);
        cache.store(1, Some("stale".into()), ticket);
        miss(&cache, 1);

        // An outage in between also voids the ticket.
        let ticket = miss(&cache, 1);
        cache.set_live(false);
        cache.set_live(true);
        cache.store(1, Some("stale".into()), ticket);
        miss(&cache, 1);

        // Invalidating another slot does not.
        let other = (2..).find(|uid| epoch_slot(*uid) != epoch_slot(1)).unwrap_or(2);
        let ticket = miss(&cache, 1);
        cache.invalidate(other);
        cache.store(1, Some("g".into()), ticket);
        assert!(matches!(cache.lookup(1), Lookup::Hit(Some(_))));
        cache.invalidate(1);
        miss(&cache, 1);
    }

    #[test]
    fn cache_is_bounded_and_keeps_recent_entries() {
        let cache = GateCache::new(100);
        cache.set_live(true);
        for uid in 0..1000 {
            let ticket = miss(&cache, uid);
            cache.store(uid, Some(format!("g{uid}")), ticket);
            // uid 0 is looked up all the time, so it stays.
            assert!(
                matches!(cache.lookup(0), Lookup::Hit(_)),
                "uid 0 evicted at {uid}"
            );
            let state = cache.state.lock();
            assert!(state.young.len() + state.old.len() <= 100);
        }
        assert!(matches!(cache.lookup(999), Lookup::Hit(_)));
        assert!(matches!(cache.lookup(500), Lookup::Miss(_)));
    }

    #[test]
    fn epoch_slots_are_in_range_and_spread() {
        let slots: std::collections::HashSet<usize> = (0..10_000).map(epoch_slot).collect();
        assert!(slots.iter().all(|slot| *slot < EPOCH_SLOTS));
        assert!(slots.len() > EPOCH_SLOTS / 2);
        assert!(epoch_slot(i64::MIN) < EPOCH_SLOTS && epoch_slot(-1) < EPOCH_SLOTS);
    }
}

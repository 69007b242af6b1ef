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

mod cache;
mod config;
mod connect;
mod metrics;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::registry::Registry;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, Script, ScriptInvocation};
use switchyard_protocol::link::Uid;
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

use self::cache::{GateCache, Lookup};
use self::config::Target;
pub use self::config::{RedisConfigError, RedisLocatorConfig};
use self::connect::{
    Subscriber, connect_cluster, connect_standalone, redis_error, subscribe_any, worth_retrying,
};
use self::metrics::{Metrics, Op};
use crate::locator::{Locator, LocatorError, LocatorEvent};
use crate::locator_events::{
    GATE_BOUND, GATE_UNBOUND, Keys, NODE_BOUND, NODE_UNBOUND, decode_event, encode_gate_event,
    encode_node_event, now_us,
};

/// The key prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "switchyard";
/// The bound on every Redis operation when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The `locate_gate` cache size when none is configured.
pub const DEFAULT_CACHE_CAPACITY: usize = 65_536;
/// How often an idle subscription is checked with a `PING`; a half-open connection is noticed within this
/// interval plus the timeout.
pub const PUBSUB_PING_INTERVAL: Duration = Duration::from_secs(3);

/// The longest timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Events a subscriber of [`Locator::events`] may fall behind by.
const EVENT_CAPACITY: usize = 4096;
/// Backoff between attempts to re-establish the subscription.
const RESUBSCRIBE_MIN_BACKOFF: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Invalidation counters of the cache; a miss only races with invalidations of uids in its slot.
const EPOCH_SLOTS: usize = 1024;

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

        let endpoints = target.subscribe_endpoints();
        let (subscription, next_seed) = subscribe_any(&endpoints, 0, &keys.channel, timeout)
            .await
            .map_err(|error| {
                let message = format!(
                    "cannot subscribe to Redis pub/sub channel {} at {description}: {}",
                    keys.channel, error.message
                );
                if error.refused {
                    LocatorError::Refused(message)
                } else {
                    LocatorError::Unavailable(message)
                }
            })?;

        let store = match target {
            Target::Standalone(endpoint) => connect_standalone(endpoint, timeout, &description).await?,
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
            endpoints,
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

#[cfg(test)]
mod tests;

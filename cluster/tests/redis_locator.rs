//! The Redis locator against real `redis-server` processes: one server, a server killed and restarted,
//! and a Redis Cluster of three masters. Run `scripts/redis.sh` first if `redis-server` is missing.

#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use support::{RedisCluster, RedisServer};
use switchyard_cluster::locator::{DEFAULT_POOL, Locator, LocatorError, LocatorEvent};
use switchyard_cluster::redis_locator::{RedisLocator, RedisLocatorConfig};
use switchyard_testkit::{eventually_true, free_port};
use tokio::sync::broadcast;

/// How long an event may take to arrive; far more than it needs.
const EVENT_DEADLINE: Duration = Duration::from_secs(5);

async fn connect(url: &str) -> (RedisLocator, Registry) {
    connect_with(RedisLocatorConfig::new(url)).await
}

async fn connect_with(config: RedisLocatorConfig) -> (RedisLocator, Registry) {
    let mut registry = Registry::default();
    let locator = RedisLocator::connect(config, &mut registry)
        .await
        .unwrap_or_else(|error| panic!("connect: {error}"));
    (locator, registry)
}

fn metrics(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

/// The value of one sample line of the text exposition, e.g. `switchyard_locator_cache_total{result="hit"}`.
fn sample(registry: &Registry, name: &str) -> f64 {
    let text = metrics(registry);
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

async fn next_event(events: &mut broadcast::Receiver<LocatorEvent>) -> LocatorEvent {
    match tokio::time::timeout(EVENT_DEADLINE, events.recv()).await {
        Ok(Ok(event)) => event,
        Ok(Err(error)) => panic!("event channel: {error}"),
        Err(_) => panic!("no locator event within {EVENT_DEADLINE:?}"),
    }
}

fn gate_bound(uid: i64, gate_id: &str) -> LocatorEvent {
    LocatorEvent::GateBound {
        uid,
        gate_id: gate_id.into(),
    }
}

fn gate_unbound(uid: i64, gate_id: &str) -> LocatorEvent {
    LocatorEvent::GateUnbound {
        uid,
        gate_id: gate_id.into(),
    }
}

fn node_bound(uid: i64, pool: &str, node_id: &str) -> LocatorEvent {
    LocatorEvent::NodeBound {
        uid,
        pool: pool.into(),
        node_id: node_id.into(),
    }
}

fn node_unbound(uid: i64, pool: &str, node_id: &str) -> LocatorEvent {
    LocatorEvent::NodeUnbound {
        uid,
        pool: pool.into(),
        node_id: node_id.into(),
    }
}

#[tokio::test]
async fn bind_locate_unbind_gate_and_node() {
    let redis = RedisServer::start().await;
    let (locator, _registry) = connect(&redis.url()).await;

    assert_eq!(locator.locate_gate(7).await.unwrap(), None);
    locator.bind_gate(7, "gate-a").await.unwrap();
    assert_eq!(locator.locate_gate(7).await.unwrap().as_deref(), Some("gate-a"));
    locator.bind_gate(7, "gate-b").await.unwrap();
    assert_eq!(locator.locate_gate(7).await.unwrap().as_deref(), Some("gate-b"));
    assert!(locator.unbind_gate(7, "gate-b").await.unwrap());
    assert_eq!(locator.locate_gate(7).await.unwrap(), None);
    assert!(
        !locator.unbind_gate(7, "gate-b").await.unwrap(),
        "nothing left to unbind"
    );

    assert_eq!(locator.locate_node(7, DEFAULT_POOL).await.unwrap(), None);
    locator.bind_node(7, DEFAULT_POOL, "node-1").await.unwrap();
    locator.bind_node(7, "lobby", "node-9").await.unwrap();
    assert_eq!(
        locator.locate_node(7, DEFAULT_POOL).await.unwrap().as_deref(),
        Some("node-1")
    );
    assert_eq!(
        locator.locate_node(7, "lobby").await.unwrap().as_deref(),
        Some("node-9")
    );
    assert_eq!(locator.locate_node(8, DEFAULT_POOL).await.unwrap(), None);
    assert!(locator.unbind_node(7, DEFAULT_POOL, "node-1").await.unwrap());
    assert_eq!(locator.locate_node(7, DEFAULT_POOL).await.unwrap(), None);
    assert_eq!(
        locator.locate_node(7, "lobby").await.unwrap().as_deref(),
        Some("node-9")
    );

    // The documented keys, without a TTL.
    assert_eq!(
        redis.command("GET switchyard:node:lobby:7").await,
        "$6\r\nnode-9\r\n"
    );
    assert_eq!(redis.command("TTL switchyard:node:lobby:7").await, ":-1\r\n");
    locator.bind_gate(-12, "gate-c").await.unwrap();
    assert_eq!(redis.command("GET switchyard:gate:-12").await, "$6\r\ngate-c\r\n");
    assert_eq!(redis.command("TTL switchyard:gate:-12").await, ":-1\r\n");
}

#[tokio::test]
async fn keys_and_channel_use_the_configured_prefix() {
    let redis = RedisServer::start().await;
    let mut config = RedisLocatorConfig::new(redis.url());
    config.prefix = "game-eu".into();
    let (custom, _registry) = connect_with(config).await;
    let (default, _registry) = connect(&redis.url()).await;
    let mut default_events = default.events();
    let mut custom_events = custom.events();

    custom.bind_gate(1, "gate-x").await.unwrap();
    assert_eq!(redis.command("GET game-eu:gate:1").await, "$6\r\ngate-x\r\n");
    assert_eq!(
        default.locate_gate(1).await.unwrap(),
        None,
        "another prefix, another keyspace"
    );
    assert_eq!(next_event(&mut custom_events).await, gate_bound(1, "gate-x"));
    default.bind_gate(2, "gate-y").await.unwrap();
    assert_eq!(
        next_event(&mut default_events).await,
        gate_bound(2, "gate-y"),
        "the default-prefix instance must not see game-eu events"
    );
}

#[tokio::test]
async fn unbind_refuses_a_stale_owner() {
    let redis = RedisServer::start().await;
    let (locator, _registry) = connect(&redis.url()).await;
    let mut events = locator.events();

    locator.bind_gate(1, "gate-old").await.unwrap();
    locator.bind_gate(1, "gate-new").await.unwrap();
    assert!(
        !locator.unbind_gate(1, "gate-old").await.unwrap(),
        "a late unbind from the old gate must not remove the new binding"
    );
    assert_eq!(locator.locate_gate(1).await.unwrap().as_deref(), Some("gate-new"));

    locator.bind_node(1, DEFAULT_POOL, "node-old").await.unwrap();
    locator.bind_node(1, DEFAULT_POOL, "node-new").await.unwrap();
    assert!(!locator.unbind_node(1, DEFAULT_POOL, "node-old").await.unwrap());
    assert!(!locator.unbind_node(1, "other-pool", "node-new").await.unwrap());
    assert_eq!(
        locator.locate_node(1, DEFAULT_POOL).await.unwrap().as_deref(),
        Some("node-new")
    );
    assert!(locator.unbind_node(1, DEFAULT_POOL, "node-new").await.unwrap());

    // Refused unbinds publish nothing.
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next_event(&mut events).await);
    }
    assert_eq!(
        seen,
        vec![
            gate_bound(1, "gate-old"),
            gate_bound(1, "gate-new"),
            node_bound(1, DEFAULT_POOL, "node-old"),
            node_bound(1, DEFAULT_POOL, "node-new"),
            node_unbound(1, DEFAULT_POOL, "node-new"),
        ]
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), events.recv())
            .await
            .is_err(),
        "no further event"
    );
}

#[tokio::test]
async fn instances_see_each_others_events_and_their_own() {
    let redis = RedisServer::start().await;
    let (a, _ra) = connect(&redis.url()).await;
    let (b, _rb) = connect(&redis.url()).await;
    let (mut a_events, mut b_events) = (a.events(), b.events());

    a.bind_gate(5, "gate-a").await.unwrap();
    b.bind_node(5, "pool with spaces", "node b").await.unwrap();
    assert!(a.unbind_gate(5, "gate-a").await.unwrap());
    b.unbind_node(5, "pool with spaces", "node b").await.unwrap();

    let expected = vec![
        gate_bound(5, "gate-a"),
        node_bound(5, "pool with spaces", "node b"),
        gate_unbound(5, "gate-a"),
        node_unbound(5, "pool with spaces", "node b"),
    ];
    for events in [&mut a_events, &mut b_events] {
        let mut seen = Vec::new();
        for _ in 0..expected.len() {
            seen.push(next_event(events).await);
        }
        assert_eq!(seen, expected);
    }
}

#[tokio::test]
async fn events_use_the_documented_wire_format() {
    let redis = RedisServer::start().await;
    let (locator, registry) = connect(&redis.url()).await;
    let mut events = locator.events();

    // Published by hand, as another implementation would.
    redis
        .command("PUBLISH switchyard:events \"N+ 42 1 4 game node-7\"")
        .await;
    assert_eq!(next_event(&mut events).await, node_bound(42, "game", "node-7"));
    redis
        .command("PUBLISH switchyard:events \"G- -1 1 gate 2\"")
        .await;
    assert_eq!(next_event(&mut events).await, gate_unbound(-1, "gate 2"));

    // Garbage is dropped and counted; later events still flow.
    redis.command("PUBLISH switchyard:events \"hello world\"").await;
    redis.command("PUBLISH switchyard:events \"G+ 3 1 gate-3\"").await;
    assert_eq!(next_event(&mut events).await, gate_bound(3, "gate-3"));
    assert_eq!(
        sample(&registry, r#"switchyard_locator_errors_total{op="event"}"#),
        1.0
    );
}

#[tokio::test]
async fn cache_is_invalidated_by_another_instances_events() {
    let redis = RedisServer::start().await;
    let (a, a_registry) = connect(&redis.url()).await;
    let (b, _rb) = connect(&redis.url()).await;
    let mut a_events = a.events();
    let hits = r#"switchyard_locator_cache_total{result="hit"}"#;
    let misses = r#"switchyard_locator_cache_total{result="miss"}"#;

    b.bind_gate(9, "gate-1").await.unwrap();
    assert_eq!(next_event(&mut a_events).await, gate_bound(9, "gate-1"));
    assert_eq!(a.locate_gate(9).await.unwrap().as_deref(), Some("gate-1"));
    assert_eq!(a.locate_gate(9).await.unwrap().as_deref(), Some("gate-1"));
    assert_eq!(sample(&a_registry, misses), 1.0);
    assert_eq!(
        sample(&a_registry, hits),
        1.0,
        "the second lookup is served by A's cache"
    );

    // Without the event, A's cache would answer gate-1 for ever.
    b.bind_gate(9, "gate-2").await.unwrap();
    let took = eventually_true("A sees B's rebind", Duration::from_secs(2), || async {
        a.locate_gate(9).await.unwrap().as_deref() == Some("gate-2")
    })
    .await;
    assert_eq!(next_event(&mut a_events).await, gate_bound(9, "gate-2"));
    eprintln!("rebind visible through A's cache after {took:?}");
    assert_eq!(a.locate_gate(9).await.unwrap().as_deref(), Some("gate-2"));

    // Negative answers are cached and invalidated the same way.
    assert!(b.unbind_gate(9, "gate-2").await.unwrap());
    eventually_true("A sees B's unbind", Duration::from_secs(2), || async {
        a.locate_gate(9).await.unwrap().is_none()
    })
    .await;
    let before = sample(&a_registry, hits);
    assert_eq!(a.locate_gate(9).await.unwrap(), None);
    assert_eq!(sample(&a_registry, hits), before + 1.0);
    b.bind_gate(9, "gate-3").await.unwrap();
    eventually_true("A sees B's new bind", Duration::from_secs(2), || async {
        a.locate_gate(9).await.unwrap().as_deref() == Some("gate-3")
    })
    .await;

    // A's own writes are visible at once, without waiting for the event.
    a.bind_gate(9, "gate-4").await.unwrap();
    assert_eq!(a.locate_gate(9).await.unwrap().as_deref(), Some("gate-4"));
}

#[tokio::test]
async fn metrics_are_registered_with_bounded_labels() {
    let redis = RedisServer::start().await;
    let (locator, registry) = connect(&redis.url()).await;
    locator.bind_gate(1, "g").await.unwrap();
    locator.locate_gate(1).await.unwrap();
    locator.locate_node(1, DEFAULT_POOL).await.unwrap();
    let mut events = locator.events();
    locator.bind_gate(2, "g").await.unwrap();
    next_event(&mut events).await;

    let text = metrics(&registry);
    for needle in [
        r#"switchyard_locator_operation_duration_seconds_count{op="bind_gate"} 2"#,
        r#"switchyard_locator_operation_duration_seconds_count{op="locate_gate"} 1"#,
        r#"switchyard_locator_operation_duration_seconds_count{op="locate_node"} 1"#,
        r#"switchyard_locator_errors_total{op="unbind_node"} 0"#,
        r#"switchyard_locator_errors_total{op="subscribe"} 0"#,
        r#"switchyard_locator_cache_total{result="miss"} 1"#,
        r#"switchyard_locator_cache_total{result="bypass"} 0"#,
        "switchyard_locator_pubsub_connected 1",
        "switchyard_locator_pubsub_lag_seconds_count",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    assert!(!text.contains("uid"), "a uid must never be a label");
}

#[tokio::test]
async fn connect_fails_fast_and_clearly() {
    // Nothing listens on this port.
    let port = free_port();
    let started = Instant::now();
    let mut registry = Registry::default();
    let error = RedisLocator::connect(
        RedisLocatorConfig::new(format!("redis://127.0.0.1:{port}")),
        &mut registry,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, LocatorError::Unavailable(_)), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("Redis") && message.contains(&port.to_string()),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(metrics(&registry).is_empty() || !metrics(&registry).contains("switchyard_locator"));

    let error = RedisLocator::connect(RedisLocatorConfig::new("http://x:1"), &mut registry)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("invalid Redis locator configuration"),
        "{error}"
    );

    // A redis:// URL that points at a cluster node.
    let node = RedisServer::start_cluster_node().await;
    let error = RedisLocator::connect(RedisLocatorConfig::new(node.url()), &mut registry)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("redis+cluster://"), "{error}");
}

/// Log lines written by the locator, captured for one test.
#[derive(Clone, Default)]
struct Logs(Arc<parking_lot::Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock()).matches(needle).count()
    }
}

#[tokio::test]
async fn restore_writes_only_missing_bindings_and_announces_them() {
    let redis = RedisServer::start().await;
    let (locator, _registry) = connect(&redis.url()).await;
    let mut events = locator.events();
    locator.bind_gate(1, "gate-new").await.unwrap();
    locator.bind_node(1, DEFAULT_POOL, "node-new").await.unwrap();
    assert_eq!(next_event(&mut events).await, gate_bound(1, "gate-new"));
    assert_eq!(
        next_event(&mut events).await,
        node_bound(1, DEFAULT_POOL, "node-new")
    );

    assert!(
        !locator.restore_gate(1, "gate-old").await.unwrap(),
        "a binding that exists (maybe newer) stays"
    );
    assert!(!locator.restore_node(1, DEFAULT_POOL, "node-old").await.unwrap());
    assert_eq!(locator.locate_gate(1).await.unwrap().as_deref(), Some("gate-new"));
    assert!(locator.restore_gate(2, "gate-a").await.unwrap());
    assert!(locator.restore_node(2, DEFAULT_POOL, "node-a").await.unwrap());
    assert_eq!(locator.locate_gate(2).await.unwrap().as_deref(), Some("gate-a"));
    assert_eq!(
        locator.locate_node(2, DEFAULT_POOL).await.unwrap().as_deref(),
        Some("node-a")
    );
    // Only the writes that happened are announced.
    assert_eq!(next_event(&mut events).await, gate_bound(2, "gate-a"));
    assert_eq!(
        next_event(&mut events).await,
        node_bound(2, DEFAULT_POOL, "node-a")
    );
    assert!(events.try_recv().is_err(), "nothing else was announced");
}

/// Redis is killed and restarted on the same port: operations fail fast with `Unavailable` and the
/// cache is not served while it is down; everything recovers, and the subscription is re-established.
/// (A current-thread runtime, so the locators' tasks log into this test's subscriber.)
#[tokio::test]
async fn survives_a_redis_restart() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    const LOST: &str = "lost the Redis locator subscription";
    const BACK: &str = "Redis locator subscription is back";

    let mut redis = RedisServer::start().await;
    let timeout = Duration::from_millis(300);
    let config = || {
        let mut config = RedisLocatorConfig::new(redis.url());
        config.timeout = timeout;
        config
    };
    let (a, a_registry) = connect_with(config()).await;
    let (b, _b_registry) = connect_with(config()).await;
    let mut b_events = b.events();

    a.bind_gate(1, "gate-1").await.unwrap();
    assert_eq!(a.locate_gate(1).await.unwrap().as_deref(), Some("gate-1"));
    assert_eq!(
        a.locate_gate(1).await.unwrap().as_deref(),
        Some("gate-1"),
        "cached"
    );
    assert_eq!(next_event(&mut b_events).await, gate_bound(1, "gate-1"));

    redis.kill();
    let noticed = eventually_true(
        "both locators notice the outage",
        Duration::from_secs(5),
        || async { !a.pubsub_connected() && !b.pubsub_connected() },
    )
    .await;
    eprintln!("outage noticed after {noticed:?}");
    assert_eq!(sample(&a_registry, "switchyard_locator_pubsub_connected"), 0.0);

    // Down: every operation fails fast, and locate_gate does not answer from its (possibly stale) cache.
    for round in 0..3 {
        let started = Instant::now();
        let results = [
            a.locate_gate(1).await.map(|_| ()),
            a.bind_gate(2, "gate-2").await,
            a.unbind_gate(1, "gate-1").await.map(|_| ()),
            a.bind_node(1, DEFAULT_POOL, "n").await,
            a.unbind_node(1, DEFAULT_POOL, "n").await.map(|_| ()),
            a.locate_node(1, DEFAULT_POOL).await.map(|_| ()),
        ];
        let took = started.elapsed();
        for result in results {
            match result {
                Err(LocatorError::Unavailable(message)) => {
                    assert!(
                        message.contains("Redis"),
                        "the message must blame Redis: {message}"
                    )
                }
                other => panic!("expected Unavailable while Redis is down, got {other:?}"),
            }
        }
        eprintln!("round {round}: six failed operations took {took:?}");
        assert!(took < 6 * (timeout + Duration::from_millis(200)), "took {took:?}");
    }
    assert!(sample(&a_registry, r#"switchyard_locator_cache_total{result="bypass"}"#) >= 3.0);
    assert!(
        sample(
            &a_registry,
            r#"switchyard_locator_errors_total{op="locate_gate"}"#
        ) >= 3.0
    );

    // Stay down through several resubscribe attempts: the outage is still logged once per locator.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(logs.count(LOST), 2, "one warning per locator");
    assert!(sample(&a_registry, r#"switchyard_locator_errors_total{op="subscribe"}"#) >= 2.0);

    redis.restart().await;
    // Redis answers PING again: the very first operation of each locator succeeds.
    let restarted = Instant::now();
    a.bind_gate(3, "gate-3").await.unwrap();
    assert_eq!(b.locate_gate(3).await.unwrap().as_deref(), Some("gate-3"));
    let first_operations = restarted.elapsed();
    eventually_true("both locators resubscribe", Duration::from_secs(15), || async {
        a.pubsub_connected() && b.pubsub_connected()
    })
    .await;
    eprintln!(
        "after the restart: first operations took {first_operations:?}; subscriptions back after {:?}",
        restarted.elapsed()
    );
    assert_eq!(logs.count(LOST), 2);
    assert_eq!(logs.count(BACK), 2, "one recovery message per locator");
    assert_eq!(sample(&a_registry, "switchyard_locator_pubsub_connected"), 1.0);

    // Each locator announces that it is back, so that gates and nodes restore their bindings.
    let announced = tokio::time::timeout(EVENT_DEADLINE, async {
        loop {
            match b_events.recv().await {
                Ok(LocatorEvent::Reconnected) => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event channel closed"),
            }
        }
    })
    .await;
    assert!(announced.is_ok(), "no Reconnected event after the outage");

    // Events flow again, in both directions.
    while b_events.try_recv().is_ok() {}
    a.bind_gate(4, "gate-4").await.unwrap();
    assert_eq!(next_event(&mut b_events).await, gate_bound(4, "gate-4"));
    let mut a_events = a.events();
    b.bind_node(4, DEFAULT_POOL, "node-4").await.unwrap();
    assert_eq!(
        next_event(&mut a_events).await,
        node_bound(4, DEFAULT_POOL, "node-4")
    );

    // The data did not survive (no persistence), and the cache serves again.
    assert_eq!(a.locate_gate(1).await.unwrap(), None);
    let hits = sample(&a_registry, r#"switchyard_locator_cache_total{result="hit"}"#);
    assert_eq!(a.locate_gate(4).await.unwrap().as_deref(), Some("gate-4"));
    assert_eq!(a.locate_gate(4).await.unwrap().as_deref(), Some("gate-4"));
    assert_eq!(
        sample(&a_registry, r#"switchyard_locator_cache_total{result="hit"}"#),
        hits + 1.0
    );
}

/// A Redis Cluster of three masters: many uids spread over every master; binds, compare-and-delete
/// unbinds, lookups and events all work, with the two locators subscribed through different nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_of_three_masters() {
    let cluster = RedisCluster::start().await;
    let (a, _ra) = connect(&cluster.url()).await;
    // B lists the seeds in another order, so it subscribes through another node than A.
    let ports: Vec<String> = cluster
        .nodes
        .iter()
        .rev()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let (b, _rb) = connect(&format!("redis+cluster://{}", ports.join(","))).await;
    let mut b_events = b.events();
    const UIDS: i64 = 300;

    for uid in 1..=UIDS {
        a.bind_gate(uid, "gate-a").await.unwrap();
        a.bind_node(uid, DEFAULT_POOL, "node-a").await.unwrap();
    }
    for node in &cluster.nodes {
        let keys = node.command("DBSIZE").await;
        let count: i64 = keys.trim().trim_start_matches(':').parse().unwrap();
        assert!(
            count > 0,
            "every master holds some bindings (node {}: {keys:?})",
            node.port()
        );
    }
    for uid in 1..=UIDS {
        assert_eq!(b.locate_gate(uid).await.unwrap().as_deref(), Some("gate-a"));
        assert_eq!(
            b.locate_node(uid, DEFAULT_POOL).await.unwrap().as_deref(),
            Some("node-a")
        );
        assert!(
            !b.unbind_gate(uid, "gate-b").await.unwrap(),
            "stale owner refused"
        );
        assert!(!b.unbind_node(uid, DEFAULT_POOL, "node-b").await.unwrap());
    }
    for uid in 1..=UIDS {
        assert!(a.unbind_gate(uid, "gate-a").await.unwrap());
        assert!(a.unbind_node(uid, DEFAULT_POOL, "node-a").await.unwrap());
    }
    for uid in 1..=UIDS {
        assert_eq!(b.locate_gate(uid).await.unwrap(), None, "uid {uid}");
        assert_eq!(a.locate_node(uid, DEFAULT_POOL).await.unwrap(), None);
    }

    // Every change, from keys on every master, reached B's subscription.
    let mut expected: HashSet<String> = HashSet::new();
    for uid in 1..=UIDS {
        expected.insert(format!("{:?}", gate_bound(uid, "gate-a")));
        expected.insert(format!("{:?}", node_bound(uid, DEFAULT_POOL, "node-a")));
        expected.insert(format!("{:?}", gate_unbound(uid, "gate-a")));
        expected.insert(format!("{:?}", node_unbound(uid, DEFAULT_POOL, "node-a")));
    }
    let mut seen = 0;
    while !expected.is_empty() {
        let event = next_event(&mut b_events).await;
        assert!(
            expected.remove(&format!("{event:?}")),
            "unexpected or duplicate event {event:?}"
        );
        seen += 1;
    }
    assert_eq!(seen, 4 * UIDS);
}

/// A locator that was idle while Redis restarted: its first write succeeds, because the command
/// connection (RESP3) noticed the closed connection by itself and the refused reconnect is retried.
#[tokio::test]
async fn an_idle_locator_writes_at_once_after_a_quick_restart() {
    let mut redis = RedisServer::start().await;
    let (locator, _registry) = connect(&redis.url()).await;
    locator.bind_gate(1, "gate-1").await.unwrap();
    redis.restart().await;
    locator.bind_gate(2, "gate-2").await.unwrap();
    assert!(locator.unbind_gate(2, "gate-2").await.unwrap());
}

/// Dropping the last clone of a locator ends its subscription and closes its connections.
#[tokio::test]
async fn dropping_the_locator_releases_its_connections() {
    let redis = RedisServer::start().await;
    let clients = || async { redis.command("CLIENT LIST").await.matches("id=").count() };
    let (locator, _registry) = connect(&redis.url()).await;
    let clone = locator.clone();
    let debug = format!("{locator:?}");
    assert!(
        debug.contains("127.0.0.1") && debug.contains("pubsub_connected: true"),
        "{debug}"
    );
    locator.bind_gate(1, "g").await.unwrap();
    // The subscription, the command connection, and the CLIENT LIST connection itself.
    assert_eq!(clients().await, 3);
    drop(locator);
    clone.locate_gate(1).await.unwrap();
    assert_eq!(clients().await, 3, "a clone keeps everything alive");
    drop(clone);
    eventually_true("connections closed", Duration::from_secs(5), || async {
        clients().await == 1
    })
    .await;
}

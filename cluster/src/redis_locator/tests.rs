//! Unit tests of the parts that need no Redis: events, keys, URLs, the cache.

use std::time::Duration;

use redis::ProtocolVersion;
use switchyard_protocol::link::Uid;

use super::cache::{GateCache, Lookup, Ticket, epoch_slot};
use super::config::{Target, redact_url};
use super::*;
use crate::contract::PrefixError;
use crate::locator_events::{
    GATE_BOUND, GATE_UNBOUND, Keys, NODE_BOUND, NODE_UNBOUND, decode_event, encode_gate_event,
    encode_node_event,
};

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
    assert_eq!(info.info.redis_settings().db(), 2);
    assert_eq!(info.info.redis_settings().protocol(), ProtocolVersion::RESP3);
    let Ok(Target::Standalone(info)) = Target::parse("redis://h:1/?protocol=resp2") else {
        panic!("explicit protocol");
    };
    assert_eq!(info.info.redis_settings().protocol(), ProtocolVersion::RESP2);
    assert!(matches!(
        Target::parse("rediss://redis.example:6380"),
        Ok(Target::Standalone(_))
    ));

    let Ok(Target::Cluster(seeds)) = Target::parse("redis+cluster://u:secret@a:7000,b:7001, c:7002") else {
        panic!("cluster URL");
    };
    let addresses: Vec<String> = seeds.iter().map(|seed| seed.addr().to_string()).collect();
    assert_eq!(addresses, ["a:7000", "b:7001", "c:7002"]);
    assert!(
        seeds
            .iter()
            .all(|seed| seed.info.redis_settings().password() == Some("secret"))
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
        "rediss+cluster://a:1,b:2",
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
    for prefix in ["", "a b", "{tag}", "x\n", "a*b", &"p".repeat(65)] {
        let mut config = RedisLocatorConfig::new("redis://h:1");
        config.prefix = prefix.to_owned();
        assert_eq!(
            config.validate(),
            Err(RedisConfigError::Prefix(PrefixError(prefix.to_owned())))
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

#[test]
fn credentials_replace_the_urls_and_a_ca_needs_tls() {
    let mut config = RedisLocatorConfig::new("redis://old:stale@h:1");
    config.username = Some("game".into());
    config.password = Some("s3cret".into());
    let Ok(Target::Standalone(endpoint)) = config.parse() else {
        panic!("standalone");
    };
    assert_eq!(endpoint.info.redis_settings().username(), Some("game"));
    assert_eq!(endpoint.info.redis_settings().password(), Some("s3cret"));
    let shown = format!("{config:?} {endpoint:?}");
    assert!(!shown.contains("s3cret") && !shown.contains("stale"), "{shown}");

    let mut config = RedisLocatorConfig::new("redis://h:1");
    config.ca_pem = Some(b"-----BEGIN CERTIFICATE-----\n".to_vec());
    assert!(matches!(
        config.validate(),
        Err(RedisConfigError::CaWithoutTls(_))
    ));
    config.url = "rediss://h:1".into();
    assert!(config.validate().is_ok());
    config.ca_pem = Some(b"not a certificate".to_vec());
    assert!(matches!(config.validate(), Err(RedisConfigError::Ca(_))));
}

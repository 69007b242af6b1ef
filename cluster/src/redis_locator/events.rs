//! Keys and the event format of the Redis locator's pub/sub channel (see the module documentation of
//! `redis_locator`). Declared at the crate root (`locator_events`), so that the fuzz targets can decode
//! events without the `redis` feature.

use std::time::{SystemTime, UNIX_EPOCH};

use switchyard_protocol::link::Uid;

use crate::locator::LocatorEvent;

#[derive(Debug)]
pub(super) struct Keys {
    pub(super) prefix: String,
    pub(super) channel: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            channel: format!("{prefix}:events"),
        }
    }

    pub(super) fn gate(&self, uid: Uid) -> String {
        format!("{}:gate:{uid}", self.prefix)
    }

    pub(super) fn node(&self, uid: Uid, pool: &str) -> String {
        format!("{}:node:{pool}:{uid}", self.prefix)
    }
}

pub(super) const GATE_BOUND: &str = "G+";
pub(super) const GATE_UNBOUND: &str = "G-";
pub(super) const NODE_BOUND: &str = "N+";
pub(super) const NODE_UNBOUND: &str = "N-";

pub(super) fn encode_gate_event(tag: &str, uid: Uid, published_us: u64, gate_id: &str) -> String {
    format!("{tag} {uid} {published_us} {gate_id}")
}

pub(super) fn encode_node_event(tag: &str, uid: Uid, published_us: u64, pool: &str, node_id: &str) -> String {
    format!("{tag} {uid} {published_us} {} {pool} {node_id}", pool.len())
}

/// A payload on the event channel that is not an event of this format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("undecodable locator event: {0}")]
pub(super) struct BadEvent(&'static str);

/// Parses an event payload into the event and its publish time (µs since the Unix epoch).
pub(super) fn decode_event(payload: &[u8]) -> Result<(LocatorEvent, u64), BadEvent> {
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

pub(super) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

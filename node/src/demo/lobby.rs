//! The demo's lobby: login and matchmaking. Each mode's queue lives on one lobby node, elected through the
//! locator; two players waiting for one mode get a match on a battle node the battle pool picks.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_protocol::link::Uid;

use super::{CREATE_MATCH, Demo, ENQUEUE, KICKED, MATCHED, Reply, ok};
use crate::calls::{CallError, Callee};
use crate::context::Context;
use crate::handler::{Payload, State};
use crate::handler_error::{HandlerError, code};
use crate::outbound::Outbound;

/// The longest mode name a player may queue for.
const MAX_MODE_BYTES: usize = 64;

/// Mode → players waiting, on the lobby node that owns the mode's queue.
#[derive(Debug, Default)]
pub struct Queues {
    waiting: Mutex<HashMap<String, Vec<Uid>>>,
}

impl Queues {
    /// Adds `uid` (once) and takes a pair when two wait.
    fn push(&self, mode: &str, uid: Uid) -> Option<[Uid; 2]> {
        let mut waiting = self.waiting.lock();
        let queue = waiting.entry(mode.to_owned()).or_default();
        if !queue.contains(&uid) {
            queue.push(uid);
        }
        if queue.len() < 2 {
            return None;
        }
        let pair = [queue.remove(0), queue.remove(0)];
        if queue.is_empty() {
            waiting.remove(mode);
        }
        Some(pair)
    }

    /// Puts a pair whose match could not start back at the front.
    fn put_back(&self, mode: &str, pair: [Uid; 2]) {
        let mut waiting = self.waiting.lock();
        let queue = waiting.entry(mode.to_owned()).or_default();
        for uid in pair.into_iter().rev() {
            if !queue.contains(&uid) {
                queue.insert(0, uid);
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginRequest {
    uid: Uid,
    #[serde(default)]
    #[allow(dead_code)]
    name: String,
}

pub(super) async fn login(
    ctx: Context,
    State(demo): State<Arc<Demo>>,
    Payload(request): Payload<LoginRequest>,
) -> Reply {
    let uid = request.uid;
    if uid <= 0 {
        return Err(HandlerError::new(
            code::BAD_REQUEST,
            "uid must be a positive integer",
        ));
    }
    if ctx.uid() != uid && ctx.locate_gate(uid).await?.is_some() {
        // Logged in elsewhere: tell the older connection why, then close it. Both go over the same link
        // to its gate, so the push is written before the close.
        let _ = ctx.push(uid, KICKED, &json!({"reason": "duplicate login"})).await;
        let _ = ctx.disconnect_user(uid).await;
    }
    ctx.bind_gate(uid).await?;
    if !demo.bind_on_login {
        return ok(json!({"code": 0, "uid": uid, "node": ctx.node_id()}));
    }
    // A player already bound to a live node (a reconnect) stays there; the gate has cleared dead bindings.
    let node = match ctx.locate_node(uid).await? {
        Some(node) => node,
        None => {
            ctx.bind_node(uid).await?;
            ctx.node_id().to_owned()
        }
    };
    ok(json!({"code": 0, "uid": uid, "node": node}))
}

#[derive(Debug, Deserialize)]
pub(super) struct QueueRequest {
    mode: String,
}

pub(super) async fn queue(
    ctx: Context,
    State(demo): State<Arc<Demo>>,
    Payload(request): Payload<QueueRequest>,
) -> Reply {
    let mode = request.mode;
    if mode.is_empty() || mode.len() > MAX_MODE_BYTES {
        return Err(HandlerError::bad_request(format!(
            "mode must be 1 to {MAX_MODE_BYTES} bytes"
        )));
    }
    let outbound = ctx.outbound();
    let (pool, key) = (queue_pool(outbound.pool()), mode_key(&mode));
    // Twice at most: an owner found gone is released, and the next claim elects a live lobby node.
    for _ in 0..2 {
        let owner = outbound.claim_in(&pool, key).await?;
        if owner == outbound.node_id() {
            enqueue_here(outbound, &demo, &mode, ctx.uid()).await?;
            return ok(json!({"code": 0}));
        }
        let request = json!({"mode": mode, "uid": ctx.uid()});
        match outbound
            .call::<_, Value>(Callee::node(owner.as_str()), ENQUEUE, &request)
            .await
        {
            Ok(_) => return ok(json!({"code": 0})),
            Err(CallError::NoNode { .. } | CallError::NodeGone) => {
                tracing::info!(%owner, %mode, "queue owner gone; electing another");
                outbound.unbind_in(&pool, key, &owner).await?;
            }
            Err(error) => return Err(HandlerError::internal(error)),
        }
    }
    Err(HandlerError::internal("no lobby node could own the queue"))
}

#[derive(Debug, Deserialize)]
pub(super) struct EnqueueRequest {
    mode: String,
    uid: Uid,
}

/// Route [`ENQUEUE`]: another lobby node forwards a player to this node's queue.
pub(super) async fn enqueue(
    ctx: Context,
    State(demo): State<Arc<Demo>>,
    Payload(request): Payload<EnqueueRequest>,
) -> Reply {
    enqueue_here(ctx.outbound(), &demo, &request.mode, request.uid).await?;
    ok(json!({"code": 0}))
}

#[derive(Debug, Deserialize)]
struct MatchCreated {
    #[serde(rename = "match")]
    id: String,
    node: String,
}

/// Queues `uid` here; when two wait, starts their match: a battle node creates it, both players are bound
/// to that node, and both are told.
async fn enqueue_here(outbound: &Outbound, demo: &Demo, mode: &str, uid: Uid) -> Result<(), HandlerError> {
    let Some(pair) = demo.queues.push(mode, uid) else {
        return Ok(());
    };
    let request = json!({"mode": mode, "players": pair});
    let created: MatchCreated = match outbound
        .call(Callee::pool(demo.battle_pool.as_str()), CREATE_MATCH, &request)
        .await
    {
        Ok(created) => created,
        Err(error) => {
            demo.queues.put_back(mode, pair);
            return Err(HandlerError::internal(error));
        }
    };
    for player in pair {
        outbound.bind_in(&demo.battle_pool, player, &created.node).await?;
    }
    let matched = json!({"match": created.id, "node": created.node, "players": pair});
    outbound.multicast(&pair, MATCHED, &matched).await?;
    tracing::info!(%mode, players = ?pair, node = %created.node, "players matched");
    Ok(())
}

/// The locator pool the lobby's queue owners are elected in.
fn queue_pool(lobby_pool: &str) -> String {
    format!("{lobby_pool}/queue")
}

/// The election key of a mode: a negative uid, which no player has.
fn mode_key(mode: &str) -> Uid {
    // FNV-1a: stable across processes and releases, unlike the standard library's hasher.
    let hash = mode.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    -1 - (hash >> 2) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_pair_players_once_and_take_them_back_in_order() {
        let queues = Queues::default();
        assert_eq!(queues.push("duel", 1), None);
        assert_eq!(queues.push("duel", 1), None, "queued once");
        assert_eq!(queues.push("ffa", 3), None, "modes apart");
        assert_eq!(queues.push("duel", 2), Some([1, 2]));
        queues.put_back("duel", [1, 2]);
        assert_eq!(queues.push("duel", 4), Some([1, 2]));
        assert_eq!(queues.push("duel", 5), Some([4, 5]));
    }

    #[test]
    fn mode_keys_are_negative_and_stable() {
        assert!(mode_key("duel") < 0 && mode_key("") < 0);
        assert_eq!(mode_key("duel"), mode_key("duel"));
        assert_ne!(mode_key("duel"), mode_key("ffa"));
    }
}

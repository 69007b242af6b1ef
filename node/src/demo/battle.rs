//! The demo's matches (battle pool): created by a lobby's call, played with moves pushed to the opponent,
//! ended when a player logs out.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;
use switchyard_protocol::link::Uid;

use super::{Demo, MOVED, Reply, ok};
use crate::context::Context;
use crate::handler::{Payload, State};
use crate::handler_error::{HandlerError, code};

/// The matches this node hosts.
#[derive(Debug, Default)]
pub struct Matches {
    table: Mutex<MatchTable>,
}

#[derive(Debug, Default)]
struct MatchTable {
    players: HashMap<String, [Uid; 2]>,
    of_player: HashMap<Uid, String>,
    created: u64,
}

impl Matches {
    /// Starts a match of `pair`; returns its id. A player's earlier match here ends.
    fn create(&self, node_id: &str, pair: [Uid; 2]) -> String {
        let mut table = self.table.lock();
        for uid in pair {
            table.end_of(uid);
        }
        table.created += 1;
        let id = format!("{node_id}-{}", table.created);
        table.players.insert(id.clone(), pair);
        for uid in pair {
            table.of_player.insert(uid, id.clone());
        }
        id
    }

    /// The other player of `uid`'s match.
    fn opponent(&self, uid: Uid) -> Option<Uid> {
        let table = self.table.lock();
        let pair = table.players.get(table.of_player.get(&uid)?)?;
        pair.iter().copied().find(|other| *other != uid)
    }

    fn end_of(&self, uid: Uid) {
        self.table.lock().end_of(uid);
    }

    /// Matches running now.
    pub fn running(&self) -> usize {
        self.table.lock().players.len()
    }
}

impl MatchTable {
    fn end_of(&mut self, uid: Uid) {
        if let Some(id) = self.of_player.remove(&uid)
            && let Some(pair) = self.players.remove(&id)
        {
            for player in pair {
                self.of_player.remove(&player);
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CreateMatch {
    #[serde(default)]
    #[allow(dead_code)]
    mode: String,
    players: Vec<Uid>,
}

/// Route [`super::CREATE_MATCH`] (internal): a lobby asks for a match of two players. The lobby binds them
/// here afterwards; this node adopts them when it sees the bindings.
pub(super) async fn create_match(
    ctx: Context,
    State(demo): State<Arc<Demo>>,
    Payload(request): Payload<CreateMatch>,
) -> Reply {
    let pair: [Uid; 2] = match request.players[..] {
        [a, b] if a > 0 && b > 0 && a != b => [a, b],
        _ => return Err(HandlerError::bad_request("a match needs two different players")),
    };
    let id = demo.matches.create(ctx.node_id(), pair);
    ok(json!({"match": id, "node": ctx.node_id()}))
}

#[derive(Debug, Deserialize)]
pub(super) struct Move {
    x: i64,
    y: i64,
}

/// Route [`super::MOVE`]: tells the opponent.
pub(super) async fn make_move(
    ctx: Context,
    State(demo): State<Arc<Demo>>,
    Payload(request): Payload<Move>,
) -> Reply {
    let uid = ctx.uid();
    let Some(opponent) = demo.matches.opponent(uid) else {
        return Err(HandlerError::new(
            code::BAD_REQUEST,
            "not in a match on this node",
        ));
    };
    let moved = json!({"from": uid, "x": request.x, "y": request.y});
    if let Err(error) = ctx.push(opponent, MOVED, &moved).await {
        // The opponent is offline for now; the move still counts.
        tracing::debug!(uid, opponent, %error, "move not pushed");
    }
    ok(json!({"code": 0}))
}

/// Route [`super::LOGOUT`]: leaves rooms, ends the player's match, and releases the node and gate bindings.
pub(super) async fn logout(ctx: Context, State(demo): State<Arc<Demo>>) -> Reply {
    let uid = ctx.uid();
    demo.rooms.leave_all(uid);
    demo.matches.end_of(uid);
    ctx.unbind_node(uid).await?;
    ctx.unbind_gate(uid).await?;
    ok(json!({"code": 0}))
}

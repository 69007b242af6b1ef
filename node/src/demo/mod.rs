//! The demo game: what `switchyard dev`, the tests and the benchmarks run. JSON payloads. Two pools: a
//! `lobby` (log in, queue for a match) and `battle` (rooms, chat, matches); run as one pool (any other pool
//! name, `game` by default) a node serves every route, the lobby's and the battle's.
//!
//! | route | pool | name | options | request → response |
//! |---|---|---|---|---|
//! | 1 | lobby | echo | stateless | `{"message": s}` → `{"code":0,"message": s}` |
//! | 2 | lobby | login | stateless | `{"uid": n, "name": s}` (n > 0) → `{"code":0,"uid":n,"node":"<id>"}` |
//! | 3 | battle | whoami | stateful, authorized | → `{"code":0,"uid":n,"node":"<id>"}` |
//! | 4 | battle | join | stateful, authorized | `{"room": s}` → `{"code":0,"members":k}` |
//! | 5 | battle | say | stateful, authorized | `{"room": s,"text": t}` → `{"code":0}`; members get push 6 |
//! | 6 | | (push) room message | | `{"room": s,"from": n,"text": t}` |
//! | 7 | battle | logout | stateful, authorized | → `{"code":0}`; bindings removed, the player's match ends |
//! | 8 | | (push) kicked | | `{"reason":"duplicate login"}`, then the older connection is closed |
//! | 10 | lobby | work | stateless | `{"ms": n}` (0 ≤ n ≤ 5000) → waits n ms, as a handler waiting on a database would, then `{"code":0}` |
//! | 11 | lobby | queue | authorized | `{"mode": s}` → `{"code":0}`; two players queued for one mode are matched |
//! | 12 | | (push) matched | | `{"match": id,"node":"<battle node id>","players":[uid, uid]}` to both players |
//! | 13 | battle | move | stateful, authorized | `{"x": n,"y": n}` → `{"code":0}`; the other player of the match gets push 14 |
//! | 14 | | (push) moved | | `{"from": uid,"x": n,"y": n}` |
//! | 101 | battle | create match | internal | `{"mode": s,"players":[uid, uid]}` → `{"match": id,"node":"<id>"}` |
//! | 111 | lobby | enqueue | internal | `{"mode": s,"uid": n}` → `{"code":0}` (on the node that owns the mode's queue) |
//!
//! A payload that does not parse gets `{"code":1,"error":"<why>"}` (the SDK's bad-request reply), as does
//! a refused request. Logout is stateful so that it reaches the node holding the player, which must
//! release the player for a drain to finish.
//!
//! Matchmaking: each mode's queue lives on one lobby node, elected through the locator
//! ([`crate::Outbound::claim_in`]); other lobby nodes forward queue requests to it by name (route 111).
//! When two players wait for one mode, it calls the battle pool (route 101: any battle node that takes new
//! work), binds both players to the battle node that took the match ([`crate::Outbound::bind_in`]) and
//! pushes route 12 to both.

mod battle;
mod lobby;
mod rooms;

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::context::Context;
use crate::handler::Payload;
use crate::handler_error::{HandlerError, code};
use crate::router::{Disconnect, RouteOptions, Router};

pub use battle::Matches;
pub use lobby::Queues;
pub use rooms::Rooms;

pub const ECHO: i32 = 1;
pub const LOGIN: i32 = 2;
pub const WHOAMI: i32 = 3;
pub const JOIN: i32 = 4;
pub const SAY: i32 = 5;
pub const ROOM_MESSAGE: i32 = 6;
pub const LOGOUT: i32 = 7;
pub const KICKED: i32 = 8;
pub const WORK: i32 = 10;
pub const QUEUE: i32 = 11;
pub const MATCHED: i32 = 12;
pub const MOVE: i32 = 13;
pub const MOVED: i32 = 14;
pub const CREATE_MATCH: i32 = 101;
pub const ENQUEUE: i32 = 111;
/// The longest wait route [`WORK`] takes.
pub const MAX_WORK_MS: u64 = 5000;
/// The demo's lobby pool.
pub const LOBBY_POOL: &str = "lobby";
/// The demo's battle pool.
pub const BATTLE_POOL: &str = "battle";

/// The demo's state on one node, whichever routes it serves.
#[derive(Debug)]
pub struct Demo {
    pub rooms: Rooms,
    pub matches: Matches,
    pub queues: Queues,
    /// The pool that hosts matches (this node's own when it serves every route).
    battle_pool: String,
    /// Whether login binds the player to this node (one pool: the node that logs a player in holds them).
    bind_on_login: bool,
}

impl Demo {
    fn new(battle_pool: &str, bind_on_login: bool) -> Arc<Self> {
        Arc::new(Demo {
            rooms: Rooms::default(),
            matches: Matches::default(),
            queues: Queues::default(),
            battle_pool: battle_pool.to_owned(),
            bind_on_login,
        })
    }
}

/// The router for a node of `pool`: [`LOBBY_POOL`] and [`BATTLE_POOL`] get their half of the game; any other
/// pool gets all of it (see [`router`]).
pub fn router_for_pool(pool: &str) -> Router<Arc<Demo>> {
    match pool {
        LOBBY_POOL => lobby_routes(Router::with_state(Demo::new(BATTLE_POOL, false))),
        BATTLE_POOL => battle_routes(Router::with_state(Demo::new(BATTLE_POOL, false))),
        other => battle_routes(lobby_routes(Router::with_state(Demo::new(other, true)))),
    }
}

/// The whole game on one pool, `game` (as `switchyard node` runs it by default).
pub fn router() -> Router<Arc<Demo>> {
    router_for_pool(switchyard_cluster::locator::DEFAULT_POOL)
}

fn lobby_routes(router: Router<Arc<Demo>>) -> Router<Arc<Demo>> {
    router
        .route(ECHO, RouteOptions::stateless(), echo)
        .route(LOGIN, RouteOptions::stateless(), lobby::login)
        .route(WORK, RouteOptions::stateless(), work)
        .route(QUEUE, RouteOptions::stateless().authorized(), lobby::queue)
        .route(ENQUEUE, RouteOptions::stateless().internal(), lobby::enqueue)
}

fn battle_routes(router: Router<Arc<Demo>>) -> Router<Arc<Demo>> {
    router
        .route(WHOAMI, RouteOptions::stateful().authorized(), rooms::whoami)
        .route(JOIN, RouteOptions::stateful().authorized(), rooms::join)
        .route(SAY, RouteOptions::stateful().authorized(), rooms::say)
        .route(LOGOUT, RouteOptions::stateful().authorized(), battle::logout)
        .route(MOVE, RouteOptions::stateful().authorized(), battle::make_move)
        .route(
            CREATE_MATCH,
            RouteOptions::stateless().internal(),
            battle::create_match,
        )
        .on_disconnect(|event: Disconnect, demo: Arc<Demo>| async move {
            if event.uid != 0 {
                demo.rooms.leave_all(event.uid);
            }
        })
}

type Reply = Result<Payload<Value>, HandlerError>;

fn ok(value: Value) -> Reply {
    Ok(Payload(value))
}

#[derive(Debug, Deserialize)]
struct EchoRequest {
    message: String,
}

async fn echo(_: Context, Payload(request): Payload<EchoRequest>) -> Reply {
    ok(json!({"code": 0, "message": request.message}))
}

#[derive(Debug, Deserialize)]
struct WorkRequest {
    ms: u64,
}

async fn work(_: Context, Payload(request): Payload<WorkRequest>) -> Reply {
    if request.ms > MAX_WORK_MS {
        return Err(HandlerError::new(
            code::BAD_REQUEST,
            format!("ms must be at most {MAX_WORK_MS}"),
        ));
    }
    tokio::time::sleep(std::time::Duration::from_millis(request.ms)).await;
    ok(json!({"code": 0}))
}

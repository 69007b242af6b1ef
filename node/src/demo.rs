//! The demo game: what `switchyard dev`, the tests and the benchmarks run. JSON payloads.
//!
//! | route | name | options | request → response |
//! |---|---|---|---|
//! | 1 | echo | stateless | `{"message": s}` → `{"code":0,"message": s}` |
//! | 2 | login | stateless | `{"uid": n, "name": s}` (n > 0) → `{"code":0,"uid":n,"node":"<id>"}` |
//! | 3 | whoami | stateful, authorized | → `{"code":0,"uid":n,"node":"<id>"}` |
//! | 4 | join | stateful, authorized | `{"room": s}` → `{"code":0,"members":k}` |
//! | 5 | say | stateful, authorized | `{"room": s,"text": t}` → `{"code":0}`; members get push 6 |
//! | 6 | (push) room message | | `{"room": s,"from": n,"text": t}` |
//! | 7 | logout | stateful, authorized | → `{"code":0}`; bindings removed |
//! | 8 | (push) kicked | | `{"reason":"duplicate login"}`, then the older connection is closed |
//! | 10 | work | stateless | `{"ms": n}` (0 ≤ n ≤ 5000) → waits n ms, as a handler waiting on a database would, then `{"code":0}` |
//!
//! A payload that does not parse gets `{"code":1,"error":"<why>"}` (the SDK's bad-request reply), as does
//! a refused request. Logout is stateful so that it reaches the node holding the player, which must
//! release the player for a drain to finish.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_protocol::link::Uid;

use crate::context::Context;
use crate::handler::{Payload, State};
use crate::handler_error::{HandlerError, code};
use crate::router::{Disconnect, RouteOptions, Router};

pub const ECHO: i32 = 1;
pub const LOGIN: i32 = 2;
pub const WHOAMI: i32 = 3;
pub const JOIN: i32 = 4;
pub const SAY: i32 = 5;
pub const ROOM_MESSAGE: i32 = 6;
pub const LOGOUT: i32 = 7;
pub const KICKED: i32 = 8;
pub const WORK: i32 = 10;
/// The longest wait route [`WORK`] takes.
pub const MAX_WORK_MS: u64 = 5000;

#[derive(Debug, Deserialize)]
struct EchoRequest {
    message: String,
}

#[derive(Debug, Serialize)]
struct EchoResponse {
    code: i32,
    message: String,
}

#[derive(Debug, Deserialize)]
struct LoginRequest {
    uid: Uid,
    #[serde(default)]
    #[allow(dead_code)]
    name: String,
}

#[derive(Debug, Deserialize)]
struct JoinRequest {
    room: String,
}

#[derive(Debug, Deserialize)]
struct WorkRequest {
    ms: u64,
}

#[derive(Debug, Deserialize)]
struct SayRequest {
    room: String,
    text: String,
}

/// Rooms live on the node that holds their members.
#[derive(Debug, Default)]
pub struct Rooms {
    members: Mutex<HashMap<String, HashSet<Uid>>>,
}

impl Rooms {
    fn join(&self, room: &str, uid: Uid) -> usize {
        let mut rooms = self.members.lock();
        let members = rooms.entry(room.to_owned()).or_default();
        members.insert(uid);
        members.len()
    }

    fn members(&self, room: &str) -> Option<Vec<Uid>> {
        self.members
            .lock()
            .get(room)
            .map(|members| members.iter().copied().collect())
    }

    fn leave_all(&self, uid: Uid) {
        self.members.lock().retain(|_, members| {
            members.remove(&uid);
            !members.is_empty()
        });
    }
}

/// The demo game's router.
pub fn router() -> Router<Arc<Rooms>> {
    Router::with_state(Arc::new(Rooms::default()))
        .route(ECHO, RouteOptions::stateless(), echo)
        .route(LOGIN, RouteOptions::stateless(), login)
        .route(WHOAMI, RouteOptions::stateful().authorized(), whoami)
        .route(JOIN, RouteOptions::stateful().authorized(), join)
        .route(SAY, RouteOptions::stateful().authorized(), say)
        .route(LOGOUT, RouteOptions::stateful().authorized(), logout)
        .route(WORK, RouteOptions::stateless(), work)
        .on_disconnect(|event: Disconnect, rooms: Arc<Rooms>| async move {
            if event.uid != 0 {
                rooms.leave_all(event.uid);
            }
        })
}

type Reply = Result<Payload<Value>, HandlerError>;

fn ok(value: Value) -> Reply {
    Ok(Payload(value))
}

async fn echo(
    _: Context,
    Payload(request): Payload<EchoRequest>,
) -> Result<Payload<EchoResponse>, HandlerError> {
    Ok(Payload(EchoResponse {
        code: 0,
        message: request.message,
    }))
}

async fn login(ctx: Context, Payload(request): Payload<LoginRequest>) -> Reply {
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

/// A stateful packet reaching a node the player is not bound to means the binding was lost (the node it
/// named vanished): adopt the player here.
async fn ensure_bound_here(ctx: &Context) -> Result<(), crate::NodeError> {
    if !ctx.is_bound_here(ctx.uid()) {
        ctx.bind_node(ctx.uid()).await?;
    }
    Ok(())
}

async fn whoami(ctx: Context) -> Reply {
    ensure_bound_here(&ctx).await?;
    ok(json!({"code": 0, "uid": ctx.uid(), "node": ctx.node_id()}))
}

async fn join(
    ctx: Context,
    State(rooms): State<Arc<Rooms>>,
    Payload(request): Payload<JoinRequest>,
) -> Reply {
    ensure_bound_here(&ctx).await?;
    let members = rooms.join(&request.room, ctx.uid());
    ok(json!({"code": 0, "members": members}))
}

async fn say(ctx: Context, State(rooms): State<Arc<Rooms>>, Payload(request): Payload<SayRequest>) -> Reply {
    ensure_bound_here(&ctx).await?;
    match rooms.members(&request.room) {
        Some(members) if members.contains(&ctx.uid()) => {
            let message = json!({"room": request.room, "from": ctx.uid(), "text": request.text});
            ctx.multicast(&members, ROOM_MESSAGE, &message).await?;
            ok(json!({"code": 0}))
        }
        _ => Err(HandlerError::new(code::BAD_REQUEST, "not a member of this room")),
    }
}

async fn logout(ctx: Context, State(rooms): State<Arc<Rooms>>) -> Reply {
    let uid = ctx.uid();
    rooms.leave_all(uid);
    ctx.unbind_node(uid).await?;
    ctx.unbind_gate(uid).await?;
    ok(json!({"code": 0}))
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

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
//!
//! A payload that does not parse gets `{"code":1,"error":"<why>"}`. Logout is stateful so that it reaches
//! the node holding the player, which must release the player for a drain to finish.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchyard_protocol::link::Uid;

use crate::context::Context;
use crate::router::{Disconnect, HandlerResult, RouteOptions, Router};

pub const ECHO: i32 = 1;
pub const LOGIN: i32 = 2;
pub const WHOAMI: i32 = 3;
pub const JOIN: i32 = 4;
pub const SAY: i32 = 5;
pub const ROOM_MESSAGE: i32 = 6;
pub const LOGOUT: i32 = 7;
pub const KICKED: i32 = 8;

#[derive(Debug, Deserialize)]
struct EchoRequest {
    message: String,
}

#[derive(Debug, Serialize)]
struct EchoResponse<'a> {
    code: i32,
    message: &'a str,
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
struct SayRequest {
    room: String,
    text: String,
}

/// Rooms live on the node that holds their members.
#[derive(Debug, Default)]
struct Rooms {
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
pub fn router() -> Router {
    let rooms = Arc::new(Rooms::default());
    let (join_rooms, say_rooms, logout_rooms, gone_rooms) =
        (rooms.clone(), rooms.clone(), rooms.clone(), rooms);
    Router::new()
        .route(ECHO, RouteOptions::stateless(), echo)
        .route(LOGIN, RouteOptions::stateless(), login)
        .route(WHOAMI, RouteOptions::stateful().authorized(), whoami)
        .route(JOIN, RouteOptions::stateful().authorized(), move |ctx| {
            join(ctx, join_rooms.clone())
        })
        .route(SAY, RouteOptions::stateful().authorized(), move |ctx| {
            say(ctx, say_rooms.clone())
        })
        .route(LOGOUT, RouteOptions::stateful().authorized(), move |ctx| {
            logout(ctx, logout_rooms.clone())
        })
        .on_disconnect(move |event: Disconnect| {
            let rooms = gone_rooms.clone();
            async move {
                if event.uid != 0 {
                    rooms.leave_all(event.uid);
                }
            }
        })
}

/// Parses the payload, or answers `{"code":1,"error":...}` and returns `None`.
async fn parse_or_refuse<T: serde::de::DeserializeOwned>(
    ctx: &Context,
) -> Result<Option<T>, crate::NodeError> {
    match ctx.parse::<T>() {
        Ok(request) => Ok(Some(request)),
        Err(error) => {
            ctx.respond(&json!({"code": 1, "error": error.to_string()}))
                .await?;
            Ok(None)
        }
    }
}

async fn echo(ctx: Context) -> HandlerResult {
    let Some(request) = parse_or_refuse::<EchoRequest>(&ctx).await? else {
        return Ok(());
    };
    ctx.respond(&EchoResponse {
        code: 0,
        message: &request.message,
    })
    .await?;
    Ok(())
}

async fn login(ctx: Context) -> HandlerResult {
    let Some(request) = parse_or_refuse::<LoginRequest>(&ctx).await? else {
        return Ok(());
    };
    let uid = request.uid;
    if uid <= 0 {
        ctx.respond(&json!({"code": 1, "error": "uid must be a positive integer"}))
            .await?;
        return Ok(());
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
    ctx.respond(&json!({"code": 0, "uid": uid, "node": node})).await?;
    Ok(())
}

/// A stateful packet reaching a node the player is not bound to means the binding was lost (the node it
/// named vanished): adopt the player here.
async fn ensure_bound_here(ctx: &Context) -> Result<(), crate::NodeError> {
    if !ctx.is_bound_here(ctx.uid()) {
        ctx.bind_node(ctx.uid()).await?;
    }
    Ok(())
}

async fn whoami(ctx: Context) -> HandlerResult {
    ensure_bound_here(&ctx).await?;
    ctx.respond(&json!({"code": 0, "uid": ctx.uid(), "node": ctx.node_id()}))
        .await?;
    Ok(())
}

async fn join(ctx: Context, rooms: Arc<Rooms>) -> HandlerResult {
    let Some(request) = parse_or_refuse::<JoinRequest>(&ctx).await? else {
        return Ok(());
    };
    ensure_bound_here(&ctx).await?;
    let members = rooms.join(&request.room, ctx.uid());
    ctx.respond(&json!({"code": 0, "members": members})).await?;
    Ok(())
}

async fn say(ctx: Context, rooms: Arc<Rooms>) -> HandlerResult {
    let Some(request) = parse_or_refuse::<SayRequest>(&ctx).await? else {
        return Ok(());
    };
    ensure_bound_here(&ctx).await?;
    match rooms.members(&request.room) {
        Some(members) if members.contains(&ctx.uid()) => {
            let message = json!({"room": request.room, "from": ctx.uid(), "text": request.text});
            ctx.multicast(&members, ROOM_MESSAGE, &message).await?;
            ctx.respond(&json!({"code": 0})).await?;
        }
        _ => {
            ctx.respond(&json!({"code": 1, "error": "not a member of this room"}))
                .await?
        }
    }
    Ok(())
}

async fn logout(ctx: Context, rooms: Arc<Rooms>) -> HandlerResult {
    let uid = ctx.uid();
    rooms.leave_all(uid);
    ctx.unbind_node(uid).await?;
    ctx.unbind_gate(uid).await?;
    ctx.respond(&json!({"code": 0})).await?;
    Ok(())
}

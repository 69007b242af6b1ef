//! The demo's chat rooms (battle pool): whoami, join, say. Rooms live on the node that holds their members.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;
use switchyard_protocol::link::Uid;

use super::{Demo, ROOM_MESSAGE, Reply, ok};
use crate::context::Context;
use crate::handler::{Payload, State};
use crate::handler_error::{HandlerError, code};

/// Room name → members, on this node.
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

    pub(super) fn leave_all(&self, uid: Uid) {
        self.members.lock().retain(|_, members| {
            members.remove(&uid);
            !members.is_empty()
        });
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct JoinRequest {
    room: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct SayRequest {
    room: String,
    text: String,
}

/// A stateful packet reaching a node the player is not bound to means the binding was lost (the node it
/// named vanished) or never made (no match yet): adopt the player here.
pub(super) async fn ensure_bound_here(ctx: &Context) -> Result<(), crate::NodeError> {
    if !ctx.is_bound_here(ctx.uid()) {
        ctx.bind_node(ctx.uid()).await?;
    }
    Ok(())
}

pub(super) async fn whoami(ctx: Context) -> Reply {
    ensure_bound_here(&ctx).await?;
    ok(json!({"code": 0, "uid": ctx.uid(), "node": ctx.node_id()}))
}

pub(super) async fn join(
    ctx: Context,
    State(demo): State<Arc<Demo>>,
    Payload(request): Payload<JoinRequest>,
) -> Reply {
    ensure_bound_here(&ctx).await?;
    let members = demo.rooms.join(&request.room, ctx.uid());
    ok(json!({"code": 0, "members": members}))
}

pub(super) async fn say(
    ctx: Context,
    State(demo): State<Arc<Demo>>,
    Payload(request): Payload<SayRequest>,
) -> Reply {
    ensure_bound_here(&ctx).await?;
    match demo.rooms.members(&request.room) {
        Some(members) if members.contains(&ctx.uid()) => {
            let message = json!({"room": request.room, "from": ctx.uid(), "text": request.text});
            ctx.multicast(&members, ROOM_MESSAGE, &message).await?;
            ok(json!({"code": 0}))
        }
        _ => Err(HandlerError::new(code::BAD_REQUEST, "not a member of this room")),
    }
}

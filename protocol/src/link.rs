//! Messages between a gate and a node, independent of what carries them.
//!
//! A link is one duplex channel between one gate and one node. The gate opens it (gates connect to every
//! node they know of) and both sides then speak over it: the gate forwards client packets and session
//! events, the node answers, pushes, and asks the gate to bind or drop sessions. Client packets travel as
//! [`Bytes`] exactly as the client sent them (gate → node) or exactly as the client will receive them
//! (node → gate): the gate never decodes a payload.
//!
//! Operations that need an answer carry a [`RequestId`] and are answered by an `Ack` with the same id.
//!
//! Between processes the messages travel as the length-prefixed binary frames of [`codec`], which also
//! specifies them byte by byte.

pub mod codec;
pub mod traceparent;

pub use codec::{
    DEFAULT_MAX_FRAME_BYTES, LINK_VERSION, LinkDecodeError, LinkDecoder, LinkEncodeError,
    encode_gate_to_node, encode_gate_to_node_within, encode_node_to_gate, encode_node_to_gate_within,
};
pub use traceparent::TraceParent;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use bytes::Bytes;

/// A player's user id, as in due (`int64`). [`NO_UID`] means "not logged in".
pub type Uid = i64;
/// The uid of a session that is not bound to a user.
pub const NO_UID: Uid = 0;
/// A client connection, unique within one gate for the gate's lifetime.
pub type ConnectionId = u64;
/// Matches an acknowledged operation with its answer, unique per link direction.
pub type RequestId = u64;

/// What a node tells gates about itself; gates pick nodes for new players from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NodeState {
    /// Takes new players.
    #[default]
    Work,
    /// Takes new players only when no node is in `Work`.
    Busy,
    /// Takes no new players; keeps serving the players bound to it.
    Draining,
    /// Serves nobody; about to exit.
    Shut,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Work => "work",
            NodeState::Busy => "busy",
            NodeState::Draining => "draining",
            NodeState::Shut => "shut",
        }
    }

    /// Whether stateful traffic of bound players is still served.
    pub fn serves_bound_players(self) -> bool {
        !matches!(self, NodeState::Shut)
    }

    pub fn to_u8(self) -> u8 {
        match self {
            NodeState::Work => 0,
            NodeState::Busy => 1,
            NodeState::Draining => 2,
            NodeState::Shut => 3,
        }
    }

    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => NodeState::Work,
            1 => NodeState::Busy,
            2 => NodeState::Draining,
            3 => NodeState::Shut,
            _ => return None,
        })
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a node state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node state {0:?} is not one of: work, busy, draining, shut")]
pub struct UnknownNodeState(pub String);

impl FromStr for NodeState {
    type Err = UnknownNodeState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "work" => Ok(NodeState::Work),
            "busy" => Ok(NodeState::Busy),
            "draining" => Ok(NodeState::Draining),
            "shut" => Ok(NodeState::Shut),
            other => Err(UnknownNodeState(other.to_owned())),
        }
    }
}

/// One route a node serves and how the gate must treat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    pub route: i32,
    /// Packets go to the node the player is bound to, not to any node.
    pub stateful: bool,
    /// Only sessions bound to a uid may use it.
    pub authorized: bool,
    /// Not reachable from clients at all (node-to-node use only).
    pub internal: bool,
}

/// Whom a node's delivery or disconnect is for, on the gate that receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Connection(ConnectionId),
    User(Uid),
    Users(Vec<Uid>),
    /// Every session of the gate.
    Broadcast,
}

/// Why a gate refused an acknowledged operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AckError {
    #[error("no such connection on the gate")]
    UnknownConnection,
    #[error("no session of that user on the gate")]
    UnknownUser,
    #[error("the gate is shutting down")]
    ShuttingDown,
}

impl AckError {
    pub fn to_u8(self) -> u8 {
        match self {
            AckError::UnknownConnection => 1,
            AckError::UnknownUser => 2,
            AckError::ShuttingDown => 3,
        }
    }

    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => AckError::UnknownConnection,
            2 => AckError::UnknownUser,
            3 => AckError::ShuttingDown,
            _ => return None,
        })
    }
}

/// Matches a node-to-node call with its reply, unique per link direction.
pub type CallId = u64;

/// Bits of a gate's `features` ([`GateToNode::Hello`]): what the gate can do beyond version 1's base.
pub mod feature {
    /// The gate relays node-to-node calls ([`super::NodeToGate::Call`]) and applies per-pool node
    /// bindings ([`super::NodeToGate::UserNode`] with a pool).
    pub const CALLS: u32 = 0x01;
    /// Every feature this code has.
    pub const ALL: u32 = CALLS;
}

/// Where a node-to-node call goes, as the calling node names it to a gate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallTarget {
    /// Any node of the pool that serves the route, by the gate's routing policy (never a draining node).
    Pool(String),
    /// The node with this id, whatever its state (as long as it serves bound players).
    Node(String),
}

/// How a node-to-node call ended, as the gate or the called node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallStatus {
    /// The handler answered; the body is its reply payload.
    Ok,
    /// The handler failed; the body is the error reply payload the node's error shape gives.
    RemoteError,
    /// No linked node of the named pool serves the route (or no node has the named id).
    NoNode,
    /// The called node went away before it answered.
    NodeGone,
    /// The called node does not serve the route.
    UnknownRoute,
    /// Too much in flight: the gate's call table or the called node's call slots are full.
    Overloaded,
}

impl CallStatus {
    pub fn to_u8(self) -> u8 {
        match self {
            CallStatus::Ok => 0,
            CallStatus::RemoteError => 1,
            CallStatus::NoNode => 2,
            CallStatus::NodeGone => 3,
            CallStatus::UnknownRoute => 4,
            CallStatus::Overloaded => 5,
        }
    }

    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => CallStatus::Ok,
            1 => CallStatus::RemoteError,
            2 => CallStatus::NoNode,
            3 => CallStatus::NodeGone,
            4 => CallStatus::UnknownRoute,
            5 => CallStatus::Overloaded,
            _ => return None,
        })
    }
}

/// Everything a gate sends to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateToNode {
    /// First message on a link; `features` are the [`feature`] bits the gate supports.
    Hello { gate_id: String, features: u32 },
    /// A client's data packet, after the size field, as received.
    Packet {
        cid: ConnectionId,
        uid: Uid,
        body: Bytes,
        /// The context of the gate's span for this packet, when the gate traces it (sampled only);
        /// the node's handler span continues the trace.
        trace: Option<TraceParent>,
        /// The client's address as the gate saw it, when the gate knows it.
        peer: Option<SocketAddr>,
    },
    /// A connection that reached this node is gone.
    Disconnected { cid: ConnectionId, uid: Uid },
    /// The answer to a node's acknowledged operation.
    Ack {
        request: RequestId,
        result: Result<(), AckError>,
    },
    /// Liveness of an idle link.
    Heartbeat,
    /// A node-to-node call for this node, relayed by the gate: run `route`'s handler on `body` (a payload in
    /// the cluster's codec) on behalf of `uid` (or [`NO_UID`]), and answer with a `CallReply` of the same
    /// id unless `oneway`.
    Call {
        call: CallId,
        /// The calling node's id.
        from: String,
        route: i32,
        uid: Uid,
        oneway: bool,
        body: Bytes,
        trace: Option<TraceParent>,
    },
    /// The outcome of a call this node made.
    CallReply {
        call: CallId,
        status: CallStatus,
        body: Bytes,
    },
}

/// Everything a node sends to a gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeToGate {
    /// First message on a link: who the node is, what it serves and whether it takes new players.
    Hello {
        node_id: String,
        state: NodeState,
        routes: Vec<RouteSpec>,
        /// The node's pool; `None` (an older node) means the default pool.
        pool: Option<String>,
    },
    /// The node's state changed.
    State(NodeState),
    /// Write `packet` (a whole client packet, size field included) to the target sessions.
    Deliver {
        target: Target,
        packet: Bytes,
        /// The context of the node's span that sent it (a traced handler's response or push), so the
        /// gate's delivery joins the trace.
        trace: Option<TraceParent>,
    },
    /// Bind `uid` to connection `cid` (acknowledged).
    BindUser {
        request: RequestId,
        cid: ConnectionId,
        uid: Uid,
    },
    /// Drop the binding of `uid` to its connection, keeping the connection (acknowledged).
    UnbindUser { request: RequestId, uid: Uid },
    /// `uid`'s stateful traffic for `pool` (`None`: the sending node's pool) goes to `node_id` from now
    /// on, or to no node of that pool (`None`).
    UserNode {
        uid: Uid,
        node_id: Option<String>,
        pool: Option<String>,
    },
    /// Close the target sessions, after writing the packets already queued for them.
    Disconnect { target: Target },
    /// Liveness of an idle link.
    Heartbeat,
    /// Call `route` on another node (through this gate, which must have announced [`feature::CALLS`]).
    Call {
        call: CallId,
        target: CallTarget,
        route: i32,
        uid: Uid,
        oneway: bool,
        body: Bytes,
        trace: Option<TraceParent>,
    },
    /// The answer to a [`GateToNode::Call`] this node handled.
    CallReply {
        call: CallId,
        status: CallStatus,
        body: Bytes,
    },
}

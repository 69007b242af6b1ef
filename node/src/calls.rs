//! Node-to-node calls: a handler, hook or tick calls a route on another node and awaits its typed reply
//! ([`Outbound::call`]), or delivers without waiting ([`Outbound::notify`]); and this node serves the calls
//! other nodes make.
//!
//! Calls travel over the gate links every node already has (node → any gate → callee → gate → node): the
//! gates know every node's pool, state and routes, so a call to "any node of pool `battle`" is routed by the
//! same snapshot and policy as a player's packet, and no second mesh of node-to-node links, listeners or
//! credentials exists. Each side bounds what it has in flight; every call has a deadline; failures are typed
//! ([`CallError`]); the caller's trace context travels with the call.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchyard_cluster::locator::LocatorError;
use switchyard_cluster::telemetry;
use switchyard_protocol::link::{
    CallId, CallStatus, CallTarget, NO_UID, NodeToGate, TraceParent, Uid, feature,
};
use tokio::sync::oneshot;

use crate::codec::CodecError;
use crate::context::{CallOrigin, Context, Incoming};
use crate::inner::NodeInner;
use crate::lanes;
use crate::metrics::{CallDirection, CallLabels, CallOutcome};
use crate::outbound::{GateConn, Outbound};

/// Whom a node-to-node call is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Callee {
    /// Any node of the pool that serves the route, by the gates' routing policy; never a draining node.
    Pool(String),
    /// The node with this id (a match host, a named service), even while it drains.
    Node(String),
    /// The node `uid` is bound to in `pool` (looked up in the locator); the call runs on behalf of `uid`.
    Player { pool: String, uid: Uid },
}

impl Callee {
    pub fn pool(pool: impl Into<String>) -> Self {
        Callee::Pool(pool.into())
    }

    pub fn node(id: impl Into<String>) -> Self {
        Callee::Node(id.into())
    }

    pub fn player(pool: impl Into<String>, uid: Uid) -> Self {
        Callee::Player {
            pool: pool.into(),
            uid,
        }
    }
}

impl std::fmt::Display for Callee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Callee::Pool(pool) => write!(f, "pool {pool:?}"),
            Callee::Node(id) => write!(f, "node {id:?}"),
            Callee::Player { pool, uid } => write!(f, "the node of player {uid} in pool {pool:?}"),
        }
    }
}

/// Why a node-to-node call failed, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No gate that relays calls is linked to this node (none yet, or only gates of an older release).
    #[error("no linked gate relays node-to-node calls")]
    NoGate,
    /// No linked node of the pool (or with the id) exists, or none of the pool takes new work.
    #[error("no node of {callee} is available for route {route}")]
    NoNode { callee: String, route: i32 },
    /// The pool or node exists but does not serve the route (the caller's or the deployment's fault).
    #[error("{callee} does not serve route {route}")]
    UnknownRoute { callee: String, route: i32 },
    /// The player has no node binding in the pool.
    #[error("player {uid} is bound to no node of pool {pool:?}")]
    NotBound { pool: String, uid: Uid },
    /// The called node, or the gate relaying the call, went away before the answer came.
    #[error("the called node went away before it answered")]
    NodeGone,
    /// No answer within the deadline; the callee may still run the handler.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Too many calls in flight: this node's ([`crate::NodeConfig::max_calls_in_flight`]), a gate's, or the
    /// callee's. Back off and retry.
    #[error("too many calls in flight ({0})")]
    Overloaded(&'static str),
    /// The called handler failed and answered with an error reply (`{"code": n, "error": "..."}` in the
    /// default shape; `code` and `message` are empty when the callee uses another shape).
    #[error("the called handler failed with code {code}: {message}")]
    Remote {
        code: i64,
        message: String,
        /// The error reply's payload as the callee sent it.
        body: Bytes,
    },
    /// The request did not encode or the reply did not decode with the node's codec.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The locator failed while looking up a player's node.
    #[error(transparent)]
    Locator(#[from] LocatorError),
}

impl CallError {
    fn outcome(&self) -> CallOutcome {
        match self {
            CallError::NoGate => CallOutcome::NoGate,
            CallError::NoNode { .. } => CallOutcome::NoNode,
            CallError::UnknownRoute { .. } => CallOutcome::UnknownRoute,
            CallError::NotBound { .. } => CallOutcome::NotBound,
            CallError::NodeGone => CallOutcome::NodeGone,
            CallError::Timeout(_) => CallOutcome::Timeout,
            CallError::Overloaded(_) => CallOutcome::Overloaded,
            CallError::Remote { .. } => CallOutcome::RemoteError,
            CallError::Codec(_) | CallError::Locator(_) => CallOutcome::Error,
        }
    }
}

/// The default error reply's shape, read back from a failed call.
#[derive(serde::Deserialize)]
struct ErrorShape {
    code: i64,
    error: String,
}

impl Outbound {
    /// Calls `route` on `callee` with `request` and decodes the reply, waiting
    /// [`crate::NodeConfig::call_timeout`] at most.
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn call<Req, Resp>(&self, callee: Callee, route: i32, request: &Req) -> Result<Resp, CallError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.call_timeout(callee, route, request, self.config().call_timeout)
            .await
    }

    /// [`Outbound::call`] with its own deadline (capped at [`crate::config::MAX_CALL_TIMEOUT`]).
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn call_timeout<Req, Resp>(
        &self,
        callee: Callee,
        route: i32,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let body = self.encode_body(request)?;
        let reply = self.call_raw(callee, route, body, timeout).await?;
        let codec = self.config().codec;
        codec.decode(&reply).map_err(|error| {
            self.count_call(route, CallOutcome::Error);
            CallError::Codec(error)
        })
    }

    /// Delivers `request` to `route` on `callee` without waiting for the handler: returns once a gate has
    /// the call. The callee's reply, if any, is dropped.
    ///
    /// # Errors
    /// The request does not encode, no gate relays calls, the player has no node, or the locator failed.
    pub async fn notify<Req: Serialize + ?Sized>(
        &self,
        callee: Callee,
        route: i32,
        request: &Req,
    ) -> Result<(), CallError> {
        let body = self.encode_body(request)?;
        let (target, uid) = self.resolve(&callee).await?;
        let gate = self.call_gate().ok_or(CallError::NoGate)?;
        let message = NodeToGate::Call {
            call: 0,
            target,
            route,
            uid,
            oneway: true,
            body,
            trace: current_trace(),
        };
        gate.send(message).await.map_err(|_| CallError::NoGate)?;
        self.count_call(route, CallOutcome::Ok);
        Ok(())
    }

    /// Calls `route` on `callee` with a payload already encoded in the cluster's codec, and returns the
    /// reply's payload.
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn call_raw(
        &self,
        callee: Callee,
        route: i32,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        let started = Instant::now();
        let result = self
            .call_once(&callee, route, body, timeout.min(crate::config::MAX_CALL_TIMEOUT))
            .await;
        let metrics = &self.shared.metrics;
        match &result {
            Ok(_) => self.count_call(route, CallOutcome::Ok),
            Err(error) => {
                self.count_call(route, error.outcome());
                tracing::debug!(%callee, route, %error, "call failed");
            }
        }
        metrics
            .call_duration
            .get_or_create(&crate::metrics::RouteLabels { route })
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn call_once(
        &self,
        callee: &Callee,
        route: i32,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        let shared = &self.shared;
        let Ok(_slot) = shared.call_slots.clone().try_acquire_owned() else {
            return Err(CallError::Overloaded("this node's calls in flight"));
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let (target, uid) = tokio::time::timeout_at(deadline, self.resolve(callee))
            .await
            .map_err(|_| CallError::Timeout(timeout))??;
        let gate = self.call_gate().ok_or(CallError::NoGate)?;
        let id: CallId = shared.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        gate.calls.lock().insert(id, tx);
        let _pending = PendingGuard { gate: &gate, id };
        shared.metrics.calls_in_flight.inc();
        let _in_flight = on_drop(|| {
            shared.metrics.calls_in_flight.dec();
        });
        let message = NodeToGate::Call {
            call: id,
            target,
            route,
            uid,
            oneway: false,
            body,
            trace: current_trace(),
        };
        let exchange = async {
            gate.tx.send(message).await.map_err(|_| CallError::NodeGone)?;
            rx.await.map_err(|_| CallError::NodeGone)
        };
        let (status, reply) = tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| CallError::Timeout(timeout))??;
        let callee_name = || callee.to_string();
        match status {
            CallStatus::Ok => Ok(reply),
            CallStatus::RemoteError => {
                let shape: Option<ErrorShape> = self.config().codec.decode(&reply).ok();
                let (code, message) = shape.map_or((0, String::new()), |shape| (shape.code, shape.error));
                Err(CallError::Remote {
                    code,
                    message,
                    body: reply,
                })
            }
            CallStatus::NoNode => Err(CallError::NoNode {
                callee: callee_name(),
                route,
            }),
            CallStatus::UnknownRoute => Err(CallError::UnknownRoute {
                callee: callee_name(),
                route,
            }),
            CallStatus::NodeGone => Err(CallError::NodeGone),
            CallStatus::Overloaded => Err(CallError::Overloaded(
                "the gate's or the callee's calls in flight",
            )),
        }
    }

    /// The wire target and the uid a call runs on behalf of.
    async fn resolve(&self, callee: &Callee) -> Result<(CallTarget, Uid), CallError> {
        Ok(match callee {
            Callee::Pool(pool) => (CallTarget::Pool(pool.clone()), NO_UID),
            Callee::Node(id) => (CallTarget::Node(id.clone()), NO_UID),
            Callee::Player { pool, uid } => {
                let node = self.shared.locator.locate_node(*uid, pool).await?;
                let node = node.ok_or_else(|| CallError::NotBound {
                    pool: pool.clone(),
                    uid: *uid,
                })?;
                (CallTarget::Node(node), *uid)
            }
        })
    }

    /// A linked gate that relays calls, taken in turn.
    pub(crate) fn call_gate(&self) -> Option<Arc<GateConn>> {
        let gates = self.shared.gates.lock();
        let able: Vec<&Arc<GateConn>> = gates
            .values()
            .filter(|gate| gate.features & feature::CALLS != 0)
            .collect();
        if able.is_empty() {
            return None;
        }
        let turn = self.shared.call_turn.fetch_add(1, Ordering::Relaxed);
        Some(able[turn % able.len()].clone())
    }

    fn encode_body<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CallError> {
        let mut buf = BytesMut::with_capacity(64);
        self.config().codec.encode(value, &mut buf)?;
        Ok(buf.freeze())
    }

    fn count_call(&self, route: i32, outcome: CallOutcome) {
        self.shared
            .metrics
            .calls
            .get_or_create(&CallLabels {
                direction: CallDirection::Out,
                route,
                outcome,
            })
            .inc();
    }
}

/// The trace context of the span the call is made in (a traced handler's), if any.
fn current_trace() -> Option<TraceParent> {
    telemetry::traceparent(&tracing::Span::current())
}

/// Removes a call's waiter when the call ends, however it ends.
struct PendingGuard<'a> {
    gate: &'a GateConn,
    id: CallId,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.gate.calls.lock().remove(&self.id);
    }
}

/// Runs `f` when dropped.
fn on_drop(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// A call another node made, as the gate relayed it.
#[derive(Debug)]
pub(crate) struct IncomingCall {
    pub(crate) call: CallId,
    pub(crate) from: String,
    pub(crate) route: i32,
    pub(crate) uid: Uid,
    pub(crate) oneway: bool,
    pub(crate) body: Bytes,
    pub(crate) trace: Option<TraceParent>,
}

/// Runs a call another node made on its route's handler, in a task of its own (calls are not a player's
/// packets and keep no order), bounded by [`crate::NodeConfig::max_incoming_calls`]. Every route is
/// callable, internal ones included. The drain waits for calls in flight.
pub(crate) fn serve(inner: &Arc<NodeInner>, gate: &Arc<GateConn>, call: IncomingCall) {
    let refuse = |status: CallStatus, outcome: CallOutcome| {
        inner.count_served(call.route, outcome);
        if !call.oneway {
            let reply = NodeToGate::CallReply {
                call: call.call,
                status,
                body: Bytes::new(),
            };
            if gate.tx.try_send(reply).is_err() {
                tracing::debug!(gate = %gate.id, "gate link full; call refusal dropped");
            }
        }
    };
    let Some(route) = inner.routes.routes.get(&call.route).cloned() else {
        refuse(CallStatus::UnknownRoute, CallOutcome::UnknownRoute);
        return;
    };
    let Ok(slot) = inner.call_slots.clone().try_acquire_owned() else {
        refuse(CallStatus::Overloaded, CallOutcome::Overloaded);
        return;
    };
    let span = match call.trace {
        Some(parent) => {
            let span = tracing::info_span!(
                target: telemetry::SPAN_TARGET,
                parent: None,
                "node.call",
                route = call.route,
                from = %call.from,
                uid = call.uid,
                outcome = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            telemetry::continue_trace(&span, parent);
            span
        }
        None => tracing::Span::none(),
    };
    let incoming = Incoming {
        gate: gate.clone(),
        cid: 0,
        uid: call.uid,
        route: call.route,
        seq: 0,
        payload: call.body,
        peer: None,
        span,
        call: Some(Arc::new(CallOrigin {
            call: call.call,
            from: call.from,
            oneway: call.oneway,
        })),
    };
    inner.in_flight.fetch_add(1, Ordering::AcqRel);
    let inner = inner.clone();
    let handling = inner.clone();
    inner.tasks.spawn(async move {
        let _slot = slot;
        let ctx = Context::new(handling.outbound.clone(), incoming, Default::default());
        let answered = ctx.clone();
        let outcome = lanes::handle(&handling, ctx, &route).await;
        if !answered.has_responded() {
            // A handler that answered nothing still ends the caller's wait: an empty reply.
            let _ = answered.respond_call(CallStatus::Ok, Bytes::new()).await;
        }
        handling.count_served(
            route.spec.route,
            if outcome {
                CallOutcome::Ok
            } else {
                CallOutcome::RemoteError
            },
        );
        handling.in_flight.fetch_sub(1, Ordering::AcqRel);
    });
}

impl NodeInner {
    fn count_served(&self, route: i32, outcome: CallOutcome) {
        self.metrics()
            .calls
            .get_or_create(&CallLabels {
                direction: CallDirection::In,
                route,
                outcome,
            })
            .inc();
    }
}

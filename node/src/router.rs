//! A game's routes and hooks, and the state they share. Route options tell gates how to treat a route
//! (they learn them from the node's hello); the node checks them again itself.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::Serialize;
use switchyard_protocol::link::{ConnectionId, RouteSpec, Uid};

use crate::handler::{BoxedHandler, Handler, ReplyEncoder};
use crate::handler_error::{HandlerError, default_error_reply};
use crate::outbound::Outbound;

/// A connection that reached this node has closed.
#[derive(Debug, Clone)]
pub struct Disconnect {
    pub gate_id: Arc<str>,
    pub cid: ConnectionId,
    /// The uid it was bound to, or 0.
    pub uid: Uid,
    /// This node, to push to others or look players up.
    pub node: Outbound,
}

/// A player bound to this node logged in again: after a disconnect, or through another gate. The node
/// still holds their state; the game may resend it.
#[derive(Debug, Clone)]
pub struct Reconnect {
    pub uid: Uid,
    /// The gate the player is connected to now.
    pub gate_id: String,
    pub node: Outbound,
}

/// A moment of the node's life: started serving, began draining, shutting down.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub node: Outbound,
}

/// One run of a [`Router::tick`] handler.
#[derive(Debug, Clone)]
pub struct Tick {
    /// 1 for the first run, then one more each run (a run that was late skips, never doubles up).
    pub count: u64,
    pub node: Outbound,
}

pub(crate) type Hook<E> = Arc<dyn Fn(E) -> BoxFuture<'static, ()> + Send + Sync>;
pub(crate) type ErrorReplyMapper =
    Arc<dyn Fn(&HandlerError, &ReplyEncoder) -> Result<Bytes, HandlerError> + Send + Sync>;

/// How gates (and the node) treat a route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteOptions {
    stateful: bool,
    authorized: bool,
    internal: bool,
}

impl RouteOptions {
    /// Any node that takes new players may handle it.
    pub fn stateless() -> Self {
        Self::default()
    }

    /// Goes to the node the player is bound to (and implies a logged-in player).
    pub fn stateful() -> Self {
        RouteOptions {
            stateful: true,
            ..Self::default()
        }
    }

    /// Only sessions bound to a uid may use it.
    pub fn authorized(self) -> Self {
        RouteOptions {
            authorized: true,
            ..self
        }
    }

    /// Not reachable by clients.
    pub fn internal(self) -> Self {
        RouteOptions {
            internal: true,
            ..self
        }
    }
}

pub(crate) struct Route {
    pub(crate) spec: RouteSpec,
    pub(crate) handler: BoxedHandler,
}

pub(crate) struct TickSpec {
    pub(crate) interval: Duration,
    pub(crate) handler: Hook<Tick>,
}

/// Everything a router holds, with its state captured by the handlers: what a node runs.
#[derive(Clone)]
pub(crate) struct Routes {
    pub(crate) routes: HashMap<i32, Arc<Route>>,
    pub(crate) on_disconnect: Option<Hook<Disconnect>>,
    pub(crate) on_reconnect: Option<Hook<Reconnect>>,
    pub(crate) on_start: Option<Hook<Lifecycle>>,
    pub(crate) on_drain: Option<Hook<Lifecycle>>,
    pub(crate) on_shutdown: Option<Hook<Lifecycle>>,
    pub(crate) ticks: Vec<Arc<TickSpec>>,
    pub(crate) error_reply: ErrorReplyMapper,
}

impl Routes {
    pub(crate) fn specs(&self) -> Vec<RouteSpec> {
        let mut specs: Vec<RouteSpec> = self.routes.values().map(|route| route.spec).collect();
        specs.sort_by_key(|spec| spec.route);
        specs
    }
}

/// The routes and hooks of a game, sharing a state `S` (`()` for none).
///
/// ```no_run
/// use std::sync::Arc;
/// use switchyard_node::{Context, Payload, RouteOptions, Router, State};
///
/// #[derive(Default)]
/// struct Game { greeting: String }
///
/// async fn hello(_: Context, State(game): State<Arc<Game>>) -> Payload<serde_json::Value> {
///     Payload(serde_json::json!({ "code": 0, "greeting": game.greeting }))
/// }
///
/// let router = Router::with_state(Arc::new(Game::default()))
///     .route(100, RouteOptions::stateless(), hello);
/// ```
pub struct Router<S = ()> {
    state: S,
    pub(crate) routes: Routes,
}

impl<S> fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut routes: Vec<_> = self.routes.routes.keys().collect();
        routes.sort();
        f.debug_struct("Router")
            .field("routes", &routes)
            .field("ticks", &self.routes.ticks.len())
            .finish_non_exhaustive()
    }
}

impl Default for Router<()> {
    fn default() -> Self {
        Router::with_state(())
    }
}

impl Router<()> {
    /// A router without shared state.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S: Clone + Send + Sync + 'static> Router<S> {
    /// A router whose handlers and hooks share `state` (cloned for each call: make it an `Arc` or a
    /// handle that is cheap to clone).
    pub fn with_state(state: S) -> Self {
        let error_reply: ErrorReplyMapper = Arc::new(|error: &HandlerError, encoder: &ReplyEncoder| {
            encoder.encode(&default_error_reply(error))
        });
        Router {
            state,
            routes: Routes {
                routes: HashMap::new(),
                on_disconnect: None,
                on_reconnect: None,
                on_start: None,
                on_drain: None,
                on_shutdown: None,
                ticks: Vec::new(),
                error_reply,
            },
        }
    }

    /// Adds a route. A route added twice keeps the last handler.
    pub fn route<T, H: Handler<T, S>>(mut self, route: i32, options: RouteOptions, handler: H) -> Self {
        let spec = RouteSpec {
            route,
            stateful: options.stateful,
            authorized: options.authorized,
            internal: options.internal,
        };
        let state = self.state.clone();
        let handler: BoxedHandler = Arc::new(move |ctx| handler.call(ctx, &state));
        self.routes
            .routes
            .insert(route, Arc::new(Route { spec, handler }));
        self
    }

    fn hook<E, F, Fut>(&self, hook: F) -> Hook<E>
    where
        F: Fn(E, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let state = self.state.clone();
        Arc::new(move |event| Box::pin(hook(event, state.clone())))
    }

    /// Called once for every connection that reached this node and closed, after its last packet.
    pub fn on_disconnect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Disconnect, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.routes.on_disconnect = Some(self.hook(hook));
        self
    }

    /// Called when a player bound to this node logs in again, through any gate.
    pub fn on_reconnect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Reconnect, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.routes.on_reconnect = Some(self.hook(hook));
        self
    }

    /// Called when the node starts serving gate links.
    pub fn on_start<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Lifecycle, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.routes.on_start = Some(self.hook(hook));
        self
    }

    /// Called when the node begins to drain (it takes no new players from then on).
    pub fn on_drain<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Lifecycle, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.routes.on_drain = Some(self.hook(hook));
        self
    }

    /// Called once when the node shuts down, before its links close.
    pub fn on_shutdown<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Lifecycle, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.routes.on_shutdown = Some(self.hook(hook));
        self
    }

    /// Runs `handler` every `interval` from the start of serving until shutdown: a game loop for
    /// server-driven games. Runs never overlap; a late run skips the ticks it missed.
    ///
    /// # Panics
    /// `interval` is zero.
    pub fn tick<F, Fut>(mut self, interval: Duration, handler: F) -> Self
    where
        F: Fn(Tick, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        assert!(!interval.is_zero(), "a tick interval must be longer than zero");
        let handler = self.hook(handler);
        self.routes.ticks.push(Arc::new(TickSpec { interval, handler }));
        self
    }

    /// Replaces the default error reply (`{"code": n, "error": "..."}`): `mapper` makes the value the
    /// player receives, encoded with the node's codec.
    pub fn error_reply<F, T>(mut self, mapper: F) -> Self
    where
        F: Fn(&HandlerError) -> T + Send + Sync + 'static,
        T: Serialize,
    {
        self.routes.error_reply =
            Arc::new(move |error: &HandlerError, encoder: &ReplyEncoder| encoder.encode(&mapper(error)));
        self
    }

    /// The route table this router announces to gates.
    pub fn specs(&self) -> Vec<RouteSpec> {
        self.routes.specs()
    }
}

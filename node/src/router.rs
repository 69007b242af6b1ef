//! Routes and their handlers. A handler is any `async fn(Context) -> HandlerResult`; its route options tell
//! gates how to treat the route (they learn them from the node's hello).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use switchyard_protocol::link::{ConnectionId, RouteSpec, Uid};

use crate::context::Context;

/// What a handler may fail with. The runtime counts and logs it; the client gets nothing unless the
/// handler answered before failing.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;
pub type HandlerResult = Result<(), HandlerError>;

pub(crate) type BoxedHandler = Arc<dyn Fn(Context) -> BoxFuture<'static, HandlerResult> + Send + Sync>;

/// A connection that reached this node has closed.
#[derive(Debug, Clone)]
pub struct Disconnect {
    pub gate_id: Arc<str>,
    pub cid: ConnectionId,
    /// The uid it was bound to, or 0.
    pub uid: Uid,
}

pub(crate) type DisconnectHook = Arc<dyn Fn(Disconnect) -> BoxFuture<'static, ()> + Send + Sync>;

/// How gates treat a route.
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

/// The routes of a node.
#[derive(Default, Clone)]
pub struct Router {
    pub(crate) routes: HashMap<i32, Arc<Route>>,
    pub(crate) on_disconnect: Option<DisconnectHook>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut routes: Vec<_> = self.routes.keys().collect();
        routes.sort();
        f.debug_struct("Router")
            .field("routes", &routes)
            .finish_non_exhaustive()
    }
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route. A route added twice keeps the last handler.
    pub fn route<F, Fut>(mut self, route: i32, options: RouteOptions, handler: F) -> Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let spec = RouteSpec {
            route,
            stateful: options.stateful,
            authorized: options.authorized,
            internal: options.internal,
        };
        let handler: BoxedHandler = Arc::new(move |ctx| Box::pin(handler(ctx)));
        self.routes.insert(route, Arc::new(Route { spec, handler }));
        self
    }

    /// Called once for every connection that reached this node and closed.
    pub fn on_disconnect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Disconnect) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_disconnect = Some(Arc::new(move |event| Box::pin(hook(event))));
        self
    }

    pub(crate) fn specs(&self) -> Vec<RouteSpec> {
        let mut specs: Vec<RouteSpec> = self.routes.values().map(|route| route.spec).collect();
        specs.sort_by_key(|spec| spec.route);
        specs
    }
}

//! The one-call node runtime: a game's `main` is its router and [`run`].
//!
//! ```no_run
//! use switchyard_node::{Context, HandlerResult, RouteOptions, Router};
//!
//! async fn echo(ctx: Context) -> HandlerResult {
//!     ctx.respond_bytes(ctx.payload()).await?;
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), switchyard_node::RuntimeError> {
//!     switchyard_node::run(Router::new().route(1, RouteOptions::stateless(), echo)).await
//! }
//! ```
//!
//! [`run`] reads the pod contract ([`NodeArgs`]: flags and `SWITCHYARD_*` / `OTEL_*` variables, exactly
//! what the operator writes), installs the log output and OpenTelemetry trace export, connects the locator
//! (memory, or Redis with the start-up wait), accepts gate links, serves `/healthz`, `/readyz` and
//! `/metrics` (the game's own metrics too: [`Runtime::registry_mut`]), reports the bound players on its pod
//! and watches for the drain annotation (in Kubernetes), and drains on SIGTERM, Ctrl-C or the annotation.
//! It returns once the node has drained and stopped. A game with flags of its own flattens [`NodeArgs`]
//! into its parser and calls [`run_with`].
//!
//! `switchyard node` (the demo) is this runtime with [`crate::demo::router`].

mod args;
mod error;

use clap::{CommandFactory as _, FromArgMatches as _};
use prometheus_client::registry::Registry;
use switchyard_cluster::admin::AdminServer;
use switchyard_cluster::link::tcp::{TcpAcceptor, TcpLinkConfig};
use switchyard_cluster::process::shutdown_on_signal;
use tokio_util::sync::CancellationToken;

pub use args::NodeArgs;
pub use error::RuntimeError;

use crate::{DrainOutcome, Node, NodeConfig, Router};

/// Runs `router` as a node with the settings of the command line and the environment, until it has
/// drained after SIGTERM (or Ctrl-C, or the drain annotation followed by SIGTERM). A bad flag prints
/// clap's message and exits, as command-line programs do.
///
/// # Errors
/// [`RuntimeError`]: a setting is wrong, or a listener, Redis or the Kubernetes API is not available.
pub async fn run<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Result<(), RuntimeError> {
    Runtime::from_command_line(router).run().await
}

/// [`run`] with settings the game parsed itself (its own parser with [`NodeArgs`] flattened in).
///
/// # Errors
/// As [`run`].
pub async fn run_with<S: Clone + Send + Sync + 'static>(
    args: NodeArgs,
    router: Router<S>,
) -> Result<(), RuntimeError> {
    Runtime::new(args, router).run().await
}

/// The runtime before it runs: for games that register their own metrics ([`Runtime::registry_mut`]) or
/// name their trace service.
///
/// ```no_run
/// use prometheus_client::metrics::counter::Counter;
///
/// # async fn main_() -> Result<(), switchyard_node::RuntimeError> {
/// let matches_played = Counter::<u64>::default();
/// let router = switchyard_node::Router::new(); // handlers holding matches_played.clone()
/// let mut runtime = switchyard_node::Runtime::from_command_line(router);
/// runtime
///     .registry_mut()
///     .register("matches_played", "Matches played to the end", matches_played.clone());
/// runtime.run().await
/// # }
/// ```
#[derive(Debug)]
pub struct Runtime<S = ()> {
    args: NodeArgs,
    router: Router<S>,
    registry: Registry,
    service_name: String,
}

impl<S: Clone + Send + Sync + 'static> Runtime<S> {
    /// The runtime for `router` with `args`.
    pub fn new(args: NodeArgs, router: Router<S>) -> Self {
        Runtime {
            args,
            router,
            registry: Registry::default(),
            service_name: "switchyard-node".to_owned(),
        }
    }

    /// The runtime for `router` with the settings of the command line and the environment; a bad flag
    /// prints clap's message and exits the process. A first argument `node` is skipped: it is what a
    /// `GameCluster` passes by default (`spec.node.args`, written for the `switchyard` image), so a game's
    /// image runs with or without it.
    pub fn from_command_line(router: Router<S>) -> Self {
        // Usage lines name the game's binary, not this crate.
        let program = std::env::args_os()
            .next()
            .and_then(|path| {
                std::path::Path::new(&path)
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "game-node".to_owned());
        let args = std::env::args_os()
            .enumerate()
            .filter(|(index, arg)| !(*index == 1 && arg == "node"))
            .map(|(_, arg)| arg);
        let matches = NodeArgs::command().bin_name(program).get_matches_from(args);
        let args = NodeArgs::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
        Runtime::new(args, router)
    }

    /// The settings it will run with.
    pub fn args(&self) -> &NodeArgs {
        &self.args
    }

    /// The metrics registry served on `/metrics`: register the game's own metrics here before
    /// [`Runtime::run`]. The node's and the locator's metrics join them.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The trace service name when `OTEL_SERVICE_NAME` is unset (the operator sets it to
    /// `switchyard-node`). Default `switchyard-node`.
    #[must_use]
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }

    /// Runs until the node has drained after SIGTERM or Ctrl-C (see [`run`]).
    ///
    /// # Errors
    /// As [`run`].
    pub async fn run(self) -> Result<(), RuntimeError> {
        let shutdown = shutdown_on_signal();
        self.run_until(shutdown).await
    }

    /// Runs until `shutdown` is cancelled (in place of SIGTERM), then drains and returns: for embedding
    /// the runtime where the caller owns the signals.
    ///
    /// # Errors
    /// As [`run`].
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<(), RuntimeError> {
        let Runtime {
            args,
            router,
            mut registry,
            service_name,
        } = self;
        let id = args.process.id("node");
        let telemetry = args.telemetry.init(&service_name, &id)?;
        let result = serve(&args, id, router, &mut registry, &shutdown).await;
        if let Err(error) = &result {
            tracing::error!("{error}");
        }
        telemetry.shutdown_async().await;
        result
    }
}

/// The node's life: start everything, wait for SIGTERM or the drain annotation, drain, stop.
async fn serve<S>(
    args: &NodeArgs,
    id: String,
    router: Router<S>,
    registry: &mut Registry,
    shutdown: &CancellationToken,
) -> Result<(), RuntimeError> {
    let packet = args.packet.config()?;
    // Before the locator's start-up wait: a bad link TLS file stops the node at once.
    let tls = args
        .link_tls
        .load(switchyard_cluster::link::tls::LinkRole::Node)?;
    let config = NodeConfig {
        packet,
        codec: args.codec,
        pool: args.pool.clone(),
        drain_deadline: args.drain_deadline,
        max_lanes_per_link: args.max_lanes_per_link,
        link_lane_bytes: args.link_lane_bytes,
        ..NodeConfig::new(id.clone())
    };
    let locator = args.locator.build(registry, shutdown).await?;
    // Every route the node serves, for its load report and so the pod's routes annotation (the operator's
    // route-conflict check).
    // Internal ones too: gates give each route, internal or not, to one pool, and route calls by it.
    let routes: Vec<i32> = router.routes.specs().iter().map(|spec| spec.route).collect();
    let node = Node::new(config, router, locator, registry)?;
    let link = TcpLinkConfig {
        tls: tls.clone(),
        max_links: args.max_links,
        ..args.link_settings.config(&packet)
    };
    let acceptor = TcpAcceptor::bind(args.link, link).await?;
    acceptor
        .metrics()
        .register(registry.sub_registry_with_prefix("switchyard_node"));
    tracing::info!(
        node = %id,
        link = %acceptor.local_addr(),
        link_tls = tls.is_some(),
        max_links = args.max_links,
        codec = %args.codec,
        "accepting gate links"
    );
    node.serve(acceptor);
    let admin_address = args.process.http_or(NodeArgs::DEFAULT_HTTP);
    // The load report the operator turns into the pod's annotations (nodes may not write pods).
    let load = switchyard_cluster::load::router(node.watch_bound_players(), &routes);
    let admin = AdminServer::start_with(
        admin_address,
        std::mem::take(registry),
        vec![node.readiness()],
        load,
    )
    .await
    .map_err(RuntimeError::Admin)?;
    let drain_requested = args
        .kubernetes
        .start_node(node.watch_bound_players(), routes, shutdown)
        .await?;
    tracing::info!(node = %id, admin = %admin.address(), "node running");

    let by_annotation = tokio::select! {
        () = shutdown.cancelled() => false,
        () = drain_requested.cancelled() => true,
    };
    let trigger = if by_annotation {
        "drain annotation"
    } else {
        "SIGTERM"
    };
    tracing::info!(node = %id, bound = node.bound_players(), "{trigger}: draining");
    match node.drain().await {
        DrainOutcome::Empty => tracing::info!(node = %id, "drained: no player left"),
        DrainOutcome::Deadline { players } => {
            tracing::warn!(node = %id, players, "drain deadline passed; players were told to reconnect");
        }
    }
    if by_annotation {
        // A maintenance drain leaves the node idle and unready; exiting would only make the kubelet
        // restart it. It waits for the pod's deletion instead.
        tracing::info!(node = %id, "drained for maintenance; waiting for SIGTERM");
        shutdown.cancelled().await;
    }
    node.shutdown().await;
    admin.stop().await;
    tracing::info!(node = %id, "node stopped");
    Ok(())
}

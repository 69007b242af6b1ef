//! The admin HTTP server of every component: `/healthz` (the process is alive), `/readyz` (it takes new
//! work: a draining gate or node answers 503 so Kubernetes stops offering it) and `/metrics` (Prometheus
//! text format).
//!
//! It is bounded ([`AdminLimits`]): a client must send its request headers within a timeout, and at most
//! so many connections are open at once (more are closed at accept). Both are counted in
//! `switchyard_admin_connections_closed_total{reason}`, next to the component's own metrics, so that a
//! client that opens connections and sends nothing neither pins memory nor keeps probes out for long.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long connections may take to finish after shutdown before they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The pause after a failed accept (out of file descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Bounds of the admin server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// A connection whose request headers are not complete this long after they are awaited is closed.
    pub header_read_timeout: Duration,
    /// Open connections at most; one more is closed at accept.
    pub max_connections: usize,
}

impl Default for AdminLimits {
    /// 5 s for headers (probes and scrapes send theirs at once), 128 connections (probes and a few
    /// scrapers need a handful).
    fn default() -> Self {
        AdminLimits {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 128,
        }
    }
}

/// `reason` a connection was closed by the server: `over_cap` or `header_timeout`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The admin server's own metrics, `switchyard_admin_*`, in a registry of their own (the component's is
/// shared read-only).
#[derive(Debug, Clone, Default)]
struct AdminMetrics {
    connections: Gauge,
    closed: Family<ReasonLabels, Counter>,
}

impl AdminMetrics {
    fn registry(&self) -> Registry {
        let mut registry = Registry::default();
        let admin = registry.sub_registry_with_prefix("switchyard_admin");
        admin.register(
            "connections",
            "Open connections to the admin HTTP server",
            self.connections.clone(),
        );
        admin.register(
            "connections_closed",
            "Admin HTTP connections the server closed: over_cap (at accept, the connection cap was reached), header_timeout (request headers not complete in time)",
            self.closed.clone(),
        );
        registry
    }
}

/// Whether a component takes new work. Cheap to clone and share.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Registry>,
    own_metrics: Arc<Registry>,
    readiness: Vec<Readiness>,
}

/// Serves the admin endpoints on `listener` until `shutdown` is cancelled. The component is ready when
/// every one of `readiness` is (a `dev` process holds a gate and a node).
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Registry>,
    readiness: Vec<Readiness>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, metrics, readiness, Router::new(), shutdown).await
}

/// [`serve`] with `extra` routes next to the admin endpoints (`switchyard dev` adds its browser demo).
///
/// # Errors
/// The listener failed.
pub async fn serve_with(
    listener: TcpListener,
    metrics: Arc<Registry>,
    readiness: Vec<Readiness>,
    extra: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_limited(
        listener,
        metrics,
        readiness,
        extra,
        AdminLimits::default(),
        shutdown,
    )
    .await
}

/// [`serve_with`] with explicit [`AdminLimits`].
///
/// # Errors
/// None today: failed accepts are retried (logged at debug); the signature keeps room for listener errors.
pub async fn serve_limited(
    listener: TcpListener,
    metrics: Arc<Registry>,
    readiness: Vec<Readiness>,
    extra: Router,
    limits: AdminLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let own = AdminMetrics::default();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState {
            metrics,
            own_metrics: Arc::new(own.registry()),
            readiness,
        })
        .merge(extra);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(%error, "admin HTTP accept failed; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            own.closed
                .get_or_create(&ReasonLabels { reason: "over_cap" })
                .inc();
            drop(stream);
            continue;
        };
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let (own, stop) = (own.clone(), shutdown.clone());
        connections.spawn(async move {
            let _slot = slot;
            own.connections.inc();
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            own.connections.dec();
            if let Err(error) = result {
                if error.is_timeout() {
                    own.closed
                        .get_or_create(&ReasonLabels {
                            reason: "header_timeout",
                        })
                        .inc();
                }
                tracing::trace!(%error, "admin HTTP connection ended");
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.shutdown().await;
    }
    Ok(())
}

/// Binds the admin address, with an error that names it.
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("cannot bind admin HTTP address {address}: {error}"),
        )
    })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.iter().all(Readiness::is_ready) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    let mut body = String::new();
    let encoded = encode_registry(&mut body, &state.metrics)
        .and_then(|()| encode_registry(&mut body, &state.own_metrics))
        .and_then(|()| encode_eof(&mut body));
    if let Err(error) = encoded {
        tracing::error!(%error, "encoding metrics failed");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            String::new(),
        );
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// A running admin server ([`serve`] on its own task); stop it last, so probes and scrapes see the whole
/// shutdown.
#[derive(Debug)]
pub struct AdminServer {
    address: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl AdminServer {
    /// Binds `address` and serves `metrics` and `readiness` there.
    ///
    /// # Errors
    /// The address cannot be bound (the error names it).
    pub async fn start(
        address: SocketAddr,
        metrics: Registry,
        readiness: Vec<Readiness>,
    ) -> std::io::Result<AdminServer> {
        Self::start_with(address, metrics, readiness, Router::new()).await
    }

    /// [`AdminServer::start`] with `extra` routes (a node adds its load report, [`crate::load`]).
    ///
    /// # Errors
    /// The address cannot be bound (the error names it).
    pub async fn start_with(
        address: SocketAddr,
        metrics: Registry,
        readiness: Vec<Readiness>,
        extra: Router,
    ) -> std::io::Result<AdminServer> {
        let listener = bind(address).await?;
        let address = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve_with(
            listener,
            Arc::new(metrics),
            readiness,
            extra,
            stop.clone(),
        ));
        Ok(AdminServer { address, stop, task })
    }

    /// The bound address (the real port when `0` was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops serving and waits for the server's task.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

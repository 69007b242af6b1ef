//! The admin HTTP server of every component: `/healthz` (the process is alive), `/readyz` (it takes new
//! work: a draining gate or node answers 503 so Kubernetes stops offering it) and `/metrics` (Prometheus
//! text format).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { metrics, readiness })
        .merge(extra);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
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
    let mut body = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut body, &state.metrics) {
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

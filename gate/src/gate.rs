//! The gate's public handle: building a gate, starting its listeners and node links, draining and stopping
//! it. The stages live below it: [`crate::accept`] (listeners and handshakes), [`crate::connection`] (one
//! client's read and write loops), [`crate::links`] and [`crate::downlink`] (node links and what nodes
//! send), [`crate::bindings`] (players' gate and node bindings), all on [`crate::shared`].

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use prometheus_client::registry::Registry;
use switchyard_cluster::admin::Readiness;
use switchyard_cluster::link::Connector;
use switchyard_cluster::locator::Locator;
use switchyard_cluster::registry::NodeEndpoint;
use switchyard_protocol::extcode;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::calls::CallTable;
use crate::config::{GateConfig, GateConfigError};
use crate::links;
use crate::metrics::{CloseReason, GateMetrics, Transport};
use crate::nodes::NodeTable;
use crate::session::SessionTable;
use crate::shared::{Gate, GateInner};

impl Gate {
    /// Builds a gate and registers its metrics. Nothing runs until listeners and links are started.
    ///
    /// # Errors
    /// The config does not validate.
    pub fn new(
        config: GateConfig,
        locator: Arc<dyn Locator>,
        registry: &mut Registry,
    ) -> Result<Self, GateConfigError> {
        config.validate()?;
        // Ready after the first registry list and a first link attempt to each node it names.
        let readiness = Readiness::default();
        let metrics = GateMetrics::register(registry);
        metrics
            .max_connections
            .set(i64::try_from(config.max_connections).unwrap_or(i64::MAX));
        let inner = Arc::new(GateInner {
            connection_slots: Arc::new(Semaphore::new(config.max_connections)),
            per_ip: crate::per_ip::PerIpLimit::new(config.max_connections_per_ip),
            config,
            sessions: SessionTable::default(),
            nodes: NodeTable::new(metrics.nodes.clone(), metrics.route_conflicts.clone()),
            locator,
            metrics,
            calls: CallTable::default(),
            next_cid: AtomicU64::new(1),
            routing_turn: AtomicUsize::new(0),
            readiness,
            accepting: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let gate = Gate { inner };
        gate.spawn_locator_watch();
        gate.spawn_link_gauges();
        gate.spawn_call_sweeper();
        Ok(gate)
    }

    pub fn id(&self) -> &str {
        &self.inner.config.id
    }

    /// Ready while the gate takes new clients.
    pub fn readiness(&self) -> Readiness {
        self.inner.readiness.clone()
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Live node links.
    pub fn linked_nodes(&self) -> usize {
        self.inner.nodes.len()
    }

    /// Whether the client listeners speak TLS (TCP over TLS, and WSS).
    pub fn tls(&self) -> bool {
        self.inner.config.tls.is_some()
    }

    /// Accepts TCP clients (over TLS when the config has it) on `listener` until the gate drains.
    pub fn serve_tcp(&self, listener: TcpListener) {
        let gate = self.clone();
        self.inner
            .tasks
            .spawn(async move { gate.accept_loop(listener, Transport::Tcp).await });
    }

    /// Accepts WebSocket clients (WSS when the config has TLS) on `listener`, upgrade path from the config,
    /// until the gate drains.
    pub fn serve_ws(&self, listener: TcpListener) {
        let gate = self.clone();
        self.inner
            .tasks
            .spawn(async move { gate.accept_loop(listener, Transport::Ws).await });
    }

    /// Keeps one link to every node the registry lists, reconnecting with backoff.
    pub fn connect_nodes(&self, nodes: watch::Receiver<Vec<NodeEndpoint>>, connector: Arc<dyn Connector>) {
        let gate = self.clone();
        self.inner
            .tasks
            .spawn(async move { links::maintain_links(gate, nodes, connector).await });
    }

    /// Stops taking clients, tells every client to reconnect elsewhere, and closes connections gradually
    /// within the drain deadline. Returns when no connection is left.
    pub async fn drain(&self) {
        let inner = &self.inner;
        inner.readiness.set(false);
        inner.accepting.cancel();
        inner.metrics.draining.set(1);
        let deadline = Instant::now() + inner.config.drain_deadline;
        let reconnect = inner
            .config
            .packet
            .heartbeat_packet(extcode::RECONNECT_ELSEWHERE, None);
        let sessions = inner.sessions.all();
        tracing::info!(gate = %inner.config.id, connections = sessions.len(), deadline = ?inner.config.drain_deadline, "gate draining");
        for session in &sessions {
            session.send(reconnect.clone());
        }
        // Spread the closes over most of the deadline so clients do not all reconnect at the same instant.
        let steps = 10u32;
        let step = inner.config.drain_deadline.mul_f64(0.8) / steps;
        let per_step = sessions.len().div_ceil(steps as usize).max(1);
        for chunk in sessions.chunks(per_step) {
            if inner.sessions.len() == 0 {
                break;
            }
            for session in chunk {
                session.close_after_queued(CloseReason::Draining);
            }
            tokio::time::sleep(step).await;
        }
        // A connection that was still in its TLS, WebSocket or PROXY handshake when the drain began joined
        // the table after the notice went out: tell it too, and close it only after it has the notice, or
        // its player would see a bare close (and a request in flight lost) instead of a reconnect request.
        let notified: HashSet<_> = sessions.iter().map(|session| session.cid).collect();
        for session in inner.sessions.all() {
            if !notified.contains(&session.cid) {
                session.send(reconnect.clone());
                session.close_after_queued(CloseReason::Draining);
            }
        }
        while inner.sessions.len() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for session in inner.sessions.all() {
            session.close(CloseReason::Draining);
        }
        while inner.sessions.len() > 0 && Instant::now() < deadline + Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops everything (after [`Gate::drain`] for a graceful exit) and waits for every task.
    pub async fn shutdown(&self) {
        self.inner.readiness.set(false);
        self.inner.accepting.cancel();
        self.inner.shutdown.cancel();
        for session in self.inner.sessions.all() {
            session.close(CloseReason::Draining);
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Samples the depth of the fullest node link once a second (a per-node label would grow without
    /// bound as pods come and go).
    pub(crate) fn spawn_link_gauges(&self) {
        let gate = self.clone();
        self.inner.tasks.spawn(async move {
            let inner = &gate.inner;
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    _ = every.tick() => {}
                }
                let snapshot = inner.nodes.snapshot();
                let deepest = snapshot.nodes().map(|node| node.tx.queued()).max();
                inner.metrics.link_queue_depth.set(deepest.unwrap_or(0) as i64);
                let heaviest = snapshot.nodes().map(|node| node.tx.queued_bytes()).max();
                inner.metrics.link_queue_bytes.set(heaviest.unwrap_or(0) as i64);
            }
        });
    }
}

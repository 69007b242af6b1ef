//! A running node: its public handle. It serves gate links ([`crate::link`]), runs ticks and lifecycle
//! hooks, keeps its player bindings in the locator across outages, and drains.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use switchyard_cluster::admin::Readiness;
use switchyard_cluster::link::Acceptor;
use switchyard_cluster::locator::{Locator, LocatorEvent, restore_all};
use switchyard_protocol::link::{NodeState, Uid};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bindings::GateSeen;
use crate::config::{ConfigError, NodeConfig};
use crate::inner::Lanes;
use crate::inner::NodeInner;
use crate::metrics::{DrainEnd, DrainLabels, NodeMetrics, StateLabels};
use crate::outbound::Outbound;
use crate::router::{Lifecycle, Reconnect, Router, Tick, TickSpec};

/// How often a draining node checks whether it is empty.
const DRAIN_POLL: Duration = Duration::from_millis(25);

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// No player was left bound and no handler was running.
    Empty,
    /// The deadline passed; the remaining players were told to reconnect.
    Deadline { players: usize },
}

/// A running node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

impl Node {
    /// Builds a node and registers its metrics. Nothing runs until [`Node::serve`].
    ///
    /// # Errors
    /// The config does not validate.
    pub fn new<S>(
        config: NodeConfig,
        router: Router<S>,
        locator: Arc<dyn Locator>,
        registry: &mut Registry,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let config_incoming_calls = config.max_incoming_calls;
        let readiness = Readiness::default();
        readiness.set(true);
        let metrics = NodeMetrics::register(registry);
        metrics
            .state
            .get_or_create(&StateLabels {
                state: NodeState::Work.as_str(),
            })
            .set(1);
        let lanes = Lanes::new(metrics.lanes.clone());
        Ok(Node {
            inner: Arc::new(NodeInner {
                outbound: Outbound::new(config, locator, metrics),
                routes: router.routes,
                state: watch::Sender::new(NodeState::Work),
                lanes,
                in_flight: AtomicUsize::new(0),
                next_link: AtomicU64::new(1),
                call_slots: Arc::new(Semaphore::new(config_incoming_calls)),
                readiness,
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        })
    }

    pub fn id(&self) -> &str {
        self.inner.id()
    }

    pub fn config(&self) -> &NodeConfig {
        self.inner.outbound.config()
    }

    /// The node's sending side: pushes and lookups outside of a handler.
    pub fn outbound(&self) -> &Outbound {
        &self.inner.outbound
    }

    /// Ready while the node takes new players.
    pub fn readiness(&self) -> Readiness {
        self.inner.readiness.clone()
    }

    pub fn state(&self) -> NodeState {
        *self.inner.state.borrow()
    }

    /// A receiver of every state change.
    pub fn watch_state(&self) -> watch::Receiver<NodeState> {
        self.inner.state.subscribe()
    }

    /// Changes the state and announces it on every gate link at once.
    pub fn set_state(&self, state: NodeState) {
        let inner = &self.inner;
        let previous = inner.state.send_replace(state);
        if previous != state {
            tracing::info!(node = %inner.id(), from = %previous, to = %state, "node state changed");
            let metrics = inner.metrics();
            for (state, value) in [(previous, 0), (state, 1)] {
                metrics
                    .state
                    .get_or_create(&StateLabels {
                        state: state.as_str(),
                    })
                    .set(value);
            }
        }
        inner
            .readiness
            .set(matches!(state, NodeState::Work | NodeState::Busy));
    }

    /// Players bound to this node now.
    pub fn bound_players(&self) -> usize {
        self.inner.outbound.bound_players()
    }

    /// A receiver of the bound-player count, updated on every change.
    pub fn watch_bound_players(&self) -> watch::Receiver<usize> {
        self.inner.outbound.shared.bindings.watch()
    }

    /// Whether `uid` is bound to this node.
    pub fn is_bound(&self, uid: Uid) -> bool {
        self.inner.outbound.is_bound(uid)
    }

    /// Linked gates now.
    pub fn linked_gates(&self) -> usize {
        self.inner.outbound.linked_gates()
    }

    /// Accepts gate links until shutdown, starts the router's ticks, runs its `on_start` hook, and keeps
    /// this node's player bindings in the locator (see [`LocatorEvent::Reconnected`]).
    pub fn serve<A: Acceptor>(&self, mut acceptor: A) {
        self.watch_locator();
        let inner = self.inner.clone();
        self.inner.tasks.spawn(async move {
            loop {
                let link = tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    link = acceptor.accept() => link,
                };
                let Some(link) = link else { return };
                inner.tasks.spawn(crate::link::run_gate_link(inner.clone(), link));
            }
        });
        for tick in &self.inner.routes.ticks {
            self.inner.tasks.spawn(run_tick(self.inner.clone(), tick.clone()));
        }
        if let Some(hook) = self.inner.routes.on_start.clone() {
            let inner = self.inner.clone();
            self.inner.tasks.spawn(async move {
                let event = Lifecycle {
                    node: inner.outbound.clone(),
                };
                inner.run_hook("start", &hook, event).await;
            });
        }
    }

    /// Follows the locator: after an outage ([`LocatorEvent::Reconnected`]) the store may have lost every
    /// binding, so the node writes the bindings of its players again (where they are missing), so that
    /// their next login (a reconnect) finds this node and the state it holds; a player of this node who
    /// logs in again through any gate fires the router's `on_reconnect` hook; and a player bound to
    /// another node of this pool meanwhile is released here.
    fn watch_locator(&self) {
        let inner = self.inner.clone();
        let mut events = self.inner.outbound.shared.locator.events();
        self.inner.tasks.spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    event = events.recv() => event,
                };
                match event {
                    Ok(LocatorEvent::Reconnected) => restore_bindings(&inner).await,
                    Ok(LocatorEvent::GateBound { uid, gate_id }) => {
                        let seen = inner.outbound.shared.bindings.gate_bound(uid, &gate_id);
                        if seen == GateSeen::Reconnected
                            && let Some(hook) = inner.routes.on_reconnect.clone()
                        {
                            let event = Reconnect {
                                uid,
                                gate_id,
                                node: inner.outbound.clone(),
                            };
                            let hooks = inner.clone();
                            inner
                                .tasks
                                .spawn(async move { hooks.run_hook("reconnect", &hook, event).await });
                        }
                    }
                    Ok(LocatorEvent::NodeBound { uid, pool, node_id })
                        if pool == inner.outbound.pool() && node_id == inner.outbound.node_id() =>
                    {
                        // Bound here by another node (a match host chosen by a lobby, say).
                        inner.outbound.adopt(uid).await;
                    }
                    Ok(LocatorEvent::NodeBound { uid, pool, node_id }) => {
                        let outbound = &inner.outbound;
                        // Re-homed elsewhere (this node looked gone to a gate): the player is no longer
                        // this node's to serve, to count, or to evict at a drain deadline. The store is
                        // asked again, as the event may be older than a move back to this node.
                        if pool == outbound.pool()
                            && node_id != outbound.node_id()
                            && outbound.is_bound(uid)
                            && outbound.locate_node(uid).await.ok().flatten().as_deref() == Some(node_id.as_str())
                        {
                            outbound.released_elsewhere(uid);
                            tracing::info!(node = %inner.id(), uid, to = %node_id, "player re-homed to another node; released here");
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Moves to `draining` (running the router's `on_drain` hook), waits until no player is bound and no
    /// handler runs, or until the drain deadline (then the remaining players are unbound, told to
    /// reconnect and disconnected), and ends in `shut`.
    pub async fn drain(&self) -> DrainOutcome {
        let inner = &self.inner;
        let deadline_after = inner.outbound.config().drain_deadline;
        let started = Instant::now();
        let deadline = started + deadline_after;
        self.set_state(NodeState::Draining);
        inner.metrics().drains_started.inc();
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        inner
            .metrics()
            .drain_deadline_timestamp
            .set((unix_now + deadline_after).as_secs_f64());
        tracing::info!(node = %inner.id(), bound = self.bound_players(), deadline = ?deadline_after, "node draining");
        if let Some(hook) = inner.routes.on_drain.clone() {
            let hooks = inner.clone();
            let event = Lifecycle {
                node: inner.outbound.clone(),
            };
            inner
                .tasks
                .spawn(async move { hooks.run_hook("drain", &hook, event).await });
        }
        let outcome = loop {
            if self.bound_players() == 0 && inner.in_flight.load(Ordering::Acquire) == 0 {
                break DrainOutcome::Empty;
            }
            if Instant::now() >= deadline {
                let players = inner.outbound.evict_all().await;
                break DrainOutcome::Deadline { players };
            }
            tokio::select! {
                _ = inner.shutdown.cancelled() => break DrainOutcome::Deadline { players: self.bound_players() },
                _ = tokio::time::sleep(DRAIN_POLL) => {}
            }
        };
        self.set_state(NodeState::Shut);
        let end = match outcome {
            DrainOutcome::Empty => DrainEnd::Empty,
            DrainOutcome::Deadline { .. } => DrainEnd::Deadline,
        };
        let metrics = inner.metrics();
        metrics
            .drains_finished
            .get_or_create(&DrainLabels { outcome: end })
            .inc();
        metrics.drain_duration.observe(started.elapsed().as_secs_f64());
        tracing::info!(node = %inner.id(), ?outcome, elapsed = ?started.elapsed(), "node drained");
        outcome
    }

    /// Runs the router's `on_shutdown` hook, then stops every task and waits for them. Links close, so
    /// gates drop this node at once.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        if inner.shutdown.is_cancelled() {
            return;
        }
        if let Some(hook) = &inner.routes.on_shutdown {
            let event = Lifecycle {
                node: inner.outbound.clone(),
            };
            inner.run_hook("shutdown", hook, event).await;
        }
        if self.state() != NodeState::Shut {
            self.set_state(NodeState::Shut);
        }
        // Give link tasks a moment to announce `shut` before they are cancelled.
        tokio::time::sleep(Duration::from_millis(20)).await;
        inner.shutdown.cancel();
        inner.lanes.clear();
        inner.tasks.close();
        inner.tasks.wait().await;
    }
}

/// Writes the bindings of this node's players again after a locator outage.
async fn restore_bindings(inner: &NodeInner) {
    let shared = &inner.outbound.shared;
    let uids = shared.bindings.uids();
    let outcome = restore_all(uids, |uid| {
        let (locator, pool, id) = (
            shared.locator.clone(),
            shared.config.pool.clone(),
            shared.id.clone(),
        );
        async move { locator.restore_node(uid, &pool, &id).await }
    })
    .await;
    if outcome.failed > 0 {
        tracing::warn!(node = %inner.id(), ?outcome, "could not restore every player binding after a locator outage");
    } else {
        tracing::info!(node = %inner.id(), ?outcome, "player bindings restored after a locator outage");
    }
}

/// Runs one tick handler every interval until shutdown; a late run skips the ticks it missed.
async fn run_tick(inner: Arc<NodeInner>, tick: Arc<TickSpec>) {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + tick.interval, tick.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut count = 0;
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        count += 1;
        let event = Tick {
            count,
            node: inner.outbound.clone(),
        };
        inner.run_hook("tick", &tick.handler, event).await;
    }
}

//! Players' bindings as the gate keeps them: uid → this gate in the locator, uid → node per pool per session
//! (loaded at login, set by nodes on the link and by locator events, cleared when the node is gone, counted
//! for the least-bound policy), and their restoration after a locator outage.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use switchyard_cluster::locator::LocatorEvent;
use switchyard_protocol::link::NO_UID;

use crate::session::Session;
use crate::shared::Gate;

impl Gate {
    pub(crate) fn clear_stale_binding(&self, session: &Arc<Session>, uid: i64, pool: &Arc<str>) {
        let inner = &self.inner;
        let bound = session.set_node(pool, None);
        inner.metrics.stale_bindings_cleared.inc();
        let Some(dead) = bound else { return };
        tracing::info!(uid, node = %dead, %pool, "cleared a binding to a vanished node");
        let locator = inner.locator.clone();
        let pool = pool.clone();
        inner.tasks.spawn(async move {
            if let Err(error) = locator.unbind_node(uid, &pool, &dead).await {
                tracing::warn!(uid, %error, "could not clear a stale node binding in the locator");
            }
        });
    }

    /// Removes `uid`'s gate binding from the locator. A newer session of the same uid on this gate may have
    /// bound it meanwhile (this unbind races that bind): then the binding is written again.
    pub(crate) async fn release_gate_binding(&self, uid: i64) {
        let inner = &self.inner;
        if let Err(error) = inner.locator.unbind_gate(uid, &inner.config.id).await {
            tracing::warn!(uid, %error, "could not release a gate binding in the locator");
            return;
        }
        if inner.sessions.by_uid(uid).is_some()
            && let Err(error) = inner.locator.bind_gate(uid, &inner.config.id).await
        {
            tracing::warn!(uid, %error, "could not restore a gate binding in the locator");
        }
    }

    /// Sets a session's node binding in `pool` and keeps the per-node bound counts right.
    pub(crate) fn set_session_node(&self, session: &Session, pool: &Arc<str>, node: Option<Arc<str>>) {
        let snapshot = self.inner.nodes.snapshot();
        if let Some(new) = node.as_deref().and_then(|id| snapshot.known(id)) {
            new.bound.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(old) = session
            .set_node(pool, node)
            .as_deref()
            .and_then(|id| snapshot.known(id))
        {
            old.bound.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Drops every node binding of a session (logout, login elsewhere), keeping the counts right.
    pub(crate) fn release_all_nodes(&self, session: &Session) {
        let snapshot = self.inner.nodes.snapshot();
        for (_, node) in session.clear_nodes() {
            if let Some(node) = snapshot.known(&node) {
                node.bound.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// The pool a node binding from `sender` is for: the one named, else the sender's own.
    pub(crate) fn binding_pool(named: Option<String>, sender: &Arc<str>) -> Arc<str> {
        match named {
            Some(pool) if *pool != **sender => Arc::from(pool),
            _ => sender.clone(),
        }
    }

    /// After a login, brings the player's node bindings (one lookup per pool this gate knows) from the
    /// locator into the session, so a player who reconnects (to this or another gate) keeps the nodes that
    /// hold their state. A binding to a node this gate has no link to is stale and is removed.
    pub(crate) async fn load_binding(&self, session: &Arc<Session>, uid: i64) {
        let inner = &self.inner;
        for pool in inner.nodes.snapshot().pools() {
            let located = match inner.locator.locate_node(uid, &pool).await {
                Ok(located) => located,
                Err(error) => {
                    tracing::warn!(uid, %pool, %error, "could not look up a node binding; the player starts unbound");
                    None
                }
            };
            let Some(node_id) = located else { continue };
            if inner.nodes.snapshot().known(&node_id).is_some() {
                if session.uid() == uid {
                    self.set_session_node(session, &pool, Some(Arc::from(node_id)));
                }
            } else {
                inner.metrics.stale_bindings_cleared.inc();
                if let Err(error) = inner.locator.unbind_node(uid, &pool, &node_id).await {
                    tracing::warn!(uid, %error, "could not clear a stale node binding in the locator");
                }
            }
        }
        if let Err(error) = inner.locator.bind_gate(uid, &inner.config.id).await {
            tracing::warn!(uid, %error, "could not record the gate binding; pushes from other gates may miss");
        }
    }

    /// Keeps session caches right when bindings change elsewhere (another gate, another node).
    pub(crate) fn spawn_locator_watch(&self) {
        let gate = self.clone();
        let mut events = self.inner.locator.events();
        self.inner.tasks.spawn(async move {
            let inner = &gate.inner;
            loop {
                let event = tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    event = events.recv() => event,
                };
                match event {
                    Ok(LocatorEvent::GateBound { uid, gate_id }) if gate_id != inner.config.id => {
                        // The player logged in on another gate: this gate no longer delivers to them.
                        if let Some(session) = inner.sessions.unbind(uid) {
                            gate.release_all_nodes(&session);
                        }
                    }
                    Ok(LocatorEvent::NodeBound { uid, pool, node_id }) => {
                        if let Some(session) = inner.sessions.by_uid(uid)
                            && session.node(&pool).as_deref() != Some(node_id.as_str())
                        {
                            gate.set_session_node(&session, &Arc::from(pool), Some(Arc::from(node_id)));
                        }
                    }
                    Ok(LocatorEvent::NodeUnbound { uid, pool, node_id }) => {
                        // A draining node releases its players itself: on the link when they log out,
                        // and at its deadline by disconnecting them after telling them to reconnect
                        // (it unbinds them in the locator first, so that their next login goes
                        // elsewhere). Until it disconnects them, their packets must keep going to it:
                        // another node would adopt them without their state.
                        if let Some(session) = inner.sessions.by_uid(uid)
                            && session.node(&pool).as_deref() == Some(node_id.as_str())
                            && !inner.nodes.is_draining(&node_id)
                        {
                            gate.set_session_node(&session, &Arc::from(pool), None);
                        }
                    }
                    Ok(LocatorEvent::Reconnected) => {
                        // The store may have lost every binding: write this gate's players again.
                        let gate = gate.clone();
                        inner
                            .tasks
                            .spawn(async move { gate.restore_gate_bindings().await });
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "gate fell behind locator events; caches may be stale until next bind"
                        );
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Writes the gate binding of every logged-in session again where the locator lost it (after
    /// [`LocatorEvent::Reconnected`]), so that pushes reach them.
    pub(crate) async fn restore_gate_bindings(&self) {
        let inner = &self.inner;
        let uids: Vec<i64> = inner
            .sessions
            .all()
            .iter()
            .map(|session| session.uid())
            .filter(|uid| *uid != NO_UID)
            .collect();
        let locator = inner.locator.clone();
        let id = inner.config.id.clone();
        let outcome = switchyard_cluster::locator::restore_all(uids, |uid| {
            let (locator, id) = (locator.clone(), id.clone());
            async move { locator.restore_gate(uid, &id).await }
        })
        .await;
        if outcome.failed > 0 {
            tracing::warn!(
                ?outcome,
                "could not restore every gate binding after a locator outage"
            );
        } else {
            tracing::info!(?outcome, "gate bindings restored after a locator outage");
        }
    }
}

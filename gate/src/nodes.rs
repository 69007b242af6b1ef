//! The nodes this gate has links to, and the pure routing decision for one client packet.
//!
//! Link tasks write node facts (hello, state, registry readiness, link loss) into the [`NodeTable`], which
//! rebuilds an immutable [`RoutingSnapshot`] on every change. Readers of client packets take the current
//! snapshot (one `Arc` clone) and decide without locks or I/O, so routing never waits on anything.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};
use rand::Rng;
use switchyard_protocol::link::{GateToNode, NO_UID, NodeState, RouteSpec, Uid};
use tokio::sync::mpsc;

use crate::config::RoutingPolicy;
use crate::metrics::{DropReason, NodeStateLabels};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// One linked node as the routing path sees it.
#[derive(Debug)]
pub(crate) struct NodeHandle {
    pub(crate) id: Arc<str>,
    pub(crate) address: String,
    pub(crate) tx: mpsc::Sender<GateToNode>,
    /// Players of this gate bound to the node (for the least-bound policy).
    pub(crate) bound: AtomicUsize,
}

#[derive(Debug)]
struct NodeRecord {
    handle: Arc<NodeHandle>,
    state: NodeState,
    routes: Vec<RouteSpec>,
    /// The link dropped; the node is kept as "unlinked" (see the link grace ([`crate::GateConfig::node_link_grace`])).
    unlinked: bool,
}

/// A route and the nodes that may take a packet of it from a session with no node binding.
#[derive(Debug)]
pub(crate) struct RouteEntry {
    pub(crate) spec: RouteSpec,
    work: Vec<Arc<NodeHandle>>,
    busy: Vec<Arc<NodeHandle>>,
}

/// An immutable view of the linked nodes, rebuilt on every change.
#[derive(Debug, Default)]
pub(crate) struct RoutingSnapshot {
    /// Nodes that still serve their bound players (every state but `shut`).
    nodes: HashMap<Arc<str>, Arc<NodeHandle>>,
    /// Nodes whose link dropped while the registry still lists them, within the link grace ([`crate::GateConfig::node_link_grace`]): their
    /// players are not re-homed meanwhile.
    unlinked: HashMap<Arc<str>, Arc<NodeHandle>>,
    routes: HashMap<i32, RouteEntry>,
}

/// Where a client packet goes.
#[derive(Debug)]
pub(crate) enum Decision {
    Forward(Arc<NodeHandle>),
    /// The session's bound node is gone; the binding must be cleared and the packet goes to a new node.
    Rebind(Arc<NodeHandle>),
    Drop(DropReason),
}

impl RoutingSnapshot {
    /// A node this gate is linked to, or whose link dropped within the link grace ([`crate::GateConfig::node_link_grace`]): players bound to it
    /// keep their binding (and count towards it).
    pub(crate) fn known(&self, id: &str) -> Option<&Arc<NodeHandle>> {
        self.nodes.get(id).or_else(|| self.unlinked.get(id))
    }

    pub(crate) fn nodes(&self) -> impl Iterator<Item = &Arc<NodeHandle>> {
        self.nodes.values()
    }

    /// Decides where a packet of `route` from a session (`uid`, bound to `bound_node`) goes.
    pub(crate) fn decide(
        &self,
        route: i32,
        uid: Uid,
        bound_node: Option<&str>,
        policy: RoutingPolicy,
        turn: &AtomicUsize,
    ) -> Decision {
        let Some(entry) = self.routes.get(&route).filter(|entry| !entry.spec.internal) else {
            return Decision::Drop(DropReason::UnknownRoute);
        };
        let needs_user = entry.spec.authorized || entry.spec.stateful;
        if needs_user && uid == NO_UID {
            return Decision::Drop(DropReason::Unauthorized);
        }
        if entry.spec.stateful
            && let Some(bound) = bound_node
        {
            return match self.nodes.get(bound) {
                Some(node) => Decision::Forward(node.clone()),
                None if self.unlinked.contains_key(bound) => Decision::Drop(DropReason::NodeUnlinked),
                None => match pick_new(entry, policy, turn) {
                    Some(node) => Decision::Rebind(node),
                    None => Decision::Drop(DropReason::NoNode),
                },
            };
        }
        match pick_new(entry, policy, turn) {
            Some(node) => Decision::Forward(node),
            None => Decision::Drop(DropReason::NoNode),
        }
    }
}

/// A node for a player with no binding: a `work` node by the policy, else a `busy` one, never a draining one.
fn pick_new(entry: &RouteEntry, policy: RoutingPolicy, turn: &AtomicUsize) -> Option<Arc<NodeHandle>> {
    let candidates = if entry.work.is_empty() {
        &entry.busy
    } else {
        &entry.work
    };
    let chosen = match (candidates.len(), policy) {
        (0, _) => return None,
        (1, _) => &candidates[0],
        (n, RoutingPolicy::RoundRobin) => &candidates[turn.fetch_add(1, Ordering::Relaxed) % n],
        (n, RoutingPolicy::Random) => &candidates[rand::rng().random_range(0..n)],
        (_, RoutingPolicy::LeastBound) => candidates
            .iter()
            .min_by_key(|node| node.bound.load(Ordering::Relaxed))?,
    };
    Some(chosen.clone())
}

/// The gate's node facts, and the snapshot derived from them.
#[derive(Debug, Default)]
pub(crate) struct NodeTable {
    /// Linked nodes by state, kept with every rebuild.
    state_gauge: Family<NodeStateLabels, Gauge>,
    records: Mutex<HashMap<Arc<str>, NodeRecord>>,
    /// Registry readiness by address; a node missing here counts as accepting.
    accepting: Mutex<HashMap<String, bool>>,
    snapshot: RwLock<Arc<RoutingSnapshot>>,
}

impl NodeTable {
    pub(crate) fn new(state_gauge: Family<NodeStateLabels, Gauge>) -> Self {
        NodeTable {
            state_gauge,
            ..NodeTable::default()
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<RoutingSnapshot> {
        self.snapshot.read().clone()
    }

    /// A node said hello on a new link (replacing any older link of the same node id, whose count of
    /// bound players it takes over: the players are still bound to the node).
    pub(crate) fn insert(&self, handle: Arc<NodeHandle>, state: NodeState, routes: Vec<RouteSpec>) {
        let mut records = self.records.lock();
        if let Some(older) = records.get(&handle.id) {
            let bound = older.handle.bound.swap(0, Ordering::Relaxed);
            handle.bound.fetch_add(bound, Ordering::Relaxed);
        }
        records.insert(
            handle.id.clone(),
            NodeRecord {
                handle,
                state,
                routes,
                unlinked: false,
            },
        );
        self.rebuild(&records);
    }

    pub(crate) fn set_state(&self, handle: &Arc<NodeHandle>, state: NodeState) {
        let mut records = self.records.lock();
        if let Some(record) = records
            .get_mut(&handle.id)
            .filter(|record| Arc::ptr_eq(&record.handle, handle))
        {
            record.state = state;
            self.rebuild(&records);
        }
    }

    /// The registry's readiness of every present address.
    pub(crate) fn set_accepting(&self, accepting: HashMap<String, bool>) {
        *self.accepting.lock() = accepting;
        self.rebuild(&self.records.lock());
    }

    /// A link dropped while the registry still lists the node: its players stay bound to it (their packets
    /// are dropped) until it links again or [`NodeTable::expire`] after the link grace ([`crate::GateConfig::node_link_grace`]).
    pub(crate) fn unlink(&self, handle: &Arc<NodeHandle>) {
        let mut records = self.records.lock();
        if let Some(record) = records
            .get_mut(&handle.id)
            .filter(|record| Arc::ptr_eq(&record.handle, handle))
        {
            record.unlinked = true;
            self.rebuild(&records);
        }
    }

    /// The grace of an unlinked node is over: forgotten, unless it linked again meanwhile.
    pub(crate) fn expire(&self, handle: &Arc<NodeHandle>) {
        let mut records = self.records.lock();
        if records
            .get(&handle.id)
            .is_some_and(|record| Arc::ptr_eq(&record.handle, handle) && record.unlinked)
        {
            records.remove(&handle.id);
            self.rebuild(&records);
        }
    }

    /// A link ended; the node is forgotten unless a newer link replaced it already.
    pub(crate) fn remove(&self, handle: &Arc<NodeHandle>) {
        let mut records = self.records.lock();
        if records
            .get(&handle.id)
            .is_some_and(|record| Arc::ptr_eq(&record.handle, handle))
        {
            records.remove(&handle.id);
            self.rebuild(&records);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.records.lock().len()
    }

    /// Whether the linked node `id` announced that it drains (it serves its bound players, takes no new
    /// ones, and releases its players itself).
    pub(crate) fn is_draining(&self, id: &str) -> bool {
        self.records
            .lock()
            .get(id)
            .is_some_and(|record| record.state == NodeState::Draining)
    }

    fn rebuild(&self, records: &HashMap<Arc<str>, NodeRecord>) {
        let accepting = self.accepting.lock();
        let mut snapshot = RoutingSnapshot::default();
        let mut ordered: Vec<&NodeRecord> = records.values().collect();
        // A stable order keeps round-robin fair across rebuilds.
        ordered.sort_by(|a, b| a.handle.id.cmp(&b.handle.id));
        for record in ordered {
            if !record.state.serves_bound_players() {
                continue;
            }
            if record.unlinked {
                snapshot
                    .unlinked
                    .insert(record.handle.id.clone(), record.handle.clone());
                continue;
            }
            snapshot
                .nodes
                .insert(record.handle.id.clone(), record.handle.clone());
            let registry_accepts = accepting.get(&record.handle.address).copied().unwrap_or(true);
            for spec in &record.routes {
                let entry = snapshot.routes.entry(spec.route).or_insert_with(|| RouteEntry {
                    spec: *spec,
                    work: Vec::new(),
                    busy: Vec::new(),
                });
                if entry.spec != *spec {
                    tracing::warn!(route = spec.route, node = %record.handle.id, "nodes disagree on a route's options; the first node's win");
                }
                match record.state {
                    NodeState::Work if registry_accepts => entry.work.push(record.handle.clone()),
                    NodeState::Busy if registry_accepts => entry.busy.push(record.handle.clone()),
                    _ => {}
                }
            }
        }
        *self.snapshot.write() = Arc::new(snapshot);
        for state in [
            NodeState::Work,
            NodeState::Busy,
            NodeState::Draining,
            NodeState::Shut,
        ] {
            let count = records
                .values()
                .filter(|record| record.state == state && !record.unlinked)
                .count();
            self.state_gauge
                .get_or_create(&NodeStateLabels {
                    state: state.as_str(),
                })
                .set(count as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(route: i32, stateful: bool, authorized: bool) -> RouteSpec {
        RouteSpec {
            route,
            stateful,
            authorized,
            internal: false,
        }
    }

    fn handle(id: &str) -> Arc<NodeHandle> {
        let (tx, _rx) = mpsc::channel(1);
        Arc::new(NodeHandle {
            id: id.into(),
            address: format!("{id}:1"),
            tx,
            bound: AtomicUsize::new(0),
        })
    }

    fn forwarded_to(decision: Decision) -> String {
        match decision {
            Decision::Forward(node) => node.id.to_string(),
            other => panic!("expected a forward, got {other:?}"),
        }
    }

    #[test]
    fn stateless_round_robin_skips_draining_and_prefers_work_over_busy() {
        let table = NodeTable::default();
        let routes = vec![route(1, false, false)];
        let (a, b, c) = (handle("a"), handle("b"), handle("c"));
        table.insert(a.clone(), NodeState::Work, routes.clone());
        table.insert(b.clone(), NodeState::Work, routes.clone());
        table.insert(c.clone(), NodeState::Busy, routes.clone());
        let turn = AtomicUsize::new(0);
        let picks: Vec<String> = (0..4)
            .map(|_| {
                forwarded_to(
                    table
                        .snapshot()
                        .decide(1, NO_UID, None, RoutingPolicy::RoundRobin, &turn),
                )
            })
            .collect();
        assert_eq!(picks, ["a", "b", "a", "b"]);

        table.set_state(&a, NodeState::Draining);
        table.set_state(&b, NodeState::Draining);
        assert_eq!(
            forwarded_to(
                table
                    .snapshot()
                    .decide(1, NO_UID, None, RoutingPolicy::RoundRobin, &turn)
            ),
            "c"
        );
        table.set_state(&c, NodeState::Shut);
        assert!(matches!(
            table
                .snapshot()
                .decide(1, NO_UID, None, RoutingPolicy::Random, &turn),
            Decision::Drop(DropReason::NoNode)
        ));
    }

    #[test]
    fn registry_readiness_withdraws_a_node_from_new_players_only() {
        let table = NodeTable::default();
        let (a, b) = (handle("a"), handle("b"));
        table.insert(
            a.clone(),
            NodeState::Work,
            vec![route(1, false, false), route(3, true, true)],
        );
        table.insert(
            b.clone(),
            NodeState::Work,
            vec![route(1, false, false), route(3, true, true)],
        );
        table.set_accepting(HashMap::from([(a.address.clone(), false)]));
        let turn = AtomicUsize::new(0);
        for _ in 0..3 {
            assert_eq!(
                forwarded_to(
                    table
                        .snapshot()
                        .decide(1, 5, None, RoutingPolicy::RoundRobin, &turn)
                ),
                "b"
            );
        }
        // A player bound to `a` keeps going there.
        assert_eq!(
            forwarded_to(
                table
                    .snapshot()
                    .decide(3, 5, Some("a"), RoutingPolicy::RoundRobin, &turn)
            ),
            "a"
        );
    }

    #[test]
    fn stateful_and_authorized_rules() {
        let table = NodeTable::default();
        let a = handle("a");
        table.insert(
            a.clone(),
            NodeState::Draining,
            vec![route(3, true, true), route(7, false, true)],
        );
        let turn = AtomicUsize::new(0);
        let snapshot = table.snapshot();
        let decide = |route, uid, bound| snapshot.decide(route, uid, bound, RoutingPolicy::RoundRobin, &turn);
        assert!(matches!(
            decide(3, NO_UID, None),
            Decision::Drop(DropReason::Unauthorized)
        ));
        assert!(matches!(
            decide(7, NO_UID, None),
            Decision::Drop(DropReason::Unauthorized)
        ));
        assert!(matches!(
            decide(9, 1, None),
            Decision::Drop(DropReason::UnknownRoute)
        ));
        assert_eq!(
            forwarded_to(decide(3, 1, Some("a"))),
            "a",
            "a draining node serves its bound players"
        );
        // Bound to a vanished node while no node takes new players: nowhere to go.
        assert!(matches!(
            decide(3, 1, Some("gone")),
            Decision::Drop(DropReason::NoNode)
        ));

        let b = handle("b");
        table.insert(b, NodeState::Work, vec![route(3, true, true)]);
        let snapshot = table.snapshot();
        assert!(matches!(
            snapshot.decide(3, 1, Some("gone"), RoutingPolicy::RoundRobin, &turn),
            Decision::Rebind(node) if &*node.id == "b"
        ));
    }

    #[test]
    fn least_bound_policy_and_internal_routes() {
        let table = NodeTable::default();
        let (a, b) = (handle("a"), handle("b"));
        let internal = RouteSpec {
            route: 9,
            stateful: false,
            authorized: false,
            internal: true,
        };
        table.insert(a.clone(), NodeState::Work, vec![route(1, false, false), internal]);
        table.insert(b.clone(), NodeState::Work, vec![route(1, false, false)]);
        a.bound.store(5, Ordering::Relaxed);
        b.bound.store(2, Ordering::Relaxed);
        let turn = AtomicUsize::new(0);
        assert_eq!(
            forwarded_to(
                table
                    .snapshot()
                    .decide(1, NO_UID, None, RoutingPolicy::LeastBound, &turn)
            ),
            "b"
        );
        assert!(matches!(
            table
                .snapshot()
                .decide(9, 1, None, RoutingPolicy::RoundRobin, &turn),
            Decision::Drop(DropReason::UnknownRoute)
        ));
    }

    #[test]
    fn draining_is_known_per_linked_node() {
        let table = NodeTable::default();
        let (a, b) = (handle("a"), handle("b"));
        table.insert(a.clone(), NodeState::Work, vec![route(1, false, false)]);
        table.insert(b, NodeState::Draining, vec![route(1, false, false)]);
        assert!(!table.is_draining("a"));
        assert!(table.is_draining("b"));
        assert!(!table.is_draining("gone"));
        table.set_state(&a, NodeState::Draining);
        assert!(table.is_draining("a"));
        table.set_state(&a, NodeState::Shut);
        assert!(!table.is_draining("a"), "a shut node serves nobody any more");
    }

    #[test]
    fn a_replaced_link_is_not_removed_by_its_predecessor() {
        let table = NodeTable::default();
        let old = handle("a");
        let new = handle("a");
        table.insert(old.clone(), NodeState::Work, vec![route(1, false, false)]);
        table.insert(new.clone(), NodeState::Work, vec![route(1, false, false)]);
        table.remove(&old);
        assert!(
            table
                .snapshot()
                .known("a")
                .is_some_and(|node| Arc::ptr_eq(node, &new))
        );
        table.remove(&new);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_dropped_link_keeps_its_players_until_the_grace_ends_and_a_relink_keeps_the_count() {
        let table = NodeTable::default();
        let routes = vec![route(3, true, true)];
        let (a, b) = (handle("a"), handle("b"));
        table.insert(a.clone(), NodeState::Work, routes.clone());
        table.insert(b.clone(), NodeState::Work, routes.clone());
        a.bound.store(5, Ordering::Relaxed);
        let turn = AtomicUsize::new(0);
        let decide = || {
            table
                .snapshot()
                .decide(3, 7, Some("a"), RoutingPolicy::RoundRobin, &turn)
        };
        table.unlink(&a);
        assert!(
            matches!(decide(), Decision::Drop(DropReason::NodeUnlinked)),
            "not re-homed on a flap"
        );
        assert!(
            table.snapshot().known("a").is_some(),
            "its players still count towards it"
        );
        // Back within the grace: same players, same count, on the new link's handle.
        let relinked = handle("a");
        table.insert(relinked.clone(), NodeState::Work, routes.clone());
        assert_eq!(forwarded_to(decide()), "a");
        assert_eq!(relinked.bound.load(Ordering::Relaxed), 5);
        // Gone for longer than the grace: re-homed.
        table.unlink(&relinked);
        table.expire(&relinked);
        assert!(matches!(decide(), Decision::Rebind(node) if &*node.id == "b"));
        // An expiry of an older link never removes a newer one.
        let again = handle("a");
        table.insert(again.clone(), NodeState::Work, routes);
        table.expire(&relinked);
        assert_eq!(forwarded_to(decide()), "a");
    }
}

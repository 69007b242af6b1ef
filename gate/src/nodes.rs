//! The nodes this gate has links to, and the pure routing decisions: where one client packet goes, and which
//! node takes a node-to-node call.
//!
//! Link tasks write node facts (hello with pool and routes, state, registry readiness, link loss) into the
//! [`NodeTable`], which rebuilds an immutable [`RoutingSnapshot`] on every change. Each route belongs to one
//! pool; a route two pools claim is a conflict (the pool whose name sorts first keeps it, the conflict is
//! counted and logged). Readers of client packets take the current snapshot (one `Arc` clone) and decide
//! without locks or I/O, so routing never waits on anything.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};
use rand::Rng;
use switchyard_cluster::link::LinkSender;
use switchyard_protocol::link::{CallTarget, GateToNode, NO_UID, NodeState, RouteSpec, Uid};

use crate::config::{PolicyOf, RoutingPolicy};
use crate::metrics::{DropReason, NodeStateLabels};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// One linked node as the routing path sees it.
#[derive(Debug)]
pub(crate) struct NodeHandle {
    pub(crate) id: Arc<str>,
    /// The pool the node announced in its hello.
    pub(crate) pool: Arc<str>,
    pub(crate) address: String,
    pub(crate) tx: LinkSender<GateToNode>,
    /// Acks and disconnect notices that found the link full, in order (see [`crate::control`]).
    pub(crate) control: crate::control::ControlQueue,
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

/// A route, the pool that owns it, and the nodes that may take a packet of it from a session with no node
/// binding in that pool.
#[derive(Debug)]
pub(crate) struct RouteEntry {
    pub(crate) spec: RouteSpec,
    pub(crate) pool: Arc<str>,
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
    /// Routes claimed by more than one pool, with the pools claiming each.
    conflicts: Vec<RouteConflict>,
}

/// One route that several pools claim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RouteConflict {
    pub(crate) route: i32,
    /// Every claiming pool, sorted; the first one keeps the route.
    pub(crate) pools: Vec<Arc<str>>,
}

/// Where a client packet goes.
#[derive(Debug)]
pub(crate) enum Decision {
    Forward(Arc<NodeHandle>),
    /// The session's bound node in the route's pool is gone; the binding must be cleared and the packet goes
    /// to a new node of the pool.
    Rebind(Arc<NodeHandle>),
    Drop(DropReason),
}

/// Why a node-to-node call has no node to go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoCallee {
    /// No node of the pool (or no node with the id) is linked, or none takes new work.
    NoNode,
    /// The node or pool exists but does not serve the route.
    UnknownRoute,
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

    /// The pools of the linked nodes.
    pub(crate) fn pools(&self) -> BTreeSet<Arc<str>> {
        self.nodes.values().map(|node| node.pool.clone()).collect()
    }

    #[cfg(test)]
    pub(crate) fn conflicts(&self) -> &[RouteConflict] {
        &self.conflicts
    }

    /// The pool that owns `route`, if any linked node serves it.
    #[cfg(test)]
    pub(crate) fn pool_of(&self, route: i32) -> Option<&Arc<str>> {
        self.routes.get(&route).map(|entry| &entry.pool)
    }

    /// Decides where a packet of `route` from a session (`uid`) goes; `bound_node` gives the session's node
    /// binding in a pool.
    pub(crate) fn decide(
        &self,
        route: i32,
        uid: Uid,
        bound_node: impl FnOnce(&str) -> Option<Arc<str>>,
        policy: impl PolicyOf,
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
            && let Some(bound) = bound_node(&entry.pool).as_deref()
        {
            return match self.nodes.get(bound) {
                Some(node) => Decision::Forward(node.clone()),
                None if self.unlinked.contains_key(bound) => Decision::Drop(DropReason::NodeUnlinked),
                None => match pick_new(entry, policy.policy_of(&entry.pool), turn) {
                    Some(node) => Decision::Rebind(node),
                    None => Decision::Drop(DropReason::NoNode),
                },
            };
        }
        match pick_new(entry, policy.policy_of(&entry.pool), turn) {
            Some(node) => Decision::Forward(node),
            None => Decision::Drop(DropReason::NoNode),
        }
    }

    /// The node a node-to-node call of `route` goes to: any node of `pool` that serves the route (by the
    /// policy, never a draining one), or the node `id` if it serves the route.
    pub(crate) fn callee(
        &self,
        target: &CallTarget,
        route: i32,
        policy: impl PolicyOf,
        turn: &AtomicUsize,
    ) -> Result<Arc<NodeHandle>, NoCallee> {
        match target {
            CallTarget::Pool(pool) => {
                let Some(entry) = self.routes.get(&route) else {
                    return Err(self.missing_in_pool(pool));
                };
                if *entry.pool != **pool {
                    return Err(self.missing_in_pool(pool));
                }
                pick_new(entry, policy.policy_of(pool), turn).ok_or(NoCallee::NoNode)
            }
            CallTarget::Node(id) => {
                let node = self.nodes.get(id.as_str()).ok_or(NoCallee::NoNode)?;
                let serves = self
                    .routes
                    .get(&route)
                    .is_some_and(|entry| entry.pool == node.pool);
                if serves {
                    Ok(node.clone())
                } else {
                    Err(NoCallee::UnknownRoute)
                }
            }
        }
    }

    fn missing_in_pool(&self, pool: &str) -> NoCallee {
        if self.nodes.values().any(|node| &*node.pool == pool) {
            NoCallee::UnknownRoute
        } else {
            NoCallee::NoNode
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
    /// Routes claimed by more than one pool now.
    conflict_gauge: Gauge,
    conflicts_logged: Mutex<BTreeSet<RouteConflict>>,
    records: Mutex<HashMap<Arc<str>, NodeRecord>>,
    /// Registry readiness by address; a node missing here counts as accepting.
    accepting: Mutex<HashMap<String, bool>>,
    snapshot: RwLock<Arc<RoutingSnapshot>>,
}

impl NodeTable {
    pub(crate) fn new(state_gauge: Family<NodeStateLabels, Gauge>, conflict_gauge: Gauge) -> Self {
        NodeTable {
            state_gauge,
            conflict_gauge,
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

    /// Logs each conflict once, when it appears, and keeps the gauge at the current count.
    fn report_conflicts(&self, conflicts: &[RouteConflict]) {
        let mut known = self.conflicts_logged.lock();
        for conflict in conflicts {
            if known.insert(conflict.clone()) {
                tracing::error!(
                    route = conflict.route,
                    pools = ?conflict.pools,
                    owner = %conflict.pools[0],
                    "several pools claim one route; the first pool keeps it, the others' claims are refused"
                );
            }
        }
        known.retain(|conflict| conflicts.contains(conflict));
        self.conflict_gauge.set(conflicts.len() as i64);
    }

    fn rebuild(&self, records: &HashMap<Arc<str>, NodeRecord>) {
        let accepting = self.accepting.lock();
        let mut snapshot = RoutingSnapshot::default();
        let mut ordered: Vec<&NodeRecord> = records.values().collect();
        // A stable order keeps round-robin fair across rebuilds; by pool first, so that the pool whose name
        // sorts first owns a route that several pools claim.
        ordered.sort_by(|a, b| (&a.handle.pool, &a.handle.id).cmp(&(&b.handle.pool, &b.handle.id)));
        let mut claims: HashMap<i32, BTreeSet<Arc<str>>> = HashMap::new();
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
                claims
                    .entry(spec.route)
                    .or_default()
                    .insert(record.handle.pool.clone());
                let entry = snapshot.routes.entry(spec.route).or_insert_with(|| RouteEntry {
                    spec: *spec,
                    pool: record.handle.pool.clone(),
                    work: Vec::new(),
                    busy: Vec::new(),
                });
                if entry.pool != record.handle.pool {
                    // Another pool owns the route: this node's claim is a conflict, not a route.
                    continue;
                }
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
        snapshot.conflicts = claims
            .into_iter()
            .filter(|(_, pools)| pools.len() > 1)
            .map(|(route, pools)| RouteConflict {
                route,
                pools: pools.into_iter().collect(),
            })
            .collect();
        snapshot.conflicts.sort();
        self.report_conflicts(&snapshot.conflicts);
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

    /// A session's bindings: bound to `node` in every pool, or unbound.
    fn at(node: Option<&'static str>) -> impl FnOnce(&str) -> Option<Arc<str>> {
        move |_pool| node.map(Arc::from)
    }

    fn handle(id: &str) -> Arc<NodeHandle> {
        pooled(id, "game")
    }

    fn pooled(id: &str, pool: &str) -> Arc<NodeHandle> {
        let (tx, _rx) = switchyard_cluster::link::queue::channel(1, 1024);
        Arc::new(NodeHandle {
            id: id.into(),
            pool: pool.into(),
            address: format!("{id}:1"),
            tx,
            control: crate::control::ControlQueue::detached(),
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
                        .decide(1, NO_UID, at(None), RoutingPolicy::RoundRobin, &turn),
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
                    .decide(1, NO_UID, at(None), RoutingPolicy::RoundRobin, &turn)
            ),
            "c"
        );
        table.set_state(&c, NodeState::Shut);
        assert!(matches!(
            table
                .snapshot()
                .decide(1, NO_UID, at(None), RoutingPolicy::Random, &turn),
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
                        .decide(1, 5, at(None), RoutingPolicy::RoundRobin, &turn)
                ),
                "b"
            );
        }
        // A player bound to `a` keeps going there.
        assert_eq!(
            forwarded_to(
                table
                    .snapshot()
                    .decide(3, 5, at(Some("a")), RoutingPolicy::RoundRobin, &turn)
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
        let decide =
            |route, uid, bound| snapshot.decide(route, uid, at(bound), RoutingPolicy::RoundRobin, &turn);
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
            snapshot.decide(3, 1, at(Some("gone")), RoutingPolicy::RoundRobin, &turn),
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
                    .decide(1, NO_UID, at(None), RoutingPolicy::LeastBound, &turn)
            ),
            "b"
        );
        assert!(matches!(
            table
                .snapshot()
                .decide(9, 1, at(None), RoutingPolicy::RoundRobin, &turn),
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
                .decide(3, 7, at(Some("a")), RoutingPolicy::RoundRobin, &turn)
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

    #[test]
    fn routes_go_to_their_pool_and_bindings_are_per_pool() {
        let table = NodeTable::default();
        let (lobby, battle_a, battle_b) = (
            pooled("l1", "lobby"),
            pooled("b1", "battle"),
            pooled("b2", "battle"),
        );
        table.insert(lobby.clone(), NodeState::Work, vec![route(2, false, false)]);
        table.insert(battle_a.clone(), NodeState::Work, vec![route(13, true, true)]);
        table.insert(battle_b.clone(), NodeState::Work, vec![route(13, true, true)]);
        let turn = AtomicUsize::new(0);
        let snapshot = table.snapshot();
        assert_eq!(
            forwarded_to(snapshot.decide(2, 1, at(None), RoutingPolicy::RoundRobin, &turn)),
            "l1"
        );
        // Bound in `battle` to b2: the battle route goes there, whatever binding another pool has.
        let bindings = |pool: &str| (pool == "battle").then(|| Arc::from("b2"));
        assert_eq!(
            forwarded_to(snapshot.decide(13, 1, bindings, RoutingPolicy::RoundRobin, &turn)),
            "b2"
        );
        let lobby_only = |pool: &str| (pool == "lobby").then(|| Arc::from("l1"));
        assert!(matches!(
            snapshot.decide(13, 1, lobby_only, RoutingPolicy::RoundRobin, &turn),
            Decision::Forward(node) if &*node.pool == "battle"
        ));
        assert_eq!(snapshot.pool_of(13).map(|pool| &**pool), Some("battle"));
        assert!(snapshot.conflicts().is_empty());
    }

    #[test]
    fn calls_pick_a_node_of_the_pool_or_the_named_node_and_say_why_not() {
        let table = NodeTable::default();
        let internal = RouteSpec {
            route: 101,
            stateful: false,
            authorized: false,
            internal: true,
        };
        let (b1, b2, lobby) = (
            pooled("b1", "battle"),
            pooled("b2", "battle"),
            pooled("l1", "lobby"),
        );
        table.insert(b1.clone(), NodeState::Draining, vec![internal]);
        table.insert(b2.clone(), NodeState::Work, vec![internal]);
        table.insert(lobby, NodeState::Work, vec![route(2, false, false)]);
        let turn = AtomicUsize::new(0);
        let snapshot = table.snapshot();
        let call = |target: CallTarget, route| {
            snapshot
                .callee(&target, route, RoutingPolicy::RoundRobin, &turn)
                .map(|node| node.id.to_string())
        };
        for _ in 0..3 {
            assert_eq!(
                call(CallTarget::Pool("battle".into()), 101),
                Ok("b2".into()),
                "never the draining node"
            );
        }
        assert_eq!(
            call(CallTarget::Node("b1".into()), 101),
            Ok("b1".into()),
            "a named node, even draining"
        );
        assert_eq!(
            call(CallTarget::Pool("battle".into()), 2),
            Err(NoCallee::UnknownRoute)
        );
        assert_eq!(
            call(CallTarget::Pool("nowhere".into()), 101),
            Err(NoCallee::NoNode)
        );
        assert_eq!(
            call(CallTarget::Node("l1".into()), 101),
            Err(NoCallee::UnknownRoute)
        );
        assert_eq!(call(CallTarget::Node("gone".into()), 101), Err(NoCallee::NoNode));
        // Internal routes are for calls only.
        assert!(matches!(
            snapshot.decide(101, 1, at(None), RoutingPolicy::RoundRobin, &turn),
            Decision::Drop(DropReason::UnknownRoute)
        ));
    }

    #[test]
    fn a_route_two_pools_claim_stays_with_the_first_pool_and_is_reported() {
        let gauge = Gauge::default();
        let table = NodeTable::new(Family::default(), gauge.clone());
        let (lobby, battle) = (pooled("l1", "lobby"), pooled("b1", "battle"));
        table.insert(
            lobby.clone(),
            NodeState::Work,
            vec![route(5, false, false), route(2, false, false)],
        );
        table.insert(battle.clone(), NodeState::Work, vec![route(5, false, false)]);
        let snapshot = table.snapshot();
        assert_eq!(
            snapshot.conflicts(),
            [RouteConflict {
                route: 5,
                pools: vec!["battle".into(), "lobby".into()]
            }]
        );
        assert_eq!(gauge.get(), 1);
        let turn = AtomicUsize::new(0);
        for _ in 0..3 {
            assert_eq!(
                forwarded_to(snapshot.decide(5, 1, at(None), RoutingPolicy::RoundRobin, &turn)),
                "b1"
            );
        }
        table.remove(&battle);
        assert!(table.snapshot().conflicts().is_empty());
        assert_eq!(gauge.get(), 0);
    }
}

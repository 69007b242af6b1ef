//! Pools end to end through the pure parts: the objects of `spec.pools` and of the single-pool form, the
//! spec rules, and the status of two pools (counts, route conflicts, scale events).

#![allow(clippy::field_reassign_with_default)]

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::core::v1::{Container, EnvVar};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use switchyard_cluster::contract::env;
use switchyard_cluster::kubernetes::{BOUND_PLAYERS_ANNOTATION, DRAIN_ANNOTATION, ROUTES_ANNOTATION};

use super::*;
use crate::children::{Children, Defaults, LABEL_POOL, SpecError, children};
use crate::conflicts::route_conflicts;
use crate::crd::GameCluster;
use crate::status::{CONDITION_ROUTE_CONFLICT, Observed, ObservedPool, aggregate, condition, transitions};

fn pool(name: &str, replicas: i32, image: &str) -> PoolSpec {
    let mut node = NodeSpec::default();
    node.replicas = replicas;
    node.image = Some(image.to_owned());
    PoolSpec {
        name: name.to_owned(),
        routing: RoutingPolicy::RoundRobin,
        node,
    }
}

fn two_pools() -> GameClusterSpec {
    let mut spec = GameClusterSpec::default();
    let mut battle = pool("battle", 3, "game:battle-1");
    battle.routing = RoutingPolicy::LeastBound;
    spec.pools = vec![pool("lobby", 2, "game:lobby-1"), battle];
    spec
}

fn cluster(spec: GameClusterSpec) -> GameCluster {
    let mut cluster = GameCluster::new("arena", spec);
    cluster.metadata.namespace = Some("games".into());
    cluster.metadata.uid = Some("uid-1".into());
    cluster.metadata.generation = Some(1);
    cluster
}

fn build(spec: GameClusterSpec) -> Children {
    children(&cluster(spec), &Defaults::default()).expect("a valid spec")
}

fn refused(spec: GameClusterSpec) -> SpecError {
    children(&cluster(spec), &Defaults::default()).expect_err("an invalid spec")
}

fn container(deployment: &Deployment) -> &Container {
    &deployment
        .spec
        .template
        .spec
        .as_ref()
        .expect("pod spec")
        .containers[0]
}

fn env_value(container: &Container, name: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|var| var.name == name)
        .and_then(|var| var.value.clone())
}

fn labels(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

#[test]
fn each_pool_gets_its_own_deployment_service_budget_and_game_pool() {
    let built = build(two_pools());
    let names: Vec<(String, String, String, String)> = built
        .pools
        .iter()
        .map(|pool| {
            (
                pool.deployment.metadata.name.clone().unwrap_or_default(),
                pool.service.metadata.name.clone().unwrap_or_default(),
                pool.pdb.metadata.name.clone().unwrap_or_default(),
                pool.game_pool
                    .as_ref()
                    .map(ResourceExt::name_any)
                    .unwrap_or_default(),
            )
        })
        .collect();
    let expected = |pool: &str| {
        let object = format!("arena-node-{pool}");
        (object.clone(), object.clone(), object, format!("arena-{pool}"))
    };
    assert_eq!(names, [expected("lobby"), expected("battle")]);

    for (pool, image, replicas) in [("lobby", "game:lobby-1", 2), ("battle", "game:battle-1", 3)] {
        let children = built.pools.iter().find(|p| p.name == pool).expect("the pool");
        let node = container(&children.deployment);
        assert_eq!(env_value(node, env::POOL).as_deref(), Some(pool));
        assert_eq!(node.image.as_deref(), Some(image));
        assert_eq!(children.deployment.spec.replicas, Some(replicas));
        // The pool label selects: in the Deployment, its template, the Service and the budget.
        let selector = children
            .deployment
            .spec
            .selector
            .match_labels
            .clone()
            .unwrap_or_default();
        assert_eq!(selector.get(LABEL_POOL).map(String::as_str), Some(pool));
        let template = labels(children.deployment.spec.template.metadata.as_ref().expect("meta"));
        assert!(
            selector.iter().all(|(k, v)| template.get(k) == Some(v)),
            "{template:?}"
        );
        let service = children
            .service
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        assert_eq!(service, selector);
        let budget = children
            .pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .and_then(|s| s.match_labels);
        assert_eq!(budget, Some(selector.clone()));
        assert_eq!(
            children.selector,
            format!(
                "app.kubernetes.io/component=node,app.kubernetes.io/instance=arena,app.kubernetes.io/name=switchyard,switchyard.dev/pool={pool}"
            )
        );
        let game_pool = children.game_pool.as_ref().expect("a GamePool");
        assert_eq!(game_pool.spec.replicas, replicas);
        assert_eq!(game_pool.spec.pool, pool);
        assert_eq!(game_pool.spec.cluster, "arena");
        assert_eq!(
            game_pool.annotations().get(SPEC_REPLICAS_ANNOTATION),
            Some(&replicas.to_string())
        );
        assert_eq!(game_pool.owner_references()[0].uid, "uid-1");
    }
    // Gates watch both pools' Services and learn each pool's routing policy.
    let gate = container(&built.gate_deployment);
    assert_eq!(
        env_value(gate, env::NODE_SERVICE).as_deref(),
        Some("arena-node-lobby,arena-node-battle")
    );
    assert_eq!(
        env_value(gate, env::POOL_ROUTING).as_deref(),
        Some("lobby=round-robin,battle=least-bound")
    );
}

#[test]
fn a_template_change_in_one_pool_leaves_the_other_pools_deployment_alone() {
    let before = build(two_pools());
    let mut spec = two_pools();
    spec.pools[1].node.image = Some("game:battle-2".into());
    spec.pools[1].node.env.push(EnvVar {
        name: "MODE".into(),
        value: Some("ranked".into()),
        value_from: None,
    });
    let after = build(spec);
    assert_eq!(
        before.pools[0].deployment, after.pools[0].deployment,
        "lobby must not roll"
    );
    assert_ne!(
        before.pools[1].deployment.spec.template,
        after.pools[1].deployment.spec.template
    );
}

#[test]
fn the_single_pool_form_keeps_its_names_and_selectors() {
    let built = build(GameClusterSpec::default());
    assert_eq!(built.pools.len(), 1);
    let game = &built.pools[0];
    assert_eq!(game.name, "game");
    assert!(game.single && game.game_pool.is_none());
    assert_eq!(game.deployment.metadata.name.as_deref(), Some("arena-node"));
    assert_eq!(game.service.metadata.name.as_deref(), Some("arena-node"));
    assert_eq!(game.deployment.spec.replicas, Some(2));
    // No pool label where it would change an immutable selector or roll the pods of an upgraded cluster.
    let selector = game
        .deployment
        .spec
        .selector
        .match_labels
        .clone()
        .unwrap_or_default();
    assert!(!selector.contains_key(LABEL_POOL));
    let template = labels(game.deployment.spec.template.metadata.as_ref().expect("meta"));
    assert!(!template.contains_key(LABEL_POOL));
    assert_eq!(
        labels(&game.deployment.metadata)
            .get(LABEL_POOL)
            .map(String::as_str),
        Some("game")
    );
    assert_eq!(
        env_value(container(&game.deployment), env::POOL).as_deref(),
        Some("game")
    );
    let gate = container(&built.gate_deployment);
    assert_eq!(env_value(gate, env::NODE_SERVICE).as_deref(), Some("arena-node"));
    assert_eq!(env_value(gate, env::POOL_ROUTING), None);
}

#[test]
fn pool_specs_that_cannot_work_are_refused_naming_the_field() {
    let message = |spec| refused(spec).to_string();
    let mut both = two_pools();
    both.node = Some(NodeSpec::default());
    assert!(message(both).contains("spec.node and spec.pools are exclusive"));
    let mut twice = two_pools();
    twice.pools[1].name = "lobby".into();
    assert!(message(twice).contains("pools[].name must be unique"));
    for bad in ["Lobby", "1st", "lobby-", "a-very-long-pool-name", ""] {
        let mut spec = two_pools();
        spec.pools[0].name = bad.into();
        assert!(message(spec).contains("must be a DNS label"), "{bad:?}");
    }
    let mut long = two_pools();
    long.pools[0].name = "abcdefghijklmno".into();
    let mut cluster = cluster(long);
    cluster.metadata.name = Some("a".repeat(43));
    let error = children(&cluster, &Defaults::default()).expect_err("too long together");
    assert!(error.to_string().contains("at most 57 characters"), "{error}");
    let mut deadline = two_pools();
    deadline.pools[1].node.drain_deadline_seconds = 0;
    assert!(message(deadline).contains("pools[battle].drainDeadlineSeconds must be greater than 0"));
    let mut reserved = two_pools();
    reserved.pools[0].node.env.push(EnvVar {
        name: env::POOL.into(),
        value: Some("battle".into()),
        value_from: None,
    });
    let error = refused(reserved);
    assert_eq!(error.reason(), "ReservedEnv");
    assert!(
        error
            .to_string()
            .contains("pools[lobby].env sets SWITCHYARD_POOL"),
        "{error}"
    );
    let mut annotated = two_pools();
    annotated.pools[1]
        .node
        .pod_annotations
        .insert(DRAIN_ANNOTATION.into(), "true".into());
    assert!(message(annotated).contains("pools[battle].podAnnotations"));
    let mut many = GameClusterSpec::default();
    many.pools = (0..17).map(|i| pool(&format!("p{i}"), 1, "x")).collect();
    assert!(message(many).contains("at most 16 pools"));
}

fn ready_deployment(replicas: i32) -> Deployment {
    let mut deployment = Deployment::default();
    deployment.metadata.generation = Some(1);
    deployment.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(replicas),
        ready_replicas: Some(replicas),
        updated_replicas: Some(replicas),
        available_replicas: Some(replicas),
        ..Default::default()
    });
    deployment
}

fn node_pod(pool: &str, players: &str, routes: &str, drain: bool) -> ObjectMeta {
    let mut annotations = BTreeMap::from([
        (BOUND_PLAYERS_ANNOTATION.to_owned(), players.to_owned()),
        (ROUTES_ANNOTATION.to_owned(), routes.to_owned()),
    ]);
    if drain {
        annotations.insert(DRAIN_ANNOTATION.to_owned(), "true".to_owned());
    }
    ObjectMeta {
        name: Some(format!("{pool}-{players}")),
        labels: Some(BTreeMap::from([(LABEL_POOL.to_owned(), pool.to_owned())])),
        annotations: Some(annotations),
        ..Default::default()
    }
}

#[test]
fn status_reports_every_pool_and_a_route_served_by_two_pools() {
    let cluster = cluster(two_pools());
    let (gate, lobby, battle, redis) = (
        ready_deployment(2),
        ready_deployment(2),
        ready_deployment(4),
        ready_deployment(1),
    );
    let lobby_pods = [
        node_pod("lobby", "3", "1,2,11", false),
        node_pod("lobby", "4", "1,2,11", false),
    ];
    let battle_pods = [
        node_pod("battle", "5", "3,4,13", false),
        node_pod("battle", "6", "3,4,13", true),
    ];
    let pools = [
        ObservedPool {
            name: "lobby",
            desired: Some(2),
            deployment: Some(&lobby),
            pods: &lobby_pods,
        },
        ObservedPool {
            // Scaled with kubectl scale gamepool/arena-battle: the GamePool says 4, the spec 3.
            name: "battle",
            desired: Some(4),
            deployment: Some(&battle),
            pods: &battle_pods,
        },
    ];
    let all: Vec<ObjectMeta> = lobby_pods.iter().chain(&battle_pods).cloned().collect();
    let check = route_conflicts(&all);
    let observed = |conflicts| Observed {
        gate: Some(&gate),
        pools: &pools,
        redis: Some(&redis),
        wants_redis: true,
        conflicts,
        problem: None,
    };
    let status = aggregate(&cluster, None, &observed(&check.conflicts), Timestamp::UNIX_EPOCH);
    let summary: Vec<(&str, i32, i32, i32, i64)> = status
        .pools
        .iter()
        .map(|p| (p.name.as_str(), p.desired, p.ready, p.draining, p.bound_players))
        .collect();
    assert_eq!(summary, [("lobby", 2, 2, 0, 7), ("battle", 4, 4, 1, 11)]);
    assert_eq!(
        (status.node.desired, status.node.ready, status.node.draining),
        (6, 6, 1)
    );
    assert_eq!(status.bound_players, 18);
    let no_conflict = condition(&status, CONDITION_ROUTE_CONFLICT).expect("condition");
    assert_eq!(no_conflict.status, "False");

    // A battle node starts serving route 11 too: the condition names the route and both pools.
    let mut conflicting = all.clone();
    conflicting.push(node_pod("battle", "0", "3,11", false));
    let check = route_conflicts(&conflicting);
    let next = aggregate(
        &cluster,
        Some(&status),
        &observed(&check.conflicts),
        Timestamp::UNIX_EPOCH,
    );
    let conflict = condition(&next, CONDITION_ROUTE_CONFLICT).expect("condition");
    assert_eq!(conflict.status, "True");
    assert_eq!(conflict.reason, "RouteServedByTwoPools");
    assert_eq!(conflict.message, "route 11 is served by pools battle and lobby");
    let notices = transitions(Some(&status), &next);
    assert!(
        notices.iter().any(|n| n.warning && n.reason == "RouteConflict"),
        "{notices:?}"
    );
    // Resolved again: a Normal event.
    let resolved = aggregate(&cluster, Some(&next), &observed(&[]), Timestamp::UNIX_EPOCH);
    let notices = transitions(Some(&next), &resolved);
    assert!(
        notices
            .iter()
            .any(|n| !n.warning && n.reason == "RouteConflictResolved")
    );
}

#[test]
fn scaling_one_pool_is_an_event_naming_that_pool() {
    let cluster = cluster(two_pools());
    let deployment = ready_deployment(2);
    let observed = |battle| {
        let pools: &'static [ObservedPool<'static>] = Box::leak(Box::new([
            ObservedPool {
                name: "lobby",
                desired: Some(2),
                deployment: None,
                pods: &[],
            },
            ObservedPool {
                name: "battle",
                desired: Some(battle),
                deployment: None,
                pods: &[],
            },
        ]));
        pools
    };
    let at = |battle| {
        aggregate(
            &cluster,
            None,
            &Observed {
                gate: Some(&deployment),
                pools: observed(battle),
                redis: None,
                wants_redis: false,
                conflicts: &[],
                problem: None,
            },
            Timestamp::UNIX_EPOCH,
        )
    };
    let notices = transitions(Some(&at(3)), &at(5));
    let scaled: Vec<&str> = notices
        .iter()
        .filter(|n| n.reason == "Scaled")
        .map(|n| n.message.as_str())
        .collect();
    assert_eq!(scaled, ["node pool battle scaled from 3 to 5"]);
}

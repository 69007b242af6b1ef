//! Route conflicts: two pools of one cluster serving the same client route. Gates route a client packet by
//! its route to the pool that serves it, so a route served by two pools cannot be routed; the gates refuse
//! it (and count it), and the operator shows it as the `RouteConflict` condition of the GameCluster.
//!
//! The operator learns each node's routes from its pod's `switchyard.dev/routes` annotation
//! ([`ROUTES_ANNOTATION`]), which it copies there itself from the node's load report ([`crate::load`]); the
//! pool of a pod is its `switchyard.dev/pool` label, or `game` for the single-pool form (whose pods carry no
//! pool label). Pure: unit-tested without a server.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use switchyard_cluster::contract::DEFAULT_POOL;
use switchyard_cluster::kubernetes::ROUTES_ANNOTATION;
use switchyard_cluster::load::{LoadError, parse_routes};

use crate::children::LABEL_POOL;

/// One route served by more than one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConflict {
    pub route: i32,
    /// The pools serving it, sorted.
    pub pools: Vec<String>,
}

/// A pod whose routes annotation cannot be read (it is left out of the check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableRoutes {
    pub pod: String,
    pub error: LoadError,
}

/// What [`route_conflicts`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteCheck {
    /// Sorted by route.
    pub conflicts: Vec<RouteConflict>,
    pub unreadable: Vec<UnreadableRoutes>,
}

/// The pool of a node pod.
pub fn pod_pool(pod: &ObjectMeta) -> &str {
    pod.labels
        .as_ref()
        .and_then(|labels| labels.get(LABEL_POOL))
        .map_or(DEFAULT_POOL, String::as_str)
}

/// The routes served by more than one pool, over the node pods `pods` of one cluster. A pod without the
/// annotation (not reporting yet) serves no route as far as this check knows.
pub fn route_conflicts(pods: &[ObjectMeta]) -> RouteCheck {
    let mut owners: BTreeMap<i32, BTreeSet<&str>> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for pod in pods {
        let Some(text) = pod
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(ROUTES_ANNOTATION))
        else {
            continue;
        };
        match parse_routes(text) {
            Ok(routes) => {
                let pool = pod_pool(pod);
                for route in routes {
                    owners.entry(route).or_default().insert(pool);
                }
            }
            Err(error) => unreadable.push(UnreadableRoutes {
                pod: pod.name.clone().unwrap_or_default(),
                error,
            }),
        }
    }
    let conflicts = owners
        .into_iter()
        .filter(|(_, pools)| pools.len() > 1)
        .map(|(route, pools)| RouteConflict {
            route,
            pools: pools.into_iter().map(str::to_owned).collect(),
        })
        .collect();
    RouteCheck {
        conflicts,
        unreadable,
    }
}

/// The condition message: every conflicting route and its pools, e.g. `route 11 is served by pools battle
/// and lobby`.
pub fn describe(conflicts: &[RouteConflict]) -> String {
    conflicts
        .iter()
        .map(|conflict| {
            let pools = match conflict.pools.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
                _ => conflict.pools.join(""),
            };
            format!("route {} is served by pools {pools}", conflict.route)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, pool: Option<&str>, routes: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            labels: pool.map(|pool| BTreeMap::from([(LABEL_POOL.to_owned(), pool.to_owned())])),
            annotations: routes
                .map(|routes| BTreeMap::from([(ROUTES_ANNOTATION.to_owned(), routes.to_owned())])),
            ..Default::default()
        }
    }

    #[test]
    fn pools_with_distinct_routes_do_not_conflict() {
        let pods = [
            pod("lobby-a", Some("lobby"), Some("1,2,11")),
            pod("lobby-b", Some("lobby"), Some("1,2,11")),
            pod("battle-a", Some("battle"), Some("3,4,5,7,13")),
            pod("battle-new", Some("battle"), None),
        ];
        assert_eq!(route_conflicts(&pods), RouteCheck::default());
    }

    #[test]
    fn a_route_of_two_pools_is_a_conflict_naming_both() {
        let pods = [
            pod("lobby-a", Some("lobby"), Some("1,2,11")),
            pod("battle-a", Some("battle"), Some("3,11")),
            pod("match-a", Some("match"), Some("11,2")),
        ];
        let check = route_conflicts(&pods);
        assert_eq!(
            check.conflicts,
            [
                RouteConflict {
                    route: 2,
                    pools: vec!["lobby".into(), "match".into()]
                },
                RouteConflict {
                    route: 11,
                    pools: vec!["battle".into(), "lobby".into(), "match".into()]
                },
            ]
        );
        assert_eq!(
            describe(&check.conflicts),
            "route 2 is served by pools lobby and match; route 11 is served by pools battle, lobby and match"
        );
    }

    #[test]
    fn pods_without_a_pool_label_are_the_game_pool_and_bad_annotations_are_reported() {
        let pods = [
            pod("old", None, Some("1")),
            pod("lobby-a", Some("lobby"), Some("1")),
            pod("broken", Some("battle"), Some("1,x")),
        ];
        let check = route_conflicts(&pods);
        assert_eq!(
            check.conflicts,
            [RouteConflict {
                route: 1,
                pools: vec!["game".into(), "lobby".into()]
            }]
        );
        assert_eq!(check.unreadable.len(), 1);
        assert_eq!(check.unreadable[0].pod, "broken");
    }
}

//! The pure translation from a Service's EndpointSlices to the node set a registry publishes.
//!
//! The rules are documented on [`node_endpoints`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};

use crate::registry::NodeEndpoint;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Translates EndpointSlices into the node set. Pure and total: malformed parts of a slice are skipped,
/// never an error.
///
/// Rules (conditions as the `discovery.k8s.io/v1` API defines them: `ready` nil = true, `serving` nil = true,
/// `terminating` nil = false; kube-proxy reads them the same way):
///
/// - every address of every endpoint listed in a slice is **present**, whatever its conditions: gates keep a
///   link to it. A draining Switchyard node fails its readiness probe, so its endpoint reads `ready` false,
///   `serving` false (and `terminating` true once its pod is being deleted), yet players bound to it must keep
///   reaching it until it exits and leaves the slice. A crashed node's link fails by itself;
/// - a present endpoint is **accepting** (takes new players) when `ready` is true and `terminating` is not
///   (`serving` + `terminating` is draining: present, not accepting);
/// - the port is the slice's port named like the configured port name; a slice without such a port but with
///   exactly one port uses that one; any other slice is skipped. Ports without a number, with a number outside
///   1..=65535 or with a protocol other than TCP do not count;
/// - addresses are `ip:port`, IPv6 as `[ip]:port` (in canonical form), FQDN slices as `host:port`; an address
///   that does not parse as an IP in an IP slice is skipped;
/// - the same address in several slices (slices are being split or merged) is listed once, accepting if any
///   copy accepts;
/// - the result is sorted by address, so equal inputs give equal outputs whatever the slice order.
pub fn node_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port_name: &str,
) -> Vec<NodeEndpoint> {
    let mut nodes: BTreeMap<String, bool> = BTreeMap::new();
    for slice in slices {
        let Some(port) = slice_port(slice.ports.as_deref().unwrap_or_default(), port_name) else {
            continue;
        };
        let fqdn = slice.address_type == "FQDN";
        for endpoint in slice.endpoints.iter().flatten() {
            let accepting = accepts_new_players(endpoint);
            for address in &endpoint.addresses {
                let Some(address) = format_address(address, port, fqdn) else {
                    continue;
                };
                let entry = nodes.entry(address).or_insert(false);
                *entry |= accepting;
            }
        }
    }
    nodes
        .into_iter()
        .map(|(address, accepting)| NodeEndpoint { address, accepting })
        .collect()
}

/// Whether a listed endpoint accepts new players.
fn accepts_new_players(endpoint: &Endpoint) -> bool {
    let conditions = endpoint.conditions.as_ref();
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    ready && !terminating
}

/// The port links use in a slice with these ports.
fn slice_port(ports: &[EndpointPort], port_name: &str) -> Option<u16> {
    let named = ports
        .iter()
        .find(|p| p.name.as_deref().unwrap_or_default() == port_name);
    let port = match (named, ports) {
        (Some(port), _) => port,
        (None, [only]) => only,
        (None, _) => return None,
    };
    let tcp = port.protocol.as_deref().is_none_or(|p| p == "TCP");
    let number = u16::try_from(port.port?).ok().filter(|&n| n != 0)?;
    tcp.then_some(number)
}

fn format_address(address: &str, port: u16, fqdn: bool) -> Option<String> {
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port).to_string());
    }
    (fqdn && !address.is_empty()).then(|| format!("{address}:{port}"))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::EndpointConditions;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    /// Conditions as (ready, serving, terminating), `None` for an unset field.
    type Cond = (Option<bool>, Option<bool>, Option<bool>);

    fn endpoint(addresses: &[&str], cond: Option<Cond>) -> Endpoint {
        Endpoint {
            addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
            conditions: cond.map(|(ready, serving, terminating)| EndpointConditions {
                ready,
                serving,
                terminating,
            }),
            ..Endpoint::default()
        }
    }

    fn port(name: Option<&str>, number: Option<i32>) -> EndpointPort {
        EndpointPort {
            name: name.map(str::to_owned),
            port: number,
            protocol: Some("TCP".to_owned()),
            ..EndpointPort::default()
        }
    }

    fn slice(address_type: &str, ports: Vec<EndpointPort>, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: address_type.to_owned(),
            endpoints: Some(endpoints),
            metadata: ObjectMeta {
                name: Some("nodes-abcde".to_owned()),
                ..ObjectMeta::default()
            },
            ports: Some(ports),
        }
    }

    fn link_slice(endpoints: Vec<Endpoint>) -> EndpointSlice {
        slice(
            "IPv4",
            vec![port(Some("admin"), Some(9000)), port(Some("link"), Some(7000))],
            endpoints,
        )
    }

    fn ep(address: &str, accepting: bool) -> NodeEndpoint {
        NodeEndpoint {
            address: address.to_owned(),
            accepting,
        }
    }

    const T: Option<bool> = Some(true);
    const F: Option<bool> = Some(false);
    const N: Option<bool> = None;

    /// The node set for one endpoint with these conditions.
    fn one(cond: Option<Cond>) -> Vec<NodeEndpoint> {
        node_endpoints(&[link_slice(vec![endpoint(&["10.244.0.5"], cond)])], "link")
    }

    #[test]
    fn conditions_map_to_present_and_accepting() {
        let accepting = vec![ep("10.244.0.5:7000", true)];
        // Listed but not taking new players: draining, starting, or failing its probe. Still linked.
        let linked_only = vec![ep("10.244.0.5:7000", false)];
        // (ready, serving, terminating) -> expected
        let cases: &[(Cond, &Vec<NodeEndpoint>)] = &[
            ((T, T, F), &accepting),   // running and ready
            ((F, T, T), &linked_only), // terminating, still serving: draining
            ((T, T, T), &linked_only), // publishNotReadyAddresses keeps ready=true while terminating
            ((F, F, T), &linked_only), // a draining Switchyard node being deleted: fails readiness on purpose
            ((F, F, F), &linked_only), // not ready (drain by annotation, starting, or failing its probe)
            ((T, F, F), &accepting),   // inconsistent; ready decides
            ((F, T, F), &linked_only), // serving but not ready
            ((N, N, N), &accepting),   // all nil: ready, serving, not terminating
            ((F, N, N), &linked_only), // not ready
            ((N, F, N), &accepting),   // ready nil = true
            ((N, T, T), &linked_only), // ready nil but terminating
            ((N, N, T), &linked_only), // terminating
            ((T, N, F), &accepting),   // serving nil
            ((T, T, N), &accepting),   // terminating nil = false
        ];
        for (cond, expected) in cases {
            assert_eq!(
                &one(Some(*cond)),
                *expected,
                "conditions (ready, serving, terminating) = {cond:?}"
            );
        }
        assert_eq!(one(None), accepting, "no conditions at all: every field nil");
    }

    #[test]
    fn every_address_of_an_endpoint_counts() {
        let s = link_slice(vec![endpoint(&["10.244.0.7", "10.244.0.6"], Some((T, T, F)))]);
        assert_eq!(
            node_endpoints([&s], "link"),
            vec![ep("10.244.0.6:7000", true), ep("10.244.0.7:7000", true)]
        );
    }

    #[test]
    fn port_is_chosen_by_name_then_the_only_port() {
        let e = || vec![endpoint(&["10.244.0.5"], None)];
        // named: the other port is ignored
        assert_eq!(
            node_endpoints(&[link_slice(e())], "link"),
            vec![ep("10.244.0.5:7000", true)]
        );
        // only port, different name: used
        let only = slice("IPv4", vec![port(Some("game"), Some(7100))], e());
        assert_eq!(node_endpoints([&only], "link"), vec![ep("10.244.0.5:7100", true)]);
        // only port, unnamed (a Service with one unnamed port)
        let unnamed = slice("IPv4", vec![port(Some(""), Some(7200))], e());
        assert_eq!(
            node_endpoints([&unnamed], "link"),
            vec![ep("10.244.0.5:7200", true)]
        );
        let unnamed_nil = slice("IPv4", vec![port(None, Some(7300))], e());
        assert_eq!(
            node_endpoints([&unnamed_nil], "link"),
            vec![ep("10.244.0.5:7300", true)]
        );
        // an empty configured name matches the unnamed port among several
        let several = slice(
            "IPv4",
            vec![port(Some("admin"), Some(9000)), port(Some(""), Some(7400))],
            e(),
        );
        assert_eq!(node_endpoints([&several], ""), vec![ep("10.244.0.5:7400", true)]);
        // several ports, none named like the config: skipped
        assert_eq!(node_endpoints([&several], "link"), vec![]);
        // no ports at all (nil or empty): skipped
        let mut none = slice("IPv4", vec![], e());
        assert_eq!(node_endpoints([&none], "link"), vec![]);
        none.ports = None;
        assert_eq!(node_endpoints([&none], "link"), vec![]);
    }

    #[test]
    fn unusable_ports_skip_the_slice() {
        let e = || vec![endpoint(&["10.244.0.5"], None)];
        for bad in [None, Some(0), Some(-1), Some(65536)] {
            let s = slice("IPv4", vec![port(Some("link"), bad)], e());
            assert_eq!(node_endpoints([&s], "link"), vec![], "port number {bad:?}");
        }
        let mut udp = port(Some("link"), Some(7000));
        udp.protocol = Some("UDP".to_owned());
        assert_eq!(node_endpoints([&slice("IPv4", vec![udp], e())], "link"), vec![]);
        let mut unset = port(Some("link"), Some(7000));
        unset.protocol = None; // defaults to TCP
        assert_eq!(
            node_endpoints([&slice("IPv4", vec![unset], e())], "link"),
            vec![ep("10.244.0.5:7000", true)]
        );
        assert_eq!(
            node_endpoints(
                [&slice("IPv4", vec![port(Some("link"), Some(65535))], e())],
                "link"
            ),
            vec![ep("10.244.0.5:65535", true)]
        );
    }

    #[test]
    fn ipv6_is_bracketed_and_canonical() {
        let s = slice(
            "IPv6",
            vec![port(Some("link"), Some(7000))],
            vec![
                endpoint(&["fd00:10:244::5"], Some((T, T, F))),
                endpoint(&["FD00:10:244:0:0:0:0:6"], Some((F, T, T))),
            ],
        );
        assert_eq!(
            node_endpoints([&s], "link"),
            vec![
                ep("[fd00:10:244::5]:7000", true),
                ep("[fd00:10:244::6]:7000", false)
            ]
        );
    }

    #[test]
    fn fqdn_slices_use_host_names_and_ip_slices_skip_garbage() {
        let fqdn = slice(
            "FQDN",
            vec![port(Some("link"), Some(7000))],
            vec![endpoint(&["node-0.nodes.games.svc.cluster.local", ""], None)],
        );
        assert_eq!(
            node_endpoints([&fqdn], "link"),
            vec![ep("node-0.nodes.games.svc.cluster.local:7000", true)]
        );
        let garbage = link_slice(vec![endpoint(&["not-an-ip", "", "10.244.0.5"], None)]);
        assert_eq!(
            node_endpoints([&garbage], "link"),
            vec![ep("10.244.0.5:7000", true)]
        );
    }

    #[test]
    fn duplicates_across_slices_accept_if_any_copy_accepts() {
        let old = link_slice(vec![
            endpoint(&["10.244.0.5"], Some((F, T, T))),
            endpoint(&["10.244.0.6"], Some((F, T, T))),
            endpoint(&["10.244.0.7"], Some((T, T, F))),
        ]);
        let new = link_slice(vec![
            endpoint(&["10.244.0.5"], Some((T, T, F))),
            endpoint(&["10.244.0.6"], Some((F, T, T))),
            endpoint(&["10.244.0.7"], Some((F, F, T))),
        ]);
        let expected = vec![
            ep("10.244.0.5:7000", true),
            ep("10.244.0.6:7000", false),
            ep("10.244.0.7:7000", true),
        ];
        assert_eq!(node_endpoints([&old, &new], "link"), expected);
        assert_eq!(
            node_endpoints([&new, &old], "link"),
            expected,
            "order of slices does not matter"
        );
        // one slice listing the same address twice
        let twice = link_slice(vec![
            endpoint(&["10.244.0.8"], Some((F, T, T))),
            endpoint(&["10.244.0.8"], Some((T, T, F))),
        ]);
        assert_eq!(
            node_endpoints([&twice], "link"),
            vec![ep("10.244.0.8:7000", true)]
        );
    }

    #[test]
    fn multiple_slices_merge_sorted_and_ports_are_per_slice() {
        let a = link_slice(vec![
            endpoint(&["10.244.1.9"], None),
            endpoint(&["10.244.1.2"], Some((F, F, F))),
        ]);
        let b = slice(
            "IPv4",
            vec![port(Some("link"), Some(7001))],
            vec![endpoint(&["10.244.0.3"], Some((F, T, T)))],
        );
        let skipped = slice(
            "IPv4",
            vec![port(Some("x"), Some(1)), port(Some("y"), Some(2))],
            vec![endpoint(&["10.244.0.1"], None)],
        );
        let v6 = slice(
            "IPv6",
            vec![port(Some("link"), Some(7000))],
            vec![endpoint(&["fd00::1"], None)],
        );
        let expected = vec![
            ep("10.244.0.3:7001", false),
            ep("10.244.1.2:7000", false),
            ep("10.244.1.9:7000", true),
            ep("[fd00::1]:7000", true),
        ];
        assert_eq!(node_endpoints([&a, &b, &skipped, &v6], "link"), expected);
        assert_eq!(node_endpoints([&v6, &skipped, &b, &a], "link"), expected);
    }

    #[test]
    fn empty_inputs_give_an_empty_set() {
        assert_eq!(node_endpoints([], "link"), vec![]);
        let mut s = link_slice(vec![]);
        assert_eq!(node_endpoints([&s], "link"), vec![]);
        s.endpoints = None;
        assert_eq!(node_endpoints([&s], "link"), vec![]);
    }
}

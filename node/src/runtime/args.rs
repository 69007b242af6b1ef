//! [`NodeArgs`]: the pod contract of a node as clap arguments, each a flag and a `SWITCHYARD_*` (or
//! standard `OTEL_*`) variable, exactly as the operator writes them (`docs/pod-contract.md`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use switchyard_cluster::process::{
    KubernetesArgs, LinkArgs, LinkTlsArgs, LocatorArgs, PacketArgs, ProcessArgs, TelemetryArgs,
    parse_duration,
};

use crate::Codec;

/// Everything a node process reads at start-up. A game with flags of its own flattens it into its own
/// parser and hands it to [`run_with`](super::run_with):
///
/// ```no_run
/// use clap::Parser;
///
/// #[derive(Parser)]
/// struct GameArgs {
///     /// Seconds per round.
///     #[arg(long, env = "MY_GAME_ROUND_SECONDS", default_value_t = 60)]
///     round_seconds: u64,
///     #[command(flatten)]
///     node: switchyard_node::NodeArgs,
/// }
///
/// # async fn main_() -> Result<(), switchyard_node::RuntimeError> {
/// let args = GameArgs::parse();
/// let router = switchyard_node::Router::new(); // routes using args.round_seconds
/// switchyard_node::run_with(args.node, router).await
/// # }
/// ```
#[derive(Debug, Clone, Parser)]
#[command(about = "A Switchyard game node: handlers behind Switchyard gates")]
pub struct NodeArgs {
    #[command(flatten)]
    pub process: ProcessArgs,
    #[command(flatten)]
    pub packet: PacketArgs,
    #[command(flatten)]
    pub locator: LocatorArgs,
    /// Address gates connect to.
    #[arg(long, env = "SWITCHYARD_LINK", default_value = "127.0.0.1:7400")]
    pub link: SocketAddr,
    #[command(flatten)]
    pub link_tls: LinkTlsArgs,
    /// Link connections kept open at most (handshaking or linked); one more is closed at once and counted.
    #[arg(long, env = "SWITCHYARD_MAX_LINKS", default_value_t = switchyard_cluster::link::tcp::DEFAULT_MAX_LINKS)]
    pub max_links: usize,
    #[command(flatten)]
    pub link_settings: LinkArgs,
    /// Lanes (connections with a queue on this node) one gate link may hold; a packet of a further
    /// connection is refused and counted (too_many_lanes) until one disconnects.
    #[arg(long, env = "SWITCHYARD_MAX_LANES_PER_LINK", default_value_t = crate::config::DEFAULT_MAX_LANES_PER_LINK)]
    pub max_lanes_per_link: usize,
    /// Payload bytes queued on all the lanes of one gate link at most; more are refused and counted
    /// (link_full).
    #[arg(long, env = "SWITCHYARD_LINK_LANE_BYTES", default_value_t = crate::config::DEFAULT_LINK_LANE_BYTES)]
    pub link_lane_bytes: usize,
    /// Node pool: announced to gates, which route each route to the pool that serves it; locator bindings
    /// are per pool.
    #[arg(long, env = "SWITCHYARD_POOL", default_value = "game")]
    pub pool: String,
    /// How long a draining node waits for its players before telling them to reconnect.
    #[arg(long, env = "SWITCHYARD_DRAIN_DEADLINE", default_value = "60s", value_parser = parse_duration)]
    pub drain_deadline: Duration,
    /// Payload codec of the handlers: json, msgpack or protobuf.
    #[arg(long, env = "SWITCHYARD_CODEC", default_value = "json")]
    pub codec: Codec,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl NodeArgs {
    /// The admin HTTP address when `--http` is not given.
    pub const DEFAULT_HTTP: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3556);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::CommandFactory as _;
    use switchyard_cluster::contract;

    use super::*;

    /// The env name of every argument, as clap sees it.
    fn env_names() -> Vec<String> {
        NodeArgs::command()
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn every_name_the_operator_writes_into_a_node_pod_is_read() {
        let read = env_names();
        for name in contract::node_env() {
            if contract::REFERENCE_ONLY.contains(&name) {
                assert!(!read.iter().any(|r| r == name), "{name} is only referenced");
                continue;
            }
            assert!(
                read.iter().any(|r| r == name),
                "{name} is written by the operator, read by no node flag"
            );
        }
    }

    #[test]
    fn every_env_name_a_node_reads_is_in_the_contract() {
        let contract: Vec<&str> = contract::all().collect();
        for name in env_names() {
            assert!(
                contract.contains(&name.as_str())
                    || name == contract::env::NODE_SERVICE
                    || name == contract::env::LINK_PORT_NAME
                    // For nodes run without the operator (it writes the pod's annotations itself).
                    || name == contract::env::REPORT_POD,
                "{name} is read by a node and missing from switchyard_cluster::contract"
            );
        }
    }

    #[test]
    fn flags_and_defaults() {
        let args =
            NodeArgs::try_parse_from(["game", "--codec", "msgpack", "--drain-deadline", "1.5m"]).unwrap();
        assert_eq!(args.codec, Codec::Msgpack);
        assert_eq!(args.drain_deadline, Duration::from_secs(90));
        assert_eq!(args.link, "127.0.0.1:7400".parse().unwrap());
        assert_eq!(args.locator.locator, "memory");
        assert_eq!(args.max_links, 256);
        assert!(args.link_tls.link_tls_ca.is_none(), "plaintext links by default");
        let error = NodeArgs::try_parse_from(["game", "--drain-deadline", "soon"]).unwrap_err();
        assert!(error.to_string().contains("not a duration"), "{error}");
        NodeArgs::command().debug_assert();
    }
}

//! `switchyard node`: the demo game node as its own process, on exactly the runtime a game's node runs on
//! ([`switchyard_node::run_with`]): it listens for gate links, binds players in the locator, and drains on
//! SIGTERM or on the pod annotation `switchyard.dev/drain: "true"`. `--pool lobby` or `--pool battle` runs
//! that half of the demo; any other pool (`game` by default) runs all of it.

use switchyard_node::{NodeArgs, demo};

/// The runtime's own flags and variables, nothing more: the demo is a game like any other.
pub(crate) type NodeCommand = NodeArgs;

pub(crate) async fn run(args: NodeCommand) -> anyhow::Result<()> {
    let router = demo::router_for_pool(&args.pool);
    Ok(switchyard_node::run_with(args, router).await?)
}

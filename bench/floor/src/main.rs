//! `switchyard-floor`: the floor of the Switchyard benchmark (bench/run.py), the least work a gate–node
//! architecture must do for due's echo workload. `relay` accepts clients (TCP or WebSocket) and multiplexes
//! all of them onto one TCP link to `echo`, which decodes each request's JSON and encodes the answer, as a
//! node does. `echo --direct` also serves clients itself, with no hop, for the direct client → echo run.
//! It is a measuring stick, not a product: no registry, no routing, no limits beyond the packet size.

mod echo;
mod frame;
mod relay;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard-floor",
    about = "Benchmark floor: minimal multiplexing relay and JSON echo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Accept clients and multiplex them onto one link to the echo process.
    Relay(relay::RelayArgs),
    /// Answer echo requests from relays (--link) and from clients directly (--direct).
    Echo(echo::EchoArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Relay(args) => relay::run(args).await,
            Command::Echo(args) => echo::run(args).await,
        }
    })
}

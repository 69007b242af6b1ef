//! The `switchyard` command: every Switchyard component in one binary.

mod cli;
#[cfg(test)]
mod contract_tests;
mod demo_page;
mod dev;
mod gate_cmd;
mod node_cmd;
mod operator_cmd;
mod probe_cmd;

use clap::{Parser, Subcommand};
use switchyard_cluster::process::{Telemetry, TelemetryArgs, shutdown_on_signal};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Kubernetes-native distributed game-server cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Gate + demo node in one process with in-memory defaults: a whole cluster on a laptop.
    Dev(dev::DevArgs),
    /// A gate: client listeners, sessions, routing to nodes over TCP links.
    // Boxed: the gate's and node's settings are far larger than the other commands'.
    Gate(Box<gate_cmd::GateCommand>),
    /// The demo game node as its own process (the node runtime of `switchyard_node::run`).
    Node(Box<node_cmd::NodeCommand>),
    /// The GameCluster operator: reconciles GameClusters into gates, nodes, Services, RBAC and Redis.
    Operator(operator_cmd::OperatorCommand),
    /// Print the GameCluster CustomResourceDefinition (YAML), as committed in crds/gamecluster.yaml.
    Crd,
    /// Load generator: N connections pipelining requests against a gate.
    Bench(switchyard_client::bench::BenchArgs),
    /// Log one player in through a gate; exit 0 when the game answers the login (the chart's `helm test`).
    ProbeLogin(probe_cmd::ProbeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("switchyard: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Inside the runtime's context: the OTLP exporter's gRPC channel is created on it.
    let telemetry = {
        let _runtime = runtime.enter();
        cli.command.init_telemetry()
    };
    let telemetry = match telemetry {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("switchyard: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    // From this thread, with the runtime still running: the exporter needs it to send the last spans.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchyard: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

impl Command {
    /// Installs the log output (and trace export, for gates and `dev`). The node runtime installs its own.
    fn init_telemetry(&self) -> anyhow::Result<Option<Telemetry>> {
        let plain = |log: &str| TelemetryArgs {
            log: log.to_owned(),
            ..TelemetryArgs::default()
        };
        let from_env =
            || std::env::var(switchyard_cluster::contract::env::LOG).unwrap_or_else(|_| "info".to_owned());
        let telemetry = match self {
            Command::Node(_) => return Ok(None),
            Command::Gate(command) => command
                .telemetry
                .init("switchyard-gate", &command.process.id("gate"))?,
            Command::Dev(args) => args.telemetry.init("switchyard-dev", "dev")?,
            Command::Operator(command) => plain(&command.log).init("switchyard-operator", "operator")?,
            Command::Crd | Command::Bench(_) | Command::ProbeLogin(_) => {
                plain(&from_env()).init("switchyard", "switchyard")?
            }
        };
        Ok(Some(telemetry))
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Dev(args) => dev::run(args, shutdown_on_signal()).await,
        Command::Gate(command) => gate_cmd::run(*command, shutdown_on_signal()).await,
        Command::Node(args) => node_cmd::run(*args).await,
        Command::Operator(command) => operator_cmd::run(command, shutdown_on_signal()).await,
        Command::Crd => operator_cmd::crd(),
        Command::ProbeLogin(args) => probe_cmd::run(args).await,
        Command::Bench(args) => {
            let json = args.json;
            let report = switchyard_client::bench::run(args).await?;
            if json {
                println!("{}", report.to_json()?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
    }
}

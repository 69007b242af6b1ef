//! The `switchyard` command: every Switchyard component in one binary.

mod cli;
mod demo_page;
mod dev;
mod gate_cmd;
mod kube_args;
mod node_cmd;
mod operator_cmd;
mod process;
mod redis;
mod telemetry;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Kubernetes-native distributed game-server cluster"
)]
struct Cli {
    /// Log filter, e.g. info or switchyard_gate=debug.
    #[arg(long, global = true, env = "SWITCHYARD_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Gate + demo node in one process with in-memory defaults: a whole cluster on a laptop.
    Dev(dev::DevArgs),
    /// A gate: client listeners, sessions, routing to nodes over TCP links.
    Gate(gate_cmd::GateCommand),
    /// The demo game node as its own process.
    Node(node_cmd::NodeCommand),
    /// The GameCluster operator: reconciles GameClusters into gates, nodes, Services, RBAC and Redis.
    Operator(operator_cmd::OperatorCommand),
    /// Print the GameCluster CustomResourceDefinition (YAML), as committed in crds/gamecluster.yaml.
    Crd,
    /// Load generator: N connections pipelining requests against a gate.
    Bench(switchyard_client::bench::BenchArgs),
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
        telemetry::init(&cli.log, cli.command.trace_target())
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
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchyard: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

impl Command {
    /// The trace settings of the commands that trace (gates and nodes), with their default service name.
    fn trace_target(&self) -> Option<telemetry::TraceTarget<'_>> {
        let (args, default_service, instance_id) = match self {
            Command::Gate(command) => (&command.trace, "switchyard-gate", command.process.id("gate")),
            Command::Node(command) => (&command.trace, "switchyard-node", command.process.id("node")),
            Command::Dev(args) => (&args.trace, "switchyard-dev", "dev".to_owned()),
            Command::Operator(_) | Command::Crd | Command::Bench(_) => return None,
        };
        Some(telemetry::TraceTarget {
            args,
            default_service,
            instance_id,
        })
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Dev(args) => dev::run(args, shutdown_signal()).await,
        Command::Gate(command) => gate_cmd::run(command, shutdown_signal()).await,
        Command::Node(command) => node_cmd::run(command, shutdown_signal()).await,
        Command::Operator(command) => operator_cmd::run(command, shutdown_signal()).await,
        Command::Crd => operator_cmd::crd(),
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

/// Cancelled on the first Ctrl-C or SIGTERM.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    cancel.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        cancel.cancel();
    });
    token
}

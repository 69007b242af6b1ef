//! Logging and trace export of the process: the log output on stderr, and, when an OTLP endpoint is
//! configured (`switchyard gate`, `node` and `dev` only), OpenTelemetry traces exported over OTLP/gRPC.
//!
//! The settings are the standard OpenTelemetry variables, which the operator sets on gate and node pods
//! (`spec.tracing`): `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`, each also a flag. Without an endpoint no trace layer is installed at all:
//! that is what makes tracing free when it is off (see [`switchyard_cluster::telemetry`]).

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use switchyard_cluster::telemetry::{self, Sampling};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How long the last spans may take to leave at exit.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Trace export settings of a gate, a node or `switchyard dev`.
#[derive(Debug, Clone, Args)]
pub(crate) struct TraceArgs {
    /// OTLP/gRPC endpoint to export traces to, e.g. http://otel-collector:4317; no traces when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub(crate) otlp_endpoint: Option<String>,
    /// Service name of the exported spans [default: switchyard-gate, switchyard-node or switchyard-dev].
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub(crate) otel_service_name: Option<String>,
    /// Sampler: always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or
    /// parentbased_traceidratio [default: parentbased_always_on].
    #[arg(long, env = "OTEL_TRACES_SAMPLER")]
    pub(crate) otel_sampler: Option<String>,
    /// Fraction of traces the *traceidratio samplers keep, 0 to 1 [default: 1].
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG")]
    pub(crate) otel_sampler_arg: Option<String>,
}

/// Whose traces these are.
#[derive(Debug)]
pub(crate) struct TraceTarget<'a> {
    pub(crate) args: &'a TraceArgs,
    /// The service name when `OTEL_SERVICE_NAME` is unset.
    pub(crate) default_service: &'static str,
    /// `service.instance.id`: the gate or node id.
    pub(crate) instance_id: String,
}

/// What must outlive the process's work: the tracer provider, flushed by [`Telemetry::shutdown`].
#[derive(Debug)]
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered. Call it while the runtime still runs (the gRPC channel lives on
    /// it), and not from one of its worker threads (it blocks).
    pub(crate) fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        {
            eprintln!("switchyard: could not flush the last trace spans: {error}");
        }
    }
}

/// Installs the global `tracing` subscriber: the log output filtered by `log` (an invalid filter is
/// reported and replaced by `info`, as ever) and, when `trace` names an OTLP endpoint, the trace layer.
/// Must run inside the Tokio runtime's context (the exporter's gRPC channel is created on it).
///
/// # Errors
/// Invalid trace settings: an unknown sampler, a bad ratio, an endpoint that is no valid URI, or an
/// `OTEL_EXPORTER_OTLP_PROTOCOL` other than `grpc`.
pub(crate) fn init(log: &str, trace: Option<TraceTarget<'_>>) -> anyhow::Result<Telemetry> {
    let log_filter = telemetry::log_filter(log).unwrap_or_else(|error| {
        eprintln!("switchyard: bad --log filter {log:?} ({error}); using info");
        telemetry::log_filter("info").unwrap_or_default()
    });
    let exporting = match trace {
        Some(target) => provider(target)?,
        None => None,
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(log_filter);
    // `None` adds no layer: with tracing off the trace spans' callsites are disabled for good.
    let traces = exporting.as_ref().map(|(provider, _)| telemetry::layer(provider));
    tracing_subscriber::registry().with(fmt).with(traces).init();
    let provider = exporting.map(|(provider, summary)| {
        tracing::info!("{summary}");
        provider
    });
    Ok(Telemetry { provider })
}

/// The tracer provider exporting to the configured endpoint and a line saying so, or `None` without an
/// endpoint.
fn provider(target: TraceTarget<'_>) -> anyhow::Result<Option<(SdkTracerProvider, String)>> {
    let args = target.args;
    let sampling = Sampling::from_otel(args.otel_sampler.as_deref(), args.otel_sampler_arg.as_deref())?;
    let Some(endpoint) = args
        .otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    else {
        return Ok(None);
    };
    // Only gRPC is built in; an exporter silently speaking another protocol than asked would export nothing.
    if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
        && !protocol.is_empty()
        && protocol != "grpc"
    {
        anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL {protocol:?} is not supported: traces are exported over OTLP/gRPC (grpc)"
        );
    }
    // The exporter would take a bare host:port for TLS, which is not built in: say what works instead.
    anyhow::ensure!(
        endpoint.starts_with("http://"),
        "OTLP endpoint {endpoint:?} (OTEL_EXPORTER_OTLP_ENDPOINT, --otlp-endpoint) must be http://host:port: \
         traces are exported over plain gRPC, TLS is not built in"
    );
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| {
            format!("OTLP endpoint {endpoint:?} (OTEL_EXPORTER_OTLP_ENDPOINT, --otlp-endpoint)")
        })?;
    let service = args
        .otel_service_name
        .as_deref()
        .filter(|name| !name.is_empty())
        .unwrap_or(target.default_service);
    let provider = telemetry::provider_builder(service, &target.instance_id, sampling)
        .with_batch_exporter(exporter)
        .build();
    let summary = format!("exporting traces over OTLP/gRPC to {endpoint} as {service}, sampling {sampling}");
    Ok(Some((provider, summary)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn args(endpoint: Option<&str>, sampler: Option<&str>, arg: Option<&str>) -> TraceArgs {
        TraceArgs {
            otlp_endpoint: endpoint.map(str::to_owned),
            otel_service_name: None,
            otel_sampler: sampler.map(str::to_owned),
            otel_sampler_arg: arg.map(str::to_owned),
        }
    }

    fn target(args: &TraceArgs) -> TraceTarget<'_> {
        TraceTarget {
            args,
            default_service: "switchyard-gate",
            instance_id: "gate-1".to_owned(),
        }
    }

    #[tokio::test]
    async fn an_endpoint_makes_a_provider_and_none_makes_nothing() {
        assert!(provider(target(&args(None, None, None))).unwrap().is_none());
        assert!(provider(target(&args(Some(" "), None, None))).unwrap().is_none());
        let sampled = args(
            Some("http://127.0.0.1:4317"),
            Some("parentbased_traceidratio"),
            Some("0.5"),
        );
        let (provider, summary) = provider(target(&sampled)).unwrap().unwrap();
        assert_eq!(
            summary,
            "exporting traces over OTLP/gRPC to http://127.0.0.1:4317 as switchyard-gate, sampling \
             parentbased_traceidratio 0.5"
        );
        // Nothing was sent: shutting down flushes nothing and does not wait for the absent collector.
        provider.shutdown().unwrap();
    }

    #[tokio::test]
    async fn bad_settings_are_refused_at_start_up() {
        let error = |args: TraceArgs| provider(target(&args)).unwrap_err().to_string();
        assert!(error(args(Some("https://collector:4317"), None, None)).contains("must be http://host:port"));
        assert!(error(args(Some("collector:4317"), None, None)).contains("must be http://host:port"));
        assert!(error(args(Some("http://bad host"), None, None)).contains("OTLP endpoint"));
        // Sampler settings are checked even when nothing is exported.
        assert!(error(args(None, Some("sometimes"), None)).contains("OTEL_TRACES_SAMPLER \"sometimes\""));
        assert!(error(args(None, Some("traceidratio"), Some("-1"))).contains("OTEL_TRACES_SAMPLER_ARG"));
    }
}

//! Logging and trace export of a gate or node process: the log output on stderr, and, when an OTLP
//! endpoint is configured, OpenTelemetry traces exported over OTLP/gRPC (the `otlp` feature).
//!
//! The settings are the standard OpenTelemetry variables, which the operator sets on gate and node pods
//! (`spec.tracing`): `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`, each also a flag. Without an endpoint no trace layer is installed at all:
//! that is what makes tracing free when it is off (see [`crate::telemetry`]).

use std::time::Duration;

use clap::Args;
use opentelemetry_sdk::trace::{SdkTracerProvider, TracerProviderBuilder};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use super::ProcessError;
use crate::telemetry::{self, Sampling};

/// How long the last spans may take to leave at exit.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The log filter and the trace export settings of a gate, a node or `switchyard dev`.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log filter, e.g. info or switchyard_gate=debug.
    #[arg(long, env = "SWITCHYARD_LOG", default_value = "info")]
    pub log: String,
    /// OTLP/gRPC endpoint to export traces to, e.g. http://otel-collector:4317; no traces when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Service name of the exported spans [default: switchyard-gate, switchyard-node or switchyard-dev].
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,
    /// Sampler: always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or
    /// parentbased_traceidratio [default: parentbased_always_on].
    #[arg(long, env = "OTEL_TRACES_SAMPLER")]
    pub otel_sampler: Option<String>,
    /// Fraction of traces the *traceidratio samplers keep, 0 to 1 [default: 1].
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG")]
    pub otel_sampler_arg: Option<String>,
}

impl Default for TelemetryArgs {
    fn default() -> Self {
        TelemetryArgs {
            log: "info".to_owned(),
            otlp_endpoint: None,
            otel_service_name: None,
            otel_sampler: None,
            otel_sampler_arg: None,
        }
    }
}

/// What must outlive the process's work: the tracer provider, flushed by [`Telemetry::shutdown`].
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered. Call it while the runtime still runs (the gRPC channel lives on
    /// it), and not from one of its worker threads (it blocks): see [`Telemetry::shutdown_async`].
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        {
            eprintln!("could not flush the last trace spans: {error}");
        }
    }

    /// [`Telemetry::shutdown`] from async code: on a blocking thread, the runtime still running.
    pub async fn shutdown_async(self) {
        if self.provider.is_some() {
            let _ = tokio::task::spawn_blocking(move || self.shutdown()).await;
        }
    }
}

impl TelemetryArgs {
    /// Installs the global `tracing` subscriber: the log output filtered by `--log` (an invalid filter is
    /// reported and replaced by `info`) and, when an OTLP endpoint is set, the trace layer exporting as
    /// `OTEL_SERVICE_NAME` (else `default_service`) with `service.instance.id` = `instance_id`. Must run
    /// inside a Tokio runtime (the exporter's gRPC channel is created on it). When the process already
    /// installed a subscriber, that one stays and a warning says so.
    ///
    /// # Errors
    /// Invalid trace settings: an unknown sampler, a bad ratio, an endpoint that is no `http://` URI, an
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` other than `grpc`, or an endpoint in a build without the `otlp`
    /// feature.
    pub fn init(&self, default_service: &str, instance_id: &str) -> Result<Telemetry, ProcessError> {
        let log = &self.log;
        let log_filter = telemetry::log_filter(log).unwrap_or_else(|error| {
            eprintln!("bad --log filter {log:?} ({error}); using info");
            telemetry::log_filter("info").unwrap_or_default()
        });
        let exporting = self.provider(default_service, instance_id)?;
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_filter(log_filter);
        // `None` adds no layer: with tracing off the trace spans' callsites are disabled for good.
        let traces = exporting.as_ref().map(|(provider, _)| telemetry::layer(provider));
        if tracing_subscriber::registry()
            .with(fmt)
            .with(traces)
            .try_init()
            .is_err()
        {
            tracing::warn!(
                "a tracing subscriber was already installed: --log and trace export are not applied"
            );
        }
        let provider = exporting.map(|(provider, summary)| {
            tracing::info!("{summary}");
            provider
        });
        Ok(Telemetry { provider })
    }

    /// The tracer provider exporting to the configured endpoint and a line saying so, or `None` without an
    /// endpoint.
    fn provider(
        &self,
        default_service: &str,
        instance_id: &str,
    ) -> Result<Option<(SdkTracerProvider, String)>, ProcessError> {
        let sampling = Sampling::from_otel(self.otel_sampler.as_deref(), self.otel_sampler_arg.as_deref())?;
        let Some(endpoint) = self
            .otlp_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
        else {
            return Ok(None);
        };
        // Only gRPC is built in; an exporter silently speaking another protocol than asked would export nothing.
        if let Ok(protocol) = std::env::var(crate::contract::env::OTEL_EXPORTER_OTLP_PROTOCOL)
            && !protocol.is_empty()
            && protocol != "grpc"
        {
            return Err(ProcessError::Otlp(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL {protocol:?} is not supported: traces are exported over OTLP/gRPC (grpc)"
            )));
        }
        // The exporter would take a bare host:port for TLS, which is not built in: say what works instead.
        if !endpoint.starts_with("http://") {
            return Err(ProcessError::Otlp(format!(
                "endpoint {endpoint:?} (OTEL_EXPORTER_OTLP_ENDPOINT, --otlp-endpoint) must be http://host:port: \
                 traces are exported over plain gRPC, TLS is not built in"
            )));
        }
        let service = self
            .otel_service_name
            .as_deref()
            .filter(|name| !name.is_empty())
            .unwrap_or(default_service);
        let provider = with_exporter(
            telemetry::provider_builder(service, instance_id, sampling),
            endpoint,
        )?;
        let summary =
            format!("exporting traces over OTLP/gRPC to {endpoint} as {service}, sampling {sampling}");
        Ok(Some((provider, summary)))
    }
}

/// The provider exporting in batches over OTLP/gRPC to `endpoint`.
#[cfg(feature = "otlp")]
fn with_exporter(builder: TracerProviderBuilder, endpoint: &str) -> Result<SdkTracerProvider, ProcessError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|error| {
            ProcessError::Otlp(format!(
                "endpoint {endpoint:?} (OTEL_EXPORTER_OTLP_ENDPOINT, --otlp-endpoint): {error}"
            ))
        })?;
    Ok(builder.with_batch_exporter(exporter).build())
}

#[cfg(not(feature = "otlp"))]
fn with_exporter(_: TracerProviderBuilder, endpoint: &str) -> Result<SdkTracerProvider, ProcessError> {
    Err(ProcessError::Otlp(format!(
        "OTEL_EXPORTER_OTLP_ENDPOINT {endpoint:?} is set, and this build has no OTLP exporter: enable the \
         `otlp` feature of switchyard-node or switchyard-cluster"
    )))
}

#[cfg(all(test, feature = "otlp"))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn args(endpoint: Option<&str>, sampler: Option<&str>, arg: Option<&str>) -> TelemetryArgs {
        TelemetryArgs {
            otlp_endpoint: endpoint.map(str::to_owned),
            otel_sampler: sampler.map(str::to_owned),
            otel_sampler_arg: arg.map(str::to_owned),
            ..TelemetryArgs::default()
        }
    }

    #[tokio::test]
    async fn an_endpoint_makes_a_provider_and_none_makes_nothing() {
        let provider = |args: TelemetryArgs| args.provider("switchyard-gate", "gate-1");
        assert!(provider(args(None, None, None)).unwrap().is_none());
        assert!(provider(args(Some(" "), None, None)).unwrap().is_none());
        let sampled = args(
            Some("http://127.0.0.1:4317"),
            Some("parentbased_traceidratio"),
            Some("0.5"),
        );
        let (provider, summary) = provider(sampled).unwrap().unwrap();
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
        let error = |args: TelemetryArgs| {
            args.provider("switchyard-gate", "gate-1")
                .unwrap_err()
                .to_string()
        };
        assert!(error(args(Some("https://collector:4317"), None, None)).contains("must be http://host:port"));
        assert!(error(args(Some("collector:4317"), None, None)).contains("must be http://host:port"));
        assert!(error(args(Some("http://bad host"), None, None)).contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
        // Sampler settings are checked even when nothing is exported.
        assert!(error(args(None, Some("sometimes"), None)).contains("OTEL_TRACES_SAMPLER \"sometimes\""));
        assert!(error(args(None, Some("traceidratio"), Some("-1"))).contains("OTEL_TRACES_SAMPLER_ARG"));
    }
}

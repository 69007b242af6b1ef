//! OpenTelemetry traces of gates and nodes: sampling settings, the tracer provider, the `tracing` layer
//! that feeds it, and the trace context that crosses the link ([`TraceParent`]).
//!
//! A trace starts at the gate, one per forwarded client packet (`gate.request`), continues on the node
//! that handles it (`node.handle`, and `node.push` for each push its handler sends) and ends back on the
//! gates that deliver the answer and the pushes (`gate.deliver`). Every such span is created with the
//! target [`SPAN_TARGET`], at level INFO.
//!
//! Tracing costs nothing measurable when it is off, and "off" is simply the absence of the layer of
//! [`layer`]: the log filter of [`log_filter`] never enables [`SPAN_TARGET`], so without the layer the
//! span macros find their callsites disabled (a cached check) and return a disabled span, from which
//! [`traceparent`] returns `None` at once and the link frame carries no extension. The OTLP exporter itself
//! is the binary's business; this module only needs a span exporter, so tests plug in an in-memory one.
//!
//! The layer has its own filter ([`layer`]): the log level (`SWITCHYARD_LOG=warn`) filters what is
//! printed, not what is traced, and the spans never clutter the log lines.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, TracerProviderBuilder};
use switchyard_protocol::link::TraceParent;
use tracing::Span;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

/// The target of every Switchyard trace span.
pub const SPAN_TARGET: &str = "switchyard::trace";

/// Why trace settings are refused. The operator of the process is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "OTEL_TRACES_SAMPLER {0:?} is not one of: always_on, always_off, traceidratio, parentbased_always_on, \
         parentbased_always_off, parentbased_traceidratio"
    )]
    UnknownSampler(String),
    #[error("OTEL_TRACES_SAMPLER_ARG {arg:?} of sampler {sampler} is not a ratio between 0 and 1")]
    BadRatio { sampler: String, arg: String },
}

/// How root spans are sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RootSampling {
    AlwaysOn,
    AlwaysOff,
    /// This fraction of trace ids, in `0.0..=1.0`.
    Ratio(f64),
}

/// Which traces are recorded and exported, as the standard `OTEL_TRACES_SAMPLER` and
/// `OTEL_TRACES_SAMPLER_ARG` say.
///
/// Traces start at the gate, so the gate's sampler decides (a gate's spans have no parent); a node only
/// traces packets that arrive with a sampled trace context, and with a parent-based sampler (the
/// operator sets `parentbased_traceidratio`) follows the gate's decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Spans with a parent follow its decision; `root` decides for spans without one.
    pub parent_based: bool,
    pub root: RootSampling,
}

impl Default for Sampling {
    /// `parentbased_always_on`, the OpenTelemetry default.
    fn default() -> Self {
        Sampling {
            parent_based: true,
            root: RootSampling::AlwaysOn,
        }
    }
}

impl Sampling {
    /// Parses `OTEL_TRACES_SAMPLER` (absent or empty: the default) and `OTEL_TRACES_SAMPLER_ARG` (the
    /// ratio of the `*traceidratio` samplers; absent or empty: 1.0, ignored by the others).
    ///
    /// # Errors
    /// An unknown sampler, or a ratio that is not a number between 0 and 1.
    pub fn from_otel(sampler: Option<&str>, arg: Option<&str>) -> Result<Self, TelemetryError> {
        let sampler = sampler.map(str::trim).filter(|s| !s.is_empty());
        let Some(name) = sampler else {
            return Ok(Sampling::default());
        };
        let ratio = || -> Result<f64, TelemetryError> {
            let Some(arg) = arg.map(str::trim).filter(|a| !a.is_empty()) else {
                return Ok(1.0);
            };
            match arg.parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
                _ => Err(TelemetryError::BadRatio {
                    sampler: name.to_owned(),
                    arg: arg.to_owned(),
                }),
            }
        };
        let (parent_based, root) = match name {
            "always_on" => (false, RootSampling::AlwaysOn),
            "always_off" => (false, RootSampling::AlwaysOff),
            "traceidratio" => (false, RootSampling::Ratio(ratio()?)),
            "parentbased_always_on" => (true, RootSampling::AlwaysOn),
            "parentbased_always_off" => (true, RootSampling::AlwaysOff),
            "parentbased_traceidratio" => (true, RootSampling::Ratio(ratio()?)),
            other => return Err(TelemetryError::UnknownSampler(other.to_owned())),
        };
        Ok(Sampling { parent_based, root })
    }

    /// The SDK sampler.
    pub fn sampler(&self) -> Sampler {
        let root = match self.root {
            RootSampling::AlwaysOn => Sampler::AlwaysOn,
            RootSampling::AlwaysOff => Sampler::AlwaysOff,
            RootSampling::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
        };
        if self.parent_based {
            Sampler::ParentBased(Box::new(root))
        } else {
            root
        }
    }
}

impl std::fmt::Display for Sampling {
    /// The `OTEL_TRACES_SAMPLER` name, and the ratio of the ratio samplers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.parent_based {
            f.write_str("parentbased_")?;
        }
        match self.root {
            RootSampling::AlwaysOn => f.write_str("always_on"),
            RootSampling::AlwaysOff => f.write_str("always_off"),
            RootSampling::Ratio(ratio) => write!(f, "traceidratio {ratio}"),
        }
    }
}

/// A tracer provider builder for one process, without its exporter: the service name
/// (`OTEL_SERVICE_NAME`, e.g. `switchyard-gate`), the instance id (`service.instance.id`: the gate or
/// node id, the pod name in Kubernetes) and the sampler. Add an exporter (batching, in production) and
/// build it; shut the provider down at exit to flush the last spans.
pub fn provider_builder(service_name: &str, instance_id: &str, sampling: Sampling) -> TracerProviderBuilder {
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(KeyValue::new("service.instance.id", instance_id.to_owned()))
        .build();
    SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampling.sampler())
}

/// The `tracing` layer that turns Switchyard's trace spans into OpenTelemetry spans of `provider`.
///
/// It carries its own filter, [`SPAN_TARGET`] at INFO (plus WARN and ERROR events of the `switchyard*`
/// crates, which become events of the span they happen in), independent of the log filter: install it
/// with the log output filtered by [`log_filter`] as a per-layer filter, never as a global one, or a
/// quiet log level would silence the traces too.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let filter = Targets::new()
        .with_target(SPAN_TARGET, LevelFilter::INFO)
        .with_target("switchyard", LevelFilter::WARN);
    // What the spans record beyond their fields (code location, thread, busy/idle time, the target) is
    // per-span work of no use for these few, named spans.
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("switchyard"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_target(false)
        .with_context_activation(false)
        .with_filter(filter)
}

/// The log filter `directives` (`--log`, `SWITCHYARD_LOG`) for the log output's layer, which never
/// enables the trace spans (they would cost a formatted copy of their fields each and add nothing to
/// the log lines). Invalid directives are reported as the error of [`EnvFilter::try_new`].
///
/// # Errors
/// `directives` does not parse.
pub fn log_filter(directives: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    let off = format!("{SPAN_TARGET}=off");
    Ok(EnvFilter::try_new(directives)?.add_directive(off.parse()?))
}

/// The context of `span` to carry over the link, or `None` when the span does not trace: disabled (no
/// tracing layer: the fast path, one branch) or not sampled (nothing downstream should record either).
pub fn traceparent(span: &Span) -> Option<TraceParent> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    if !span_context.is_sampled() {
        return None;
    }
    TraceParent::new(
        span_context.trace_id().to_bytes(),
        span_context.span_id().to_bytes(),
        span_context.trace_flags().to_u8(),
    )
}

/// Makes the fresh `span` continue the trace of `parent`, a span of another process. Call it right after
/// creating the span, before anything starts it (its first [`traceparent`], or a child span). Nothing
/// happens when `span` is disabled.
pub fn continue_trace(span: &Span, parent: TraceParent) {
    if span.is_disabled() {
        return;
    }
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id()),
        SpanId::from_bytes(parent.span_id()),
        TraceFlags::new(parent.flags()),
        true,
        TraceState::default(),
    );
    // Fails only when the span has started already or no tracing layer sees it: the span then stays a
    // root, which loses the link between the two processes' spans but nothing else.
    let _ = span.set_parent(Context::new().with_remote_span_context(remote));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use opentelemetry_sdk::trace::InMemorySpanExporter;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[test]
    fn samplers_parse_like_the_otel_variables() {
        let parse = |sampler, arg| Sampling::from_otel(sampler, arg);
        assert_eq!(parse(None, None), Ok(Sampling::default()));
        assert_eq!(parse(Some(""), Some("0.5")), Ok(Sampling::default()));
        assert_eq!(
            parse(Some("always_off"), Some("whatever")),
            Ok(Sampling {
                parent_based: false,
                root: RootSampling::AlwaysOff
            })
        );
        assert_eq!(
            parse(Some("parentbased_traceidratio"), Some("0.25")),
            Ok(Sampling {
                parent_based: true,
                root: RootSampling::Ratio(0.25)
            })
        );
        assert_eq!(
            parse(Some("traceidratio"), None),
            Ok(Sampling {
                parent_based: false,
                root: RootSampling::Ratio(1.0)
            })
        );
        assert_eq!(
            parse(Some("parentbased_traceidratio"), Some("1.5")),
            Err(TelemetryError::BadRatio {
                sampler: "parentbased_traceidratio".into(),
                arg: "1.5".into()
            })
        );
        assert!(parse(Some("traceidratio"), Some("half")).is_err());
        assert_eq!(
            parse(Some("jaeger_remote"), None),
            Err(TelemetryError::UnknownSampler("jaeger_remote".into()))
        );
        assert_eq!(
            parse(Some("parentbased_traceidratio"), Some("0.1"))
                .unwrap()
                .to_string(),
            "parentbased_traceidratio 0.1"
        );
        assert_eq!(Sampling::default().to_string(), "parentbased_always_on");
        assert!(
            TelemetryError::UnknownSampler("x".into())
                .to_string()
                .contains("parentbased_traceidratio")
        );
    }

    fn traced(sampling: Sampling) -> (SdkTracerProvider, InMemorySpanExporter) {
        let exporter = InMemorySpanExporter::default();
        let provider = provider_builder("test", "test-1", sampling)
            .with_simple_exporter(exporter.clone())
            .build();
        (provider, exporter)
    }

    #[test]
    fn a_sampled_span_gives_its_context_and_a_remote_child_continues_it() {
        let (provider, exporter) = traced(Sampling::default());
        // The log output's filter would print everything at TRACE, but never a trace span.
        let subscriber = tracing_subscriber::registry()
            .with(layer(&provider))
            .with(tracing_subscriber::fmt::layer().with_filter(log_filter("trace").unwrap()));
        let (sent, received) = tracing::subscriber::with_default(subscriber, || {
            let gate = tracing::info_span!(target: SPAN_TARGET, "gate.request", route = 1);
            let sent = traceparent(&gate).unwrap();
            let node = tracing::info_span!(target: SPAN_TARGET, parent: None, "node.handle");
            continue_trace(&node, sent);
            let received = traceparent(&node).unwrap();
            (sent, received)
        });
        assert!(sent.is_sampled());
        assert_eq!(received.trace_id(), sent.trace_id());
        assert_ne!(received.span_id(), sent.span_id());
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let node = spans.iter().find(|span| span.name == "node.handle").unwrap();
        assert_eq!(node.parent_span_id.to_bytes(), sent.span_id());
        assert!(node.parent_span_is_remote);
        assert_eq!(spans.len(), 2);
    }

    #[test]
    fn sampling_zero_exports_nothing_and_gives_no_context() {
        let sampling = Sampling::from_otel(Some("parentbased_traceidratio"), Some("0")).unwrap();
        let (provider, exporter) = traced(sampling);
        let subscriber = tracing_subscriber::registry().with(layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..100 {
                let span = tracing::info_span!(target: SPAN_TARGET, "gate.request");
                assert!(!span.is_disabled());
                assert_eq!(traceparent(&span), None);
            }
        });
        provider.force_flush().unwrap();
        assert!(exporter.get_finished_spans().unwrap().is_empty());
    }

    #[test]
    fn without_the_layer_spans_are_disabled() {
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_filter(log_filter("info").unwrap()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: SPAN_TARGET, "gate.request");
            assert!(span.is_disabled());
            assert_eq!(traceparent(&span), None);
            // Continuing a trace in a disabled span is a no-op.
            continue_trace(&span, TraceParent::new([1; 16], [2; 8], 1).unwrap());
        });
    }

    #[test]
    fn a_quiet_log_level_does_not_silence_traces() {
        let (provider, exporter) = traced(Sampling::default());
        let subscriber = tracing_subscriber::registry()
            .with(layer(&provider))
            .with(tracing_subscriber::fmt::layer().with_filter(log_filter("warn").unwrap()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: SPAN_TARGET, "gate.request");
            assert!(traceparent(&span).is_some());
        });
        provider.force_flush().unwrap();
        assert_eq!(exporter.get_finished_spans().unwrap().len(), 1);
    }
}

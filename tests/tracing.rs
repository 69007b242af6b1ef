//! OpenTelemetry traces across a real gate and a real node linked over TCP, exported to an in-memory
//! exporter: one trace from the gate's `gate.request` through the node's `node.handle` (and `node.push`)
//! back to the gate's `gate.deliver`, the trace context crossing the link codec both ways; and nothing
//! traced, nor any trace context on the link, when the sampler keeps nothing.
//!
//! Each test runs on a current-thread runtime with its own subscriber set as the thread's default, so
//! every task of the gate and the node (all on that thread) reports to that test's exporter.
#![allow(clippy::unwrap_used)] // a test may panic

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::SpanId;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use switchyard_client::{Client, ClientOptions};
use switchyard_cluster::link::tcp::{TcpAcceptor, TcpConnector, TcpLinkConfig};
use switchyard_cluster::link::{Acceptor as _, NodeLink};
use switchyard_cluster::locator::MemoryLocator;
use switchyard_cluster::registry::{Registry as _, StaticRegistry};
use switchyard_cluster::telemetry::{self, Sampling};
use switchyard_gate::{Gate, GateConfig};
use switchyard_node::{Node, NodeConfig, demo};
use switchyard_protocol::PacketConfig;
use switchyard_protocol::link::{GateToNode, NodeState, NodeToGate, RouteSpec, TraceParent};
use tokio::net::TcpListener;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// An exporter, and the thread's subscriber feeding it through Switchyard's trace layer (and a log
/// output at TRACE, which must not change what is traced).
fn traced(
    sampling: Sampling,
) -> (
    SdkTracerProvider,
    InMemorySpanExporter,
    tracing::subscriber::DefaultGuard,
) {
    let exporter = InMemorySpanExporter::default();
    let provider = telemetry::provider_builder("switchyard-test", "test", sampling)
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(telemetry::layer(&provider))
        .with(
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(telemetry::log_filter("warn").unwrap()),
        );
    let guard = tracing::subscriber::set_default(subscriber);
    (provider, exporter, guard)
}

/// A gate whose only node is at `node_link`, its client TCP address, and the registry that must outlive it.
async fn gate(node_link: String, locator: Arc<MemoryLocator>) -> (Gate, String, StaticRegistry) {
    let gate = Gate::new(GateConfig::new("gate-1"), locator, &mut Registry::default()).unwrap();
    let nodes = StaticRegistry::new([node_link]);
    gate.connect_nodes(
        nodes.nodes(),
        Arc::new(TcpConnector::new(TcpLinkConfig::default())),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    gate.serve_tcp(listener);
    (gate, address, nodes)
}

/// The demo node (`node-1`) on a TCP link and a gate linked to it, sharing one in-memory locator.
async fn demo_node_and_gate() -> (Node, Gate, String, StaticRegistry) {
    let locator = Arc::new(MemoryLocator::default());
    let node = Node::new(
        NodeConfig::new("node-1"),
        demo::router(),
        locator.clone(),
        &mut Registry::default(),
    )
    .unwrap();
    let acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), TcpLinkConfig::default())
        .await
        .unwrap();
    let link = acceptor.local_addr().to_string();
    node.serve(acceptor);
    let (gate, address, nodes) = gate(link, locator).await;
    wait_linked(&gate).await;
    (node, gate, address, nodes)
}

async fn wait_linked(gate: &Gate) {
    for _ in 0..500 {
        if gate.linked_nodes() > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the gate never linked to its node");
}

async fn request(client: &Client, route: i32, body: Value) -> Value {
    let reply = client.request(route, body.to_string()).await.unwrap();
    serde_json::from_slice(&reply).unwrap()
}

/// Waits until the exporter holds spans `done` accepts (spans end, and are exported, when their last
/// handle drops, which may be just after the client got its answer).
async fn spans_until(exporter: &InMemorySpanExporter, done: impl Fn(&[SpanData]) -> bool) -> Vec<SpanData> {
    for _ in 0..500 {
        let spans = exporter.get_finished_spans().unwrap();
        if done(&spans) {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let names: Vec<_> = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .map(|span| span.name)
        .collect();
    panic!("the expected spans were never exported; got {names:?}");
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

fn named<'a>(spans: &'a [SpanData], name: &str, route: Option<i32>) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|span| span.name == name)
        .filter(|span| route.is_none_or(|route| attribute(span, "route") == Some(route.to_string())))
        .collect()
}

/// A node-to-node call from a traced handler: the callee's `node.call` span joins the caller's trace, under
/// the caller's `node.handle` span, the trace context crossing the gate in both link directions.
#[tokio::test]
async fn a_call_made_by_a_traced_handler_joins_its_trace() {
    let (provider, exporter, _subscriber) = traced(Sampling::default());
    let (node, gate, address, _nodes) = demo_node_and_gate().await;
    let mut clients = Vec::new();
    for uid in [1, 2] {
        let client = Client::connect_tcp(&address, PacketConfig::default(), ClientOptions::default())
            .await
            .unwrap();
        request(&client, demo::LOGIN, json!({"uid": uid, "name": "p"})).await;
        // The second queue request completes a pair: its handler calls the battle pool (this node's own
        // pool here) to create the match.
        assert_eq!(
            request(&client, demo::QUEUE, json!({"mode": "duel"})).await["code"],
            0
        );
        clients.push(client);
    }
    let spans = spans_until(&exporter, |spans| {
        named(spans, "node.call", Some(demo::CREATE_MATCH)).len() == 1
    })
    .await;
    let [call] = named(&spans, "node.call", Some(demo::CREATE_MATCH))[..] else {
        panic!("one node.call span for the match")
    };
    let caller = named(&spans, "node.handle", Some(demo::QUEUE))
        .into_iter()
        .find(|span| span.span_context.span_id() == call.parent_span_id)
        .expect("the call's parent is a queue handler's span");
    assert_eq!(call.span_context.trace_id(), caller.span_context.trace_id());
    assert!(call.parent_span_is_remote, "the context crossed the links");
    assert_eq!(attribute(call, "from").as_deref(), Some("node-1"));
    for client in clients {
        client.close().await;
    }
    gate.shutdown().await;
    node.shutdown().await;
    provider.shutdown().unwrap();
}

#[tokio::test]
async fn one_trace_from_the_gate_through_the_node_and_back() {
    let (provider, exporter, _subscriber) = traced(Sampling::default());
    let (node, gate, address, _nodes) = demo_node_and_gate().await;

    let client = Client::connect_tcp(&address, PacketConfig::default(), ClientOptions::default())
        .await
        .unwrap();
    let echo = request(&client, demo::ECHO, json!({"message": "traced"})).await;
    assert_eq!(echo, json!({"code": 0, "message": "traced"}));

    // Echo: gate.request -> node.handle -> gate.deliver (the response), one trace id.
    let spans = spans_until(&exporter, |spans| {
        named(spans, "node.handle", Some(demo::ECHO)).len() == 1
            && named(spans, "gate.deliver", None).len() == 1
    })
    .await;
    let [gate_span] = named(&spans, "gate.request", Some(demo::ECHO))[..] else {
        panic!("one gate.request span for the echo: {spans:?}")
    };
    let [node_span] = named(&spans, "node.handle", Some(demo::ECHO))[..] else {
        panic!("one node.handle span for the echo")
    };
    let [deliver] = named(&spans, "gate.deliver", None)[..] else {
        panic!("one gate.deliver span for the echo")
    };
    let trace_id = gate_span.span_context.trace_id();
    assert!(gate_span.span_context.is_sampled());
    assert_eq!(
        gate_span.parent_span_id,
        SpanId::INVALID,
        "the gate starts the trace"
    );
    assert_eq!(
        node_span.span_context.trace_id(),
        trace_id,
        "gate and node share one trace"
    );
    assert_eq!(node_span.parent_span_id, gate_span.span_context.span_id());
    assert!(node_span.parent_span_is_remote);
    assert_eq!(deliver.span_context.trace_id(), trace_id);
    assert_eq!(deliver.parent_span_id, node_span.span_context.span_id());
    assert_eq!(attribute(gate_span, "node").as_deref(), Some("node-1"));
    assert_eq!(attribute(node_span, "gate").as_deref(), Some("gate-1"));
    assert_eq!(attribute(node_span, "outcome").as_deref(), Some("ok"));
    assert_eq!(attribute(deliver, "kind").as_deref(), Some("response"));
    assert_eq!(attribute(deliver, "delivered").as_deref(), Some("1"));

    // A push from a handler: node.push under node.handle, delivered on the gate in the same trace.
    let mut pushes = client.pushes().unwrap();
    request(&client, demo::LOGIN, json!({"uid": 7, "name": "seven"})).await;
    request(&client, demo::JOIN, json!({"room": "r"})).await;
    let said = request(&client, demo::SAY, json!({"room": "r", "text": "hello"})).await;
    assert_eq!(said, json!({"code": 0}));
    let push = tokio::time::timeout(Duration::from_secs(5), pushes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(push.route, demo::ROOM_MESSAGE);
    let spans = spans_until(&exporter, |spans| {
        named(spans, "node.handle", Some(demo::SAY)).len() == 1
            && named(spans, "node.push", None).len() == 1
            && named(spans, "gate.deliver", None).len() == 5
    })
    .await;
    let say = named(&spans, "node.handle", Some(demo::SAY))[0];
    let node_push = named(&spans, "node.push", None)[0];
    assert_eq!(node_push.parent_span_id, say.span_context.span_id());
    assert_eq!(attribute(node_push, "kind").as_deref(), Some("multicast"));
    let delivered_push: Vec<_> = named(&spans, "gate.deliver", None)
        .into_iter()
        .filter(|span| attribute(span, "kind").as_deref() == Some("push"))
        .collect();
    let [delivered_push] = delivered_push[..] else {
        panic!("one delivered push")
    };
    assert_eq!(
        delivered_push.span_context.trace_id(),
        say.span_context.trace_id()
    );
    assert_eq!(delivered_push.parent_span_id, node_push.span_context.span_id());

    client.close().await;
    gate.shutdown().await;
    node.shutdown().await;
    provider.shutdown().unwrap();
}

/// What a node sees on the link from a traced gate sampling with `sampling`, for one client packet:
/// the packet's trace context, and the spans the gate exported.
async fn link_trace_of_one_packet(sampling: Sampling) -> (Option<TraceParent>, Vec<SpanData>) {
    let (provider, exporter, _subscriber) = traced(sampling);
    let mut acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), TcpLinkConfig::default())
        .await
        .unwrap();
    let (gate, address, _nodes) = gate(
        acceptor.local_addr().to_string(),
        Arc::new(MemoryLocator::default()),
    )
    .await;

    // This test plays the node, to read the frames the gate sends.
    let NodeLink { tx, mut rx } = acceptor.accept().await.unwrap();
    assert!(matches!(rx.recv().await, Some(GateToNode::Hello { .. })));
    let routes = vec![RouteSpec {
        route: demo::ECHO,
        stateful: false,
        authorized: false,
        internal: false,
    }];
    tx.send(NodeToGate::Hello {
        node_id: "fake-node".into(),
        state: NodeState::Work,
        routes,
        pool: None,
    })
    .await
    .unwrap();
    wait_linked(&gate).await;

    let client = Client::connect_tcp(&address, PacketConfig::default(), ClientOptions::default())
        .await
        .unwrap();
    client.send(demo::ECHO, 1, "{}").await.unwrap();
    let trace = loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
        {
            Some(GateToNode::Packet { trace, .. }) => break trace,
            Some(_) => continue,
            None => panic!("the gate closed the link"),
        }
    };
    client.close().await;
    gate.shutdown().await;
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    provider.shutdown().unwrap();
    (trace, spans)
}

#[tokio::test]
async fn sampling_zero_exports_nothing_and_puts_no_traceparent_on_the_link() {
    let sampling = Sampling::from_otel(Some("parentbased_traceidratio"), Some("0")).unwrap();
    let (trace, spans) = link_trace_of_one_packet(sampling).await;
    assert_eq!(trace, None, "an unsampled request carries no trace context");
    assert!(spans.is_empty(), "nothing is exported: {spans:?}");
}

#[tokio::test]
async fn sampling_one_puts_the_gate_spans_context_on_the_link() {
    let sampling = Sampling::from_otel(Some("parentbased_traceidratio"), Some("1")).unwrap();
    let (trace, spans) = link_trace_of_one_packet(sampling).await;
    let trace = trace.expect("a sampled request carries its trace context");
    assert!(trace.is_sampled());
    let [gate_span] = named(&spans, "gate.request", None)[..] else {
        panic!("one gate.request span: {spans:?}")
    };
    assert_eq!(trace.trace_id(), gate_span.span_context.trace_id().to_bytes());
    assert_eq!(trace.span_id(), gate_span.span_context.span_id().to_bytes());
}

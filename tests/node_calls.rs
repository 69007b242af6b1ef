//! Node-to-node calls end to end through a real gate: a caller node of pool `a` calls routes of a callee
//! node of pool `b` through the gate that links both (in this process, over the in-process link transport;
//! `tests/pools.rs` runs the same over TCP between processes). Covers the reply, a player's node, a timeout,
//! the callee's errors and panics, a node that goes away mid-call, unknown pools and routes, the caller's bound on
//! calls in flight, one-way calls, and internal routes, which no client reaches.

mod support;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{Value, json};
use support::{Conn, Wire, metric_sum};
use switchyard_cluster::link::InProcessHub;
use switchyard_cluster::locator::MemoryLocator;
use switchyard_cluster::registry::{NodeEndpoint, Registry as _, StaticRegistry};
use switchyard_gate::{Gate, GateConfig};
use switchyard_node::{
    CallError, Callee, Context, HandlerError, Node, NodeConfig, Payload, RouteOptions, Router,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const ADD_ONE: i32 = 201;
const SLOW: i32 = 202;
const REFUSE: i32 = 203;
const PANIC: i32 = 204;
const WHO: i32 = 205;
const NOTE: i32 = 206;

#[derive(Deserialize)]
struct Number {
    n: i64,
}

#[derive(Deserialize)]
struct Sleep {
    ms: u64,
}

fn callee_router(notes: mpsc::UnboundedSender<Value>) -> Router<mpsc::UnboundedSender<Value>> {
    let internal = RouteOptions::stateless().internal();
    Router::with_state(notes)
        .route(
            ADD_ONE,
            internal,
            |_: Context, Payload(number): Payload<Number>| async move {
                Ok::<_, HandlerError>(Payload(json!({"n": number.n + 1})))
            },
        )
        .route(
            SLOW,
            internal,
            |_: Context, Payload(sleep): Payload<Sleep>| async move {
                tokio::time::sleep(Duration::from_millis(sleep.ms)).await;
                Ok::<_, HandlerError>(Payload(json!({"slept": sleep.ms})))
            },
        )
        .route(REFUSE, internal, |_: Context| async move {
            Err::<Payload<Value>, _>(HandlerError::new(7, "no such thing"))
        })
        .route(PANIC, internal, |_: Context| async move {
            if true {
                panic!("the callee's bug");
            }
            Ok::<_, HandlerError>(Payload(json!({})))
        })
        .route(WHO, RouteOptions::stateless(), |ctx: Context| async move {
            Ok::<_, HandlerError>(Payload(json!({
                "uid": ctx.uid(),
                "caller": ctx.caller_node(),
                "node": ctx.node_id(),
            })))
        })
        .route(
            NOTE,
            internal,
            |_: Context,
             switchyard_node::State(notes): switchyard_node::State<mpsc::UnboundedSender<Value>>,
             Payload(note): Payload<Value>| async move {
                let _ = notes.send(note);
                Ok::<_, HandlerError>(())
            },
        )
}

struct Setup {
    gate: Gate,
    caller: Node,
    callees: Vec<Node>,
    registry: Registry,
    /// The gate's view of which nodes exist.
    nodes: StaticRegistry,
    tcp: String,
    notes: mpsc::UnboundedReceiver<Value>,
}

impl Setup {
    /// A gate, one caller node (pool `a`) and `callees` callee nodes (pool `b`), all linked.
    async fn start(callees: usize, caller_config: impl FnOnce(&mut NodeConfig)) -> Setup {
        let mut registry = Registry::default();
        let locator = Arc::new(MemoryLocator::default());
        let hub = InProcessHub::default();
        let mut config = NodeConfig {
            pool: "a".into(),
            ..NodeConfig::new("caller-1")
        };
        caller_config(&mut config);
        let caller = Node::new(config, Router::new(), locator.clone(), &mut registry).expect("caller");
        caller.serve(hub.listen("caller-1").expect("listen"));
        let (notes_tx, notes) = mpsc::unbounded_channel();
        let mut nodes = vec!["caller-1".to_owned()];
        let mut callee_nodes = Vec::new();
        for index in 1..=callees {
            let id = format!("callee-{index}");
            let config = NodeConfig {
                pool: "b".into(),
                ..NodeConfig::new(id.as_str())
            };
            let node = Node::new(
                config,
                callee_router(notes_tx.clone()),
                locator.clone(),
                &mut registry,
            )
            .expect("callee");
            node.serve(hub.listen(&id).expect("listen"));
            nodes.push(id);
            callee_nodes.push(node);
        }
        let gate = Gate::new(GateConfig::new("gate-1"), locator, &mut registry).expect("gate");
        let static_nodes = StaticRegistry::new(nodes.clone());
        gate.connect_nodes(static_nodes.nodes(), Arc::new(hub));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let tcp = listener.local_addr().expect("address").to_string();
        gate.serve_tcp(listener);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while gate.linked_nodes() < nodes.len() || caller.linked_gates() < 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the gate links every node"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Setup {
            gate,
            caller,
            callees: callee_nodes,
            registry,
            nodes: static_nodes,
            tcp,
            notes,
        }
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("metrics encode");
        text
    }

    async fn call(&self, callee: Callee, route: i32, request: Value) -> Result<Value, CallError> {
        self.caller.outbound().call(callee, route, &request).await
    }
}

#[tokio::test]
async fn a_call_reaches_any_node_of_a_pool_a_named_node_or_a_players_node_and_returns_the_reply() {
    let setup = Setup::start(2, |_| {}).await;
    let reply = setup
        .call(Callee::pool("b"), ADD_ONE, json!({"n": 41}))
        .await
        .expect("reply");
    assert_eq!(reply, json!({"n": 42}));

    // By the pool's routing policy (round robin here): both callees take calls.
    let mut answered_by = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let reply = setup
            .call(Callee::pool("b"), WHO, json!({}))
            .await
            .expect("reply");
        assert_eq!(reply["caller"], "caller-1");
        assert_eq!(reply["uid"], 0, "a pool call is on behalf of nobody");
        answered_by.insert(reply["node"].as_str().expect("node").to_owned());
    }
    assert_eq!(answered_by.len(), 2, "{answered_by:?}");

    let reply = setup
        .call(Callee::node("callee-2"), WHO, json!({}))
        .await
        .expect("reply");
    assert_eq!(reply["node"], "callee-2");

    // A player bound to callee-1 in pool b: the call goes there, on the player's behalf.
    setup
        .caller
        .outbound()
        .bind_in("b", 77, "callee-1")
        .await
        .expect("bind");
    let reply = setup
        .call(Callee::player("b", 77), WHO, json!({}))
        .await
        .expect("reply");
    assert_eq!(
        (reply["node"].as_str(), reply["uid"].as_i64()),
        (Some("callee-1"), Some(77))
    );
    assert!(matches!(
        setup.call(Callee::player("b", 78), WHO, json!({})).await,
        Err(CallError::NotBound { uid: 78, .. })
    ));
    // The named node adopts the player the caller bound to it.
    let callee = &setup.callees[0];
    switchyard_testkit::eventually_true("the callee adopts player 77", Duration::from_secs(5), || {
        let bound = callee.is_bound(77);
        async move { bound }
    })
    .await;

    let metrics = setup.metrics();
    assert!(
        metric_sum(
            &metrics,
            "switchyard_node_calls_total",
            &["direction=\"out\"", "outcome=\"ok\""]
        ) >= 7.0
    );
    assert!(metric_sum(&metrics, "switchyard_gate_calls_total", &["outcome=\"ok\""]) >= 7.0);
}

#[tokio::test]
async fn failures_are_typed_timeout_remote_error_panic_unknown_pool_and_route() {
    let setup = Setup::start(1, |_| {}).await;
    let outbound = setup.caller.outbound();
    let timed_out = outbound
        .call_timeout::<_, Value>(
            Callee::pool("b"),
            SLOW,
            &json!({"ms": 2000}),
            Duration::from_millis(200),
        )
        .await;
    assert!(matches!(timed_out, Err(CallError::Timeout(_))), "{timed_out:?}");

    match setup.call(Callee::pool("b"), REFUSE, json!({})).await {
        Err(CallError::Remote { code, message, .. }) => {
            assert_eq!((code, message.as_str()), (7, "no such thing"))
        }
        other => panic!("expected the callee's error, got {other:?}"),
    }
    match setup.call(Callee::pool("b"), PANIC, json!({})).await {
        Err(CallError::Remote { code, message, .. }) => {
            assert_eq!((code, message.as_str()), (2, "internal error"))
        }
        other => panic!("expected an internal error, got {other:?}"),
    }
    assert!(matches!(
        setup
            .call(Callee::pool("nowhere"), ADD_ONE, json!({"n": 1}))
            .await,
        Err(CallError::NoNode { route: ADD_ONE, .. })
    ));
    assert!(matches!(
        setup.call(Callee::pool("b"), 299, json!({})).await,
        Err(CallError::UnknownRoute { route: 299, .. })
    ));
    assert!(matches!(
        setup
            .call(Callee::node("callee-9"), ADD_ONE, json!({"n": 1}))
            .await,
        Err(CallError::NoNode { .. })
    ));
    // A request the callee cannot decode is the caller's bad request, answered with code 1.
    assert!(matches!(
        setup.call(Callee::pool("b"), ADD_ONE, json!({"n": "x"})).await,
        Err(CallError::Remote { code: 1, .. })
    ));
    let metrics = setup.metrics();
    for (outcome, at_least) in [
        ("timeout", 1.0),
        ("remote_error", 3.0),
        ("no_node", 2.0),
        ("unknown_route", 1.0),
    ] {
        let seen = metric_sum(
            &metrics,
            "switchyard_node_calls_total",
            &["direction=\"out\"", &format!("outcome=\"{outcome}\"")],
        );
        assert!(seen >= at_least, "{outcome}: {seen}");
    }
    assert!(
        metric_sum(
            &metrics,
            "switchyard_node_handler_failures_total",
            &["reason=\"panic\""]
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_callee_that_goes_away_fails_its_calls_in_flight_and_is_not_called_again() {
    let setup = Setup::start(1, |_| {}).await;
    let outbound = setup.caller.outbound().clone();
    let in_flight = tokio::spawn(async move {
        outbound
            .call_timeout::<_, Value>(
                Callee::pool("b"),
                SLOW,
                &json!({"ms": 3000}),
                Duration::from_secs(10),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The callee leaves the registry (its pod is gone): the gate closes its link mid-call.
    setup.nodes.set(vec![NodeEndpoint {
        address: "caller-1".into(),
        accepting: true,
    }]);
    let result = tokio::time::timeout(Duration::from_secs(2), in_flight)
        .await
        .expect("failed at once, not at its deadline")
        .expect("task");
    assert!(matches!(result, Err(CallError::NodeGone)), "{result:?}");
    assert!(matches!(
        setup.call(Callee::pool("b"), ADD_ONE, json!({"n": 1})).await,
        Err(CallError::NoNode { .. })
    ));
}

#[tokio::test]
async fn calls_in_flight_are_bounded_and_one_way_calls_arrive_without_a_reply() {
    let mut setup = Setup::start(1, |config| config.max_calls_in_flight = 1).await;
    let outbound = setup.caller.outbound().clone();
    let slow = tokio::spawn(async move {
        outbound
            .call::<_, Value>(Callee::pool("b"), SLOW, &json!({"ms": 500}))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(matches!(
        setup.call(Callee::pool("b"), ADD_ONE, json!({"n": 1})).await,
        Err(CallError::Overloaded(_))
    ));
    assert_eq!(
        slow.await.expect("task").expect("the first call"),
        json!({"slept": 500})
    );

    setup
        .caller
        .outbound()
        .notify(Callee::pool("b"), NOTE, &json!({"note": "hello"}))
        .await
        .expect("delivered");
    let note = tokio::time::timeout(Duration::from_secs(5), setup.notes.recv())
        .await
        .expect("the note arrives")
        .expect("open");
    assert_eq!(note, json!({"note": "hello"}));
}

#[tokio::test]
async fn internal_routes_are_unreachable_from_clients() {
    let setup = Setup::start(1, |_| {}).await;
    let mut client = Conn::tcp(&setup.tcp, Wire::DEFAULT).await;
    client.send(ADD_ONE as i64, 1, json!({"n": 1})).await;
    client.expect_silence(Duration::from_millis(500)).await;
    // The same node answers a client on its public route, and a node on the internal one.
    assert_eq!(
        client.request(WHO as i64, 2, json!({})).await["caller"],
        Value::Null
    );
    assert_eq!(
        setup
            .call(Callee::pool("b"), ADD_ONE, json!({"n": 1}))
            .await
            .expect("reply"),
        json!({"n": 2})
    );
    let dropped = metric_sum(
        &setup.metrics(),
        "switchyard_gate_packets_dropped_total",
        &["reason=\"unknown_route\""],
    );
    assert_eq!(dropped, 1.0);
    drop(setup.gate);
}

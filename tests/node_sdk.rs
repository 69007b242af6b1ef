//! The node SDK as a game uses it: a game node built on `switchyard_node` in this process (real link
//! listener, real Redis locator) behind real `switchyard gate` processes, driven by raw due packets over
//! TCP and WebSocket. Covers error and panic replies, the client's address, ticks and the lifecycle hooks
//! (disconnect, and reconnect through another gate).

mod support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use support::procs::{Proc, Redis, TempDir, free_port};
use support::{Conn, Wire, behind_balancer, metric_sum, proxy_v2, switchyard_binary};
use switchyard_cluster::link::tcp::{TcpAcceptor, TcpLinkConfig};
use switchyard_cluster::redis_locator::{RedisLocator, RedisLocatorConfig};
use switchyard_node::{
    Context, Disconnect, HandlerError, Lifecycle, Node, NodeConfig, Payload, Reconnect, RouteOptions, Router,
    State, Tick,
};
use tokio::sync::mpsc;

/// What the game's hooks saw, in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Started,
    Tick(u64),
    Disconnected { uid: i64 },
    Reconnected { uid: i64, gate: String },
}

#[derive(Clone)]
struct Probe(mpsc::UnboundedSender<Seen>);

#[derive(Deserialize)]
struct Strict {
    #[allow(dead_code)]
    n: u32,
}

#[derive(Serialize)]
struct Addr {
    code: i32,
    addr: String,
}

const REFUSE: i64 = 1;
const STRICT: i64 = 2;
const PANIC: i64 = 3;
const ADDR: i64 = 4;
const LOGIN: i64 = 5;
const INTERNAL: i64 = 6;

fn game(probe: Probe) -> Router<Probe> {
    Router::with_state(probe)
        .route(REFUSE as i32, RouteOptions::stateless(), |_: Context| async {
            Err::<(), _>(HandlerError::new(42, "room is full"))
        })
        .route(
            STRICT as i32,
            RouteOptions::stateless(),
            |_: Context, Payload(_): Payload<Strict>| async { Payload(json!({"code": 0})) },
        )
        .route(
            PANIC as i32,
            RouteOptions::stateless(),
            |ctx: Context| async move {
                if ctx.seq() != 0 {
                    panic!("the game has a bug");
                }
            },
        )
        .route(
            ADDR as i32,
            RouteOptions::stateless(),
            |ctx: Context| async move {
                let addr = ctx.remote_addr().map(|addr| addr.to_string()).unwrap_or_default();
                Payload(Addr { code: 0, addr })
            },
        )
        .route(LOGIN as i32, RouteOptions::stateless(), login)
        .route(INTERNAL as i32, RouteOptions::stateless(), |_: Context| async {
            Err::<(), _>(std::io::Error::other("database unreachable"))
        })
        .tick(Duration::from_millis(50), |tick: Tick, probe: Probe| async move {
            let _ = probe.0.send(Seen::Tick(tick.count));
        })
        .on_start(|_: Lifecycle, probe: Probe| async move {
            let _ = probe.0.send(Seen::Started);
        })
        .on_disconnect(|event: Disconnect, probe: Probe| async move {
            let _ = probe.0.send(Seen::Disconnected { uid: event.uid });
        })
        .on_reconnect(|event: Reconnect, probe: Probe| async move {
            let _ = probe.0.send(Seen::Reconnected {
                uid: event.uid,
                gate: event.gate_id,
            });
        })
}

#[derive(Deserialize)]
struct Login {
    uid: i64,
}

async fn login(
    ctx: Context,
    State(_): State<Probe>,
    Payload(login): Payload<Login>,
) -> Result<Payload<Value>, HandlerError> {
    ctx.bind_gate(login.uid).await?;
    if ctx.locate_node(login.uid).await?.is_none() {
        ctx.bind_node(login.uid).await?;
    }
    Ok(Payload(json!({"code": 0, "uid": login.uid})))
}

/// Redis, the game node in this process and two gates (`gate-a`, `gate-b`), each with TCP and WebSocket.
struct Cluster {
    _dir: TempDir,
    redis: Redis,
    _gates: Vec<Proc>,
    gates: Vec<(String, String)>,
    node: Node,
    registry: Arc<std::sync::Mutex<Registry>>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Cluster {
    async fn start(name: &str) -> Cluster {
        Cluster::start_with(name, &[]).await
    }

    /// [`Cluster::start`] with `gate_b_flags` added to the second gate's.
    async fn start_with(name: &str, gate_b_flags: &[&str]) -> Cluster {
        let dir = TempDir::new(name);
        let redis = Redis::start(dir.path());
        let mut registry = Registry::default();
        let locator = RedisLocator::connect(RedisLocatorConfig::new(redis.url()), &mut registry)
            .await
            .expect("redis locator");
        let (probe, seen) = mpsc::unbounded_channel();
        let node = Node::new(
            NodeConfig::new("sdk-node"),
            game(Probe(probe)),
            Arc::new(locator),
            &mut registry,
        )
        .expect("valid node");
        let acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().expect("address"), TcpLinkConfig::default())
            .await
            .expect("link listener");
        let link = acceptor.local_addr().to_string();
        node.serve(acceptor);
        let mut procs = Vec::new();
        let mut gates = Vec::new();
        for id in ["gate-a", "gate-b"] {
            let (tcp, ws, admin) = (
                format!("127.0.0.1:{}", free_port()),
                format!("127.0.0.1:{}", free_port()),
                format!("127.0.0.1:{}", free_port()),
            );
            let args: Vec<String> = [
                "gate",
                "--id",
                id,
                "--tcp",
                &tcp,
                "--ws",
                &ws,
                "--http",
                &admin,
                "--locator",
                &redis.url(),
                "--nodes",
                &link,
            ]
            .iter()
            .chain(if id == "gate-b" { gate_b_flags } else { &[] })
            .map(|arg| arg.to_string())
            .collect();
            procs.push(Proc::spawn(id, switchyard_binary(), &args, dir.path()));
            gates.push((tcp, format!("ws://{ws}/")));
        }
        let cluster = Cluster {
            _dir: dir,
            redis,
            _gates: procs,
            gates,
            node,
            registry: Arc::new(std::sync::Mutex::new(registry)),
            seen,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while cluster.node.linked_gates() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "both gates link to the node"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cluster
    }

    async fn tcp(&self, gate: usize) -> Conn {
        Conn::tcp(&self.gates[gate].0, Wire::DEFAULT).await
    }

    async fn ws(&self, gate: usize) -> Conn {
        Conn::ws(&self.gates[gate].1, Wire::DEFAULT).await
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry.lock().expect("registry"))
            .expect("metrics encode");
        text
    }

    /// The next event other than a tick (ticks run all along).
    async fn next_event(&mut self) -> Seen {
        loop {
            let seen = tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
                .await
                .expect("an event within 10 s")
                .expect("the node is running");
            if !matches!(seen, Seen::Tick(_)) {
                return seen;
            }
        }
    }
}

#[tokio::test]
async fn a_handlers_error_reaches_the_player_as_a_reply_on_tcp_and_websocket() {
    let cluster = Cluster::start("sdk-errors").await;
    for mut conn in [cluster.tcp(0).await, cluster.ws(1).await] {
        assert_eq!(
            conn.request(REFUSE, 1, json!({})).await,
            json!({"code": 42, "error": "room is full"})
        );
        let bad = conn.request(STRICT, 2, json!({"n": "not a number"})).await;
        assert_eq!(bad["code"], 1, "{bad}");
        assert!(
            bad["error"].as_str().is_some_and(|why| why.contains("json")),
            "{bad}"
        );
        assert_eq!(conn.request(STRICT, 3, json!({"n": 7})).await, json!({"code": 0}));
        assert_eq!(
            conn.request(INTERNAL, 4, json!({})).await,
            json!({"code": 2, "error": "internal error"}),
            "internal details stay in the node's log"
        );
    }
    let metrics = cluster.metrics();
    let failures = |reason: &str| {
        metric_sum(
            &metrics,
            "switchyard_node_handler_failures_total",
            &[&format!("reason=\"{reason}\"")],
        )
    };
    assert_eq!(
        (failures("game"), failures("bad_request"), failures("internal")),
        (2.0, 2.0, 2.0)
    );
}

#[tokio::test]
async fn a_panic_is_answered_and_counted_and_the_node_keeps_serving() {
    let cluster = Cluster::start("sdk-panic").await;
    let mut conn = cluster.tcp(0).await;
    for seq in 1..=3 {
        assert_eq!(
            conn.request(PANIC, seq, json!({})).await,
            json!({"code": 2, "error": "internal error"})
        );
    }
    // The same connection (its lane survived) and a new one are served.
    assert_eq!(conn.request(STRICT, 4, json!({"n": 1})).await, json!({"code": 0}));
    let mut other = cluster.ws(1).await;
    assert_eq!(
        other.request(STRICT, 1, json!({"n": 1})).await,
        json!({"code": 0})
    );
    let panics = metric_sum(
        &cluster.metrics(),
        "switchyard_node_handler_failures_total",
        &["reason=\"panic\""],
    );
    assert_eq!(panics, 3.0);
}

#[tokio::test]
async fn the_context_carries_the_clients_address() {
    // gate-b sits behind an L4 load balancer that speaks PROXY protocol v2.
    let cluster = Cluster::start_with("sdk-addr", &["--proxy-protocol"]).await;
    let mut conn = cluster.tcp(0).await;
    let Conn::Tcp { stream, .. } = &conn else {
        unreachable!("a TCP connection")
    };
    let local = stream.local_addr().expect("client address").to_string();
    let reply = conn.request(ADDR, 1, json!({})).await;
    assert_eq!(reply["addr"], json!(local), "{reply}");
    let mut ws = cluster.ws(0).await;
    let reply = ws.request(ADDR, 1, json!({})).await;
    assert!(
        reply["addr"]
            .as_str()
            .is_some_and(|addr| addr.starts_with("127.0.0.1:")),
        "{reply}"
    );
    // Behind the load balancer the node sees the player's address from the header, not the balancer's.
    let player = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 40_009);
    let mut behind = behind_balancer(&cluster.gates[1].0, &proxy_v2(player)).await;
    let reply = behind.request(ADDR, 1, json!({})).await;
    assert_eq!(reply["addr"], json!("203.0.113.9:40009"), "{reply}");
}

#[tokio::test]
async fn ticks_run_and_start_disconnect_and_reconnect_hooks_fire() {
    let mut cluster = Cluster::start("sdk-hooks").await;
    assert_eq!(cluster.next_event().await, Seen::Started);
    // Ticks count up, one per interval.
    let mut ticks = Vec::new();
    while ticks.len() < 3 {
        if let Some(Seen::Tick(count)) = cluster.seen.recv().await {
            ticks.push(count);
        }
    }
    assert!(ticks.windows(2).all(|pair| pair[1] == pair[0] + 1), "{ticks:?}");

    // A first login is not a reconnect; leaving fires the disconnect hook.
    let mut first = cluster.tcp(0).await;
    assert_eq!(
        first.request(LOGIN, 1, json!({"uid": 77})).await,
        json!({"code": 0, "uid": 77})
    );
    drop(first);
    assert_eq!(cluster.next_event().await, Seen::Disconnected { uid: 77 });

    // Back through the other gate: the node holding the player hears of it.
    let mut again = cluster.ws(1).await;
    assert_eq!(
        again.request(LOGIN, 1, json!({"uid": 77})).await,
        json!({"code": 0, "uid": 77})
    );
    assert_eq!(
        cluster.next_event().await,
        Seen::Reconnected {
            uid: 77,
            gate: "gate-b".to_owned()
        }
    );
    assert!(cluster.node.is_bound(77));
}

#[tokio::test]
async fn a_player_re_homed_to_another_node_is_released_here() {
    let cluster = Cluster::start("sdk-rehome").await;
    let mut conn = cluster.tcp(0).await;
    assert_eq!(
        conn.request(LOGIN, 1, json!({"uid": 88})).await,
        json!({"code": 0, "uid": 88})
    );
    assert!(cluster.node.is_bound(88) && cluster.node.bound_players() == 1);
    // Another node of the pool adopts the player (as after a gate lost its link to this one).
    let mut registry = Registry::default();
    let other = RedisLocator::connect(RedisLocatorConfig::new(cluster.redis.url()), &mut registry)
        .await
        .expect("second locator client");
    use switchyard_cluster::locator::Locator as _;
    other
        .bind_node(88, "game", "other-node")
        .await
        .expect("bind elsewhere");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cluster.node.is_bound(88) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the player was not released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cluster.node.bound_players(), 0, "no longer counted here");
}

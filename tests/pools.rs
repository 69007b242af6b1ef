//! The demo as two pools in a real cluster of processes: two `switchyard gate`s, two `lobby` and two
//! `battle` nodes (`switchyard node --pool ...`) linked over TCP, and a real redis-server. Players on
//! different gates queue in the lobby, are matched on one battle node (a lobby → battle call, then per-pool
//! bindings the gates follow at once), and see each other's moves; a battle node drained mid-match keeps its
//! match to the end while new matches go to the other battle node, and the lobby logs players in all along.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::{Cluster, admin_metrics, login, whoami};
use support::{Conn, Wire, metric_sum};
use switchyard_testkit::eventually_true;

const QUEUE: i64 = 11;
const MATCHED: i64 = 12;
const MOVE: i64 = 13;
const MOVED: i64 = 14;
const LOGOUT: i64 = 7;

struct Player {
    uid: i64,
    conn: Conn,
    seq: i64,
}

impl Player {
    async fn login(cluster: &Cluster, gate: usize, uid: i64) -> (Player, String) {
        let mut conn = Conn::tcp(cluster.gate_tcp(gate), Wire::DEFAULT).await;
        let node = login(&mut conn, uid).await;
        (Player { uid, conn, seq: 10 }, node)
    }

    fn next_seq(&mut self) -> i64 {
        self.seq += 1;
        self.seq
    }

    /// Queues for `mode`; returns the reply and, if this player completed a pair, the match push.
    async fn queue(&mut self, mode: &str) -> Value {
        let seq = self.next_seq();
        self.conn.request(QUEUE, seq, json!({"mode": mode})).await
    }

    async fn make_move(&mut self, x: i64, y: i64) -> Value {
        let seq = self.next_seq();
        self.conn.request(MOVE, seq, json!({"x": x, "y": y})).await
    }

    async fn logout(&mut self) -> Value {
        let seq = self.next_seq();
        self.conn.request(LOGOUT, seq, json!({})).await
    }
}

/// Two players on different gates queue for `mode`; both get the match push; returns the battle node.
async fn matched(first: &mut Player, second: &mut Player, mode: &str) -> String {
    assert_eq!(first.queue(mode).await["code"], 0);
    let seq = second.next_seq();
    second.conn.send(QUEUE, seq, json!({"mode": mode})).await;
    // The second player's request completes the pair: the push may come before the reply.
    let replies = second.conn.expect_each(&[(QUEUE, seq), (MATCHED, 0)]).await;
    assert_eq!(replies[0]["code"], 0, "{replies:?}");
    let push = first.conn.expect_data(MATCHED, 0).await;
    assert_eq!(push, replies[1], "both players are told the same match");
    let mut players: Vec<i64> = push["players"]
        .as_array()
        .expect("players")
        .iter()
        .map(|uid| uid.as_i64().expect("uid"))
        .collect();
    players.sort_unstable();
    assert_eq!(players, [first.uid.min(second.uid), first.uid.max(second.uid)]);
    push["node"].as_str().expect("battle node").to_owned()
}

/// Each player's move reaches the other (route 14), and stateful battle routes reach the match host.
async fn play(a: &mut Player, b: &mut Player, host: &str, round: i64) {
    assert_eq!(a.make_move(round, 1).await["code"], 0);
    assert_eq!(
        b.conn.expect_data(MOVED, 0).await,
        json!({"from": a.uid, "x": round, "y": 1})
    );
    assert_eq!(b.make_move(round, 2).await["code"], 0);
    assert_eq!(
        a.conn.expect_data(MOVED, 0).await,
        json!({"from": b.uid, "x": round, "y": 2})
    );
    for player in [a, b] {
        assert_eq!(
            whoami(&mut player.conn).await["node"],
            host,
            "battle routes go to the match host"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_are_matched_across_gates_and_a_draining_battle_node_keeps_its_match() {
    let mut cluster = Cluster::start_pools(
        "pools",
        "60s",
        2,
        &[
            ("lobby-a", "lobby"),
            ("lobby-b", "lobby"),
            ("battle-a", "battle"),
            ("battle-b", "battle"),
        ],
    )
    .await;

    let (mut alice, alice_lobby) = Player::login(&cluster, 0, 1).await;
    let (mut bob, bob_lobby) = Player::login(&cluster, 1, 2).await;
    for lobby in [&alice_lobby, &bob_lobby] {
        assert!(lobby.starts_with("lobby-"), "login is the lobby's: {lobby}");
    }
    let host = matched(&mut alice, &mut bob, "duel").await;
    assert!(host.starts_with("battle-"), "{host}");
    play(&mut alice, &mut bob, &host, 1).await;

    // Drain the match host mid-match.
    let host_index = cluster
        .nodes
        .iter()
        .position(|(id, _, _)| *id == host)
        .expect("host");
    cluster.nodes[host_index].1.signal("TERM");
    for (_, _, admin) in &cluster.gates {
        eventually_true("the gates hear of the drain", Duration::from_secs(5), || async {
            metric_sum(
                &admin_metrics(admin).await,
                "switchyard_gate_nodes",
                &["state=\"draining\""],
            ) == 1.0
        })
        .await;
    }
    // The match goes on on the draining node.
    play(&mut alice, &mut bob, &host, 2).await;

    // The lobby keeps logging players in, and new matches land on the other battle node.
    let (mut carol, _) = Player::login(&cluster, 1, 3).await;
    let (mut dave, _) = Player::login(&cluster, 0, 4).await;
    let second_host = matched(&mut carol, &mut dave, "duel").await;
    assert_ne!(second_host, host, "no new match on a draining node");
    play(&mut carol, &mut dave, &second_host, 1).await;
    play(&mut alice, &mut bob, &host, 3).await;

    // The old match ends when its players log out; then the drained node exits, having lost nobody.
    assert!(
        cluster.nodes[host_index].1.is_running(),
        "the draining node waits for its match"
    );
    for player in [&mut alice, &mut bob] {
        assert_eq!(player.logout().await["code"], 0);
    }
    let status = cluster.nodes[host_index]
        .1
        .wait_exit(Duration::from_secs(15))
        .expect("the drained battle node exits after its match ends");
    assert!(status.success(), "{status:?}");
    let (_, eve_lobby) = Player::login(&cluster, 0, 5).await;
    assert!(eve_lobby.starts_with("lobby-"));

    // Every call of the lobby succeeded; nothing was dropped for want of a node.
    let mut lobby_calls_ok = 0.0;
    for id in ["lobby-a", "lobby-b"] {
        let metrics = admin_metrics(cluster.node_admin(id)).await;
        lobby_calls_ok += metric_sum(
            &metrics,
            "switchyard_node_calls_total",
            &["direction=\"out\"", "outcome=\"ok\""],
        );
        let failed: f64 = [
            "remote_error",
            "no_node",
            "node_gone",
            "timeout",
            "overloaded",
            "no_gate",
        ]
        .iter()
        .map(|outcome| {
            metric_sum(
                &metrics,
                "switchyard_node_calls_total",
                &["direction=\"out\"", &format!("outcome=\"{outcome}\"")],
            )
        })
        .sum();
        assert_eq!(failed, 0.0, "{id}: calls failed");
    }
    assert!(lobby_calls_ok >= 2.0, "two matches were created by calls");
    for (_, _, admin) in &cluster.gates {
        let metrics = admin_metrics(admin).await;
        assert_eq!(
            metric_sum(&metrics, "switchyard_gate_packets_dropped_total", &[]),
            0.0,
            "{admin}"
        );
        assert_eq!(metric_sum(&metrics, "switchyard_gate_route_conflicts", &[]), 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_claimed_by_two_pools_is_refused_loudly_and_served_by_one() {
    // `game` serves every demo route; `lobby` claims routes 1, 2, 10, 11 and 111 too.
    let cluster = Cluster::start_pools("conflict", "5s", 1, &[("all-1", "game"), ("lobby-1", "lobby")]).await;
    let admin = &cluster.gates[0].2;
    let metrics = admin_metrics(admin).await;
    assert_eq!(
        metric_sum(&metrics, "switchyard_gate_route_conflicts", &[]),
        5.0,
        "routes 1, 2, 10, 11, 111"
    );
    assert!(
        cluster.gates[0]
            .0
            .log_text()
            .contains("several pools claim one route"),
        "the conflict is logged"
    );
    // The pool whose name sorts first (`game`) keeps the routes: logins land there every time.
    for uid in 1..=4 {
        let mut conn = Conn::tcp(cluster.gate_tcp(0), Wire::DEFAULT).await;
        assert_eq!(login(&mut conn, uid).await, "all-1");
    }
}

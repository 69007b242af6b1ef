//! The demo as two pools in a real cluster of processes: two `switchyard gate`s, two `lobby` and two
//! `battle` nodes (`switchyard node --pool ...`) linked over TCP, and a real redis-server. Players on
//! different gates queue in the lobby, are matched on one battle node (a lobby → battle call, then per-pool
//! bindings the gates follow at once), and see each other's moves; a battle node drained mid-match keeps its
//! match to the end while new matches go to the other battle node, and the lobby logs players in all along.

mod support;

use std::time::Duration;

use serde_json::json;
use support::cluster::{Cluster, MOVED, Player, admin_metrics, login, matched, whoami};
use support::{Conn, Wire, metric_sum};
use switchyard_testkit::eventually_true;

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

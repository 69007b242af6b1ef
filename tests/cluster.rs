//! A real cluster of processes: two `switchyard gate`s and two `switchyard node`s (demo game) linked over
//! TCP, a static registry, and a real redis-server as the locator. Raw-byte clients play through both gates
//! while nodes and gates are drained, killed, and Redis is restarted.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::cluster::{Cluster, admin_metrics, login, strings, whoami};
use support::procs::{Proc, Redis, TempDir, free_port};
use support::{Conn, Packet, Wire, http_get, metric_sum, switchyard_binary};
use switchyard_testkit::eventually_true;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_and_room_messages_cross_gates() {
    let cluster = Cluster::start("push", "30s").await;
    let mut alice = Conn::tcp(cluster.gate_tcp(0), Wire::DEFAULT).await;
    let mut bob = Conn::tcp(cluster.gate_tcp(1), Wire::DEFAULT).await;
    let alice_node = login(&mut alice, 1).await;
    // Rooms live on a node: log bob in until he lands where alice is (round robin moves on each time).
    let mut bob_node = login(&mut bob, 2).await;
    for _ in 0..4 {
        if bob_node == alice_node {
            break;
        }
        assert_eq!(bob.request(7, 3, json!({})).await["code"], 0);
        bob_node = login(&mut bob, 2).await;
    }
    assert_eq!(bob_node, alice_node);
    assert_eq!(alice.request(4, 4, json!({"room": "r"})).await["code"], 0);
    assert_eq!(bob.request(4, 4, json!({"room": "r"})).await["members"], 2);
    bob.send(5, 5, json!({"room": "r", "text": "across gates"})).await;
    assert_eq!(
        alice.expect_data(6, 0).await,
        json!({"room": "r", "from": 2, "text": "across gates"})
    );

    // A duplicate login on the other gate: the node pushes route 8 to the older connection on gate A.
    let mut alice_again = Conn::tcp(cluster.gate_tcp(1), Wire::DEFAULT).await;
    login(&mut alice_again, 1).await;
    assert_eq!(
        alice.expect_data(8, 0).await,
        json!({"reason": "duplicate login"})
    );
    alice.expect_closed(Duration::from_secs(3)).await;
    assert_eq!(
        whoami(&mut alice_again).await["node"],
        alice_node.as_str(),
        "the player kept their node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_keeps_its_players_and_exits_after_the_last_logout() {
    let mut cluster = Cluster::start("drain", "30s").await;
    // Four players through both gates, spread over both nodes by round robin.
    let mut players = Vec::new();
    for uid in 1..=4 {
        let mut conn = Conn::tcp(cluster.gate_tcp(uid as usize % 2), Wire::DEFAULT).await;
        let node = login(&mut conn, uid).await;
        players.push((uid, conn, node));
    }
    let (drained_id, drained, _) = &cluster.nodes[0];
    let drained_id = drained_id.clone();
    let on_drained: Vec<usize> = (0..players.len())
        .filter(|&i| players[i].2 == drained_id)
        .collect();
    assert!(!on_drained.is_empty(), "round robin put someone on {drained_id}");
    drained.signal("TERM");
    for (_, _, admin) in &cluster.gates {
        eventually_true("the gate heard of the drain", Duration::from_secs(5), || async {
            metric_sum(
                &admin_metrics(admin).await,
                "switchyard_gate_nodes",
                &["state=\"draining\""],
            ) == 1.0
        })
        .await;
    }

    // Every gate hears of the drain on the link; new logins go to the other node only.
    for uid in 10..16 {
        let mut conn = Conn::tcp(cluster.gate_tcp(uid as usize % 2), Wire::DEFAULT).await;
        assert_ne!(
            login(&mut conn, uid).await,
            drained_id,
            "new login landed on the draining node"
        );
    }
    // Bound players keep being served by the draining node.
    for &i in &on_drained {
        for _ in 0..3 {
            assert_eq!(whoami(&mut players[i].1).await["node"], drained_id.as_str());
        }
    }
    assert!(cluster.nodes[0].1.is_running(), "the node waits for its players");
    for &i in &on_drained {
        assert_eq!(players[i].1.request(7, 9, json!({})).await["code"], 0);
    }
    let last_logout = Instant::now();
    let status = cluster.nodes[0]
        .1
        .wait_exit(Duration::from_secs(3))
        .expect("node exited");
    assert!(status.success(), "{status:?}");
    assert!(
        last_logout.elapsed() < Duration::from_secs(1),
        "exited {:?} after the last logout",
        last_logout.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_sends_players_elsewhere_and_the_node_exits_on_time() {
    let mut cluster = Cluster::start("deadline", "1500ms").await;
    let mut stuck = Vec::new();
    for uid in 1..=4 {
        let mut conn = Conn::tcp(cluster.gate_tcp(0), Wire::DEFAULT).await;
        if login(&mut conn, uid).await == cluster.nodes[0].0 {
            stuck.push(conn);
        }
    }
    assert!(!stuck.is_empty());
    let started = Instant::now();
    cluster.nodes[0].1.signal("TERM");
    for conn in &mut stuck {
        // Told to reconnect (heartbeat extcode 1), then closed.
        loop {
            match conn
                .recv_within(Duration::from_secs(4))
                .await
                .expect("told within the deadline")
            {
                Some(Packet::Heartbeat { extcode: 1 }) => break,
                Some(_) => {}
                None => panic!("closed without the reconnect signal"),
            }
        }
        conn.expect_closed(Duration::from_secs(2)).await;
    }
    let status = cluster.nodes[0]
        .1
        .wait_exit(Duration::from_secs(3))
        .expect("node exited");
    assert!(status.success());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(3500),
        "exited after {took:?}"
    );
    // The players log in again and land on the other node.
    let mut again = Conn::tcp(cluster.gate_tcp(1), Wire::DEFAULT).await;
    assert_eq!(login(&mut again, 1).await, cluster.nodes[1].0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_of_a_killed_node_play_on_the_other_one() {
    let mut cluster = Cluster::start("kill", "30s").await;
    let mut victims = Vec::new();
    for uid in 1..=4 {
        let mut conn = Conn::tcp(cluster.gate_tcp(uid as usize % 2), Wire::DEFAULT).await;
        if login(&mut conn, uid).await == cluster.nodes[0].0 {
            victims.push((uid, conn));
        }
    }
    assert!(!victims.is_empty());
    cluster.nodes[0].1.signal("KILL");
    cluster.nodes[0].1.wait_exit(Duration::from_secs(2));
    // A request forwarded before a gate notices the dead link is lost with the node (the client times out
    // and retries); what must hold is that the players recover once the gates have noticed and the link
    // grace (1 s here) has passed.
    for (_, _, admin) in &cluster.gates {
        eventually_true(
            "the gate dropped the killed node's link",
            Duration::from_secs(10),
            || async { metric_sum(&admin_metrics(admin).await, "switchyard_gate_node_links", &[]) == 1.0 },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let survivor = cluster.nodes[1].0.clone();
    for (uid, conn) in &mut victims {
        // The stale binding is cleared: whoami is answered by the other node, which adopts the player.
        let reply = whoami(conn).await;
        assert_eq!(reply["node"], survivor.as_str(), "{reply}");
        assert_eq!(login(conn, *uid).await, survivor);
        assert_eq!(conn.request(4, 5, json!({"room": "after"})).await["code"], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_of_a_draining_gate_reconnect_and_keep_their_node() {
    let mut cluster = Cluster::start("gate-drain", "30s").await;
    let mut players = Vec::new();
    for uid in 1..=4 {
        let mut conn = Conn::tcp(cluster.gate_tcp(0), Wire::DEFAULT).await;
        let node = login(&mut conn, uid).await;
        players.push((uid, conn, node));
    }
    cluster.gates[0].0.signal("TERM");
    for (uid, conn, node) in &mut players {
        assert_eq!(
            conn.recv().await,
            Some(Packet::Heartbeat { extcode: 1 }),
            "reconnect-elsewhere signal"
        );
        conn.expect_closed(Duration::from_secs(4)).await;
        let mut fresh = Conn::tcp(cluster.gate_tcp(1), Wire::DEFAULT).await;
        assert_eq!(login(&mut fresh, *uid).await, *node, "login names the old node");
        assert_eq!(
            whoami(&mut fresh).await["node"],
            node.as_str(),
            "whoami answered by the old node"
        );
    }
    assert!(
        cluster.gates[0]
            .0
            .wait_exit(Duration::from_secs(3))
            .is_some_and(|s| s.success())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_keep_routing_while_redis_restarts() {
    let mut cluster = Cluster::start("redis", "30s").await;
    let mut players = Vec::new();
    for uid in 1..=4 {
        let mut conn = Conn::tcp(cluster.gate_tcp(uid as usize % 2), Wire::DEFAULT).await;
        let node = login(&mut conn, uid).await;
        players.push((uid, conn, node));
    }
    // Load keeps running from a task while Redis goes away and comes back.
    let load = tokio::spawn(async move {
        let mut seq = 100;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            for (_, conn, node) in &mut players {
                seq += 1;
                let reply = conn.request(3, seq, json!({})).await;
                assert_eq!(reply["node"], node.as_str(), "stateful routing never needs Redis");
                assert_eq!(conn.request(1, seq, json!({"message": "x"})).await["code"], 0);
            }
        }
        players
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.redis.restart(Duration::from_millis(800));
    let players = load.await.expect("load ran without a failed response");
    // Binding writes recover: a new login is recorded in the new (empty) Redis and pushes find the player.
    let mut late = Conn::tcp(cluster.gate_tcp(0), Wire::DEFAULT).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 1;
    loop {
        late.send(2, seq, json!({"uid": 50, "name": "late"})).await;
        if let Ok(Some(Packet::Data {
            route: 2, payload, ..
        })) = late.recv_within(Duration::from_secs(2)).await
            && serde_json::from_slice::<Value>(&payload).is_ok_and(|reply| reply["code"] == 0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "login never worked against the restarted Redis"
        );
        seq += 1;
    }
    assert_eq!(late.request(4, 2, json!({"room": "z"})).await["code"], 0);
    late.send(5, 3, json!({"room": "z", "text": "back"})).await;
    assert_eq!(
        late.expect_data(6, 0).await["text"],
        "back",
        "the push found the player through Redis"
    );
    // The players who logged in before the restart: the new Redis started empty, and the gates and nodes
    // wrote their bindings again once their locators were back. Pushes find them, and a player who
    // reconnects (through the other gate) finds its node.
    let mut players = players;
    let mut seq = 1000;
    for (uid, conn, node) in &mut players {
        let room = format!("own-{uid}");
        seq += 1;
        assert_eq!(conn.request(4, seq, json!({"room": room})).await["code"], 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            seq += 1;
            if say_and_hear(conn, seq, &room, "restored").await {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "uid {uid}: pushes never found a player who logged in before the Redis restart"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut fresh = Conn::tcp(cluster.gate_tcp((*uid as usize + 1) % 2), Wire::DEFAULT).await;
        assert_eq!(
            login(&mut fresh, *uid).await,
            *node,
            "uid {uid} keeps its node across the Redis restart"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_redis_waits_for_it() {
    let dir = TempDir::new("redis-later");
    let redis_port = free_port();
    let link = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let args = strings(&[
        "node",
        "--id",
        "early",
        "--link",
        &link,
        "--http",
        &admin,
        "--locator",
        &format!("redis://127.0.0.1:{redis_port}"),
    ]);
    let mut node = Proc::spawn("early", switchyard_binary(), &args, dir.path());
    // As in Kubernetes, where a cluster's pods start in no particular order: Redis comes a bit later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(node.is_running(), "the node waits for Redis instead of exiting");
    let _redis = Redis::start_on(redis_port, dir.path());
    eventually_true("the node to become ready", Duration::from_secs(10), || async {
        // The admin endpoint starts once the locator is connected.
        tokio::net::TcpStream::connect(&admin).await.is_ok()
            && http_get(&format!("http://{admin}"), "/readyz").await.0 == 200
    })
    .await;
    let log = node.log_text();
    assert!(log.contains("waiting for it"), "the wait is logged: {log}");

    // A URL that can never work is refused at once.
    let bad = strings(&["node", "--link", &link, "--locator", "redis://[::1"]);
    let mut refused = Proc::spawn("bad-url", switchyard_binary(), &bad, dir.path());
    let status = refused.wait_exit(Duration::from_secs(5)).expect("exits at once");
    assert!(!status.success());
    node.signal("TERM");
    node.wait_exit(Duration::from_secs(5));
}

/// Says `text` in `room` and reads up to the answer: whether the room's push (route 6) came first.
async fn say_and_hear(conn: &mut Conn, seq: i64, room: &str, text: &str) -> bool {
    conn.send(5, seq, json!({"room": room, "text": text})).await;
    let mut heard = false;
    loop {
        match conn.recv_within(Duration::from_secs(3)).await {
            Ok(Some(Packet::Data {
                route: 6, payload, ..
            })) => {
                heard |= serde_json::from_slice::<Value>(&payload).is_ok_and(|push| push["text"] == text);
            }
            Ok(Some(Packet::Data {
                route: 5,
                seq: answered,
                ..
            })) if answered == seq => return heard,
            Ok(Some(_)) => {}
            Ok(None) | Err(()) => return false,
        }
    }
}

//! A real cluster of processes: `switchyard gate`s and `switchyard node`s (the demo game, in the pools each
//! test names) linked over TCP through a static registry, and a real redis-server as the locator.

use std::time::Duration;

use serde_json::{Value, json};

use super::procs::{Proc, Redis, TempDir, free_port};
use super::{Conn, Wire, http_get, metric_sum, switchyard_binary};

pub struct Cluster {
    pub _dir: TempDir,
    pub redis: Redis,
    /// (id, process, admin URL) of every node, in the order they were named.
    pub nodes: Vec<(String, Proc, String)>,
    /// (process, tcp address, admin URL) of every gate.
    pub gates: Vec<(Proc, String, String)>,
    /// The link address of every node, in the order of `nodes`.
    pub links: Vec<String>,
}

/// Owned arguments for [`Proc::spawn`].
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

impl Cluster {
    /// Two gates and two nodes of the default pool (the whole demo on each node).
    pub async fn start(name: &str, node_drain_deadline: &str) -> Cluster {
        Cluster::start_pools(
            name,
            node_drain_deadline,
            2,
            &[("node-a", "game"), ("node-b", "game")],
        )
        .await
    }

    /// `gates` gates and one node per (id, pool), every gate linked to every node.
    pub async fn start_pools(
        name: &str,
        node_drain_deadline: &str,
        gates: usize,
        nodes: &[(&str, &str)],
    ) -> Cluster {
        Cluster::start_with(name, node_drain_deadline, gates, nodes, &[], &[]).await
    }

    /// [`Cluster::start_pools`] with more arguments for every gate and every node (e.g. `--link-tls-*`).
    pub async fn start_with(
        name: &str,
        node_drain_deadline: &str,
        gates: usize,
        nodes: &[(&str, &str)],
        gate_args: &[String],
        node_args: &[String],
    ) -> Cluster {
        let dir = TempDir::new(name);
        let redis = Redis::start(dir.path());
        let mut started = Vec::new();
        let mut links = Vec::new();
        for (id, pool) in nodes {
            let link = format!("127.0.0.1:{}", free_port());
            let admin = format!("127.0.0.1:{}", free_port());
            let args = strings(&[
                "node",
                "--id",
                id,
                "--pool",
                pool,
                "--link",
                &link,
                "--http",
                &admin,
                "--locator",
                &redis.url(),
                "--drain-deadline",
                node_drain_deadline,
            ]);
            let args = [args, node_args.to_vec()].concat();
            started.push((
                (*id).to_owned(),
                Proc::spawn(id, switchyard_binary(), &args, dir.path()),
                format!("http://{admin}"),
            ));
            links.push(link);
        }
        let mut gate_procs = Vec::new();
        for index in 0..gates {
            let id = format!("gate-{}", char::from(b'a' + index as u8));
            let tcp = format!("127.0.0.1:{}", free_port());
            let admin = format!("127.0.0.1:{}", free_port());
            let args = strings(&[
                "gate",
                "--id",
                &id,
                "--tcp",
                &tcp,
                "--ws",
                "",
                "--http",
                &admin,
                "--locator",
                &redis.url(),
                "--nodes",
                &links.join(","),
                "--gate-drain-deadline",
                "2s",
                // The static registry never drops a killed node: the link grace alone re-homes its players.
                "--node-link-grace",
                "1s",
            ]);
            let args = [args, gate_args.to_vec()].concat();
            gate_procs.push((
                Proc::spawn(&id, switchyard_binary(), &args, dir.path()),
                tcp,
                format!("http://{admin}"),
            ));
        }
        let cluster = Cluster {
            _dir: dir,
            redis,
            nodes: started,
            gates: gate_procs,
            links,
        };
        let expected = nodes.len() as f64;
        for (_, _, admin) in &cluster.gates {
            switchyard_testkit::eventually_true(
                "gate linked to every node",
                Duration::from_secs(15),
                || async {
                    let metrics = admin_metrics(admin).await;
                    metric_sum(&metrics, "switchyard_gate_node_links", &[]) == expected
                },
            )
            .await;
        }
        cluster
    }

    pub fn gate_tcp(&self, index: usize) -> &str {
        &self.gates[index].1
    }

    /// The admin URL of the node `id`.
    pub fn node_admin(&self, id: &str) -> &str {
        let (_, _, admin) = self
            .nodes
            .iter()
            .find(|(node, _, _)| node == id)
            .expect("a node of this cluster");
        admin
    }
}

/// A process's `/metrics`, or nothing while it is down.
pub async fn admin_metrics(admin: &str) -> String {
    match tokio::net::TcpStream::connect(admin.trim_start_matches("http://")).await {
        Ok(_) => http_get(admin, "/metrics").await.1,
        Err(_) => String::new(),
    }
}

/// Logs `uid` in (demo route 2); returns the node that answered.
pub async fn login(conn: &mut Conn, uid: i64) -> String {
    let reply = conn
        .request(2, 1, json!({"uid": uid, "name": format!("p{uid}")}))
        .await;
    assert_eq!(reply["code"], 0, "{reply}");
    reply["node"].as_str().expect("node").to_owned()
}

/// Demo route 3.
pub async fn whoami(conn: &mut Conn) -> Value {
    conn.request(3, 2, json!({})).await
}

/// Demo lobby route: queue for a match.
pub const QUEUE: i64 = 11;
/// Demo push: a match was made (on a battle node, by a lobby → battle call).
pub const MATCHED: i64 = 12;
/// Demo battle route: a move.
pub const MOVE: i64 = 13;
/// Demo push: the other player's move.
pub const MOVED: i64 = 14;
/// Demo route: log out.
pub const LOGOUT: i64 = 7;

/// A logged-in demo player.
pub struct Player {
    pub uid: i64,
    pub conn: Conn,
    pub seq: i64,
}

impl Player {
    /// Logs `uid` in on gate `gate`; returns the player and the node it is bound to.
    pub async fn login(cluster: &Cluster, gate: usize, uid: i64) -> (Player, String) {
        let mut conn = Conn::tcp(cluster.gate_tcp(gate), Wire::DEFAULT).await;
        let node = login(&mut conn, uid).await;
        (Player { uid, conn, seq: 10 }, node)
    }

    pub fn next_seq(&mut self) -> i64 {
        self.seq += 1;
        self.seq
    }

    /// Queues for `mode`; returns the reply and, if this player completed a pair, the match push.
    pub async fn queue(&mut self, mode: &str) -> Value {
        let seq = self.next_seq();
        self.conn.request(QUEUE, seq, json!({"mode": mode})).await
    }

    pub async fn make_move(&mut self, x: i64, y: i64) -> Value {
        let seq = self.next_seq();
        self.conn.request(MOVE, seq, json!({"x": x, "y": y})).await
    }

    pub async fn logout(&mut self) -> Value {
        let seq = self.next_seq();
        self.conn.request(LOGOUT, seq, json!({})).await
    }
}

/// Two players on different gates queue for `mode`; both get the match push; returns the battle node.
pub async fn matched(first: &mut Player, second: &mut Player, mode: &str) -> String {
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

//! A real cluster of processes: `switchyard gate`s and `switchyard node`s (the demo game, in the pools each
//! test names) linked over TCP through a static registry, and a real redis-server as the locator.

use std::time::Duration;

use serde_json::{Value, json};

use super::procs::{Proc, Redis, TempDir, free_port};
use super::{Conn, http_get, metric_sum, switchyard_binary};

pub struct Cluster {
    pub _dir: TempDir,
    pub redis: Redis,
    /// (id, process, admin URL) of every node, in the order they were named.
    pub nodes: Vec<(String, Proc, String)>,
    /// (process, tcp address, admin URL) of every gate.
    pub gates: Vec<(Proc, String, String)>,
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

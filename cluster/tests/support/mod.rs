//! Real `redis-server` processes for the locator tests: one server, or a Redis Cluster of three masters,
//! each on free loopback ports, in its own temporary directory, killed when dropped.
//!
//! The tests never skip: when `redis-server` or `redis-cli` is missing they fail and say to run
//! `scripts/redis.sh`.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::ErrorKind;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_testkit::{TempDir, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a server may take to answer `PING` after it was started.
const START_DEADLINE: Duration = Duration::from_secs(10);
const MISSING: &str = "is not on PATH: run scripts/redis.sh to install it (the Redis locator tests start \
                       their own redis-server processes and never skip)";

/// One `redis-server` process.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// With `--cluster-enabled`: the cluster bus port.
    cluster_bus_port: Option<u16>,
    dir: TempDir,
}

impl RedisServer {
    /// A standalone server on a free port.
    pub async fn start() -> RedisServer {
        Self::start_with(false).await
    }

    /// A server with cluster mode enabled (not yet part of a cluster).
    pub async fn start_cluster_node() -> RedisServer {
        Self::start_with(true).await
    }

    async fn start_with(cluster: bool) -> RedisServer {
        let mut last_failure = String::new();
        for _ in 0..3 {
            let port = free_port();
            let cluster_bus_port = cluster.then(free_port);
            let dir = TempDir::new(&format!("redis-{port}"));
            let mut server = RedisServer {
                child: None,
                port,
                cluster_bus_port,
                dir,
            };
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                // Most likely the port was taken meanwhile: try another.
                Err(failure) => last_failure = failure,
            }
        }
        panic!("redis-server did not start: {last_failure}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty (no persistence).
    pub async fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                Err(failure) if Instant::now() > deadline => {
                    panic!("redis-server did not restart on port {}: {failure}", self.port)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Sends one inline command and returns the raw reply.
    pub async fn command(&self, command: &str) -> String {
        inline_command(self.port, command)
            .await
            .unwrap_or_else(|error| panic!("{command} to Redis on port {}: {error}", self.port))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(bus) = self.cluster_bus_port {
            command
                .args(["--cluster-enabled", "yes"])
                .arg("--cluster-config-file")
                .arg(self.dir.path().join("nodes.conf"))
                .args(["--cluster-port", &bus.to_string()])
                .args(["--cluster-node-timeout", "5000"]);
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(error) if error.kind() == ErrorKind::NotFound => panic!("redis-server {MISSING}"),
            Err(error) => panic!("cannot start redis-server: {error}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "redis-server on port {} exited with {status}; log:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            if let Ok(reply) = inline_command(self.port, "PING").await
                && reply.starts_with("+PONG")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "redis-server on port {} did not answer PING within {START_DEADLINE:?}; log:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // The directory goes with the field (kept when the test failed).
        self.kill();
    }
}

/// A Redis Cluster of three masters, no replicas, every slot assigned.
#[derive(Debug)]
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_cluster_node().await);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let output = tokio::task::spawn_blocking(move || {
            let mut command = Command::new("redis-cli");
            command
                .arg("--cluster")
                .arg("create")
                .args(&addresses)
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .stdin(Stdio::null());
            command.output()
        })
        .await
        .expect("redis-cli task");
        let output = match output {
            Ok(output) => output,
            Err(error) if error.kind() == ErrorKind::NotFound => panic!("redis-cli {MISSING}"),
            Err(error) => panic!("cannot run redis-cli: {error}"),
        };
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok().await;
        cluster
    }

    /// Waits until every node reports `cluster_state:ok` and knows all three masters.
    async fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ok = true;
            for node in &self.nodes {
                let info = inline_command(node.port, "CLUSTER INFO")
                    .await
                    .unwrap_or_default();
                ok &= info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3");
            }
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster did not reach cluster_state:ok in 30s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `redis+cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,127.0.0.1:<p3>`.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }
}

/// Sends one inline command (RESP inline form) and reads one reply, with a short deadline.
pub async fn inline_command(port: u16, command: &str) -> std::io::Result<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(format!("{command}\r\n").as_bytes()).await?;
        let mut reply = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            reply.extend_from_slice(&buffer[..read]);
            if reply_complete(&reply) {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&reply).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::new(ErrorKind::TimedOut, "no reply within 2s")))
}

/// Whether `reply` holds one whole simple reply: a line, or a bulk string with its body.
fn reply_complete(reply: &[u8]) -> bool {
    let Some(line_end) = reply.windows(2).position(|pair| pair == b"\r\n") else {
        return false;
    };
    if reply.first() != Some(&b'$') {
        return true;
    }
    let length: i64 = std::str::from_utf8(&reply[1..line_end])
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(-1);
    length < 0 || reply.len() >= line_end + 2 + usize::try_from(length).unwrap_or(0) + 2
}

//! Test support: start real `switchyard` processes and talk to them with raw bytes.
//!
//! The wire codec here is written from docs/protocol.md on purpose, independently of the `protocol` crate, so
//! the tests check the gate against the specification rather than against our own encoder.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

pub mod certs;
pub mod cluster;
pub mod game;
pub mod image;
pub mod link;
pub mod procs;

/// The bytes of the `switchyard` binary under test.
pub fn switchyard_binary() -> &'static str {
    env!("CARGO_BIN_EXE_switchyard")
}

/// A running `switchyard dev`, killed when dropped.
pub struct Dev {
    child: Child,
    pub tcp: String,
    pub ws: String,
    pub admin: String,
}

impl Dev {
    /// Starts `switchyard dev` on ephemeral ports with extra flags and waits for its banner.
    pub fn start(extra: &[&str]) -> Dev {
        let mut child = Command::new(switchyard_binary())
            .args([
                "dev",
                "--tcp",
                "127.0.0.1:0",
                "--ws",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env("SWITCHYARD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("switchyard dev starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let (mut tcp, mut ws, mut admin) = (String::new(), String::new(), String::new());
        while admin.is_empty() {
            let line = lines.next().expect("banner line").expect("readable stdout");
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["clients", address, ..] if address.starts_with("tcp://") => tcp = address[6..].to_owned(),
                ["clients", address, ..] if address.starts_with("ws://") => ws = (*address).to_owned(),
                ["admin", address, ..] => admin = (*address).to_owned(),
                _ => {}
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Dev {
            child,
            tcp,
            ws,
            admin,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status (at most `within`).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        http_get(&self.admin, "/metrics").await.1
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use switchyard_testkit::http_get;

/// Sum of a metric's samples whose line contains every one of `filters`.
pub fn metric_sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter(|line| filters.iter().all(|filter| line.contains(filter)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Packet settings as the spec describes them.
#[derive(Debug, Clone, Copy)]
pub struct Wire {
    pub little: bool,
    pub route_bytes: usize,
    pub seq_bytes: usize,
}

impl Wire {
    pub const DEFAULT: Wire = Wire {
        little: false,
        route_bytes: 2,
        seq_bytes: 2,
    };
    pub const LE_ROUTE4_SEQ0: Wire = Wire {
        little: true,
        route_bytes: 4,
        seq_bytes: 0,
    };

    pub fn flags(&self) -> Vec<&'static str> {
        let mut flags = vec![];
        if self.little {
            flags.extend(["--byte-order", "little"]);
        }
        flags.extend(["--route-bytes", ["", "1", "2", "", "4"][self.route_bytes]]);
        flags.extend(["--seq-bytes", ["0", "1", "2", "", "4"][self.seq_bytes]]);
        flags
    }

    fn int(&self, value: i64, width: usize) -> Vec<u8> {
        let bytes = value.to_be_bytes();
        let mut field = bytes[8 - width..].to_vec();
        if self.little {
            field.reverse();
        }
        field
    }

    fn read_int(&self, bytes: &[u8]) -> i64 {
        let mut ordered = bytes.to_vec();
        if self.little {
            ordered.reverse();
        }
        let unsigned = ordered.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let shift = 64 - 8 * bytes.len() as u32;
        if bytes.is_empty() {
            0
        } else {
            ((unsigned << shift) as i64) >> shift
        }
    }

    pub fn size(&self, size: u32) -> Vec<u8> {
        self.int(i64::from(size), 4)
    }

    /// A data packet: size, header 0, route, seq, payload.
    pub fn data(&self, route: i64, seq: i64, payload: &[u8]) -> Vec<u8> {
        let size = 1 + self.route_bytes + self.seq_bytes + payload.len();
        let mut packet = self.size(size as u32);
        packet.push(0);
        packet.extend(self.int(route, self.route_bytes));
        packet.extend(self.int(seq, self.seq_bytes));
        packet.extend_from_slice(payload);
        packet
    }

    /// The uplink heartbeat: the header alone.
    pub fn heartbeat(&self) -> Vec<u8> {
        let mut packet = self.size(1);
        packet.push(0x80);
        packet
    }

    /// Parses one whole packet (size field included).
    pub fn parse(&self, packet: &[u8]) -> Packet {
        let size = self.read_int(&packet[..4]) as usize;
        assert_eq!(size, packet.len() - 4, "size field counts the bytes after it");
        let header = packet[4];
        if header & 0x80 != 0 {
            return Packet::Heartbeat {
                extcode: header & 0x7f,
            };
        }
        let route_end = 5 + self.route_bytes;
        let seq_end = route_end + self.seq_bytes;
        Packet::Data {
            route: self.read_int(&packet[5..route_end]),
            seq: self.read_int(&packet[route_end..seq_end]),
            payload: packet[seq_end..].to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    Heartbeat { extcode: u8 },
    Data { route: i64, seq: i64, payload: Vec<u8> },
}

impl Packet {
    pub fn json(&self) -> serde_json::Value {
        match self {
            Packet::Data { payload, .. } => serde_json::from_slice(payload).expect("JSON payload"),
            other => panic!("expected a data packet, got {other:?}"),
        }
    }
}

/// How long a test waits for one expected packet.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A raw client over TCP or WebSocket.
pub enum Conn {
    Tcp {
        stream: TcpStream,
        wire: Wire,
        buf: Vec<u8>,
    },
    Ws {
        ws: Box<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>>,
        wire: Wire,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transport {
    Tcp,
    Ws,
}

impl Conn {
    pub async fn open(dev: &Dev, transport: Transport, wire: Wire) -> Conn {
        match transport {
            Transport::Tcp => Conn::tcp(&dev.tcp, wire).await,
            Transport::Ws => Conn::ws(&dev.ws, wire).await,
        }
    }

    pub async fn tcp(address: &str, wire: Wire) -> Conn {
        let stream = TcpStream::connect(address).await.expect("gate accepts TCP");
        stream.set_nodelay(true).expect("nodelay");
        Conn::Tcp {
            stream,
            wire,
            buf: Vec::new(),
        }
    }

    /// [`Conn::tcp`] from a chosen loopback source address (127.0.0.2 and so on: Linux routes all of
    /// 127.0.0.0/8 to the loopback interface), to play several client hosts.
    pub async fn tcp_from(source: std::net::Ipv4Addr, address: &str, wire: Wire) -> Conn {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(std::net::SocketAddr::from((source, 0)))
            .expect("bind the source address");
        let target = address.parse().expect("a socket address");
        let stream = socket.connect(target).await.expect("gate accepts TCP");
        stream.set_nodelay(true).expect("nodelay");
        Conn::Tcp {
            stream,
            wire,
            buf: Vec::new(),
        }
    }

    pub async fn ws(url: &str, wire: Wire) -> Conn {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("gate accepts WebSocket");
        Conn::Ws {
            ws: Box::new(ws),
            wire,
        }
    }

    pub fn wire(&self) -> Wire {
        match self {
            Conn::Tcp { wire, .. } | Conn::Ws { wire, .. } => *wire,
        }
    }

    /// Sends raw bytes: on TCP as they are, on WebSocket as one binary message.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        match self {
            Conn::Tcp { stream, .. } => stream.write_all(bytes).await.expect("write"),
            Conn::Ws { ws, .. } => ws
                .send(Message::Binary(bytes.to_vec().into()))
                .await
                .expect("send"),
        }
    }

    pub async fn send_text_frame(&mut self, text: &str) {
        match self {
            Conn::Ws { ws, .. } => ws.send(Message::Text(text.into())).await.expect("send"),
            Conn::Tcp { .. } => panic!("text frames are WebSocket only"),
        }
    }

    pub async fn send(&mut self, route: i64, seq: i64, json: serde_json::Value) {
        let packet = self.wire().data(route, seq, json.to_string().as_bytes());
        self.send_raw(&packet).await;
    }

    /// The next packet, or `None` when the server closed the connection. Panics after [`READ_TIMEOUT`].
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(READ_TIMEOUT, self.recv_inner())
            .await
            .expect("a packet within the timeout")
    }

    /// The next packet within `within`: `Err(())` on timeout.
    pub async fn recv_within(&mut self, within: Duration) -> Result<Option<Packet>, ()> {
        tokio::time::timeout(within, self.recv_inner())
            .await
            .map_err(|_| ())
    }

    async fn recv_inner(&mut self) -> Option<Packet> {
        match self {
            Conn::Tcp { stream, wire, buf } => loop {
                if buf.len() >= 4 {
                    let size = wire.read_int(&buf[..4]) as usize;
                    if buf.len() >= 4 + size {
                        let packet: Vec<u8> = buf.drain(..4 + size).collect();
                        return Some(wire.parse(&packet));
                    }
                }
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            },
            Conn::Ws { ws, wire } => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(data))) => return Some(wire.parse(&data)),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => {}
                }
            },
        }
    }

    /// Sends a request and returns the response with the same route and seq, skipping pushes.
    pub async fn request(&mut self, route: i64, seq: i64, json: serde_json::Value) -> serde_json::Value {
        self.send(route, seq, json).await;
        self.expect_data(route, seq).await
    }

    /// Waits for a data packet with this route and seq (with no seq field, the route alone matches).
    pub async fn expect_data(&mut self, route: i64, seq: i64) -> serde_json::Value {
        loop {
            match self.recv().await {
                Some(packet @ Packet::Data { route: r, seq: s, .. })
                    if r == route && (s == seq || self.wire().seq_bytes == 0) =>
                {
                    return packet.json();
                }
                Some(_) => {}
                None => panic!("connection closed while waiting for route {route} seq {seq}"),
            }
        }
    }

    /// Waits for one data packet of each (route, seq), in any order, skipping others; returns their payloads
    /// in the order asked.
    pub async fn expect_each(&mut self, wanted: &[(i64, i64)]) -> Vec<serde_json::Value> {
        let mut found: Vec<Option<serde_json::Value>> = vec![None; wanted.len()];
        while found.iter().any(Option::is_none) {
            match self.recv().await {
                Some(packet @ Packet::Data { route, seq, .. }) => {
                    if let Some(at) = wanted
                        .iter()
                        .zip(&found)
                        .position(|(&(r, s), seen)| seen.is_none() && r == route && s == seq)
                    {
                        found[at] = Some(packet.json());
                    }
                }
                Some(_) => {}
                None => panic!("connection closed while waiting for {wanted:?}"),
            }
        }
        found.into_iter().flatten().collect()
    }

    /// Asserts that nothing arrives for `within` and the connection stays open.
    pub async fn expect_silence(&mut self, within: Duration) {
        match self.recv_within(within).await {
            Err(()) => {}
            Ok(Some(packet)) => panic!("expected silence, got {packet:?}"),
            Ok(None) => panic!("expected silence, but the server closed the connection"),
        }
    }

    /// Waits until the server closes the connection, skipping packets; returns how long it took.
    pub async fn expect_closed(&mut self, within: Duration) -> Duration {
        let started = std::time::Instant::now();
        loop {
            match self.recv_within(within.saturating_sub(started.elapsed())).await {
                Ok(None) => return started.elapsed(),
                Ok(Some(_)) => {}
                Err(()) => panic!("connection still open after {within:?}"),
            }
        }
    }
}

/// A PROXY protocol v2 header, TCP over IPv4, written out from the specification (not from the gate's
/// code): what an L4 load balancer sends first on each connection it passes on.
pub fn proxy_v2(source: std::net::SocketAddrV4) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(0x21); // version 2, command PROXY
    header.push(0x11); // AF_INET, STREAM
    header.extend_from_slice(&12u16.to_be_bytes());
    header.extend_from_slice(&source.ip().octets());
    header.extend_from_slice(&[192, 0, 2, 1]); // destination: the load balancer's address
    header.extend_from_slice(&source.port().to_be_bytes());
    header.extend_from_slice(&3553u16.to_be_bytes());
    header
}

/// A TCP connection to the gate at `address` as a load balancer makes it: `header` first, then the player's
/// packets.
pub async fn behind_balancer(address: &str, header: &[u8]) -> Conn {
    let mut conn = Conn::tcp(address, Wire::DEFAULT).await;
    let Conn::Tcp { stream, .. } = &mut conn else {
        unreachable!("Conn::tcp is TCP")
    };
    stream.write_all(header).await.expect("PROXY header sent");
    conn
}

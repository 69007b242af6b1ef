//! A tiny raw-protocol server for the client's tests, over TCP or WebSocket, speaking the packet codec
//! directly. For each data packet it echoes the payload with the same route and seq, except:
//!
//! - `noreply`: no answer; `close`: closes the connection;
//! - `push`: first sends a push (`pushed`, seq 0) on the same route; `reconnect`: first sends a
//!   heartbeat with extcode RECONNECT_ELSEWHERE;
//! - `delay:<ms>:<tag>`: answers after `ms` milliseconds (so answers come out of order);
//! - a JSON `{"message": s}`: answers `{"code":0,"message":s}` on route 1, `{"code":1,...}` on route 2,
//!   nothing on route 3.
//!
//! Heartbeats are answered with a heartbeat carrying the server time.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use switchyard_protocol::{Frame, PacketConfig, extcode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Ws,
}

#[derive(Debug, Default)]
pub struct Seen {
    /// (route, seq) of every data packet received, in order.
    pub packets: Mutex<Vec<(i32, i32)>>,
    pub heartbeats: AtomicUsize,
    pub connections: AtomicUsize,
}

#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    pub kind: Kind,
    pub seen: Arc<Seen>,
}

impl TestServer {
    pub async fn start(kind: Kind, config: PacketConfig) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let shared = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::Relaxed);
                let seen = Arc::clone(&shared);
                tokio::spawn(async move {
                    stream.set_nodelay(true).unwrap();
                    match kind {
                        Kind::Tcp => serve_tcp(stream, config, seen).await,
                        Kind::Ws => serve_ws(stream, config, seen).await,
                    }
                });
            }
        });
        TestServer { addr, kind, seen }
    }

    /// `host:port` for TCP, `ws://host:port/` for WebSocket.
    pub fn target(&self) -> String {
        match self.kind {
            Kind::Tcp => self.addr.to_string(),
            Kind::Ws => format!("ws://{}/", self.addr),
        }
    }
}

enum Out {
    Packet(Bytes),
    Close,
}

async fn serve_tcp(stream: TcpStream, config: PacketConfig, seen: Arc<Seen>) {
    let (mut read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Out>(1024);
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Out::Packet(packet) => {
                    if write.write_all(&packet).await.is_err() {
                        return;
                    }
                }
                Out::Close => {
                    let _ = write.shutdown().await;
                    return;
                }
            }
        }
    });
    let mut decoder = config.decoder();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'read: loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if !handle(frame, &config, &seen, &tx) {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(_) => break 'read,
            }
        }
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(tx);
    let _ = writer.await;
}

async fn serve_ws(stream: TcpStream, config: PacketConfig, seen: Arc<Seen>) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Out>(1024);
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Out::Packet(packet) => {
                    if sink.send(Message::Binary(packet)).await.is_err() {
                        return;
                    }
                }
                Out::Close => {
                    let _ = sink.close().await;
                    return;
                }
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        let Message::Binary(message) = message else {
            continue;
        };
        let Ok(frame) = config.parse_message(message) else {
            continue;
        };
        if !handle(frame, &config, &seen, &tx) {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Answers one frame. Returns false when the connection must close.
fn handle(frame: Frame, config: &PacketConfig, seen: &Seen, tx: &mpsc::Sender<Out>) -> bool {
    let send = |packet: Bytes| {
        let _ = tx.try_send(Out::Packet(packet));
    };
    match frame {
        Frame::Heartbeat { .. } => {
            seen.heartbeats.fetch_add(1, Ordering::Relaxed);
            send(config.heartbeat_packet(0, Some(1_700_000_000_000_000_000)));
            true
        }
        Frame::Data(data) => {
            let (route, seq, payload) = (data.route(), data.seq(), data.payload());
            seen.packets.lock().push((route, seq));
            let reply = |payload: &[u8]| config.data_packet(route, seq, payload).unwrap();
            match &payload[..] {
                b"noreply" => {}
                b"close" => {
                    let _ = tx.try_send(Out::Close);
                    return false;
                }
                b"push" => {
                    send(config.data_packet(route, 0, b"pushed").unwrap());
                    send(reply(&payload));
                }
                b"reconnect" => {
                    send(config.heartbeat_packet(extcode::RECONNECT_ELSEWHERE, None));
                    send(reply(&payload));
                }
                p if p.starts_with(b"delay:") => {
                    let text = std::str::from_utf8(&p[6..]).unwrap();
                    let ms: u64 = text.split(':').next().unwrap().parse().unwrap();
                    let packet = reply(&payload);
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        let _ = tx.send(Out::Packet(packet)).await;
                    });
                }
                p if p.starts_with(br#"{"message""#) => {
                    let request: serde_json::Value = serde_json::from_slice(p).unwrap();
                    let code = match route {
                        1 => 0,
                        2 => 1,
                        _ => return true,
                    };
                    let answer = serde_json::json!({"code": code, "message": request["message"]});
                    send(reply(&serde_json::to_vec(&answer).unwrap()));
                }
                _ => send(reply(&payload)),
            }
            true
        }
        Frame::Empty | Frame::Short { .. } => true,
    }
}

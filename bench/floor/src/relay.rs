//! The floor's gate: accepts clients on TCP and/or WebSocket and multiplexes all of them onto one TCP
//! link to the echo process. Each client gets a u32 id; a client's reader wraps every packet it read in
//! one go into link frames and hands them to the link writer in one buffer; the link reader hands each
//! answer (a slice of its read buffer, no copy) to the client's writer. No routing, no sessions, no
//! metrics: the least a gate in this architecture must do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::frame::{self, ID_BYTES, READ_CHUNK, SIZE_BYTES};

/// Answers queued for one client before it is dropped as too slow.
const CLIENT_QUEUE: usize = 1024;
/// Read batches queued for the link writer.
const LINK_QUEUE: usize = 4096;
/// Answers a client writer takes from its queue at once.
const WRITE_BATCH: usize = 64;

/// Flags of `switchyard-floor relay`.
#[derive(Debug, clap::Args)]
pub(crate) struct RelayArgs {
    /// TCP listen address for clients.
    #[arg(long)]
    tcp: Option<String>,
    /// WebSocket listen address for clients (any path).
    #[arg(long)]
    ws: Option<String>,
    /// The echo process's link address.
    #[arg(long)]
    upstream: String,
    /// Largest packet (bytes after the size field).
    #[arg(long, default_value_t = 65536)]
    max_packet_bytes: usize,
}

/// What every connection shares: the link's queue and the clients' queues by id.
#[derive(Debug)]
struct Hub {
    link: mpsc::Sender<Bytes>,
    clients: Mutex<HashMap<u32, mpsc::Sender<Bytes>>>,
    next_id: AtomicU32,
    max: usize,
}

impl Hub {
    fn register(&self) -> (u32, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        (id, rx)
    }

    fn unregister(&self, id: u32) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// Queues an answer for a client; a gone or too slow client loses it (and a slow one its place).
    fn deliver(&self, id: u32, packet: Bytes) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(&id)
            && client.try_send(packet).is_err()
        {
            clients.remove(&id);
        }
    }
}

/// Appends one link frame for `packet` (the client's packet after its size field) to `out`.
fn put_link_frame(out: &mut BytesMut, id: u32, packet: &[u8]) {
    frame::put_size(out, ID_BYTES + SIZE_BYTES + packet.len());
    out.extend_from_slice(&id.to_be_bytes());
    frame::put_size(out, packet.len());
    out.extend_from_slice(packet);
}

pub(crate) async fn run(args: RelayArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.tcp.is_some() || args.ws.is_some(),
        "relay needs --tcp or --ws"
    );
    let upstream = TcpStream::connect(&args.upstream).await?;
    upstream.set_nodelay(true)?;
    let (link_read, link_write) = upstream.into_split();
    let (link_tx, link_rx) = mpsc::channel(LINK_QUEUE);
    let hub = Arc::new(Hub {
        link: link_tx,
        clients: Mutex::new(HashMap::new()),
        next_id: AtomicU32::new(1),
        max: args.max_packet_bytes,
    });
    let mut tasks = vec![
        tokio::spawn(link_writer(link_write, link_rx)),
        tokio::spawn(link_reader(link_read, Arc::clone(&hub))),
    ];
    for (addr, ws) in [(args.tcp, false), (args.ws, true)] {
        let Some(addr) = addr else { continue };
        let listener = TcpListener::bind(&addr).await?;
        println!(
            "relay listening on {} ({})",
            listener.local_addr()?,
            if ws { "ws" } else { "tcp" }
        );
        tasks.push(tokio::spawn(accept(listener, ws, Arc::clone(&hub))));
    }
    let (done, _, _) = futures_util::future::select_all(tasks).await;
    done?
}

async fn accept(listener: TcpListener, ws: bool, hub: Arc<Hub>) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let hub = Arc::clone(&hub);
        tokio::spawn(async move {
            let (id, rx) = hub.register();
            let served = if ws {
                serve_ws(stream, id, rx, &hub).await
            } else {
                serve_tcp(stream, id, rx, &hub).await
            };
            hub.unregister(id);
            if let Err(err) = served {
                eprintln!("relay: client {id} dropped: {err:#}");
            }
        });
    }
}

async fn serve_tcp(stream: TcpStream, id: u32, rx: mpsc::Receiver<Bytes>, hub: &Hub) -> anyhow::Result<()> {
    let (mut read, write) = stream.into_split();
    let writer = tokio::spawn(tcp_writer(write, rx));
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut batch = BytesMut::new();
    let result = async {
        loop {
            if read.read_buf(&mut input).await? == 0 {
                return Ok(());
            }
            while let Some(packet) = frame::split(&mut input, hub.max)? {
                put_link_frame(&mut batch, id, &packet);
            }
            if !batch.is_empty() {
                hub.link.send(batch.split().freeze()).await?;
            }
            if input.capacity() - input.len() < READ_CHUNK / 4 {
                input.reserve(READ_CHUNK);
            }
        }
    }
    .await;
    writer.abort();
    result
}

async fn tcp_writer(mut write: OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut out = BytesMut::new();
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        for packet in batch.drain(..) {
            out.extend_from_slice(&packet);
        }
        write.write_all(&out).await?;
        out.clear();
    }
    Ok(())
}

async fn serve_ws(
    stream: TcpStream,
    id: u32,
    mut rx: mpsc::Receiver<Bytes>,
    hub: &Hub,
) -> anyhow::Result<()> {
    let ws = tokio_tungstenite::accept_async(stream).await?;
    let (mut sink, mut source) = ws.split();
    let writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
            for packet in batch.drain(..) {
                sink.feed(Message::Binary(packet)).await?;
            }
            sink.flush().await?;
        }
        anyhow::Ok(())
    });
    let mut batch = BytesMut::new();
    let result = async {
        while let Some(message) = source.next().await {
            match message? {
                Message::Binary(packet)
                    if packet.len() >= SIZE_BYTES && packet.len() - SIZE_BYTES <= hub.max =>
                {
                    put_link_frame(&mut batch, id, &packet[SIZE_BYTES..]);
                    hub.link.send(batch.split().freeze()).await?;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        anyhow::Ok(())
    }
    .await;
    writer.abort();
    result
}

async fn link_writer(mut write: OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut out = BytesMut::new();
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        for chunk in batch.drain(..) {
            out.extend_from_slice(&chunk);
        }
        write.write_all(&out).await?;
        out.clear();
    }
    anyhow::bail!("every client sender is gone")
}

async fn link_reader(mut read: OwnedReadHalf, hub: Arc<Hub>) -> anyhow::Result<()> {
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let max = hub.max + ID_BYTES + SIZE_BYTES;
    loop {
        anyhow::ensure!(
            read.read_buf(&mut input).await? > 0,
            "the echo process closed the link"
        );
        while let Some(mut frame) = frame::split(&mut input, max)? {
            anyhow::ensure!(frame.len() >= ID_BYTES + SIZE_BYTES, "short link frame");
            let id = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
            hub.deliver(id, frame.split_off(ID_BYTES).freeze());
        }
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
    }
}

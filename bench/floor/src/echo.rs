//! The floor's node: answers each data packet with the echo route's answer, decoding the request's JSON
//! `{"message": s}` and encoding `{"code":0,"message": s}` with serde_json, as the demo node and due's
//! node do. It serves relay links (`--link`, frames carry a connection id) and, for the direct run,
//! clients themselves (`--direct`, plain packets). Answers to everything read in one go leave in one write.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::frame::{self, ID_BYTES, READ_CHUNK, SIZE_BYTES};

/// Flags of `switchyard-floor echo`.
#[derive(Debug, clap::Args)]
pub(crate) struct EchoArgs {
    /// Listen address for relay links (frames with a connection id).
    #[arg(long)]
    link: Option<String>,
    /// Listen address for clients (plain packets, no hop).
    #[arg(long)]
    direct: Option<String>,
    /// Bytes of the route field.
    #[arg(long, default_value_t = 4)]
    route_bytes: usize,
    /// Bytes of the seq field.
    #[arg(long, default_value_t = 4)]
    seq_bytes: usize,
    /// Largest packet (bytes after the size field).
    #[arg(long, default_value_t = 65536)]
    max_packet_bytes: usize,
}

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    message: Cow<'a, str>,
}

#[derive(Serialize)]
struct Answer<'a> {
    code: i32,
    message: &'a str,
}

/// How one kind of connection frames its packets.
#[derive(Debug, Clone, Copy)]
struct Framing {
    /// A relay link: each frame is the connection id and then a whole packet (its size field included).
    link: bool,
    /// Header byte, route and seq.
    header: usize,
    max: usize,
}

impl Framing {
    /// Bytes of a frame before the packet header.
    fn prefix(self) -> usize {
        if self.link { ID_BYTES + SIZE_BYTES } else { 0 }
    }
}

pub(crate) async fn run(args: EchoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.link.is_some() || args.direct.is_some(),
        "echo needs --link or --direct"
    );
    let header = 1 + args.route_bytes + args.seq_bytes;
    let mut tasks = Vec::new();
    for (addr, link) in [(args.link, true), (args.direct, false)] {
        let Some(addr) = addr else { continue };
        let listener = TcpListener::bind(&addr).await?;
        println!("echo listening on {}", listener.local_addr()?);
        let framing = Framing {
            link,
            header,
            max: args.max_packet_bytes + ID_BYTES + SIZE_BYTES,
        };
        tasks.push(tokio::spawn(accept(listener, framing)));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

async fn accept(listener: TcpListener, framing: Framing) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            if let Err(err) = serve(stream, framing).await {
                eprintln!("echo: connection dropped: {err:#}");
            }
        });
    }
}

async fn serve(mut stream: TcpStream, framing: Framing) -> anyhow::Result<()> {
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output = BytesMut::with_capacity(READ_CHUNK);
    loop {
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        while let Some(packet) = frame::split(&mut input, framing.max)? {
            answer(&packet, framing, &mut output)?;
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
    }
}

/// Appends the answer to one frame (size, on a link the id and the packet's size, then header, route,
/// seq and the body) to `out`; heartbeats and packets too short to carry a body get none.
fn answer(packet: &[u8], framing: Framing, out: &mut BytesMut) -> anyhow::Result<()> {
    let prefix = framing.prefix();
    let head = prefix + framing.header;
    let Some(&flags) = packet.get(prefix) else {
        return Ok(());
    };
    if flags & 0x80 != 0 || packet.len() <= head {
        return Ok(());
    }
    let request: Request<'_> = serde_json::from_slice(&packet[head..])?;
    let at = out.len();
    out.put_bytes(0, SIZE_BYTES);
    if framing.link {
        out.extend_from_slice(&packet[..ID_BYTES]);
        out.put_bytes(0, SIZE_BYTES);
    }
    out.extend_from_slice(&packet[prefix..head]);
    let mut body = out.split_off(out.len()).writer();
    serde_json::to_writer(
        &mut body,
        &Answer {
            code: 0,
            message: &request.message,
        },
    )?;
    out.unsplit(body.into_inner());
    let len = out.len() - at - SIZE_BYTES;
    out[at..at + SIZE_BYTES].copy_from_slice(&u32::try_from(len)?.to_be_bytes());
    if framing.link {
        let inner = at + SIZE_BYTES + ID_BYTES;
        let packet_len = u32::try_from(len - ID_BYTES - SIZE_BYTES)?;
        out[inner..inner + SIZE_BYTES].copy_from_slice(&packet_len.to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_echo_route() {
        let framing = Framing {
            link: true,
            header: 9,
            max: 1000,
        };
        let request = br#"{"message":"abc"}"#;
        let body = br#"{"code":0,"message":"abc"}"#;
        // id 7, the packet's size, header 0, route 1, seq 5
        let mut packet = vec![0, 0, 0, 7, 0, 0, 0, 26, 0, 0, 0, 0, 1, 0, 0, 0, 5];
        packet.extend_from_slice(request);
        let mut out = BytesMut::new();
        answer(&packet, framing, &mut out).expect("answer");
        let mut expected = Vec::new();
        expected.extend_from_slice(&u32::try_from(8 + 9 + body.len()).expect("len").to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 7]);
        expected.extend_from_slice(&u32::try_from(9 + body.len()).expect("len").to_be_bytes());
        expected.extend_from_slice(&packet[8..17]);
        expected.extend_from_slice(body);
        assert_eq!(&out[..], &expected[..]);

        let direct = Framing {
            link: false,
            ..framing
        };
        out.clear();
        answer(&packet[8..], direct, &mut out).expect("direct answer");
        assert_eq!(&out[..], &expected[8..]);

        let mut heartbeat = vec![0, 0, 0, 7, 0, 0, 0, 9, 0x80];
        heartbeat.extend_from_slice(&[0; 8]);
        out.clear();
        answer(&heartbeat, framing, &mut out).expect("heartbeat");
        assert!(out.is_empty());
        assert!(answer(&packet[..18], framing, &mut out).is_err());
    }
}

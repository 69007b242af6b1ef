//! PROXY protocol version 2 on the client listeners (`--proxy-protocol`): behind an L4 load balancer that
//! speaks it, every connection starts with a binary header naming the client's address, which then counts
//! for the per-address cap and is what nodes see as the player's address. Only version 2 (binary) is
//! accepted; a connection without a valid header is refused, since with the option on a missing header means
//! something other than the load balancer reached the gate. `LOCAL` headers (the load balancer's own health
//! checks) keep the connection's own address. The header is read exactly, never past its end, so the
//! client's first bytes stay in the stream.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 bytes every version 2 header starts with.
const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Longest address block (addresses and TLVs) accepted: well above what load balancers send, and a bound
/// on what one connection makes the gate read before anything else.
const MAX_BLOCK: usize = 512;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyHeaderError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("no PROXY protocol v2 signature")]
    Signature,
    #[error("PROXY protocol version {0} (only 2 is accepted)")]
    Version(u8),
    #[error("unknown PROXY command {0}")]
    Command(u8),
    #[error("PROXY address block of {0} bytes (at most {MAX_BLOCK})")]
    TooLong(usize),
    #[error("PROXY address block of {len} bytes is too short for family {family:#x}")]
    TooShort { family: u8, len: usize },
}

/// Reads one PROXY v2 header from `stream` and returns the client's address: the source it names, or
/// `own` for a `LOCAL` header or an address family other than TCP over IPv4 or IPv6.
pub(crate) async fn read_header<S>(stream: &mut S, own: SocketAddr) -> Result<SocketAddr, ProxyHeaderError>
where
    S: AsyncRead + Unpin,
{
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed).await?;
    if fixed[..12] != SIGNATURE {
        return Err(ProxyHeaderError::Signature);
    }
    let version = fixed[12] >> 4;
    if version != 2 {
        return Err(ProxyHeaderError::Version(version));
    }
    let command = fixed[12] & 0x0F;
    let family = fixed[13];
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_BLOCK {
        return Err(ProxyHeaderError::TooLong(len));
    }
    let mut block = [0u8; MAX_BLOCK];
    let block = &mut block[..len];
    stream.read_exact(block).await?;
    match command {
        // LOCAL: the load balancer itself; the addresses, if any, mean nothing.
        0x0 => return Ok(own),
        0x1 => {}
        other => return Err(ProxyHeaderError::Command(other)),
    }
    let too_short = || ProxyHeaderError::TooShort { family, len };
    let port = |bytes: &[u8]| u16::from_be_bytes([bytes[0], bytes[1]]);
    match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let a = block.get(..12).ok_or_else(too_short)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(SocketAddr::new(IpAddr::V4(ip), port(&a[8..10])))
        }
        // TCP over IPv6.
        0x21 => {
            let a = block.get(..36).ok_or_else(too_short)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            Ok(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port(&a[32..34]),
            ))
        }
        // UNSPEC, UDP, UNIX sockets: nothing usable as a player's address.
        _ => Ok(own),
    }
}

/// A PROXY v2 header for TCP from `source` to `destination`.
#[cfg(test)]
fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut header = SIGNATURE.to_vec();
    header.push(0x21); // version 2, PROXY
    match (source, destination) {
        (SocketAddr::V4(source), SocketAddr::V4(destination)) => {
            header.push(0x11);
            header.extend_from_slice(&12u16.to_be_bytes());
            header.extend_from_slice(&source.ip().octets());
            header.extend_from_slice(&destination.ip().octets());
            header.extend_from_slice(&source.port().to_be_bytes());
            header.extend_from_slice(&destination.port().to_be_bytes());
        }
        (source, destination) => {
            let v6 = |address: SocketAddr| match address.ip() {
                IpAddr::V4(ip) => ip.to_ipv6_mapped(),
                IpAddr::V6(ip) => ip,
            };
            header.push(0x21);
            header.extend_from_slice(&36u16.to_be_bytes());
            header.extend_from_slice(&v6(source).octets());
            header.extend_from_slice(&v6(destination).octets());
            header.extend_from_slice(&source.port().to_be_bytes());
            header.extend_from_slice(&destination.port().to_be_bytes());
        }
    }
    header
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const OWN: &str = "10.0.0.9:40000";

    async fn read(bytes: &[u8]) -> Result<(SocketAddr, Vec<u8>), ProxyHeaderError> {
        let mut stream = bytes;
        let address = read_header(&mut stream, OWN.parse().unwrap()).await?;
        Ok((address, stream.to_vec()))
    }

    #[tokio::test]
    async fn the_source_address_is_read_and_nothing_more() {
        for source in ["203.0.113.7:5555", "[2001:db8::7]:5555"] {
            let source: SocketAddr = source.parse().unwrap();
            let mut bytes = v2_header(source, "192.0.2.1:3553".parse().unwrap());
            bytes.extend_from_slice(b"first client bytes");
            let (address, rest) = read(&bytes).await.unwrap();
            assert_eq!(address, source);
            assert_eq!(rest, b"first client bytes");
        }
    }

    #[tokio::test]
    async fn local_headers_keep_the_connections_own_address() {
        let mut bytes = SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x20, 0x00, 0, 0]);
        let (address, _) = read(&bytes).await.unwrap();
        assert_eq!(address, OWN.parse().unwrap());
    }

    #[tokio::test]
    async fn bad_headers_are_refused() {
        let good = v2_header(
            "203.0.113.7:5555".parse().unwrap(),
            "192.0.2.1:3553".parse().unwrap(),
        );
        assert!(matches!(
            read(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n").await,
            Err(ProxyHeaderError::Signature)
        ));
        let mut v1 = good.clone();
        v1[12] = 0x11;
        assert!(matches!(read(&v1).await, Err(ProxyHeaderError::Version(1))));
        let mut command = good.clone();
        command[12] = 0x2F;
        assert!(matches!(
            read(&command).await,
            Err(ProxyHeaderError::Command(0xF))
        ));
        let mut long = good.clone();
        long[14..16].copy_from_slice(&600u16.to_be_bytes());
        assert!(matches!(read(&long).await, Err(ProxyHeaderError::TooLong(600))));
        let mut short = good.clone();
        short[14..16].copy_from_slice(&4u16.to_be_bytes());
        short.truncate(20);
        assert!(matches!(
            read(&short).await,
            Err(ProxyHeaderError::TooShort { .. })
        ));
        assert!(matches!(read(&good[..20]).await, Err(ProxyHeaderError::Io(_))));
    }
}

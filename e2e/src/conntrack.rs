//! Which pod a client connection to a Service address reached. A player connects to the gate Service's
//! ClusterIP (or a NodePort) and kube-proxy's iptables rules DNAT it to one gate pod; the socket itself
//! only knows the Service address. The test process lives in the node's network namespace, so the kernel's
//! tables say the rest: `/proc/net/tcp` lists this namespace's TCP sockets (the client's local port), and
//! `/proc/net/nf_conntrack` the translation of each connection (the reply comes from the pod).
//!
//! The tables are read, never written; the parsers are pure and bounded by the tables' size (a few
//! thousand lines in a test).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

const TCP_TABLE: &str = "/proc/net/tcp";
const CONNTRACK_TABLE: &str = "/proc/net/nf_conntrack";
/// `st` of an established socket in `/proc/net/tcp`.
const ESTABLISHED: &str = "01";

/// Local ports of this namespace's established IPv4 TCP connections to `remote`.
pub fn established_ports(remote: SocketAddrV4) -> BTreeSet<u16> {
    std::fs::read_to_string(TCP_TABLE)
        .map(|table| ports_to(&table, remote))
        .unwrap_or_default()
}

/// Where kube-proxy sent the connection from local port `local_port` to `remote` (a Service address):
/// the pod's address, from the reply direction of its conntrack entry.
pub fn backend(local_port: u16, remote: SocketAddrV4) -> Option<SocketAddrV4> {
    let table = std::fs::read_to_string(CONNTRACK_TABLE).ok()?;
    backend_in(&table, local_port, remote)
}

/// `/proc/net/tcp`'s `ADDR:PORT`: the address as the kernel's in-memory u32 in hex, the port in host order.
fn parse_hex_endpoint(text: &str) -> Option<SocketAddrV4> {
    let (address, port) = text.split_once(':')?;
    if address.len() != 8 {
        return None; // an IPv6 table's line
    }
    let raw = u32::from_str_radix(address, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(raw.to_ne_bytes()), port))
}

fn ports_to(table: &str, remote: SocketAddrV4) -> BTreeSet<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace().skip(1);
            let local = parse_hex_endpoint(fields.next()?)?;
            let peer = parse_hex_endpoint(fields.next()?)?;
            let state = fields.next()?;
            (peer == remote && state == ESTABLISHED).then_some(local.port())
        })
        .collect()
}

fn backend_in(table: &str, local_port: u16, remote: SocketAddrV4) -> Option<SocketAddrV4> {
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(2) != Some(&"tcp") {
            return None;
        }
        // The first src/dst/sport/dport are the original direction, the second the reply's.
        let values = |key: &str| -> Vec<&str> {
            fields
                .iter()
                .filter_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                .collect()
        };
        let (src, dst, sport, dport) = (values("src"), values("dst"), values("sport"), values("dport"));
        let original_dst: Ipv4Addr = dst.first()?.parse().ok()?;
        let original_sport: u16 = sport.first()?.parse().ok()?;
        let original_dport: u16 = dport.first()?.parse().ok()?;
        if original_dst != *remote.ip() || original_dport != remote.port() || original_sport != local_port {
            return None;
        }
        let pod: Ipv4Addr = src.get(1)?.parse().ok()?;
        let pod_port: u16 = sport.get(1)?.parse().ok()?;
        Some(SocketAddrV4::new(pod, pod_port))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 12, 34), 3553);

    #[test]
    fn established_ports_to_a_service() {
        // 10.96.12.34:3553 is 220C600A:0DE1 (the address in memory order, little-endian here).
        let vip = format!("{:08X}:0DE1", u32::from_ne_bytes([10, 96, 12, 34]));
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: 010000AA:B26E {vip} 01 00000000:00000000 00:00000000 00000000 0 0 1 1\n\
             1: 010000AA:B26F {vip} 06 00000000:00000000 00:00000000 00000000 0 0 1 1\n\
             2: 010000AA:B270 0100007F:0DE1 01 00000000:00000000 00:00000000 00000000 0 0 1 1\n"
        );
        assert_eq!(ports_to(&table, VIP), BTreeSet::from([0xB26E]));
    }

    #[test]
    fn backend_from_the_reply_direction() {
        let table = "ipv4     2 tcp      6 431999 ESTABLISHED src=10.244.0.1 dst=10.96.12.34 sport=45678 dport=3553 \
                     src=10.85.0.7 dst=10.85.0.1 sport=3553 dport=45678 [ASSURED] mark=0 zone=0 use=2\n\
                     ipv4     2 tcp      6 431999 ESTABLISHED src=10.244.0.1 dst=10.96.12.34 sport=45679 dport=3553 \
                     src=10.85.0.8 dst=10.85.0.1 sport=3553 dport=45679 [ASSURED] mark=0 zone=0 use=2\n\
                     ipv4     2 udp      17 20 src=10.244.0.1 dst=10.96.0.10 sport=45678 dport=53 \
                     src=10.85.0.3 dst=10.85.0.1 sport=53 dport=45678 mark=0 zone=0 use=2\n";
        assert_eq!(
            backend_in(table, 45679, VIP),
            Some(SocketAddrV4::new(Ipv4Addr::new(10, 85, 0, 8), 3553))
        );
        assert_eq!(backend_in(table, 45670, VIP), None);
        assert_eq!(backend_in("garbage\n\n", 1, VIP), None);
    }
}

//! Free loopback ports for the processes a test starts.

use std::sync::{Mutex, PoisonError};

/// A free TCP port on 127.0.0.1 (bound, then released), never one this test process handed out before:
/// the kernel readily hands a just-released port out again, and two processes of one test given the same
/// port would fail to start. Another process could still take it before it is used; starts that can
/// retry on a new port when that happens.
///
/// # Panics
/// When no port can be bound at all (no loopback interface).
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port on 127.0.0.1");
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_never_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        assert!(ports.iter().all(|port| *port > 0));
    }
}

//! One plain HTTP GET (admin endpoints: `/healthz`, `/readyz`, `/metrics`; Prometheus's API), without an
//! HTTP client library: an HTTP/1.0 request, so that the server answers unchunked and closes, and the
//! response read to its end.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long one GET may take, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a response that is read (metrics pages are the largest).
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// Where a GET goes: a port on 127.0.0.1, a `host:port` (an `http://` prefix is ignored), or an address.
pub trait HttpTarget {
    /// `host:port`.
    fn host_port(&self) -> String;
}

impl HttpTarget for u16 {
    fn host_port(&self) -> String {
        format!("127.0.0.1:{self}")
    }
}

impl HttpTarget for &str {
    fn host_port(&self) -> String {
        let host = self.strip_prefix("http://").unwrap_or(self);
        host.trim_end_matches('/').to_owned()
    }
}

impl HttpTarget for String {
    fn host_port(&self) -> String {
        self.as_str().host_port()
    }
}

impl HttpTarget for &String {
    fn host_port(&self) -> String {
        self.as_str().host_port()
    }
}

impl HttpTarget for SocketAddr {
    fn host_port(&self) -> String {
        self.to_string()
    }
}

fn request(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")
}

/// `GET path`: (status, body). Status 0 and an empty body when nothing answers within 10 s or the answer
/// is not HTTP, so that a test can poll an endpoint that is not up yet and assert on the status.
pub async fn http_get(target: impl HttpTarget, path: &str) -> (u16, String) {
    let host = target.host_port();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(host.as_str()).await.ok()?;
        stream.write_all(request(&host, path).as_bytes()).await.ok()?;
        let mut response = Vec::new();
        let _ = stream.take(MAX_RESPONSE_BYTES).read_to_end(&mut response).await;
        Some(response)
    };
    match tokio::time::timeout(TIMEOUT, exchange).await {
        Ok(Some(response)) => parse_response(&response),
        _ => (0, String::new()),
    }
}

/// [`http_get`] for a synchronous test.
pub fn http_get_blocking(target: impl HttpTarget, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let host = target.host_port();
    let exchange = || -> std::io::Result<Vec<u8>> {
        let address = std::net::ToSocketAddrs::to_socket_addrs(host.as_str())?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let mut stream = std::net::TcpStream::connect_timeout(&address, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.write_all(request(&host, path).as_bytes())?;
        let mut response = Vec::new();
        let _ = stream.take(MAX_RESPONSE_BYTES).read_to_end(&mut response);
        Ok(response)
    };
    exchange().map_or((0, String::new()), |response| parse_response(&response))
}

/// The status code and body of a raw HTTP/1.x response; (0, "") when it is not one.
pub fn parse_response(response: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(response);
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    if status == 0 {
        return (0, String::new());
    }
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
            (200, "ok".to_owned())
        );
        assert_eq!(
            parse_response(b"HTTP/1.0 503 Service Unavailable\r\n\r\n"),
            (503, String::new())
        );
        assert_eq!(parse_response(b"garbage"), (0, String::new()));
        assert_eq!(parse_response(b""), (0, String::new()));
    }

    #[test]
    fn targets() {
        assert_eq!(8080u16.host_port(), "127.0.0.1:8080");
        assert_eq!("http://10.0.0.1:9090/".host_port(), "10.0.0.1:9090");
        assert_eq!("10.0.0.1:9090".host_port(), "10.0.0.1:9090");
    }

    #[tokio::test]
    async fn a_real_server_and_a_closed_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 1024];
            let read = stream.read(&mut request).await.expect("read");
            assert!(request[..read].starts_with(b"GET /healthz HTTP/1.0\r\n"));
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nfine")
                .await
                .expect("write");
        });
        assert_eq!(http_get(port, "/healthz").await, (200, "fine".to_owned()));
        server.await.expect("server");
        let closed = crate::free_port();
        assert_eq!(http_get(closed, "/healthz").await, (0, String::new()));
        assert_eq!(http_get_blocking(closed, "/healthz"), (0, String::new()));
    }
}

//! A minimal HTTP/1.1 GET for the tests and the harness: admin endpoints (`/readyz`, `/metrics`) of pods on
//! their pod IPs, and the health endpoints of the node's components. Bounded: at most 4 KiB of an answer.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The most of an answer that is read (headers included).
const MAX_ANSWER: usize = 4096;

/// `GET path` over HTTP/1.1 with `Connection: close`; the status code of the answer. Reads at most 4 KiB.
pub async fn http_status(host: &str, port: u16, path: &str, headers: &[(String, String)]) -> Option<u16> {
    let (status, _) = http_get(host, port, path, headers).await?;
    Some(status)
}

/// `GET path` over HTTP/1.1 with `Connection: close`: the status code and up to 4 KiB of the answer
/// (headers included). No timeout of its own: callers bound it.
pub async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect((host, port)).await.ok()?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: switchyard-e2e\r\nAccept: */*\r\n\
         Connection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while buf.len() < MAX_ANSWER {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n.min(MAX_ANSWER - buf.len())]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn status_and_bounded_body() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = "x".repeat(10_000);
                let _ = s
                    .write_all(format!("HTTP/1.1 503 Service Unavailable\r\n\r\n{body}").as_bytes())
                    .await;
            }
        });
        let (status, text) = http_get("127.0.0.1", port, "/readyz", &[]).await.expect("answer");
        assert_eq!(status, 503);
        assert_eq!(text.len(), MAX_ANSWER);
        assert_eq!(http_status("127.0.0.1", port, "/", &[]).await, Some(503));
    }
}

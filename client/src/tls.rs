//! TLS for the client: the trust settings ([`TlsConfig`]), the handshake, and the stream types that let
//! plain and TLS connections share the TCP and WebSocket code (`Transport::Tls`, `wss://`).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::ClientError;

/// Which servers a TLS connection trusts: a rustls client configuration, shared by every connection
/// (and reconnection) of a client. Two values are equal when they share the same configuration.
#[derive(Clone)]
pub struct TlsConfig(Arc<rustls::ClientConfig>);

impl TlsConfig {
    /// Uses a rustls configuration as it is (custom roots, client certificates, ALPN, ...).
    pub fn new(config: Arc<rustls::ClientConfig>) -> TlsConfig {
        TlsConfig(config)
    }

    /// Trusts the certificates of a PEM bundle (for example a private CA, or a self-signed gate
    /// certificate) and nothing else.
    ///
    /// # Errors
    /// [`ClientError::TlsRoots`] when the PEM holds no certificate or one that is not usable as a root.
    pub fn with_root_pem(pem: &[u8]) -> Result<TlsConfig, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|err| ClientError::TlsRoots(err.to_string().into()))?;
            roots
                .add(cert)
                .map_err(|err| ClientError::TlsRoots(err.to_string().into()))?;
            found += 1;
        }
        if found == 0 {
            return Err(ClientError::TlsRoots("no certificate in the PEM data".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| ClientError::TlsRoots(err.to_string().into()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConfig(Arc::new(config)))
    }

    /// The TLS handshake over `stream` for server name `host`, finished by `deadline`.
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        host: &str,
        target: &str,
        deadline: Instant,
    ) -> Result<Io, ClientError> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| ClientError::Tls {
            target: target.to_owned(),
            source: Arc::new(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a valid TLS server name"),
            )),
        })?;
        let connect = TlsConnector::from(Arc::clone(&self.0)).connect(name, stream);
        match tokio::time::timeout_at(deadline, connect).await {
            Err(_) => Err(ClientError::ConnectTimeout {
                target: target.to_owned(),
                timeout: deadline.saturating_duration_since(Instant::now()),
            }),
            Ok(Err(err)) => Err(ClientError::Tls {
                target: target.to_owned(),
                source: Arc::new(err),
            }),
            Ok(Ok(stream)) => Ok(Io::Tls(Box::new(stream))),
        }
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConfig(..)")
    }
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for TlsConfig {}

/// A connection's byte stream, plain or TLS (WebSocket runs over it whole).
#[derive(Debug)]
pub(crate) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The receiving half of a TCP transport: the socket's own half when plain (no lock on the hot path).
#[derive(Debug)]
pub(crate) enum IoRead {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<Io>),
}

/// The sending half of a TCP transport.
#[derive(Debug)]
pub(crate) enum IoWrite {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<Io>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for IoRead {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            IoRead::Plain(s) => Pin::new(s).poll_read(cx, buf),
            IoRead::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for IoWrite {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            IoWrite::Plain(s) => Pin::new(s).poll_write(cx, buf),
            IoWrite::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            IoWrite::Plain(s) => Pin::new(s).poll_flush(cx),
            IoWrite::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            IoWrite::Plain(s) => Pin::new(s).poll_shutdown(cx),
            IoWrite::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

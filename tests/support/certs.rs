//! A self-signed certificate made with rcgen for the TLS tests: PEM files for `switchyard --tls-cert/--tls-key`
//! and a rustls client that trusts it alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A self-signed certificate for `localhost` and its key, written as PEM files in a scratch directory.
pub struct Certs {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

impl Certs {
    pub fn new(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("switchyard-certs-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("self-signed certificate");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, generated.cert.pem()).expect("cert written");
        std::fs::write(&key, generated.signing_key.serialize_pem()).expect("key written");
        Certs {
            dir,
            cert,
            key,
            der: generated.cert.der().clone(),
        }
    }

    pub fn flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }

    /// A TLS client that trusts this certificate only.
    pub fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.der.clone())
            .expect("certificate accepted as a root");
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    pub async fn tls_connect(&self, address: &str) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(address).await.expect("gate accepts TCP");
        tcp.set_nodelay(true).expect("nodelay");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
        tokio::time::timeout(Duration::from_secs(5), self.connector().connect(name, tcp))
            .await
            .expect("TLS handshake within 5 s")
            .expect("TLS handshake succeeds")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

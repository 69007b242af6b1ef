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

/// A cluster's link PKI for the mutual TLS tests: a CA made with rcgen (as the operator's is) and leaf
/// certificates it issues, node ones for the server name gates check, gate ones for client auth, each
/// written as PEM files.
pub struct LinkPki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// What a link leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRole {
    Node,
    Gate,
}

/// One leaf of a [`LinkPki`]: its PEM files and DER.
pub struct LinkLeaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: rustls::pki_types::CertificateDer<'static>,
    pub key_der: rustls::pki_types::PrivateKeyDer<'static>,
}

impl LinkPki {
    pub fn new(name: &str) -> LinkPki {
        let dir = std::env::temp_dir().join(format!("switchyard-link-pki-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} link CA"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, issuer.pem()).expect("CA written");
        LinkPki {
            ca_der: issuer.der().clone(),
            dir,
            ca,
            issuer,
        }
    }

    /// Issues a leaf for `role`, written as `FILE.crt` and `FILE.key` (an existing pair is replaced, as a
    /// renewed Secret would be).
    pub fn leaf(&self, role: LinkRole, file: &str) -> LinkLeaf {
        let names = match role {
            LinkRole::Node => vec!["switchyard-link".to_owned()],
            LinkRole::Gate => vec!["switchyard-gate".to_owned()],
        };
        let mut params = rcgen::CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, file.to_owned());
        params.extended_key_usages = vec![match role {
            LinkRole::Node => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            LinkRole::Gate => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf certificate");
        let (cert_path, key_path) = (
            self.dir.join(format!("{file}.crt")),
            self.dir.join(format!("{file}.key")),
        );
        // Written beside and renamed into place, so a process reloading meanwhile never reads half a file.
        for (path, text) in [(&key_path, key.serialize_pem()), (&cert_path, cert.pem())] {
            let part = path.with_extension("part");
            std::fs::write(&part, text).expect("leaf written");
            std::fs::rename(&part, path).expect("leaf in place");
        }
        LinkLeaf {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
            key_der: rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }

    /// `--link-tls-*` flags for a process holding `leaf`.
    pub fn flags(&self, leaf: &LinkLeaf) -> Vec<String> {
        vec![
            "--link-tls-ca".into(),
            self.ca.display().to_string(),
            "--link-tls-cert".into(),
            leaf.cert.display().to_string(),
            "--link-tls-key".into(),
            leaf.key.display().to_string(),
        ]
    }

    /// A TLS client (a fake gate) trusting this CA, presenting `identity` (or no certificate).
    pub fn client(&self, identity: Option<&LinkLeaf>) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("CA accepted as a root");
        let builder =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(roots);
        let config = match identity {
            Some(leaf) => builder
                .with_client_auth_cert(vec![leaf.der.clone()], leaf.key_der.clone_key())
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        };
        TlsConnector::from(Arc::new(config))
    }

    /// The server name gates check on node certificates.
    pub fn server_name() -> rustls::pki_types::ServerName<'static> {
        rustls::pki_types::ServerName::try_from("switchyard-link").expect("server name")
    }
}

impl Drop for LinkPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

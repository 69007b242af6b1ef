//! TLS for the client listeners: the certificate chain and private key are read from PEM files once, at
//! start-up, and checked against each other, so a bad file stops the process with a message naming it
//! instead of failing every client handshake later. The `ring` provider is used explicitly (the one the
//! workspace already builds for kube), so nothing depends on a process-wide default provider.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Builds the server side of TLS from a PEM certificate chain (leaf first) and a PEM private key (PKCS#8,
/// PKCS#1 or SEC1).
///
/// # Errors
/// A message naming the file at fault: unreadable, no PEM block of the right kind, bad PEM, or a key that
/// does not belong to the certificate.
pub fn load_server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let cert_file = || cert_path.display().to_string();
    let key_file = || key_path.display().to_string();
    let cert_pem = std::fs::read(cert_path).map_err(|error| TlsConfigError::CertUnreadable {
        file: cert_file(),
        error: error.to_string(),
    })?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsConfigError::CertPem {
            file: cert_file(),
            error: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate { file: cert_file() });
    }

    let key_pem = std::fs::read(key_path).map_err(|error| TlsConfigError::KeyUnreadable {
        file: key_file(),
        error: error.to_string(),
    })?;
    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(key) => key,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsConfigError::NoKey { file: key_file() });
        }
        Err(error) => {
            return Err(TlsConfigError::KeyPem {
                file: key_file(),
                error: error.to_string(),
            });
        }
    };

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsConfigError::Rustls(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(_) => TlsConfigError::KeyMismatch {
                key: key_file(),
                cert: cert_file(),
            },
            error => TlsConfigError::Unusable {
                key: key_file(),
                cert: cert_file(),
                error: error.to_string(),
            },
        })?;
    Ok(Arc::new(config))
}

/// Why the gate's TLS certificate or key cannot be used: the files named are at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsConfigError {
    #[error("TLS certificate {file}: cannot read it: {error}")]
    CertUnreadable { file: String, error: String },
    #[error("TLS certificate {file}: bad PEM: {error}")]
    CertPem { file: String, error: String },
    #[error("TLS certificate {file}: no PEM CERTIFICATE block found")]
    NoCertificate { file: String },
    #[error("TLS key {file}: cannot read it: {error}")]
    KeyUnreadable { file: String, error: String },
    #[error("TLS key {file}: bad PEM: {error}")]
    KeyPem { file: String, error: String },
    #[error(
        "TLS key {file}: no PEM private key block (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) found"
    )]
    NoKey { file: String },
    #[error("TLS key {key} does not belong to certificate {cert}")]
    KeyMismatch { key: String, cert: String },
    #[error("TLS key {key} cannot serve certificate {cert}: {error}")]
    Unusable {
        key: String,
        cert: String,
        error: String,
    },
    #[error("TLS: {0}")]
    Rustls(String),
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A scratch directory unique to this test run.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("switchyard-gate-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn self_signed() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_certificate_and_key_load() {
        let dir = scratch("good");
        let (cert, key) = self_signed();
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        assert!(load_server_config(&dir.join("cert.pem"), &dir.join("key.pem")).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn every_failure_names_the_file_at_fault() {
        let dir = scratch("bad");
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        let other_key_path = dir.join("other-key.pem");
        let garbage = dir.join("garbage.pem");
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        std::fs::write(&other_key_path, other_key).unwrap();
        std::fs::write(&garbage, "not PEM at all\n").unwrap();
        let missing = dir.join("missing.pem");

        let error = load_server_config(&missing, &key_path).unwrap_err().to_string();
        assert!(
            error.contains("missing.pem") && error.contains("certificate"),
            "{error}"
        );
        let error = load_server_config(&garbage, &key_path).unwrap_err().to_string();
        assert!(
            error.contains("garbage.pem") && error.contains("CERTIFICATE"),
            "{error}"
        );
        let error = load_server_config(&cert_path, &missing).unwrap_err().to_string();
        assert!(error.contains("missing.pem") && error.contains("key"), "{error}");
        // A certificate is not a key.
        let error = load_server_config(&cert_path, &cert_path)
            .unwrap_err()
            .to_string();
        assert!(error.contains("TLS key") && error.contains("cert.pem"), "{error}");
        let error = load_server_config(&cert_path, &other_key_path)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("other-key.pem") && error.contains("cert.pem"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

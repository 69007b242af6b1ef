//! TLS for the client listeners: the certificate chain and private key are read from PEM files and checked
//! against each other at start-up, so a bad file stops the process with a message naming it instead of
//! failing every client handshake later. The files are then watched: when their modification time or size
//! changes (a renewed certificate, a Kubernetes Secret updated in its volume), they are read again and new
//! handshakes use the new pair; live connections keep theirs. A replacement that does not load (half
//! written, mismatched) is logged and the previous pair stays in use. The `ring` provider is used explicitly
//! (the one the workspace already builds for kube), so nothing depends on a process-wide default provider.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the certificate and key files are checked for a replacement, unless told otherwise.
pub const DEFAULT_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Builds the server side of TLS from a PEM certificate chain (leaf first) and a PEM private key (PKCS#8,
/// PKCS#1 or SEC1). Inside a Tokio runtime the files are re-read when they change, checked every
/// [`DEFAULT_TLS_RELOAD_INTERVAL`] (see [`load_server_config_with_reload`]).
///
/// # Errors
/// A message naming the file at fault: unreadable, no PEM block of the right kind, bad PEM, or a key that
/// does not belong to the certificate.
pub fn load_server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsConfigError> {
    load_server_config_with_reload(cert_path, key_path, DEFAULT_TLS_RELOAD_INTERVAL)
}

/// [`load_server_config`], checking the files for a replacement every `reload_interval` (zero: never).
/// The check runs on the current Tokio runtime, if any, for as long as the returned config is in use.
///
/// # Errors
/// As [`load_server_config`].
pub fn load_server_config_with_reload(
    cert_path: &Path,
    key_path: &Path,
    reload_interval: Duration,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let files = CertFiles {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
    };
    let stamp = files.stamp();
    let certified = files.load(&provider)?;
    let resolver = Arc::new(ReloadingCert {
        files,
        provider: Arc::clone(&provider),
        current: RwLock::new(Arc::new(certified)),
        seen: RwLock::new(stamp),
    });
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsConfigError::Rustls(error.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
    if !reload_interval.is_zero()
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        runtime.spawn(watch(Arc::downgrade(&resolver), reload_interval));
    }
    Ok(Arc::new(config))
}

/// The certificate and key files.
#[derive(Debug, Clone)]
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
}

/// What tells a replaced file: modification time and size of both (following symlinks, as a Kubernetes
/// Secret volume swaps them).
type Stamp = [Option<(SystemTime, u64)>; 2];

impl CertFiles {
    fn stamp(&self) -> Stamp {
        let of = |path: &Path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        };
        [of(&self.cert), of(&self.key)]
    }

    fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsConfigError> {
        let cert_file = || self.cert.display().to_string();
        let key_file = || self.key.display().to_string();
        let cert_pem = std::fs::read(&self.cert).map_err(|error| TlsConfigError::CertUnreadable {
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
        let key_pem = std::fs::read(&self.key).map_err(|error| TlsConfigError::KeyUnreadable {
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
        CertifiedKey::from_der(certs, key, provider).map_err(|error| match error {
            rustls::Error::InconsistentKeys(_) => TlsConfigError::KeyMismatch {
                key: key_file(),
                cert: cert_file(),
            },
            error => TlsConfigError::Unusable {
                key: key_file(),
                cert: cert_file(),
                error: error.to_string(),
            },
        })
    }
}

/// The certificate every handshake gets: the last pair that loaded.
#[derive(Debug)]
struct ReloadingCert {
    files: CertFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamp when last looked at (loaded, or failed and logged).
    seen: RwLock<Stamp>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read()))
    }
}

impl ReloadingCert {
    /// Loads the files again if they changed since last seen.
    fn check(&self) {
        let stamp = self.files.stamp();
        if *self.seen.read() == stamp {
            return;
        }
        *self.seen.write() = stamp;
        match self.files.load(&self.provider) {
            Ok(certified) => {
                *self.current.write() = Arc::new(certified);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            // Logged once per change of the files; the previous pair keeps serving.
            Err(error) => {
                tracing::warn!(%error, "TLS certificate not reloaded; the previous one stays in use")
            }
        }
    }
}

async fn watch(resolver: Weak<ReloadingCert>, every: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(resolver) = resolver.upgrade() else {
            return;
        };
        // Reading two small files: cheap enough for the runtime's thread.
        resolver.check();
    }
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
    fn a_replaced_pair_is_served_and_a_broken_one_is_not() {
        let dir = scratch("reload");
        let (cert, key) = self_signed();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = CertFiles {
            cert: cert_path.clone(),
            key: key_path.clone(),
        };
        let resolver = ReloadingCert {
            current: RwLock::new(Arc::new(files.load(&provider).unwrap())),
            seen: RwLock::new(files.stamp()),
            files,
            provider,
        };
        let served = || resolver.current.read().cert[0].clone();
        let first = served();
        resolver.check();
        assert_eq!(served(), first, "unchanged files are not reloaded");

        let (new_cert, new_key) = self_signed();
        std::fs::write(&cert_path, &new_cert).unwrap();
        std::fs::write(&key_path, &new_key).unwrap();
        resolver.check();
        let second = served();
        assert_ne!(second, first, "the new pair is served");

        // A certificate without its key (half-way through a rotation) is refused; the last pair stays.
        let (third_cert, _) = self_signed();
        std::fs::write(&cert_path, format!("{third_cert}\n")).unwrap();
        resolver.check();
        assert_eq!(served(), second);
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

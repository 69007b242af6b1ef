//! Mutual TLS for gate ↔ node links: both ends present a certificate and accept only one issued by the
//! cluster's CA. The node is the TLS server and requires a client certificate; the gate is the TLS client and
//! checks the node's certificate for [`LINK_SERVER_NAME`] (nodes are reached by pod IP, so the name is a
//! fixed one of the cluster's certificates, not an address). The per-cluster CA is the trust boundary: a
//! peer with no certificate, or one of another cluster, completes no handshake and never sees a link frame.
//!
//! The three PEM files (CA bundle, certificate chain, private key) are read and checked at start-up, so a
//! bad one stops the process with a message naming it; the certificate must be one the CA issued for this
//! process's role ([`LinkRole`]), valid now, so a gate given a node's certificate (or one of another CA)
//! stops at once instead of failing every handshake. They are then watched: when any of them changes (a
//! renewed certificate, a Kubernetes Secret updated in its volume) the configs are rebuilt and new links use
//! them; established links keep their session. A replacement that does not load (half written, mismatched)
//! is logged once and the previous configs stay in use. The `ring` provider is used explicitly, as the
//! gate's client TLS does, so nothing depends on a process-wide default provider.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The DNS name every node certificate of a cluster carries and every gate checks (the operator mints node
/// certificates for it; see `docs/security.md`).
pub use crate::contract::LINK_TLS_SERVER_NAME as LINK_SERVER_NAME;

/// How often the files are checked for a replacement, unless told otherwise.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// The files of one process's link TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTlsFiles {
    /// PEM bundle of the cluster's CA: the only issuer whose certificates are accepted.
    pub ca: PathBuf,
    /// PEM certificate chain of this process, leaf first.
    pub cert: PathBuf,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Which end of links a process is, and so what its certificate must be good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRole {
    /// Opens links: a client certificate (`clientAuth`).
    Gate,
    /// Accepts links: a server certificate (`serverAuth`) for [`LINK_SERVER_NAME`].
    Node,
}

impl LinkRole {
    fn as_str(self) -> &'static str {
        match self {
            LinkRole::Gate => "gate",
            LinkRole::Node => "node",
        }
    }
}

/// The link TLS of a process: the current server config (nodes) and client config (gates), rebuilt when the
/// files change. Cheap to clone; every clone sees the reloads.
#[derive(Debug, Clone)]
pub struct LinkTls {
    inner: Arc<Reloading>,
}

#[derive(Debug)]
struct Reloading {
    files: LinkTlsFiles,
    role: LinkRole,
    provider: Arc<CryptoProvider>,
    current: RwLock<Configs>,
    /// The files' stamp when last looked at (loaded, or failed and logged).
    seen: RwLock<Stamp>,
}

#[derive(Debug, Clone)]
struct Configs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// What tells a replaced file: modification time and size of each (following symlinks, as a Kubernetes
/// Secret volume swaps them).
type Stamp = [Option<(SystemTime, u64)>; 3];

impl LinkTls {
    /// Loads the files of a process of `role`; inside a Tokio runtime they are checked for a replacement
    /// every `reload_interval` (zero: never) for as long as a clone of the returned value lives.
    ///
    /// # Errors
    /// A message naming the file at fault.
    pub fn load(
        files: LinkTlsFiles,
        role: LinkRole,
        reload_interval: Duration,
    ) -> Result<LinkTls, LinkTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let seen = stamp(&files);
        let current = build(&files, role, &provider)?;
        let inner = Arc::new(Reloading {
            files,
            role,
            provider,
            current: RwLock::new(current),
            seen: RwLock::new(seen),
        });
        if !reload_interval.is_zero()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(watch(Arc::downgrade(&inner), reload_interval));
        }
        Ok(LinkTls { inner })
    }

    /// The config a node accepts new links with.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.inner.current.read().server)
    }

    /// The config a gate opens new links with.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.inner.current.read().client)
    }

    /// The name a gate expects on a node's certificate.
    pub fn server_name() -> ServerName<'static> {
        ServerName::DnsName(
            rustls::pki_types::DnsName::try_from(LINK_SERVER_NAME)
                .expect("the link server name is a DNS name")
                .to_owned(),
        )
    }

    /// Loads the files again now if they changed since last seen (what the watcher does every interval).
    pub fn reload_if_changed(&self) {
        self.inner.check();
    }

    /// The files in use.
    pub fn files(&self) -> &LinkTlsFiles {
        &self.inner.files
    }
}

impl Reloading {
    fn check(&self) {
        let now = stamp(&self.files);
        if *self.seen.read() == now {
            return;
        }
        *self.seen.write() = now;
        match build(&self.files, self.role, &self.provider) {
            Ok(configs) => {
                *self.current.write() = configs;
                tracing::info!(cert = %self.files.cert.display(), "link TLS certificate reloaded; new links use it");
            }
            // Logged once per change of the files; the previous configs keep serving.
            Err(error) => {
                tracing::warn!(%error, "link TLS files not reloaded; the previous ones stay in use")
            }
        }
    }
}

async fn watch(reloading: Weak<Reloading>, every: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(reloading) = reloading.upgrade() else {
            return;
        };
        // Reading three small files: cheap enough for the runtime's thread.
        reloading.check();
    }
}

fn stamp(files: &LinkTlsFiles) -> Stamp {
    let of = |path: &Path| {
        let metadata = std::fs::metadata(path).ok()?;
        Some((metadata.modified().ok()?, metadata.len()))
    };
    [of(&files.ca), of(&files.cert), of(&files.key)]
}

fn build(
    files: &LinkTlsFiles,
    role: LinkRole,
    provider: &Arc<CryptoProvider>,
) -> Result<Configs, LinkTlsError> {
    let roots = read_certs("CA", &files.ca)?;
    let chain = read_certs("certificate", &files.cert)?;
    let key = read_key(&files.key)?;
    let names = Names {
        ca: files.ca.display().to_string(),
        cert: files.cert.display().to_string(),
        key: files.key.display().to_string(),
    };
    configs(roots, chain, key, role, provider, &names, UnixTime::now())
}

/// What the errors call the three parts: file paths, or keys of a Secret.
struct Names {
    ca: String,
    cert: String,
    key: String,
}

/// Checks a link TLS set given as PEM text (the CA bundle, the certificate chain, its key) exactly as a
/// process of `role` loads its files, at the time `at`: parsable, the key belongs to the certificate, and the
/// certificate is one the CA issued for the role (purpose, name) and valid then. The operator checks the
/// Secrets it minted with it, so what it keeps is what gates and nodes accept. Errors name the parts by
/// `ca.crt`, `tls.crt` and `tls.key` (the keys of a link Secret).
///
/// # Errors
/// [`LinkTlsError`] naming the part at fault.
pub fn check_pem(
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
    role: LinkRole,
    at: SystemTime,
) -> Result<(), LinkTlsError> {
    let names = Names {
        ca: "ca.crt".to_owned(),
        cert: "tls.crt".to_owned(),
        key: "tls.key".to_owned(),
    };
    let roots = parse_certs("CA", &names.ca, ca)?;
    let chain = parse_certs("certificate", &names.cert, cert)?;
    let key = parse_key(&names.key, key)?;
    let seconds = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    configs(
        roots,
        chain,
        key,
        role,
        &provider,
        &names,
        UnixTime::since_unix_epoch(seconds),
    )
    .map(drop)
}

fn configs(
    roots: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    role: LinkRole,
    provider: &Arc<CryptoProvider>,
    names: &Names,
    now: UnixTime,
) -> Result<Configs, LinkTlsError> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root).map_err(|error| LinkTlsError::BadCa {
            file: names.ca.clone(),
            error: error.to_string(),
        })?;
    }
    let store = Arc::new(store);
    let keys_error = |error: rustls::Error| match error {
        rustls::Error::InconsistentKeys(_) => LinkTlsError::KeyMismatch {
            key: names.key.clone(),
            cert: names.cert.clone(),
        },
        error => LinkTlsError::Unusable {
            key: names.key.clone(),
            cert: names.cert.clone(),
            error: error.to_string(),
        },
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&store), Arc::clone(provider))
        .build()
        .map_err(|error| LinkTlsError::BadCa {
            file: names.ca.clone(),
            error: error.to_string(),
        })?;
    // The certificate must be one the CA issued for this role and valid now: what the peer will check.
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(LinkTlsError::NoCertificate {
            what: "certificate",
            file: names.cert.clone(),
        });
    };
    let issued = match role {
        LinkRole::Gate => verifier.verify_client_cert(leaf, intermediates, now).map(|_| ()),
        LinkRole::Node => {
            WebPkiServerVerifier::builder_with_provider(Arc::clone(&store), Arc::clone(provider))
                .build()
                .map_err(|error| rustls::Error::General(error.to_string()))
                .and_then(|verifier| {
                    verifier
                        .verify_server_cert(leaf, intermediates, &LinkTls::server_name(), &[], now)
                        .map(|_| ())
                })
        }
    };
    issued.map_err(|error| LinkTlsError::NotIssued {
        cert: names.cert.clone(),
        ca: names.ca.clone(),
        role: role.as_str(),
        error: error.to_string(),
    })?;
    let server = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| LinkTlsError::Rustls(error.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(keys_error)?;
    let client = ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| LinkTlsError::Rustls(error.to_string()))?
        .with_root_certificates(store)
        .with_client_auth_cert(chain, key)
        .map_err(keys_error)?;
    Ok(Configs {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, LinkTlsError> {
    std::fs::read(path).map_err(|error| LinkTlsError::Unreadable {
        what,
        file: path.display().to_string(),
        error: error.to_string(),
    })
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, LinkTlsError> {
    parse_certs(what, &path.display().to_string(), &read(what, path)?)
}

fn parse_certs(
    what: &'static str,
    file: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, LinkTlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| LinkTlsError::Pem {
            what,
            file: file.to_owned(),
            error: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(LinkTlsError::NoCertificate {
            what,
            file: file.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, LinkTlsError> {
    parse_key(&path.display().to_string(), &read("key", path)?)
}

fn parse_key(file: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, LinkTlsError> {
    let file = file.to_owned();
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => Err(LinkTlsError::NoKey { file }),
        Err(error) => Err(LinkTlsError::Pem {
            what: "key",
            file,
            error: error.to_string(),
        }),
    }
}

/// Why the link TLS files cannot be used: the file named is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkTlsError {
    #[error("link TLS {what} {file}: cannot read it: {error}")]
    Unreadable {
        what: &'static str,
        file: String,
        error: String,
    },
    #[error("link TLS {what} {file}: bad PEM: {error}")]
    Pem {
        what: &'static str,
        file: String,
        error: String,
    },
    #[error("link TLS {what} {file}: no PEM CERTIFICATE block found")]
    NoCertificate { what: &'static str, file: String },
    #[error("link TLS CA {file}: not a usable CA certificate: {error}")]
    BadCa { file: String, error: String },
    #[error(
        "link TLS key {file}: no PEM private key block (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) found"
    )]
    NoKey { file: String },
    #[error("link TLS key {key} does not belong to certificate {cert}")]
    KeyMismatch { key: String, cert: String },
    #[error("link TLS key {key} cannot serve certificate {cert}: {error}")]
    Unusable {
        key: String,
        cert: String,
        error: String,
    },
    #[error(
        "link TLS certificate {cert} is not a valid {role} certificate of the CA {ca}: {error} (a gate needs clientAuth, a node serverAuth and the name switchyard-link; both unexpired)"
    )]
    NotIssued {
        cert: String,
        ca: String,
        role: &'static str,
        error: String,
    },
    #[error("link TLS: {0}")]
    Rustls(String),
}

/// Why a node refused a link connection before any frame: the label of
/// `switchyard_node_link_refused_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The peer presented no client certificate.
    NoCertificate,
    /// The peer's certificate is not one of this cluster's (another CA, expired, wrong purpose).
    BadCertificate,
    /// The peer does not speak TLS (e.g. a plaintext link hello).
    NotTls,
    /// The handshake did not finish within the deadline.
    HandshakeTimeout,
    /// Any other handshake failure (the peer closed, an alert, a protocol error).
    Handshake,
    /// The node has its maximum of link connections open.
    MaxLinks,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::NoCertificate,
        Refusal::BadCertificate,
        Refusal::NotTls,
        Refusal::HandshakeTimeout,
        Refusal::Handshake,
        Refusal::MaxLinks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no_certificate",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::NotTls => "not_tls",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::Handshake => "handshake",
            Refusal::MaxLinks => "max_links",
        }
    }

    /// The reason of a failed server-side handshake, from the error tokio-rustls returns.
    pub fn of_handshake_error(error: &std::io::Error) -> Refusal {
        let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return Refusal::Handshake;
        };
        match tls {
            rustls::Error::NoCertificatesPresented => Refusal::NoCertificate,
            rustls::Error::InvalidCertificate(_) => Refusal::BadCertificate,
            rustls::Error::InvalidMessage(_) => Refusal::NotTls,
            _ => Refusal::Handshake,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A scratch directory unique to this test run.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("switchyard-link-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A CA and its leaves, as the operator mints them (the handshake tests are in `tests/link_tls.rs`).
    struct Ca(rcgen::CertifiedIssuer<'static, rcgen::KeyPair>);

    impl Ca {
        fn new() -> Ca {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
            Ca(rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap())
        }

        /// Writes the CA and a new leaf for `role` as `PREFIX-{ca,cert,key}.pem`.
        fn write(&self, dir: &Path, prefix: &str, role: LinkRole) -> LinkTlsFiles {
            let mut params = rcgen::CertificateParams::new(vec![LINK_SERVER_NAME.to_owned()]).unwrap();
            params.extended_key_usages = vec![match role {
                LinkRole::Gate => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
                LinkRole::Node => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            }];
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.0).unwrap();
            let files = LinkTlsFiles {
                ca: dir.join(format!("{prefix}-ca.pem")),
                cert: dir.join(format!("{prefix}-cert.pem")),
                key: dir.join(format!("{prefix}-key.pem")),
            };
            std::fs::write(&files.ca, self.0.pem()).unwrap();
            std::fs::write(&files.cert, cert.pem()).unwrap();
            std::fs::write(&files.key, key.serialize_pem()).unwrap();
            files
        }
    }

    #[test]
    fn every_failure_names_the_file_at_fault() {
        let dir = scratch("bad");
        let ca = Ca::new();
        let good = ca.write(&dir, "good", LinkRole::Node);
        let other = Ca::new().write(&dir, "other", LinkRole::Node);
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not PEM at all\n").unwrap();
        let missing = dir.join("missing.pem");
        assert!(LinkTls::load(good.clone(), LinkRole::Node, Duration::ZERO).is_ok());

        let with = |role: LinkRole, edit: &dyn Fn(&mut LinkTlsFiles)| {
            let mut files = good.clone();
            edit(&mut files);
            LinkTls::load(files, role, Duration::ZERO)
                .unwrap_err()
                .to_string()
        };
        let node = LinkRole::Node;
        let error = with(node, &|files| files.ca = missing.clone());
        assert!(error.contains("CA") && error.contains("missing.pem"), "{error}");
        let error = with(node, &|files| files.ca = garbage.clone());
        assert!(error.contains("CA") && error.contains("garbage.pem"), "{error}");
        let error = with(node, &|files| files.cert = garbage.clone());
        assert!(
            error.contains("certificate") && error.contains("garbage.pem"),
            "{error}"
        );
        let error = with(node, &|files| files.key = good.cert.clone());
        assert!(
            error.contains("key") && error.contains("good-cert.pem"),
            "{error}"
        );
        let error = with(node, &|files| files.key = other.key.clone());
        assert!(
            error.contains("other-key.pem") && error.contains("good-cert.pem") && error.contains("belong"),
            "{error}"
        );
        // Another CA's certificate, and a node's certificate given to a gate: refused at load.
        let error = with(node, &|files| {
            files.cert = other.cert.clone();
            files.key = other.key.clone();
        });
        assert!(
            error.contains("not a valid node certificate") && error.contains("good-ca.pem"),
            "{error}"
        );
        let error = with(LinkRole::Gate, &|_| {});
        assert!(error.contains("not a valid gate certificate"), "{error}");
        let gate = ca.write(&dir, "gate", LinkRole::Gate);
        assert!(LinkTls::load(gate, LinkRole::Gate, Duration::ZERO).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_replaced_set_is_used_and_a_broken_one_is_not() {
        let dir = scratch("reload");
        let ca = Ca::new();
        let files = ca.write(&dir, "live", LinkRole::Node);
        let tls = LinkTls::load(files.clone(), LinkRole::Node, Duration::ZERO).unwrap();
        let first = tls.server_config();
        tls.reload_if_changed();
        assert!(
            Arc::ptr_eq(&first, &tls.server_config()),
            "unchanged files are not reloaded"
        );

        let next = ca.write(&dir, "next", LinkRole::Node);
        for (from, to) in [(&next.cert, &files.cert), (&next.key, &files.key)] {
            std::fs::copy(from, to).unwrap();
        }
        tls.reload_if_changed();
        let second = tls.server_config();
        assert!(!Arc::ptr_eq(&first, &second), "the new files are used");

        // A certificate without its key (half-way through a rotation) is refused; the last set stays. So is
        // a pair of another CA.
        let other = Ca::new().write(&dir, "other", LinkRole::Node);
        std::fs::copy(&other.cert, &files.cert).unwrap();
        tls.reload_if_changed();
        assert!(Arc::ptr_eq(&second, &tls.server_config()));
        std::fs::copy(&other.key, &files.key).unwrap();
        tls.reload_if_changed();
        assert!(Arc::ptr_eq(&second, &tls.server_config()));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn check_pem_is_the_start_up_check_on_text() {
        let dir = scratch("pem");
        let ca = Ca::new();
        let files = ca.write(&dir, "node", LinkRole::Node);
        let [ca_pem, cert, key] =
            [&files.ca, &files.cert, &files.key].map(|path| std::fs::read(path).unwrap());
        let now = SystemTime::now();
        check_pem(&ca_pem, &cert, &key, LinkRole::Node, now).unwrap();
        // The other role, another CA, a key that is not the certificate's: refused, naming the Secret key.
        assert!(matches!(
            check_pem(&ca_pem, &cert, &key, LinkRole::Gate, now),
            Err(LinkTlsError::NotIssued { cert, .. }) if cert == "tls.crt"
        ));
        let other = Ca::new().write(&dir, "other", LinkRole::Node);
        let other_ca = std::fs::read(&other.ca).unwrap();
        assert!(check_pem(&other_ca, &cert, &key, LinkRole::Node, now).is_err());
        let other_key = std::fs::read(&other.key).unwrap();
        assert!(matches!(
            check_pem(&ca_pem, &cert, &other_key, LinkRole::Node, now),
            Err(LinkTlsError::KeyMismatch { .. })
        ));
        assert!(matches!(
            check_pem(&ca_pem, b"junk", &key, LinkRole::Node, now),
            Err(LinkTlsError::NoCertificate { file, .. }) if file == "tls.crt"
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}

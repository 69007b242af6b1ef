//! The link certificates of a GameCluster, pure: a per-cluster CA (Secret `NAME-link-ca`, never mounted
//! into a pod) and the leaves it issues to gates (`NAME-link-gate-tls`, `clientAuth`) and nodes
//! (`NAME-link-node-tls`, `serverAuth` for [`LINK_TLS_SERVER_NAME`]), each `tls.crt`, `tls.key` and
//! `ca.crt`. Minting ([`mint_ca`], [`mint_leaf`]), reading a stored CA back ([`LinkCa::from_secret`]) and
//! deciding what to do with a stored leaf ([`check_leaf`]: keep it until its renewal time, or issue a new
//! one) live here; the reconciler's side, which reads and writes the Secrets, is
//! [`crate::link_secrets`].
//!
//! A leaf is checked with [`switchyard_cluster::link::tls::check_pem`], the very check a gate or node makes
//! on its files at start-up, so what the operator keeps is what the processes accept. It is renewed once
//! less than a third of its lifetime is left ([`renewal_time`]): with 30 days, ten days before it expires,
//! which leaves the kubelet (about a minute to update a mounted Secret) and the processes (10 s to reload)
//! ample time.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use switchyard_cluster::contract::LINK_TLS_SERVER_NAME;
use switchyard_cluster::link::tls::{LinkRole, check_pem};

/// Suffix of the CA's Secret: `NAME-link-ca`.
pub const CA_SUFFIX: &str = "link-ca";
/// The Secret keys of a certificate and its key (`kubernetes.io/tls`), in the CA's and the leaves' Secrets.
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";
/// The Secret key of the CA certificate in a leaf's Secret.
pub const CA_CERT_KEY: &str = "ca.crt";
/// The type of the three Secrets.
pub const SECRET_TYPE: &str = "kubernetes.io/tls";
/// How long the CA is valid. It is not rotated by the operator (see `docs/security.md`).
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a leaf is valid.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Certificates start this long before they are minted, so a peer whose clock is a little behind accepts
/// them at once.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// The largest value of a Secret key that is read (a PEM certificate or key is a few hundred bytes to a
/// few KiB); anything larger is not parsed.
pub const MAX_PEM_BYTES: usize = 16 * 1024;

/// Which leaf: the gates' or the nodes'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leaf {
    Gate,
    Node,
}

impl Leaf {
    pub const ALL: [Leaf; 2] = [Leaf::Gate, Leaf::Node];

    /// `gate` or `node`: the `kind` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Leaf::Gate => "gate",
            Leaf::Node => "node",
        }
    }

    /// The process role that presents it.
    pub fn role(self) -> LinkRole {
        match self {
            Leaf::Gate => LinkRole::Gate,
            Leaf::Node => LinkRole::Node,
        }
    }

    /// The name of its Secret: `NAME-link-gate-tls` or `NAME-link-node-tls`.
    pub fn secret_name(self, cluster: &str) -> String {
        format!("{cluster}-link-{}-tls", self.as_str())
    }
}

/// The name of the CA's Secret.
pub fn ca_secret_name(cluster: &str) -> String {
    format!("{cluster}-{CA_SUFFIX}")
}

/// A certificate and its key, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for Pem {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pem")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

/// Minting failed (rcgen refused parameters: a bug rather than bad input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot mint a link certificate: {0}")]
pub struct MintError(String);

fn mint_error(error: rcgen::Error) -> MintError {
    MintError(error.to_string())
}

fn time(at: SystemTime) -> time::OffsetDateTime {
    let seconds = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX));
    time::OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A new CA for the cluster `cluster` (in `namespace`), valid from `now` (backdated) for [`CA_LIFETIME`].
/// It may issue leaves only (path length 0).
///
/// # Errors
/// [`MintError`] if rcgen refuses.
pub fn mint_ca(cluster: &str, namespace: &str, now: SystemTime) -> Result<Pem, MintError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(mint_error)?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("switchyard link CA {namespace}/{cluster}"),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = time(now - BACKDATE);
    params.not_after = time(now + CA_LIFETIME);
    let key = KeyPair::generate().map_err(mint_error)?;
    let cert = params.self_signed(&key).map_err(mint_error)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// What the operator reads of a stored certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub is_ca: bool,
}

/// Reads the first PEM certificate of `pem` (the caller bounds its size).
///
/// # Errors
/// What x509-parser found wrong.
pub fn cert_info(pem: &str) -> Result<CertInfo, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|error| error.to_string())?;
    let cert = block.parse_x509().map_err(|error| error.to_string())?;
    let at = |seconds: i64| {
        u64::try_from(seconds).map_or(SystemTime::UNIX_EPOCH, |after| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(after)
        })
    };
    Ok(CertInfo {
        not_before: at(cert.validity().not_before.timestamp()),
        not_after: at(cert.validity().not_after.timestamp()),
        is_ca: cert.is_ca(),
    })
}

/// A stored CA that can issue leaves.
pub struct LinkCa {
    pem: Pem,
    issuer: Issuer<'static, KeyPair>,
    not_after: SystemTime,
}

impl std::fmt::Debug for LinkCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCa")
            .field("cert", &self.pem.cert)
            .finish_non_exhaustive()
    }
}

/// Why a stored CA Secret cannot be used. Nobody but the operator should write it; the operator does not
/// replace it (every link of the cluster depends on it): a person must look (see `docs/security.md`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    #[error("has no {0}")]
    Missing(&'static str),
    #[error("its {0} is larger than {MAX_PEM_BYTES} bytes")]
    TooLarge(&'static str),
    #[error("its {0} is not UTF-8 PEM text")]
    NotText(&'static str),
    #[error("its tls.key is not a usable private key: {0}")]
    Key(String),
    #[error("its tls.crt is not a CA certificate: {0}")]
    Cert(String),
    #[error("its tls.crt and tls.key do not issue certificates that verify against it: {0}")]
    Unusable(String),
    #[error("it expires before a leaf issued now would ({0} s left); delete the Secret to mint a new CA")]
    Expiring(u64),
}

/// A value of a Secret as text, checked for size before anything is parsed.
fn text<'a>(
    data: &'a BTreeMap<String, ByteString>,
    key: &'static str,
) -> Result<&'a str, (&'static str, bool)> {
    let value = data.get(key).ok_or((key, false))?;
    if value.0.len() > MAX_PEM_BYTES {
        return Err((key, true));
    }
    std::str::from_utf8(&value.0).map_err(|_| (key, false))
}

impl LinkCa {
    /// Reads a CA Secret's data (`tls.crt`, `tls.key`) and proves it usable at `now`: a leaf it issues
    /// verifies against it, and it outlives a leaf issued now.
    ///
    /// # Errors
    /// [`CaError`] naming what is wrong.
    pub fn from_secret(data: &BTreeMap<String, ByteString>, now: SystemTime) -> Result<LinkCa, CaError> {
        let read = |key: &'static str| {
            text(data, key).map_err(|(key, too_large)| {
                if too_large {
                    CaError::TooLarge(key)
                } else if data.contains_key(key) {
                    CaError::NotText(key)
                } else {
                    CaError::Missing(key)
                }
            })
        };
        let (cert, key) = (read(CERT_KEY)?, read(KEY_KEY)?);
        let pair = KeyPair::from_pem(key).map_err(|error| CaError::Key(error.to_string()))?;
        let info = cert_info(cert).map_err(CaError::Cert)?;
        if !info.is_ca {
            return Err(CaError::Cert("no basicConstraints CA:TRUE".to_owned()));
        }
        let not_after = info.not_after;
        let issuer =
            Issuer::from_ca_cert_pem(cert, pair).map_err(|error| CaError::Cert(error.to_string()))?;
        let ca = LinkCa {
            pem: Pem {
                cert: cert.to_owned(),
                key: key.to_owned(),
            },
            issuer,
            not_after,
        };
        let left = not_after.duration_since(now).unwrap_or_default();
        if left < LEAF_LIFETIME {
            return Err(CaError::Expiring(left.as_secs()));
        }
        // The key must be the certificate's: a leaf signed with it must verify against the certificate.
        let probe = ca
            .issue(Leaf::Node, "probe", now)
            .map_err(|error| CaError::Unusable(error.to_string()))?;
        check_pem(
            ca.pem.cert.as_bytes(),
            probe.cert.as_bytes(),
            probe.key.as_bytes(),
            LinkRole::Node,
            now,
        )
        .map_err(|error| CaError::Unusable(error.to_string()))?;
        Ok(ca)
    }

    /// The CA certificate, PEM (the leaves' `ca.crt`).
    pub fn cert_pem(&self) -> &str {
        &self.pem.cert
    }

    /// When the CA expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// A new leaf of `leaf`'s kind for the cluster `cluster`, valid from `now` (backdated) for
    /// [`LEAF_LIFETIME`]: a gate's for `clientAuth`, a node's for `serverAuth` and the name
    /// [`LINK_TLS_SERVER_NAME`].
    ///
    /// # Errors
    /// [`MintError`] if rcgen refuses.
    pub fn issue(&self, leaf: Leaf, cluster: &str, now: SystemTime) -> Result<Pem, MintError> {
        self.issue_valid_for(leaf, cluster, now, LEAF_LIFETIME)
    }

    /// [`LinkCa::issue`] with another lifetime (tests make leaves close to their renewal with it).
    ///
    /// # Errors
    /// [`MintError`] if rcgen refuses.
    pub fn issue_valid_for(
        &self,
        leaf: Leaf,
        cluster: &str,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Pem, MintError> {
        let names = match leaf {
            Leaf::Node => vec![LINK_TLS_SERVER_NAME.to_owned()],
            Leaf::Gate => vec!["switchyard-gate".to_owned()],
        };
        let mut params = CertificateParams::new(names).map_err(mint_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{cluster} {}", leaf.as_str()));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match leaf {
            Leaf::Gate => ExtendedKeyUsagePurpose::ClientAuth,
            Leaf::Node => ExtendedKeyUsagePurpose::ServerAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        params.not_before = time(now - BACKDATE);
        // Never past the CA: a leaf outliving its issuer would not verify anyway.
        params.not_after = time((now + lifetime).min(self.not_after));
        let key = KeyPair::generate().map_err(mint_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(mint_error)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// Mints a CA and reads it back as a [`LinkCa`] (for a new cluster, and for tests).
///
/// # Errors
/// [`MintError`] if rcgen refuses.
pub fn new_ca(cluster: &str, namespace: &str, now: SystemTime) -> Result<(Pem, LinkCa), MintError> {
    let pem = mint_ca(cluster, namespace, now)?;
    let ca = LinkCa::from_secret(&ca_secret_data(&pem), now).map_err(|error| MintError(error.to_string()))?;
    Ok((pem, ca))
}

/// A leaf of `leaf`'s kind from `ca` (see [`LinkCa::issue`]).
///
/// # Errors
/// [`MintError`] if rcgen refuses.
pub fn mint_leaf(ca: &LinkCa, leaf: Leaf, cluster: &str, now: SystemTime) -> Result<Pem, MintError> {
    ca.issue(leaf, cluster, now)
}

/// The data of the CA's Secret.
pub fn ca_secret_data(ca: &Pem) -> BTreeMap<String, ByteString> {
    BTreeMap::from([
        (CERT_KEY.to_owned(), ByteString(ca.cert.clone().into_bytes())),
        (KEY_KEY.to_owned(), ByteString(ca.key.clone().into_bytes())),
    ])
}

/// The data of a leaf's Secret: the leaf, its key and the CA certificate.
pub fn leaf_secret_data(leaf: &Pem, ca: &LinkCa) -> BTreeMap<String, ByteString> {
    BTreeMap::from([
        (CERT_KEY.to_owned(), ByteString(leaf.cert.clone().into_bytes())),
        (KEY_KEY.to_owned(), ByteString(leaf.key.clone().into_bytes())),
        (
            CA_CERT_KEY.to_owned(),
            ByteString(ca.cert_pem().as_bytes().to_vec()),
        ),
    ])
}

/// When a certificate valid from `not_before` to `not_after` is renewed: once less than a third of its
/// lifetime is left.
pub fn renewal_time(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    not_after - lifetime / 3
}

/// Why a leaf is issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issue {
    /// There is no Secret.
    Missing,
    /// A key is missing, too large or not PEM, or the set is not one the processes accept (another CA, the
    /// wrong purpose, a key that does not match, expired).
    Invalid(String),
    /// Its `ca.crt` is not the current CA (the CA was replaced).
    CaChanged,
    /// Less than a third of its lifetime is left.
    Due,
}

impl Issue {
    /// The `reason` label of `switchyard_operator_link_certificates_issued_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Issue::Missing => "missing",
            Issue::Invalid(_) => "invalid",
            Issue::CaChanged => "ca_changed",
            Issue::Due => "renewal",
        }
    }
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Issue::Missing => f.write_str("no Secret"),
            Issue::Invalid(why) => write!(f, "not usable: {why}"),
            Issue::CaChanged => f.write_str("issued by another CA than the current one"),
            Issue::Due => f.write_str("less than a third of its lifetime left"),
        }
    }
}

/// What to do with a stored leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafCheck {
    /// Good until `renew_at`.
    Keep { renew_at: SystemTime },
    /// Issue a new one.
    Issue(Issue),
}

/// Decides what to do with the stored data of `leaf`'s Secret (`None`: no Secret) at `now`, given the
/// current CA.
pub fn check_leaf(
    ca: &LinkCa,
    data: Option<&BTreeMap<String, ByteString>>,
    leaf: Leaf,
    now: SystemTime,
) -> LeafCheck {
    let Some(data) = data else {
        return LeafCheck::Issue(Issue::Missing);
    };
    let mut parts = [""; 3];
    for (slot, key) in parts.iter_mut().zip([CERT_KEY, KEY_KEY, CA_CERT_KEY]) {
        match text(data, key) {
            Ok(value) => *slot = value,
            Err((key, true)) => {
                return LeafCheck::Issue(Issue::Invalid(format!(
                    "{key} is larger than {MAX_PEM_BYTES} bytes"
                )));
            }
            Err((key, false)) => {
                return LeafCheck::Issue(Issue::Invalid(format!("no {key} PEM text")));
            }
        }
    }
    let [cert, key, stored_ca] = parts;
    if stored_ca != ca.cert_pem() {
        return LeafCheck::Issue(Issue::CaChanged);
    }
    if let Err(error) = check_pem(
        ca.cert_pem().as_bytes(),
        cert.as_bytes(),
        key.as_bytes(),
        leaf.role(),
        now,
    ) {
        return LeafCheck::Issue(Issue::Invalid(error.to_string()));
    }
    let info = match cert_info(cert) {
        Ok(info) => info,
        Err(error) => return LeafCheck::Issue(Issue::Invalid(format!("tls.crt: {error}"))),
    };
    let renew_at = renewal_time(info.not_before, info.not_after);
    if now >= renew_at {
        LeafCheck::Issue(Issue::Due)
    } else {
        LeafCheck::Keep { renew_at }
    }
}

#[cfg(test)]
#[path = "link_certs_tests.rs"]
mod tests;

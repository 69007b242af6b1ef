//! The locator's configuration: the URL (one server, TLS, or a Redis Cluster), credentials, the CA of
//! `rediss://`, the key prefix, and the redacted form of all that for messages.

use std::fmt;
use std::time::Duration;

use redis::{ConnectionInfo, IntoConnectionInfo, ProtocolVersion, RedisResult, TlsCertificates};

use super::{DEFAULT_CACHE_CAPACITY, DEFAULT_PREFIX, DEFAULT_TIMEOUT, MAX_TIMEOUT};
use crate::contract;

const URL_SCHEME_CLUSTER: &str = "redis+cluster://";
const URL_SCHEME_TLS: &str = "rediss://";

/// How to reach Redis and how to use it. Build with [`RedisLocatorConfig::new`], then adjust the fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisLocatorConfig {
    /// `redis://host:port` for one server, `rediss://host:port` for one server over TLS,
    /// `redis+cluster://host:port,host:port` for a Redis Cluster (see the module documentation).
    pub url: String,
    /// Prefix of every key and of the event channel, of the grammar
    /// [`contract::LOCATOR_PREFIX_REGEX`] (no braces: a `{...}` hash tag would put every key in one
    /// cluster slot).
    pub prefix: String,
    /// Bound on every Redis operation, and on each network step of [`super::RedisLocator::connect`]; at
    /// most 60 s.
    pub timeout: Duration,
    /// Most entries the `locate_gate` cache holds (rounded up to an even number); 0 disables it.
    pub cache_capacity: usize,
    /// ACL user (`AUTH user password`); replaces the URL's. `None`: the URL's, else the `default` user.
    pub username: Option<String>,
    /// Password (`requirepass` or the ACL user's); replaces the URL's. Never printed.
    pub password: Option<String>,
    /// PEM CA bundle trusted for `rediss://` instead of the system's roots (a private CA). Only with
    /// `rediss://`.
    pub ca_pem: Option<Vec<u8>>,
}

impl RedisLocatorConfig {
    /// A configuration for `url` with the default prefix, timeout and cache size, and no credentials or
    /// CA beyond what the URL says.
    pub fn new(url: impl Into<String>) -> Self {
        RedisLocatorConfig {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            username: None,
            password: None,
            ca_pem: None,
        }
    }

    /// Checks the configuration without connecting, so that a bad one can be reported at startup.
    ///
    /// # Errors
    /// The URL does not parse or names an unsupported scheme, the prefix or timeout is out of range, or a
    /// CA is given without TLS or holds no certificate.
    pub fn validate(&self) -> Result<(), RedisConfigError> {
        self.parse().map(|_| ())
    }

    /// The URL with its password, if any, replaced by `***`: the form to put in logs and error messages.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    pub(super) fn parse(&self) -> Result<Target, RedisConfigError> {
        contract::parse_locator_prefix(&self.prefix)?;
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(RedisConfigError::Timeout(self.timeout));
        }
        let tls = match &self.ca_pem {
            None => None,
            Some(_) if !self.url.starts_with(URL_SCHEME_TLS) => {
                return Err(RedisConfigError::CaWithoutTls(redact_url(&self.url)));
            }
            Some(pem) if !pem.windows(CERTIFICATE_PEM.len()).any(|w| w == CERTIFICATE_PEM) => {
                return Err(RedisConfigError::Ca("it holds no PEM certificate".to_owned()));
            }
            Some(pem) => Some(TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            }),
        };
        let credentials = |info: ConnectionInfo| {
            let mut settings = info.redis_settings().clone();
            if let Some(username) = &self.username {
                settings = settings.set_username(username);
            }
            if let Some(password) = &self.password {
                settings = settings.set_password(password);
            }
            info.set_redis_settings(settings)
        };
        Ok(match Target::parse(&self.url)? {
            Target::Standalone(endpoint) => Target::Standalone(Endpoint {
                info: credentials(endpoint.info),
                tls,
            }),
            Target::Cluster(seeds) => Target::Cluster(
                seeds
                    .into_iter()
                    .map(|seed| Endpoint {
                        info: credentials(seed.info),
                        tls: None,
                    })
                    .collect(),
            ),
        })
    }
}

const CERTIFICATE_PEM: &[u8] = b"-----BEGIN CERTIFICATE-----";

impl fmt::Debug for RedisLocatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLocatorConfig")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("cache_capacity", &self.cache_capacity)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

/// A [`RedisLocatorConfig`] that cannot work. The operator's fault, not Redis's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedisConfigError {
    /// The URL does not parse or has an unsupported scheme. The password, if any, is redacted.
    #[error("Redis URL {url}: {reason}")]
    Url { url: String, reason: String },
    #[error(transparent)]
    Prefix(#[from] contract::PrefixError),
    #[error("Redis timeout {0:?} must be more than zero and at most 60s")]
    Timeout(Duration),
    /// A CA bundle was given for a URL that does not use TLS.
    #[error("a Redis CA bundle is only used with rediss:// URLs, not {0}")]
    CaWithoutTls(String),
    /// The CA bundle is not PEM certificates.
    #[error("the Redis CA bundle cannot be used: {0}")]
    Ca(String),
}

/// One server to connect to: its address and credentials, and the CA to trust over TLS.
#[derive(Clone)]
pub(super) struct Endpoint {
    pub(super) info: ConnectionInfo,
    tls: Option<TlsCertificates>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr())
            .field("private_ca", &self.tls.is_some())
            .finish()
    }
}

impl Endpoint {
    fn plain(info: ConnectionInfo) -> Self {
        Endpoint { info, tls: None }
    }

    /// A client for this endpoint, trusting its CA if one is configured (the system's roots otherwise).
    pub(super) fn client(&self) -> RedisResult<redis::Client> {
        match &self.tls {
            Some(certificates) => redis::Client::build_with_tls(self.info.clone(), certificates.clone()),
            None => redis::Client::open(self.info.clone()),
        }
    }

    /// The address, for messages: never credentials.
    pub(super) fn addr(&self) -> String {
        self.info.addr().to_string()
    }

    fn with_protocol(&self, protocol: ProtocolVersion) -> Endpoint {
        let settings = self.info.redis_settings().clone().set_protocol(protocol);
        Endpoint {
            info: self.info.clone().set_redis_settings(settings),
            tls: self.tls.clone(),
        }
    }
}

/// The parsed URL. Built once per process: the size difference of the variants does not matter.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub(super) enum Target {
    Standalone(Endpoint),
    Cluster(Vec<Endpoint>),
}

impl Target {
    pub(super) fn parse(url: &str) -> Result<Target, RedisConfigError> {
        let error = |reason: String| RedisConfigError::Url {
            url: redact_url(url),
            reason,
        };
        let parse_one = |one: &str| one.into_connection_info().map_err(|e| error(e.to_string()));
        if let Some(rest) = url.strip_prefix(URL_SCHEME_CLUSTER) {
            let seeds = cluster_seed_urls(rest).map_err(|reason| error(reason.to_owned()))?;
            let infos = seeds
                .iter()
                .map(|seed| parse_one(seed).map(Endpoint::plain))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Target::Cluster(infos));
        }
        if url.starts_with("rediss+cluster://") {
            return Err(error(
                "TLS to a Redis Cluster is not supported; use rediss://host:port for one server".to_owned(),
            ));
        }
        let known = ["redis://", URL_SCHEME_TLS, "redis+unix://", "unix://"];
        if !known.iter().any(|scheme| url.starts_with(scheme)) {
            return Err(error(format!("expected {}", contract::redis_url_schemes_text())));
        }
        let mut info = parse_one(url)?;
        let names_protocol = redis::parse_redis_url(url)
            .is_some_and(|parsed| parsed.query_pairs().any(|(name, _)| name == "protocol"));
        if !names_protocol {
            let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
        }
        Ok(Target::Standalone(Endpoint::plain(info)))
    }

    /// The connections the subscriber may use, in the order it tries them. The dedicated pub/sub
    /// connection speaks RESP2.
    pub(super) fn subscribe_endpoints(&self) -> Vec<Endpoint> {
        let endpoints = match self {
            Target::Standalone(endpoint) => std::slice::from_ref(endpoint),
            Target::Cluster(seeds) => seeds.as_slice(),
        };
        endpoints
            .iter()
            .map(|endpoint| endpoint.with_protocol(ProtocolVersion::RESP2))
            .collect()
    }

    /// Where Redis is, for messages: addresses only, never credentials.
    pub(super) fn describe(&self) -> String {
        match self {
            Target::Standalone(endpoint) => endpoint.addr(),
            Target::Cluster(seeds) => {
                let addresses: Vec<String> = seeds.iter().map(Endpoint::addr).collect();
                format!("cluster {}", addresses.join(","))
            }
        }
    }
}

/// Splits the part of a `redis+cluster://` URL after the scheme into one `redis://` URL per seed.
pub(super) fn cluster_seed_urls(rest: &str) -> Result<Vec<String>, &'static str> {
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    if tail.starts_with('/') && !matches!(tail.split('?').next(), Some("/" | "/0")) {
        return Err("Redis Cluster has only database 0; remove the path");
    }
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let seeds: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(|host| match userinfo {
            Some(userinfo) => format!("redis://{userinfo}@{host}{tail}"),
            None => format!("redis://{host}{tail}"),
        })
        .collect();
    if seeds.is_empty() {
        return Err("expected at least one host:port after redis+cluster://");
    }
    Ok(seeds)
}

/// The URL with the password, if any, replaced by `***`.
pub(super) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{hosts}{tail}")
        }
        None => url.to_owned(),
    }
}

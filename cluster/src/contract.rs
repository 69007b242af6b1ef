//! The pod contract, defined once: the environment variables the operator writes into gate and node pods
//! and the processes read (each also a flag), the duration grammar of their duration values, and the URL
//! schemes of the locator. The operator (`switchyard-operator`) writes from these names, the gate command
//! and the node runtime (`switchyard_node::runtime`) read them; tests on both sides fail when either
//! drifts from this module, and `docs/pod-contract.md` is checked against [`all`].
//!
//! clap's `#[arg(env = ...)]` needs string literals, so the argument structs spell the names again; the
//! `contract` tests of the binary and of the node runtime compare every argument's `env` with this
//! module through clap's introspection.
//!
//! No dependency beyond `std` and `thiserror`: a game node and the operator both use it.

use std::time::Duration;

/// Every environment variable name of the pod contract.
pub mod env {
    // Common to gates and nodes (downward API and operator settings).
    /// Instance id: the pod name.
    pub const ID: &str = "SWITCHYARD_ID";
    /// The pod's name (downward API `metadata.name`).
    pub const POD_NAME: &str = "SWITCHYARD_POD_NAME";
    /// The pod's namespace (downward API `metadata.namespace`).
    pub const NAMESPACE: &str = "SWITCHYARD_NAMESPACE";
    /// The pod IP (downward API `status.podIP`): only referenced as `$(SWITCHYARD_POD_IP)` by other values.
    pub const POD_IP: &str = "SWITCHYARD_POD_IP";
    /// Admin HTTP address: `/healthz`, `/readyz`, `/metrics`.
    pub const HTTP: &str = "SWITCHYARD_HTTP";
    /// `memory` or a Redis URL (see [`super::REDIS_URL_SCHEMES`]).
    pub const LOCATOR: &str = "SWITCHYARD_LOCATOR";
    /// Key prefix in Redis ([`super::LOCATOR_PREFIX_REGEX`]).
    pub const LOCATOR_PREFIX: &str = "SWITCHYARD_LOCATOR_PREFIX";
    /// Redis ACL user (from a Secret); unset means the `default` user.
    pub const LOCATOR_USERNAME: &str = "SWITCHYARD_LOCATOR_USERNAME";
    /// Redis password (`secretKeyRef`): the managed Redis's generated one, or the spec's Secret.
    pub const LOCATOR_PASSWORD: &str = "SWITCHYARD_LOCATOR_PASSWORD";
    /// Path of a PEM CA bundle trusted for `rediss://` (mounted from the spec's Secret or ConfigMap).
    pub const LOCATOR_CA: &str = "SWITCHYARD_LOCATOR_CA";
    /// Log filter, e.g. `info` or `switchyard_gate=debug`.
    pub const LOG: &str = "SWITCHYARD_LOG";
    /// Path of the PEM bundle of the cluster's link CA (with [`LINK_TLS_CERT`] and [`LINK_TLS_KEY`]: mutual
    /// TLS on gate ↔ node links; none of the three: plaintext links).
    pub const LINK_TLS_CA: &str = "SWITCHYARD_LINK_TLS_CA";
    /// Path of this process's PEM link certificate chain, issued by the link CA.
    pub const LINK_TLS_CERT: &str = "SWITCHYARD_LINK_TLS_CERT";
    /// Path of the PEM private key of [`LINK_TLS_CERT`].
    pub const LINK_TLS_KEY: &str = "SWITCHYARD_LINK_TLS_KEY";
    /// A duration ([`super::parse_duration`]): how often the link TLS files are checked for a replacement.
    pub const LINK_TLS_RELOAD_INTERVAL: &str = "SWITCHYARD_LINK_TLS_RELOAD_INTERVAL";

    // Packet settings (ConfigMap `NAME-config`, `envFrom`): client, gate and node agree on them.
    pub const BYTE_ORDER: &str = "SWITCHYARD_BYTE_ORDER";
    pub const ROUTE_BYTES: &str = "SWITCHYARD_ROUTE_BYTES";
    pub const SEQ_BYTES: &str = "SWITCHYARD_SEQ_BYTES";
    pub const MAX_PACKET_BYTES: &str = "SWITCHYARD_MAX_PACKET_BYTES";

    // Gates only.
    pub const TCP: &str = "SWITCHYARD_TCP";
    pub const WS: &str = "SWITCHYARD_WS";
    pub const WS_PATH: &str = "SWITCHYARD_WS_PATH";
    /// A duration ([`super::parse_duration`]).
    pub const HEARTBEAT_INTERVAL: &str = "SWITCHYARD_HEARTBEAT_INTERVAL";
    pub const HEARTBEAT_MODE: &str = "SWITCHYARD_HEARTBEAT_MODE";
    pub const MAX_CONNECTIONS: &str = "SWITCHYARD_MAX_CONNECTIONS";
    /// Connections from one source address at most; 0: no cap.
    pub const MAX_CONNECTIONS_PER_IP: &str = "SWITCHYARD_MAX_CONNECTIONS_PER_IP";
    /// Packets per second per connection; 0: no limit.
    pub const RATE_LIMIT: &str = "SWITCHYARD_RATE_LIMIT";
    /// Packets at once before the rate limit applies; 0: one second's worth.
    pub const RATE_BURST: &str = "SWITCHYARD_RATE_BURST";
    /// A duration ([`super::parse_duration`]): close a connection not logged in by then; 0: never.
    pub const AUTHORIZE_TIMEOUT: &str = "SWITCHYARD_AUTHORIZE_TIMEOUT";
    /// `true`: heartbeats carry the server time.
    pub const HEARTBEAT_TIME: &str = "SWITCHYARD_HEARTBEAT_TIME";
    /// `true`: client connections start with a PROXY protocol v2 header (behind an L4 load balancer).
    pub const PROXY_PROTOCOL: &str = "SWITCHYARD_PROXY_PROTOCOL";
    /// PEM certificate chain of the client listeners (with [`TLS_KEY`]); only with client TLS.
    pub const TLS_CERT: &str = "SWITCHYARD_TLS_CERT";
    /// PEM private key of [`TLS_CERT`].
    pub const TLS_KEY: &str = "SWITCHYARD_TLS_KEY";
    /// A duration ([`super::parse_duration`]).
    pub const GATE_DRAIN_DEADLINE: &str = "SWITCHYARD_GATE_DRAIN_DEADLINE";
    /// `static` or `kubernetes`.
    pub const REGISTRY: &str = "SWITCHYARD_REGISTRY";
    /// Headless Service of the node pool whose EndpointSlices list the nodes.
    pub const NODE_SERVICE: &str = "SWITCHYARD_NODE_SERVICE";
    /// Name of the node Service port that carries gate links.
    pub const LINK_PORT_NAME: &str = "SWITCHYARD_LINK_PORT_NAME";
    /// The routing policy of every pool, `POOL=POLICY` pairs separated by commas
    /// ([`super::parse_pool_routing`]), e.g. `lobby=round-robin,battle=least-bound`. Written into gate pods of
    /// every cluster (the single-pool form has one pool, `game`).
    pub const POOL_ROUTING: &str = "SWITCHYARD_POOL_ROUTING";

    // Nodes only.
    /// Address gates connect to.
    pub const LINK: &str = "SWITCHYARD_LINK";
    /// A duration ([`super::parse_duration`]).
    pub const DRAIN_DEADLINE: &str = "SWITCHYARD_DRAIN_DEADLINE";
    /// The node's pool ([`super::DEFAULT_POOL`] in the single-pool form, else a name of `spec.pools`).
    pub const POOL: &str = "SWITCHYARD_POOL";
    /// `true`: the node keeps the bound-players, pod-deletion-cost and routes annotations of its own pod up
    /// to date. Not written by the operator (which reads each node's `/load` and writes them itself, so
    /// nodes need no right to write pods); reserved in `spec.node.env`. For nodes run without the operator.
    pub const REPORT_POD: &str = "SWITCHYARD_REPORT_POD";
    /// Downward API annotations file watched for `switchyard.dev/drain: "true"`.
    pub const DRAIN_FILE: &str = "SWITCHYARD_DRAIN_FILE";
    /// Payload codec of the game's handlers: `json`, `msgpack` or `protobuf`.
    pub const CODEC: &str = "SWITCHYARD_CODEC";
    /// Link connections (from gates, or anyone reaching the link port) a node keeps open at most.
    pub const MAX_LINKS: &str = "SWITCHYARD_MAX_LINKS";
    /// Gates and nodes: a duration; a link whose write makes no progress this long is closed.
    pub const LINK_WRITE_TIMEOUT: &str = "SWITCHYARD_LINK_WRITE_TIMEOUT";
    /// Gates and nodes: bytes of packets and bodies queued per link direction before senders wait.
    pub const LINK_QUEUE_BYTES: &str = "SWITCHYARD_LINK_QUEUE_BYTES";
    /// Nodes: lanes (connections with a queue on the node) one gate link may hold.
    pub const MAX_LANES_PER_LINK: &str = "SWITCHYARD_MAX_LANES_PER_LINK";
    /// Nodes: payload bytes queued over the lanes of one gate link.
    pub const LINK_LANE_BYTES: &str = "SWITCHYARD_LINK_LANE_BYTES";

    // OpenTelemetry, the standard names (only when the GameCluster sets `spec.tracing.otlpEndpoint`).
    pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
    pub const OTEL_TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
    pub const OTEL_TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
    /// Not written by the operator; read to refuse a protocol other than `grpc`.
    pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
}

/// Written into gate and node pods alike (the pod IP first, so later values can reference it).
pub const COMMON: [&str; 8] = [
    env::POD_IP,
    env::ID,
    env::POD_NAME,
    env::NAMESPACE,
    env::HTTP,
    env::LOCATOR,
    env::LOCATOR_PREFIX,
    env::LOG,
];

/// The Redis credentials and CA, in gate and node pods alike: the password always with the managed Redis,
/// each of them with an external Redis when the spec names its Secret (or ConfigMap, for the CA).
pub const LOCATOR_AUTH: [&str; 3] = [env::LOCATOR_USERNAME, env::LOCATOR_PASSWORD, env::LOCATOR_CA];

/// The packet settings, from the cluster's ConfigMap into gate and node pods.
pub const PACKET: [&str; 4] = [
    env::BYTE_ORDER,
    env::ROUTE_BYTES,
    env::SEQ_BYTES,
    env::MAX_PACKET_BYTES,
];

/// Written into gate and node pods when tracing is on.
pub const TRACING: [&str; 4] = [
    env::OTEL_EXPORTER_OTLP_ENDPOINT,
    env::OTEL_SERVICE_NAME,
    env::OTEL_TRACES_SAMPLER,
    env::OTEL_TRACES_SAMPLER_ARG,
];

/// Written into gate pods only (the TLS files only with client TLS).
pub const GATE_ONLY: [&str; 19] = [
    env::TCP,
    env::WS,
    env::WS_PATH,
    env::HEARTBEAT_INTERVAL,
    env::HEARTBEAT_MODE,
    env::HEARTBEAT_TIME,
    env::MAX_CONNECTIONS,
    env::MAX_CONNECTIONS_PER_IP,
    env::RATE_LIMIT,
    env::RATE_BURST,
    env::AUTHORIZE_TIMEOUT,
    env::PROXY_PROTOCOL,
    env::TLS_CERT,
    env::TLS_KEY,
    env::GATE_DRAIN_DEADLINE,
    env::REGISTRY,
    env::NODE_SERVICE,
    env::LINK_PORT_NAME,
    env::POOL_ROUTING,
];

/// Written into node pods only.
pub const NODE_ONLY: [&str; 5] = [
    env::LINK,
    env::DRAIN_DEADLINE,
    env::POOL,
    env::DRAIN_FILE,
    env::CODEC,
];

/// Written into gate and node pods alike when the GameCluster's links use mutual TLS (`spec.links.tls`,
/// by default): the paths of the CA, certificate and key in the mounted link Secret.
pub const LINK_TLS: [&str; 3] = [env::LINK_TLS_CA, env::LINK_TLS_CERT, env::LINK_TLS_KEY];

/// Read by gates and nodes alike, and not written by the operator: how often the link TLS files are
/// checked (the default suits a Secret volume), and the link bounds (their defaults hold in Kubernetes).
pub const NOT_WRITTEN: [&str; 6] = [
    env::LINK_TLS_RELOAD_INTERVAL,
    env::MAX_LINKS,
    env::LINK_WRITE_TIMEOUT,
    env::LINK_QUEUE_BYTES,
    env::MAX_LANES_PER_LINK,
    env::LINK_LANE_BYTES,
];

/// The DNS name on every node's link certificate, which gates check (nodes are reached by pod IP, so the
/// name is the cluster's fixed one, not an address; the CA makes it the cluster's).
pub const LINK_TLS_SERVER_NAME: &str = "switchyard-link";

/// The pool of a cluster without `spec.pools` (the single-pool form, `spec.node`).
pub const DEFAULT_POOL: &str = "game";

/// The gate's routing policies, as [`env::POOL_ROUTING`] spells them.
pub const ROUTING_POLICIES: [&str; 3] = ["round-robin", "random", "least-bound"];

/// A [`env::POOL_ROUTING`] value that is not `POOL=POLICY,...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolRoutingError {
    #[error("{0:?} is not POOL=POLICY (e.g. battle=least-bound)")]
    Syntax(String),
    #[error("{policy:?} (pool {pool}) is not one of: round-robin, random, least-bound")]
    Policy { pool: String, policy: String },
    #[error("pool {0} is given twice")]
    Duplicate(String),
}

/// `(pool, policy)` pairs as [`env::POOL_ROUTING`] holds them.
pub fn format_pool_routing<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .map(|(pool, policy)| format!("{pool}={policy}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads [`env::POOL_ROUTING`]: `(pool, policy)` pairs in order; an empty value is none.
///
/// # Errors
/// [`PoolRoutingError`] naming the item.
pub fn parse_pool_routing(text: &str) -> Result<Vec<(String, String)>, PoolRoutingError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let (pool, policy) = item
            .split_once('=')
            .filter(|(pool, _)| !pool.trim().is_empty())
            .ok_or_else(|| PoolRoutingError::Syntax(item.to_owned()))?;
        let (pool, policy) = (pool.trim().to_owned(), policy.trim().to_owned());
        if !ROUTING_POLICIES.contains(&policy.as_str()) {
            return Err(PoolRoutingError::Policy { pool, policy });
        }
        if pairs.iter().any(|(seen, _)| *seen == pool) {
            return Err(PoolRoutingError::Duplicate(pool));
        }
        pairs.push((pool, policy));
    }
    Ok(pairs)
}

/// Written only to be referenced by other values (`$(SWITCHYARD_POD_IP):9090`): no process reads it.
pub const REFERENCE_ONLY: [&str; 1] = [env::POD_IP];

/// Gate settings a game must not set on its node pods either (`spec.node.env`): a node process that read
/// them would be confused about its role.
const GATE_SETTINGS_RESERVED_ON_NODES: [&str; 3] = [env::REGISTRY, env::NODE_SERVICE, env::POOL_ROUTING];

/// Every name of the contract that the operator writes, in the order of the tables of
/// `docs/pod-contract.md` (common, locator credentials, link TLS, packet, tracing, gate, node), then the
/// names the processes read that the operator does not write ([`NOT_WRITTEN`]).
pub fn all() -> impl Iterator<Item = &'static str> {
    COMMON
        .into_iter()
        .chain(LOCATOR_AUTH)
        .chain(LINK_TLS)
        .chain(PACKET)
        .chain(TRACING)
        .chain(GATE_ONLY)
        .chain(NODE_ONLY)
        .chain(NOT_WRITTEN)
}

/// The names the operator writes into gate pods.
pub fn gate_env() -> impl Iterator<Item = &'static str> {
    COMMON
        .into_iter()
        .chain(LOCATOR_AUTH)
        .chain(LINK_TLS)
        .chain(PACKET)
        .chain(TRACING)
        .chain(GATE_ONLY)
}

/// The names the operator writes into node pods.
pub fn node_env() -> impl Iterator<Item = &'static str> {
    COMMON
        .into_iter()
        .chain(LOCATOR_AUTH)
        .chain(LINK_TLS)
        .chain(PACKET)
        .chain(TRACING)
        .chain(NODE_ONLY)
}

/// Whether a game may not set `name` in `spec.node.env`: the operator owns it.
pub fn is_reserved_node_env(name: &str) -> bool {
    name.starts_with("SWITCHYARD_")
        && (node_env().any(|owned| owned == name)
            || GATE_SETTINGS_RESERVED_ON_NODES.contains(&name)
            // The operator writes the node pod's annotations; a node asked to patch its pod would only
            // fail (its ServiceAccount may not).
            || name == env::REPORT_POD)
}

// ---------------------------------------------------------------------------------------------------------
// Durations

/// The duration grammar as a regular expression: digits, an optional fraction, an optional unit (`ms`, `s`,
/// `m`, `h`; none means seconds). `0` is a duration (it disables what it times).
pub const DURATION_REGEX: &str = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)?$";
/// [`DURATION_REGEX`] as a CEL rule of the CRD (the API server checks it; backslashes doubled for the CEL
/// string literal).
pub const DURATION_CEL_RULE: &str = r"self.matches('^[0-9]+(\\.[0-9]+)?(ms|s|m|h)?$')";

/// A value that is not a duration of the contract's grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration like 10s, 500ms, 2m or 0")]
    Syntax(String),
    #[error("{0:?} has an unknown unit (use ms, s, m or h)")]
    Unit(String),
    #[error("{0:?} is too long a duration")]
    Range(String),
}

/// Parses a duration of the contract's grammar ([`DURATION_REGEX`]): `250ms`, `10s`, `1.5m`, `2h`, or a plain
/// number of seconds. The same grammar the operator's CRD accepts: nothing it admits is refused here.
///
/// # Errors
/// [`DurationError`] naming the text.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let syntax_ok = match number.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(number),
    };
    if !syntax_ok {
        return Err(DurationError::Syntax(text.to_owned()));
    }
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(DurationError::Unit(text.to_owned())),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| DurationError::Syntax(text.to_owned()))?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| DurationError::Range(text.to_owned()))
}

/// Whether `text` is a duration of the contract's grammar.
pub fn is_duration(text: &str) -> bool {
    parse_duration(text).is_ok()
}

// ---------------------------------------------------------------------------------------------------------
// Locator URLs

/// The value of [`env::LOCATOR`] that selects the in-process locator (one process only).
pub const MEMORY_LOCATOR: &str = "memory";

/// The URL schemes of a Redis locator: one server, one server over TLS, a Redis Cluster.
pub const REDIS_URL_SCHEMES: [&str; 3] = ["redis://", "rediss://", "redis+cluster://"];

/// [`REDIS_URL_SCHEMES`] as a CEL rule of the CRD.
pub const REDIS_URL_CEL_RULE: &str =
    "self.startsWith('redis://') || self.startsWith('rediss://') || self.startsWith('redis+cluster://')";

/// Whether `url` starts with one of [`REDIS_URL_SCHEMES`].
pub fn is_redis_url(url: &str) -> bool {
    REDIS_URL_SCHEMES.iter().any(|scheme| url.starts_with(scheme))
}

/// A URL whose userinfo carries a password (`scheme://user:secret@host`, `scheme://:secret@host`), as a
/// regular expression. A GameCluster must name a Secret instead: a spec is readable by everyone who may
/// read GameClusters, and it is copied into every pod's environment.
pub const URL_PASSWORD_REGEX: &str = r"^[a-z+]+://[^/?#@]*:[^/?#@]*@";
/// [`URL_PASSWORD_REGEX`] refused, as a CEL rule of the CRD.
pub const URL_NO_PASSWORD_CEL_RULE: &str = r"!self.matches('^[a-z+]+://[^/?#@]*:[^/?#@]*@')";

/// Whether `url` carries a password in its userinfo ([`URL_PASSWORD_REGEX`]).
pub fn url_has_password(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_lowercase() || b == b'+') {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .split_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

// ---------------------------------------------------------------------------------------------------------
// Key prefixes

/// The longest key prefix, in bytes.
pub const MAX_LOCATOR_PREFIX_BYTES: usize = 64;
/// The key prefix grammar: 1 to 64 ASCII letters, digits and `:`, `_`, `.`, `-`. No braces (a `{...}` hash
/// tag would put every key in one Redis Cluster slot), no whitespace, nothing that needs quoting.
pub const LOCATOR_PREFIX_REGEX: &str = r"^[A-Za-z0-9:_.-]{1,64}$";
/// [`LOCATOR_PREFIX_REGEX`] as a CEL rule of the CRD.
pub const LOCATOR_PREFIX_CEL_RULE: &str = r"self.matches('^[A-Za-z0-9:_.-]{1,64}$')";

/// A key prefix outside [`LOCATOR_PREFIX_REGEX`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Redis key prefix {0:?} must be 1 to 64 characters of A-Z, a-z, 0-9 and : _ . -")]
pub struct PrefixError(pub String);

/// Checks a key prefix against [`LOCATOR_PREFIX_REGEX`]; usable as a clap value parser.
///
/// # Errors
/// [`PrefixError`] naming the prefix.
pub fn parse_locator_prefix(prefix: &str) -> Result<String, PrefixError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'-');
    if prefix.is_empty() || prefix.len() > MAX_LOCATOR_PREFIX_BYTES || !prefix.bytes().all(allowed) {
        return Err(PrefixError(prefix.to_owned()));
    }
    Ok(prefix.to_owned())
}

/// Whether `prefix` follows [`LOCATOR_PREFIX_REGEX`].
pub fn is_locator_prefix(prefix: &str) -> bool {
    parse_locator_prefix(prefix).is_ok()
}

/// "redis://, rediss:// or redis+cluster://", for messages.
pub fn redis_url_schemes_text() -> String {
    match REDIS_URL_SCHEMES.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => REDIS_URL_SCHEMES.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_the_grammar() {
        for (text, expected) in [
            ("250ms", Duration::from_millis(250)),
            ("10", Duration::from_secs(10)),
            ("0", Duration::ZERO),
            ("1.5s", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("1.5m", Duration::from_secs(90)),
            ("2h", Duration::from_secs(7200)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for bad in [
            "",
            "ten",
            "5 parsecs",
            "1.",
            ".5s",
            "1.2.3s",
            "-1s",
            " 10s",
            "10s ",
            "10d",
            "ms",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} is refused");
        }
        assert!(matches!(parse_duration("3d"), Err(DurationError::Unit(_))));
        assert!(matches!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::Range(_))
        ));
    }

    #[test]
    fn the_cel_rules_say_what_the_code_checks() {
        let escaped = DURATION_REGEX.replace('\\', r"\\");
        assert_eq!(DURATION_CEL_RULE, format!("self.matches('{escaped}')"));
        let schemes: Vec<String> = REDIS_URL_SCHEMES
            .iter()
            .map(|scheme| format!("self.startsWith('{scheme}')"))
            .collect();
        assert_eq!(REDIS_URL_CEL_RULE, schemes.join(" || "));
        assert_eq!(
            redis_url_schemes_text(),
            "redis://, rediss:// or redis+cluster://"
        );
        assert_eq!(
            URL_NO_PASSWORD_CEL_RULE,
            format!("!self.matches('{URL_PASSWORD_REGEX}')")
        );
        assert_eq!(
            LOCATOR_PREFIX_CEL_RULE,
            format!("self.matches('{LOCATOR_PREFIX_REGEX}')")
        );
        assert!(LOCATOR_PREFIX_REGEX.contains(&format!("{{1,{MAX_LOCATOR_PREFIX_BYTES}}}")));
        assert!(is_redis_url("redis+cluster://a:1,b:2"));
        assert!(!is_redis_url("http://redis:6379"));
    }

    #[test]
    fn passwords_in_urls_are_found() {
        for with in [
            "redis://user:secret@redis:6379",
            "redis://:secret@redis:6379",
            "rediss://u:p@h:1/0",
            "redis+cluster://u:p@a:1,b:2",
        ] {
            assert!(url_has_password(with), "{with}");
        }
        for without in [
            "redis://redis:6379",
            "redis://user@redis:6379",
            "redis+cluster://a:1,b:2",
            "rediss://h:1/0?x=a:b@c",
            "memory",
        ] {
            assert!(!url_has_password(without), "{without}");
        }
    }

    #[test]
    fn prefixes_follow_the_grammar() {
        for good in [
            "switchyard",
            "switchyard:arena",
            "a",
            "A-b_c.d:9",
            &"x".repeat(64),
        ] {
            assert!(is_locator_prefix(good), "{good}");
        }
        for bad in ["", "has space", "{tag}", "a\nb", "é", "a*b", &"x".repeat(65)] {
            assert!(!is_locator_prefix(bad), "{bad:?}");
        }
        assert_eq!(
            parse_locator_prefix("a b").map_err(|error| error.to_string()),
            Err(
                "Redis key prefix \"a b\" must be 1 to 64 characters of A-Z, a-z, 0-9 and : _ . -".to_owned()
            )
        );
    }

    #[test]
    fn pool_routing_round_trips_and_refuses_bad_items() {
        let text = format_pool_routing([("lobby", "round-robin"), ("battle", "least-bound")]);
        assert_eq!(text, "lobby=round-robin,battle=least-bound");
        assert_eq!(
            parse_pool_routing(&text),
            Ok(vec![
                ("lobby".to_owned(), "round-robin".to_owned()),
                ("battle".to_owned(), "least-bound".to_owned())
            ])
        );
        assert_eq!(parse_pool_routing(""), Ok(vec![]));
        assert!(matches!(
            parse_pool_routing("lobby"),
            Err(PoolRoutingError::Syntax(_))
        ));
        assert!(matches!(
            parse_pool_routing("=random"),
            Err(PoolRoutingError::Syntax(_))
        ));
        assert!(matches!(
            parse_pool_routing("lobby=fastest"),
            Err(PoolRoutingError::Policy { .. })
        ));
        assert_eq!(
            parse_pool_routing("a=random,a=random"),
            Err(PoolRoutingError::Duplicate("a".into()))
        );
    }

    #[test]
    fn names_are_unique_and_reserved_names_cover_the_node_env() {
        let mut names: Vec<&str> = all().collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a name appears in two groups");
        assert!(node_env().all(|name| !name.starts_with("SWITCHYARD_") || is_reserved_node_env(name)));
        assert!(is_reserved_node_env(env::REGISTRY));
        assert!(!is_reserved_node_env(env::TCP));
        assert!(!is_reserved_node_env("SWITCHYARD_GAME_MODE"));
    }
}

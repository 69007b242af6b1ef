//! The `GameCluster` custom resource (`switchyard.dev/v1alpha1`): its spec, status and generated
//! CustomResourceDefinition.
//!
//! Every spec field has a default (both a serde default, so the operator reads old or partial objects, and
//! a schema default, so the API server stores the effective value). What the OpenAPI schema cannot say is
//! written as CEL rules (`x-kubernetes-validations`), so the API server refuses a spec that cannot work with
//! a message naming the field. [`crate::children`] checks the same rules again (the CRD installed in a
//! cluster may be older than the operator), plus what CEL cannot see.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use switchyard_cluster::contract;

/// API group of every Switchyard resource.
pub const GROUP: &str = "switchyard.dev";
/// API version of [`GameCluster`].
pub const VERSION: &str = "v1alpha1";
/// Longest `GameCluster` name: the longest child name (`NAME-gate-headless`) must stay a 63-character
/// DNS label.
pub const MAX_NAME_LENGTH: usize = 47;
/// The admin HTTP port of gates and nodes (`/healthz`, `/readyz`, `/metrics`).
pub const ADMIN_PORT: i32 = 9090;
/// The node port that gates link to.
pub const LINK_PORT: i32 = 7400;
/// Smallest `maxPacketBytes` the packet codec accepts for any widths: a heartbeat carrying the server time.
pub const MIN_MAX_PACKET_BYTES: i32 = 9;
/// Largest `maxPacketBytes` the operator accepts (64 MiB).
pub const MAX_MAX_PACKET_BYTES: i32 = 64 * 1024 * 1024;
/// Longest drain deadline, gates and nodes (one day).
pub const MAX_DRAIN_DEADLINE_SECONDS: i32 = 86_400;

/// One Switchyard cluster: gates, a node pool, their Services, RBAC, disruption budgets, and a Redis
/// locator when the spec names none.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "GameCluster",
    plural = "gameclusters",
    shortname = "gc",
    category = "switchyard",
    namespaced,
    status = "GameClusterStatus",
    derive = "PartialEq",
    doc = "A Switchyard game-server cluster: gates that hold player connections, a node pool that runs the game, and the Services, RBAC and Redis locator that join them.",
    scale(
        spec_replicas_path = ".spec.node.replicas",
        status_replicas_path = ".status.node.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Gates",
        type_ = "integer",
        description = "Ready gate pods",
        json_path = ".status.gate.ready"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        description = "Ready node pods",
        json_path = ".status.node.ready"
    ),
    printcolumn(
        name = "Players",
        type_ = "integer",
        description = "Players bound to nodes",
        json_path = ".status.boundPlayers"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        description = "Every gate and node is ready",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 47 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS label of at most 47 characters that starts with a letter (child objects append up to 16 characters, e.g. -gate-headless)"),
    validation = Rule::new("!has(self.spec.pools) || self.spec.pools.all(p, size(self.metadata.name) + size(p.name) <= 57)").message("metadata.name and each pools[].name together must be at most 57 characters (the pool's objects are named NAME-node-POOL, a 63-character DNS label)")
)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.node) || !has(self.pools) || size(self.pools) == 0",
    "message": "spec.node and spec.pools are exclusive: put the node pod template into a pool of spec.pools (spec.node is the single pool named game)"
}]))]
pub struct GameClusterSpec {
    /// Image of gates and nodes unless `gate.image` / `node.image` say otherwise. Default: the operator's
    /// own image (its `--default-image`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Pull policy of every container the operator renders.
    pub image_pull_policy: PullPolicy,
    /// Log filter of gates and nodes (`SWITCHYARD_LOG`), e.g. `info` or `switchyard_gate=debug`.
    #[schemars(length(min = 1, max = 256))]
    pub log: String,
    /// Packet settings shared by clients, gates and nodes.
    pub packet: PacketSpec,
    /// Where player bindings live.
    pub locator: LocatorSpec,
    /// The gates: client listeners and their Service.
    pub gate: GateSpec,
    /// The single node pool `game`: the game's own image. Scaled by the scale subresource (`kubectl scale
    /// gc/NAME`). Default: 2 replicas of the default image. Exclusive with `pools`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeSpec>,
    /// Named node pools (e.g. `lobby`, `battle`), each with its own pod template, replicas and routing
    /// policy, and each scaled by its `GamePool` `NAME-POOL` (`kubectl scale gamepool/NAME-POOL`). Exclusive
    /// with `node`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"],
        "x-kubernetes-validations" = [{
            "rule": "self.all(p, self.exists_one(q, q.name == p.name))",
            "message": "pools[].name must be unique"
        }]
    ))]
    pub pools: Vec<crate::pools::PoolSpec>,
    /// Prometheus scraping of the admin port.
    pub metrics: MetricsSpec,
    /// OpenTelemetry trace export.
    pub tracing: TracingSpec,
    /// NetworkPolicies around the cluster's pods (on by default; enforced only by a CNI that enforces them).
    pub network_policy: NetworkPolicySpec,
    /// The gate ↔ node links: mutual TLS with certificates the operator mints (the default).
    pub links: LinksSpec,
}

impl Default for GameClusterSpec {
    fn default() -> Self {
        GameClusterSpec {
            image: None,
            image_pull_policy: PullPolicy::IfNotPresent,
            log: "info".to_owned(),
            packet: PacketSpec::default(),
            locator: LocatorSpec::default(),
            gate: GateSpec::default(),
            node: None,
            pools: Vec::new(),
            metrics: MetricsSpec::default(),
            tracing: TracingSpec::default(),
            network_policy: NetworkPolicySpec::default(),
            links: LinksSpec::default(),
        }
    }
}

impl GameClusterSpec {
    /// `spec.node`, made present (with its defaults) if absent: the single-pool form's pod template.
    pub fn node_mut(&mut self) -> &mut NodeSpec {
        self.node.get_or_insert_with(NodeSpec::default)
    }
}

/// Container image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Byte order of the size, route, seq and heartbeat-time fields.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ByteOrder {
    #[default]
    Big,
    Little,
}

impl ByteOrder {
    /// The spelling of `SWITCHYARD_BYTE_ORDER`.
    pub fn as_str(self) -> &'static str {
        match self {
            ByteOrder::Big => "big",
            ByteOrder::Little => "little",
        }
    }
}

/// Packet settings (due's wire format). Clients must use the same.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.maxPacketBytes >= 1 + self.routeBytes + self.seqBytes && self.maxPacketBytes >= 9",
    "message": "packet.maxPacketBytes must hold a packet header (1 + routeBytes + seqBytes bytes) and a heartbeat with the server time (9 bytes)"
}]))]
pub struct PacketSpec {
    /// `big` (due's default) or `little`.
    pub byte_order: ByteOrder,
    /// Width of the route field: 1, 2 or 4 bytes.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self in [1, 2, 4]", "message": "packet.routeBytes must be 1, 2 or 4"}]))]
    pub route_bytes: i32,
    /// Width of the seq field: 0, 1, 2 or 4 bytes.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self in [0, 1, 2, 4]", "message": "packet.seqBytes must be 0, 1, 2 or 4"}]))]
    pub seq_bytes: i32,
    /// Largest packet a client may announce (size field value); a larger one disconnects the client.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self <= 67108864", "message": "packet.maxPacketBytes must be at most 67108864 (64 MiB)"}]))]
    pub max_packet_bytes: i32,
}

impl Default for PacketSpec {
    fn default() -> Self {
        PacketSpec {
            byte_order: ByteOrder::Big,
            route_bytes: 2,
            seq_bytes: 2,
            max_packet_bytes: 64 * 1024,
        }
    }
}

/// Where player bindings (uid → gate, uid → node) live.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct LocatorSpec {
    /// An existing Redis. When absent the operator runs one (`managedRedis`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisLocatorSpec>,
    /// The Redis the operator runs when `redis` is absent (one pod, no persistence, protected mode, and a
    /// password the operator generates once into the Secret `NAME-redis-auth`).
    pub managed_redis: ManagedRedisSpec,
}

/// An existing Redis (or Redis Cluster). Credentials come from Secrets, never from the spec: a URL with a
/// password in it is refused.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.ca) || self.url.startsWith('rediss://')",
    "message": "locator.redis.ca needs a rediss:// URL"
}]))]
pub struct RedisLocatorSpec {
    /// `redis://host:6379`, `rediss://host:6380` (TLS), or `redis+cluster://h1:p1,h2:p2`; no password
    /// (use `passwordSecretRef`).
    #[schemars(length(min = 1, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": contract::REDIS_URL_CEL_RULE,
            "message": "locator.redis.url must start with redis://, rediss:// or redis+cluster://"
        },
        {
            "rule": contract::URL_NO_PASSWORD_CEL_RULE,
            "message": "locator.redis.url must not carry a password: name a Secret in locator.redis.passwordSecretRef"
        }
    ]))]
    pub url: String,
    /// Key prefix, one per cluster sharing a Redis: 1 to 64 of `A-Z a-z 0-9 : _ . -`. Default
    /// `switchyard:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": contract::LOCATOR_PREFIX_CEL_RULE,
        "message": "locator.redis.keyPrefix must be 1 to 64 characters of A-Z, a-z, 0-9 and : _ . -"
    }]))]
    pub key_prefix: Option<String>,
    /// The Redis password (`requirepass`, or the ACL user's), from a Secret of the cluster's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// The Redis ACL user, from a Secret of the cluster's namespace. Default: Redis's `default` user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_secret_ref: Option<SecretKeyRef>,
    /// PEM CA bundle to trust for `rediss://` instead of the system's roots (a private CA), mounted into
    /// gates and nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaBundleRef>,
}

/// One key of a Secret in the cluster's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Where a CA bundle lives: one key of a Secret or of a ConfigMap in the cluster's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.secretName) != has(self.configMapName)",
    "message": "a CA bundle names exactly one of secretName and configMapName"
}]))]
pub struct CaBundleRef {
    /// Secret holding the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// ConfigMap holding the bundle (a CA certificate is not secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub config_map_name: Option<String>,
    /// Key of the bundle. Default `ca.crt`.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".to_owned()
}

/// The Redis the operator runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ManagedRedisSpec {
    /// Redis image.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Resources of the Redis container. Absent: requests of 50m CPU and 64Mi memory, no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for ManagedRedisSpec {
    fn default() -> Self {
        ManagedRedisSpec {
            image: "redis:7-alpine".to_owned(),
            resources: None,
        }
    }
}

/// Gates: client listeners, sessions, routing to nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.tcp.enabled || self.websocket.enabled", "message": "at least one of gate.tcp and gate.websocket must be enabled"},
    {"rule": "!self.tcp.enabled || !self.websocket.enabled || self.tcp.port != self.websocket.port", "message": "gate.tcp.port and gate.websocket.port must differ"}
]))]
pub struct GateSpec {
    /// Gate pods.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= 0", "message": "gate.replicas must be 0 or more"}]))]
    pub replicas: i32,
    /// Gate image; default `spec.image`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Client TCP listener.
    pub tcp: TcpSpec,
    /// Client WebSocket listener.
    pub websocket: WebSocketSpec,
    /// The client-facing Service `NAME-gate`.
    pub service: GateServiceSpec,
    /// Client heartbeats.
    pub heartbeat: HeartbeatSpec,
    /// Open client connections per gate at most.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self > 0", "message": "gate.maxConnections must be greater than 0"}]))]
    pub max_connections: i32,
    /// How long a terminating gate takes to move its clients elsewhere. The pod's grace period is this
    /// plus 10 s.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self > 0", "message": "gate.drainDeadlineSeconds must be greater than 0"},
        {"rule": "self <= 86400", "message": "gate.drainDeadlineSeconds must be at most 86400 (one day)"}
    ]))]
    pub drain_deadline_seconds: i32,
    /// Resources of the gate container. Absent: requests of 100m CPU and 128Mi memory, no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node selector of gate pods.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of gate pods.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity of gate pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Extra annotations of gate pods.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Open client connections from one source IP address per gate at most; 0: no cap. Behind a load
    /// balancer that does not keep client addresses (`externalTrafficPolicy: Cluster`, SNAT), every player
    /// shares a few addresses: leave it 0 there.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= 0", "message": "gate.maxConnectionsPerIp must be 0 or more"}]))]
    pub max_connections_per_ip: i32,
    /// Packets per second one connection may send; more are dropped and a connection that keeps exceeding
    /// it is closed.
    pub rate_limit: RateLimitSpec,
    /// How long a connection may stay without logging in (binding a uid) before the gate closes it:
    /// a duration like `30s`; `0` (the default) lets it stay.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": contract::DURATION_CEL_RULE,
        "message": "gate.loginDeadline must be a duration like 10s, 500ms, 2m or 0"
    }]))]
    pub login_deadline: String,
    /// Every client connection starts with a PROXY protocol v2 header naming the client's address: turn it
    /// on only behind an L4 load balancer that sends one (connections without it are refused). The address
    /// then counts for `maxConnectionsPerIp` and is what nodes see.
    pub proxy_protocol: bool,
    /// Client TLS: the TCP listener speaks TLS and the WebSocket one WSS, with the certificate of a
    /// `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`), reloaded by the gates when the Secret changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<GateTlsSpec>,
}

/// The per-connection packet-rate limit of gates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.burst == 0 || self.perSecond > 0",
    "message": "gate.rateLimit.burst needs gate.rateLimit.perSecond"
}]))]
pub struct RateLimitSpec {
    /// Packets per second on average; 0 (the default) turns the limit off.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= 0", "message": "gate.rateLimit.perSecond must be 0 or more"}]))]
    pub per_second: i32,
    /// Packets at once before the rate applies; 0: one second's worth.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= 0", "message": "gate.rateLimit.burst must be 0 or more"}]))]
    pub burst: i32,
}

/// The certificate of the gates' client listeners.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateTlsSpec {
    /// A `kubernetes.io/tls` Secret of the cluster's namespace (keys `tls.crt`, `tls.key`), e.g. one
    /// cert-manager renews.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

impl Default for GateSpec {
    fn default() -> Self {
        GateSpec {
            replicas: 2,
            image: None,
            tcp: TcpSpec::default(),
            websocket: WebSocketSpec::default(),
            service: GateServiceSpec::default(),
            heartbeat: HeartbeatSpec::default(),
            max_connections: 100_000,
            drain_deadline_seconds: 30,
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            pod_annotations: BTreeMap::new(),
            max_connections_per_ip: 0,
            rate_limit: RateLimitSpec::default(),
            login_deadline: "0".to_owned(),
            proxy_protocol: false,
            tls: None,
        }
    }
}

/// The client TCP listener of gates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpSpec {
    pub enabled: bool,
    /// Container and Service port.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1 && self <= 65535", "message": "gate.tcp.port must be between 1 and 65535"},
        {"rule": "self != 9090", "message": "gate.tcp.port must not be 9090, the admin port"}
    ]))]
    pub port: i32,
}

impl Default for TcpSpec {
    fn default() -> Self {
        TcpSpec {
            enabled: true,
            port: 3553,
        }
    }
}

/// The client WebSocket listener of gates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct WebSocketSpec {
    pub enabled: bool,
    /// Container and Service port.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1 && self <= 65535", "message": "gate.websocket.port must be between 1 and 65535"},
        {"rule": "self != 9090", "message": "gate.websocket.port must not be 9090, the admin port"}
    ]))]
    pub port: i32,
    /// Upgrade path.
    #[schemars(length(min = 1, max = 256))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.startsWith('/')", "message": "gate.websocket.path must start with /"}]))]
    pub path: String,
}

impl Default for WebSocketSpec {
    fn default() -> Self {
        WebSocketSpec {
            enabled: true,
            port: 3554,
            path: "/".to_owned(),
        }
    }
}

/// Type of the client-facing gate Service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The client-facing gate Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.externalTrafficPolicy) || self.type != 'ClusterIP'",
    "message": "gate.service.externalTrafficPolicy needs type NodePort or LoadBalancer"
}]))]
pub struct GateServiceSpec {
    /// `ClusterIP`, `NodePort` or `LoadBalancer`.
    #[serde(rename = "type")]
    pub type_: ServiceType,
    /// Annotations of the Service (load-balancer settings, for example).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `Local` keeps the client's source address (needed by `gate.maxConnectionsPerIp` behind a load
    /// balancer) and sends traffic only to nodes with a gate; `Cluster` spreads it. Only with `NodePort`
    /// or `LoadBalancer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<TrafficPolicy>,
}

/// `externalTrafficPolicy` of the gate Service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TrafficPolicy {
    Cluster,
    Local,
}

impl TrafficPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficPolicy::Cluster => "Cluster",
            TrafficPolicy::Local => "Local",
        }
    }
}

/// How gates treat client heartbeats.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HeartbeatMode {
    /// Answer each client heartbeat.
    #[default]
    Resp,
    /// Send one every interval.
    Tick,
}

impl HeartbeatMode {
    /// The spelling of `SWITCHYARD_HEARTBEAT_MODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            HeartbeatMode::Resp => "resp",
            HeartbeatMode::Tick => "tick",
        }
    }
}

/// Client heartbeats.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HeartbeatSpec {
    /// `10s`, `500ms`, `2m`...; `0` disables heartbeats and the idle timeout (idle close after 2 × interval).
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": contract::DURATION_CEL_RULE,
        "message": "gate.heartbeat.interval must be a duration like 10s, 500ms, 2m or 0"
    }]))]
    pub interval: String,
    /// `resp` or `tick`.
    pub mode: HeartbeatMode,
    /// Attach the server time (ns since the Unix epoch) to the heartbeats the gate sends.
    pub server_time: bool,
}

impl Default for HeartbeatSpec {
    fn default() -> Self {
        HeartbeatSpec {
            interval: "10s".to_owned(),
            mode: HeartbeatMode::Resp,
            server_time: false,
        }
    }
}

/// Payload codec of the game's handlers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    #[default]
    Json,
    Msgpack,
    Protobuf,
}

impl Codec {
    /// The spelling of `SWITCHYARD_CODEC`.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::Msgpack => "msgpack",
            Codec::Protobuf => "protobuf",
        }
    }
}

/// The node pool: pods of the game's own image (built on the node SDK).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeSpec {
    /// Node pods; the scale subresource writes this field.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= 0", "message": "replicas must be 0 or more"}]))]
    pub replicas: i32,
    /// The game's image; default `spec.image` (the demo game).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Entrypoint override; default the image's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Arguments; default `["node"]` when neither `command` nor `args` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Extra environment of the node container (after the operator's own `SWITCHYARD_*` variables, which
    /// it may reference as `$(SWITCHYARD_POD_IP)`; it may not redefine them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Payload codec: `json`, `msgpack` or `protobuf` (`SWITCHYARD_CODEC`).
    pub codec: Codec,
    /// How long a draining node keeps its players before telling them to reconnect. The pod's grace
    /// period is this plus 15 s.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self > 0", "message": "drainDeadlineSeconds of a node pool must be greater than 0"},
        {"rule": "self <= 86400", "message": "drainDeadlineSeconds of a node pool must be at most 86400 (one day)"}
    ]))]
    pub drain_deadline_seconds: i32,
    /// Resources of the node container. Absent: requests of 100m CPU and 128Mi memory, no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node selector of node pods.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of node pods.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity of node pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Extra annotations of node pods.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            replicas: 2,
            image: None,
            command: None,
            args: None,
            env: Vec::new(),
            codec: Codec::Json,
            drain_deadline_seconds: 60,
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            pod_annotations: BTreeMap::new(),
        }
    }
}

/// Prometheus scraping of the admin port (9090, `/metrics`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MetricsSpec {
    /// Expose the admin port as `metrics` on the headless Services (for ServiceMonitors).
    pub enabled: bool,
    /// Annotate gate and node pods with `prometheus.io/scrape`, `prometheus.io/port`, `prometheus.io/path`.
    pub scrape_annotations: bool,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        MetricsSpec {
            enabled: true,
            scrape_annotations: true,
        }
    }
}

/// OpenTelemetry trace export of gates and nodes (standard `OTEL_*` variables).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TracingSpec {
    /// OTLP endpoint, e.g. `http://otel-collector:4317`; no export when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub otlp_endpoint: Option<String>,
    /// Fraction of traces sampled (parent-based), 0 to 1.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= 0.0 && self <= 1.0", "message": "tracing.samplingRatio must be between 0 and 1"}]))]
    pub sampling_ratio: f64,
}

impl Default for TracingSpec {
    fn default() -> Self {
        TracingSpec {
            otlp_endpoint: None,
            sampling_ratio: 0.1,
        }
    }
}

/// NetworkPolicies around the cluster (ingress only; they need a CNI that enforces NetworkPolicy).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkPolicySpec {
    /// Gates: only their client ports and admin port are open. Nodes: the link port only from this
    /// cluster's gates. The managed Redis: only from this cluster's gates and nodes. Admin ports: see
    /// `adminFrom`. Default true.
    pub enabled: bool,
    /// Who may reach the admin port (9090: `/metrics`, `/healthz`, `/readyz`, a node's `/load`) of gates
    /// and nodes, as NetworkPolicy peers (e.g. the monitoring namespace by `namespaceSelector`). Empty
    /// (the default): from anywhere. When set, the operator's own pods are added for the nodes (it reads
    /// their `/load`); kubelet probes come from the node and are allowed by NetworkPolicy regardless.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 16))]
    pub admin_from: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        NetworkPolicySpec {
            enabled: true,
            admin_from: Vec::new(),
        }
    }
}

/// The gate ↔ node links.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct LinksSpec {
    /// `Operator` (the default): mutual TLS, with a CA per GameCluster (Secret `NAME-link-ca`) and gate and
    /// node certificates (`NAME-link-gate-tls`, `NAME-link-node-tls`) that the operator mints and renews.
    /// `Disabled`: plaintext links; anyone who reaches a node's link port can act as any player, so only
    /// for a trusted network (see docs/security.md).
    pub tls: LinkTlsMode,
}

/// Who provides the link certificates.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum LinkTlsMode {
    #[default]
    Operator,
    Disabled,
}

/// What the operator observed. Written only by the operator (server-side apply on the status subresource).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct GameClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Gate pods.
    pub gate: GateStatus,
    /// Node pods of every pool.
    pub node: NodeStatus,
    /// Each pool: `game` alone in the single-pool form.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub pools: Vec<crate::pools::PoolStatus>,
    /// Players bound to nodes (the sum of the node pods' `switchyard.dev/bound-players`).
    pub bound_players: i64,
    /// Label selector of the node pods of every pool (for the scale subresource and HPAs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// Gate pod counts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct GateStatus {
    /// `spec.gate.replicas`.
    pub desired: i32,
    /// Ready gate pods.
    pub ready: i32,
    /// Gate pods of the current template.
    pub updated: i32,
}

/// Node pod counts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeStatus {
    /// Node pods that exist and are not terminating (the scale subresource's `status.replicas`).
    pub replicas: i32,
    /// Node pods wanted, every pool.
    pub desired: i32,
    /// Ready node pods.
    pub ready: i32,
    /// Node pods of the current template.
    pub updated: i32,
    /// Node pods draining their players: terminating, or annotated `switchyard.dev/drain: "true"`.
    pub draining: i32,
    /// Players bound to node pods, draining ones included.
    pub bound_players: i64,
}

/// The CustomResourceDefinition of [`GameCluster`].
pub fn crd() -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    GameCluster::crd()
}

/// The CustomResourceDefinition of [`crate::pools::GamePool`].
pub fn pool_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    crate::pools::GamePool::crd()
}

/// Both CRDs as the YAML committed in `crds/gamecluster.yaml` (what `switchyard crd` prints): the
/// GameCluster's, then the GamePool's, as two documents of one file, so everything that applies the file
/// installs both.
///
/// # Errors
/// The YAML serializer failed (a bug).
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let body = serde_saphyr::to_string(&crd())?;
    let pool = serde_saphyr::to_string(&pool_crd())?;
    Ok(format!(
        "# GameCluster and GamePool CustomResourceDefinitions, generated by `switchyard crd`: do not edit.\n\
         # Regenerate with: cargo run -- crd > crds/gamecluster.yaml\n---\n{body}---\n{pool}"
    ))
}

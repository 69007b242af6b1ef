//! The pure translation of a [`GameCluster`] into the Kubernetes objects that run it, exactly as
//! `docs/pod-contract.md` describes them. No I/O: the reconciler applies what [`children`] returns.
//!
//! [`validate`] re-checks every CEL rule of the CRD (the CRD installed in a cluster may be older than the
//! operator) and what CEL cannot see, such as a node `env` entry that redefines a variable the operator
//! owns. A spec that cannot work is a [`SpecError`]: the user is at fault, and the reconciler reports it
//! as the `Degraded` condition rather than retrying.
//!
//! Split by stage: `validate` re-checks the spec; `gate`, `node` (one set of objects per pool), `redis`,
//! `network_policy` and `link_tls` (the link Secret of gates and nodes) add their share; `child` lists them
//! in apply order. What every component shares (names, labels, ConfigMap, RBAC, probes) stays here.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
    TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde::Serialize;
use switchyard_cluster::contract::{self, env};

use crate::crd::{
    ADMIN_PORT, GameCluster, GameClusterSpec, LINK_PORT, MAX_DRAIN_DEADLINE_SECONDS, MAX_MAX_PACKET_BYTES,
    MAX_NAME_LENGTH, MIN_MAX_PACKET_BYTES,
};
use crate::locator;
use crate::pools::{
    GamePool, GamePoolSpec, MAX_CLUSTER_AND_POOL_LENGTH, MAX_POOL_NAME_LENGTH, MAX_POOLS, Pool,
    SPEC_REPLICAS_ANNOTATION, game_pool_name, pools,
};

/// `app.kubernetes.io/name` of everything the operator creates.
pub const APP_NAME: &str = "switchyard";
/// `app.kubernetes.io/managed-by` of everything the operator creates.
pub const MANAGED_BY: &str = "switchyard-operator";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The pool of a node object. On the objects of every pool; on the pod template and in the selectors of the
/// pools of `spec.pools` only (the single-pool form keeps the selectors it had before pools existed: they
/// are immutable, and a new template label would roll every node on an operator upgrade).
pub const LABEL_POOL: &str = "switchyard.dev/pool";
/// Pod-template annotation holding a hash of the packet ConfigMap, so a packet change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "switchyard.dev/config-hash";
/// Where gate pods see the client TLS Secret (`tls.crt`, `tls.key`).
pub const GATE_TLS_DIR: &str = "/etc/switchyard/gate-tls";
/// Where node pods see their own annotations (downward API volume).
pub const PODINFO_DIR: &str = "/etc/podinfo";
/// Redis port of the managed Redis.
pub const REDIS_PORT: i32 = 6379;
/// `app.kubernetes.io/component` of the operator's own pods (the chart's).
pub const OPERATOR_COMPONENT: &str = "operator";
/// User and group of gate and node containers (the distroless `nonroot` user).
pub const RUN_AS_USER: i64 = 65532;
/// The `redis` user of the official Redis images.
const REDIS_USER: i64 = 999;

/// Annotations a user may not put on pod templates: the operator or the nodes own them.
const RESERVED_ANNOTATIONS: [&str; 5] = [
    switchyard_cluster::kubernetes::DRAIN_ANNOTATION,
    crate::rollout::DRAINED_BY_ANNOTATION,
    switchyard_cluster::kubernetes::BOUND_PLAYERS_ANNOTATION,
    switchyard_cluster::kubernetes::POD_DELETION_COST_ANNOTATION,
    CONFIG_HASH_ANNOTATION,
];

/// Which pods a label set describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Gate,
    Node,
    Redis,
}

impl Component {
    /// The `app.kubernetes.io/component` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Gate => "gate",
            Component::Node => "node",
            Component::Redis => "redis",
        }
    }
}

/// Settings of the operator that the spec may leave out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// Image of gates and nodes when the spec names none (the operator's own image: one binary runs the
    /// operator, gates and the demo node).
    pub image: String,
    /// The operator's own namespace, when known: with `spec.networkPolicy.adminFrom` set, the nodes' admin
    /// port is also opened to the operator's pods there (it reads their `/load`); unknown, to pods with the
    /// operator's labels in any namespace.
    pub operator_namespace: Option<String>,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            image: format!("switchyard:{}", env!("CARGO_PKG_VERSION")),
            operator_namespace: None,
        }
    }
}

/// A spec that cannot work. The user is at fault; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The object lacks something the API server always sets (name, namespace, uid).
    #[error("the GameCluster has no metadata.{0} (it was not read from the API server)")]
    Metadata(&'static str),
    /// A field breaks one of the CRD's rules (the installed CRD may be older than the operator).
    #[error("{0}")]
    Invalid(String),
    /// A user-supplied environment variable that the operator sets itself.
    #[error("{field} sets {name}, which the operator sets itself (see docs/pod-contract.md); remove it")]
    ReservedEnv { field: String, name: String },
    /// A user-supplied pod annotation that the operator or the nodes own.
    #[error("{field} sets the annotation {key}, which Switchyard owns; remove it")]
    ReservedAnnotation { field: String, key: String },
}

impl SpecError {
    /// A short CamelCase reason for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            SpecError::Metadata(_) => "MissingMetadata",
            SpecError::Invalid(_) => "InvalidSpec",
            SpecError::ReservedEnv { .. } => "ReservedEnv",
            SpecError::ReservedAnnotation { .. } => "ReservedAnnotation",
        }
    }
}

/// Every object of one cluster, in the order the reconciler applies them (RBAC and configuration before
/// the Deployments that use them).
#[derive(Debug, Clone)]
pub struct Children {
    pub gate_service_account: ServiceAccount,
    pub node_service_account: ServiceAccount,
    pub gate_role: Role,
    pub node_role: Role,
    pub gate_role_binding: RoleBinding,
    pub node_role_binding: RoleBinding,
    pub config_map: ConfigMap,
    /// The managed Redis, when `spec.locator.redis` is absent.
    pub redis: Option<RedisChildren>,
    pub gate_service: Service,
    pub gate_headless_service: Service,
    pub gate_deployment: Deployment,
    pub gate_pdb: PodDisruptionBudget,
    /// Every node pool, in spec order (`game` alone in the single-pool form).
    pub pools: Vec<PoolChildren>,
    /// `NAME-node` and, with a managed Redis, `NAME-redis`, when `spec.networkPolicy.enabled`.
    pub network_policies: Vec<NetworkPolicy>,
}

/// The objects of one node pool.
#[derive(Debug, Clone)]
pub struct PoolChildren {
    /// The pool's name.
    pub name: String,
    /// The single-pool form: objects named `NAME-node`, no pool label in selectors, no `GamePool`.
    pub single: bool,
    /// The headless Service whose EndpointSlices list the pool's nodes to gates.
    pub service: Service,
    /// Its replicas are the spec's; the reconciler replaces them with the `GamePool`'s once it exists.
    pub deployment: Deployment,
    pub pdb: PodDisruptionBudget,
    /// The pool's scale target (`spec.pools` only), created with the spec's replicas.
    pub game_pool: Option<GamePool>,
    /// Label selector of the pool's pods, as a string.
    pub selector: String,
}

/// The managed Redis.
#[derive(Debug, Clone)]
pub struct RedisChildren {
    /// Name, labels and owner of its password Secret (`NAME-redis-auth`), which the reconciler creates
    /// once with [`crate::locator::auth_secret`] (its content is random, so it is not rendered here).
    pub auth_secret: ObjectMeta,
    pub deployment: Deployment,
    pub service: Service,
}

/// The name of a child object of cluster `cluster`.
pub fn child_name(cluster: &str, suffix: &str) -> String {
    format!("{cluster}-{suffix}")
}

/// The labels of every object of `component` (the four of the pod contract).
pub fn labels(cluster: &str, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster, component);
    labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
    labels
}

/// The labels that select the pods of `component` (Deployment and Service selectors: immutable, so
/// without `managed-by`).
pub fn selector_labels(cluster: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), APP_NAME.to_owned()),
        (LABEL_INSTANCE.to_owned(), cluster.to_owned()),
        (LABEL_COMPONENT.to_owned(), component.as_str().to_owned()),
    ])
}

/// `selector_labels` as a label-selector string, e.g. for `status.selector`.
pub fn selector_string(cluster: &str, component: Component) -> String {
    label_string(&selector_labels(cluster, component))
}

fn label_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The labels that select the node pods of one pool (the single-pool form: every node pod).
pub fn pool_selector_labels(cluster: &str, pool: &str, single: bool) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster, Component::Node);
    if !single {
        labels.insert(LABEL_POOL.to_owned(), pool.to_owned());
    }
    labels
}

/// `pool_selector_labels` as a label-selector string.
pub fn pool_selector_string(cluster: &str, pool: &str, single: bool) -> String {
    label_string(&pool_selector_labels(cluster, pool, single))
}

/// The name of a pool's Deployment, Service and PodDisruptionBudget: `NAME-node` in the single-pool form,
/// `NAME-node-POOL` otherwise.
pub fn pool_object_name(cluster: &str, pool: &str, single: bool) -> String {
    if single {
        child_name(cluster, Component::Node.as_str())
    } else {
        format!("{cluster}-node-{pool}")
    }
}

/// Builds every child object of `cluster`, each with a controller owner reference to it (so deleting the
/// cluster deletes them).
///
/// # Errors
/// [`SpecError`] when the spec cannot work, or the object lacks its name, namespace or uid.
pub fn children(cluster: &GameCluster, defaults: &Defaults) -> Result<Children, SpecError> {
    let name = cluster
        .metadata
        .name
        .as_deref()
        .ok_or(SpecError::Metadata("name"))?;
    let namespace = cluster
        .metadata
        .namespace
        .as_deref()
        .ok_or(SpecError::Metadata("namespace"))?;
    let owner = cluster
        .controller_owner_ref(&())
        .filter(|owner| !owner.uid.is_empty())
        .ok_or(SpecError::Metadata("uid"))?;
    let spec = &cluster.spec;
    validate(name, spec)?;
    let ctx = Ctx {
        name,
        namespace,
        owner,
        spec,
        defaults,
    };

    let config_map = ctx.config_map();
    let config_hash = fnv1a_hex(&serde_json::to_string(&config_map.data).unwrap_or_default());
    let redis = spec.locator.redis.is_none().then(|| ctx.redis());
    let network_policies = if spec.network_policy.enabled {
        let mut policies = vec![ctx.gate_network_policy(), ctx.node_network_policy()];
        if redis.is_some() {
            policies.push(ctx.redis_network_policy());
        }
        policies
    } else {
        Vec::new()
    };
    let pools = pools(spec)
        .iter()
        .map(|pool| ctx.pool_children(pool, &config_hash))
        .collect();
    Ok(Children {
        gate_service_account: ctx.service_account(Component::Gate),
        node_service_account: ctx.service_account(Component::Node),
        gate_role: ctx.role(
            Component::Gate,
            "discovery.k8s.io",
            "endpointslices",
            &["get", "list", "watch"],
        ),
        // Nodes need no API right: the drain signal is the downward API file, and their load is read by the
        // operator (`load`). The Role stays, without rules, so that an upgrade empties the earlier one.
        node_role: Role {
            rules: Some(Vec::new()),
            ..ctx.role(Component::Node, "", "pods", &[])
        },
        gate_role_binding: ctx.role_binding(Component::Gate),
        node_role_binding: ctx.role_binding(Component::Node),
        config_map,
        redis,
        gate_service: ctx.gate_service(),
        gate_headless_service: ctx.headless_service(Component::Gate, &child_name(name, "gate-headless")),
        gate_deployment: ctx.gate_deployment(&config_hash),
        gate_pdb: ctx.pdb(Component::Gate),
        pools,
        network_policies,
    })
}

/// FNV-1a, 64 bits, as hex: a hash that is stable across Rust versions and processes.
fn fnv1a_hex(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

struct Ctx<'a> {
    name: &'a str,
    namespace: &'a str,
    owner: OwnerReference,
    spec: &'a GameClusterSpec,
    defaults: &'a Defaults,
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".to_owned()),
                field_path: field_path.to_owned(),
            }),
            ..Default::default()
        }),
    }
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    }
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        success_threshold: Some(1),
        ..Default::default()
    }
}

fn container_security_context(user: i64) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(user),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

fn pod_security_context(user: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(user),
        fs_group: Some(user),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

fn non_empty<K: Ord + Clone, V: Clone>(map: &BTreeMap<K, V>) -> Option<BTreeMap<K, V>> {
    (!map.is_empty()).then(|| map.clone())
}

fn non_empty_vec<T: Clone>(items: &[T]) -> Option<Vec<T>> {
    (!items.is_empty()).then(|| items.to_vec())
}

fn rolling_update() -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".to_owned()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::String("25%".to_owned())),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

impl Ctx<'_> {
    fn meta(&self, name: String, component: Component) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(labels(self.name, component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }

    fn selector(&self, component: Component) -> LabelSelector {
        LabelSelector {
            match_labels: Some(selector_labels(self.name, component)),
            match_expressions: None,
        }
    }

    fn component_name(&self, component: Component) -> String {
        child_name(self.name, component.as_str())
    }

    fn service_account(&self, component: Component) -> ServiceAccount {
        ServiceAccount {
            metadata: self.meta(self.component_name(component), component),
            ..Default::default()
        }
    }

    fn role(&self, component: Component, group: &str, resource: &str, verbs: &[&str]) -> Role {
        Role {
            metadata: self.meta(self.component_name(component), component),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![group.to_owned()]),
                resources: Some(vec![resource.to_owned()]),
                verbs: verbs.iter().map(|&verb| verb.to_owned()).collect(),
                ..Default::default()
            }]),
        }
    }

    fn role_binding(&self, component: Component) -> RoleBinding {
        let name = self.component_name(component);
        RoleBinding {
            metadata: self.meta(name.clone(), component),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".to_owned()),
                kind: "Role".to_owned(),
                name: name.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_owned(),
                name,
                namespace: Some(self.namespace.to_owned()),
                api_group: None,
            }]),
        }
    }

    fn config_map(&self) -> ConfigMap {
        let packet = &self.spec.packet;
        let mut meta = self.meta(child_name(self.name, "config"), Component::Gate);
        // Shared by gates and nodes: no single component.
        if let Some(labels) = meta.labels.as_mut() {
            labels.remove(LABEL_COMPONENT);
        }
        ConfigMap {
            metadata: meta,
            data: Some(BTreeMap::from([
                (env::BYTE_ORDER.to_owned(), packet.byte_order.as_str().to_owned()),
                (env::ROUTE_BYTES.to_owned(), packet.route_bytes.to_string()),
                (env::SEQ_BYTES.to_owned(), packet.seq_bytes.to_string()),
                (
                    env::MAX_PACKET_BYTES.to_owned(),
                    packet.max_packet_bytes.to_string(),
                ),
            ])),
            ..Default::default()
        }
    }

    /// The variables of the pod contract common to gates and nodes (the pod IP first, so later values can
    /// reference it).
    fn common_env(&self, service: &str) -> Vec<EnvVar> {
        let mut vars = vec![
            field_env(env::POD_IP, "status.podIP"),
            field_env(env::ID, "metadata.name"),
            field_env(env::POD_NAME, "metadata.name"),
            field_env(env::NAMESPACE, "metadata.namespace"),
            env(env::HTTP, format!("$({}):{ADMIN_PORT}", env::POD_IP)),
            env(
                env::LOCATOR,
                locator::url(self.name, self.namespace, &self.spec.locator),
            ),
            env(
                env::LOCATOR_PREFIX,
                locator::prefix(self.name, &self.spec.locator),
            ),
            env(env::LOG, self.spec.log.clone()),
        ];
        vars.extend(locator::auth_env(self.name, &self.spec.locator));
        if let Some(endpoint) = &self.spec.tracing.otlp_endpoint {
            vars.extend([
                env(env::OTEL_EXPORTER_OTLP_ENDPOINT, endpoint.clone()),
                env(env::OTEL_SERVICE_NAME, service),
                env(env::OTEL_TRACES_SAMPLER, "parentbased_traceidratio"),
                env(
                    env::OTEL_TRACES_SAMPLER_ARG,
                    self.spec.tracing.sampling_ratio.to_string(),
                ),
            ]);
        }
        vars
    }

    fn env_from(&self) -> Vec<EnvFromSource> {
        vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: child_name(self.name, "config"),
                optional: Some(false),
            }),
            ..Default::default()
        }]
    }

    fn pod_annotations(
        &self,
        user: &BTreeMap<String, String>,
        config_hash: &str,
    ) -> BTreeMap<String, String> {
        let mut annotations = user.clone();
        if self.spec.metrics.enabled && self.spec.metrics.scrape_annotations {
            annotations.insert("prometheus.io/scrape".to_owned(), "true".to_owned());
            annotations.insert("prometheus.io/port".to_owned(), ADMIN_PORT.to_string());
            annotations.insert("prometheus.io/path".to_owned(), "/metrics".to_owned());
        }
        annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), config_hash.to_owned());
        annotations
    }

    fn headless_service(&self, component: Component, name: &str) -> Service {
        let mut ports = match component {
            Component::Node => vec![service_port("link", LINK_PORT)],
            _ => self.gate_ports(),
        };
        if self.spec.metrics.enabled {
            let mut metrics = service_port("metrics", ADMIN_PORT);
            metrics.target_port = Some(IntOrString::String("admin".to_owned()));
            ports.push(metrics);
        }
        Service {
            metadata: self.meta(name.to_owned(), component),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".to_owned()),
                selector: Some(selector_labels(self.name, component)),
                ports: Some(ports),
                publish_not_ready_addresses: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn deployment(
        &self,
        component: Component,
        replicas: i32,
        pod_annotations: BTreeMap<String, String>,
        mut pod: PodSpec,
    ) -> Deployment {
        if component != Component::Redis
            && let Some((volume, mount)) = locator::ca_volume(&self.spec.locator)
        {
            pod.volumes.get_or_insert_with(Vec::new).push(volume);
            for container in &mut pod.containers {
                container
                    .volume_mounts
                    .get_or_insert_with(Vec::new)
                    .push(mount.clone());
            }
        }
        self.add_link_tls_volume(component, &mut pod);
        Deployment {
            metadata: self.meta(self.component_name(component), component),
            spec: DeploymentSpec {
                replicas: Some(replicas),
                selector: self.selector(component),
                strategy: Some(rolling_update()),
                revision_history_limit: Some(5),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(self.name, component)),
                        annotations: non_empty(&pod_annotations),
                        ..Default::default()
                    }),
                    spec: Some(pod),
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn pdb(&self, component: Component) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: self.meta(self.component_name(component), component),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(self.selector(component)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Requests (CPU, memory) of a gate container whose spec sets no `resources`: enough for a few thousand
/// idle players. No limit: a gate's memory ceiling depends on its connections (`docs/security.md`).
pub const GATE_REQUESTS: (&str, &str) = ("100m", "128Mi");
/// Requests of a node container whose spec sets no `resources`. No limit: the game's handlers decide.
pub const NODE_REQUESTS: (&str, &str) = ("100m", "128Mi");
/// Requests of the managed Redis whose spec sets no `resources`: bindings are a few hundred bytes per
/// player. No limit: Redis runs without `maxmemory`, and a limit would turn growth into an OOM kill that
/// loses every binding.
pub const REDIS_REQUESTS: (&str, &str) = ("50m", "64Mi");

/// `resources` from the spec, or requests of `(cpu, memory)` when the spec has none, so that no pod runs
/// BestEffort (first to be evicted) by default. A spec's `resources: {}` is kept: an explicit choice.
fn resources_or_default(
    spec: &Option<ResourceRequirements>,
    (cpu, memory): (&str, &str),
) -> ResourceRequirements {
    spec.clone().unwrap_or_else(|| ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])),
        ..Default::default()
    })
}

mod child;
mod gate;
mod link_tls;
mod network_policy;
mod node;
mod redis;
#[cfg(test)]
#[path = "children_tests.rs"]
mod tests;
mod validate;

pub use child::Child;
pub use link_tls::{LINK_TLS_DIR, LINK_TLS_VOLUME};
pub use validate::validate;

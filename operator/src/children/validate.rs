//! [`validate`]: every CEL rule of the CRD checked again (the CRD installed in a cluster may be older than
//! the operator), and what CEL cannot see.

use super::*;

/// Checks the spec: every CEL rule of the CRD again, and what CEL cannot see.
///
/// # Errors
/// The first problem found, naming the field.
pub fn validate(name: &str, spec: &GameClusterSpec) -> Result<(), SpecError> {
    let invalid = |message: String| Err(SpecError::Invalid(message));
    if name.is_empty()
        || name.len() > MAX_NAME_LENGTH
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
        || name.ends_with('-')
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return invalid(format!(
            "metadata.name {name:?} must be a DNS label of at most {MAX_NAME_LENGTH} characters that starts with a letter"
        ));
    }
    let packet = &spec.packet;
    if !matches!(packet.route_bytes, 1 | 2 | 4) {
        return invalid("packet.routeBytes must be 1, 2 or 4".into());
    }
    if !matches!(packet.seq_bytes, 0 | 1 | 2 | 4) {
        return invalid("packet.seqBytes must be 0, 1, 2 or 4".into());
    }
    let header = 1 + packet.route_bytes + packet.seq_bytes;
    if packet.max_packet_bytes < header.max(MIN_MAX_PACKET_BYTES) {
        return invalid(format!(
            "packet.maxPacketBytes must hold a packet header ({header} bytes) and a heartbeat with the server time ({MIN_MAX_PACKET_BYTES} bytes)"
        ));
    }
    if packet.max_packet_bytes > MAX_MAX_PACKET_BYTES {
        return invalid(format!(
            "packet.maxPacketBytes must be at most {MAX_MAX_PACKET_BYTES} (64 MiB)"
        ));
    }
    crate::locator::validate(&spec.locator).map_err(SpecError::Invalid)?;
    let gate = &spec.gate;
    if gate.replicas < 0 {
        return invalid("gate.replicas must be 0 or more".into());
    }
    validate_pools(name, spec)?;
    if !gate.tcp.enabled && !gate.websocket.enabled {
        return invalid("at least one of gate.tcp and gate.websocket must be enabled".into());
    }
    for (field, port) in [
        ("gate.tcp.port", gate.tcp.port),
        ("gate.websocket.port", gate.websocket.port),
    ] {
        if !(1..=65535).contains(&port) {
            return invalid(format!("{field} must be between 1 and 65535"));
        }
        if port == ADMIN_PORT {
            return invalid(format!("{field} must not be {ADMIN_PORT}, the admin port"));
        }
    }
    if gate.tcp.enabled && gate.websocket.enabled && gate.tcp.port == gate.websocket.port {
        return invalid("gate.tcp.port and gate.websocket.port must differ".into());
    }
    if !gate.websocket.path.starts_with('/') {
        return invalid("gate.websocket.path must start with /".into());
    }
    if !contract::is_duration(&gate.heartbeat.interval) {
        return invalid("gate.heartbeat.interval must be a duration like 10s, 500ms, 2m or 0".into());
    }
    if gate.max_connections <= 0 {
        return invalid("gate.maxConnections must be greater than 0".into());
    }
    if gate.max_connections_per_ip < 0 {
        return invalid("gate.maxConnectionsPerIp must be 0 or more".into());
    }
    if gate.rate_limit.per_second < 0 || gate.rate_limit.burst < 0 {
        return invalid("gate.rateLimit.perSecond and gate.rateLimit.burst must be 0 or more".into());
    }
    if gate.rate_limit.burst > 0 && gate.rate_limit.per_second == 0 {
        return invalid("gate.rateLimit.burst needs gate.rateLimit.perSecond".into());
    }
    if !contract::is_duration(&gate.login_deadline) {
        return invalid("gate.loginDeadline must be a duration like 10s, 500ms, 2m or 0".into());
    }
    if gate.tls.as_ref().is_some_and(|tls| tls.secret_name.is_empty()) {
        return invalid("gate.tls.secretName must not be empty".into());
    }
    if gate.service.external_traffic_policy.is_some()
        && gate.service.type_ == crate::crd::ServiceType::ClusterIP
    {
        return invalid("gate.service.externalTrafficPolicy needs type NodePort or LoadBalancer".into());
    }
    check_drain_deadline("gate.drainDeadlineSeconds", gate.drain_deadline_seconds)?;
    if !(0.0..=1.0).contains(&spec.tracing.sampling_ratio) {
        return invalid("tracing.samplingRatio must be between 0 and 1".into());
    }
    check_annotations("gate.podAnnotations", &gate.pod_annotations)
}

fn check_drain_deadline(field: &str, seconds: i32) -> Result<(), SpecError> {
    if seconds <= 0 {
        return Err(SpecError::Invalid(format!("{field} must be greater than 0")));
    }
    if seconds > MAX_DRAIN_DEADLINE_SECONDS {
        return Err(SpecError::Invalid(format!(
            "{field} must be at most {MAX_DRAIN_DEADLINE_SECONDS} (one day)"
        )));
    }
    Ok(())
}

fn check_annotations(field: &str, annotations: &BTreeMap<String, String>) -> Result<(), SpecError> {
    match annotations
        .keys()
        .find(|key| RESERVED_ANNOTATIONS.contains(&key.as_str()))
    {
        Some(key) => Err(SpecError::ReservedAnnotation {
            field: field.to_owned(),
            key: key.clone(),
        }),
        None => Ok(()),
    }
}

/// `spec.node` or `spec.pools`: the CRD's rules again, and the names the operator owns in each pool.
fn validate_pools(name: &str, spec: &GameClusterSpec) -> Result<(), SpecError> {
    let invalid = |message: String| Err(SpecError::Invalid(message));
    if spec.node.is_some() && !spec.pools.is_empty() {
        return invalid(
            "spec.node and spec.pools are exclusive: put the node pod template into a pool of spec.pools (spec.node is the single pool named game)"
                .into(),
        );
    }
    if spec.pools.len() > MAX_POOLS {
        return invalid(format!("spec.pools may list at most {MAX_POOLS} pools"));
    }
    for (index, pool) in spec.pools.iter().enumerate() {
        let pool_name = &pool.name;
        if pool_name.is_empty() || pool_name.len() > MAX_POOL_NAME_LENGTH || !is_dns_label(pool_name) {
            return invalid(format!(
                "pools[].name {pool_name:?} must be a DNS label that starts with a letter (at most {MAX_POOL_NAME_LENGTH} characters)"
            ));
        }
        if spec.pools[..index].iter().any(|other| other.name == *pool_name) {
            return invalid("pools[].name must be unique".into());
        }
        if name.len() + pool_name.len() > MAX_CLUSTER_AND_POOL_LENGTH {
            return invalid(format!(
                "metadata.name and each pools[].name together must be at most {MAX_CLUSTER_AND_POOL_LENGTH} characters (pool {pool_name})"
            ));
        }
    }
    for pool in pools(spec) {
        let field = |what: &str| {
            if pool.single {
                format!("node.{what}")
            } else {
                format!("pools[{}].{what}", pool.name)
            }
        };
        if pool.node.replicas < 0 {
            return invalid(format!("{} must be 0 or more", field("replicas")));
        }
        check_drain_deadline(&field("drainDeadlineSeconds"), pool.node.drain_deadline_seconds)?;
        // What CEL cannot see: names the operator owns.
        if let Some(env) = pool
            .node
            .env
            .iter()
            .find(|env| contract::is_reserved_node_env(&env.name))
        {
            return Err(SpecError::ReservedEnv {
                field: field("env"),
                name: env.name.clone(),
            });
        }
        check_annotations(&field("podAnnotations"), &pool.node.pod_annotations)?;
    }
    Ok(())
}

fn is_dns_label(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

//! The gates' client-facing settings (`spec.gate`): each reaches the gate as its variable, and what the
//! binary cannot use is refused.

use super::*;

#[test]
fn the_gate_exposure_comes_from_the_spec() {
    let mut spec = GameClusterSpec::default();
    spec.gate.max_connections_per_ip = 20;
    spec.gate.rate_limit = RateLimitSpec {
        per_second: 50,
        burst: 100,
    };
    spec.gate.login_deadline = "15s".into();
    spec.gate.heartbeat.server_time = true;
    spec.gate.proxy_protocol = true;
    spec.gate.tls = Some(GateTlsSpec {
        secret_name: "arena-tls".into(),
    });
    spec.gate.service.type_ = ServiceType::LoadBalancer;
    spec.gate.service.external_traffic_policy = Some(TrafficPolicy::Local);
    spec.gate.service.annotations = BTreeMap::from([("lb.example/internal".to_owned(), "true".to_owned())]);
    let built = build(spec);
    let gate = container(&built.gate_deployment);
    for (name, value) in [
        ("SWITCHYARD_MAX_CONNECTIONS_PER_IP", "20"),
        ("SWITCHYARD_RATE_LIMIT", "50"),
        ("SWITCHYARD_RATE_BURST", "100"),
        ("SWITCHYARD_AUTHORIZE_TIMEOUT", "15s"),
        ("SWITCHYARD_HEARTBEAT_TIME", "true"),
        ("SWITCHYARD_PROXY_PROTOCOL", "true"),
        ("SWITCHYARD_TLS_CERT", "/etc/switchyard/gate-tls/tls.crt"),
        ("SWITCHYARD_TLS_KEY", "/etc/switchyard/gate-tls/tls.key"),
    ] {
        assert_eq!(env_value(gate, name).as_deref(), Some(value), "{name}");
    }
    let tls = pod(&built.gate_deployment)
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == "tls")
        .and_then(|volume| volume.secret.as_ref())
        .expect("the TLS Secret volume");
    assert_eq!(tls.secret_name.as_deref(), Some("arena-tls"));
    let mount = gate
        .volume_mounts
        .iter()
        .flatten()
        .find(|mount| mount.name == "tls")
        .expect("the TLS mount");
    assert_eq!(mount.mount_path, "/etc/switchyard/gate-tls");
    assert_eq!(
        mount.sub_path, None,
        "a subPath mount would never see a renewed Secret"
    );
    let service = built.gate_service.spec.as_ref().expect("service spec");
    assert_eq!(service.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(service.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(
        built
            .gate_service
            .metadata
            .annotations
            .as_ref()
            .map(|a| a["lb.example/internal"].as_str()),
        Some("true")
    );

    // Defaults: everything off, no TLS files.
    let defaults = build(GameClusterSpec::default());
    let gate = container(&defaults.gate_deployment);
    assert_eq!(
        env_value(gate, "SWITCHYARD_MAX_CONNECTIONS_PER_IP").as_deref(),
        Some("0")
    );
    assert_eq!(env_value(gate, "SWITCHYARD_RATE_LIMIT").as_deref(), Some("0"));
    assert_eq!(
        env_value(gate, "SWITCHYARD_AUTHORIZE_TIMEOUT").as_deref(),
        Some("0")
    );
    assert_eq!(
        env_value(gate, "SWITCHYARD_HEARTBEAT_TIME").as_deref(),
        Some("false")
    );
    assert_eq!(
        env_value(gate, "SWITCHYARD_PROXY_PROTOCOL").as_deref(),
        Some("false")
    );
    assert_eq!(env_value(gate, "SWITCHYARD_TLS_CERT"), None);
    let service = defaults.gate_service.spec.as_ref().expect("service spec");
    assert_eq!(service.external_traffic_policy, None);
}

#[test]
fn gate_exposure_the_binary_cannot_use_is_refused() {
    let refused = |edit: &dyn Fn(&mut GameClusterSpec)| {
        let mut spec = GameClusterSpec::default();
        edit(&mut spec);
        match children(&cluster(spec), &Defaults::default()) {
            Err(SpecError::Invalid(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    };
    assert!(refused(&|spec| spec.gate.rate_limit.burst = 5).contains("needs gate.rateLimit.perSecond"));
    assert!(refused(&|spec| spec.gate.rate_limit.per_second = -1).contains("0 or more"));
    assert!(refused(&|spec| spec.gate.max_connections_per_ip = -1).contains("maxConnectionsPerIp"));
    assert!(refused(&|spec| spec.gate.login_deadline = "soon".into()).contains("loginDeadline"));
    assert!(
        refused(&|spec| spec.gate.service.external_traffic_policy = Some(TrafficPolicy::Local))
            .contains("externalTrafficPolicy needs type NodePort or LoadBalancer")
    );
}

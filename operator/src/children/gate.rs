//! The gates' share of a cluster: their Deployment (ports, probes, the exposure settings of
//! `spec.gate` as `SWITCHYARD_*` variables, the client TLS Secret) and the client-facing Service.

use super::*;

impl Ctx<'_> {
    pub(super) fn gate_ports(&self) -> Vec<ServicePort> {
        let gate = &self.spec.gate;
        let mut ports = Vec::new();
        if gate.tcp.enabled {
            ports.push(service_port("tcp", gate.tcp.port));
        }
        if gate.websocket.enabled {
            ports.push(service_port("ws", gate.websocket.port));
        }
        ports
    }

    pub(super) fn gate_service(&self) -> Service {
        let service = &self.spec.gate.service;
        let mut meta = self.meta(self.component_name(Component::Gate), Component::Gate);
        meta.annotations = non_empty(&service.annotations);
        Service {
            metadata: meta,
            spec: Some(ServiceSpec {
                type_: Some(service.type_.as_str().to_owned()),
                external_traffic_policy: service
                    .external_traffic_policy
                    .map(|policy| policy.as_str().to_owned()),
                selector: Some(selector_labels(self.name, Component::Gate)),
                ports: Some(self.gate_ports()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub(super) fn gate_deployment(&self, config_hash: &str) -> Deployment {
        let gate = &self.spec.gate;
        let image = gate
            .image
            .clone()
            .or_else(|| self.spec.image.clone())
            .unwrap_or_else(|| self.defaults.image.clone());
        let listen = |enabled: bool, port: i32| {
            if enabled {
                format!("$({}):{port}", env::POD_IP)
            } else {
                String::new()
            }
        };
        let mut vars = self.common_env("switchyard-gate");
        vars.extend([
            env(env::TCP, listen(gate.tcp.enabled, gate.tcp.port)),
            env(env::WS, listen(gate.websocket.enabled, gate.websocket.port)),
            env(env::WS_PATH, gate.websocket.path.clone()),
            env(env::HEARTBEAT_INTERVAL, gate.heartbeat.interval.clone()),
            env(env::HEARTBEAT_MODE, gate.heartbeat.mode.as_str()),
            env(env::HEARTBEAT_TIME, gate.heartbeat.server_time.to_string()),
            env(env::MAX_CONNECTIONS, gate.max_connections.to_string()),
            env(
                env::MAX_CONNECTIONS_PER_IP,
                gate.max_connections_per_ip.to_string(),
            ),
            env(env::RATE_LIMIT, gate.rate_limit.per_second.to_string()),
            env(env::RATE_BURST, gate.rate_limit.burst.to_string()),
            env(env::AUTHORIZE_TIMEOUT, gate.login_deadline.clone()),
            env(env::PROXY_PROTOCOL, gate.proxy_protocol.to_string()),
            env(
                env::GATE_DRAIN_DEADLINE,
                format!("{}s", gate.drain_deadline_seconds),
            ),
            env(env::REGISTRY, "kubernetes"),
            env(env::NODE_SERVICE, self.node_services()),
            env(env::LINK_PORT_NAME, "link"),
        ]);
        let routing = pools(self.spec)
            .iter()
            .map(|pool| (pool.name.to_string(), pool.routing.as_gate_str()))
            .collect::<Vec<_>>();
        vars.push(env(
            env::POOL_ROUTING,
            contract::format_pool_routing(routing.iter().map(|(pool, policy)| (pool.as_str(), *policy))),
        ));
        vars.extend(self.link_tls_env());
        let mut volumes = vec![empty_dir("tmp")];
        let mut mounts = vec![mount("tmp", "/tmp", false)];
        if let Some(tls) = &gate.tls {
            // The whole Secret, not subPath: the kubelet then updates the files when it is renewed, and
            // the gate reloads them.
            volumes.push(Volume {
                name: "tls".to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(tls.secret_name.clone()),
                    optional: Some(false),
                    default_mode: Some(0o440),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(mount("tls", GATE_TLS_DIR, true));
            vars.extend([
                env(env::TLS_CERT, format!("{GATE_TLS_DIR}/tls.crt")),
                env(env::TLS_KEY, format!("{GATE_TLS_DIR}/tls.key")),
            ]);
        }
        let mut ports = Vec::new();
        if gate.tcp.enabled {
            ports.push(port("tcp", gate.tcp.port));
        }
        if gate.websocket.enabled {
            ports.push(port("ws", gate.websocket.port));
        }
        ports.push(port("admin", ADMIN_PORT));
        let container = Container {
            name: "gate".to_owned(),
            image: Some(image),
            image_pull_policy: Some(self.spec.image_pull_policy.as_str().to_owned()),
            args: Some(vec!["gate".to_owned()]),
            env: Some(vars),
            env_from: Some(self.env_from()),
            ports: Some(ports),
            readiness_probe: Some(http_probe("/readyz", 2, 2)),
            liveness_probe: Some(http_probe("/healthz", 10, 3)),
            resources: Some(resources_or_default(&gate.resources, GATE_REQUESTS)),
            security_context: Some(container_security_context(RUN_AS_USER)),
            volume_mounts: Some(mounts),
            ..Default::default()
        };
        let pod = PodSpec {
            service_account_name: Some(self.component_name(Component::Gate)),
            automount_service_account_token: Some(true),
            termination_grace_period_seconds: Some(i64::from(gate.drain_deadline_seconds) + 10),
            security_context: Some(pod_security_context(RUN_AS_USER)),
            node_selector: non_empty(&gate.node_selector),
            tolerations: non_empty_vec(&gate.tolerations),
            affinity: gate.affinity.clone(),
            containers: vec![container],
            volumes: Some(volumes),
            enable_service_links: Some(false),
            ..Default::default()
        };
        self.deployment(
            Component::Gate,
            gate.replicas,
            self.pod_annotations(&gate.pod_annotations, config_hash),
            pod,
        )
    }
}

//! The managed Redis of a cluster that names no Redis of its own: its Deployment (run with
//! `locator::managed_redis_args`), its Service, and the Secret that holds its generated password.

use super::*;

impl Ctx<'_> {
    pub(super) fn redis(&self) -> RedisChildren {
        let managed = &self.spec.locator.managed_redis;
        let name = child_name(self.name, "redis");
        let (conf_volume, conf_mount) = locator::managed_redis_conf_volume(self.name);
        let container = Container {
            name: "redis".to_owned(),
            image: Some(managed.image.clone()),
            image_pull_policy: Some(self.spec.image_pull_policy.as_str().to_owned()),
            args: Some(locator::managed_redis_args()),
            ports: Some(vec![port("redis", REDIS_PORT)]),
            readiness_probe: Some(Probe {
                tcp_socket: Some(TCPSocketAction {
                    port: IntOrString::String("redis".to_owned()),
                    host: None,
                }),
                period_seconds: Some(5),
                ..Default::default()
            }),
            liveness_probe: Some(Probe {
                tcp_socket: Some(TCPSocketAction {
                    port: IntOrString::String("redis".to_owned()),
                    host: None,
                }),
                period_seconds: Some(10),
                failure_threshold: Some(3),
                ..Default::default()
            }),
            resources: Some(resources_or_default(&managed.resources, REDIS_REQUESTS)),
            security_context: Some(container_security_context(REDIS_USER)),
            volume_mounts: Some(vec![mount("data", "/data", false), conf_mount]),
            ..Default::default()
        };
        let mut deployment = self.deployment(
            Component::Redis,
            1,
            BTreeMap::new(),
            PodSpec {
                automount_service_account_token: Some(false),
                security_context: Some(pod_security_context(REDIS_USER)),
                containers: vec![container],
                volumes: Some(vec![empty_dir("data"), conf_volume]),
                enable_service_links: Some(false),
                ..Default::default()
            },
        );
        // One Redis at a time: the locator must not split between two.
        deployment.spec.strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".to_owned()),
            rolling_update: None,
        });
        let service = Service {
            metadata: self.meta(name, Component::Redis),
            spec: Some(ServiceSpec {
                selector: Some(selector_labels(self.name, Component::Redis)),
                ports: Some(vec![service_port("redis", REDIS_PORT)]),
                ..Default::default()
            }),
            ..Default::default()
        };
        RedisChildren {
            auth_secret: self.meta(locator::auth_secret_name(self.name), Component::Redis),
            deployment,
            service,
        }
    }
}

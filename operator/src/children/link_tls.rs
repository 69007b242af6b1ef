//! The link TLS share of gate and node pods (unless `spec.links.tls` is `Disabled`): the pod's link Secret
//! (`NAME-link-gate-tls` or `NAME-link-node-tls`, minted by the reconciler, see [`crate::link_certs`])
//! mounted whole and read-only, so the kubelet updates the files in place when the operator renews it, and
//! `SWITCHYARD_LINK_TLS_*` naming its files. The CA's own Secret is mounted nowhere.

use super::*;
use crate::crd::LinkTlsMode;
use crate::link_certs::{CA_CERT_KEY, CERT_KEY, KEY_KEY, Leaf};

/// Where gates and nodes see their link Secret.
pub const LINK_TLS_DIR: &str = "/etc/switchyard/link-tls";
/// The volume of the link Secret in gate and node pods.
pub const LINK_TLS_VOLUME: &str = "link-tls";

impl Ctx<'_> {
    fn link_tls_enabled(&self) -> bool {
        self.spec.links.tls != LinkTlsMode::Disabled
    }

    /// `SWITCHYARD_LINK_TLS_*`, naming the files of the mounted link Secret; none when the spec turns link
    /// TLS off.
    pub(super) fn link_tls_env(&self) -> Vec<EnvVar> {
        if !self.link_tls_enabled() {
            return Vec::new();
        }
        vec![
            env(env::LINK_TLS_CA, format!("{LINK_TLS_DIR}/{CA_CERT_KEY}")),
            env(env::LINK_TLS_CERT, format!("{LINK_TLS_DIR}/{CERT_KEY}")),
            env(env::LINK_TLS_KEY, format!("{LINK_TLS_DIR}/{KEY_KEY}")),
        ]
    }

    /// Mounts the link Secret of `component` (gate or node) into every container of `pod`; nothing when the
    /// spec turns link TLS off.
    pub(super) fn add_link_tls_volume(&self, component: Component, pod: &mut PodSpec) {
        let leaf = match component {
            Component::Gate => Leaf::Gate,
            Component::Node => Leaf::Node,
            Component::Redis => return,
        };
        if !self.link_tls_enabled() {
            return;
        }
        pod.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: LINK_TLS_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(leaf.secret_name(self.name)),
                optional: Some(false),
                // Readable by the pod's group (fsGroup), as the gate's client TLS Secret.
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
        for container in &mut pod.containers {
            container.volume_mounts.get_or_insert_with(Vec::new).push(mount(
                LINK_TLS_VOLUME,
                LINK_TLS_DIR,
                true,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{build, container, pod};
    use super::*;
    use crate::crd::{GameClusterSpec, NodeSpec};
    use crate::pools::{PoolSpec, RoutingPolicy};

    /// The Secret names mounted into a pod template.
    fn mounted_secrets(deployment: &Deployment) -> Vec<String> {
        pod(deployment)
            .volumes
            .iter()
            .flatten()
            .filter_map(|volume| volume.secret.as_ref()?.secret_name.clone())
            .collect()
    }

    fn env_value(deployment: &Deployment, name: &str) -> Option<String> {
        container(deployment)
            .env
            .iter()
            .flatten()
            .find(|var| var.name == name)
            .and_then(|var| var.value.clone())
    }

    #[test]
    fn gates_and_nodes_mount_their_own_link_secret_and_nobody_the_ca() {
        let spec = GameClusterSpec {
            pools: ["lobby", "battle"]
                .map(|name| PoolSpec {
                    name: name.to_owned(),
                    routing: RoutingPolicy::RoundRobin,
                    node: NodeSpec::default(),
                })
                .to_vec(),
            ..GameClusterSpec::default()
        };
        let built = build(spec);
        let gate = &built.gate_deployment;
        assert_eq!(mounted_secrets(gate), vec!["arena-link-gate-tls"]);
        for pool in &built.pools {
            assert_eq!(mounted_secrets(&pool.deployment), vec!["arena-link-node-tls"]);
        }
        for deployment in std::iter::once(gate).chain(built.pools.iter().map(|pool| &pool.deployment)) {
            let volume = pod(deployment)
                .volumes
                .iter()
                .flatten()
                .find(|volume| volume.name == LINK_TLS_VOLUME)
                .expect("the link volume");
            let secret = volume.secret.as_ref().expect("a Secret volume");
            assert_eq!(secret.items, None, "mounted whole, so renewals reach the files");
            assert_eq!(secret.optional, Some(false));
            let mount = container(deployment)
                .volume_mounts
                .iter()
                .flatten()
                .find(|mount| mount.name == LINK_TLS_VOLUME)
                .expect("the link mount");
            assert_eq!(
                (
                    mount.mount_path.as_str(),
                    mount.read_only,
                    mount.sub_path.as_deref()
                ),
                (LINK_TLS_DIR, Some(true), None)
            );
            for (name, file) in [
                (env::LINK_TLS_CA, "ca.crt"),
                (env::LINK_TLS_CERT, "tls.crt"),
                (env::LINK_TLS_KEY, "tls.key"),
            ] {
                assert_eq!(
                    env_value(deployment, name),
                    Some(format!("{LINK_TLS_DIR}/{file}"))
                );
            }
        }
        let redis = &built.redis.as_ref().expect("managed Redis").deployment;
        assert!(!mounted_secrets(redis).iter().any(|name| name.contains("link")));
    }

    #[test]
    fn disabled_link_tls_mounts_nothing_and_sets_no_variable() {
        let mut spec = GameClusterSpec::default();
        spec.links.tls = LinkTlsMode::Disabled;
        let built = build(spec);
        for deployment in [&built.gate_deployment, &built.pools[0].deployment] {
            assert!(
                mounted_secrets(deployment)
                    .iter()
                    .all(|name| !name.contains("link"))
            );
            assert_eq!(env_value(deployment, env::LINK_TLS_CA), None);
        }
    }
}

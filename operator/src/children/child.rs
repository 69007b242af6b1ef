//! One child object of any kind ([`Child`]) and the list of a cluster's objects in apply order
//! ([`Children::all`]), for code that handles them all alike (apply, prune, describe).

use super::*;

/// One child object of any kind, for code that handles them all alike.
// A handful per reconcile, short-lived: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Child {
    ServiceAccount(ServiceAccount),
    Role(Role),
    RoleBinding(RoleBinding),
    ConfigMap(ConfigMap),
    Service(Service),
    Deployment(Deployment),
    PodDisruptionBudget(PodDisruptionBudget),
    NetworkPolicy(NetworkPolicy),
}

impl Child {
    /// `Kind/name`, for messages.
    pub fn describe(&self) -> String {
        fn of<K: Resource<DynamicType = ()>>(object: &K) -> String {
            format!(
                "{}/{}",
                K::kind(&()),
                object.meta().name.as_deref().unwrap_or("?")
            )
        }
        match self {
            Child::ServiceAccount(o) => of(o),
            Child::Role(o) => of(o),
            Child::RoleBinding(o) => of(o),
            Child::ConfigMap(o) => of(o),
            Child::Service(o) => of(o),
            Child::Deployment(o) => of(o),
            Child::PodDisruptionBudget(o) => of(o),
            Child::NetworkPolicy(o) => of(o),
        }
    }

    /// The object as JSON with `apiVersion` and `kind` (what server-side apply needs).
    pub fn to_json(&self) -> serde_json::Value {
        fn of<K: Resource<DynamicType = ()> + Serialize>(object: &K) -> serde_json::Value {
            let mut value = serde_json::to_value(object).unwrap_or_default();
            if let Some(map) = value.as_object_mut() {
                map.insert("apiVersion".into(), K::api_version(&()).into());
                map.insert("kind".into(), K::kind(&()).into());
            }
            value
        }
        match self {
            Child::ServiceAccount(o) => of(o),
            Child::Role(o) => of(o),
            Child::RoleBinding(o) => of(o),
            Child::ConfigMap(o) => of(o),
            Child::Service(o) => of(o),
            Child::Deployment(o) => of(o),
            Child::PodDisruptionBudget(o) => of(o),
            Child::NetworkPolicy(o) => of(o),
        }
    }
}

impl Children {
    /// Every object, in apply order.
    pub fn all(&self) -> Vec<Child> {
        let mut all = vec![
            Child::ServiceAccount(self.gate_service_account.clone()),
            Child::ServiceAccount(self.node_service_account.clone()),
            Child::Role(self.gate_role.clone()),
            Child::Role(self.node_role.clone()),
            Child::RoleBinding(self.gate_role_binding.clone()),
            Child::RoleBinding(self.node_role_binding.clone()),
            Child::ConfigMap(self.config_map.clone()),
        ];
        if let Some(redis) = &self.redis {
            all.push(Child::Service(redis.service.clone()));
            all.push(Child::Deployment(redis.deployment.clone()));
        }
        all.extend([
            Child::Service(self.gate_service.clone()),
            Child::Service(self.gate_headless_service.clone()),
        ]);
        all.extend(self.pools.iter().map(|pool| Child::Service(pool.service.clone())));
        all.push(Child::Deployment(self.gate_deployment.clone()));
        all.extend(
            self.pools
                .iter()
                .map(|pool| Child::Deployment(pool.deployment.clone())),
        );
        all.push(Child::PodDisruptionBudget(self.gate_pdb.clone()));
        all.extend(
            self.pools
                .iter()
                .map(|pool| Child::PodDisruptionBudget(pool.pdb.clone())),
        );
        all.extend(self.network_policies.iter().cloned().map(Child::NetworkPolicy));
        all
    }

    /// The environment variable names a pod of `deployment` (one of these children) gets: its first
    /// container's `env` and the shared ConfigMap it takes with `envFrom`. What the pod contract is checked
    /// against.
    pub fn pod_env_names(&self, deployment: &Deployment) -> std::collections::BTreeSet<String> {
        let containers = deployment
            .spec
            .template
            .spec
            .as_ref()
            .map(|pod| pod.containers.as_slice())
            .unwrap_or_default();
        let from_env = containers
            .first()
            .and_then(|container| container.env.as_ref())
            .into_iter()
            .flatten()
            .map(|var| var.name.clone());
        let from_config_map = self
            .config_map
            .data
            .iter()
            .flatten()
            .map(|(name, _)| name.clone());
        from_env.chain(from_config_map).collect()
    }
}

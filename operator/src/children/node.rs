//! The nodes' share of a cluster, one set per pool: each pool's Deployment (the link, drain and pool
//! variables, the downward-API annotations file), its headless Service, PodDisruptionBudget and, in the
//! `spec.pools` form, its GamePool.

use super::*;

impl Ctx<'_> {
    /// The node Services of every pool, comma-separated (the gates' registry watches them all).
    pub(super) fn node_services(&self) -> String {
        pools(self.spec)
            .iter()
            .map(|pool| pool_object_name(self.name, &pool.name, pool.single))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The objects of one pool: the generic node objects, renamed and labelled for the pool.
    pub(super) fn pool_children(&self, pool: &Pool<'_>, config_hash: &str) -> PoolChildren {
        let name = pool_object_name(self.name, &pool.name, pool.single);
        let mut meta_labels = labels(self.name, Component::Node);
        meta_labels.insert(LABEL_POOL.to_owned(), pool.name.to_string());
        let selector_labels = pool_selector_labels(self.name, &pool.name, pool.single);
        let selector = LabelSelector {
            match_labels: Some(selector_labels.clone()),
            match_expressions: None,
        };
        let relabel = |meta: &mut ObjectMeta| {
            meta.name = Some(name.clone());
            meta.labels = Some(meta_labels.clone());
        };

        let mut service = self.headless_service(Component::Node, &name);
        relabel(&mut service.metadata);
        if let Some(spec) = service.spec.as_mut() {
            spec.selector = Some(selector_labels.clone());
        }

        let mut deployment = self.node_deployment(pool, config_hash);
        relabel(&mut deployment.metadata);
        deployment.spec.selector = selector.clone();
        if let Some(template) = deployment.spec.template.metadata.as_mut()
            && !pool.single
        {
            template.labels = Some(meta_labels.clone());
        }

        let mut pdb = self.pdb(Component::Node);
        relabel(&mut pdb.metadata);
        if let Some(spec) = pdb.spec.as_mut() {
            spec.selector = Some(selector);
        }

        let game_pool = (!pool.single).then(|| {
            let mut meta = self.meta(game_pool_name(self.name, &pool.name), Component::Node);
            meta.labels = Some(meta_labels.clone());
            meta.annotations = Some(BTreeMap::from([(
                SPEC_REPLICAS_ANNOTATION.to_owned(),
                pool.node.replicas.to_string(),
            )]));
            GamePool {
                metadata: meta,
                spec: GamePoolSpec {
                    cluster: self.name.to_owned(),
                    pool: pool.name.to_string(),
                    replicas: pool.node.replicas,
                },
                status: None,
            }
        });
        PoolChildren {
            name: pool.name.to_string(),
            single: pool.single,
            service,
            deployment,
            pdb,
            game_pool,
            selector: label_string(&selector_labels),
        }
    }

    fn node_deployment(&self, pool: &Pool<'_>, config_hash: &str) -> Deployment {
        let node = pool.node.as_ref();
        let image = node
            .image
            .clone()
            .or_else(|| self.spec.image.clone())
            .unwrap_or_else(|| self.defaults.image.clone());
        let mut vars = self.common_env("switchyard-node");
        vars.extend([
            env(env::LINK, format!("$({}):{LINK_PORT}", env::POD_IP)),
            env(env::DRAIN_DEADLINE, format!("{}s", node.drain_deadline_seconds)),
            env(env::POOL, pool.name.to_string()),
            env(env::DRAIN_FILE, format!("{PODINFO_DIR}/annotations")),
            env(env::CODEC, node.codec.as_str()),
        ]);
        vars.extend(self.link_tls_env());
        vars.extend(node.env.iter().cloned());
        let args = match (&node.command, &node.args) {
            (None, None) => Some(vec!["node".to_owned()]),
            (_, args) => args.clone(),
        };
        let container = Container {
            name: "node".to_owned(),
            image: Some(image),
            image_pull_policy: Some(self.spec.image_pull_policy.as_str().to_owned()),
            command: node.command.clone(),
            args,
            env: Some(vars),
            env_from: Some(self.env_from()),
            ports: Some(vec![port("link", LINK_PORT), port("admin", ADMIN_PORT)]),
            readiness_probe: Some(http_probe("/readyz", 2, 2)),
            liveness_probe: Some(http_probe("/healthz", 10, 3)),
            resources: Some(resources_or_default(&node.resources, NODE_REQUESTS)),
            security_context: Some(container_security_context(RUN_AS_USER)),
            volume_mounts: Some(vec![
                mount("podinfo", PODINFO_DIR, true),
                mount("tmp", "/tmp", false),
            ]),
            ..Default::default()
        };
        let podinfo = Volume {
            name: "podinfo".to_owned(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: "annotations".to_owned(),
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".to_owned()),
                        field_path: "metadata.annotations".to_owned(),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = PodSpec {
            service_account_name: Some(self.component_name(Component::Node)),
            // No API right (see the node Role): no token either, so a compromised node has none to use.
            automount_service_account_token: Some(false),
            termination_grace_period_seconds: Some(i64::from(node.drain_deadline_seconds) + 15),
            security_context: Some(pod_security_context(RUN_AS_USER)),
            node_selector: non_empty(&node.node_selector),
            tolerations: non_empty_vec(&node.tolerations),
            affinity: node.affinity.clone(),
            containers: vec![container],
            volumes: Some(vec![podinfo, empty_dir("tmp")]),
            enable_service_links: Some(false),
            ..Default::default()
        };
        self.deployment(
            Component::Node,
            node.replicas,
            self.pod_annotations(&node.pod_annotations, config_hash),
            pod,
        )
    }
}

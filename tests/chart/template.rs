//! `helm lint` and `helm template`: the values schema, least privilege, the namespace-scoped install, the
//! login test hook, and every value reaching the rendered objects.

use super::*;

#[test]
fn helm_lint_passes() {
    let helm = Helm::new();
    let out = run_ok(helm.cmd().args(["lint", "--strict"]).arg(chart()));
    assert!(out.contains("0 chart(s) failed"), "helm lint:\n{out}");
    // The same with every optional part switched the other way.
    run_ok(
        helm.cmd()
            .args(["lint", "--strict"])
            .arg(chart())
            .args(["--set", "replicas=2,metrics.service.enabled=false"])
            .args([
                "--set",
                "serviceAccount.create=false,serviceAccount.name=existing",
            ]),
    );
}

#[test]
fn values_schema_refuses_mistyped_and_unknown_values() {
    let helm = Helm::new();
    // Every value the chart documents passes (helm_lint_passes), and a typo or a wrong type is refused
    // with the path of the value, before anything renders.
    for (set, says) in [
        ("replicas=two", "/replicas"),
        ("imag.tag=x", "'imag' not allowed"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("metrics.port=70000", "/metrics/port"),
        ("leaderElection.enabled=yes", "/leaderElection/enabled"),
        ("watchNamespace=Not_A_Namespace", "/watchNamespace"),
    ] {
        let err = run_err(
            helm.cmd()
                .args(["template", "x"])
                .arg(chart())
                .args(["--set-string", set]),
        );
        assert!(err.contains("schema") && err.contains(says), "--set {set}: {err}");
    }
    // Values a platform needs stay open: OpenShift's null uids, any resources.
    run_ok(helm.cmd().args(["template", "x"]).arg(chart()).args([
        "--set",
        "podSecurityContext.runAsUser=null,resources.limits.cpu=2",
    ]));
}

#[test]
fn helm_template_renders_the_operator_with_least_privilege() {
    let helm = Helm::new();
    let manifest = helm.template_chart(&[]);
    let docs = documents(&manifest);

    let expected: BTreeSet<(String, String)> = [
        ("ServiceAccount", OPERATOR),
        ("ClusterRole", OPERATOR),
        ("ClusterRoleBinding", OPERATOR),
        ("Role", "switchyard-operator-leader-election"),
        ("RoleBinding", "switchyard-operator-leader-election"),
        ("Lease", OPERATOR),
        ("Service", "switchyard-operator-metrics"),
        ("Deployment", OPERATOR),
        ("ConfigMap", "switchyard-dashboard-overview"),
        ("ConfigMap", "switchyard-dashboard-gate"),
        ("ConfigMap", "switchyard-dashboard-node"),
        ("ConfigMap", "switchyard-dashboard-operator"),
        ("Pod", "switchyard-test-login"),
    ]
    .into_iter()
    .map(|(kind, name)| (kind.to_owned(), name.to_owned()))
    .collect();
    assert_eq!(kinds_and_names(&docs), expected, "objects rendered by default");

    // RBAC: exactly the operator's needs, no wildcard, no non-resource URL.
    assert!(!manifest.contains('*'), "a wildcard in the manifest:\n{manifest}");
    assert!(
        !manifest.contains("nonResourceURLs"),
        "nonResourceURLs in the manifest"
    );
    assert_same_grants(
        "ClusterRole",
        &rendered_grants(find(&docs, "ClusterRole", OPERATOR)),
        &cluster_grants(),
    );
    assert_same_grants(
        "leader-election Role",
        &rendered_grants(find(&docs, "Role", "switchyard-operator-leader-election")),
        &lease_grants(),
    );
    for binding in [
        find(&docs, "ClusterRoleBinding", OPERATOR),
        find(&docs, "RoleBinding", "switchyard-operator-leader-election"),
    ] {
        let text = &binding.text;
        assert!(
            text.contains(&format!(
                "  - kind: ServiceAccount\n    name: {OPERATOR}\n    namespace: {NAMESPACE}\n"
            )),
            "{} binds the operator's ServiceAccount:\n{text}",
            binding.kind
        );
    }
    let role = find(&docs, "Role", "switchyard-operator-leader-election");
    assert!(
        role.text.contains(&format!("  namespace: {NAMESPACE}\n")),
        "the lease Role is namespaced"
    );

    // The Deployment: image, args, identity from the downward API, probes, and a locked-down container.
    let deployment = &find(&docs, "Deployment", OPERATOR).text;
    for needle in [
        "  replicas: 1\n",
        "      serviceAccountName: switchyard-operator\n",
        "          image: \"switchyard:0.1.0\"\n",
        "          args: [\"operator\"]\n",
        "            - name: SWITCHYARD_NAMESPACE\n              valueFrom:\n                fieldRef:\n                  fieldPath: metadata.namespace\n",
        "            - name: SWITCHYARD_POD_NAME\n              valueFrom:\n                fieldRef:\n                  fieldPath: metadata.name\n",
        "            - name: SWITCHYARD_HTTP\n              value: \"$(SWITCHYARD_POD_IP):9090\"\n",
        "            - name: SWITCHYARD_LOG\n              value: \"info\"\n",
        "            - name: SWITCHYARD_LEADER_ELECT\n              value: \"true\"\n",
        "            - name: SWITCHYARD_LEASE_NAME\n              value: \"switchyard-operator\"\n",
        "            - name: SWITCHYARD_DEFAULT_IMAGE\n              value: \"switchyard:0.1.0\"\n",
        "            - name: admin\n              containerPort: 9090\n",
        "              path: /healthz\n              port: admin\n",
        "              path: /readyz\n              port: admin\n",
        "        runAsNonRoot: true\n",
        "        runAsUser: 65532\n",
        "        seccompProfile:\n          type: RuntimeDefault\n",
        "            allowPrivilegeEscalation: false\n",
        "            capabilities:\n              drop:\n              - ALL\n",
        "            readOnlyRootFilesystem: true\n",
        "          resources:\n",
    ] {
        assert!(
            deployment.contains(needle),
            "the Deployment lacks {needle:?}:\n{deployment}"
        );
    }
    // The selector carries the component label, so that it never matches the gate, node and redis pods
    // the operator creates (they share app.kubernetes.io/name: switchyard).
    assert!(
        deployment.contains(
            "    matchLabels:\n      app.kubernetes.io/name: switchyard\n      app.kubernetes.io/instance: switchyard\n      app.kubernetes.io/component: operator\n"
        ),
        "the Deployment's selector:\n{deployment}"
    );
    let service = &find(&docs, "Service", "switchyard-operator-metrics").text;
    assert!(
        service.contains("    - name: metrics\n      port: 9090\n      targetPort: admin\n"),
        "the metrics Service:\n{service}"
    );

    // The CRD comes from crds/, only with --include-crds (helm installs it before the templates).
    let with_crds = documents(&helm.template_chart(&["--include-crds"]));
    find(&with_crds, "CustomResourceDefinition", CRD);
    find(&with_crds, "CustomResourceDefinition", "gamepools.switchyard.dev");
}

#[test]
fn helm_template_renders_a_namespace_scoped_install() {
    let helm = Helm::new();
    let manifest = helm.template_chart(&["--set", "watchNamespace=games"]);
    let docs = documents(&manifest);
    // A Role and RoleBinding in the watched namespace, with exactly the operator's rules; nothing
    // cluster-wide (the CRDs aside, which helm installs from crds/).
    let cluster_wide: Vec<_> = kinds_and_names(&docs)
        .into_iter()
        .filter(|(kind, _)| kind.starts_with("Cluster"))
        .collect();
    assert!(cluster_wide.is_empty(), "cluster-wide objects: {cluster_wide:?}");
    let role = find(&docs, "Role", OPERATOR);
    assert!(role.text.contains("  namespace: games\n"), "{}", role.text);
    assert_same_grants("namespace-scoped Role", &rendered_grants(role), &cluster_grants());
    let binding = &find(&docs, "RoleBinding", OPERATOR).text;
    for needle in [
        "  namespace: games\n".to_owned(),
        "roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: switchyard-operator\n"
            .to_owned(),
        format!("  - kind: ServiceAccount\n    name: {OPERATOR}\n    namespace: {NAMESPACE}\n"),
    ] {
        assert!(
            binding.contains(&needle),
            "the RoleBinding lacks {needle:?}:\n{binding}"
        );
    }
    // The leader election stays in the release namespace.
    find(&docs, "Role", "switchyard-operator-leader-election");
    let deployment = &find(&docs, "Deployment", OPERATOR).text;
    assert!(
        deployment
            .contains("            - name: SWITCHYARD_WATCH_NAMESPACE\n              value: \"games\"\n"),
        "{deployment}"
    );
    // The default install watches every namespace.
    let default = documents(&helm.template_chart(&[]));
    find(&default, "ClusterRole", OPERATOR);
    find(&default, "ClusterRoleBinding", OPERATOR);
    assert!(
        !find(&default, "Deployment", OPERATOR)
            .text
            .contains("SWITCHYARD_WATCH_NAMESPACE")
    );
}

/// `helm test`: a hook pod running `switchyard probe-login` against the values' GameCluster gate Service,
/// locked down like the operator, with nothing of the API (no token); gone with `test.enabled=false`.
#[test]
fn helm_template_renders_the_login_test_hook() {
    let helm = Helm::new();
    let docs = documents(&helm.template_chart(&[]));
    let pod = &find(&docs, "Pod", "switchyard-test-login").text;
    for needle in [
        "    helm.sh/hook: test\n",
        "    helm.sh/hook-delete-policy: before-hook-creation\n",
        "  restartPolicy: Never\n",
        "  automountServiceAccountToken: false\n",
        "      image: \"switchyard:0.1.0\"\n",
        "      args: [\"probe-login\"]\n",
        "        - name: SWITCHYARD_PROBE_ADDR\n          value: \"my-game-gate.game.svc:3553\"\n",
        "        - name: SWITCHYARD_PROBE_UID\n          value: \"999000001\"\n",
        "        - name: SWITCHYARD_PROBE_WAIT\n          value: \"60s\"\n",
        "    runAsNonRoot: true\n",
        "        readOnlyRootFilesystem: true\n",
        "          drop:\n          - ALL\n",
        "    app.kubernetes.io/component: test\n",
        "      resources:\n        requests:\n          memory: 16Mi\n        limits:\n          memory: 64Mi\n",
    ] {
        assert!(pod.contains(needle), "the test pod lacks {needle:?}:\n{pod}");
    }
    let docs = documents(&helm.template_chart(&[
        "--set",
        "test.gameCluster.name=arena,test.gameCluster.namespace=games,test.port=4000,test.wait=2m",
        "--set",
        "image.repository=registry.local/switchyard,image.tag=e2e",
    ]));
    let pod = &find(&docs, "Pod", "switchyard-test-login").text;
    for needle in [
        "value: \"arena-gate.games.svc:4000\"\n",
        "value: \"2m\"\n",
        "image: \"registry.local/switchyard:e2e\"\n",
    ] {
        assert!(pod.contains(needle), "the test pod lacks {needle:?}:\n{pod}");
    }
    let docs = documents(&helm.template_chart(&["--set", "test.enabled=false"]));
    assert!(!docs.iter().any(|doc| doc.kind == "Pod"), "no test pod");
    let err = run_err(
        helm.cmd()
            .args(["template", RELEASE])
            .arg(chart())
            .args(["--set", "test.wait=soon"]),
    );
    assert!(err.contains("/test/wait"), "{err}");
}

#[test]
fn helm_template_follows_the_values() {
    let helm = Helm::new();

    let docs = documents(&helm.template_chart(&[
        "--set",
        "replicas=2,image.repository=registry.example/switchyard,image.tag=1.2.3,logLevel=debug",
        "--set",
        "nodeSelector.pool=system,podAnnotations.example/a=b,metrics.port=9191",
    ]));
    let deployment = &find(&docs, "Deployment", OPERATOR).text;
    for needle in [
        "  replicas: 2\n",
        "image: \"registry.example/switchyard:1.2.3\"",
        "- name: SWITCHYARD_DEFAULT_IMAGE\n              value: \"registry.example/switchyard:1.2.3\"\n",
        "- name: SWITCHYARD_LOG\n              value: \"debug\"\n",
        "      nodeSelector:\n        pool: system\n",
        "      annotations:\n        example/a: b\n",
        "value: \"$(SWITCHYARD_POD_IP):9191\"",
        "containerPort: 9191",
    ] {
        assert!(
            deployment.contains(needle),
            "the Deployment lacks {needle:?}:\n{deployment}"
        );
    }
    assert!(
        find(&docs, "Service", "switchyard-operator-metrics")
            .text
            .contains("port: 9191")
    );

    // Two operators without leader election would fight: the chart refuses.
    let error = run_err(
        helm.cmd()
            .args(["template", RELEASE])
            .arg(chart())
            .args(["--set", "replicas=2,leaderElection.enabled=false"]),
    );
    assert!(
        error.contains("needs leaderElection.enabled=true"),
        "helm said: {error}"
    );

    // One operator without leader election: no lease permission at all.
    let docs = documents(&helm.template_chart(&["--set", "leaderElection.enabled=false"]));
    assert!(
        !docs
            .iter()
            .any(|doc| doc.kind == "Role" || doc.kind == "RoleBinding")
    );
    assert!(!docs.iter().any(|doc| doc.text.contains("leases")));
    assert!(
        find(&docs, "Deployment", OPERATOR)
            .text
            .contains("- name: SWITCHYARD_LEADER_ELECT\n              value: \"false\"\n"),
        "leader election switched off in the operator's environment"
    );

    // An existing ServiceAccount: not created, but bound.
    let docs = documents(&helm.template_chart(&[
        "--set",
        "serviceAccount.create=false,serviceAccount.name=existing",
    ]));
    assert!(!docs.iter().any(|doc| doc.kind == "ServiceAccount"));
    assert!(
        find(&docs, "Deployment", OPERATOR)
            .text
            .contains("serviceAccountName: existing\n")
    );
    assert!(
        find(&docs, "ClusterRoleBinding", OPERATOR)
            .text
            .contains("    name: existing\n")
    );
    let error = run_err(
        helm.cmd()
            .args(["template", RELEASE])
            .arg(chart())
            .args(["--set", "serviceAccount.create=false"]),
    );
    assert!(
        error.contains("serviceAccount.name must name an existing ServiceAccount"),
        "helm said: {error}"
    );

    // No metrics Service when switched off.
    let docs = documents(&helm.template_chart(&["--set", "metrics.service.enabled=false"]));
    assert!(!docs.iter().any(|doc| doc.kind == "Service"));

    // Another release name: every name follows it.
    let manifest = run_ok(
        helm.cmd()
            .args(["template", "games"])
            .arg(chart())
            .args(["--namespace", "ops"]),
    );
    let names: BTreeSet<String> = documents(&manifest).into_iter().map(|doc| doc.name).collect();
    assert!(
        names
            .iter()
            .all(|name| name.starts_with("games-switchyard-operator")
                || name.starts_with("games-switchyard-dashboard-")
                || name == "games-switchyard-test-login"),
        "{names:?}"
    );
}

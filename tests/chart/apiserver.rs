//! `helm install` into a real kube-apiserver (`switchyard-testkit`'s control plane): the CRD, the RBAC
//! rules, the examples, and the uninstall.

use super::*;

/// etcd and kube-apiserver on free 127.0.0.1 ports (`switchyard-testkit`), stopped when dropped (their
/// logs are printed when a test fails), and the kubectl calls the test makes against them.
struct ControlPlane {
    plane: switchyard_testkit::ControlPlane,
    kubeconfig: PathBuf,
}

impl ControlPlane {
    fn start() -> ControlPlane {
        let config = ControlPlaneConfig::local().unwrap_or_else(|error| panic!("{error}"));
        let plane = switchyard_testkit::ControlPlane::start(config).unwrap_or_else(|error| panic!("{error}"));
        ControlPlane {
            kubeconfig: plane.admin_kubeconfig(),
            plane,
        }
    }

    fn kubectl(&self) -> Command {
        let mut command = self.plane.kubectl();
        command.current_dir(repo());
        command
    }

    /// kubectl acting as the operator's ServiceAccount (impersonation by the admin).
    fn as_operator(&self) -> Command {
        let mut command = self.kubectl();
        command.arg(format!("--as=system:serviceaccount:{NAMESPACE}:{OPERATOR}"));
        command
    }

    fn get_json(&self, args: &[&str]) -> Value {
        let text = run_ok(self.kubectl().args(["get", "-o", "json"]).args(args));
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("kubectl get {args:?}: bad JSON: {error}"))
    }

    /// `kubectl auth can-i` as the operator; `resource` may name a subresource (`pods/exec`).
    fn operator_can(&self, verb: &str, resource: &str, namespace: &str) -> bool {
        let mut command = self.as_operator();
        command.args(["auth", "can-i", verb, "--namespace", namespace]);
        match resource.split_once('/') {
            Some((resource, subresource)) => {
                command.arg(resource).arg(format!("--subresource={subresource}"))
            }
            None => command.arg(resource),
        };
        let out = output(&mut command);
        match String::from_utf8_lossy(&out.stdout).trim() {
            "yes" => true,
            "no" => false,
            other => panic!(
                "kubectl auth can-i {verb} {resource}: {other:?} ({})",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// Applies a manifest from stdin; returns the command's output.
    fn apply(&self, command: &mut Command, manifest: &str) -> Output {
        run_with_input(command.args(["apply", "-f", "-"]), manifest)
    }
}

fn grants_of(role: &Value) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    let strings = |value: &Value, field: &str| -> Vec<String> {
        value[field]
            .as_array()
            .unwrap_or_else(|| panic!("rule without {field}: {value}"))
            .iter()
            .map(|item| item.as_str().expect("a string").to_owned())
            .collect()
    };
    for rule in role["rules"].as_array().expect("rules") {
        assert!(
            rule.get("resourceNames").is_none(),
            "unexpected resourceNames: {rule}"
        );
        assert!(
            rule.get("nonResourceURLs").is_none(),
            "unexpected nonResourceURLs: {rule}"
        );
        for group in strings(rule, "apiGroups") {
            for resource in strings(rule, "resources") {
                for verb in strings(rule, "verbs") {
                    grants.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    grants
}

fn env_entry<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|entry| entry["name"] == name)
        .unwrap_or_else(|| panic!("no env {name} in {}", container["env"]))
}

#[test]
#[ignore = "needs the control plane: scripts/test.sh runs it"]
fn helm_install_into_a_real_apiserver() {
    let helm = Helm::new();
    let plane = ControlPlane::start();
    let helm_cmd = || {
        let mut command = helm.cmd();
        command.env("KUBECONFIG", &plane.kubeconfig);
        command
    };

    // The release namespace enforces the "restricted" Pod Security Standard.
    run_ok(plane.kubectl().args(["create", "namespace", NAMESPACE]));
    run_ok(plane.kubectl().args([
        "label",
        "namespace",
        NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    ]));

    let install = output(
        helm_cmd()
            .args(["install", RELEASE])
            .arg(chart())
            .args(["--namespace", NAMESPACE]),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&install.stdout),
        String::from_utf8_lossy(&install.stderr),
    );
    assert!(
        install.status.success(),
        "helm install failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("STATUS: deployed"), "helm install:\n{stdout}");
    assert!(
        stdout.contains("kubectl get gc"),
        "NOTES tell the next step:\n{stdout}"
    );
    assert!(
        !stderr.contains("PodSecurity"),
        "Pod Security warnings:\n{stderr}"
    );

    // The CRD is installed and established; `gc` is its short name.
    run_ok(plane.kubectl().args([
        "wait",
        "--for=condition=Established",
        &format!("crd/{CRD}"),
        "--timeout=60s",
    ]));

    // What the apiserver stored for the operator.
    let deployment = plane.get_json(&["deployment", OPERATOR, "--namespace", NAMESPACE]);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(pod["serviceAccountName"], OPERATOR);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(container["image"], "switchyard:0.1.0");
    assert_eq!(container["args"], serde_json::json!(["operator"]));
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(
        env_entry(container, "SWITCHYARD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env_entry(container, "SWITCHYARD_POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env_entry(container, "SWITCHYARD_HTTP")["value"],
        "$(SWITCHYARD_POD_IP):9090"
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["containerPort"], 9090);

    // Its pod passes the "restricted" Pod Security Standard: admission (enforce) rejects it otherwise.
    let pod_manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "operator-pod-check", "namespace": NAMESPACE },
        "spec": pod,
    });
    let created = run_with_input(
        plane.kubectl().args(["create", "--dry-run=server", "-f", "-"]),
        &pod_manifest.to_string(),
    );
    assert!(
        created.status.success(),
        "the operator's pod is rejected in a namespace enforcing `restricted`: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    // (The check has teeth: the same pod allowed to escalate privileges is refused.)
    let mut escalating = pod_manifest.clone();
    escalating["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = Value::Bool(true);
    let refused = run_with_input(
        plane.kubectl().args(["create", "--dry-run=server", "-f", "-"]),
        &escalating.to_string(),
    );
    assert!(
        !refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("PodSecurity"),
        "Pod Security admission did not refuse an escalating pod: {}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // RBAC, as stored, is exactly least privilege.
    let cluster_role = plane.get_json(&["clusterrole", OPERATOR]);
    assert_same_grants("stored ClusterRole", &grants_of(&cluster_role), &cluster_grants());
    let role = plane.get_json(&[
        "role",
        "switchyard-operator-leader-election",
        "--namespace",
        NAMESPACE,
    ]);
    assert_same_grants("stored leader-election Role", &grants_of(&role), &lease_grants());
    plane.get_json(&["service", "switchyard-operator-metrics", "--namespace", NAMESPACE]);
    plane.get_json(&["serviceaccount", OPERATOR, "--namespace", NAMESPACE]);

    // The bindings reach the ServiceAccount: what it may and may not do, anywhere.
    run_ok(plane.kubectl().args(["create", "namespace", "games"]));
    for (verb, resource, namespace) in [
        ("watch", "gameclusters.switchyard.dev", "games"),
        ("patch", "gameclusters.switchyard.dev/status", "games"),
        ("update", "gameclusters.switchyard.dev/finalizers", "games"),
        // One GamePool per pool: created, pruned, its status written.
        ("create", "gamepools.switchyard.dev", "games"),
        ("delete", "gamepools.switchyard.dev", "games"),
        ("patch", "gamepools.switchyard.dev/status", "games"),
        ("create", "deployments.apps", "games"),
        ("delete", "rolebindings.rbac.authorization.k8s.io", "games"),
        ("patch", "pods", "games"),
        ("create", "events.events.k8s.io", "games"),
        ("list", "endpointslices.discovery.k8s.io", "games"),
        ("update", "leases.coordination.k8s.io", NAMESPACE),
        // The link CA and certificates: read, and replaced on renewal (docs/security.md, section 2).
        ("get", "secrets", "games"),
        ("update", "secrets", "games"),
        // Rollouts delete the node pods they drained that a rollback made current again.
        ("delete", "pods", "games"),
    ] {
        assert!(
            plane.operator_can(verb, resource, namespace),
            "the operator cannot {verb} {resource} in {namespace}"
        );
    }
    for (verb, resource, namespace) in [
        ("create", "gameclusters.switchyard.dev", "games"),
        ("patch", "gameclusters.switchyard.dev", "games"),
        ("delete", "gameclusters.switchyard.dev", "games"),
        ("update", "gameclusters.switchyard.dev/scale", "games"),
        // The pools' replicas belong to kubectl scale and HPAs: the operator copies the spec's value with a
        // patch of the GamePool, never through its scale subresource.
        ("update", "gamepools.switchyard.dev/scale", "games"),
        ("create", "events", "games"),
        // Its Secrets go with their GameCluster (garbage collection): it deletes none.
        ("delete", "secrets", "games"),
        ("create", "pods", "games"),
        ("create", "pods/exec", "games"),
        ("get", "nodes", "default"),
        ("create", "clusterroles.rbac.authorization.k8s.io", "default"),
        ("bind", "roles.rbac.authorization.k8s.io", "games"),
        ("escalate", "roles.rbac.authorization.k8s.io", "games"),
        ("delete", "endpointslices.discovery.k8s.io", "games"),
        ("update", "leases.coordination.k8s.io", "games"),
        ("delete", "leases.coordination.k8s.io", NAMESPACE),
        ("patch", "leases.coordination.k8s.io", NAMESPACE),
    ] {
        assert!(
            !plane.operator_can(verb, resource, namespace),
            "the operator may {verb} {resource} in {namespace}"
        );
    }

    // RBAC escalation prevention: the operator can create the Roles and RoleBindings it gives gates and
    // nodes (docs/pod-contract.md) with server-side apply, because it holds what they grant ...
    let gate_and_node_rbac = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: rbac-check-gate, namespace: games}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: rbac-check-gate, namespace: games}
rules:
  - apiGroups: ["discovery.k8s.io"]
    resources: ["endpointslices"]
    verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: rbac-check-gate, namespace: games}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: rbac-check-gate}
subjects: [{kind: ServiceAccount, name: rbac-check-gate, namespace: games}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: rbac-check-node, namespace: games}
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: rbac-check-node, namespace: games}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: rbac-check-node}
subjects: [{kind: ServiceAccount, name: rbac-check-node, namespace: games}]
"#;
    let applied = plane.apply(
        plane
            .as_operator()
            .args(["--server-side", "--field-manager=switchyard-operator"]),
        gate_and_node_rbac,
    );
    assert!(
        applied.status.success(),
        "the operator cannot create the gate/node RBAC: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    // ... and nothing beyond it (the operator may read and write Secrets, for the managed Redis's password
    // and the link certificates, but not delete them).
    let escalation = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: rbac-check-secrets, namespace: games}
rules:
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["delete"]
"#;
    let refused = plane.apply(
        plane
            .as_operator()
            .args(["--server-side", "--field-manager=switchyard-operator"]),
        escalation,
    );
    let refused_err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && refused_err.contains("attempting to grant RBAC permissions not currently held"),
        "a Role granting secrets should be refused as escalation: {refused_err}"
    );

    // The examples are valid GameClusters (server-side validation: schema, CEL rules, defaults).
    for example in [
        "examples/minimal.yaml",
        "examples/full.yaml",
        "examples/pools.yaml",
    ] {
        let out = run_ok(plane.kubectl().args([
            "apply",
            "--dry-run=server",
            "--namespace",
            "games",
            "-f",
            example,
        ]));
        assert!(out.contains("(server dry run)"), "{example}: {out}");
    }
    // The minimal one for real, then the NOTES' `kubectl get gc`.
    run_ok(
        plane
            .kubectl()
            .args(["apply", "--namespace", "games", "-f", "examples/minimal.yaml"]),
    );
    let listed = run_ok(plane.kubectl().args(["get", "gc", "--namespace", "games"]));
    assert!(listed.contains("my-game"), "kubectl get gc:\n{listed}");
    // The operator's status grant works against the stored CRD (server-side apply, its field manager), and
    // `kubectl scale gc/NAME` (a user's or an HPA's, not the operator's) reaches spec.node.replicas.
    let status = r#"{"apiVersion": "switchyard.dev/v1alpha1", "kind": "GameCluster",
        "metadata": {"name": "my-game", "namespace": "games"},
        "status": {"observedGeneration": 1, "selector": "app.kubernetes.io/instance=my-game"}}"#;
    let applied = plane.apply(
        plane.as_operator().args([
            "--server-side",
            "--field-manager=switchyard-operator",
            "--subresource=status",
        ]),
        status,
    );
    assert!(
        applied.status.success(),
        "the operator cannot write GameCluster status: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    run_ok(
        plane
            .kubectl()
            .args(["scale", "gc/my-game", "--replicas=3", "--namespace", "games"]),
    );
    let game = plane.get_json(&["gc", "my-game", "--namespace", "games"]);
    assert_eq!(
        game["spec"]["node"]["replicas"], 3,
        "kubectl scale gc/my-game:\n{game}"
    );
    assert_eq!(game["status"]["observedGeneration"], 1, "status written:\n{game}");

    // An upgrade to two replicas (leader election keeps that safe).
    run_ok(helm_cmd().args(["upgrade", RELEASE]).arg(chart()).args([
        "--namespace",
        NAMESPACE,
        "--set",
        "replicas=2",
    ]));
    let deployment = plane.get_json(&["deployment", OPERATOR, "--namespace", NAMESPACE]);
    assert_eq!(deployment["spec"]["replicas"], 2);

    // Uninstall removes everything but the CRD, which helm never deletes (it would delete every
    // GameCluster with it).
    let out = run_ok(helm_cmd().args(["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"]));
    assert!(out.contains("uninstalled"), "helm uninstall: {out}");
    for (kind, namespaced) in [
        ("deployment", true),
        ("serviceaccount", true),
        ("service", true),
        ("role", true),
        ("rolebinding", true),
        ("clusterrole", false),
        ("clusterrolebinding", false),
    ] {
        let mut command = plane.kubectl();
        command.args([
            "get",
            kind,
            "--selector",
            "app.kubernetes.io/instance=switchyard,app.kubernetes.io/managed-by=Helm",
            "-o",
            "name",
        ]);
        if namespaced {
            command.args(["--namespace", NAMESPACE]);
        }
        let left = run_ok(&mut command);
        assert!(left.trim().is_empty(), "left after helm uninstall: {left}");
    }
    plane.get_json(&["crd", CRD]);
}

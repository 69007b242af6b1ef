//! The Helm chart (`charts/switchyard`), the example GameClusters (`examples/`), and the contract the
//! container image relies on: the binary runs as an unprivileged user on a read-only filesystem with
//! nothing but its documented `SWITCHYARD_*` variables.
//!
//! - `helm_lint_passes` and `helm_template_*` need helm (`scripts/helm.sh` builds it into the toolchain
//!   cache) and fail with a clear message when it is missing.
//! - `helm_install_into_a_real_apiserver` is ignored by default: it starts etcd and kube-apiserver from
//!   `e2e/toolchain/build.sh` on free 127.0.0.1 ports (`switchyard-testkit`), installs the
//!   chart, checks the CRD, the RBAC rules and the examples, and uninstalls. Run it with
//!   `cargo test --test chart -- --include-ignored`.
//! - `binary_runs_unprivileged_read_only_with_documented_env_only` runs `switchyard dev` as uid 65532
//!   (when the test runs as root) on a read-only root filesystem (when it may create a mount namespace).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_testkit::{
    ControlPlaneConfig, Helm, TempDir, describe, http_get_blocking, on_path, output, run_err, run_ok,
    run_with_input,
};

/// The release namespace and name used throughout.
const NAMESPACE: &str = "switchyard-system";
const RELEASE: &str = "switchyard";
/// Names the chart gives the release `switchyard` (fullname `switchyard`).
const OPERATOR: &str = "switchyard-operator";
const CRD: &str = "gameclusters.switchyard.dev";

type Grant = (String, String, String);

/// Every permission the operator needs, as (API group, resource, verb): the rules the operator's own
/// API-server tests run it under (`switchyard_operator::rbac::operator_rules`), so the chart can neither
/// lack a permission the operator uses nor grant one it does not.
fn operator_grants() -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for rule in switchyard_operator::rbac::operator_rules() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    grants.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    grants
}

fn is_lease(grant: &Grant) -> bool {
    grant.0 == "coordination.k8s.io" && grant.1 == "leases"
}

/// What the ClusterRole must grant: everything but the leader-election Lease.
fn cluster_grants() -> BTreeSet<Grant> {
    operator_grants()
        .into_iter()
        .filter(|grant| !is_lease(grant))
        .collect()
}

/// What the namespaced leader-election Role must grant: the Lease only.
fn lease_grants() -> BTreeSet<Grant> {
    let grants: BTreeSet<Grant> = operator_grants().into_iter().filter(is_lease).collect();
    assert!(
        !grants.is_empty(),
        "the operator's rules have no Lease permission"
    );
    grants
}

fn assert_same_grants(what: &str, actual: &BTreeSet<Grant>, expected: &BTreeSet<Grant>) {
    let extra: Vec<_> = actual.difference(expected).collect();
    let missing: Vec<_> = expected.difference(actual).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: grants (apiGroup, resource, verb) differ from least privilege\n  \
         granted but not needed: {extra:?}\n  needed but not granted: {missing:?}"
    );
}

// ---- paths and commands --------------------------------------------------------------------

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/switchyard")
}

/// `helm template` of the chart as release `switchyard` in its namespace, with extra arguments.
trait TemplateChart {
    fn template_chart(&self, extra: &[&str]) -> String;
}

impl TemplateChart for Helm {
    fn template_chart(&self, extra: &[&str]) -> String {
        run_ok(
            self.cmd()
                .args(["template", RELEASE])
                .arg(chart())
                .args(["--namespace", NAMESPACE])
                .args(extra),
        )
    }
}

// ---- the rendered manifest ----------------------------------------------------------------------------------

/// One YAML document of `helm template` output: its kind, metadata.name and text.
#[derive(Debug)]
struct Doc {
    kind: String,
    name: String,
    text: String,
}

fn documents(manifest: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    let mut chunk = String::new();
    for line in manifest.lines().chain(std::iter::once("---")) {
        if line == "---" {
            let kind = chunk
                .lines()
                .find_map(|l| l.strip_prefix("kind: "))
                .map(str::to_owned);
            if let Some(kind) = kind {
                let name = chunk
                    .lines()
                    .skip_while(|l| *l != "metadata:")
                    .find_map(|l| l.strip_prefix("  name: "))
                    .unwrap_or_else(|| panic!("a {kind} without metadata.name:\n{chunk}"))
                    .trim_matches('"')
                    .to_owned();
                docs.push(Doc {
                    kind,
                    name,
                    text: std::mem::take(&mut chunk),
                });
            }
            chunk.clear();
        } else {
            chunk.push_str(line);
            chunk.push('\n');
        }
    }
    docs
}

fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    docs.iter()
        .find(|doc| doc.kind == kind && doc.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", kinds_and_names(docs)))
}

fn kinds_and_names(docs: &[Doc]) -> BTreeSet<(String, String)> {
    docs.iter()
        .map(|doc| (doc.kind.clone(), doc.name.clone()))
        .collect()
}

/// The grants of a rendered ClusterRole or Role. The chart writes each rule as three lines whose values
/// are one-line flow arrays, which are JSON; any other shape fails here, so no rule can hide.
fn rendered_grants(doc: &Doc) -> BTreeSet<Grant> {
    let mut lines = doc.text.lines().skip_while(|line| *line != "rules:").skip(1);
    let mut grants = BTreeSet::new();
    let field = |line: Option<&str>, prefix: &str| -> Vec<String> {
        let line = line.unwrap_or_else(|| panic!("{} {}: rule ends before {prefix}", doc.kind, doc.name));
        let array = line.strip_prefix(prefix).unwrap_or_else(|| {
            panic!(
                "{} {}: expected a line `{prefix}[...]`, got {line:?} (keep each rule as one-line arrays)",
                doc.kind, doc.name
            )
        });
        serde_json::from_str(array).unwrap_or_else(|error| {
            panic!("{} {}: {line:?} is not a flat array: {error}", doc.kind, doc.name)
        })
    };
    while let Some(first) = lines.next() {
        if !first.starts_with(' ') {
            break; // the next top-level key
        }
        let groups = field(Some(first), "  - apiGroups: ");
        let resources = field(lines.next(), "    resources: ");
        let verbs = field(lines.next(), "    verbs: ");
        for group in &groups {
            for resource in &resources {
                for verb in &verbs {
                    grants.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    assert!(!grants.is_empty(), "{} {} has no rules", doc.kind, doc.name);
    grants
}

// ---- helm lint and helm template --------------------------------------------------------------------------

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

// ---- a real kube-apiserver ------------------------------------------------------------------------------------

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

// ---- the binary as the image runs it ------------------------------------------------------------------------

/// The effective uid of this process.
fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
        .expect("a Uid line in /proc/self/status")
}

fn echo(address: &str, message: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap_or_else(|error| panic!("connect {address}: {error}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let payload = serde_json::json!({ "message": message }).to_string();
    // | size u32 | header u8 | route i16 | seq i16 | payload |, big-endian.
    let mut packet = Vec::new();
    packet.extend_from_slice(&(1 + 2 + 2 + payload.len() as u32).to_be_bytes());
    packet.push(0);
    packet.extend_from_slice(&1i16.to_be_bytes());
    packet.extend_from_slice(&7i16.to_be_bytes());
    packet.extend_from_slice(payload.as_bytes());
    stream.write_all(&packet).expect("send the packet");
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("response size");
    let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).expect("response body");
    assert_eq!(body[0], 0, "a data packet");
    assert_eq!(&body[1..5], &[0, 1, 0, 7], "route 1 and seq 7 come back");
    String::from_utf8_lossy(&body[5..]).into_owned()
}

/// `switchyard dev` as the image runs it: uid/gid 65532, no new privileges, read-only root filesystem,
/// a read-only working directory, and an environment of documented `SWITCHYARD_*` variables only (no PATH,
/// HOME or TMPDIR). It must serve /healthz, /readyz, /metrics and a client, and exit 0 on SIGTERM.
#[cfg(target_os = "linux")]
#[test]
fn binary_runs_unprivileged_read_only_with_documented_env_only() {
    use std::os::unix::fs::PermissionsExt as _;

    let binary = env!("CARGO_BIN_EXE_switchyard");
    let cwd = TempDir::new("read-only-cwd");
    std::fs::set_permissions(cwd.path(), std::fs::Permissions::from_mode(0o555)).expect("chmod 0555");

    let root = euid() == 0;
    let mut command;
    let mut read_only_root = false;
    if root {
        // Drop to the image's user; make the root filesystem read-only in a private mount namespace when
        // this environment allows one (a container without CAP_SYS_ADMIN does not).
        let setpriv = on_path("setpriv", "install it (Debian package `util-linux`)");
        let unshare = on_path("unshare", "install it (Debian package `util-linux`)");
        let sh = on_path("sh", "install it (Debian package `dash`)");
        let mount = on_path("mount", "install it (Debian package `mount`)");
        read_only_root = Command::new(&unshare)
            .args(["--mount", "--propagation", "private", "--"])
            .arg(&mount)
            .args(["-o", "remount,bind,ro", "/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        let drop_privileges = [
            setpriv.as_os_str(),
            "--reuid=65532".as_ref(),
            "--regid=65532".as_ref(),
            "--clear-groups".as_ref(),
            "--no-new-privs".as_ref(),
            "--".as_ref(),
            binary.as_ref(),
            "dev".as_ref(),
        ];
        if read_only_root {
            command = Command::new(&unshare);
            command
                .args(["--mount", "--propagation", "private", "--"])
                .arg(&sh)
                .arg("-c")
                .arg(format!("{} -o remount,bind,ro / && exec \"$@\"", mount.display()))
                .arg("sh")
                .args(drop_privileges);
        } else {
            eprintln!("note: cannot create a mount namespace here; the root filesystem stays writable");
            command = Command::new(drop_privileges[0]);
            command.args(&drop_privileges[1..]);
        }
    } else {
        eprintln!(
            "note: not root; running as uid {} without a read-only root filesystem",
            euid()
        );
        command = Command::new(binary);
        command.arg("dev");
    }
    command
        .env_clear()
        .env("SWITCHYARD_TCP", "127.0.0.1:0")
        .env("SWITCHYARD_WS", "127.0.0.1:0")
        .env("SWITCHYARD_HTTP", "127.0.0.1:0")
        .env("SWITCHYARD_LOG", "info")
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start `{}`: {error}", describe(&command)));
    let pid = child.id();
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
        }
    }
    let guard = KillOnDrop(pid);

    // The banner names the bound addresses.
    let stdout = child.stdout.take().expect("stdout piped");
    let stderr = child.stderr.take().expect("stderr piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let (mut admin, mut tcp) = (String::new(), String::new());
    while admin.is_empty() || tcp.is_empty() {
        let Ok(line) = receiver.recv_timeout(Duration::from_secs(60)) else {
            drop(guard); // kill it first: its stderr reaches EOF only when it exits
            panic!(
                "no banner from `switchyard dev` within 60 s; stderr:\n{}",
                stderr_reader.join().unwrap_or_default()
            );
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["admin", address, ..] => admin = address.trim_start_matches("http://").to_owned(),
            ["clients", address, ..] if address.starts_with("tcp://") => {
                tcp = address.trim_start_matches("tcp://").to_owned();
            }
            _ => {}
        }
    }

    // The process really is what the pod's securityContext makes of it.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("/proc/<pid>/exe");
    assert_eq!(exe, Path::new(binary), "pid {pid} is the switchyard binary");
    if root {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
        for field in ["Uid:", "Gid:"] {
            let ids: Vec<&str> = status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .expect("ids")
                .split_whitespace()
                .collect();
            assert_eq!(ids, ["65532"; 4], "{field} of switchyard dev");
        }
        assert!(
            status.lines().any(|line| line == "NoNewPrivs:\t1"),
            "no_new_privs is set"
        );
        assert!(
            status.lines().any(|line| line == "CapEff:\t0000000000000000"),
            "no effective capability"
        );
    }
    if read_only_root {
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
        let root_mount = mounts
            .lines()
            .find(|line| line.split_whitespace().nth(4) == Some("/"))
            .expect("the root mount");
        let options = root_mount.split_whitespace().nth(5).expect("mount options");
        assert!(
            options.split(',').any(|option| option == "ro"),
            "root mounted read-only: {root_mount}"
        );
    }

    // It serves: admin endpoints and a client.
    assert_eq!(http_get_blocking(admin.as_str(), "/healthz").0, 200, "/healthz");
    assert_eq!(http_get_blocking(admin.as_str(), "/readyz").0, 200, "/readyz");
    let (code, metrics) = http_get_blocking(admin.as_str(), "/metrics");
    assert_eq!(code, 200, "/metrics");
    assert!(metrics.contains("switchyard_"), "metrics:\n{metrics}");
    let reply = echo(&tcp, "read-only");
    assert!(reply.contains("\"read-only\""), "echo reply: {reply}");

    // SIGTERM: a clean exit.
    run_ok(Command::new("kill").args(["-TERM", &pid.to_string()]));
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "switchyard dev still runs 40 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = stderr_reader.join().unwrap_or_default();
    assert!(
        status.success(),
        "switchyard dev exited with {status}; stderr:\n{stderr}"
    );
    std::mem::forget(guard);
    let _ = std::fs::set_permissions(cwd.path(), std::fs::Permissions::from_mode(0o755));
}

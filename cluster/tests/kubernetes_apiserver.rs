//! The Kubernetes components against a real etcd + kube-apiserver (no controller-manager, no kubelet).
//!
//! Starts both on 127.0.0.1 (free ports, certificates made with the `openssl` CLI, the binaries from
//! `e2e/toolchain/build.sh`), then, as a node whose RBAC is exactly what the module docs ask for:
//! - [`KubernetesRegistry`] publishes EndpointSlices created by hand (10.244.x.y / fd00:: addresses:
//!   the API refuses loopback ones; nothing connects to them), and follows ready → terminating and deletes;
//!   one registry over two Services (the node Services of two pools) lists both;
//! - [`PodReporter`] writes the count annotations and the routes on a pod, throttled, ending on the newest
//!   count, and retries until a pod that did not exist yet appears;
//! - [`DrainSignal`] (pod watch) sees the drain annotation come and go.
//!
//! Run: `cargo test -p switchyard-cluster --test kubernetes_apiserver -- --ignored --nocapture`.
//! It fails (never skips) when the binaries or `openssl` are missing. `SWITCHYARD_K8S_BIN` overrides the
//! binary directory; `SWITCHYARD_K8S_KEEP=1` keeps the work dir (logs, kubeconfigs) after the run.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};
use serde_json::json;
use switchyard_cluster::kubernetes::{
    DrainSignal, KubernetesRegistry, PodRef, PodReporter, RegistryConfig, ReporterConfig,
};
use switchyard_cluster::registry::{NodeEndpoint, Registry};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const NS: &str = "switchyard-test";
const SERVICE: &str = "game-nodes";
const NODE_USER: &str = "switchyard-node";
const WAIT: Duration = Duration::from_secs(30);

// ---- the control plane ------------------------------------------------------------------------------------

/// etcd + kube-apiserver as child processes of this test, killed (by pid) on drop.
struct ControlPlane {
    dir: PathBuf,
    children: Vec<(&'static str, Child)>,
    api_port: u16,
}

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWITCHYARD_K8S_BIN") {
        return PathBuf::from(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/toolchain/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--print-bin-dir")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} --print-bin-dir: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} --print-bin-dir failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (is it installed? Debian: apt-get install {program}): {e}")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, the API server's serving cert, two client certs and the service-account key pair.
fn make_pki(pki: &Path) {
    fs::create_dir_all(pki).unwrap();
    run(
        pki,
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=switchyard-test-ca",
        ],
    );
    let sign = |name: &str, subject: &str, ext: &str| {
        run(
            pki,
            "openssl",
            &[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                subject,
            ],
        );
        fs::write(pki.join(format!("{name}.ext")), ext).unwrap();
        run(
            pki,
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ],
        );
    };
    sign(
        "apiserver",
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    );
    let client = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
                  extendedKeyUsage=clientAuth\n";
    sign("admin", "/O=system:masters/CN=switchyard-admin", client);
    sign("node", &format!("/CN={NODE_USER}"), client);
    run(pki, "openssl", &["genrsa", "-out", "sa.key", "2048"]);
    run(
        pki,
        "openssl",
        &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
    );
}

impl ControlPlane {
    fn start() -> ControlPlane {
        let bin = bin_dir();
        for b in ["etcd", "kube-apiserver"] {
            assert!(
                bin.join(b).is_file(),
                "{} is missing: build the control plane first with e2e/toolchain/build.sh \
                 (or point SWITCHYARD_K8S_BIN at a directory holding etcd and kube-apiserver)",
                bin.join(b).display()
            );
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("switchyard-k8s-{}-{stamp}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let pki = dir.join("pki");
        make_pki(&pki);
        let mut plane = ControlPlane {
            dir: dir.clone(),
            children: Vec::new(),
            api_port: free_port(),
        };
        let (etcd_port, peer_port) = (free_port(), free_port());
        let etcd = format!("http://127.0.0.1:{etcd_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        plane.spawn(
            "etcd",
            &bin.join("etcd"),
            &[
                "--name=test".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd}"),
                format!("--advertise-client-urls={etcd}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster=test={peer}"),
                "--initial-cluster-state=new".into(),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", etcd_port)).is_err() {
            plane.assert_alive();
            assert!(
                Instant::now() < deadline,
                "etcd did not listen on {etcd} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let p = |f: &str| pki.join(f).display().to_string();
        plane.spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                // A loopback advertise address is refused by the default (lease) endpoint reconciler.
                "--endpoint-reconciler-type=none".into(),
                format!("--secure-port={}", plane.api_port),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--authorization-mode=RBAC".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
        );
        for (user, cert) in [("admin", "admin"), ("node", "node")] {
            let kubeconfig = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{}\n    \
                 certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    client-certificate: {}\n    \
                 client-key: {}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: {user}\n\
                 current-context: test\n",
                plane.api_port,
                p("ca.crt"),
                p(&format!("{cert}.crt")),
                p(&format!("{cert}.key")),
            );
            fs::write(dir.join(format!("{user}.kubeconfig")), kubeconfig).unwrap();
        }
        plane
    }

    fn spawn(&mut self, name: &'static str, program: &Path, args: &[String]) {
        let log = fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        self.children.push((name, child));
    }

    fn assert_alive(&mut self) {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{name} exited early with {status}; see its log above");
            }
        }
    }

    async fn client(&self, user: &str) -> Client {
        let kubeconfig = Kubeconfig::read_from(self.dir.join(format!("{user}.kubeconfig"))).unwrap();
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    }

    /// Waits until the API server serves requests (it creates the `default` namespace once it is up).
    async fn wait_ready(&mut self, admin: &Client) {
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            self.assert_alive();
            let last_error = match namespaces.get("default").await {
                Ok(_) => return,
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready within 240 s; last error: {last_error}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let keep = std::env::var_os("SWITCHYARD_K8S_KEEP").is_some();
        if std::thread::panicking() {
            for (name, _) in &self.children {
                let path = self.dir.join(format!("{name}.log"));
                let lines: Vec<String> = fs::File::open(&path)
                    .map(|f| BufReader::new(f).lines().map_while(Result::ok).collect())
                    .unwrap_or_default();
                eprintln!("----- last lines of {} -----", path.display());
                for line in &lines[lines.len().saturating_sub(30)..] {
                    eprintln!("{line}");
                }
            }
        }
        if keep || std::thread::panicking() {
            eprintln!("kept {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// ---- helpers ----------------------------------------------------------------------------------------------

async fn create<K>(api: &Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap()
}

/// An EndpointSlice of `service` with a `link` port 7000 and an `admin` port 9000.
fn slice(name: &str, service: &str, address_type: &str, endpoints: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "switchyard-test",
            },
        },
        "addressType": address_type,
        "ports": [
            {"name": "admin", "port": 9000, "protocol": "TCP"},
            {"name": "link", "port": 7000, "protocol": "TCP"},
        ],
        "endpoints": endpoints,
    })
}

fn ep(address: &str, accepting: bool) -> NodeEndpoint {
    NodeEndpoint {
        address: address.to_owned(),
        accepting,
    }
}

async fn wait_nodes(rx: &mut watch::Receiver<Vec<NodeEndpoint>>, expected: &[NodeEndpoint], what: &str) {
    let result = tokio::time::timeout(WAIT, rx.wait_for(|nodes| nodes == expected))
        .await
        .map(|r| r.map(|_| ()));
    match result {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("{what}: the registry stopped"),
        Err(_) => panic!(
            "{what}: the registry did not publish {expected:?} within {WAIT:?}; it has {:?}",
            *rx.borrow()
        ),
    }
}

fn annotation(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.annotations.as_ref()?.get(key).cloned()
}

async fn wait_annotation(pods: &Api<Pod>, pod: &str, key: &str, value: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let mut seen = None;
    while Instant::now() < deadline {
        if let Ok(p) = pods.get(pod).await {
            seen = annotation(&p, key);
            if seen.as_deref() == Some(value) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pod {pod}: annotation {key} is {seen:?}, not {value:?}, after {within:?}");
}

fn pod_json(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{"name": "node", "image": "registry.invalid/switchyard:test"}],
        },
    })
}

// ---- the test ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane from e2e/toolchain/build.sh; run by scripts/test.sh e2e tier"]
async fn registry_reporter_and_drain_against_a_real_api_server() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            std::env::var("SWITCHYARD_LOG").unwrap_or_else(|_| "switchyard_cluster=debug".to_owned()),
        )
        .try_init();
    let mut plane = ControlPlane::start();
    let admin = plane.client("admin").await;
    plane.wait_ready(&admin).await;

    // Namespace, the default ServiceAccount (no controller-manager creates it), and the node's RBAC: exactly
    // what the module docs list.
    create::<Namespace>(&Api::all(admin.clone()), json!({"metadata": {"name": NS}})).await;
    create::<ServiceAccount>(
        &Api::namespaced(admin.clone(), NS),
        json!({"metadata": {"name": "default"}}),
    )
    .await;
    create::<Role>(
        &Api::namespaced(admin.clone(), NS),
        json!({
            "metadata": {"name": "switchyard-node"},
            "rules": [
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods"], "resourceNames": ["node-0", "node-1"],
                 "verbs": ["get", "list", "watch", "patch"]},
            ],
        }),
    )
    .await;
    create::<RoleBinding>(
        &Api::namespaced(admin.clone(), NS),
        json!({
            "metadata": {"name": "switchyard-node"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "switchyard-node"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": NODE_USER}],
        }),
    )
    .await;
    let node = plane.client("node").await;
    let shutdown = CancellationToken::new();

    registry_follows_endpoint_slices(&admin, &node, &shutdown).await;
    reporter_and_drain(&admin, &node, &shutdown).await;

    shutdown.cancel();
}

async fn registry_follows_endpoint_slices(admin: &Client, node: &Client, shutdown: &CancellationToken) {
    let slices: Api<EndpointSlice> = Api::namespaced(admin.clone(), NS);
    create(
        &slices,
        slice(
            "game-nodes-a",
            SERVICE,
            "IPv4",
            json!([
                {"addresses": ["10.244.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false}},
                {"addresses": ["10.244.0.2"], "conditions": {"ready": true, "serving": true, "terminating": false}},
                {"addresses": ["10.244.0.4"], "conditions": {"ready": false, "serving": false, "terminating": false}},
            ]),
        ),
    )
    .await;
    create(
        &slices,
        slice(
            "game-nodes-b",
            SERVICE,
            "IPv4",
            json!([
                {"addresses": ["10.244.0.3"], "conditions": {}},
                {"addresses": ["10.244.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            ]),
        ),
    )
    .await;
    create(
        &slices,
        slice(
            "game-nodes-v6",
            SERVICE,
            "IPv6",
            json!([{"addresses": ["fd00:10:244::9"], "conditions": {"ready": true}}]),
        ),
    )
    .await;
    // Another Service's slice in the same namespace: never published.
    create(
        &slices,
        slice("gates-a", "gates", "IPv4", json!([{"addresses": ["10.244.9.9"]}])),
    )
    .await;

    let registry =
        KubernetesRegistry::start(node.clone(), RegistryConfig::new(NS, SERVICE), shutdown).unwrap();
    tokio::time::timeout(WAIT, registry.wait_synced())
        .await
        .expect("registry synced within 30 s")
        .expect("registry running");
    let mut nodes = registry.nodes();
    wait_nodes(
        &mut nodes,
        &[
            ep("10.244.0.1:7000", true),
            ep("10.244.0.2:7000", true), // accepting in slice a, draining in b: accepting wins
            ep("10.244.0.3:7000", true), // conditions all nil
            ep("10.244.0.4:7000", false), // listed but not ready: linked, not offered
            ep("[fd00:10:244::9]:7000", true),
        ],
        "initial list",
    )
    .await;

    // One registry over two Services (the node Services of two pools) lists the slices of both, still not
    // those of a third Service.
    let pools = KubernetesRegistry::start(
        node.clone(),
        RegistryConfig::for_services(NS, [SERVICE, "gates"]),
        shutdown,
    )
    .unwrap();
    tokio::time::timeout(WAIT, pools.wait_synced())
        .await
        .expect("two-Service registry synced within 30 s")
        .expect("registry running");
    let mut pool_nodes = pools.nodes();
    let listed: Vec<String> = tokio::time::timeout(WAIT, pool_nodes.wait_for(|nodes| !nodes.is_empty()))
        .await
        .expect("the two-Service registry published within 30 s")
        .expect("registry running")
        .iter()
        .map(|node| node.address.clone())
        .collect();
    assert!(
        listed.iter().any(|address| address.starts_with("10.244.9.9:"))
            && listed.contains(&"10.244.0.4:7000".to_owned()),
        "both Services' nodes: {listed:?}"
    );
    drop(pools);

    // 10.244.0.1 starts terminating: draining (present, not accepting).
    slices
        .patch(
            "game-nodes-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [
                {"addresses": ["10.244.0.1"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.244.0.2"], "conditions": {"ready": true, "serving": true, "terminating": false}},
            ]})),
        )
        .await
        .unwrap();
    wait_nodes(
        &mut nodes,
        &[
            ep("10.244.0.1:7000", false),
            ep("10.244.0.2:7000", true),
            ep("10.244.0.3:7000", true),
            ep("[fd00:10:244::9]:7000", true),
        ],
        "ready -> terminating",
    )
    .await;

    // Slice b and the IPv6 slice go away; then 10.244.0.1 stops serving (a draining node failing its
    // readiness probe: still linked), and finally leaves the slice (its pod is gone).
    slices
        .delete("game-nodes-b", &DeleteParams::default())
        .await
        .unwrap();
    slices
        .delete("game-nodes-v6", &DeleteParams::default())
        .await
        .unwrap();
    wait_nodes(
        &mut nodes,
        &[ep("10.244.0.1:7000", false), ep("10.244.0.2:7000", true)],
        "slices deleted",
    )
    .await;
    slices
        .patch(
            "game-nodes-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [
                {"addresses": ["10.244.0.1"], "conditions": {"ready": false, "serving": false, "terminating": true}},
                {"addresses": ["10.244.0.2"], "conditions": {"ready": true, "serving": true, "terminating": false}},
            ]})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        *nodes.borrow_and_update(),
        vec![ep("10.244.0.1:7000", false), ep("10.244.0.2:7000", true)],
        "a draining endpoint that fails readiness stays linked"
    );
    slices
        .patch(
            "game-nodes-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [
                {"addresses": ["10.244.0.2"], "conditions": {"ready": true, "serving": true, "terminating": false}},
            ]})),
        )
        .await
        .unwrap();
    wait_nodes(
        &mut nodes,
        &[ep("10.244.0.2:7000", true)],
        "endpoint gone with its pod",
    )
    .await;
}

async fn reporter_and_drain(admin: &Client, node: &Client, shutdown: &CancellationToken) {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    create(&pods, pod_json("node-0")).await;

    // Every distinct bound-players value the pod carries, in order, as a watcher sees them.
    let seen: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let observer = {
        let seen = seen.clone();
        let events = watcher(
            pods.clone(),
            watcher::Config::default().fields("metadata.name=node-0"),
        )
        .default_backoff()
        .applied_objects();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(Ok(pod)) = events.next().await {
                if let Some(value) = annotation(&pod, "switchyard.dev/bound-players") {
                    let mut seen = seen.lock().unwrap();
                    if seen.last().map(|(_, v)| v) != Some(&value) {
                        seen.push((Instant::now(), value));
                    }
                }
            }
        })
    };

    let interval = Duration::from_millis(500);
    let (bound_tx, bound_rx) = watch::channel(3usize);
    let config = ReporterConfig::new(PodRef::new(NS, "node-0"))
        .with_interval(interval)
        .with_routes([11, 1, 2, 1]);
    let reporter = PodReporter::start(node.clone(), config, bound_rx, shutdown).unwrap();
    wait_annotation(&pods, "node-0", "switchyard.dev/bound-players", "3", WAIT).await;
    wait_annotation(&pods, "node-0", "switchyard.dev/routes", "1,2,11", WAIT).await;
    wait_annotation(
        &pods,
        "node-0",
        "controller.kubernetes.io/pod-deletion-cost",
        "3",
        WAIT,
    )
    .await;
    let managers: Vec<String> = pods
        .get("node-0")
        .await
        .unwrap()
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.iter().any(|m| m == "switchyard"),
        "field managers {managers:?}"
    );

    // A burst of 17 changes in ~350 ms: a few patches, the last one with the newest value.
    let burst_start = Instant::now();
    for value in 4..=20 {
        bound_tx.send_replace(value);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_annotation(&pods, "node-0", "switchyard.dev/bound-players", "20", WAIT).await;
    wait_annotation(
        &pods,
        "node-0",
        "controller.kubernetes.io/pod-deletion-cost",
        "20",
        WAIT,
    )
    .await;
    let mut written = reporter.written();
    tokio::time::timeout(WAIT, written.wait_for(|w| *w == Some(20)))
        .await
        .expect("written() reports 20")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // let the observer catch up
    let during_burst: Vec<(Instant, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at >= burst_start)
        .cloned()
        .collect();
    let values: Vec<&str> = during_burst.iter().map(|(_, v)| v.as_str()).collect();
    eprintln!("bound-players values the pod carried during the burst: {values:?}");
    assert!(
        (1..=3).contains(&values.len()) && values.last() == Some(&"20"),
        "17 changes at a 500 ms interval gave these written values: {values:?}"
    );
    for pair in during_burst.windows(2) {
        // observed times jitter a little around the patch times
        assert!(
            pair[1].0 - pair[0].0 >= interval / 2,
            "two patches {:?} apart at a {interval:?} interval: {values:?}",
            pair[1].0 - pair[0].0
        );
    }
    observer.abort();

    // A reporter started before its pod exists retries (with backoff) until the pod appears.
    let (_late_tx, late_rx) = watch::channel(7usize);
    let late_config =
        ReporterConfig::new(PodRef::new(NS, "node-1")).with_interval(Duration::from_millis(200));
    let late = PodReporter::start(node.clone(), late_config, late_rx, shutdown).unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        *late.written().borrow(),
        None,
        "nothing can be written before the pod exists"
    );
    create(&pods, pod_json("node-1")).await;
    wait_annotation(&pods, "node-1", "switchyard.dev/bound-players", "7", WAIT).await;

    // The drain signal through a metadata watch of the pod, with the node's narrow RBAC.
    let drain = DrainSignal::from_pod_watch(node.clone(), PodRef::new(NS, "node-0"), shutdown).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!drain.is_requested(), "no drain annotation yet");
    pods.patch(
        "node-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"switchyard.dev/drain": "true"}}})),
    )
    .await
    .unwrap();
    tokio::time::timeout(WAIT, drain.requested())
        .await
        .expect("drain seen within 30 s")
        .expect("drain signal running");
    let mut requested = drain.subscribe();
    pods.patch(
        "node-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"switchyard.dev/drain": null}}})),
    )
    .await
    .unwrap();
    tokio::time::timeout(WAIT, requested.wait_for(|r| !*r))
        .await
        .expect("drain removal seen within 30 s")
        .unwrap();
    // The reporter's annotations survived the other writers' patches.
    let pod = pods.get("node-0").await.unwrap();
    assert_eq!(
        annotation(&pod, "switchyard.dev/bound-players").as_deref(),
        Some("20")
    );
    let all: BTreeMap<String, String> = pod.metadata.annotations.unwrap_or_default();
    assert!(!all.contains_key("switchyard.dev/drain"), "{all:?}");
}

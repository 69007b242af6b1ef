//! A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager (so
//! Deployments get ReplicaSets and Pods, and the garbage collector cascades deletions) from the binaries
//! that `e2e/toolchain/build.sh` builds, on 127.0.0.1 with free ports and throwaway certificates (as
//! `e2e/toolchain/smoke.sh` does). There is no scheduler and no kubelet: pods stay unscheduled, and
//! [`mark_pods_ready`] plays the kubelet's part for readiness.
//!
//! One control plane is shared by every test of a test binary ([`ControlPlane::shared`]); tests isolate
//! themselves by namespace. Each process runs under a small supervisor script that stops it (SIGTERM, then
//! SIGKILL) when the test binary's end of its stdin pipe closes, so nothing outlives the tests, even when
//! they panic or are killed.
//!
//! Missing binaries are a test failure with instructions, never a silent skip.
//!
//! [`Operator`] starts the operator under test as the real `switchyard operator` process when the binary
//! has that subcommand, and in-process (the `switchyard-operator` crate) otherwise; set
//! `SWITCHYARD_TEST_OPERATOR=binary|inprocess` to choose. Either way it runs as the user
//! `switchyard-operator`, bound to exactly the operator's ClusterRole ([`switchyard_operator::rbac`]).

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

/// What a test prints when the control-plane binaries are missing.
pub const HOW_TO_BUILD: &str = "build them with `e2e/toolchain/build.sh` (about 19 minutes the first \
     time, then instant) or run `scripts/test.sh`, which does it first";

const SUPERVISOR: &str = r#"#!/usr/bin/env bash
# supervise.sh LOG PIDFILE CMD...: runs CMD (output to LOG, pid to PIDFILE) until this script's stdin closes,
# then stops it: SIGTERM, and SIGKILL after 10 s.
log="$1"; pidfile="$2"; shift 2
"$@" </dev/null >>"$log" 2>&1 &
pid=$!
echo "$pid" >"$pidfile"
read -r _ || true
kill -TERM "$pid" 2>/dev/null
for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.2; done
kill -KILL "$pid" 2>/dev/null
"#;

/// The workspace root (this package's manifest directory).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// The directory of the cached control-plane binaries; panics with instructions when one is missing.
pub fn bin_dir() -> PathBuf {
    let script = workspace().join("e2e/toolchain/build.sh");
    let output = Command::new(&script)
        .arg("--print-bin-dir")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
    assert!(
        output.status.success(),
        "{} --print-bin-dir failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let missing: Vec<&str> = ["etcd", "kube-apiserver", "kube-controller-manager", "kubectl"]
        .into_iter()
        .filter(|binary| !dir.join(binary).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "the Kubernetes control-plane binaries {missing:?} are missing from {}: {HOW_TO_BUILD}",
        dir.display()
    );
    dir
}

/// A process under the supervisor script.
struct Supervised {
    name: String,
    wrapper: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    pidfile: PathBuf,
}

impl Supervised {
    fn start(dir: &Path, name: &str, program: &Path, args: &[String]) -> Supervised {
        let log = dir.join(format!("{name}.log"));
        let pidfile = dir.join(format!("{name}.pid"));
        let mut wrapper = Command::new("bash")
            .arg(dir.join("supervise.sh"))
            .arg(&log)
            .arg(&pidfile)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        let stdin = wrapper.stdin.take();
        Supervised {
            name: name.to_owned(),
            wrapper,
            stdin,
            log,
            pidfile,
        }
    }

    /// Whether the supervised process still runs.
    fn alive(&self) -> bool {
        let Ok(pid) = std::fs::read_to_string(&self.pidfile) else {
            return true; // not started yet
        };
        Command::new("kill")
            .args(["-0", pid.trim()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(30);
        format!(
            "----- last lines of {} -----\n{}",
            self.log.display(),
            lines[start..].join("\n")
        )
    }

    /// Closes the supervisor's stdin and waits for it (it stops the process first).
    fn stop(&mut self) {
        drop(self.stdin.take());
        let _ = self.wrapper.wait();
    }
}

struct Janitor {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// etcd + kube-apiserver + kube-controller-manager on 127.0.0.1.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub server: String,
    /// `system:masters`.
    pub admin_kubeconfig: PathBuf,
    /// The user `switchyard-operator`, bound to the operator's ClusterRole by [`ControlPlane::install`].
    pub operator_kubeconfig: PathBuf,
    /// The user `switchyard-operator-ns`, bound to nothing: a namespace-scoped test binds the operator's
    /// rules to it in one namespace ([`ControlPlane::bind_operator_rules_in`]).
    pub namespaced_operator_kubeconfig: PathBuf,
    processes: Mutex<Vec<Supervised>>,
    janitor: Mutex<Option<Janitor>>,
    installed: OnceLock<()>,
}

static SHARED: OnceLock<ControlPlane> = OnceLock::new();

impl ControlPlane {
    /// The control plane shared by this test binary, started on first use (15-60 s).
    pub fn shared() -> &'static ControlPlane {
        SHARED.get_or_init(|| {
            let started = Instant::now();
            let plane = ControlPlane::start();
            eprintln!(
                "control plane up in {:.1}s: {} (logs in {})",
                started.elapsed().as_secs_f64(),
                plane.server,
                plane.dir.display()
            );
            plane
        })
    }

    /// Starts a fresh control plane. Panics, with the processes' logs, when it does not come up.
    pub fn start() -> ControlPlane {
        let bin = bin_dir();
        let unique = format!(
            "switchyard-kube-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ u128::from(free_port())
        );
        let dir = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(dir.join("pki")).expect("temp dir");
        std::fs::write(dir.join("supervise.sh"), SUPERVISOR).expect("supervisor script");
        let keep = std::env::var_os("SWITCHYARD_KEEP_KUBE").is_some();
        // Removes the directory once the test binary is gone (its end of the janitor's stdin closes), after
        // the supervisors had time to stop their processes.
        let janitor = (!keep).then(|| {
            let mut child = Command::new("bash")
                .args([
                    "-c",
                    "read -r _ || true; sleep 15; rm -rf \"$0\"",
                    &dir.display().to_string(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("janitor starts");
            let stdin = child.stdin.take();
            Janitor { child, stdin }
        });
        make_certificates(&dir.join("pki"));

        let etcd_port = free_port();
        let etcd_peer_port = free_port();
        let api_port = free_port();
        let kcm_port = free_port();
        let server = format!("https://127.0.0.1:{api_port}");
        let pki = dir.join("pki");
        let admin_kubeconfig = write_kubeconfig(&dir, &server, "admin");
        let operator_kubeconfig = write_kubeconfig(&dir, &server, "operator");
        let namespaced_operator_kubeconfig = write_kubeconfig(&dir, &server, "operator-ns");
        let kcm_kubeconfig = write_kubeconfig(&dir, &server, "kcm");
        let plane = ControlPlane {
            dir: dir.clone(),
            bin: bin.clone(),
            server,
            admin_kubeconfig,
            operator_kubeconfig,
            namespaced_operator_kubeconfig,
            processes: Mutex::new(Vec::new()),
            janitor: Mutex::new(janitor),
            installed: OnceLock::new(),
        };
        let p = |name: &str| pki.join(name).display().to_string();

        plane.spawn(
            "etcd",
            &bin.join("etcd"),
            vec![
                "--name=test".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-cluster=test=http://127.0.0.1:{etcd_peer_port}"),
                "--initial-cluster-state=new".into(),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        );
        plane.wait_for("etcd", Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", etcd_port)).is_ok()
        });

        plane.spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            vec![
                format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--authorization-mode=RBAC".into(),
                format!("--requestheader-client-ca-file={}", p("ca.crt")),
                "--requestheader-allowed-names=front-proxy-client".into(),
                "--requestheader-username-headers=X-Remote-User".into(),
                "--requestheader-group-headers=X-Remote-Group".into(),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
                format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
                format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
                "--endpoint-reconciler-type=none".into(),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
        );
        plane.wait_for("kube-apiserver /readyz", Duration::from_secs(180), || {
            plane.kubectl_quiet(&["get", "--raw", "/readyz"]).status.success()
        });

        plane.spawn(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            vec![
                format!("--kubeconfig={}", kcm_kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kcm_kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kcm_kubeconfig.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=true".into(),
                format!("--service-account-private-key-file={}", p("sa.key")),
                format!("--root-ca-file={}", p("ca.crt")),
                format!("--cluster-signing-cert-file={}", p("ca.crt")),
                format!("--cluster-signing-key-file={}", p("ca.key")),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--v=1".into(),
            ],
        );
        // The service-account controller creates `default` in every namespace: the controller-manager runs.
        plane.wait_for("kube-controller-manager", Duration::from_secs(120), || {
            plane
                .kubectl_quiet(&["-n", "default", "get", "serviceaccount", "default"])
                .status
                .success()
        });
        plane
    }

    fn spawn(&self, name: &str, program: &Path, args: Vec<String>) {
        let process = Supervised::start(&self.dir, name, program, &args);
        self.processes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(process);
    }

    fn logs(&self) -> String {
        self.processes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(Supervised::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn wait_for(&self, what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
        let started = Instant::now();
        loop {
            if ready() {
                return;
            }
            let dead: Vec<String> = self
                .processes
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .iter()
                .filter(|process| !process.alive())
                .map(|process| process.name.clone())
                .collect();
            assert!(dead.is_empty(), "{what}: {dead:?} exited\n{}", self.logs());
            assert!(
                started.elapsed() < within,
                "{what}: not ready after {within:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn kubectl_quiet(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()))
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// Runs the real kubectl as the admin; returns its output (check `status` yourself).
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_quiet(args)
    }

    /// kubectl with `stdin` as its standard input (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes()).expect("kubectl stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Installs what every operator test needs, once: the committed CRDs (`crds/gamecluster.yaml`, applied
    /// with the real kubectl and waited for until Established) and the operator's ClusterRole, bound to the
    /// user `switchyard-operator`.
    pub fn install(&self) {
        self.installed.get_or_init(|| {
            let crd = workspace().join("crds/gamecluster.yaml");
            self.kubectl_ok(&["apply", "--server-side", "-f", &crd.display().to_string()]);
            self.kubectl_ok(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/gameclusters.switchyard.dev",
                "crd/gamepools.switchyard.dev",
            ]);
            let role = serde_json::to_string(&switchyard_operator::rbac::cluster_role("switchyard-operator"))
                .expect("ClusterRole JSON");
            let output = self.kubectl_stdin(&["apply", "-f", "-"], &role);
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            self.kubectl_ok(&[
                "create",
                "clusterrolebinding",
                "switchyard-operator",
                "--clusterrole=switchyard-operator",
                "--user=switchyard-operator",
            ]);
        });
    }

    /// The operator's rules ([`switchyard_operator::rbac::operator_rules`]) as a Role in `namespace`, bound
    /// to the user `switchyard-operator-ns` there: what the chart's namespace-scoped install grants.
    pub fn bind_operator_rules_in(&self, namespace: &str) {
        let role = k8s_openapi::api::rbac::v1::Role {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("switchyard-operator".to_owned()),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            },
            rules: Some(switchyard_operator::rbac::operator_rules()),
        };
        let role = serde_json::to_string(&role).expect("Role JSON");
        let output = self.kubectl_stdin(&["apply", "-f", "-"], &role);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.kubectl_ok(&[
            "-n",
            namespace,
            "create",
            "rolebinding",
            "switchyard-operator",
            "--role=switchyard-operator",
            "--user=switchyard-operator-ns",
        ]);
    }

    /// A namespace for one test (created; fresh per control plane).
    pub fn namespace(&self, name: &str) -> String {
        self.kubectl_ok(&["create", "namespace", name]);
        name.to_owned()
    }

    /// A client as the admin.
    pub async fn admin_client(&self) -> Client {
        client_for(&self.admin_kubeconfig).await
    }

    /// A client as the operator's user.
    pub async fn operator_client(&self) -> Client {
        client_for(&self.operator_kubeconfig).await
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let mut processes = std::mem::take(
            self.processes
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        // Reverse start order: the apiserver hangs on shutdown without etcd.
        while let Some(mut process) = processes.pop() {
            process.stop();
        }
        if let Some(mut janitor) = self
            .janitor
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        {
            drop(janitor.stdin.take());
            let _ = janitor.child.kill();
            let _ = janitor.child.wait();
        }
        if std::env::var_os("SWITCHYARD_KEEP_KUBE").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A kube client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("kubeconfig readable");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig valid");
    Client::try_from(config).expect("client")
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run openssl ({error}): install it (Debian: apt-get install openssl)")
        });
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn make_certificates(pki: &Path) {
    openssl(
        pki,
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
    let sign = |name: &str, subject: &str, extensions: &str| {
        std::fs::write(pki.join(format!("{name}.ext")), extensions).expect("ext file");
        openssl(
            pki,
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
        openssl(
            pki,
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
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,\
         DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,\
         DNS:kubernetes.default.svc.cluster.local\n",
    );
    let client = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
                  extendedKeyUsage=clientAuth\n";
    sign("admin", "/O=system:masters/CN=switchyard-admin", client);
    sign("front-proxy-client", "/CN=front-proxy-client", client);
    sign("kcm", "/CN=system:kube-controller-manager", client);
    sign("operator", "/CN=switchyard-operator", client);
    sign("operator-ns", "/CN=switchyard-operator-ns", client);
    openssl(pki, &["genrsa", "-out", "sa.key", "2048"]);
    openssl(pki, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
}

fn write_kubeconfig(dir: &Path, server: &str, user: &str) -> PathBuf {
    let pki = dir.join("pki");
    let path = dir.join(format!("{user}.kubeconfig"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    \
         certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate: {crt}\n    \
         client-key: {key}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: {user}\n\
         current-context: test\n",
        ca = pki.join("ca.crt").display(),
        crt = pki.join(format!("{user}.crt")).display(),
        key = pki.join(format!("{user}.key")).display(),
    );
    std::fs::write(&path, text).expect("kubeconfig written");
    path
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `within` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < within, "{what}: not true after {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Plays the kubelet for readiness: every live pod matching `selector` gets phase Running, a pod IP and
/// `Ready=True`. Returns how many pods were marked.
pub async fn mark_pods_ready(client: &Client, namespace: &str, selector: &str) -> usize {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list pods");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let mut marked = 0;
    for (index, pod) in list.items.iter().enumerate() {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ready = pod
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|condition| condition.type_ == "Ready" && condition.status == "True")
            });
        if ready {
            continue;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({
            "status": {
                "phase": "Running",
                "podIP": format!("10.244.0.{}", 10 + index % 200),
                "conditions": [
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                ],
            }
        });
        match pods
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => marked += 1,
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => panic!("marking pod {name} ready: {error}"),
        }
    }
    marked
}

/// A minimal HTTP/1.1 GET against `127.0.0.1:port`: (status, body).
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return (0, String::new());
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of an unlabelled metric (or the sum of a labelled one's samples matching `filter`).
pub fn metric(text: &str, name: &str, filter: &str) -> Option<f64> {
    let samples: Vec<f64> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter(|line| line.contains(filter))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// How the operator under test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorMode {
    /// The real `switchyard operator` process.
    Binary,
    /// `switchyard_operator::run` on a task of the test's runtime.
    InProcess,
}

/// `SWITCHYARD_TEST_OPERATOR=binary|inprocess`, else the binary when it has the `operator` subcommand.
pub fn operator_mode() -> OperatorMode {
    static MODE: OnceLock<OperatorMode> = OnceLock::new();
    *MODE.get_or_init(|| {
        let mode = match std::env::var("SWITCHYARD_TEST_OPERATOR").as_deref() {
            Ok("binary") => OperatorMode::Binary,
            Ok("inprocess") => OperatorMode::InProcess,
            _ => {
                let help = Command::new(env!("CARGO_BIN_EXE_switchyard"))
                    .args(["operator", "--help"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                if help.is_ok_and(|status| status.success()) {
                    OperatorMode::Binary
                } else {
                    OperatorMode::InProcess
                }
            }
        };
        eprintln!("operator under test: {mode:?}");
        mode
    })
}

/// Leader-election timings short enough for tests.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTimings {
    pub duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        LeaseTimings {
            duration: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(3),
            retry_period: Duration::from_millis(500),
        }
    }
}

enum Running {
    Binary(Child),
    InProcess {
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<Result<(), switchyard_operator::Error>>,
    },
}

/// One operator replica, watching one namespace, with its Lease in that namespace.
pub struct Operator {
    pub identity: String,
    pub admin_port: u16,
    pub log: PathBuf,
    running: Option<Running>,
}

pub const LEASE_NAME: &str = "switchyard-operator";

impl Operator {
    /// Starts a replica and waits until its admin endpoint answers.
    pub async fn start(plane: &ControlPlane, namespace: &str, identity: &str) -> Operator {
        Operator::start_with(plane, namespace, identity, LeaseTimings::default()).await
    }

    pub async fn start_with(
        plane: &ControlPlane,
        namespace: &str,
        identity: &str,
        lease: LeaseTimings,
    ) -> Operator {
        Operator::start_as(plane, &plane.operator_kubeconfig, namespace, identity, lease).await
    }

    /// [`Operator::start_with`] as the user of `kubeconfig`.
    pub async fn start_as(
        plane: &ControlPlane,
        kubeconfig: &Path,
        namespace: &str,
        identity: &str,
        lease: LeaseTimings,
    ) -> Operator {
        let admin_port = free_port();
        let log = plane.dir.join(format!("operator-{namespace}-{identity}.log"));
        let running = match operator_mode() {
            OperatorMode::Binary => {
                let file = std::fs::File::create(&log).expect("operator log");
                let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
                    .args([
                        "operator",
                        "--watch-namespace",
                        namespace,
                        "--lease-namespace",
                        namespace,
                        "--identity",
                        identity,
                        "--http",
                        &format!("127.0.0.1:{admin_port}"),
                        "--default-image",
                        "switchyard:test",
                        "--lease-duration",
                        &format!("{}ms", lease.duration.as_millis()),
                        "--renew-deadline",
                        &format!("{}ms", lease.renew_deadline.as_millis()),
                        "--retry-period",
                        &format!("{}ms", lease.retry_period.as_millis()),
                        "--shutdown-grace",
                        "10s",
                        "--load-interval",
                        "500ms",
                    ])
                    .env("KUBECONFIG", kubeconfig)
                    .env("SWITCHYARD_LOG", "info,switchyard_operator=debug")
                    .env("NO_COLOR", "1")
                    .stdout(Stdio::from(file.try_clone().expect("log file")))
                    .stderr(Stdio::from(file))
                    .spawn()
                    .expect("switchyard operator starts");
                Running::Binary(child)
            }
            OperatorMode::InProcess => {
                let client = client_for(kubeconfig).await;
                let config = switchyard_operator::OperatorConfig {
                    namespace: Some(namespace.to_owned()),
                    defaults: switchyard_operator::Defaults {
                        image: "switchyard:test".to_owned(),
                        operator_namespace: None,
                    },
                    concurrency: 4,
                    admin: Some(std::net::SocketAddr::from(([127, 0, 0, 1], admin_port))),
                    leader_election: Some(switchyard_operator::LeaseSettings {
                        lease_duration: lease.duration,
                        renew_deadline: lease.renew_deadline,
                        retry_period: lease.retry_period,
                        ..switchyard_operator::LeaseSettings::new(
                            namespace.to_owned(),
                            LEASE_NAME.to_owned(),
                            identity.to_owned(),
                        )
                    }),
                    instance: identity.to_owned(),
                    shutdown_grace: Duration::from_secs(10),
                    load: switchyard_operator::load::LoadSettings {
                        interval: Duration::from_millis(500),
                        timeout: Duration::from_secs(2),
                    },
                };
                let shutdown = CancellationToken::new();
                let task = tokio::spawn(switchyard_operator::run(client, config, shutdown.clone()));
                Running::InProcess { shutdown, task }
            }
        };
        let operator = Operator {
            identity: identity.to_owned(),
            admin_port,
            log,
            running: Some(running),
        };
        eventually(
            &format!("operator {identity}: /healthz answers"),
            Duration::from_secs(30),
            || async { (http_get(admin_port, "/healthz").await.0 == 200).then_some(()) },
        )
        .await;
        operator
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        http_get(self.admin_port, "/metrics").await.1
    }

    /// Graceful stop (SIGTERM / cancellation): finishes reconciles, releases the Lease. Panics when the
    /// operator does not exit within 20 s or exits with an error.
    pub async fn stop(mut self) {
        match self.running.take() {
            Some(Running::Binary(mut child)) => {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let started = Instant::now();
                loop {
                    if let Ok(Some(status)) = child.try_wait() {
                        assert!(
                            status.success(),
                            "operator {} exited with {status}",
                            self.identity
                        );
                        return;
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(20),
                        "operator {} did not stop within 20 s after SIGTERM",
                        self.identity
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Some(Running::InProcess { shutdown, task }) => {
                shutdown.cancel();
                let result = tokio::time::timeout(Duration::from_secs(20), task)
                    .await
                    .unwrap_or_else(|_| panic!("operator {} did not stop within 20 s", self.identity));
                result
                    .expect("operator task")
                    .unwrap_or_else(|error| panic!("operator {} failed: {error}", self.identity));
            }
            None => {}
        }
    }

    /// An abrupt death (SIGKILL / task abort): the Lease is not released.
    pub async fn crash(mut self) {
        match self.running.take() {
            Some(Running::Binary(mut child)) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Some(Running::InProcess { task, .. }) => {
                task.abort();
                let _ = task.await;
            }
            None => {}
        }
    }

    /// The log (binary mode), for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        match self.running.take() {
            Some(Running::Binary(mut child)) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Some(Running::InProcess { task, shutdown }) => {
                shutdown.cancel();
                task.abort();
            }
            None => {}
        }
    }
}

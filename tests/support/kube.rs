//! The operator tests' view of a real Kubernetes control plane: the `switchyard-testkit` control plane
//! (etcd, kube-apiserver and kube-controller-manager, so Deployments get ReplicaSets and Pods, and the
//! garbage collector cascades deletions) on 127.0.0.1 with free ports, plus the operator's users and RBAC.
//! There is no scheduler and no kubelet: pods stay unscheduled, and [`mark_pods_ready`] plays the kubelet's
//! part for readiness.
//!
//! One control plane is shared by every test of a test binary ([`ControlPlane::shared`]); tests isolate
//! themselves by namespace. The testkit supervises its processes, so nothing outlives the tests, even when
//! they panic or are killed. Missing binaries are a test failure with instructions, never a silent skip.
//!
//! [`Operator`] starts the operator under test as the real `switchyard operator` process when the binary
//! has that subcommand, and in-process (the `switchyard-operator` crate) otherwise; set
//! `SWITCHYARD_TEST_OPERATOR=binary|inprocess` to choose. Either way it runs as the user
//! `switchyard-operator`, bound to exactly the operator's ClusterRole ([`switchyard_operator::rbac`]).

#![allow(dead_code, unreachable_pub)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use switchyard_testkit::{ControlPlaneConfig, User};
use tokio_util::sync::CancellationToken;

pub use switchyard_testkit::{eventually, free_port, http_get};

/// etcd + kube-apiserver + kube-controller-manager on 127.0.0.1, with the operator's users.
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
    plane: switchyard_testkit::ControlPlane,
    installed: OnceLock<()>,
}

static SHARED: OnceLock<ControlPlane> = OnceLock::new();

impl ControlPlane {
    /// The control plane shared by this test binary, started on first use (15-60 s).
    pub fn shared() -> &'static ControlPlane {
        SHARED.get_or_init(ControlPlane::start)
    }

    /// [`ControlPlane::shared`] with the CRD and the operator's RBAC installed, from async code (starting and
    /// installing block, so they run on a blocking thread).
    pub async fn shared_installed() -> &'static ControlPlane {
        tokio::task::spawn_blocking(|| {
            let plane = ControlPlane::shared();
            plane.install();
            plane
        })
        .await
        .expect("control plane")
    }

    /// Starts a fresh control plane. Panics, with the processes' logs, when it does not come up.
    pub fn start() -> ControlPlane {
        let config = ControlPlaneConfig::local()
            .unwrap_or_else(|error| panic!("{error}"))
            .with_controller_manager()
            .user(User::new("operator", "switchyard-operator"))
            .user(User::new("operator-ns", "switchyard-operator-ns"));
        let plane = switchyard_testkit::ControlPlane::start(config).unwrap_or_else(|error| panic!("{error}"));
        ControlPlane {
            dir: plane.dir().to_owned(),
            bin: plane.bin_dir().to_owned(),
            server: plane.server().to_owned(),
            admin_kubeconfig: plane.admin_kubeconfig(),
            operator_kubeconfig: plane.kubeconfig("operator"),
            namespaced_operator_kubeconfig: plane.kubeconfig("operator-ns"),
            plane,
            installed: OnceLock::new(),
        }
    }

    /// The end of every control-plane process's log.
    pub fn logs(&self) -> String {
        self.plane.logs()
    }

    fn kubectl_quiet(&self, args: &[&str]) -> Output {
        self.plane.kubectl().args(args).output().expect("kubectl runs")
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
            let crd = switchyard_testkit::workspace().join("crds/gamecluster.yaml");
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

/// A kube client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("kubeconfig readable");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig valid");
    Client::try_from(config).expect("client")
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

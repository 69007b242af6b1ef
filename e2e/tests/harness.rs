//! Smoke test of the e2e harness itself: a real control plane and a real node (containerd + runc, the
//! kubelet, the CNI bridge, kube-proxy, CoreDNS) in the test's own network namespace, running our image:
//!
//! 1. a Deployment of two `switchyard node --locator memory` pods (`registry.local/switchyard:e2e`) with the
//!    pod contract's env (downward API, `$(SWITCHYARD_POD_IP)` references, a downward API annotations volume
//!    as the drain file, a service-account token used to report on the own pod) and a headless Service with
//!    port `link` 7400: both pods become Ready with distinct bridge IPs, the EndpointSlice lists both as
//!    ready, the admin endpoint answers on each pod IP, and each node annotated its own pod through the API;
//! 2. deleting a pod: the kubelet sends SIGTERM, the process exits 0 within the grace period (the
//!    [`switchyard_e2e::PodWatch`] saw it and kept its log), the pod object goes, and the Deployment's
//!    replacement becomes Ready on a new IP;
//! 3. fault injection: SIGKILL a container's process; the kubelet restarts it (restartCount 1) and it is
//!    Ready again;
//! 4. the drain annotation reaches the node through the downward API file: it turns unready, and the
//!    EndpointSlice says so;
//! 5. a Redis pod (`registry.local/redis:e2e`) becomes Ready and answers PING on its own IP;
//! 6. and through a ClusterIP Service whose name CoreDNS resolves; the API server through its own Service.
//!
//! Run with `e2e/run.sh harness` (needs root, the toolchain and the images e2e/run.sh builds).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use switchyard_e2e::coredns::resolve_a;
use switchyard_e2e::node::CLUSTER_DNS;
use switchyard_e2e::{Harness, RunDir};
use switchyard_testkit::{eventually, http_get};

mod support;
use support::{endpoints, is_ready, object};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const NS: &str = "smoke";
const APP: &str = "smoke-node";
const IMAGE: &str = "registry.local/switchyard:e2e";
const REDIS_IMAGE: &str = "registry.local/redis:e2e";

#[test]
#[ignore = "run via e2e/run.sh"]
fn harness_smoke() {
    let Some(run) = switchyard_e2e::isolate().unwrap_or_else(|error| panic!("{error}")) else {
        return;
    };
    switchyard_e2e::runtime().block_on(smoke(run));
}

/// Prints a step with the time since the start.
struct Clock(Instant);

impl Clock {
    fn step(&self, what: &str) {
        eprintln!("[smoke {:6.1}s] {what}", self.0.elapsed().as_secs_f64());
    }
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a ready pod has an IP")
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().expect("pods have names")
}

/// The Ready pods of the node Deployment, once there are exactly `n`.
async fn ready_nodes(pods: &Api<Pod>, n: usize) -> Vec<Pod> {
    let params = ListParams::default().labels(&format!("app={APP}"));
    eventually(
        &format!("{n} ready node pods"),
        Duration::from_secs(120),
        || async {
            let list = pods.list(&params).await.ok()?;
            let ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
            (ready.len() == n).then_some(ready)
        },
    )
    .await
}

async fn smoke(run: RunDir) {
    let clock = Clock(Instant::now());
    let harness = Harness::start(run).await.expect("the harness starts");
    clock.step("control plane ready; node Ready (containerd, kubelet, kube-proxy, CoreDNS)");
    let client = harness.client();

    harness.create_namespace(NS).await.expect("namespace");

    // RBAC for the nodes' pod reporter, exactly what the pod contract grants nodes.
    let roles: Api<Role> = Api::namespaced(client.clone(), NS);
    roles
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "node"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch", "patch"]}],
            })),
        )
        .await
        .expect("create role");
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), NS);
    bindings
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "node"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "node"},
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": NS}],
            })),
        )
        .await
        .expect("create role binding");

    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let deployment: Deployment = object(json!({
        "metadata": {"name": APP},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": APP}},
            "template": {
                "metadata": {"labels": {"app": APP}},
                "spec": {
                    "terminationGracePeriodSeconds": 20,
                    "containers": [{
                        "name": "node",
                        "image": IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["node", "--locator", "memory"],
                        "env": [
                            {"name": "SWITCHYARD_ID", "valueFrom": field("metadata.name")},
                            {"name": "SWITCHYARD_POD_NAME", "valueFrom": field("metadata.name")},
                            {"name": "SWITCHYARD_NAMESPACE", "valueFrom": field("metadata.namespace")},
                            {"name": "SWITCHYARD_POD_IP", "valueFrom": field("status.podIP")},
                            {"name": "SWITCHYARD_HTTP", "value": "$(SWITCHYARD_POD_IP):9090"},
                            {"name": "SWITCHYARD_LINK", "value": "$(SWITCHYARD_POD_IP):7400"},
                            {"name": "SWITCHYARD_DRAIN_DEADLINE", "value": "5s"},
                            {"name": "SWITCHYARD_REPORT_POD", "value": "true"},
                            {"name": "SWITCHYARD_DRAIN_FILE", "value": "/etc/podinfo/annotations"},
                        ],
                        "ports": [
                            {"name": "link", "containerPort": 7400},
                            {"name": "admin", "containerPort": 9090},
                        ],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 1},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "admin"}, "periodSeconds": 2},
                        "volumeMounts": [{"name": "podinfo", "mountPath": "/etc/podinfo"}],
                    }],
                    "volumes": [{"name": "podinfo", "downwardAPI": {"items": [
                        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                    ]}}],
                },
            },
        },
    }));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    services
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": APP},
                "spec": {"clusterIP": "None", "selector": {"app": APP},
                         "ports": [{"name": "link", "port": 7400, "targetPort": "link"}]},
            })),
        )
        .await
        .expect("create service");

    // 1. Both pods Ready, on distinct pod IPs, listed as ready endpoints, answering on their admin port.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let ready = ready_nodes(&pods, 2).await;
    clock.step("2 node pods Ready");
    let ips: BTreeSet<String> = ready.iter().map(pod_ip).collect();
    assert_eq!(ips.len(), 2, "distinct pod IPs: {ips:?}");
    for ip in &ips {
        assert!(ip.starts_with("10.85.0."), "{ip} is on the CNI bridge");
    }
    let want: BTreeSet<(String, bool)> = ips.iter().map(|ip| (ip.clone(), true)).collect();
    eventually(
        "both pods ready in the EndpointSlice",
        Duration::from_secs(60),
        || async { (endpoints(&client, NS, APP).await == want).then_some(()) },
    )
    .await;
    clock.step("EndpointSlice lists both pod IPs as ready");
    for ip in &ips {
        let (status, body) = http_get(format!("{ip}:9090"), "/metrics").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("switchyard_"), "metrics: {body}");
        let (status, _) = http_get(format!("{ip}:9090"), "/readyz").await;
        assert_eq!(status, 200);
    }
    for pod in &ready {
        let pod_name = name(pod);
        eventually(
            "the node's own bound-players annotation (service-account token)",
            Duration::from_secs(30),
            || async {
                let pod = pods.get(&pod_name).await.ok()?;
                pod.metadata
                    .annotations?
                    .get("switchyard.dev/bound-players")
                    .cloned()
            },
        )
        .await;
    }
    clock.step("admin endpoints answer on pod IPs; nodes annotate their own pods via the API");

    // 2. Delete one pod: SIGTERM, exit within the grace period, pod object gone, replaced.
    let victim = name(&ready[0]);
    let victim_ip = pod_ip(&ready[0]);
    let deleted_at = Instant::now();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .expect("delete a node pod");
    let exit = harness
        .pods()
        .wait_deleted_exit(NS, &victim, "node", Duration::from_secs(90))
        .await
        .expect("the container exits");
    let exited_after = deleted_at.elapsed();
    assert!(
        !exit.killed() && exit.after_delete.is_some_and(|t| t < Duration::from_secs(20)),
        "the node exits on SIGTERM within its grace period: {exit:?}"
    );
    assert_eq!(exit.grace, Some(Duration::from_secs(20)));
    assert_eq!(exit.exit_code, 0, "a drained node exits cleanly: {exit:?}");
    eventually(
        "the deleted pod object to go",
        Duration::from_secs(30),
        || async { matches!(pods.get_opt(&victim).await, Ok(None)).then_some(()) },
    )
    .await;
    clock.step(&format!(
        "deleted {victim}: SIGTERM, exit code 0 after {:.1}s, pod object removed after {:.1}s",
        exited_after.as_secs_f64(),
        deleted_at.elapsed().as_secs_f64()
    ));
    let log = eventually(
        "the victim's log to show its SIGTERM",
        Duration::from_secs(10),
        || async {
            let log = harness.pods().log(NS, &victim, "node");
            log.contains("SIGTERM").then_some(log)
        },
    )
    .await;
    assert!(log.contains("SIGTERM"), "the node logged its SIGTERM: {log}");
    let ready = ready_nodes(&pods, 2).await;
    assert!(ready.iter().all(|p| name(p) != victim), "the victim is gone");
    let new_ips: BTreeSet<String> = ready.iter().map(pod_ip).collect();
    assert!(!new_ips.contains(&victim_ip), "the replacement has a new IP");
    clock.step("the Deployment replaced it; 2 pods Ready again");

    // 3. Fault injection: SIGKILL a container; it restarts and is Ready again.
    let target = name(&ready[0]);
    harness
        .node()
        .kill_container(NS, &target, "node")
        .expect("kill -9");
    let crash = harness
        .pods()
        .wait_exit(NS, &target, "node", Duration::from_secs(60), |e| {
            e.after_delete.is_none()
        })
        .await
        .expect("the kubelet reports the crash");
    assert!(crash.killed(), "exit code 137: {crash:?}");
    eventually(
        "the restarted pod Ready with restartCount 1",
        Duration::from_secs(120),
        || async {
            let pod = pods.get(&target).await.ok()?;
            let restarts = pod
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .restart_count;
            (is_ready(&pod) && restarts == 1).then_some(())
        },
    )
    .await;
    clock.step("SIGKILLed a container: restarted (restartCount 1) and Ready");

    // 4. The drain annotation reaches the node through its downward API file.
    let drained = name(&ready[1]);
    let drained_ip = pod_ip(&ready[1]);
    pods.patch(
        &drained,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"switchyard.dev/drain": "true"}}})),
    )
    .await
    .expect("annotate");
    eventually("the drained pod unready", Duration::from_secs(30), || async {
        let pod = pods.get(&drained).await.ok()?;
        (!is_ready(&pod)).then_some(())
    })
    .await;
    eventually(
        "the EndpointSlice to show the drained pod unready",
        Duration::from_secs(30),
        || async {
            endpoints(&client, NS, APP)
                .await
                .contains(&(drained_ip.clone(), false))
                .then_some(())
        },
    )
    .await;
    let (status, _) = http_get(format!("{drained_ip}:9090"), "/readyz").await;
    assert_eq!(status, 503, "a draining node is not ready");
    clock.step("drain annotation -> downward API file -> node unready -> EndpointSlice not ready");

    // 5. Redis on its own IP.
    pods.create(
        &PostParams::default(),
        &object(json!({
            "metadata": {"name": "redis", "labels": {"app": "redis"}},
            "spec": {"containers": [{
                "name": "redis",
                "image": REDIS_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                // Debian's redis-server refuses connections from other hosts without a password otherwise.
                "args": ["--protected-mode", "no", "--save", "", "--appendonly", "no"],
                "ports": [{"name": "redis", "containerPort": 6379}],
                "readinessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 1},
            }]},
        })),
    )
    .await
    .expect("create redis pod");
    let redis = eventually("the redis pod Ready", Duration::from_secs(120), || async {
        pods.get("redis").await.ok().filter(is_ready)
    })
    .await;
    let redis_ip = pod_ip(&redis);
    let mut stream = tokio::net::TcpStream::connect((redis_ip.as_str(), 6379))
        .await
        .expect("connect to redis on its pod IP");
    stream.write_all(b"PING\r\n").await.expect("send PING");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("redis answers in time")
        .expect("read");
    assert_eq!(&buf[..n], b"+PONG\r\n");
    clock.step(&format!("redis Ready on {redis_ip} and answers PING"));

    // 6. The same Redis through a ClusterIP Service, by name (CoreDNS, kube-proxy).
    let service: Service = services
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "redis"},
                "spec": {"selector": {"app": "redis"}, "ports": [{"name": "redis", "port": 6379, "targetPort": "redis"}]},
            })),
        )
        .await
        .expect("create the redis service");
    let cluster_ip = service.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP");
    let answer = eventually(
        "PONG through redis.smoke.svc.cluster.local:6379",
        Duration::from_secs(30),
        || async {
            let resolved: Vec<std::net::SocketAddr> = tokio::task::spawn_blocking(|| {
                let dns = std::net::SocketAddr::new(CLUSTER_DNS.parse().expect("an IP"), 53);
                resolve_a(dns, "redis.smoke.svc.cluster.local")
            })
            .await
            .ok()?
            .into_iter()
            .map(|ip| std::net::SocketAddr::from((ip, 6379)))
            .collect();
            let Some(first) = resolved.first() else {
                eprintln!("redis.smoke.svc.cluster.local: no A record from CoreDNS yet");
                return None;
            };
            let connect = tokio::net::TcpStream::connect(first);
            let mut stream = match tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            {
                Ok(stream) => stream,
                Err(error) => {
                    let dump = harness.node().dump_network();
                    eprintln!(
                        "redis.smoke.svc.cluster.local resolved to {first}, connect: {error} (network: {})",
                        dump.display()
                    );
                    return None;
                }
            };
            stream.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 16];
            let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
                .await
                .ok()?
                .ok()?;
            (n > 0).then(|| (resolved, buf[..n].to_vec()))
        },
    )
    .await;
    assert_eq!(answer.1, b"+PONG\r\n");
    assert_eq!(
        answer.0[0].ip().to_string(),
        cluster_ip,
        "the name resolves to the ClusterIP"
    );
    clock.step(&format!(
        "redis.smoke.svc.cluster.local (CoreDNS) -> ClusterIP {cluster_ip} (kube-proxy) -> {redis_ip}: PONG"
    ));

    // The API server through its own Service, as in-cluster clients address it: its name (CoreDNS) and
    // its ClusterIP (kube-proxy; the serving certificate names both).
    let kubeconfig =
        kube::config::Kubeconfig::read_from(harness.control_plane().kubeconfig()).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let dns = std::net::SocketAddr::new(CLUSTER_DNS.parse().expect("an IP"), 53);
    let api_ip = tokio::task::spawn_blocking(move || resolve_a(dns, "kubernetes.default.svc.cluster.local"))
        .await
        .expect("resolve");
    assert_eq!(
        api_ip,
        vec![
            switchyard_e2e::control_plane::SERVICE_IP
                .parse::<std::net::Ipv4Addr>()
                .expect("an IP")
        ]
    );
    config.cluster_url = format!("https://{}:443", api_ip[0]).parse().expect("url");
    let in_cluster = kube::Client::try_from(config).expect("client");
    let version = in_cluster
        .apiserver_version()
        .await
        .expect("the API through its Service");
    assert_eq!(version.git_version, "v1.37.1");
    clock.step("kubernetes.default.svc.cluster.local -> 10.96.0.1:443 -> API server");

    // The node stayed healthy all along (Lease and status heartbeats): Ready, untainted.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let node = nodes.get("e2e-node").await.expect("the node");
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    assert!(taints.is_empty(), "no taints: {taints:?}");
    let ready = node
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Ready" && c.status == "True");
    assert!(ready, "the node is Ready");

    harness.shutdown().await;
    clock.step("torn down");
}

/// A test that fails after starting everything must leave nothing running: the harness's Drop kills every
/// process group, and the pid namespace takes whatever is left when the test process exits.
#[test]
#[ignore = "run via e2e/run.sh"]
fn teardown_after_a_failure() {
    match switchyard_e2e::isolate() {
        Ok(Some(run)) => {
            switchyard_e2e::runtime().block_on(async {
                let harness = Harness::start(run).await.expect("the harness starts");
                harness.create_namespace("default").await.expect("namespace");
                let pods: Api<Pod> = Api::namespaced(harness.client(), "default");
                pods.create(
                    &PostParams::default(),
                    &object(json!({
                        "metadata": {"name": "redis"},
                        "spec": {"containers": [{
                            "name": "redis",
                            "image": REDIS_IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                        }]},
                    })),
                )
                .await
                .expect("create a pod");
                eventually("redis to run", Duration::from_secs(120), || async {
                    let pod = pods.get("redis").await.ok()?;
                    let running = pod
                        .status?
                        .container_statuses?
                        .first()?
                        .state
                        .as_ref()?
                        .running
                        .is_some();
                    running.then_some(())
                })
                .await;
                panic!("deliberate failure with the control plane and a pod running");
            });
        }
        Ok(None) => panic!("the inner test must fail"),
        Err(switchyard_e2e::Error::Isolated { run_dir, panics, .. }) => {
            // The cause is repeated in the error, so the end of a long output names it.
            assert!(
                panics.contains("panicked at")
                    && panics.contains("deliberate failure with the control plane and a pod running"),
                "the error repeats the inner test's panic message: {panics}"
            );
            // Nothing on this machine may still run from that run (their command lines name its directory).
            let needle = run_dir.display().to_string();
            let survivors: Vec<String> = std::fs::read_dir("/proc")
                .expect("/proc")
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .chars()
                        .all(|c| c.is_ascii_digit())
                })
                .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
                .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
                .filter(|cmdline| cmdline.contains(&needle))
                .collect();
            assert!(
                survivors.is_empty(),
                "processes outlived the failed test: {survivors:#?}"
            );
            let harness_log = std::fs::read_to_string(run_dir.join("harness.log")).expect("harness.log kept");
            assert!(harness_log.contains("node ready"), "{harness_log}");
            assert!(
                run_dir.join("control-plane/kube-apiserver.log").is_file(),
                "logs are kept"
            );
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

//! The real node, end to end: a control plane plus containerd, runc, the kubelet, kube-proxy, the CNI
//! bridge and CoreDNS in the test's network namespace (`switchyard_e2e::RealNode`), and our image on it.
//!
//! 1. CoreDNS is Ready on the node (the node's own start-up waits for it).
//! 2. A Deployment of `registry.local/switchyard:e2e` running `switchyard dev` with the chart's security
//!    context (uid 65532, non-root, read-only root, no capabilities) and a 128 MiB memory limit becomes
//!    Ready through the kubelet's HTTP readiness probe; its process runs as uid 65532 on a read-only root,
//!    and its memory cgroup holds the 128 MiB limit.
//! 3. A player logs in through the Service's ClusterIP (kube-proxy's DNAT) and through its NodePort on the
//!    node address; CoreDNS resolves the Service's name to its ClusterIP.
//! 4. Deleting the pod: the kubelet sends SIGTERM, the process exits 0 within the grace period, and the
//!    Deployment's replacement answers through the same ClusterIP.
//!
//! Run with `e2e/run.sh node` (needs root, the toolchain and the images e2e/run.sh builds).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;
use switchyard_client::{Client, ClientOptions, PacketConfig};
use switchyard_e2e::RunDir;
use switchyard_e2e::coredns::resolve_a;
use switchyard_testkit::eventually;

mod support;
use support::{install_operator, is_ready, object, play, start_plane_and_node, tool, tool_output};

const NS: &str = "real";
const APP: &str = "dev";
const IMAGE: &str = "registry.local/switchyard:e2e";

#[test]
#[ignore = "run via e2e/run.sh"]
fn real_node() {
    let Some(run) = switchyard_e2e::isolate().unwrap_or_else(|error| panic!("{error}")) else {
        return;
    };
    switchyard_e2e::runtime().block_on(journey(run));
}

async fn ready_pod(pods: &Api<Pod>, not: Option<&str>) -> Pod {
    let params = ListParams::default().labels(&format!("app={APP}"));
    eventually("a ready dev pod", Duration::from_secs(180), || async {
        let list = pods.list(&params).await.ok()?;
        list.items
            .into_iter()
            .find(|pod| is_ready(pod) && pod.metadata.name.as_deref() != not)
    })
    .await
}

fn proc_status_uid(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line")
        .to_owned()
}

/// The memory cgroup (v1) limit of a process.
fn memory_limit(pid: u32) -> u64 {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup file");
    let path = cgroups
        .lines()
        .find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then(|| path.to_owned())
        })
        .expect("a memory cgroup");
    let limit = std::fs::read_to_string(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"))
        .expect("memory.limit_in_bytes");
    limit.trim().parse().expect("a number")
}

async fn journey(run: RunDir) {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[node {:6.1}s] {what}", started.elapsed().as_secs_f64());
    let (plane, node) = start_plane_and_node(&run).await;
    step("1. node Ready: containerd, kubelet, kube-proxy, CoreDNS");
    let client = plane.client();

    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &object(json!({"metadata": {"name": NS}})))
        .await
        .expect("namespace");
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), NS);
    eventually("the default ServiceAccount", Duration::from_secs(60), || async {
        accounts.get_opt("default").await.ok().flatten()
    })
    .await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    deployments
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": APP},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": APP}},
                    "template": {
                        "metadata": {"labels": {"app": APP}},
                        "spec": {
                            "terminationGracePeriodSeconds": 20,
                            "automountServiceAccountToken": false,
                            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532},
                            "containers": [{
                                "name": "dev",
                                "image": IMAGE,
                                "imagePullPolicy": "IfNotPresent",
                                "args": ["dev", "--tcp", "0.0.0.0:3553", "--ws", "0.0.0.0:3554", "--http", "0.0.0.0:3555"],
                                "ports": [{"name": "tcp", "containerPort": 3553}, {"name": "admin", "containerPort": 3555}],
                                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 1},
                                "livenessProbe": {"httpGet": {"path": "/healthz", "port": "admin"}, "periodSeconds": 5},
                                "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "50m", "memory": "64Mi"}},
                                "securityContext": {
                                    "allowPrivilegeEscalation": false,
                                    "readOnlyRootFilesystem": true,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                            }],
                        },
                    },
                },
            })),
        )
        .await
        .expect("create the deployment");
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    services
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": APP},
                "spec": {
                    "type": "NodePort",
                    "selector": {"app": APP},
                    "ports": [{"name": "tcp", "port": 3553, "targetPort": "tcp"}],
                },
            })),
        )
        .await
        .expect("create the service");

    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod = ready_pod(&pods, None).await;
    let pod_name = pod.metadata.name.clone().expect("name");
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP");
    assert!(pod_ip.starts_with("10.85.0."), "a bridge address: {pod_ip}");
    step(&format!(
        "2. pod {pod_name} Ready on {pod_ip} (kubelet readiness probe)"
    ));

    let pid = node
        .container_pid(NS, &pod_name, "dev")
        .expect("the container's pid");
    assert_eq!(proc_status_uid(pid), "Uid:\t65532\t65532\t65532\t65532");
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let root = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .expect("root mount");
    assert!(
        root.split_whitespace()
            .nth(5)
            .is_some_and(|o| o.split(',').any(|o| o == "ro")),
        "read-only root: {root}"
    );
    assert_eq!(
        memory_limit(pid),
        128 * 1024 * 1024,
        "the cgroup holds the pod's memory limit"
    );
    step("   uid 65532, read-only root, memory.limit_in_bytes 128 MiB");

    let service = services.get(APP).await.expect("service");
    let spec = service.spec.expect("spec");
    let cluster_ip = spec.cluster_ip.expect("a ClusterIP");
    let node_port = spec.ports.expect("ports")[0].node_port.expect("a NodePort");
    let via_cluster_ip = format!("{cluster_ip}:3553");
    let via_node_port = format!("{}:{node_port}", switchyard_e2e::netns::NODE_ADDRESS);
    // kube-proxy writes its rules shortly after the EndpointSlice turns ready.
    // Each attempt is bounded: a SYN sent before the rules exist is not DNATed and goes nowhere, and its
    // retransmissions keep that (conntrack) fate for the whole connect.
    let deadline = Instant::now() + Duration::from_secs(60);
    let connect = || async {
        match tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(&via_cluster_ip),
        )
        .await
        {
            Ok(result) => result.map(drop).map_err(|e| e.to_string()),
            Err(_) => Err("connect timed out".to_owned()),
        }
    };
    while let Err(error) = connect().await {
        if Instant::now() > deadline {
            let dump = node.dump_network();
            panic!(
                "{via_cluster_ip} refuses connections after 60 s: {error}; network in {}",
                dump.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    play(&via_cluster_ip, 41).await;
    play(&via_node_port, 42).await;
    let dns = SocketAddr::from((Ipv4Addr::new(10, 96, 0, 10), 53));
    let name = format!("{APP}.{NS}.svc.cluster.local");
    let resolved = eventually("CoreDNS to resolve the Service", Duration::from_secs(30), || {
        let name = name.clone();
        async move {
            let found = tokio::task::spawn_blocking(move || resolve_a(dns, &name))
                .await
                .ok()?;
            (!found.is_empty()).then_some(found)
        }
    })
    .await;
    assert_eq!(
        resolved,
        vec![cluster_ip.parse::<Ipv4Addr>().expect("an IPv4 ClusterIP")]
    );
    step(&format!(
        "3. players in via ClusterIP {via_cluster_ip} and NodePort {via_node_port}; {name} -> {cluster_ip}"
    ));

    let deleted_at = Instant::now();
    pods.delete(&pod_name, &DeleteParams::default())
        .await
        .expect("delete the pod");
    eventually("the old process to exit", Duration::from_secs(25), || async {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
    let stopped_in = deleted_at.elapsed();
    assert!(
        stopped_in < Duration::from_secs(20),
        "SIGTERM, not the grace period's SIGKILL: {stopped_in:?}"
    );
    let replacement = ready_pod(&pods, Some(&pod_name)).await;
    let replacement_name = replacement.metadata.name.clone().expect("name");
    eventually(
        "the ClusterIP to reach the replacement",
        Duration::from_secs(60),
        || async {
            let options = ClientOptions {
                connect_timeout: Duration::from_secs(2),
                ..ClientOptions::default()
            };
            Client::connect_tcp(via_cluster_ip.as_str(), PacketConfig::default(), options)
                .await
                .ok()
        },
    )
    .await;
    play(&via_cluster_ip, 43).await;
    step(&format!(
        "4. deleted {pod_name}: exited on SIGTERM in {stopped_in:?}; {replacement_name} serves the ClusterIP"
    ));

    node.stop().await;
    plane.stop().await;
}

/// `helm test switchyard --logs`: the chart's test pod logs a player in through `my-game-gate`.
const HELM_TEST: [&str; 6] = [
    "test",
    "switchyard",
    "--namespace",
    "switchyard-system",
    "--logs",
    "--timeout=180s",
];

/// The `Phase:` of the test pod in `helm test`'s report.
fn test_phase(report: &str) -> Option<&str> {
    report
        .lines()
        .find_map(|line| line.strip_prefix("Phase:"))
        .map(str::trim)
}

/// The install path of the README ("Install on a real cluster") on the real node: `helm install` with
/// the image values, a GameCluster with a NodePort gate Service and the managed Redis from our Redis
/// image, Ready; a player logs in through the gate Service's ClusterIP, its NodePort and its DNS name
/// (resolved by CoreDNS), and so does the chart's `helm test` pod (through the Service's DNS name); after the
/// GameCluster is deleted the same `helm test` fails; `helm uninstall` removes the operator.
#[test]
#[ignore = "run via e2e/run.sh"]
fn chart_install_on_the_real_node() {
    let Some(run) = switchyard_e2e::isolate().unwrap_or_else(|error| panic!("{error}")) else {
        return;
    };
    switchyard_e2e::runtime().block_on(install(run));
}

async fn install(run: RunDir) {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[install {:6.1}s] {what}", started.elapsed().as_secs_f64());
    let (plane, node) = start_plane_and_node(&run).await;
    step("node Ready");

    install_operator(&plane);
    step("helm install: operator Ready");

    let manifest = run.path().join("gamecluster.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: switchyard.dev/v1alpha1\nkind: GameCluster\nmetadata:\n  name: my-game\n  namespace: game\n\
         spec:\n  gate:\n    service:\n      type: NodePort\n  locator:\n    managedRedis:\n      image: registry.local/redis:e2e\n",
    )
    .expect("manifest");
    tool(&plane, "kubectl", &["create", "namespace", "game"]);
    tool(
        &plane,
        "kubectl",
        &["apply", "-f", &manifest.display().to_string()],
    );
    tool(
        &plane,
        "kubectl",
        &[
            "-n",
            "game",
            "wait",
            "--for=condition=Ready",
            "gc/my-game",
            "--timeout=240s",
        ],
    );
    step("kubectl apply: GameCluster my-game Ready");

    let services: Api<Service> = Api::namespaced(plane.client(), "game");
    let spec = services
        .get("my-game-gate")
        .await
        .expect("the gate Service")
        .spec
        .expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    let cluster_ip = spec.cluster_ip.expect("a ClusterIP");
    let ports = spec.ports.expect("ports");
    let tcp = ports.iter().find(|p| p.port == 3553).expect("the TCP port 3553");
    let node_port = tcp.node_port.expect("a NodePort");
    let resolved = tokio::task::spawn_blocking(|| {
        resolve_a(
            SocketAddr::from((Ipv4Addr::new(10, 96, 0, 10), 53)),
            "my-game-gate.game.svc.cluster.local",
        )
    })
    .await
    .expect("resolve");
    assert_eq!(resolved, vec![cluster_ip.parse::<Ipv4Addr>().expect("IPv4")]);
    play(&format!("{cluster_ip}:3553"), 51).await;
    play(
        &format!("{}:{node_port}", switchyard_e2e::netns::NODE_ADDRESS),
        52,
    )
    .await;
    step(&format!(
        "players in via my-game-gate ({cluster_ip}:3553, NodePort {node_port}, CoreDNS)"
    ));
    // The chart's own check: a pod of our image logs a player in through the gate Service's DNS name.
    let (passed, out) = tool_output(&plane, "helm", &HELM_TEST);
    if !passed {
        // Where the test pod got stuck (scheduling, sandbox, image), for the failure message.
        let (_, pod) = tool_output(
            &plane,
            "kubectl",
            &[
                "-n",
                "switchyard-system",
                "describe",
                "pod",
                "switchyard-test-login",
            ],
        );
        let (_, nodes) = tool_output(&plane, "kubectl", &["describe", "nodes"]);
        panic!("helm test failed:\n{out}\n--- the test pod\n{pod}\n--- the node\n{nodes}");
    }
    assert!(
        test_phase(&out) == Some("Succeeded")
            && out.contains("login ok: uid 999000001 through my-game-gate.game.svc:3553"),
        "helm test:\n{out}"
    );
    step("helm test: the test pod logged a player in through my-game-gate.game.svc:3553");

    // The chart README's upgrade: the CRD first (helm never upgrades crds/), then the release.
    tool(
        &plane,
        "kubectl",
        &[
            "apply",
            "--server-side",
            "-f",
            "charts/switchyard/crds/gamecluster.yaml",
        ],
    );
    let upgraded = [
        "upgrade",
        "switchyard",
        "charts/switchyard",
        "-n",
        "switchyard-system",
        "--reuse-values",
    ];
    let mut args = upgraded.to_vec();
    // A short test.wait: the failing `helm test` below should not take the default minute.
    args.extend(["--set", "image.tag=e2e", "--set", "test.wait=10s", "--wait"]);
    let out = tool(&plane, "helm", &args);
    assert!(out.contains("has been upgraded"), "{out}");
    tool(
        &plane,
        "kubectl",
        &[
            "-n",
            "game",
            "wait",
            "--for=condition=Ready",
            "gc/my-game",
            "--timeout=120s",
        ],
    );
    step("CRD applied server-side, helm upgrade --reuse-values");
    tool(
        &plane,
        "kubectl",
        &[
            "-n",
            "game",
            "delete",
            "gc/my-game",
            "--wait=true",
            "--timeout=120s",
        ],
    );
    // Without the GameCluster the gate Service is gone: the same test fails, and says where it knocked.
    tool(
        &plane,
        "kubectl",
        &[
            "-n",
            "game",
            "wait",
            "--for=delete",
            "service/my-game-gate",
            "--timeout=120s",
        ],
    );
    let (passed, out) = tool_output(&plane, "helm", &HELM_TEST);
    assert!(
        !passed && test_phase(&out) == Some("Failed") && out.contains("my-game-gate.game.svc:3553"),
        "helm test without a gate must fail:\n{out}"
    );
    step("helm test without the GameCluster: failed, naming my-game-gate.game.svc:3553");
    let out = tool(
        &plane,
        "helm",
        &[
            "uninstall",
            "switchyard",
            "--namespace",
            "switchyard-system",
            "--wait",
        ],
    );
    assert!(out.contains("uninstalled"), "{out}");
    step("GameCluster deleted, helm uninstall");
    node.stop().await;
    plane.stop().await;
}

/// The `sh` code blocks of the README's "Install on a real cluster" section, in order.
fn readme_install_blocks() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README");
    let start = readme
        .find("### Install on a real cluster")
        .expect("the README's install section");
    let section = &readme[start..];
    let end = section[4..].find("\n## ").map_or(section.len(), |at| at + 4);
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in section[..end].lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The README's install section on the real node: its last two blocks (install and play; clean up) run
/// exactly as written (bash, with
/// the toolchain's kubectl and helm and the test build's `switchyard` on PATH); the images it names are the
/// e2e archives, imported by the node and tagged with the README's names (what `kind load` or a registry
/// would do). helm install prints the chart's NOTES, which carry the same GameCluster and port-forward.
#[test]
#[ignore = "run via e2e/run.sh"]
fn readme_install_on_the_real_node() {
    let Some(run) = switchyard_e2e::isolate().unwrap_or_else(|error| panic!("{error}")) else {
        return;
    };
    switchyard_e2e::runtime().block_on(readme(run));
}

async fn readme(run: RunDir) {
    run.init_tracing();
    let blocks = readme_install_blocks();
    assert_eq!(
        blocks.len(),
        4,
        "build, load, install-and-play, clean-up blocks: {blocks:#?}"
    );
    assert!(blocks[0].contains("scripts/image.sh --binary target/release/switchyard"));
    assert!(blocks[1].contains("ctr -n k8s.io images import"));
    let (plane, node) = start_plane_and_node(&run).await;
    for (image, readme_name) in [
        ("registry.local/switchyard:e2e", "registry.local/switchyard:0.1.0"),
        ("registry.local/redis:e2e", "registry.local/redis:7.0.15"),
    ] {
        assert!(
            blocks[0].contains(readme_name)
                || blocks[2].contains(readme_name.rsplit_once(':').expect("tag").0),
            "the README names {readme_name}"
        );
        node.ctr(&["images", "tag", image, readme_name])
            .await
            .expect("ctr images tag");
    }

    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let path = format!(
        "{}:{repo}/target/debug:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        plane.bin_dir().display()
    );
    let mut outputs = Vec::new();
    for block in &blocks[2..] {
        let out = tokio::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", block])
            .env("PATH", &path)
            .env("KUBECONFIG", plane.kubeconfig())
            .env("HOME", plane.dir())
            .current_dir(repo)
            .output()
            .await
            .expect("bash");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(
            run.path().join(format!("readme-block-{}.log", outputs.len() + 3)),
            &text,
        )
        .expect("log");
        assert!(
            out.status.success(),
            "README block failed ({}):\n{block}\n---\n{text}",
            out.status
        );
        outputs.push(text);
    }
    assert!(
        outputs[0].contains("20 ok, 0 errors"),
        "20 requests through a gate's NodePort:\n{}",
        outputs[0]
    );
    assert!(
        test_phase(&outputs[0]) == Some("Succeeded")
            && outputs[0].contains("login ok: uid 999000001 through my-game-gate.game.svc:3553"),
        "the README's helm test logs a player in through the gate Service:\n{}",
        outputs[0]
    );
    assert!(
        outputs[1].contains("uninstalled"),
        "helm uninstall:\n{}",
        outputs[1]
    );
    // What the chart's NOTES (printed by helm install) tell a user to run is what the README runs.
    let notes = &outputs[0];
    for line in [
        "kind: GameCluster",
        "kubectl -n game wait --for=condition=Ready gc/my-game --timeout=5m",
        r#"NODE_PORT=$(kubectl -n game get service my-game-gate -o jsonpath='{.spec.ports[?(@.name=="tcp")].nodePort}')"#,
        r#"NODE_IP=$(kubectl get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')"#,
        "kubectl apply --server-side -f charts/switchyard/crds/gamecluster.yaml",
    ] {
        assert!(notes.contains(line), "the chart's NOTES carry `{line}`:\n{notes}");
        assert!(
            blocks.iter().any(|b| b.contains(line)) || line.contains("--server-side"),
            "the README runs `{line}`"
        );
    }
    eprintln!(
        "README install section: both blocks ran on the real node; 20 requests through a gate's NodePort"
    );
    node.stop().await;
    plane.stop().await;
}

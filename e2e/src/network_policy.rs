//! NetworkPolicy enforcement on the e2e node: `kube-network-policies` (sigs.k8s.io/kube-network-policies,
//! built from Go modules by `toolchain/build.sh`) as a host process in the node's network namespace.
//!
//! How it enforces: the first packet of every connection to or from a pod goes to the netfilter queue
//! [`QUEUE`] in user space, where the controller judges it against the NetworkPolicies (from its informers)
//! and answers accept or drop; later packets of an accepted connection pass on conntrack state. Packets
//! from root-owned sockets of the node itself (the kubelet's probes, the test process) are not judged, as
//! the controller's own rules say.
//!
//! The controller installs the queue rule itself with nftables' `queue` statement, which needs the
//! kernel's `nft_queue` (CONFIG_NFT_QUEUE). Where the kernel lacks it (this machine's does: the whole
//! nftables transaction fails with ENOENT, and the controller logs it and goes on), the harness installs
//! the same rule as iptables' `NFQUEUE` target (CONFIG_NETFILTER_XT_TARGET_NFQUEUE, through the same
//! `iptables` kube-proxy uses) in its own mangle chain [`CHAIN`]. [`start`] probes which one applies.
//!
//! The release reads only the in-cluster configuration (the Service account files under
//! `/var/run/secrets/kubernetes.io/serviceaccount` and `KUBERNETES_SERVICE_HOST`), so it runs in a mount
//! namespace of its own where a directory of the node's state is bind-mounted on `/var/run`, with a token
//! of the ServiceAccount `kube-system/kube-network-policies` (allowed to watch pods, namespaces and
//! NetworkPolicies). Ready means the controller holds [`QUEUE`] (`/proc/net/netfilter/nfnetlink_queue`),
//! which it binds only after its informers synced.
//!
//! Known race: pod addresses come from the API (containerd 1.6 has no NRI, which the controller would ask
//! first), so the first packets of a pod that has just started can come from an address the controller
//! does not know yet; where a policy selects their destination they are dropped until the pod's address
//! arrives (TCP retransmits the SYN a second later).

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use crate::Error;
use crate::netns::NODE_ADDRESS;
use crate::node::{NODE_NAME, POD_CIDR};
use crate::objects::{create, object};
use crate::process::Spec;

/// The binary's name in the toolchain's bin dir.
pub const BINARY: &str = "kube-network-policies";
/// The netfilter queue the controller reads (its default).
pub const QUEUE: u16 = 100;
/// The harness's mangle chain that sends pod connections to [`QUEUE`] (only where nftables cannot).
pub const CHAIN: &str = "SY-NETPOL";
/// The controller's Prometheus metrics (verdict counters), on the node's address.
pub const METRICS_PORT: u16 = 9080;
const NS: &str = "kube-system";
/// How setup errors name this component.
const COMPONENT: &str = "kube-network-policies";
const NAME: &str = "kube-network-policies";
const TOKEN_SECONDS: i64 = 6 * 3600;

/// Creates the controller's ServiceAccount and its rights, writes a token and the cluster CA where the
/// in-cluster configuration looks for them (under `root`, which becomes the controller's `/var/run`), installs
/// the queue rule if the kernel's nftables cannot, and returns how to start the controller (logging to
/// `log`).
///
/// # Errors
/// When the API refuses an object or the token, a file cannot be written, or nft or iptables fails.
pub async fn prepare(
    client: kube::Client,
    ca_file: &Path,
    bin_dir: &Path,
    root: &Path,
    log: PathBuf,
    cwd: PathBuf,
) -> Result<Spec, Error> {
    create(
        COMPONENT,
        Api::<ServiceAccount>::namespaced(client.clone(), NS),
        json!({"metadata": {"name": NAME, "namespace": NS}}),
    )
    .await?;
    create(
        COMPONENT,
        Api::<ClusterRole>::all(client.clone()),
        json!({
            "metadata": {"name": NAME},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "namespaces", "nodes"], "verbs": ["list", "watch"]},
                {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"]},
            ],
        }),
    )
    .await?;
    create(
        COMPONENT,
        Api::<ClusterRoleBinding>::all(client.clone()),
        json!({
            "metadata": {"name": NAME},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NS}],
        }),
    )
    .await?;
    let request: TokenRequest = object(
        COMPONENT,
        json!({"spec": {"audiences": [], "expirationSeconds": TOKEN_SECONDS}}),
    )?;
    let token = Api::<ServiceAccount>::namespaced(client, NS)
        .create_token_request(NAME, &PostParams::default(), &request)
        .await
        .map_err(Error::kube("a token for kube-system/kube-network-policies"))?
        .status
        .and_then(|status| status.token)
        .ok_or_else(|| Error::Setup("the TokenRequest came back without a token".into()))?;
    let secrets = root.join("secrets/kubernetes.io/serviceaccount");
    std::fs::create_dir_all(&secrets).map_err(Error::io(format!("create {}", secrets.display())))?;
    std::fs::write(secrets.join("token"), token).map_err(Error::io("write the controller's token"))?;
    std::fs::copy(ca_file, secrets.join("ca.crt")).map_err(Error::io("copy the cluster CA"))?;
    std::fs::write(secrets.join("namespace"), NS).map_err(Error::io("write the controller's namespace"))?;

    if nft_queue_supported()? {
        tracing::info!("nftables has the queue statement: kube-network-policies installs its own rules");
    } else {
        tracing::info!(
            chain = CHAIN,
            "no nftables queue statement (CONFIG_NFT_QUEUE): the harness queues pod connections with iptables NFQUEUE"
        );
        install_queue_rules()?;
    }

    let binary = bin_dir.join(BINARY).display().to_string();
    let mut args = vec![
        "--mount".to_owned(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
        "sh".into(),
        "-c".into(),
        // $0 is the directory to show as /var/run (mount follows the link where /var/run -> /run); the
        // rest is the command.
        r#"mount --bind "$0" /var/run && exec "$@""#.into(),
        root.display().to_string(),
        binary,
    ];
    args.extend(controller_args());
    Ok(Spec {
        name: BINARY.into(),
        program: PathBuf::from("unshare"),
        args,
        env: vec![
            ("PATH".into(), crate::node::PATH.into()),
            ("HOME".into(), root.display().to_string()),
            ("KUBERNETES_SERVICE_HOST".into(), NODE_ADDRESS.to_string()),
            (
                "KUBERNETES_SERVICE_PORT".into(),
                crate::control_plane::API_PORT.to_string(),
            ),
        ],
        cwd,
        log,
    })
}

/// The controller's flags: this node, NetworkPolicies only (no admin network policies), no NRI (Debian's
/// containerd 1.6 has none; pod addresses come from the API), fail closed (a packet nobody judges is
/// dropped, so a dead controller shows as connections that time out, not as open ones).
fn controller_args() -> Vec<String> {
    vec![
        format!("--hostname-override={NODE_NAME}"),
        format!("--nfqueue-id={QUEUE}"),
        format!("--metrics-bind-address={NODE_ADDRESS}:{METRICS_PORT}"),
        "--disable-nri".into(),
        "--fail-open=false".into(),
        "--v=2".into(),
    ]
}

/// Whether this kernel's nftables has the `queue` statement: tried on a scratch table of the node's own
/// namespace, then removed.
///
/// # Errors
/// When `nft` cannot be run or cannot make the scratch table (then the answer would mean nothing).
fn nft_queue_supported() -> Result<bool, Error> {
    let table = "sy-netpol-probe";
    run("nft", &["add", "table", "inet", table]).map_err(|error| {
        Error::Setup(format!(
            "{error} (nftables; scripts/container-tools.sh installs it)"
        ))
    })?;
    let queue = QUEUE.to_string();
    let supported = run(
        "nft",
        &[
            "add",
            "chain",
            "inet",
            table,
            "c",
            "{ type filter hook postrouting priority 0; }",
        ],
    )
    .and_then(|()| {
        run(
            "nft",
            &[
                "add", "rule", "inet", table, "c", "meta", "l4proto", "tcp", "queue", "num", &queue, "bypass",
            ],
        )
    })
    .is_ok();
    run("nft", &["delete", "table", "inet", table])?;
    Ok(supported)
}

/// The rules kube-network-policies would install, as iptables rules of [`CHAIN`] in mangle POSTROUTING
/// (after kube-proxy's DNAT, so a Service's traffic is judged by the pod it goes to).
fn install_queue_rules() -> Result<(), Error> {
    let queue = QUEUE.to_string();
    let rules: [&[&str]; 6] = [
        &["-t", "mangle", "-N", CHAIN],
        // The node's own root processes (kubelet probes, the test itself) are not judged.
        &[
            "-t",
            "mangle",
            "-A",
            CHAIN,
            "-m",
            "owner",
            "--uid-owner",
            "0",
            "-j",
            "RETURN",
        ],
        &[
            "-t",
            "mangle",
            "-A",
            CHAIN,
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "RETURN",
        ],
        &[
            "-t",
            "mangle",
            "-A",
            CHAIN,
            "-s",
            POD_CIDR,
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
        ],
        &[
            "-t",
            "mangle",
            "-A",
            CHAIN,
            "-d",
            POD_CIDR,
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
        ],
        &["-t", "mangle", "-A", "POSTROUTING", "-j", CHAIN],
    ];
    for rule in rules {
        run("iptables", rule)?;
    }
    Ok(())
}

/// Whether the controller holds [`QUEUE`] in this network namespace (it binds it after its caches synced).
pub fn queue_bound() -> bool {
    std::fs::read_to_string("/proc/net/netfilter/nfnetlink_queue")
        .is_ok_and(|text| bound_queues(&text).contains(&QUEUE))
}

/// The queue numbers in `/proc/net/netfilter/nfnetlink_queue` (first column of each line).
fn bound_queues(text: &str) -> Vec<u16> {
    text.lines()
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect()
}

/// How many packets the controller judged, by verdict, as its log (`--v=2`) says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdicts {
    /// Packets let through.
    pub accepted: usize,
    /// Packets dropped.
    pub dropped: usize,
}

/// The verdicts in the controller's log `log` so far (`<node dir>/kube-network-policies.log`); zero when
/// the log cannot be read.
pub fn verdicts(log: &Path) -> Verdicts {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    count_verdicts(&text)
}

fn count_verdicts(text: &str) -> Verdicts {
    let mut verdicts = Verdicts::default();
    for line in text.lines().filter(|l| l.contains("\"Finished syncing packet\"")) {
        if line.contains("verdict=\"drop\"") {
            verdicts.dropped += 1;
        } else if line.contains("verdict=\"accept\"") {
            verdicts.accepted += 1;
        }
    }
    verdicts
}

/// What a connection attempt from inside a pod came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The TCP handshake completed.
    Connected,
    /// No answer within the time limit (what a dropped SYN looks like).
    TimedOut,
    /// Anything else: refused, unreachable, or the probe itself failed (with its output).
    Failed(String),
}

/// Opens a TCP connection to `address` from the network namespace of the process `pid` (a pod's
/// container: the connection then comes from the pod's address through its veth, as the pod's own would),
/// waiting at most `timeout`. Uses `nsenter` (util-linux) and bash's `/dev/tcp`; the socket belongs to root,
/// but only inside the pod's namespace, so the node's rules judge it like any pod traffic.
pub async fn connect_from(pid: u32, address: std::net::SocketAddrV4, timeout: std::time::Duration) -> Reach {
    let out = tokio::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args([
            "--",
            "timeout",
            &format!("{}", timeout.as_secs_f64()),
            "bash",
            "-c",
        ])
        .arg(format!("exec 3<>/dev/tcp/{}/{}", address.ip(), address.port()))
        .output()
        .await;
    match out {
        Ok(out) if out.status.success() => Reach::Connected,
        // timeout(1) exits 124 when it had to stop the command.
        Ok(out) if out.status.code() == Some(124) => Reach::TimedOut,
        Ok(out) => Reach::Failed(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(error) => Reach::Failed(format!("run nsenter: {error}")),
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), Error> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(Error::io(format!("run {program}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Setup(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bound_queues() {
        // queue, peer portid, waiting, copy mode, copy range, dropped, user dropped, id sequence, 1
        let text = "  100 1234     0 2 65531     0     0        7  1\n    5 99 0 2 65531 0 0 0 1\n";
        assert_eq!(bound_queues(text), vec![100, 5]);
        assert!(bound_queues("").is_empty());
    }

    #[test]
    fn counts_the_controller_verdicts() {
        let log = r#"I1203 17:27:59.797858 163 controller.go:477] "Processing sync for packet" id=8
I1203 17:27:59.798605 163 controller.go:493] "Finished syncing packet" id=8 duration="764.544µs" verdict="drop"
I1203 17:27:59.798605 163 controller.go:493] "Finished syncing packet" id=9 duration="64.544µs" verdict="accept"
I1203 17:27:59.798605 163 controller.go:493] "Finished syncing packet" id=10 duration="64.544µs" verdict="accept"
"#;
        assert_eq!(
            count_verdicts(log),
            Verdicts {
                accepted: 2,
                dropped: 1
            }
        );
        assert_eq!(count_verdicts(""), Verdicts::default());
    }

    #[test]
    fn flags_name_the_node_and_fail_closed() {
        let args = controller_args();
        assert!(args.contains(&format!("--hostname-override={NODE_NAME}")));
        assert!(args.contains(&"--fail-open=false".to_owned()));
        assert!(args.contains(&"--disable-nri".to_owned()));
    }
}

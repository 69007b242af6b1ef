//! The configuration files of the e2e node's components, as pure text from the node's state directory:
//! the CNI network, containerd's CRI settings, the kubelet's and kube-proxy's configurations. Each says
//! what this machine needs and why (cgroup v1 without systemd, no CAP_SYS_RESOURCE, no upstream DNS).

use std::path::Path;

use super::{CLUSTER_DNS, KUBE_PROXY_HEALTHZ_PORT, KUBELET_HEALTHZ_PORT, NODE_NAME, PAUSE_IMAGE, POD_CIDR};
use crate::netns::NODE_ADDRESS;

/// The CNI network: a bridge with host-local addresses, hairpin (a pod reaching itself through its
/// Service), masquerade out of the pod range, and portmap for hostPorts.
pub(super) fn cni_config(state: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "e2e",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": state.join("cni/ipam").display().to_string(),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
    .to_string()
}

pub(super) fn containerd_config_text(state: &Path) -> String {
    let state = state.display();
    format!(
        r#"version = 2
root = "{state}/containerd/root"
state = "{state}/containerd/state"

[grpc]
  address = "{state}/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # No CAP_SYS_RESOURCE here: runc cannot lower oom_score_adj to the sandbox's -998.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{state}/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
"#
    )
}

pub(super) fn kubelet_config_text(state: &Path, dir: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The machine has the cgroup v1 hierarchy and no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://{state}/containerd.sock
address: {NODE_ADDRESS}
port: 10250
readOnlyPort: 0
healthzBindAddress: {NODE_ADDRESS}
healthzPort: {KUBELET_HEALTHZ_PORT}
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
clusterDomain: cluster.local
clusterDNS: ["{CLUSTER_DNS}"]
resolvConf: {state}/resolv.conf
failSwapOn: false
podLogsDir: {logs}
podCIDR: {POD_CIDR}
maxPods: 110
nodeStatusUpdateFrequency: 5s
nodeStatusReportFrequency: 10s
syncFrequency: 10s
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Evict only when the machine is really out of room: the disk is shared with builds that come and go, and
# a test's pods evicted for a neighbour's passing gigabytes would fail it for nothing.
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "100Mi"
  nodefs.inodesFree: "1000"
  imagefs.available: "100Mi"
"#,
        state = state.display(),
        logs = dir.join("pods").display(),
    )
}

pub(super) fn kube_proxy_config_text(kubeconfig: &str) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {NODE_NAME}
bindAddress: {NODE_ADDRESS}
healthzBindAddress: {NODE_ADDRESS}:{KUBE_PROXY_HEALTHZ_PORT}
metricsBindAddress: {NODE_ADDRESS}:10249
mode: iptables
clusterCIDR: {POD_CIDR}
# NodePorts on the node's address only (not 127.0.0.1, which would need route_localnet).
nodePortAddresses: ["{NODE_ADDRESS}/32"]
# Leave the conntrack sysctls alone: some are not per network namespace.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_plane::SERVICE_CIDR;

    #[test]
    fn configs_name_the_state_dir_and_ranges() {
        let state = Path::new("/tmp/sy-node-1");
        let cni: serde_json::Value = serde_json::from_str(&cni_config(state)).expect("json");
        assert_eq!(cni["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], POD_CIDR);
        assert_eq!(cni["plugins"][0]["ipam"]["dataDir"], "/tmp/sy-node-1/cni/ipam");
        let containerd = containerd_config_text(state);
        assert!(containerd.contains("restrict_oom_score_adj = true"));
        assert!(containerd.contains(&format!("sandbox_image = \"{PAUSE_IMAGE}\"")));
        let kubelet = kubelet_config_text(state, Path::new("/run/x"));
        assert!(kubelet.contains("failCgroupV1: false") && kubelet.contains("cgroupDriver: cgroupfs"));
        assert!(kubelet.contains(&format!("clusterDNS: [\"{CLUSTER_DNS}\"]")));
        assert!(kube_proxy_config_text("/k").contains("mode: iptables"));
        assert!(SERVICE_CIDR.starts_with("10.96."));
    }
}

//! Services without kube-proxy and without cluster DNS, so that pods can use Service names the way the pod
//! contract writes them (`redis://NAME-redis.NS.svc:6379`) and tests can use ClusterIPs:
//!
//! - **Names**: the namespace's `/etc/hosts` is a file of the run (bind-mounted over `/etc/hosts` in the
//!   test's private mount namespace, so the host's file is untouched), rewritten in place whenever Services
//!   or EndpointSlices change: `<svc>.<ns>.svc` and `<svc>.<ns>.svc.cluster.local` resolve to the ClusterIP,
//!   or for a headless Service to the addresses of its ready endpoints (plus `<hostname>.<svc>.<ns>.svc` for
//!   endpoints with a hostname). glibc reads the file on every lookup, so changes apply at once.
//! - **ClusterIPs**: each ClusterIP is added to the loopback device, and each TCP port of the Service gets a
//!   listener that forwards every connection to one ready endpoint, round robin (kube-proxy's old userspace
//!   mode). An endpoint is ready when its `ready` condition is not false; the target port is the slice port
//!   with the Service port's name. No UDP, no session affinity, no NodePorts, no external traffic policy;
//!   at most [`MAX_CONNECTIONS`] forwarded connections at once per Service port.
//!
//! It runs only inside the e2e namespaces (it changes the loopback device and mounts over `/etc/hosts`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::Error;
use crate::kubelet::lock;

/// Forwarded connections open at once per Service port; more are closed at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Listener address → the endpoints it forwards to.
type Backends = Arc<Mutex<BTreeMap<SocketAddr, Vec<SocketAddr>>>>;

/// The running service proxy and name publisher. Dropping it stops both.
#[derive(Debug)]
pub struct ServiceProxy {
    task: JoinHandle<()>,
    hosts: PathBuf,
}

impl ServiceProxy {
    /// Writes the hosts file at `hosts`, bind-mounts it over `/etc/hosts`, and starts watching Services and
    /// EndpointSlices.
    ///
    /// # Errors
    /// Outside the e2e namespace, or when the hosts file cannot be written or mounted.
    pub async fn start(
        client: kube::Client,
        hosts: PathBuf,
        node_address: Ipv4Addr,
    ) -> Result<ServiceProxy, Error> {
        if !crate::netns::inside() {
            return Err(Error::Setup(
                "the service proxy changes the loopback device and /etc/hosts: run it inside the e2e namespace \
                 (switchyard_e2e::isolate)"
                    .into(),
            ));
        }
        let base = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{node_address}\te2e-node\n"
        );
        std::fs::write(&hosts, &base).map_err(Error::io(format!("write {}", hosts.display())))?;
        let output = tokio::process::Command::new("mount")
            .arg("--bind")
            .arg(&hosts)
            .arg("/etc/hosts")
            .output()
            .await
            .map_err(Error::io("run mount"))?;
        if !output.status.success() {
            return Err(Error::Setup(format!(
                "mount --bind {} /etc/hosts failed: {}",
                hosts.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let task = tokio::spawn(run(client, hosts.clone(), base));
        Ok(ServiceProxy { task, hosts })
    }

    /// The hosts file (what `/etc/hosts` shows inside the namespace).
    pub fn hosts_file(&self) -> &Path {
        &self.hosts
    }
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reflects Services and EndpointSlices and reconciles listeners and names after every change (debounced).
async fn run(client: kube::Client, hosts: PathBuf, base: String) {
    let changed = Arc::new(Notify::new());
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let notify = changed.clone();
    let watch_services = watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(services_writer)
        .for_each(move |_| {
            notify.notify_one();
            async {}
        });
    let notify = changed.clone();
    let watch_slices = watcher(Api::<EndpointSlice>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(slices_writer)
        .for_each(move |_| {
            notify.notify_one();
            async {}
        });
    let reconcile = async {
        let mut state = State {
            hosts,
            base,
            written: String::new(),
            listeners: BTreeMap::new(),
            addresses: BTreeSet::new(),
            backends: Arc::new(Mutex::new(BTreeMap::new())),
        };
        loop {
            changed.notified().await;
            // Let a burst of changes settle.
            tokio::time::sleep(Duration::from_millis(100)).await;
            state.reconcile(&services, &slices).await;
        }
    };
    tokio::select! {
        () = watch_services => {}
        () = watch_slices => {}
        () = reconcile => {}
    }
}

struct State {
    hosts: PathBuf,
    base: String,
    written: String,
    listeners: BTreeMap<SocketAddr, JoinHandle<()>>,
    addresses: BTreeSet<Ipv4Addr>,
    backends: Backends,
}

impl State {
    async fn reconcile(&mut self, services: &Store<Service>, slices: &Store<EndpointSlice>) {
        let slices = slices.state();
        let mut names = String::new();
        let mut wanted: BTreeMap<SocketAddr, Vec<SocketAddr>> = BTreeMap::new();
        for service in services.state() {
            let (Some(name), Some(namespace), Some(spec)) = (
                service.metadata.name.as_deref(),
                service.metadata.namespace.as_deref(),
                service.spec.as_ref(),
            ) else {
                continue;
            };
            let own: Vec<&EndpointSlice> = slices
                .iter()
                .filter(|s| {
                    s.metadata.namespace.as_deref() == Some(namespace)
                        && s.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("kubernetes.io/service-name"))
                            .map(String::as_str)
                            == Some(name)
                })
                .map(|s| &**s)
                .collect();
            let fqdn = format!("{name}.{namespace}.svc");
            let cluster_ip = spec
                .cluster_ip
                .as_deref()
                .filter(|ip| *ip != "None" && !ip.is_empty())
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
            match cluster_ip {
                Some(ip) => {
                    names.push_str(&format!("{ip}\t{fqdn} {fqdn}.cluster.local\n"));
                    for port in spec.ports.iter().flatten() {
                        if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                            continue;
                        }
                        let Ok(listen_port) = u16::try_from(port.port) else {
                            continue;
                        };
                        let backends = ready_backends(&own, port.name.as_deref().unwrap_or(""));
                        wanted.insert(SocketAddr::from((ip, listen_port)), backends);
                    }
                }
                None => {
                    for slice in &own {
                        for endpoint in slice.endpoints.iter().flatten() {
                            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                                continue;
                            }
                            for address in &endpoint.addresses {
                                names.push_str(&format!("{address}\t{fqdn} {fqdn}.cluster.local\n"));
                                if let Some(host) = &endpoint.hostname {
                                    names.push_str(&format!(
                                        "{address}\t{host}.{fqdn} {host}.{fqdn}.cluster.local\n"
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }

        // Listeners: stop the unwanted, start the new, then publish the backends.
        let stale: Vec<SocketAddr> = self
            .listeners
            .keys()
            .filter(|a| !wanted.contains_key(a))
            .copied()
            .collect();
        for address in stale {
            if let Some(task) = self.listeners.remove(&address) {
                task.abort();
            }
        }
        *lock(&self.backends) = wanted.clone();
        for address in wanted.keys() {
            if self.listeners.contains_key(address) {
                continue;
            }
            let SocketAddr::V4(v4) = address else { continue };
            let ip = *v4.ip();
            if !self.addresses.contains(&ip) {
                let cidr = format!("{ip}/32");
                let added = tokio::task::spawn_blocking(move || {
                    crate::netns::ip(&["addr", "add", &cidr, "dev", "lo"])
                })
                .await;
                match added {
                    Ok(Ok(())) => {
                        self.addresses.insert(ip);
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%ip, %error, "cannot add a ClusterIP");
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%ip, %error, "cannot add a ClusterIP");
                        continue;
                    }
                }
            }
            match TcpListener::bind(address).await {
                Ok(listener) => {
                    tracing::info!(%address, "service proxy listening");
                    let task = tokio::spawn(serve(listener, *address, self.backends.clone()));
                    self.listeners.insert(*address, task);
                }
                Err(error) => tracing::warn!(%address, %error, "service proxy cannot listen"),
            }
        }

        let contents = format!("{}{names}", self.base);
        if contents != self.written {
            // In place (the bind mount follows the inode, not the name).
            match std::fs::write(&self.hosts, &contents) {
                Ok(()) => self.written = contents,
                Err(error) => tracing::warn!(%error, "cannot update the hosts file"),
            }
        }
    }
}

/// The ready endpoints of the slice port named `port_name`.
fn ready_backends(slices: &[&EndpointSlice], port_name: &str) -> Vec<SocketAddr> {
    let mut backends = Vec::new();
    for slice in slices {
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<Ipv4Addr>() {
                    backends.push(SocketAddr::from((ip, port)));
                }
            }
        }
    }
    backends.sort();
    backends
}

/// Accepts connections on a ClusterIP port and forwards each to the next ready endpoint.
async fn serve(listener: TcpListener, address: SocketAddr, backends: Backends) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut next = 0usize;
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            continue;
        };
        let backend = {
            let backends = lock(&backends);
            backends
                .get(&address)
                .filter(|list| !list.is_empty())
                .map(|list| list[next % list.len()])
        };
        next = next.wrapping_add(1);
        let Some(backend) = backend else {
            // No ready endpoint: refuse, as kube-proxy does (the connection is closed).
            continue;
        };
        tokio::spawn(async move {
            let _permit = permit;
            if let Ok(Ok(mut outbound)) =
                tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(backend)).await
            {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_follow_port_names_and_readiness() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "addressType": "IPv4",
            "ports": [{"name": "redis", "port": 6379}, {"name": "metrics", "port": 9121}],
            "endpoints": [
                {"addresses": ["10.244.1.2"], "conditions": {"ready": true}},
                {"addresses": ["10.244.1.3"], "conditions": {"ready": false}},
                {"addresses": ["10.244.1.4"]},
            ],
        }))
        .unwrap();
        assert_eq!(
            ready_backends(&[&slice], "redis"),
            vec![
                "10.244.1.2:6379".parse().unwrap(),
                "10.244.1.4:6379".parse::<SocketAddr>().unwrap()
            ]
        );
        assert_eq!(ready_backends(&[&slice], "metrics").len(), 2);
        assert!(ready_backends(&[&slice], "").is_empty());
    }
}

//! Kubernetes helpers of the journey: waiting, pods, the GameCluster as a dynamic object, and the real
//! `kubectl` and `helm` binaries run against the harness's API server.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};
use serde_json::Value;

/// Prints a step with the time since the start.
#[derive(Debug)]
pub(crate) struct Clock(pub Instant);

impl Clock {
    pub(crate) fn step(&self, what: &str) {
        eprintln!("[journey {:6.1}s] {what}", self.0.elapsed().as_secs_f64());
    }
}

/// Polling until a check holds: the testkit's, under the name the journey's stages use.
pub(crate) use switchyard_testkit::eventually as wait_for;

pub(crate) fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Ready and not terminating: the real-node tests' shared check, under the name the journey's stages use.
pub(crate) use crate::support::is_ready;

pub(crate) fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

pub(crate) fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

pub(crate) fn annotation(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.annotations.as_ref()?.get(key).cloned()
}

pub(crate) fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map(|c| c.restart_count)
        .unwrap_or(0)
}

/// Pods matching a label selector (empty on an API error).
pub(crate) async fn pods(api: &Api<Pod>, selector: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(selector))
        .await
        .map(|list| list.items)
        .unwrap_or_default()
}

/// Waits until exactly `n` pods of `selector` are Ready and none of them is terminating or unready.
pub(crate) async fn settled_pods(api: &Api<Pod>, selector: &str, n: usize, timeout: Duration) -> Vec<Pod> {
    wait_for(
        &format!("exactly {n} ready pods of {selector}"),
        timeout,
        || async {
            let all = pods(api, selector).await;
            (all.len() == n && all.iter().all(is_ready)).then_some(all)
        },
    )
    .await
}

/// The GameCluster API (dynamic: the e2e crate does not depend on the operator).
pub(crate) fn gameclusters(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("switchyard.dev", "v1alpha1", "GameCluster"),
        "gameclusters",
    );
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// A condition of a GameCluster's status: (status, reason, message).
pub(crate) fn condition(cluster: &DynamicObject, type_: &str) -> Option<(String, String, String)> {
    let conditions = cluster.data["status"]["conditions"].as_array()?;
    let found = conditions.iter().find(|c| c["type"] == type_)?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Some((
        text(&found["status"]),
        text(&found["reason"]),
        text(&found["message"]),
    ))
}

/// Ready=True, and the status describes the object's current generation.
pub(crate) fn cluster_ready(cluster: &DynamicObject) -> bool {
    let generation = cluster.metadata.generation.unwrap_or(0);
    let observed = cluster.data["status"]["observedGeneration"]
        .as_i64()
        .unwrap_or(-1);
    observed == generation && condition(cluster, "Ready").is_some_and(|(status, _, _)| status == "True")
}

/// When a condition last changed.
pub(crate) fn condition_time(cluster: &DynamicObject, type_: &str) -> Option<k8s_openapi::jiff::Timestamp> {
    let conditions = cluster.data["status"]["conditions"].as_array()?;
    let found = conditions.iter().find(|c| c["type"] == type_)?;
    found["lastTransitionTime"].as_str()?.parse().ok()
}

/// Ready=True and Progressing=False (no rollout, scale or drain under way), for the current generation.
pub(crate) fn cluster_settled(cluster: &DynamicObject) -> bool {
    cluster_ready(cluster)
        && condition(cluster, "Progressing").is_some_and(|(status, _, _)| status == "False")
}

/// `kubectl` and `helm` against the harness's API server, with helm's state in the run directory.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    pub(crate) kubectl: PathBuf,
    pub(crate) helm: PathBuf,
    pub(crate) kubeconfig: PathBuf,
    pub(crate) home: PathBuf,
}

impl Tools {
    pub(crate) fn new(bin_dir: &Path, kubeconfig: &Path, run_dir: &Path) -> Tools {
        let home = run_dir.join("helm-home");
        std::fs::create_dir_all(&home).expect("helm home");
        Tools {
            kubectl: bin_dir.join("kubectl"),
            helm: bin_dir.join("helm"),
            kubeconfig: kubeconfig.to_owned(),
            home,
        }
    }

    async fn run(&self, program: &Path, args: &[&str]) -> Result<String, String> {
        let output = tokio::process::Command::new(program)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|error| format!("{}: {error}", program.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let line = format!(
            "$ {} {}",
            program.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
            args.join(" ")
        );
        eprintln!("{line}\n{}", indent(stdout.trim_end()));
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{line} failed ({}):\n{stdout}{stderr}", output.status))
        }
    }

    /// Runs kubectl; panics when it fails.
    pub(crate) async fn kubectl(&self, args: &[&str]) -> String {
        self.run(&self.kubectl, args)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `kubectl patch` of the journey's GameCluster with a merge patch; panics when it fails.
    pub(crate) async fn patch_game_cluster(&self, merge_patch: &str) -> String {
        let cluster = format!("gc/{}", crate::GC);
        self.kubectl(&[
            "patch",
            "-n",
            crate::NS,
            &cluster,
            "--type=merge",
            "-p",
            merge_patch,
        ])
        .await
    }

    /// Runs helm; panics when it fails.
    pub(crate) async fn helm(&self, args: &[&str]) -> String {
        self.run(&self.helm, args).await.unwrap_or_else(|e| panic!("{e}"))
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

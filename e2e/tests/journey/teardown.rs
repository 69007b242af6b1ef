//! Step 9 of the journey: deleting the GameCluster and `helm uninstall` leave nothing behind, in the
//! API and on the node.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::cluster::{self, wait_for};
use crate::{GC, Journey, NS, OPERATOR_SELECTOR, READY_TIMEOUT, RELEASE, SYSTEM_NS};

impl Journey<'_> {
    /// 9. Deleting the GameCluster and `helm uninstall` leave nothing behind.
    pub(crate) async fn uninstall(&mut self) {
        let deleted = Instant::now();
        self.tools
            .kubectl(&["delete", "-n", NS, &format!("gc/{GC}"), "--wait=true"])
            .await;
        wait_for("every pod of the GameCluster to go", READY_TIMEOUT, || async {
            cluster::pods(&self.pods, &format!("app.kubernetes.io/instance={GC}"))
                .await
                .is_empty()
                .then_some(())
        })
        .await;
        let left = wait_for(
            "nothing left in the namespace",
            Duration::from_secs(60),
            || async {
                let left = self.leftovers(NS).await;
                left.is_empty().then_some(left)
            },
        )
        .await;
        let cluster_gone = deleted.elapsed();
        let uninstalled = Instant::now();
        self.tools
            .helm(&["uninstall", RELEASE, "--namespace", SYSTEM_NS, "--wait"])
            .await;
        wait_for("the operator pods to go", READY_TIMEOUT, || async {
            let system_pods: Api<Pod> = Api::namespaced(self.client.clone(), SYSTEM_NS);
            cluster::pods(&system_pods, OPERATOR_SELECTOR)
                .await
                .is_empty()
                .then_some(())
        })
        .await;
        let system_left = self.leftovers(SYSTEM_NS).await;
        let cluster_scoped = self
            .tools
            .kubectl(&["get", "clusterroles,clusterrolebindings", "-o", "name"])
            .await;
        let ours: Vec<&str> = cluster_scoped
            .lines()
            .filter(|l| l.contains("switchyard"))
            .collect();
        assert!(
            system_left.is_empty() && ours.is_empty(),
            "helm uninstall left {system_left:?} {ours:?}"
        );
        // On the node, only the cluster DNS is left (kube-system's CoreDNS, the harness's own).
        let running = wait_for(
            "the node to run no pod of ours",
            Duration::from_secs(60),
            || async {
                let running = self.harness.node().running_pods().ok()?;
                running
                    .iter()
                    .all(|pod| pod.starts_with("kube-system/"))
                    .then_some(running)
            },
        )
        .await;
        // helm keeps CRDs on purpose (NOTES.txt says how to delete it).
        self.tools
            .kubectl(&["get", "crd", "gameclusters.switchyard.dev", "-o", "name"])
            .await;
        self.summary.time(
            "kubectl delete gc -> every child gone",
            cluster_gone,
            format!("{left:?} left"),
        );
        self.summary.time(
            "helm uninstall -> operator gone",
            uninstalled.elapsed(),
            "the CRD stays (helm policy)",
        );
        self.step(&format!(
            "9. GameCluster deleted: nothing left in {NS} after {:.1}s; helm uninstall: nothing left in {SYSTEM_NS} nor cluster-wide; the node runs only {running:?}",
            cluster_gone.as_secs_f64()
        ));
    }

    /// Every object of every namespaced kind left in `namespace`, but what Kubernetes puts in every
    /// namespace (the `default` ServiceAccount, the `kube-root-ca.crt` ConfigMap) and Events (they expire).
    pub(crate) async fn leftovers(&self, namespace: &str) -> Vec<String> {
        let kinds = self
            .tools
            .kubectl(&["api-resources", "--verbs=list", "--namespaced", "-o", "name"])
            .await;
        let kinds: Vec<&str> = kinds.lines().filter(|k| !k.starts_with("events")).collect();
        let objects = self
            .tools
            .kubectl(&["get", &kinds.join(","), "-n", namespace, "-o", "name"])
            .await;
        objects
            .lines()
            .filter(|o| !matches!(*o, "serviceaccount/default" | "configmap/kube-root-ca.crt"))
            .map(str::to_owned)
            .collect()
    }
}

//! A pod's volumes, materialised as directories under the pod's own directory (processes share the host's
//! filesystem, so nothing is mounted): `<pod dir>/volumes/<volume>/`.
//!
//! Supported: `emptyDir`; `downwardAPI` (refreshed when the pod's labels or annotations change, each file
//! replaced atomically); `configMap` and `secret` (written once); `projected` with `serviceAccountToken`
//! (a TokenRequest bound to the pod, written once: valid for `expirationSeconds`, default 1 h, and not
//! refreshed), `configMap`, `secret` and `downwardAPI` sources (this covers the `kube-api-access-*` volume
//! the API server adds to every pod); `hostPath` (the host path itself). Anything else is an error that keeps
//! the pod's containers waiting.
//!
//! A process finds a volume because the runner rewrites paths ([`rewrite`]): in env values, command and
//! args, a container's `mountPath` becomes the volume's directory when it stands at the start of the value or
//! right after a `=` (as in `--drain-file=/etc/podinfo/annotations`) and is followed by the end or a `/`.
//! A container that mounts the service-account volume gets `KUBECONFIG` pointing at a kubeconfig built from
//! it ([`service_account_kubeconfig`]), because kube-rs and client-go read the in-cluster files from fixed
//! paths that cannot be rewritten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::Api;
use kube::api::PostParams;

use super::downward::{PodFacts, field_value};
use crate::control_plane::ApiAccess;

/// Where the kubelet mounts the service-account volume.
pub(crate) const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The materialised volumes of one pod: volume name → host path.
#[derive(Debug, Default, Clone)]
pub(crate) struct Volumes {
    pub(crate) paths: BTreeMap<String, PathBuf>,
}

/// Materialises every volume of `pod` under `root` (`<pod dir>/volumes`).
pub(crate) async fn materialize(
    client: &kube::Client,
    pod: &Pod,
    facts: &PodFacts,
    root: &Path,
) -> Result<Volumes, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut volumes = Volumes::default();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = root.join(&volume.name);
        if let Some(host) = &volume.host_path {
            volumes
                .paths
                .insert(volume.name.clone(), PathBuf::from(&host.path));
            continue;
        }
        mkdir(&dir)?;
        if volume.empty_dir.is_some() || volume.downward_api.is_some() {
            // downwardAPI files are written by `write_downward` below.
        } else if let Some(source) = &volume.config_map {
            let map = get::<ConfigMap>(client, &namespace, &source.name).await?;
            match map {
                Some(map) => write_keys(&dir, &config_map_entries(&map), source.items.as_deref())?,
                None if source.optional == Some(true) => {}
                None => {
                    return Err(format!(
                        "volume {}: configmap {:?} not found",
                        volume.name, source.name
                    ));
                }
            }
        } else if let Some(source) = &volume.secret {
            let name = source.secret_name.clone().unwrap_or_default();
            match get::<Secret>(client, &namespace, &name).await? {
                Some(secret) => write_keys(&dir, &secret_entries(&secret), source.items.as_deref())?,
                None if source.optional == Some(true) => {}
                None => return Err(format!("volume {}: secret {name:?} not found", volume.name)),
            }
        } else if let Some(projected) = &volume.projected {
            for source in projected.sources.iter().flatten() {
                if let Some(token) = &source.service_account_token {
                    let value =
                        request_token(client, pod, token.audience.clone(), token.expiration_seconds).await?;
                    write_file(&dir.join(&token.path), value.as_bytes())?;
                } else if let Some(cm) = &source.config_map {
                    match get::<ConfigMap>(client, &namespace, &cm.name).await? {
                        Some(map) => write_keys(&dir, &config_map_entries(&map), cm.items.as_deref())?,
                        None if cm.optional == Some(true) => {}
                        None => {
                            return Err(format!(
                                "volume {}: configmap {:?} not found",
                                volume.name, cm.name
                            ));
                        }
                    }
                } else if let Some(secret) = &source.secret {
                    match get::<Secret>(client, &namespace, &secret.name).await? {
                        Some(s) => write_keys(&dir, &secret_entries(&s), secret.items.as_deref())?,
                        None if secret.optional == Some(true) => {}
                        None => {
                            return Err(format!(
                                "volume {}: secret {:?} not found",
                                volume.name, secret.name
                            ));
                        }
                    }
                } else if source.downward_api.is_none() {
                    return Err(format!(
                        "volume {}: this projected source is not supported by the e2e pod runner",
                        volume.name
                    ));
                }
            }
        } else {
            return Err(format!(
                "volume {}: this volume type is not supported by the e2e pod runner (supported: emptyDir, \
                 downwardAPI, configMap, secret, projected, hostPath)",
                volume.name
            ));
        }
        volumes.paths.insert(volume.name.clone(), dir);
    }
    write_downward(pod, facts, &volumes)?;
    Ok(volumes)
}

/// (Re)writes every downward API file of `pod` (plain and projected), each atomically.
pub(crate) fn write_downward(pod: &Pod, facts: &PodFacts, volumes: &Volumes) -> Result<(), String> {
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(dir) = volumes.paths.get(&volume.name) else {
            continue;
        };
        let items: Vec<&DownwardAPIVolumeFile> = downward_items(volume).collect();
        for item in items {
            let Some(field) = &item.field_ref else {
                return Err(format!(
                    "volume {}: item {:?}: only fieldRef items are supported by the e2e pod runner",
                    volume.name, item.path
                ));
            };
            let value = field_value(pod, facts, &field.field_path)
                .map_err(|e| format!("volume {}: {e}", volume.name))?;
            write_file(&dir.join(&item.path), value.as_bytes())?;
        }
    }
    Ok(())
}

fn downward_items(volume: &Volume) -> impl Iterator<Item = &DownwardAPIVolumeFile> {
    let plain = volume.downward_api.iter().flat_map(|d| d.items.iter().flatten());
    let projected = volume
        .projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten())
        .flat_map(|s| s.downward_api.iter())
        .flat_map(|d| d.items.iter().flatten());
    plain.chain(projected)
}

/// Whether `pod` has downward API files that depend on labels or annotations.
pub(crate) fn has_metadata_files(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .flat_map(downward_items)
        .any(|item| {
            item.field_ref.as_ref().is_some_and(|f| {
                f.field_path.starts_with("metadata.labels")
                    || f.field_path.starts_with("metadata.annotations")
            })
        })
}

/// The container's mounts as (mount path, host path), longest mount path first.
pub(crate) fn mounts(container: &Container, volumes: &Volumes) -> Vec<(String, PathBuf)> {
    let mut mounts: Vec<(String, PathBuf)> = container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let base = volumes.paths.get(&m.name)?;
            let host = match m.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => base.join(sub),
                _ => base.clone(),
            };
            Some((m.mount_path.trim_end_matches('/').to_owned(), host))
        })
        .filter(|(path, _)| !path.is_empty())
        .collect();
    mounts.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    mounts
}

/// Rewrites mount paths in `value` to host paths (see the module docs for the rule).
pub(crate) fn rewrite(value: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut value = value.to_owned();
    for (mount, host) in mounts {
        let host = host.display().to_string();
        let mut out = String::with_capacity(value.len());
        let mut rest = value.as_str();
        let mut at_start = true;
        while let Some(pos) = rest.find(mount.as_str()) {
            let before_ok = if pos == 0 {
                at_start || out.ends_with('=')
            } else {
                rest.as_bytes()[pos - 1] == b'='
            };
            let after = &rest[pos + mount.len()..];
            let after_ok = after.is_empty() || after.starts_with('/');
            out.push_str(&rest[..pos]);
            if before_ok && after_ok {
                out.push_str(&host);
            } else {
                out.push_str(mount);
            }
            rest = after;
            at_start = false;
        }
        out.push_str(rest);
        value = out;
    }
    value
}

/// For a container that mounts the service-account volume: writes `<pod dir>/kubeconfig` (the API server's
/// real address, the volume's `token` as `tokenFile`, its `ca.crt`, its `namespace`) and returns its path.
pub(crate) fn service_account_kubeconfig(
    mounts: &[(String, PathBuf)],
    api: &ApiAccess,
    namespace: &str,
    pod_dir: &Path,
) -> Result<Option<PathBuf>, String> {
    let Some((_, dir)) = mounts.iter().find(|(path, _)| path == SERVICE_ACCOUNT_MOUNT) else {
        return Ok(None);
    };
    let token = dir.join("token");
    if !token.is_file() {
        return Ok(None);
    }
    let ca = dir.join("ca.crt");
    let ca = if ca.is_file() { ca } else { api.ca_file.clone() };
    let namespace = std::fs::read_to_string(dir.join("namespace")).unwrap_or_else(|_| namespace.to_owned());
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": api.server, "certificate-authority": ca}}],
        "users": [{"name": "pod", "user": {"tokenFile": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "pod", "namespace": namespace.trim()}}],
        "current-context": "e2e",
    });
    let path = pod_dir.join("kubeconfig");
    write_file(&path, config.to_string().as_bytes())?;
    Ok(Some(path))
}

async fn request_token(
    client: &kube::Client,
    pod: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: audience.filter(|a| !a.is_empty()).map(|a| vec![a]),
            expiration_seconds: Some(expiration.unwrap_or(3600).max(600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let answer = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("token for service account {namespace}/{account}: {e}"))?;
    answer
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| format!("token for service account {namespace}/{account}: empty answer"))
}

async fn get<K>(client: &kube::Client, namespace: &str, name: &str) -> Result<Option<K>, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name).await.map_err(|e| {
        format!(
            "get {} {namespace}/{name}: {e}",
            K::kind(&K::DynamicType::default())
        )
    })
}

pub(crate) fn config_map_entries(map: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut entries: BTreeMap<String, Vec<u8>> = map
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in map.binary_data.iter().flatten() {
        entries.insert(k.clone(), v.0.clone());
    }
    entries
}

pub(crate) fn secret_entries(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Writes all `entries`, or only the listed `items` (key → path).
fn write_keys(
    dir: &Path,
    entries: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
) -> Result<(), String> {
    match items {
        None => {
            for (key, value) in entries {
                write_file(&dir.join(key), value)?;
            }
        }
        Some(items) => {
            for item in items {
                let value = entries
                    .get(&item.key)
                    .ok_or_else(|| format!("key {:?} not found for {}", item.key, dir.display()))?;
                write_file(&dir.join(&item.path), value)?;
            }
        }
    }
    Ok(())
}

fn mkdir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))
}

/// Writes `path` atomically (a temporary file renamed over it), creating parent directories.
pub(crate) fn write_file(path: &Path, contents: &[u8]) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, contents).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("rename {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mounts_of(pairs: &[(&str, &str)]) -> Vec<(String, PathBuf)> {
        let container: Container = serde_json::from_value(json!({
            "name": "c",
            "volumeMounts": pairs.iter().map(|(name, path)| json!({"name": name, "mountPath": path})).collect::<Vec<_>>(),
        }))
        .unwrap();
        let volumes = Volumes {
            paths: pairs
                .iter()
                .map(|(name, _)| {
                    (
                        name.to_string(),
                        PathBuf::from(format!("/run/pod/volumes/{name}")),
                    )
                })
                .collect(),
        };
        mounts(&container, &volumes)
    }

    #[test]
    fn mount_paths_are_rewritten_at_value_starts_and_after_equals() {
        let mounts = mounts_of(&[("podinfo", "/etc/podinfo"), ("etc", "/etc"), ("data", "/data/")]);
        assert_eq!(mounts[0].0, "/etc/podinfo", "longest first");
        let r = |v: &str| rewrite(v, &mounts);
        assert_eq!(
            r("/etc/podinfo/annotations"),
            "/run/pod/volumes/podinfo/annotations"
        );
        assert_eq!(r("/etc/podinfo"), "/run/pod/volumes/podinfo");
        assert_eq!(
            r("--drain-file=/etc/podinfo/annotations"),
            "--drain-file=/run/pod/volumes/podinfo/annotations"
        );
        assert_eq!(r("/etc/hosts"), "/run/pod/volumes/etc/hosts");
        assert_eq!(r("/data"), "/run/pod/volumes/data");
        assert_eq!(
            r("/etcetera"),
            "/etcetera",
            "a prefix of a path segment is not a mount"
        );
        assert_eq!(r("x/etc/podinfo"), "x/etc/podinfo", "not at the start");
        assert_eq!(r("10.244.1.2:9090"), "10.244.1.2:9090");
    }

    #[test]
    fn downward_files_and_metadata_detection() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "annotations": {"switchyard.dev/drain": "true", "b": "x"}},
            "spec": {"containers": [], "volumes": [{"name": "podinfo", "downwardAPI": {"items": [
                {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                {"path": "sub/name", "fieldRef": {"fieldPath": "metadata.name"}},
            ]}}]},
        }))
        .unwrap();
        assert!(has_metadata_files(&pod));
        let dir = std::env::temp_dir().join(format!("switchyard-e2e-downward-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let volumes = Volumes {
            paths: [("podinfo".to_string(), dir.clone())].into_iter().collect(),
        };
        let facts = PodFacts {
            pod_ip: "10.244.1.2".into(),
            host_ip: "10.244.0.1".into(),
        };
        write_downward(&pod, &facts, &volumes).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("annotations")).unwrap(),
            "b=\"x\"\nswitchyard.dev/drain=\"true\""
        );
        assert_eq!(std::fs::read_to_string(dir.join("sub/name")).unwrap(), "p");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

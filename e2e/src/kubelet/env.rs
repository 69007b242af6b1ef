//! A container's environment, resolved as the kubelet does (`makeEnvironmentVariables`):
//!
//! 1. `envFrom` sources in order (`configMapRef`, `secretRef`, with `prefix`); later sources override
//!    earlier ones; a missing source is an error unless `optional`.
//! 2. `env` entries in order: `value` with `$(VAR)` expanded against everything defined so far (and the
//!    base variables), or `valueFrom` (`fieldRef`, `configMapKeyRef`, `secretKeyRef`); entries override
//!    `envFrom`.
//! 3. The base variables (what the kubelet adds: `KUBERNETES_SERVICE_HOST`, ...) where not defined.
//!
//! Then `command` and `args` are expanded against the result. [`expand`] is a port of Kubernetes'
//! `third_party/forked/golang/expansion`: `$(VAR)` is replaced when `VAR` is defined and kept as written
//! when not, `$$` is an escaped `$`, and any other `$` is literal.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};

use super::downward::{PodFacts, field_value};

/// ConfigMaps and Secrets of the pod's namespace that the container refers to (fetched by the caller).
#[derive(Debug, Default)]
pub(crate) struct Sources {
    pub(crate) config_maps: BTreeMap<String, ConfigMap>,
    pub(crate) secrets: BTreeMap<String, Secret>,
}

impl Sources {
    fn config_map(&self, name: &str, key: &str) -> Option<String> {
        let map = self.config_maps.get(name)?;
        if let Some(value) = map.data.as_ref().and_then(|d| d.get(key)) {
            return Some(value.clone());
        }
        let bytes = map.binary_data.as_ref()?.get(key)?;
        Some(String::from_utf8_lossy(&bytes.0).into_owned())
    }

    fn config_map_entries(&self, name: &str) -> Option<Vec<(String, String)>> {
        let map = self.config_maps.get(name)?;
        let mut entries: Vec<(String, String)> = map.data.clone().unwrap_or_default().into_iter().collect();
        for (key, bytes) in map.binary_data.iter().flatten() {
            entries.push((key.clone(), String::from_utf8_lossy(&bytes.0).into_owned()));
        }
        Some(entries)
    }

    fn secret(&self, name: &str, key: &str) -> Option<String> {
        let secret = self.secrets.get(name)?;
        if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
            return Some(String::from_utf8_lossy(&bytes.0).into_owned());
        }
        secret.string_data.as_ref()?.get(key).cloned()
    }

    fn secret_entries(&self, name: &str) -> Option<Vec<(String, String)>> {
        let secret = self.secrets.get(name)?;
        Some(
            secret
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                .collect(),
        )
    }
}

/// The names of the ConfigMaps and Secrets the container's env refers to.
pub(crate) fn references(container: &Container) -> (Vec<String>, Vec<String>) {
    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    for source in container.env_from.iter().flatten() {
        if let Some(r) = &source.config_map_ref {
            config_maps.push(r.name.clone());
        }
        if let Some(r) = &source.secret_ref {
            secrets.push(r.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else { continue };
        if let Some(r) = &from.config_map_key_ref {
            config_maps.push(r.name.clone());
        }
        if let Some(r) = &from.secret_key_ref {
            secrets.push(r.name.clone());
        }
    }
    config_maps.sort();
    config_maps.dedup();
    secrets.sort();
    secrets.dedup();
    (config_maps, secrets)
}

/// The container's environment (see the module docs). Errors name the variable or source at fault; the
/// kubelet reports them as `CreateContainerConfigError`.
pub(crate) fn resolve(
    pod: &Pod,
    container: &Container,
    facts: &PodFacts,
    sources: &Sources,
    base: &[(String, String)],
) -> Result<BTreeMap<String, String>, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.as_deref().unwrap_or("");
        let entries = if let Some(r) = &source.config_map_ref {
            match sources.config_map_entries(&r.name) {
                Some(entries) => entries,
                None if r.optional == Some(true) => continue,
                None => return Err(format!("configmap {:?} not found", r.name)),
            }
        } else if let Some(r) = &source.secret_ref {
            match sources.secret_entries(&r.name) {
                Some(entries) => entries,
                None if r.optional == Some(true) => continue,
                None => return Err(format!("secret {:?} not found", r.name)),
            }
        } else {
            continue;
        };
        for (key, value) in entries {
            let name = format!("{prefix}{key}");
            // The kubelet skips (and reports) keys that are not valid variable names.
            if name.is_empty() || name.contains('=') {
                continue;
            }
            env.insert(name, value);
        }
    }
    let base_map: BTreeMap<&str, &str> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => {
                let raw = var.value.as_deref().unwrap_or("");
                expand(raw, |name| {
                    env.get(name)
                        .map(String::as_str)
                        .or_else(|| base_map.get(name).copied())
                        .map(str::to_owned)
                })
            }
            Some(from) => {
                if let Some(field) = &from.field_ref {
                    field_value(pod, facts, &field.field_path)
                        .map_err(|e| format!("env {}: {e}", var.name))?
                } else if let Some(r) = &from.config_map_key_ref {
                    match sources.config_map(&r.name, &r.key) {
                        Some(value) => value,
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "env {}: key {:?} of configmap {:?} not found",
                                var.name, r.key, r.name
                            ));
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    match sources.secret(&r.name, &r.key) {
                        Some(value) => value,
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "env {}: key {:?} of secret {:?} not found",
                                var.name, r.key, r.name
                            ));
                        }
                    }
                } else {
                    return Err(format!(
                        "env {}: this valueFrom (resourceFieldRef, fileKeyRef) is not supported by the e2e \
                         pod runner",
                        var.name
                    ));
                }
            }
        };
        env.insert(var.name.clone(), value);
    }
    for (key, value) in base {
        env.entry(key.clone()).or_insert_with(|| value.clone());
    }
    Ok(env)
}

/// Expands `$(VAR)` references in `input` (Kubernetes' rules: see the module docs). `lookup` returns a
/// variable's value, or `None` to keep the reference as written.
pub(crate) fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let Some(next) = after.chars().next() else {
            // A trailing `$` is literal.
            out.push('$');
            rest = after;
            break;
        };
        match next {
            '$' => {
                out.push('$');
                rest = &after[1..];
            }
            '(' => match after[1..].find(')') {
                Some(close) => {
                    let name = &after[1..1 + close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 2..];
                }
                None => {
                    // An unclosed reference is literal.
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            other => {
                out.push('$');
                out.push(other);
                rest = &after[other.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn expansion_follows_kubernetes() {
        // Cases from Kubernetes' expansion_test.go.
        let lookup = vars(&[
            ("VAR_A", "A"),
            ("VAR_B", "B"),
            ("VAR_C", "C"),
            ("VAR_REF", "$(VAR_A)"),
            ("VAR_EMPTY", ""),
        ]);
        let cases = [
            ("$(VAR_A)", "A"),
            ("___$(VAR_B)___", "___B___"),
            ("$(VAR_A)-$(VAR_A)", "A-A"),
            ("f000-$$VAR_A", "f000-$VAR_A"),
            ("foo\\$(VAR_C)bar", "foo\\Cbar"),
            ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
            ("$(VAR_A)$(VAR_B)$(VAR_C)", "ABC"),
            ("$(VAR_REF)", "$(VAR_A)"),
            ("foo$(VAR_EMPTY)bar", "foobar"),
            ("$(VAR_DNE)", "$(VAR_DNE)"),
            ("$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
            ("$$$$$$(VAR_A)", "$$$(VAR_A)"),
            ("$$$$$$$(VAR_A)", "$$$A"),
            ("$VAR_A)", "$VAR_A)"),
            ("${VAR_A}", "${VAR_A}"),
            ("$(VAR_B)_______$(A", "B_______$(A"),
            ("$(VAR_C)_______$(", "C_______$("),
            ("$(VAR_A)foobarzab$", "Afoobarzab$"),
            ("foo-\\$(VAR_A", "foo-\\$(VAR_A"),
            ("--$($($($($--", "--$($($($($--"),
            ("$($($($($--foo$(", "$($($($($--foo$("),
            ("foo0--$($($($(", "foo0--$($($($("),
            ("$(foo$$var)", "$(foo$$var)"),
            ("$?_boo_$!", "$?_boo_$!"),
            ("$", "$"),
            ("", ""),
            ("$(VAR_A)é$é", "Aé$é"),
        ];
        for (input, expected) in cases {
            assert_eq!(expand(input, &lookup), expected, "input {input:?}");
        }
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "node-0", "namespace": "game", "uid": "u1"},
            "spec": {"containers": [{"name": "c"}]},
        }))
        .unwrap()
    }

    fn facts() -> PodFacts {
        PodFacts {
            pod_ip: "10.244.1.7".into(),
            host_ip: "10.244.0.1".into(),
        }
    }

    #[test]
    fn pod_contract_env() {
        let container: Container = serde_json::from_value(json!({
            "name": "node",
            "envFrom": [{"configMapRef": {"name": "my-config"}}, {"configMapRef": {"name": "absent", "optional": true}}],
            "env": [
                {"name": "SWITCHYARD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "SWITCHYARD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "SWITCHYARD_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "SWITCHYARD_HTTP", "value": "$(SWITCHYARD_POD_IP):9090"},
                {"name": "SWITCHYARD_LINK", "value": "$(SWITCHYARD_POD_IP):7400"},
                {"name": "EARLY", "value": "$(LATER)"},
                {"name": "LATER", "value": "x"},
                {"name": "FROM_CM", "value": "$(SWITCHYARD_ROUTE_BYTES)"},
                {"name": "SWITCHYARD_SEQ_BYTES", "value": "4"},
                {"name": "API", "value": "$(KUBERNETES_SERVICE_HOST)"},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "MAYBE", "valueFrom": {"configMapKeyRef": {"name": "my-config", "key": "nope", "optional": true}}},
            ],
        }))
        .unwrap();
        let mut sources = Sources::default();
        sources.config_maps.insert(
            "my-config".into(),
            serde_json::from_value(
                json!({"data": {"SWITCHYARD_ROUTE_BYTES": "2", "SWITCHYARD_SEQ_BYTES": "2"}}),
            )
            .unwrap(),
        );
        sources.secrets.insert(
            "creds".into(),
            serde_json::from_value(json!({"data": {"password": "aHVudGVyMg=="}})).unwrap(),
        );
        let (cms, secrets) = references(&container);
        assert_eq!(cms, ["absent", "my-config"]);
        assert_eq!(secrets, ["creds"]);
        let base = vec![("KUBERNETES_SERVICE_HOST".to_owned(), "10.244.0.1".to_owned())];
        let env = resolve(&pod(), &container, &facts(), &sources, &base).unwrap();
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("SWITCHYARD_ID"), Some("node-0"));
        assert_eq!(get("SWITCHYARD_NAMESPACE"), Some("game"));
        assert_eq!(get("SWITCHYARD_HTTP"), Some("10.244.1.7:9090"));
        assert_eq!(get("SWITCHYARD_LINK"), Some("10.244.1.7:7400"));
        assert_eq!(get("EARLY"), Some("$(LATER)"), "only earlier variables expand");
        assert_eq!(get("FROM_CM"), Some("2"));
        assert_eq!(get("SWITCHYARD_SEQ_BYTES"), Some("4"), "env overrides envFrom");
        assert_eq!(get("API"), Some("10.244.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.244.0.1"));
        assert_eq!(get("PASSWORD"), Some("hunter2"));
        assert_eq!(get("MAYBE"), None);
    }

    #[test]
    fn missing_sources_are_errors_naming_them() {
        let container: Container = serde_json::from_value(json!({
            "name": "c",
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}],
        }))
        .unwrap();
        let error = resolve(&pod(), &container, &facts(), &Sources::default(), &[]).unwrap_err();
        assert!(error.contains("\"cm\"") && error.contains("env X"), "{error}");
        let container: Container =
            serde_json::from_value(json!({"name": "c", "envFrom": [{"secretRef": {"name": "s"}}]})).unwrap();
        let error = resolve(&pod(), &container, &facts(), &Sources::default(), &[]).unwrap_err();
        assert!(error.contains("secret \"s\""), "{error}");
    }
}

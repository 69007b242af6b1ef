//! The downward API: pod fields by `fieldPath` (for env `fieldRef` and downward API volume items), and the
//! kubelet's file format for label and annotation maps (`key="value"` lines, keys sorted, values quoted as
//! Go's `%q` does, no trailing newline).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

/// Facts about a pod that are not (yet) in the object the runner holds.
#[derive(Debug, Clone)]
pub(crate) struct PodFacts {
    /// The pod's IP.
    pub(crate) pod_ip: String,
    /// The node's IP.
    pub(crate) host_ip: String,
}

/// The value of `field_path` for `pod`, as the kubelet gives it to env vars and volume files.
///
/// Supported: `metadata.name`, `metadata.namespace`, `metadata.uid`, `metadata.labels`,
/// `metadata.annotations`, `metadata.labels['k']`, `metadata.annotations['k']`, `spec.nodeName`,
/// `spec.serviceAccountName`, `status.hostIP`, `status.hostIPs`, `status.podIP`, `status.podIPs`.
pub(crate) fn field_value(pod: &Pod, facts: &PodFacts, field_path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    let spec = pod.spec.as_ref();
    Ok(match field_path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(labels),
        "metadata.annotations" => format_map(annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        other => {
            if let Some(key) = subscript(other, "metadata.labels") {
                labels.get(key).cloned().unwrap_or_default()
            } else if let Some(key) = subscript(other, "metadata.annotations") {
                annotations.get(key).cloned().unwrap_or_default()
            } else {
                return Err(format!(
                    "fieldPath {other:?} is not supported by the e2e pod runner"
                ));
            }
        }
    })
}

/// `metadata.labels['key']` → `key`.
fn subscript<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)?.strip_prefix("['")?.strip_suffix("']")
}

/// The kubelet's `fieldpath.FormatMap`: `key="value"` lines in key order, Go-quoted, no final newline.
pub(crate) fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(key, value)| format!("{key}={}", go_quote(value)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `strconv.Quote` (what `%q` does to a string): double quotes; `\"` and `\\`; `\a \b \f \n \r \t \v`
/// for those control characters; `\xNN` for other ASCII controls; `\uNNNN` / `\UNNNNNNNN` for other
/// characters that are not printable. "Printable" follows Go's `unicode.IsPrint` for controls, spaces other
/// than U+0020 and the common format characters; Rust has no general-category table, so rarer unprintable
/// characters (unassigned code points) are kept as they are.
pub(crate) fn go_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if printable(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    // Format characters (category Cf) that show up in practice.
    !matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_matches_strconv_quote() {
        // Expected values from Go: fmt.Printf("%q", s).
        assert_eq!(go_quote("true"), r#""true""#);
        assert_eq!(go_quote(""), r#""""#);
        assert_eq!(go_quote(r#"say "hi" \o/"#), r#""say \"hi\" \\o/""#);
        assert_eq!(
            go_quote("a\nb\tc\r\u{7}\u{8}\u{c}\u{b}"),
            r#""a\nb\tc\r\a\b\f\v""#
        );
        assert_eq!(go_quote("\u{0}\u{1b}\u{7f}"), r#""\x00\x1b\x7f""#);
        assert_eq!(go_quote("héllo 世界 🎮"), "\"héllo 世界 🎮\"");
        assert_eq!(go_quote("\u{a0}\u{200b}\u{2028}"), r#""\u00a0\u200b\u2028""#);
        assert_eq!(go_quote("{\"a\":1}"), r#""{\"a\":1}""#);
    }

    #[test]
    fn format_map_is_sorted_without_final_newline() {
        let map: BTreeMap<String, String> = [
            ("switchyard.dev/drain", "true"),
            ("a", "x\"y"),
            ("controller.kubernetes.io/pod-deletion-cost", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            format_map(&map),
            "a=\"x\\\"y\"\ncontroller.kubernetes.io/pod-deletion-cost=\"3\"\nswitchyard.dev/drain=\"true\""
        );
        assert_eq!(format_map(&BTreeMap::new()), "");
    }

    #[test]
    fn field_values() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1",
                         "labels": {"app": "x"}, "annotations": {"k/v": "1"}},
            "spec": {"containers": [], "nodeName": "e2e-node", "serviceAccountName": "sa"},
        }))
        .unwrap();
        let facts = PodFacts {
            pod_ip: "10.244.1.2".into(),
            host_ip: "10.244.0.1".into(),
        };
        let get = |path| field_value(&pod, &facts, path);
        assert_eq!(get("metadata.name").unwrap(), "p");
        assert_eq!(get("metadata.namespace").unwrap(), "ns");
        assert_eq!(get("metadata.uid").unwrap(), "u-1");
        assert_eq!(get("metadata.labels['app']").unwrap(), "x");
        assert_eq!(get("metadata.annotations['k/v']").unwrap(), "1");
        assert_eq!(get("metadata.annotations['missing']").unwrap(), "");
        assert_eq!(get("metadata.annotations").unwrap(), "k/v=\"1\"");
        assert_eq!(get("spec.nodeName").unwrap(), "e2e-node");
        assert_eq!(get("spec.serviceAccountName").unwrap(), "sa");
        assert_eq!(get("status.podIP").unwrap(), "10.244.1.2");
        assert_eq!(get("status.hostIP").unwrap(), "10.244.0.1");
        assert!(get("spec.whatever").unwrap_err().contains("not supported"));
    }
}

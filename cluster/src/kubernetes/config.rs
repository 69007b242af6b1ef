//! Typed, validated configuration of the Kubernetes components.
//!
//! The values come from flags and the downward API (`POD_NAME`, `POD_NAMESPACE` env in the pod spec); each
//! struct has a `validate` method that the components call at start, so a bad value is reported with the
//! field's name before anything talks to the API server.

use std::path::PathBuf;
use std::time::Duration;

/// A configuration value that cannot work. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required name is empty.
    #[error("kubernetes config: {field} must not be empty")]
    Empty {
        /// The field, e.g. `pod name`.
        field: &'static str,
    },
    /// A name that Kubernetes would reject (names are at most 253 characters of `[a-z0-9.-]`; port names
    /// at most 15 of `[a-z0-9-]`).
    #[error("kubernetes config: {field} {value:?} is not a valid Kubernetes name")]
    InvalidName {
        /// The field, e.g. `service`.
        field: &'static str,
        /// The rejected value.
        value: String,
    },
    /// A list names the same value twice.
    #[error("kubernetes config: {field} {value:?} is listed twice")]
    Duplicate {
        /// The field, e.g. `service`.
        field: &'static str,
        /// The repeated value.
        value: String,
    },
    /// A duration that must be positive is zero.
    #[error("kubernetes config: {field} must be greater than zero")]
    ZeroDuration {
        /// The field, e.g. `reporter interval`.
        field: &'static str,
    },
}

/// Checks a DNS subdomain name (namespaces, Services and pods are at least this strict).
fn check_name(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::Empty { field });
    }
    let ok = value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && value.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && value.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidName {
            field,
            value: value.to_owned(),
        })
    }
}

fn check_positive(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        Err(ConfigError::ZeroDuration { field })
    } else {
        Ok(())
    }
}

/// Which Services' EndpointSlices a [`KubernetesRegistry`](super::KubernetesRegistry) watches: one per node
/// pool of the cluster, so a gate links to the nodes of every pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The namespace of the Services (and of their EndpointSlices).
    pub namespace: String,
    /// The Service names, at least one: slices are selected by the label `kubernetes.io/service-name` with
    /// one watch (`kubernetes.io/service-name in (a,b)`).
    pub services: Vec<String>,
    /// The name of the Service port that links connect to, e.g. `link`. A slice that has no port of this
    /// name but exactly one port uses that port; a slice with neither is skipped.
    pub port_name: String,
}

impl RegistryConfig {
    /// The port name used when none is configured.
    pub const DEFAULT_PORT_NAME: &str = "link";

    /// A config for `service` in `namespace` with the default port name ([`Self::DEFAULT_PORT_NAME`]).
    pub fn new(namespace: impl Into<String>, service: impl Into<String>) -> Self {
        Self::for_services(namespace, [service.into()])
    }

    /// A config for several Services in `namespace` (the node Services of every pool).
    pub fn for_services(
        namespace: impl Into<String>,
        services: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        RegistryConfig {
            namespace: namespace.into(),
            services: services.into_iter().map(Into::into).collect(),
            port_name: Self::DEFAULT_PORT_NAME.to_owned(),
        }
    }

    /// The Services of a comma-separated list, as `SWITCHYARD_NODE_SERVICE` holds them (`a,b`; blanks
    /// around names and empty items are ignored).
    pub fn parse_services(list: &str) -> Vec<String> {
        list.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The label selector of the slices of every Service.
    pub fn label_selector(&self) -> String {
        match self.services.as_slice() {
            [one] => format!("{}={one}", super::SERVICE_NAME_LABEL),
            many => format!("{} in ({})", super::SERVICE_NAME_LABEL, many.join(",")),
        }
    }

    /// Sets the port name.
    #[must_use]
    pub fn with_port_name(mut self, port_name: impl Into<String>) -> Self {
        self.port_name = port_name.into();
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad field. An empty port name is allowed: it matches an unnamed port.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_name("namespace", &self.namespace)?;
        if self.services.is_empty() {
            return Err(ConfigError::Empty { field: "service" });
        }
        for (index, service) in self.services.iter().enumerate() {
            check_name("service", service)?;
            if self.services[..index].contains(service) {
                return Err(ConfigError::Duplicate {
                    field: "service",
                    value: service.clone(),
                });
            }
        }
        let port_ok = self.port_name.len() <= 15
            && self
                .port_name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !port_ok {
            return Err(ConfigError::InvalidName {
                field: "port name",
                value: self.port_name.clone(),
            });
        }
        Ok(())
    }
}

/// This process's own pod: from the downward API (`metadata.name`, `metadata.namespace` as env vars).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
}

impl PodRef {
    /// The pod `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        PodRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Checks both names.
    ///
    /// # Errors
    /// [`ConfigError`] naming the bad field (`pod namespace` or `pod name`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_name("pod namespace", &self.namespace)?;
        check_name("pod name", &self.name)
    }
}

/// What a [`PodReporter`](super::PodReporter) patches, and how often at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReporterConfig {
    /// The pod whose annotations carry the bound-player count.
    pub pod: PodRef,
    /// At most one patch per interval; the newest value is always written eventually.
    pub interval: Duration,
    /// The routes the node serves to clients, written as [`ROUTES_ANNOTATION`](super::ROUTES_ANNOTATION)
    /// with every patch (the operator finds route conflicts between pools from them).
    pub routes: Vec<i32>,
}

impl ReporterConfig {
    /// The default throttle interval.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

    /// A config for `pod` with the default interval ([`Self::DEFAULT_INTERVAL`]).
    pub fn new(pod: PodRef) -> Self {
        ReporterConfig {
            pod,
            interval: Self::DEFAULT_INTERVAL,
            routes: Vec::new(),
        }
    }

    /// Sets the routes the node serves to clients (any order; duplicates are written once).
    #[must_use]
    pub fn with_routes(mut self, routes: impl IntoIterator<Item = i32>) -> Self {
        self.routes = routes.into_iter().collect();
        self
    }

    /// Sets the throttle interval.
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.pod.validate()?;
        check_positive("reporter interval", self.interval)
    }
}

/// Where a [`DrainSignal`](super::DrainSignal) learns the pod's annotations from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainSource {
    /// Poll a downward API volume file holding `metadata.annotations` (no API permissions needed; the
    /// kubelet refreshes the file on its sync period, typically within a minute or so).
    AnnotationsFile {
        /// The file, e.g. `/etc/podinfo/annotations`.
        path: PathBuf,
        /// How often the file is read.
        poll_interval: Duration,
    },
    /// Watch the pod itself (field selector `metadata.name=<pod>`, metadata only): reacts within a second.
    PodWatch,
}

impl DrainSource {
    /// The default poll interval of [`DrainSource::AnnotationsFile`].
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

    /// [`DrainSource::AnnotationsFile`] at `path` with the default poll interval.
    pub fn annotations_file(path: impl Into<PathBuf>) -> Self {
        DrainSource::AnnotationsFile {
            path: path.into(),
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
        }
    }
}

/// How a [`DrainSignal`](super::DrainSignal) finds out that its pod should drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainConfig {
    /// The pod that carries the annotation (used by [`DrainSource::PodWatch`]).
    pub pod: PodRef,
    /// File or watch.
    pub source: DrainSource,
}

impl DrainConfig {
    /// Checks every field (the pod only matters for [`DrainSource::PodWatch`]).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.source {
            DrainSource::AnnotationsFile { path, poll_interval } => {
                if path.as_os_str().is_empty() {
                    return Err(ConfigError::Empty {
                        field: "drain annotations file",
                    });
                }
                check_positive("drain poll interval", *poll_interval)
            }
            DrainSource::PodWatch => self.pod.validate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_config_validation_names_the_field() {
        assert_eq!(RegistryConfig::new("games", "my-game-nodes").validate(), Ok(()));
        assert_eq!(
            RegistryConfig::new("", "svc").validate(),
            Err(ConfigError::Empty { field: "namespace" })
        );
        assert!(matches!(
            RegistryConfig::new("ns", "Bad_Name").validate(),
            Err(ConfigError::InvalidName { field: "service", .. })
        ));
        assert!(matches!(
            RegistryConfig::new("ns", "svc").with_port_name("Link").validate(),
            Err(ConfigError::InvalidName {
                field: "port name",
                ..
            })
        ));
        assert!(matches!(
            RegistryConfig::new("ns", "svc")
                .with_port_name("a-very-long-port-name")
                .validate(),
            Err(ConfigError::InvalidName {
                field: "port name",
                ..
            })
        ));
        assert_eq!(
            RegistryConfig::new("ns", "svc").with_port_name("").validate(),
            Ok(())
        );
        assert!(matches!(
            RegistryConfig::new("-ns", "svc").validate(),
            Err(ConfigError::InvalidName {
                field: "namespace",
                ..
            })
        ));
    }

    #[test]
    fn several_services_are_one_set_based_selector() {
        let one = RegistryConfig::new("games", "arena-node");
        assert_eq!(one.label_selector(), "kubernetes.io/service-name=arena-node");
        let services = RegistryConfig::parse_services(" arena-node-lobby, arena-node-battle ,,");
        assert_eq!(services, ["arena-node-lobby", "arena-node-battle"]);
        let two = RegistryConfig::for_services("games", services);
        assert_eq!(two.validate(), Ok(()));
        assert_eq!(
            two.label_selector(),
            "kubernetes.io/service-name in (arena-node-lobby,arena-node-battle)"
        );
        assert_eq!(
            RegistryConfig::for_services("games", Vec::<String>::new()).validate(),
            Err(ConfigError::Empty { field: "service" })
        );
        assert_eq!(
            RegistryConfig::for_services("games", ["a", "b", "a"]).validate(),
            Err(ConfigError::Duplicate {
                field: "service",
                value: "a".into()
            })
        );
        assert!(matches!(
            RegistryConfig::for_services("games", ["a", "B"]).validate(),
            Err(ConfigError::InvalidName { field: "service", .. })
        ));
    }

    #[test]
    fn reporter_and_drain_config_validation() {
        let pod = PodRef::new("games", "node-0");
        assert_eq!(ReporterConfig::new(pod.clone()).validate(), Ok(()));
        assert_eq!(
            ReporterConfig::new(pod.clone())
                .with_interval(Duration::ZERO)
                .validate(),
            Err(ConfigError::ZeroDuration {
                field: "reporter interval"
            })
        );
        assert_eq!(
            ReporterConfig::new(PodRef::new("games", "")).validate(),
            Err(ConfigError::Empty { field: "pod name" })
        );
        let file = DrainConfig {
            pod: PodRef::new("", ""),
            source: DrainSource::annotations_file("/etc/podinfo/annotations"),
        };
        assert_eq!(file.validate(), Ok(()), "the file source does not need the pod");
        let watch = DrainConfig {
            pod: PodRef::new("games", ""),
            source: DrainSource::PodWatch,
        };
        assert_eq!(watch.validate(), Err(ConfigError::Empty { field: "pod name" }));
        let zero = DrainConfig {
            pod,
            source: DrainSource::AnnotationsFile {
                path: "/x".into(),
                poll_interval: Duration::ZERO,
            },
        };
        assert_eq!(
            zero.validate(),
            Err(ConfigError::ZeroDuration {
                field: "drain poll interval"
            })
        );
    }

    #[test]
    fn config_errors_say_which_field() {
        let e = ConfigError::Empty { field: "pod name" };
        assert_eq!(e.to_string(), "kubernetes config: pod name must not be empty");
    }
}

//! What runs for a container image: there are no images here, so a container of the Switchyard image
//! becomes a process of the local `switchyard` binary and a container of a Redis image a process of Debian's
//! `redis-server`. Anything else is refused (the container stays waiting with a reason that says so).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

/// The local programs that stand in for images.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Programs<'a> {
    /// The `switchyard` binary.
    pub(crate) switchyard: &'a Path,
    /// `redis-server`.
    pub(crate) redis_server: &'a Path,
}

/// What an image maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageKind {
    /// The `switchyard` binary.
    Switchyard,
    /// `redis-server`.
    Redis,
}

/// The image's repository name without registry, path, tag or digest:
/// `registry.example/team/switchyard:1.2@sha256:…` → `switchyard`.
pub(crate) fn repository_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

/// Classifies `image` by its repository name against the configured names.
pub(crate) fn classify(image: &str, switchyard: &[String], redis: &[String]) -> Option<ImageKind> {
    let name = repository_name(image);
    if switchyard.iter().any(|n| n == name) {
        Some(ImageKind::Switchyard)
    } else if redis.iter().any(|n| n == name) {
        Some(ImageKind::Redis)
    } else {
        None
    }
}

/// The program and arguments for a container. `command` and `args` are already `$(VAR)`-expanded.
///
/// - Switchyard: the image's entrypoint is `switchyard`, so without `command` the program is the binary with
///   `args`; a `command` must start with the binary (`switchyard` or a path ending in `/switchyard`), and the
///   rest of it comes before `args`.
/// - Redis: `redis-server [<config file>] --bind <pod IP> --port <port> --save "" --appendonly no
///   --protected-mode <yes|no> --dir <pod dir>`, the port being the container port named `redis`, else the
///   first container port, else 6379. Of the container's own args only two are kept (Debian's redis-server
///   is not the image's entrypoint script): a first argument ending in `.conf` (a configuration file, e.g.
///   the operator's `requirepass` from a Secret volume, its path already rewritten), and the value of
///   `--protected-mode` (default `no`).
pub(crate) fn command_line(
    kind: ImageKind,
    container: &Container,
    command: Option<Vec<String>>,
    args: Vec<String>,
    programs: &Programs<'_>,
    pod_ip: &str,
    pod_dir: &Path,
) -> Result<(PathBuf, Vec<String>), String> {
    match kind {
        ImageKind::Switchyard => match command {
            None => Ok((programs.switchyard.to_path_buf(), args)),
            Some(command) => {
                let mut parts = command.into_iter();
                match parts.next() {
                    Some(first) if first == "switchyard" || first.ends_with("/switchyard") => {
                        Ok((programs.switchyard.to_path_buf(), parts.chain(args).collect()))
                    }
                    other => Err(format!(
                        "command {:?} is not the switchyard binary: the e2e pod runner only runs `switchyard` \
                         for this image",
                        other.unwrap_or_default()
                    )),
                }
            }
        },
        ImageKind::Redis => {
            let ports = container.ports.as_deref().unwrap_or(&[]);
            let port = ports
                .iter()
                .find(|p| p.name.as_deref() == Some("redis"))
                .or_else(|| ports.first())
                .map_or(6379, |p| p.container_port);
            let config_file = args.first().filter(|first| first.ends_with(".conf")).cloned();
            let protected_mode = args
                .windows(2)
                .find(|pair| pair[0] == "--protected-mode")
                .map_or_else(|| "no".to_owned(), |pair| pair[1].clone());
            let mut command: Vec<String> = config_file.into_iter().collect();
            command.extend(
                [
                    "--bind",
                    pod_ip,
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    &protected_mode,
                    "--dir",
                    &pod_dir.display().to_string(),
                ]
                .map(str::to_owned),
            );
            Ok((programs.redis_server.to_path_buf(), command))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn images_are_classified_by_repository_name() {
        let sy = names(&["switchyard"]);
        let redis = names(&["redis"]);
        for image in [
            "switchyard",
            "switchyard:dev",
            "ghcr.io/acme/switchyard:0.1.0",
            "localhost:5000/switchyard:1@sha256:abcd",
            "switchyard@sha256:abcd",
        ] {
            assert_eq!(
                classify(image, &sy, &redis),
                Some(ImageKind::Switchyard),
                "{image}"
            );
        }
        for image in ["redis", "redis:7", "docker.io/library/redis:7.2-alpine"] {
            assert_eq!(classify(image, &sy, &redis), Some(ImageKind::Redis), "{image}");
        }
        for image in [
            "nginx:1",
            "switchyard-game:1",
            "acme/redis-operator:2",
            "localhost:5000/other",
        ] {
            assert_eq!(classify(image, &sy, &redis), None, "{image}");
        }
    }

    #[test]
    fn switchyard_command_lines() {
        let c = Container::default();
        let bin = Path::new("/t/switchyard");
        let run = |command: Option<&[&str]>, args: &[&str]| {
            command_line(
                ImageKind::Switchyard,
                &c,
                command.map(names),
                names(args),
                &Programs {
                    switchyard: bin,
                    redis_server: Path::new("redis-server"),
                },
                "10.244.1.2",
                Path::new("/pod"),
            )
        };
        assert_eq!(
            run(None, &["node"]).unwrap(),
            (bin.to_path_buf(), names(&["node"]))
        );
        assert_eq!(
            run(Some(&["/usr/local/bin/switchyard", "node"]), &["--pool", "x"]).unwrap(),
            (bin.to_path_buf(), names(&["node", "--pool", "x"]))
        );
        assert!(run(Some(&["sh", "-c", "x"]), &[]).unwrap_err().contains("\"sh\""));
    }

    #[test]
    fn redis_command_line_uses_the_pod_ip_and_port() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "redis", "ports": [{"name": "metrics", "containerPort": 9121}, {"name": "redis", "containerPort": 6380}],
            "args": ["--ignored"],
        }))
        .unwrap();
        let (program, args) = command_line(
            ImageKind::Redis,
            &c,
            None,
            names(&["--ignored"]),
            &Programs {
                switchyard: Path::new("/t/switchyard"),
                redis_server: Path::new("/usr/bin/redis-server"),
            },
            "10.244.1.9",
            Path::new("/pod"),
        )
        .unwrap();
        assert_eq!(program, Path::new("/usr/bin/redis-server"));
        assert_eq!(
            args,
            names(&[
                "--bind",
                "10.244.1.9",
                "--port",
                "6380",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--dir",
                "/pod"
            ])
        );

        // The operator's managed Redis: its configuration file (the password) and protected mode are kept.
        let (_, args) = command_line(
            ImageKind::Redis,
            &c,
            None,
            names(&[
                "/pod/volumes/config/redis.conf",
                "--port",
                "6379",
                "--protected-mode",
                "yes",
            ]),
            &Programs {
                switchyard: Path::new("/t/switchyard"),
                redis_server: Path::new("/usr/bin/redis-server"),
            },
            "10.244.1.9",
            Path::new("/pod"),
        )
        .unwrap();
        assert_eq!(args[0], "/pod/volumes/config/redis.conf");
        assert!(
            args.windows(2).any(|pair| pair == ["--protected-mode", "yes"]),
            "{args:?}"
        );
        assert!(args.windows(2).any(|pair| pair == ["--port", "6380"]), "{args:?}");
    }
}

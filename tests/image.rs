//! The container images `scripts/image.sh` builds without Docker, checked as their users meet them: the
//! config and root filesystem read back from the archive (user 65532, entrypoint, labels, no shell,
//! exactly the binary's shared libraries), the digest rebuilt and compared, short names refused, and the
//! image imported into a real containerd the way kind does it and run with runc on a read-only root as
//! uid 65532, answering a due packet. The Redis image is run the same way and answers PING.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::image::{BuiltImage, Containerd, ImageContents, TempDir, build_image, run_image_script, run_ok};
use support::procs::free_port;
use support::{Conn, Wire, switchyard_binary};

const NAME: &str = "registry.local/switchyard:test";

fn switchyard_image(dir: &TempDir, file: &str, extra: &[&str]) -> BuiltImage {
    let mut args = vec!["--binary", switchyard_binary()];
    args.extend_from_slice(extra);
    build_image(NAME, &dir.path().join(file), &args)
}

/// Libraries `ldd` resolves for a binary, as the paths it names.
fn ldd_paths(binary: &str) -> BTreeSet<String> {
    let out = run_ok(Command::new("ldd").arg(binary));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once(" => ") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/')
                .then(|| path.trim_start_matches('/').to_owned())
        })
        .collect()
}

#[test]
fn switchyard_image_config_and_root_filesystem() {
    let dir = TempDir::new("imgcfg");
    let image = switchyard_image(&dir, "a.tar", &[]);
    let contents = ImageContents::read(&image.archive);

    // Named for containerd (ctr, kind) and docker load, by the fully qualified name.
    let entry = &contents.index["manifests"][0];
    assert_eq!(entry["digest"], image.digest.as_str());
    assert_eq!(entry["annotations"]["io.containerd.image.name"], NAME);
    assert_eq!(entry["annotations"]["org.opencontainers.image.ref.name"], "test");
    let docker = &contents.docker_manifest[0];
    assert_eq!(docker["RepoTags"], json!([NAME]));
    let config_digest = contents.manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    assert_eq!(docker["Config"], format!("blobs/sha256/{}", &config_digest[7..]));
    for (layer, docker_layer) in contents.manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .zip(docker["Layers"].as_array().expect("docker layers"))
    {
        let digest = layer["digest"].as_str().expect("layer digest");
        assert_eq!(docker_layer, &format!("blobs/sha256/{}", &digest[7..]));
    }
    // Each layer's uncompressed digest is the config's diff_id (what docker load and containerd verify).
    let diff_ids = contents.config["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .clone();
    assert_eq!(
        diff_ids.len(),
        contents.manifest["layers"].as_array().expect("layers").len()
    );
    for (layer, diff_id) in contents.manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .zip(&diff_ids)
    {
        let blob = contents.blob(layer["digest"].as_str().expect("digest"));
        let out = run_ok(
            Command::new("sh")
                .arg("-c")
                .arg(format!("gzip -dc '{}' | sha256sum", blob.display())),
        );
        let sum = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            diff_id,
            &format!("sha256:{}", sum.split_whitespace().next().expect("sum"))
        );
    }

    let config = &contents.config["config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Entrypoint"], json!(["switchyard"]));
    assert_eq!(config["WorkingDir"], "/");
    assert_eq!(contents.config["os"], "linux");
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "switchyard");
    assert_eq!(labels["org.opencontainers.image.version"], "test");
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(labels["org.opencontainers.image.created"], "2023-11-14T22:13:20Z");
    assert_eq!(contents.config["created"], "2023-11-14T22:13:20Z");
    for label in ["description", "source", "revision"] {
        let value = labels[format!("org.opencontainers.image.{label}")]
            .as_str()
            .unwrap_or_default();
        assert!(!value.is_empty(), "label {label} missing: {labels}");
    }

    // The root filesystem: the binary, its libraries, certificates and the accounts; nothing else.
    let entries = contents.layer_entries();
    let files: BTreeSet<String> = entries
        .iter()
        .filter(|(mode, _, _)| mode.starts_with('-'))
        .map(|(_, _, path)| path.trim_start_matches("./").to_owned())
        .collect();
    let mut expected: BTreeSet<String> = ldd_paths(switchyard_binary());
    assert!(!expected.is_empty(), "the test binary is dynamically linked");
    for file in [
        "usr/local/bin/switchyard",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
        "etc/group",
        "etc/nsswitch.conf",
    ] {
        expected.insert(file.to_owned());
    }
    assert_eq!(files, expected);
    assert!(
        !entries
            .iter()
            .any(|(_, _, path)| path.ends_with("bin/sh") || path.ends_with("busybox"))
    );
    assert!(
        entries.iter().all(|(mode, _, _)| !mode.starts_with('l')),
        "no symlinks: {entries:?}"
    );
    let owners: BTreeSet<&str> = entries.iter().map(|(_, owner, _)| owner.as_str()).collect();
    assert!(
        owners.iter().all(|o| *o == "0/0" || *o == "65532/65532"),
        "{owners:?}"
    );
    let tmp = entries
        .iter()
        .find(|(_, _, path)| path.trim_start_matches("./") == "tmp")
        .expect("/tmp");
    assert_eq!(tmp.0, "drwxrwxrwt");

    let layer_dir = TempDir::new("rootfs");
    for layer in contents.manifest["layers"].as_array().expect("layers") {
        run_ok(
            Command::new("tar")
                .arg("-xzf")
                .arg(contents.blob(layer["digest"].as_str().expect("digest")))
                .arg("-C")
                .arg(layer_dir.path()),
        );
    }
    let passwd = std::fs::read_to_string(layer_dir.path().join("etc/passwd")).expect("passwd");
    assert!(
        passwd.lines().any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    assert!(
        passwd.lines().all(|l| l.ends_with(":/sbin/nologin")),
        "no login shells: {passwd}"
    );
    let group = std::fs::read_to_string(layer_dir.path().join("etc/group")).expect("group");
    assert!(
        group.lines().any(|l| l.starts_with("nonroot:x:65532:")),
        "{group}"
    );
    let binary = std::fs::read(layer_dir.path().join("usr/local/bin/switchyard")).expect("binary");
    assert_eq!(binary, std::fs::read(switchyard_binary()).expect("test binary"));

    // The Dockerfile lays out its image with `--rootfs`: the same files as this image's layer.
    let rootfs = TempDir::new("rootfs-only");
    let out = Command::new(support::image::image_script())
        .args(["--binary", switchyard_binary(), "--rootfs"])
        .arg(rootfs.path().join("fs"))
        .output()
        .expect("image.sh --rootfs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(regular_files(&rootfs.path().join("fs")), files);
}

/// Regular files under `root`, as paths relative to it.
fn regular_files(root: &std::path::Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let entry = entry.expect("dir entry");
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                let relative = entry.path().strip_prefix(root).expect("under root").to_owned();
                found.insert(relative.to_string_lossy().into_owned());
            }
        }
    }
    found
}

#[test]
fn same_binary_same_digest_and_a_new_version_a_new_one() {
    let dir = TempDir::new("imgrepro");
    let first = switchyard_image(&dir, "first.tar", &[]);
    let second = switchyard_image(&dir, "second.tar", &[]);
    assert_eq!(first.digest, second.digest);
    assert_eq!(
        std::fs::read(&first.archive).expect("first"),
        std::fs::read(&second.archive).expect("second"),
        "the archives are byte for byte the same"
    );
    let digest_file = std::fs::read_to_string(dir.path().join("first.tar.digest")).expect("digest file");
    assert_eq!(digest_file.trim(), first.digest);

    // A rollout needs a second digest, not a retag: a new version label makes a new image.
    let newer = switchyard_image(&dir, "newer.tar", &["--version", "test-2"]);
    assert_ne!(newer.digest, first.digest);
}

#[test]
fn short_and_malformed_names_are_refused() {
    let dir = TempDir::new("imgname");
    for bad in [
        "switchyard:1",
        "switchyard",
        "library/switchyard:1",
        "registry.local/switchyard",
    ] {
        let out = run_image_script(bad, &dir.path().join("x.tar"), &["--binary", switchyard_binary()]);
        assert!(!out.status.success(), "{bad} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("fully qualified") || stderr.contains("registry host"),
            "{bad}: {stderr}"
        );
    }
    assert!(!dir.path().join("x.tar").exists());
}

/// Waits until `address` accepts TCP connections.
fn wait_listening(address: &str, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(address).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {address} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `Uid:` of /proc/<pid>/status (real, effective, saved, fs).
fn uids(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line")
        .to_owned()
}

/// Mount options of the process's root mount, as it sees them.
fn root_mount_options(pid: u32) -> String {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let line = info
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .expect("a root mount");
    line.split_whitespace().nth(5).expect("mount options").to_owned()
}

#[test]
#[ignore = "needs root, containerd and runc: run with --ignored (scripts/test.sh does)"]
fn switchyard_image_runs_under_containerd_read_only_as_65532() {
    let dir = TempDir::new("imgrun");
    let image = switchyard_image(&dir, "sy.tar", &[]);
    let containerd = Containerd::start();
    let imported = containerd.import(&image.archive);
    assert!(imported.contains(NAME), "{imported}");
    let listed = String::from_utf8_lossy(&containerd.ctr(&["images", "ls", "-q"]).stdout).into_owned();
    assert!(listed.lines().any(|l| l == NAME), "{listed}");
    let digest = String::from_utf8_lossy(&containerd.ctr(&["images", "ls"]).stdout).into_owned();
    assert!(
        digest.contains(&image.digest),
        "imported under the built digest: {digest}"
    );

    let (tcp, ws, http) = (free_port(), free_port(), free_port());
    let mut ctr = containerd
        .ctr_command()
        .args([
            "run",
            "--rm",
            "--read-only",
            "--net-host",
            NAME,
            "sy-dev",
            "switchyard",
            "dev",
        ])
        .args([
            "--tcp",
            &format!("127.0.0.1:{tcp}"),
            "--ws",
            &format!("127.0.0.1:{ws}"),
        ])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ctr run");
    wait_listening(
        &format!("127.0.0.1:{tcp}"),
        Duration::from_secs(30),
        "switchyard dev in the container",
    );

    let pid = containerd.task_pid("sy-dev").expect("a running task");
    assert_eq!(uids(pid), "Uid:\t65532\t65532\t65532\t65532");
    let options = root_mount_options(pid);
    assert!(options.split(',').any(|o| o == "ro"), "root mounted {options}");
    let root = format!("/proc/{pid}/root");
    assert!(std::path::Path::new(&format!("{root}/usr/local/bin/switchyard")).exists());
    assert!(
        !std::path::Path::new(&format!("{root}/bin/sh")).exists(),
        "no shell in the image"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut conn = Conn::tcp(&format!("127.0.0.1:{tcp}"), Wire::DEFAULT).await;
        assert_eq!(
            conn.request(1, 1, json!({"message": "from a container"})).await,
            json!({"code": 0, "message": "from a container"})
        );
        let login = conn.request(2, 2, json!({"uid": 7, "name": "ctr"})).await;
        assert_eq!(login["code"], 0, "{login}");
    });

    // SIGTERM through containerd: the process drains and exits by itself, and ctr run returns its status.
    run_ok(
        containerd
            .ctr_command()
            .args(["tasks", "kill", "-s", "SIGTERM", "sy-dev"]),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = ctr.try_wait().expect("ctr run status") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the container did not stop on SIGTERM within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "switchyard dev exited with {status} on SIGTERM");
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: run with --ignored (scripts/test.sh does)"]
fn redis_image_runs_under_containerd_as_999() {
    let dir = TempDir::new("imgredis");
    let name = "registry.local/redis:test";
    let image = build_image(name, &dir.path().join("redis.tar"), &["--redis"]);
    let contents = ImageContents::read(&image.archive);
    assert_eq!(contents.config["config"]["User"], "999:999");
    assert_eq!(contents.config["config"]["Entrypoint"], json!(["redis-server"]));
    assert_eq!(contents.config["config"]["WorkingDir"], "/data");

    let containerd = Containerd::start();
    containerd.import(&image.archive);
    let port = free_port();
    // The operator's arguments for its managed Redis (operator/src/children.rs), on a read-only root.
    let mut ctr = containerd
        .ctr_command()
        .args([
            "run",
            "--rm",
            "--read-only",
            "--net-host",
            name,
            "sy-redis",
            "redis-server",
        ])
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--protected-mode", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ctr run");
    let address = format!("127.0.0.1:{port}");
    wait_listening(&address, Duration::from_secs(30), "redis-server in the container");
    let pid = containerd.task_pid("sy-redis").expect("a running task");
    assert_eq!(uids(pid), "Uid:\t999\t999\t999\t999");
    let pong = run_ok(Command::new("redis-cli").args(["-p", &port.to_string(), "ping"]));
    assert_eq!(String::from_utf8_lossy(&pong.stdout).trim(), "PONG");
    run_ok(
        containerd
            .ctr_command()
            .args(["tasks", "kill", "-s", "SIGTERM", "sy-redis"]),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctr.try_wait().expect("ctr status").is_none() {
        assert!(Instant::now() < deadline, "redis did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

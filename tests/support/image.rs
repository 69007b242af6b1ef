//! Container images for tests: building one with `scripts/image.sh`, reading the archive it writes, and a
//! private containerd (Debian's containerd + runc) to import and run it with `ctr`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use switchyard_testkit::TempDir;

/// `scripts/image.sh` in this checkout.
pub fn image_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/image.sh")
}

/// An archive written by `scripts/image.sh`.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub name: String,
    pub archive: PathBuf,
    pub digest: String,
}

/// Runs `scripts/image.sh ARGS --name NAME --out OUT --print-digest` with a fixed SOURCE_DATE_EPOCH and
/// returns its output, panicking with the script's stderr when it fails.
pub fn build_image(name: &str, out: &Path, args: &[&str]) -> BuiltImage {
    let output = run_image_script(name, out, args);
    assert!(
        output.status.success(),
        "scripts/image.sh {args:?} --name {name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let digest = String::from_utf8(output.stdout)
        .expect("utf-8 digest")
        .trim()
        .to_owned();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "digest {digest:?}"
    );
    BuiltImage {
        name: name.to_owned(),
        archive: out.to_owned(),
        digest,
    }
}

/// The script's raw output, for tests of its refusals.
pub fn run_image_script(name: &str, out: &Path, args: &[&str]) -> Output {
    Command::new(image_script())
        .args(args)
        .args(["--name", name, "--out"])
        .arg(out)
        .arg("--print-digest")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("scripts/image.sh runs")
}

/// The archive unpacked: its index, docker manifest, image manifest, config and the layer's file list.
pub struct ImageContents {
    pub dir: TempDir,
    pub index: serde_json::Value,
    pub docker_manifest: serde_json::Value,
    pub manifest: serde_json::Value,
    pub config: serde_json::Value,
}

impl ImageContents {
    pub fn read(archive: &Path) -> ImageContents {
        let dir = TempDir::new("img");
        run_ok(
            Command::new("tar")
                .arg("-xf")
                .arg(archive)
                .arg("-C")
                .arg(dir.path()),
        );
        let json = |path: &Path| -> serde_json::Value {
            let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let index = json(&dir.path().join("index.json"));
        let docker_manifest = json(&dir.path().join("manifest.json"));
        let manifest_digest = index["manifests"][0]["digest"].as_str().expect("manifest digest");
        let manifest = json(&blob_path(dir.path(), manifest_digest));
        let config = json(&blob_path(
            dir.path(),
            manifest["config"]["digest"].as_str().expect("config digest"),
        ));
        ImageContents {
            dir,
            index,
            docker_manifest,
            manifest,
            config,
        }
    }

    /// The blob file of `digest`.
    pub fn blob(&self, digest: &str) -> PathBuf {
        blob_path(self.dir.path(), digest)
    }

    /// `tar -tzv` of every layer: (mode string, owner, path) per entry.
    pub fn layer_entries(&self) -> Vec<(String, String, String)> {
        let mut entries = Vec::new();
        for layer in self.manifest["layers"].as_array().expect("layers") {
            let path = self.blob(layer["digest"].as_str().expect("layer digest"));
            let out = run_ok(Command::new("tar").args(["--numeric-owner", "-tzvf"]).arg(path));
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                if words.len() >= 6 {
                    let name = words[5..].join(" ");
                    entries.push((
                        words[0].to_owned(),
                        words[1].to_owned(),
                        name.trim_end_matches('/').to_owned(),
                    ));
                }
            }
        }
        entries
    }
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("sha256 digest"))
}

/// Runs a command, panicking with its output when it fails.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A containerd of the test's own (root, state and socket in a temp dir; no CRI plugin), killed when
/// dropped. Needs root, Debian's `containerd` and `runc`.
pub struct Containerd {
    child: Child,
    pub dir: TempDir,
    pub socket: PathBuf,
}

impl Containerd {
    pub fn start() -> Containerd {
        let dir = TempDir::new("ctd");
        let socket = dir.path().join("c.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{socket}\"\n",
                root = dir.path().join("root").display(),
                state = dir.path().join("state").display(),
                socket = socket.display(),
            ),
        )
        .expect("containerd config");
        let log = std::fs::File::create(dir.path().join("containerd.log")).expect("containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd starts (Debian package containerd)");
        let containerd = Containerd { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !containerd.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within 20 s: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    /// A `ctr` command against this containerd, in namespace `k8s.io` (the one the kubelet and kind use).
    pub fn ctr_command(&self) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io"]);
        command
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command().args(args).output().expect("ctr runs")
    }

    /// Imports an archive the way `kind load image-archive` does: from stdin, every platform, by digest.
    pub fn import(&self, archive: &Path) -> String {
        let file = std::fs::File::open(archive).expect("archive");
        let out = run_ok(
            self.ctr_command()
                .args([
                    "images",
                    "import",
                    "--all-platforms",
                    "--digests",
                    "--snapshotter",
                    "overlayfs",
                    "-",
                ])
                .stdin(file),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The host pid of a running task.
    pub fn task_pid(&self, id: &str) -> Option<u32> {
        let out = self.ctr(&["tasks", "ls"]);
        String::from_utf8_lossy(&out.stdout).lines().find_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (words.first() == Some(&id) && words.get(2) == Some(&"RUNNING")).then(|| words[1].parse().ok())?
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks first, so no runc shim outlives the test.
        let tasks = self.ctr(&["tasks", "ls", "-q"]);
        for id in String::from_utf8_lossy(&tasks.stdout).split_whitespace() {
            let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
            let _ = self.ctr(&["tasks", "delete", "-f", id]);
            let _ = self.ctr(&["containers", "delete", id]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshots are overlay mounts under root/: unmount whatever is left before the directory goes.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let root = self.dir.path().to_string_lossy().into_owned();
            for mount in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
                if mount.starts_with(&root) {
                    let _ = Command::new("umount").arg(mount).status();
                }
            }
        }
    }
}

//! The per-run directory: every process's log, the certificates, kubeconfigs and the pods' files of one
//! test run. It is kept after the run (its path is printed); when a new run starts, only the oldest runs
//! beyond [`KEEP_RUNS`] are removed, so the directory stays bounded.
//!
//! Layout: `<runs>/<test>-<UTC time>-<pid>/` with `harness.log`, `control-plane/` (`pki/`, `*.kubeconfig`,
//! one `*.log` per process) and `pods/<namespace>_<pod>/` (one `<container>.log` per container, the
//! materialised volumes). `<runs>` is `SWITCHYARD_E2E_RUNS`, or `e2e-runs/` in Cargo's target directory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use crate::Error;

/// How many run directories are kept (the newest ones).
pub const KEEP_RUNS: usize = 20;

/// One test run's directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates a new run directory for `test` under the runs directory, pruning the oldest runs.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn create(test: &str) -> Result<RunDir, Error> {
        let runs = runs_dir()?;
        std::fs::create_dir_all(&runs).map_err(Error::io(format!("create {}", runs.display())))?;
        prune(&runs, KEEP_RUNS.saturating_sub(1));
        let stamp = k8s_openapi::jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S");
        let safe: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = runs.join(format!("{safe}-{stamp}-{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(Error::io(format!("create {}", path.display())))?;
        Ok(RunDir { path })
    }

    /// An existing run directory (the one a parent process created).
    pub fn existing(path: PathBuf) -> RunDir {
        RunDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Installs a tracing subscriber (once per process) that writes to stderr and `harness.log`, filtered by
    /// `SWITCHYARD_E2E_LOG` (default `info,kube_client=off`: the client logs every failed readiness poll as an
    /// error; the harness reports the errors that matter itself).
    pub fn init_tracing(&self) {
        static ONCE: Once = Once::new();
        let log = self.path.join("harness.log");
        ONCE.call_once(|| {
            use tracing_subscriber::fmt::writer::MakeWriterExt as _;
            let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_E2E_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=off"));
            let builder = tracing_subscriber::fmt().with_env_filter(filter);
            let result = match std::fs::File::create(&log) {
                Ok(file) => builder
                    .with_writer(std::io::stderr.and(Arc::new(file)))
                    .with_ansi(false)
                    .try_init(),
                Err(_) => builder.with_writer(std::io::stderr).try_init(),
            };
            // Another subscriber (a test's own) is fine: ours is then not needed.
            drop(result);
        });
    }
}

/// Where run directories live.
fn runs_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("SWITCHYARD_E2E_RUNS") {
        return Ok(PathBuf::from(dir));
    }
    Ok(target_profile_dir()?
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("e2e-runs"))
}

/// Cargo's profile directory (`target/debug`) of the running test binary (`target/debug/deps/<test>-<hash>`).
pub(crate) fn target_profile_dir() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(Error::io("find the test binary"))?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::Setup(format!("{} is not in a Cargo target directory", exe.display())))
}

/// Removes the oldest run directories so that at most `keep` remain (names sort by time within a test;
/// modification time orders across tests).
fn prune(runs: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .collect();
    if dirs.len() <= keep {
        return;
    }
    dirs.sort();
    let excess = dirs.len() - keep;
    for (_, dir) in dirs.into_iter().take(excess) {
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            eprintln!("switchyard-e2e: cannot prune {}: {error}", dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_newest() {
        let root = std::env::temp_dir().join(format!("switchyard-e2e-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for i in 0..5 {
            std::fs::create_dir_all(root.join(format!("run-{i}"))).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(15));
        }
        prune(&root, 2);
        let mut left: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["run-3", "run-4"]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}

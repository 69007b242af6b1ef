//! Where the tools come from: the workspace root, the control-plane toolchain (`e2e/toolchain/build.sh`)
//! and programs on PATH, each missing one a failure that says how to get it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// What to do when a toolchain binary is missing.
pub const HOW_TO_BUILD: &str = "build them with `e2e/toolchain/build.sh` (about 19 minutes the first \
     time, then instant) or run `scripts/test.sh`, which does it first; SWITCHYARD_K8S_BIN may point at \
     another directory holding them";

/// The workspace root.
pub fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The toolchain's bin dir: `SWITCHYARD_K8S_BIN`, else what `e2e/toolchain/build.sh --print-bin-dir`
/// reports (it builds nothing).
///
/// # Errors
/// When the script cannot run or reports no directory.
pub fn toolchain_bin_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("SWITCHYARD_K8S_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let script = workspace().join("e2e/toolchain/build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg("--print-bin-dir")
        .output()
        .map_err(Error::io(format!("run {} --print-bin-dir", script.display())))?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.lines().last() {
        Some(line) if output.status.success() && !line.trim().is_empty() => Ok(PathBuf::from(line.trim())),
        _ => Err(Error::Setup(format!(
            "{} --print-bin-dir failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
    }
}

/// A toolchain binary (etcd, kube-apiserver, kubectl, helm, ...).
///
/// # Panics
/// When it is missing; the message says how to build it.
pub fn tool(name: &str) -> PathBuf {
    let dir = toolchain_bin_dir().unwrap_or_else(|error| panic!("{error}"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{name} is missing: expected {}; {HOW_TO_BUILD}",
        path.display()
    );
    path
}

/// A program on PATH.
///
/// # Panics
/// When it is not there; the message ends with `how_to_get` (e.g. "install it (Debian package `x`)").
pub fn on_path(program: &str, how_to_get: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| panic!("{program} is not on PATH: {how_to_get}"))
}

//! helm from the toolchain, with its cache, config and data in a private directory (the user's helm setup
//! is never read or touched), run from the workspace root so that `charts/switchyard` resolves.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{TempDir, tool, workspace};

/// The toolchain's helm with a private home.
#[derive(Debug)]
pub struct Helm {
    bin: PathBuf,
    home: TempDir,
}

impl Helm {
    /// helm from the toolchain.
    ///
    /// # Panics
    /// When helm is missing (the message says how to build it).
    pub fn new() -> Helm {
        Helm {
            bin: tool("helm"),
            home: TempDir::new("helm-home"),
        }
    }

    /// A helm command with the private home, in the workspace root, stdin closed.
    pub fn cmd(&self) -> Command {
        let mut command = Command::new(&self.bin);
        let home = self.home.path();
        command
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .stdin(Stdio::null())
            .current_dir(workspace());
        command
    }

    /// `helm template ARGS...`: the rendered manifest.
    ///
    /// # Panics
    /// When helm fails; the message carries its output.
    pub fn template(&self, args: &[&str]) -> String {
        let mut command = self.cmd();
        command.arg("template").args(args);
        let out = command
            .output()
            .unwrap_or_else(|error| panic!("cannot run helm template {args:?}: {error}"));
        assert!(
            out.status.success(),
            "helm template {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Default for Helm {
    fn default() -> Self {
        Helm::new()
    }
}

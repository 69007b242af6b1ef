//! Child processes of the harness (control-plane binaries and pod containers).
//!
//! Each runs in a process group of its own (so a signal reaches whatever it spawned, and a terminal's
//! Ctrl-C does not), with an explicit environment, stdin closed and stdout and stderr appended to one log
//! file, which starts with a header line naming the command. Dropping a [`Process`] that has not been
//! reaped sends SIGKILL to its group, so a panicking test leaves nothing running.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal as RawSignal, kill_process_group};

use crate::Error;

/// What to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// A name for logs and errors.
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its whole environment (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// Its working directory.
    pub cwd: PathBuf,
    /// The log file (appended to).
    pub log: PathBuf,
}

/// Signals the harness sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: please stop.
    Term,
    /// SIGKILL: stop now.
    Kill,
}

/// Sends signals to one process group; copyable so it can be used while the [`Process`] is being awaited.
#[derive(Debug, Clone, Copy)]
pub struct Killer {
    group: Option<Pid>,
}

impl Killer {
    /// Sends `signal` to the whole process group. A group that is already gone is not an error.
    pub fn signal(self, signal: Signal) {
        let Some(group) = self.group else { return };
        let raw = match signal {
            Signal::Term => RawSignal::TERM,
            Signal::Kill => RawSignal::KILL,
        };
        match kill_process_group(group, raw) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(error) => tracing::warn!(group = group.as_raw_nonzero().get(), %error, "kill failed"),
        }
    }
}

/// A running (or exited) child process.
pub struct Process {
    name: String,
    log: PathBuf,
    child: tokio::process::Child,
    killer: Killer,
    pid: u32,
    status: Option<ExitStatus>,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("status", &self.status)
            .finish()
    }
}

/// How a process ended after [`Process::stop`].
#[derive(Debug, Clone, Copy)]
pub struct Stopped {
    /// Its exit status.
    pub status: ExitStatus,
    /// Whether it had to be killed because it outlived the grace period.
    pub killed: bool,
    /// How long it took from SIGTERM to exit.
    pub took: Duration,
}

impl Process {
    /// Starts `spec` in a new process group.
    ///
    /// # Errors
    /// When the log cannot be opened or the program cannot be started.
    pub fn spawn(spec: &Spec) -> Result<Process, Error> {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(Error::io(format!("open {}", spec.log.display())))?;
        let header = format!(
            "=== {} start: {} {}\n",
            k8s_openapi::jiff::Timestamp::now(),
            spec.program.display(),
            spec.args.join(" ")
        );
        log.write_all(header.as_bytes())
            .map_err(Error::io(format!("write {}", spec.log.display())))?;
        let stderr = log
            .try_clone()
            .map_err(Error::io(format!("clone {}", spec.log.display())))?;
        let child = tokio::process::Command::new(&spec.program)
            .args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io(format!(
                "start {} ({})",
                spec.name,
                spec.program.display()
            )))?;
        let pid = child.id().unwrap_or(0);
        let group = i32::try_from(pid).ok().and_then(Pid::from_raw);
        Ok(Process {
            name: spec.name.clone(),
            log: spec.log.clone(),
            child,
            killer: Killer { group },
            pid,
            status: None,
        })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// A handle that signals this process's group.
    pub fn killer(&self) -> Killer {
        self.killer
    }

    /// Waits for the process to exit (at once if it has).
    ///
    /// # Errors
    /// When waiting fails (not expected for a child of this process).
    pub async fn wait(&mut self) -> Result<ExitStatus, Error> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self
            .child
            .wait()
            .await
            .map_err(Error::io(format!("wait for {}", self.name)))?;
        self.status = Some(status);
        Ok(status)
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// SIGTERM to the group, up to `grace` for the process to exit, then SIGKILL.
    ///
    /// # Errors
    /// When waiting fails.
    pub async fn stop(&mut self, grace: Duration) -> Result<Stopped, Error> {
        let started = Instant::now();
        if let Some(status) = self.try_wait() {
            return Ok(Stopped {
                status,
                killed: false,
                took: Duration::ZERO,
            });
        }
        self.killer.signal(Signal::Term);
        let killed = match tokio::time::timeout(grace, self.wait()).await {
            Ok(result) => {
                result?;
                false
            }
            Err(_) => {
                self.killer.signal(Signal::Kill);
                true
            }
        };
        let status = self.wait().await?;
        // Anything the process left in its group goes too.
        self.killer.signal(Signal::Kill);
        Ok(Stopped {
            status,
            killed,
            took: started.elapsed(),
        })
    }

    /// The last `lines` lines of the log (for error messages).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            self.killer.signal(Signal::Kill);
        }
    }
}

/// The last `lines` lines of a text file (at most 64 KiB are read).
pub fn tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = Vec::new();
    use std::io::{Read as _, Seek as _, SeekFrom};
    if file.seek(SeekFrom::Start(len.saturating_sub(MAX))).is_err()
        || file.take(MAX).read_to_end(&mut buf).is_err()
    {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A human-readable exit status: `exit code 1`, `signal 9 (SIGKILL)`.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(9)) => "signal 9 (SIGKILL)".into(),
        (None, Some(15)) => "signal 15 (SIGTERM)".into(),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, script: &str) -> Spec {
        Spec {
            name: "sh".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
            cwd: dir.to_path_buf(),
            log: dir.join("sh.log"),
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("switchyard-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn logs_env_and_exit_status() {
        let dir = temp("proc-log");
        let mut p = Process::spawn(&spec(&dir, "echo \"$GREETING [$HOME]\"; echo oops >&2; exit 3")).unwrap();
        let status = p.wait().await.unwrap();
        assert_eq!(describe(status), "exit code 3");
        let log = std::fs::read_to_string(dir.join("sh.log")).unwrap();
        assert!(log.starts_with("=== "), "{log}");
        assert!(
            log.contains("hello []\n"),
            "env is explicit, HOME is not inherited: {log}"
        );
        assert!(log.contains("oops"), "{log}");
        assert_eq!(p.log_tail(1), "oops");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn stop_sends_sigterm_then_sigkill() {
        let dir = temp("proc-stop");
        let mut polite =
            Process::spawn(&spec(&dir, "trap 'exit 0' TERM; while :; do sleep 0.05; done")).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stopped = polite.stop(Duration::from_secs(5)).await.unwrap();
        assert!(!stopped.killed);
        assert!(stopped.status.success());

        let mut stubborn = Process::spawn(&spec(&dir, "trap '' TERM; while :; do sleep 0.05; done")).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stopped = stubborn.stop(Duration::from_millis(300)).await.unwrap();
        assert!(stopped.killed);
        assert_eq!(describe(stopped.status), "signal 9 (SIGKILL)");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn drop_kills_the_group() {
        let dir = temp("proc-drop");
        let p = Process::spawn(&spec(&dir, "sleep 30 & echo $! > child.pid; wait")).unwrap();
        let pid = p.pid();
        let child_pid = loop {
            if let Ok(text) = std::fs::read_to_string(dir.join("child.pid"))
                && let Ok(pid) = text.trim().parse::<u32>()
            {
                break pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        drop(p);
        tokio::time::sleep(Duration::from_millis(300)).await;
        for pid in [pid, child_pid] {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for its parent.
            assert!(
                stat.is_empty() || stat.contains(") Z "),
                "{pid} still runs: {stat}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

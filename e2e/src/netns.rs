//! How an e2e test gets into its own network namespace.
//!
//! The API server refuses a loopback advertise address, so the control plane and the node need an ordinary
//! address. Each test therefore runs inside
//! namespaces of its own, made by `unshare --net --pid --mount-proc --fork --kill-child`:
//!
//! - **net**: a private loopback device with [`NODE_ADDRESS`]`/16` on it. The control plane and the
//!   node's kubelet and kube-proxy bind to [`NODE_ADDRESS`]; pods get network namespaces of their own on
//!   the node's CNI bridge (see [`crate::node`]). Nothing is reachable from outside, nothing inside can
//!   reach out (there is no other interface), and fixed ports cannot clash with anything on the host.
//! - **pid**: the test process is the namespace's init, so when it exits (passed, panicked, killed) the
//!   kernel kills every process left in the namespace: no control plane or pod outlives its test.
//! - **mount** (needed for a private `/proc`): mounts made inside stay inside.
//!
//! [`isolate`] does this transparently: called first in a test, outside the namespace it runs the same test
//! again (the same binary, `--exact <test>`) in a child inside new namespaces, waits for it (bounded by
//! `SWITCHYARD_E2E_TIMEOUT` seconds, default 900) and reports its result; inside, it brings the loopback
//! device up, adds the address and returns the run directory. Cargo itself never runs inside (it needs the
//! network), only the already built test binary. Creating namespaces needs root (or CAP_SYS_ADMIN).

use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Error, RunDir};

/// The node's (and the control plane's) address inside the namespace.
pub const NODE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The prefix length of the range on the loopback device (`10.244.0.0/16`).
pub const PREFIX_LEN: u8 = 16;
/// Set (to `1`) in the child that runs inside the namespace.
pub const INSIDE_ENV: &str = "SWITCHYARD_E2E_NETNS";
/// The run directory the parent created, passed to the child.
pub const RUN_DIR_ENV: &str = "SWITCHYARD_E2E_RUN_DIR";
/// Overall time limit of one isolated test, in seconds.
pub const TIMEOUT_ENV: &str = "SWITCHYARD_E2E_TIMEOUT";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);
/// The file that keeps the child's output (also echoed, indented, to the test's stderr).
const TEST_LOG: &str = "test-output.log";
/// The file the child writes once it is inside, so the parent knows the test really ran there.
const MARKER: &str = "isolated.ok";

/// Puts the calling test into its own namespaces.
///
/// Must be called from a libtest test thread (its name is the test's name). Returns `Ok(Some(run))` when
/// the caller is inside (go on with the test), `Ok(None)` when the caller is outside and the same test has
/// just passed inside a child (return at once).
///
/// # Errors
/// Outside: when `unshare` cannot be run, the child fails, times out, or did not run the test. Inside: when
/// the loopback device cannot be configured.
pub fn isolate() -> Result<Option<RunDir>, Error> {
    let test = std::thread::current()
        .name()
        .filter(|name| *name != "main")
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::Setup(
                "isolate() must be called from a #[test] (libtest names the thread after the test)".into(),
            )
        })?;
    if std::env::var_os(INSIDE_ENV).is_some() {
        let run = match std::env::var_os(RUN_DIR_ENV) {
            Some(dir) => RunDir::existing(PathBuf::from(dir)),
            None => RunDir::create(&test)?,
        };
        setup_loopback()?;
        std::fs::write(run.path().join(MARKER), &test).map_err(Error::io("write the isolation marker"))?;
        return Ok(Some(run));
    }
    let run = RunDir::create(&test)?;
    run_isolated(&test, &run)?;
    Ok(None)
}

/// Runs `test` of the current binary in a child inside new namespaces.
fn run_isolated(test: &str, run: &RunDir) -> Result<(), Error> {
    let exe = std::env::current_exe().map_err(Error::io("find the test binary"))?;
    let timeout = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    eprintln!(
        "switchyard-e2e: running {test} in new network/pid/mount namespaces; logs in {}",
        run.path().display()
    );
    let mut child = Command::new("unshare")
        .args(["--net", "--pid", "--mount-proc", "--fork", "--kill-child"])
        .arg("--")
        .arg(&exe)
        .args([
            "--exact",
            test,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INSIDE_ENV, "1")
        .env(RUN_DIR_ENV, run.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            Error::Setup(format!(
                "cannot run `unshare` ({error}): install util-linux and run the e2e tests as root"
            ))
        })?;
    let log = std::fs::File::create(run.path().join(TEST_LOG))
        .map(|file| Arc::new(Mutex::new(file)))
        .map_err(Error::io("create the test log"))?;
    let panics = Arc::new(Mutex::new(PanicMessages::default()));
    let echo: Vec<std::thread::JoinHandle<()>> = [
        child
            .stdout
            .take()
            .map(|out| Box::new(out) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|err| Box::new(err) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        let (log, panics) = (log.clone(), panics.clone());
        std::thread::spawn(move || echo_lines(stream, &log, &panics))
    })
    .collect();
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => std::thread::sleep(Duration::from_millis(200)),
            Ok(None) => {
                // unshare's death kills the child (--kill-child), the init of the pid namespace, and with
                // it every process inside.
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout {
                    what: format!("{test} inside the namespace (logs: {})", run.path().display()),
                    after: timeout,
                });
            }
            Err(source) => {
                let _ = child.kill();
                return Err(Error::Io {
                    what: "wait for the isolated test".into(),
                    source,
                });
            }
        }
    };
    for thread in echo {
        let _ = thread.join();
    }
    eprintln!(
        "switchyard-e2e: {test} finished in {:.1}s ({status}); logs in {}",
        started.elapsed().as_secs_f64(),
        run.path().display()
    );
    if !status.success() {
        let panics = panics.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        return Err(Error::Isolated {
            status: status.to_string(),
            run_dir: run.path().to_path_buf(),
            panics: panics.summary(),
        });
    }
    if !run.path().join(MARKER).exists() {
        return Err(Error::Setup(format!(
            "the child passed without running {test} inside the namespace (is it a top-level #[test]?)"
        )));
    }
    Ok(())
}

/// The panic messages the child printed, kept so that the failure's cause is repeated at the end of the
/// output (a long run's output is often read from its tail, cut in the middle).
#[derive(Debug, Default)]
struct PanicMessages {
    /// The messages, oldest first, at most [`PanicMessages::KEPT`] of them.
    messages: Vec<String>,
    /// Whether the lines being read belong to a panic message.
    in_message: bool,
}

impl PanicMessages {
    /// The newest messages kept, and the lines and bytes kept of each.
    const KEPT: usize = 3;
    const LINES: usize = 30;
    const BYTES: usize = 4096;

    /// Takes one line of the child's output. A message starts at libtest's `thread '…' panicked at` line
    /// and ends before the backtrace, its hint, or a blank line.
    fn line(&mut self, text: &str) {
        if text.starts_with("thread '") && text.contains(" panicked at ") {
            if self.messages.len() == Self::KEPT {
                self.messages.remove(0);
            }
            self.messages.push(text.to_string());
            self.in_message = true;
            return;
        }
        if !self.in_message {
            return;
        }
        let ends = text.is_empty() || text.starts_with("stack backtrace:") || text.starts_with("note: ");
        let Some(message) = self.messages.last_mut() else {
            return;
        };
        if ends || message.lines().count() >= Self::LINES || message.len() + text.len() > Self::BYTES {
            self.in_message = false;
            return;
        }
        message.push('\n');
        message.push_str(text);
    }

    /// The messages for an error, or a hint where there were none (a crash, a kill).
    fn summary(&self) -> String {
        if self.messages.is_empty() {
            return "no panic message in its output".into();
        }
        self.messages.join("\n---\n")
    }
}

/// Copies the child's output lines to the test log and to this test's stderr, indented so that the child's
/// own `test result:` line is not mistaken for this test's, and notes its panic messages.
fn echo_lines(stream: Box<dyn Read + Send>, log: &Mutex<std::fs::File>, panics: &Mutex<PanicMessages>) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches('\n');
                eprintln!("  | {text}");
                panics
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .line(text);
                let mut file = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let _ = writeln!(file, "{text}");
            }
        }
    }
}

/// Brings `lo` up and adds [`NODE_ADDRESS`]`/`[`PREFIX_LEN`] (idempotent), then checks that the address can
/// be bound.
fn setup_loopback() -> Result<(), Error> {
    ip(&["link", "set", "lo", "up"])?;
    let cidr = format!("{NODE_ADDRESS}/{PREFIX_LEN}");
    if !ip_output(&["-4", "addr", "show", "dev", "lo"])?.contains(&cidr) {
        ip(&["addr", "add", &cidr, "dev", "lo"])?;
    }
    std::net::TcpListener::bind((NODE_ADDRESS, 0))
        .map(drop)
        .map_err(Error::io(format!("bind {NODE_ADDRESS} inside the namespace")))
}

/// Runs `ip ARGS`, failing with its stderr.
pub(crate) fn ip(args: &[&str]) -> Result<(), Error> {
    ip_output(args).map(drop)
}

fn ip_output(args: &[&str]) -> Result<String, Error> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| Error::Setup(format!("cannot run `ip` ({error}): install iproute2")))?;
    if !output.status.success() {
        return Err(Error::Setup(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether this process runs inside the e2e namespace (set up by [`isolate`]).
pub fn inside() -> bool {
    std::env::var_os(INSIDE_ENV).is_some()
}

#[cfg(test)]
mod tests {
    use super::PanicMessages;

    #[test]
    fn panic_messages_are_kept_without_their_backtraces_newest_three() {
        let mut panics = PanicMessages::default();
        assert_eq!(panics.summary(), "no panic message in its output");
        for n in 0..4 {
            for line in [
                "[journey 1.0s] a step",
                &format!("thread 'journey' (7) panicked at e2e/tests/journey.rs:{n}:5:"),
                "assertion failed: logins",
                "  left: 1",
                "stack backtrace:",
                "   0: rust_begin_unwind",
            ] {
                panics.line(line);
            }
        }
        let summary = panics.summary();
        assert!(!summary.contains("journey.rs:0:"), "{summary}");
        assert_eq!(
            summary.matches("assertion failed: logins\n  left: 1").count(),
            3,
            "{summary}"
        );
        assert!(
            !summary.contains("rust_begin_unwind") && !summary.contains("a step"),
            "{summary}"
        );
    }
}

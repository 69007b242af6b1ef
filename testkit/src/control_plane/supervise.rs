//! Control-plane processes under a small supervisor script each: the script runs the process (output to
//! its log) until the script's stdin closes, then stops it (SIGTERM, SIGKILL after 10 s). Its stdin is a
//! pipe from the test process, so it closes when the control plane is stopped or dropped, and also when
//! the test binary exits or is killed: nothing outlives the tests, not even a control plane shared in a
//! `static` that is never dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::Error;

const SCRIPT: &str = r#"#!/usr/bin/env bash
# supervise.sh LOG PIDFILE CMD...: runs CMD (output to LOG, pid to PIDFILE) until this script's stdin closes,
# then stops it: SIGTERM, and SIGKILL after 10 s.
log="$1"; pidfile="$2"; shift 2
"$@" </dev/null >>"$log" 2>&1 &
pid=$!
echo "$pid" >"$pidfile"
read -r _ || true
kill -TERM "$pid" 2>/dev/null
for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.2; done
kill -KILL "$pid" 2>/dev/null
"#;

/// Writes the supervisor script into `dir`.
pub(super) fn install(dir: &Path) -> Result<(), Error> {
    let path = dir.join("supervise.sh");
    std::fs::write(&path, SCRIPT).map_err(Error::io(format!("write {}", path.display())))
}

/// One supervised process.
#[derive(Debug)]
pub(super) struct Supervised {
    pub(super) name: String,
    wrapper: Child,
    stdin: Option<ChildStdin>,
    pub(super) log: PathBuf,
    pidfile: PathBuf,
}

impl Supervised {
    /// Starts `program args` under the script in `dir` (`<dir>/<name>.log`, `<dir>/<name>.pid`).
    pub(super) fn start(
        dir: &Path,
        name: &str,
        program: &Path,
        args: &[String],
    ) -> Result<Supervised, Error> {
        let log = dir.join(format!("{name}.log"));
        let pidfile = dir.join(format!("{name}.pid"));
        let mut wrapper = Command::new("bash")
            .arg(dir.join("supervise.sh"))
            .arg(&log)
            .arg(&pidfile)
            .arg(program)
            .args(args)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Error::io(format!("start {name} ({})", program.display())))?;
        let stdin = wrapper.stdin.take();
        Ok(Supervised {
            name: name.to_owned(),
            wrapper,
            stdin,
            log,
            pidfile,
        })
    }

    /// Whether the process still runs (true while the script has not started it yet).
    pub(super) fn alive(&mut self) -> bool {
        if matches!(self.wrapper.try_wait(), Ok(Some(_))) {
            return false;
        }
        let Ok(pid) = std::fs::read_to_string(&self.pidfile) else {
            return true;
        };
        // Running unless gone or a zombie (state `Z` after the command's closing parenthesis).
        std::fs::read_to_string(Path::new("/proc").join(pid.trim()).join("stat")).is_ok_and(|stat| {
            !stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
    }

    /// The last `lines` lines of the log, headed by its path.
    pub(super) fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "----- last lines of {} -----\n{}",
            self.log.display(),
            all[start..].join("\n")
        )
    }

    /// Tells the script to stop the process (without waiting).
    pub(super) fn signal_stop(&mut self) {
        drop(self.stdin.take());
    }

    /// Stops the process and waits for the script (at most about 10 s).
    pub(super) fn stop(&mut self) {
        self.signal_stop();
        let _ = self.wrapper.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

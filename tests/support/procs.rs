//! Real processes for multi-process tests: redis-server and `switchyard gate` / `switchyard node`, each
//! with its log in a temporary directory (printed when a test fails), killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use switchyard_testkit::{TempDir, free_port};

/// A process's resident set and its peak, in KiB, from /proc.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("status field")
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A child process with its log file.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, program: &str, args: &[String], dir: &std::path::Path) -> Proc {
        Self::spawn_env(name, program, args, &[], dir)
    }

    /// [`Proc::spawn`] with extra environment variables (secrets go there, as in a pod, not in flags).
    pub fn spawn_env(
        name: &str,
        program: &str,
        args: &[String],
        env: &[(&str, &str)],
        dir: &std::path::Path,
    ) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .env("SWITCHYARD_LOG", "info,switchyard_gate=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {program}: {error}"));
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {}", self.name);
    }

    /// Waits for the process to exit; `None` if it is still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- log of {} ({}) -----\n{}",
                self.name,
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// How a test's redis-server is locked: a password (`--requirepass`), TLS only (`--port 0 --tls-port`) with
/// a certificate and key in PEM files.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    pub password: Option<String>,
    /// (certificate, key) PEM files, e.g. of [`super::certs::Certs`].
    pub tls: Option<(PathBuf, PathBuf)>,
    /// More configuration, as redis-server arguments (e.g. `--user NAME on >PASSWORD ~KEYS &CHANNELS +@all`).
    pub extra: Vec<String>,
}

/// A real redis-server on a free port.
pub struct Redis {
    pub port: u16,
    pub proc: Proc,
    dir: PathBuf,
    options: RedisOptions,
}

impl Redis {
    pub fn start(dir: &std::path::Path) -> Redis {
        Self::start_on(free_port(), dir)
    }

    pub fn start_on(port: u16, dir: &std::path::Path) -> Redis {
        Self::start_with(port, dir, RedisOptions::default())
    }

    pub fn start_with(port: u16, dir: &std::path::Path, options: RedisOptions) -> Redis {
        let found = Command::new("redis-server").arg("--version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "redis-server is not installed: run scripts/redis.sh (scripts/test.sh does)"
        );
        let mut args: Vec<String> = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        match &options.tls {
            None => args.extend(["--port".to_owned(), port.to_string()]),
            Some((cert, key)) => {
                let cert = cert.display().to_string();
                args.extend([
                    "--port".to_owned(),
                    "0".to_owned(),
                    "--tls-port".to_owned(),
                    port.to_string(),
                    "--tls-cert-file".to_owned(),
                    cert.clone(),
                    "--tls-key-file".to_owned(),
                    key.display().to_string(),
                    // Required by redis-server even when clients present no certificate.
                    "--tls-ca-cert-file".to_owned(),
                    cert,
                    "--tls-auth-clients".to_owned(),
                    "no".to_owned(),
                ]);
            }
        }
        if let Some(password) = &options.password {
            args.extend(["--requirepass".to_owned(), password.clone()]);
        }
        args.extend(options.extra.iter().cloned());
        let proc = Proc::spawn(&format!("redis-{port}"), "redis-server", &args, dir);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            port,
            proc,
            dir: dir.to_owned(),
            options,
        }
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://` with TLS; never with the password (it goes in
    /// `SWITCHYARD_LOCATOR_PASSWORD`).
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and starts a new, empty one on the same port after `down_for`.
    pub fn restart(&mut self, down_for: Duration) {
        self.proc.signal("KILL");
        self.proc.wait_exit(Duration::from_secs(5));
        std::thread::sleep(down_for);
        let replacement = Redis::start_with(self.port, &self.dir, self.options.clone());
        let Redis { proc, .. } = replacement;
        self.proc = proc;
    }
}

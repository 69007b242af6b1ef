//! The binary as the image runs it: unprivileged, on a read-only root filesystem, with its documented
//! `SWITCHYARD_*` variables only.

use super::*;

/// The effective uid of this process.
fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
        .expect("a Uid line in /proc/self/status")
}

fn echo(address: &str, message: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap_or_else(|error| panic!("connect {address}: {error}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let payload = serde_json::json!({ "message": message }).to_string();
    // | size u32 | header u8 | route i16 | seq i16 | payload |, big-endian.
    let mut packet = Vec::new();
    packet.extend_from_slice(&(1 + 2 + 2 + payload.len() as u32).to_be_bytes());
    packet.push(0);
    packet.extend_from_slice(&1i16.to_be_bytes());
    packet.extend_from_slice(&7i16.to_be_bytes());
    packet.extend_from_slice(payload.as_bytes());
    stream.write_all(&packet).expect("send the packet");
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("response size");
    let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).expect("response body");
    assert_eq!(body[0], 0, "a data packet");
    assert_eq!(&body[1..5], &[0, 1, 0, 7], "route 1 and seq 7 come back");
    String::from_utf8_lossy(&body[5..]).into_owned()
}

/// `switchyard dev` as the image runs it: uid/gid 65532, no new privileges, read-only root filesystem,
/// a read-only working directory, and an environment of documented `SWITCHYARD_*` variables only (no PATH,
/// HOME or TMPDIR). It must serve /healthz, /readyz, /metrics and a client, and exit 0 on SIGTERM.
#[cfg(target_os = "linux")]
#[test]
fn binary_runs_unprivileged_read_only_with_documented_env_only() {
    use std::os::unix::fs::PermissionsExt as _;

    let binary = env!("CARGO_BIN_EXE_switchyard");
    let cwd = TempDir::new("read-only-cwd");
    std::fs::set_permissions(cwd.path(), std::fs::Permissions::from_mode(0o555)).expect("chmod 0555");

    let root = euid() == 0;
    let mut command;
    let mut read_only_root = false;
    if root {
        // Drop to the image's user; make the root filesystem read-only in a private mount namespace when
        // this environment allows one (a container without CAP_SYS_ADMIN does not).
        let setpriv = on_path("setpriv", "install it (Debian package `util-linux`)");
        let unshare = on_path("unshare", "install it (Debian package `util-linux`)");
        let sh = on_path("sh", "install it (Debian package `dash`)");
        let mount = on_path("mount", "install it (Debian package `mount`)");
        read_only_root = Command::new(&unshare)
            .args(["--mount", "--propagation", "private", "--"])
            .arg(&mount)
            .args(["-o", "remount,bind,ro", "/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        let drop_privileges = [
            setpriv.as_os_str(),
            "--reuid=65532".as_ref(),
            "--regid=65532".as_ref(),
            "--clear-groups".as_ref(),
            "--no-new-privs".as_ref(),
            "--".as_ref(),
            binary.as_ref(),
            "dev".as_ref(),
        ];
        if read_only_root {
            command = Command::new(&unshare);
            command
                .args(["--mount", "--propagation", "private", "--"])
                .arg(&sh)
                .arg("-c")
                .arg(format!("{} -o remount,bind,ro / && exec \"$@\"", mount.display()))
                .arg("sh")
                .args(drop_privileges);
        } else {
            eprintln!("note: cannot create a mount namespace here; the root filesystem stays writable");
            command = Command::new(drop_privileges[0]);
            command.args(&drop_privileges[1..]);
        }
    } else {
        eprintln!(
            "note: not root; running as uid {} without a read-only root filesystem",
            euid()
        );
        command = Command::new(binary);
        command.arg("dev");
    }
    command
        .env_clear()
        .env("SWITCHYARD_TCP", "127.0.0.1:0")
        .env("SWITCHYARD_WS", "127.0.0.1:0")
        .env("SWITCHYARD_HTTP", "127.0.0.1:0")
        .env("SWITCHYARD_LOG", "info")
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start `{}`: {error}", describe(&command)));
    let pid = child.id();
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
        }
    }
    let guard = KillOnDrop(pid);

    // The banner names the bound addresses.
    let stdout = child.stdout.take().expect("stdout piped");
    let stderr = child.stderr.take().expect("stderr piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let (mut admin, mut tcp) = (String::new(), String::new());
    while admin.is_empty() || tcp.is_empty() {
        let Ok(line) = receiver.recv_timeout(Duration::from_secs(60)) else {
            drop(guard); // kill it first: its stderr reaches EOF only when it exits
            panic!(
                "no banner from `switchyard dev` within 60 s; stderr:\n{}",
                stderr_reader.join().unwrap_or_default()
            );
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["admin", address, ..] => admin = address.trim_start_matches("http://").to_owned(),
            ["clients", address, ..] if address.starts_with("tcp://") => {
                tcp = address.trim_start_matches("tcp://").to_owned();
            }
            _ => {}
        }
    }

    // The process really is what the pod's securityContext makes of it.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("/proc/<pid>/exe");
    assert_eq!(exe, Path::new(binary), "pid {pid} is the switchyard binary");
    if root {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
        for field in ["Uid:", "Gid:"] {
            let ids: Vec<&str> = status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .expect("ids")
                .split_whitespace()
                .collect();
            assert_eq!(ids, ["65532"; 4], "{field} of switchyard dev");
        }
        assert!(
            status.lines().any(|line| line == "NoNewPrivs:\t1"),
            "no_new_privs is set"
        );
        assert!(
            status.lines().any(|line| line == "CapEff:\t0000000000000000"),
            "no effective capability"
        );
    }
    if read_only_root {
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
        let root_mount = mounts
            .lines()
            .find(|line| line.split_whitespace().nth(4) == Some("/"))
            .expect("the root mount");
        let options = root_mount.split_whitespace().nth(5).expect("mount options");
        assert!(
            options.split(',').any(|option| option == "ro"),
            "root mounted read-only: {root_mount}"
        );
    }

    // It serves: admin endpoints and a client.
    assert_eq!(http_get_blocking(admin.as_str(), "/healthz").0, 200, "/healthz");
    assert_eq!(http_get_blocking(admin.as_str(), "/readyz").0, 200, "/readyz");
    let (code, metrics) = http_get_blocking(admin.as_str(), "/metrics");
    assert_eq!(code, 200, "/metrics");
    assert!(metrics.contains("switchyard_"), "metrics:\n{metrics}");
    let reply = echo(&tcp, "read-only");
    assert!(reply.contains("\"read-only\""), "echo reply: {reply}");

    // SIGTERM: a clean exit.
    run_ok(Command::new("kill").args(["-TERM", &pid.to_string()]));
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "switchyard dev still runs 40 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = stderr_reader.join().unwrap_or_default();
    assert!(
        status.success(),
        "switchyard dev exited with {status}; stderr:\n{stderr}"
    );
    std::mem::forget(guard);
    let _ = std::fs::set_permissions(cwd.path(), std::fs::Permissions::from_mode(0o755));
}

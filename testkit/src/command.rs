//! Running a tool (helm, kubectl, promtool) from a test: to completion with stdin closed, and panicking
//! with the command line and its output when it does not do what the test expects.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

/// The command line, for messages.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command to completion with stdin closed.
///
/// # Panics
/// When it cannot be started.
pub fn output(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run `{}`: {error}", describe(command)))
}

/// Runs a command that must succeed; returns its stdout.
///
/// # Panics
/// When it fails; the message carries its stdout and stderr.
pub fn run_ok(command: &mut Command) -> String {
    let out = output(command);
    assert!(
        out.status.success(),
        "`{}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        describe(command),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail; returns its stderr.
///
/// # Panics
/// When it succeeds; the message carries its stdout.
pub fn run_err(command: &mut Command) -> String {
    let out = output(command);
    assert!(
        !out.status.success(),
        "`{}` succeeded but should have failed:\n--- stdout\n{}",
        describe(command),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command with `input` on stdin; returns its output (check `status` yourself).
///
/// # Panics
/// When it cannot be started or its stdin written.
pub fn run_with_input(command: &mut Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run `{}`: {error}", describe(command)));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for the command")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_failure_and_input() {
        assert_eq!(run_ok(Command::new("echo").arg("hi")), "hi\n");
        assert!(run_err(Command::new("ls").arg("/no/such/dir")).contains("/no/such/dir"));
        let out = run_with_input(&mut Command::new("cat"), "piped");
        assert_eq!(out.stdout, b"piped");
        assert_eq!(describe(Command::new("helm").args(["lint", "x"])), "helm lint x");
    }
}

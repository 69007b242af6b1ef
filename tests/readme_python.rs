//! The README's Python client example, taken from the README itself (so the two cannot drift), run with
//! `python3` against a real `switchyard dev`: it must print exactly what the README's comment says it prints.

mod support;

use std::process::Command;

use support::Dev;

/// The first ```python block of the README and the output its `print(...)  # ...` comment promises.
fn readme_snippet() -> (String, String) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable");
    let start = readme.find("```python\n").expect("README has a ```python block") + "```python\n".len();
    let len = readme[start..].find("```").expect("the block ends");
    let code = readme[start..start + len].to_owned();
    let promised = code
        .lines()
        .find_map(|line| line.strip_prefix("print(").and_then(|l| l.split_once("  # ")))
        .map(|(_, comment)| comment.trim().to_owned())
        .expect("a print(...) line with the expected output as a comment");
    (code, promised)
}

#[test]
fn readme_python_example_prints_what_the_readme_says() {
    let (code, promised) = readme_snippet();
    assert!(
        code.contains("127.0.0.1\", 3553"),
        "the snippet dials the default TCP port:\n{code}"
    );
    let dev = Dev::start(&[]);
    let port = dev.tcp.rsplit(':').next().expect("port");
    // The one change: the port the test's dev process listens on instead of the default 3553.
    let code = code.replace("3553", port);
    let out = Command::new("python3")
        .args(["-c", &code])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).expect("utf-8 output");
    assert_eq!(
        printed.trim_end(),
        promised,
        "the README's comment must be what the snippet prints"
    );
    assert!(
        promised.starts_with(r"b'\x00\x00\x00\x1e"),
        "size 30 after the size field: {promised}"
    );
}

//! A locked Redis locator, end to end with real processes: a redis-server that requires a password, over
//! plain TCP and over TLS only (`rediss://`, a private CA from `tests/support/certs.rs`), with a
//! `switchyard node` and a `switchyard gate` that get the password from `SWITCHYARD_LOCATOR_PASSWORD` and
//! the CA from `SWITCHYARD_LOCATOR_CA`, as the operator's pods do. And the refusals: a wrong or missing
//! password, or a certificate the locator does not trust, stop the process at start-up at once (no
//! 20-second wait for Redis) with a message that names the cause.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::certs::Certs;
use support::procs::{Proc, Redis, RedisOptions, TempDir, free_port};
use support::{Conn, Wire, http_get, metric_sum, switchyard_binary};
use switchyard_testkit::eventually_true;

const PASSWORD: &str = "correct-horse-battery-staple";

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

async fn metrics(admin: &str) -> String {
    match tokio::net::TcpStream::connect(admin).await {
        Ok(_) => http_get(&format!("http://{admin}"), "/metrics").await.1,
        Err(_) => String::new(),
    }
}

/// A node and a gate on `redis`, with `env` (the locator secrets), and a client logged in through them.
async fn play_through(dir: &TempDir, redis: &Redis, env: &[(&str, &str)]) {
    let link = format!("127.0.0.1:{}", free_port());
    let node_admin = format!("127.0.0.1:{}", free_port());
    let node_args = strings(&[
        "node",
        "--id",
        "node-a",
        "--link",
        &link,
        "--http",
        &node_admin,
        "--locator",
        &redis.url(),
    ]);
    let _node = Proc::spawn_env("node-a", switchyard_binary(), &node_args, env, dir.path());
    let tcp = format!("127.0.0.1:{}", free_port());
    let gate_admin = format!("127.0.0.1:{}", free_port());
    let gate_args = strings(&[
        "gate",
        "--id",
        "gate-a",
        "--tcp",
        &tcp,
        "--ws",
        "",
        "--http",
        &gate_admin,
        "--locator",
        &redis.url(),
        "--nodes",
        &link,
    ]);
    let _gate = Proc::spawn_env("gate-a", switchyard_binary(), &gate_args, env, dir.path());
    eventually_true("gate linked to the node", Duration::from_secs(20), || async {
        metric_sum(&metrics(&gate_admin).await, "switchyard_gate_node_links", &[]) == 1.0
    })
    .await;
    for admin in [&gate_admin, &node_admin] {
        let text = metrics(admin).await;
        assert_eq!(
            metric_sum(&text, "switchyard_locator_pubsub_connected", &[]),
            1.0,
            "{admin}: the locator's subscription is up"
        );
    }
    let mut conn = Conn::tcp(&tcp, Wire::DEFAULT).await;
    let reply = conn.request(2, 1, json!({"uid": 4242, "name": "locked"})).await;
    assert_eq!(reply["code"], 0, "{reply}");
    assert_eq!(reply["node"], "node-a", "{reply}");
    // The bindings went through Redis: the locator counts no error.
    let text = metrics(&gate_admin).await;
    assert_eq!(metric_sum(&text, "switchyard_locator_errors_total", &[]), 0.0);
}

/// Starts a gate that must refuse to run; returns its log once it exited, and how long that took.
fn refused_gate(dir: &TempDir, name: &str, url: &str, env: &[(&str, &str)]) -> (String, Duration) {
    let args = strings(&[
        "gate",
        "--tcp",
        &format!("127.0.0.1:{}", free_port()),
        "--ws",
        "",
        "--http",
        &format!("127.0.0.1:{}", free_port()),
        "--locator",
        url,
        "--nodes",
        "127.0.0.1:9",
    ]);
    let started = Instant::now();
    let mut gate = Proc::spawn_env(name, switchyard_binary(), &args, env, dir.path());
    let status = gate
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{name}: the gate kept running:\n{}", gate.log_text()));
    assert!(!status.success(), "{name}: the gate exited with success");
    (gate.log_text(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_and_node_use_a_password_protected_redis() {
    let dir = TempDir::new("redis-auth-plain");
    let options = RedisOptions {
        password: Some(PASSWORD.to_owned()),
        ..RedisOptions::default()
    };
    let redis = Redis::start_with(free_port(), dir.path(), options);
    play_through(&dir, &redis, &[("SWITCHYARD_LOCATOR_PASSWORD", PASSWORD)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_and_node_use_an_acl_user_held_to_their_key_prefix() {
    let dir = TempDir::new("redis-auth-acl");
    // The user may touch only the default prefix's keys and channel; the default user is off.
    let user = strings(&[
        "--user",
        "game",
        "on",
        ">acl-password",
        "~switchyard:*",
        "&switchyard:*",
        "+@all",
    ]);
    let off = strings(&["--user", "default", "off"]);
    let options = RedisOptions {
        extra: user.into_iter().chain(off).collect(),
        ..RedisOptions::default()
    };
    let redis = Redis::start_with(free_port(), dir.path(), options);
    let env = [
        ("SWITCHYARD_LOCATOR_USERNAME", "game"),
        ("SWITCHYARD_LOCATOR_PASSWORD", "acl-password"),
    ];
    play_through(&dir, &redis, &env).await;
    // Another prefix is outside the user's keys and channels: refused at start-up, naming the cause.
    let mut with_prefix: Vec<(&str, &str)> = env.to_vec();
    with_prefix.push(("SWITCHYARD_LOCATOR_PREFIX", "other"));
    let (log, took) = refused_gate(&dir, "other-prefix", &redis.url(), &with_prefix);
    assert!(took < Duration::from_secs(10), "{log}");
    assert!(log.contains("refused") && log.contains("NoPerm"), "{log}");
    assert!(
        log.contains("~PREFIX:*"),
        "the message says what the ACL needs: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_and_node_use_rediss_with_a_private_ca_and_a_password() {
    let dir = TempDir::new("redis-auth-tls");
    let certs = Certs::new("redis-auth-tls");
    let options = RedisOptions {
        password: Some(PASSWORD.to_owned()),
        tls: Some((certs.cert.clone(), certs.key.clone())),
        ..RedisOptions::default()
    };
    let redis = Redis::start_with(free_port(), dir.path(), options);
    assert!(redis.url().starts_with("rediss://"));
    let ca = certs.cert.display().to_string();
    play_through(
        &dir,
        &redis,
        &[
            ("SWITCHYARD_LOCATOR_PASSWORD", PASSWORD),
            ("SWITCHYARD_LOCATOR_CA", &ca),
        ],
    )
    .await;
}

#[test]
fn a_wrong_or_missing_password_stops_the_gate_at_start_up() {
    let dir = TempDir::new("redis-auth-wrong");
    let options = RedisOptions {
        password: Some(PASSWORD.to_owned()),
        ..RedisOptions::default()
    };
    let redis = Redis::start_with(free_port(), dir.path(), options);
    for (name, env) in [
        ("wrong", &[("SWITCHYARD_LOCATOR_PASSWORD", "guess")][..]),
        ("missing", &[][..]),
    ] {
        let (log, took) = refused_gate(&dir, name, &redis.url(), env);
        assert!(
            took < Duration::from_secs(10),
            "{name}: refused after {took:?}, not at once:\n{log}"
        );
        assert!(log.contains("refused"), "{name}: {log}");
        assert!(log.contains("SWITCHYARD_LOCATOR_PASSWORD"), "{name}: {log}");
        assert!(
            !log.contains("guess"),
            "{name}: the log shows the password:\n{log}"
        );
    }
}

#[test]
fn an_untrusted_certificate_stops_the_gate_at_start_up() {
    let dir = TempDir::new("redis-auth-untrusted");
    let served = Certs::new("redis-auth-served");
    let other = Certs::new("redis-auth-other");
    let options = RedisOptions {
        password: Some(PASSWORD.to_owned()),
        tls: Some((served.cert.clone(), served.key.clone())),
        ..RedisOptions::default()
    };
    let redis = Redis::start_with(free_port(), dir.path(), options);
    let other_ca = other.cert.display().to_string();
    for (name, env) in [
        (
            "other-ca",
            &[
                ("SWITCHYARD_LOCATOR_PASSWORD", PASSWORD),
                ("SWITCHYARD_LOCATOR_CA", other_ca.as_str()),
            ][..],
        ),
        // No CA given: the system's roots, which do not hold the test CA either.
        ("system-roots", &[("SWITCHYARD_LOCATOR_PASSWORD", PASSWORD)][..]),
    ] {
        let (log, took) = refused_gate(&dir, name, &redis.url(), env);
        assert!(
            took < Duration::from_secs(10),
            "{name}: refused after {took:?}, not at once:\n{log}"
        );
        assert!(log.contains("certificate"), "{name}: {log}");
        assert!(log.contains("SWITCHYARD_LOCATOR_CA"), "{name}: {log}");
    }
}

#[test]
fn an_unreadable_ca_file_is_named() {
    let dir = TempDir::new("redis-auth-no-ca");
    let (log, took) = refused_gate(
        &dir,
        "no-ca",
        "rediss://127.0.0.1:1",
        &[("SWITCHYARD_LOCATOR_CA", "/nonexistent/redis-ca.pem")],
    );
    assert!(took < Duration::from_secs(10), "{log}");
    assert!(log.contains("/nonexistent/redis-ca.pem"), "{log}");
}

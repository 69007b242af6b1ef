//! The Rust client (`switchyard-client`) against real `switchyard dev` processes with TLS (a self-signed
//! rcgen certificate): TLS over TCP and `wss://`, refusal of an untrusted server, and the reconnecting
//! client: reconnect-elsewhere on SIGTERM of a gate (at once, login sent again, stateful route works on the
//! new gate), backoff after a gate dies without warning, and giving up after the last attempt.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Dev;
use support::certs::Certs;
use switchyard_client::{
    Backoff, Client, ClientError, ClientOptions, OnConnect, PacketConfig, ReconnectEvent, Reconnecting,
    TlsConfig, Transport,
};

fn tls_options(certs: &Certs) -> ClientOptions {
    let pem = std::fs::read(&certs.cert).expect("certificate PEM");
    ClientOptions {
        tls: Some(TlsConfig::with_root_pem(&pem).expect("usable root")),
        request_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

fn flags(certs: &Certs, extra: &[&str]) -> Vec<String> {
    let mut flags = certs.flags();
    flags.extend(extra.iter().map(|s| (*s).to_owned()));
    flags
}

fn start(certs: &Certs, extra: &[&str]) -> Dev {
    let flags = flags(certs, extra);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Dev::start(&flags)
}

fn wss(dev: &Dev) -> String {
    dev.ws.replacen("ws://", "wss://", 1)
}

async fn json_request(client: &Client, route: i32, body: Value) -> Value {
    let reply = client
        .request(route, serde_json::to_vec(&body).expect("json"))
        .await
        .expect("answered");
    serde_json::from_slice(&reply).expect("json reply")
}

#[tokio::test]
async fn tls_over_tcp_and_wss_carry_requests_and_an_untrusted_server_is_refused() {
    let certs = Certs::new("client-tls");
    let dev = start(&certs, &[]);
    for transport in [Transport::Tls(dev.tcp.clone()), Transport::WebSocket(wss(&dev))] {
        let client = Client::connect(&transport, PacketConfig::default(), tls_options(&certs))
            .await
            .unwrap_or_else(|err| panic!("{transport}: {err}"));
        let echo = json_request(&client, 1, json!({"message": "over tls"})).await;
        assert_eq!(echo, json!({"code": 0, "message": "over tls"}), "{transport}");
        client.close().await;
    }

    // A client that trusts another certificate refuses the gate's.
    let other = Certs::new("client-tls-other");
    let refused = Client::connect(
        &Transport::Tls(dev.tcp.clone()),
        PacketConfig::default(),
        tls_options(&other),
    )
    .await
    .expect_err("untrusted certificate");
    assert!(matches!(refused, ClientError::Tls { .. }), "{refused}");
    // TLS without TLS settings is the caller's mistake, reported before dialling.
    let no_settings = Client::connect(
        &Transport::WebSocket(wss(&dev)),
        PacketConfig::default(),
        ClientOptions::default(),
    )
    .await
    .expect_err("no TLS settings");
    assert!(
        matches!(no_settings, ClientError::NoTlsConfig(_)),
        "{no_settings}"
    );
    assert_eq!(no_settings.fault(), switchyard_client::Fault::Caller);
    assert!(matches!(
        TlsConfig::with_root_pem(b"not a certificate"),
        Err(ClientError::TlsRoots(_))
    ));
    let nowhere = Reconnecting::connect(
        Vec::new(),
        PacketConfig::default(),
        ClientOptions::default(),
        Backoff::default(),
        None,
    )
    .await
    .expect_err("no targets");
    assert!(matches!(nowhere, ClientError::NoTargets), "{nowhere}");
}

/// A login hook for uid 77 that counts its runs.
fn login(count: Arc<AtomicUsize>) -> OnConnect {
    Arc::new(move |client: Client| {
        let count = Arc::clone(&count);
        Box::pin(async move {
            let reply = client.request(2, &br#"{"uid":77,"name":"ada"}"#[..]).await?;
            let reply: Value = serde_json::from_slice(&reply).expect("json login reply");
            assert_eq!(reply["code"], 0, "{reply}");
            count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    })
}

async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<ReconnectEvent>,
    wanted: impl Fn(&ReconnectEvent) -> bool,
) -> ReconnectEvent {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline.into(), events.recv())
            .await
            .expect("event within 10 s")
            .expect("event channel open");
        if wanted(&event) {
            return event;
        }
    }
}

#[tokio::test]
async fn sigterm_of_a_gate_moves_the_client_at_once_and_logs_it_in_again() {
    let certs = Certs::new("client-elsewhere");
    let mut gate_a = start(&certs, &["--gate-drain-deadline", "3s"]);
    let gate_b = start(&certs, &[]);
    for transport in ["tls", "wss"] {
        let target = |dev: &Dev| match transport {
            "tls" => Transport::Tls(dev.tcp.clone()),
            _ => Transport::WebSocket(wss(dev)),
        };
        if transport == "wss" {
            gate_a = start(&certs, &["--gate-drain-deadline", "3s"]);
        }
        let logins = Arc::new(AtomicUsize::new(0));
        // A long backoff: the move after reconnect-elsewhere must not wait for it.
        let backoff = Backoff {
            initial: Duration::from_secs(30),
            ..Backoff::default()
        };
        let client = Reconnecting::connect(
            vec![target(&gate_a), target(&gate_b)],
            PacketConfig::default(),
            tls_options(&certs),
            backoff,
            Some(login(Arc::clone(&logins))),
        )
        .await
        .expect("connects to gate A");
        assert_eq!(logins.load(Ordering::SeqCst), 1);
        let mut events = client.events();
        let started = Instant::now();
        Command::new("kill")
            .args(["-TERM", &gate_a.pid().to_string()])
            .status()
            .expect("kill runs");
        next_event(&mut events, |e| matches!(e, ReconnectEvent::ReconnectElsewhere)).await;
        let connected = next_event(&mut events, |e| matches!(e, ReconnectEvent::Connected { .. })).await;
        let ReconnectEvent::Connected {
            target: now,
            reconnect,
        } = connected
        else {
            unreachable!()
        };
        assert!(reconnect);
        assert_eq!(now, target(&gate_b), "{transport}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{transport}: moved in {:?}",
            started.elapsed()
        );
        assert_eq!(logins.load(Ordering::SeqCst), 2, "{transport}: logged in again");
        // whoami is stateful and authorized: it works because the login ran on gate B.
        let whoami: Value =
            serde_json::from_slice(&client.request(3, &b"{}"[..]).await.expect("whoami")).expect("json");
        assert_eq!(whoami["uid"], 77, "{transport}: {whoami}");
        assert_eq!(client.reconnects(), 1);
        assert!(
            gate_a
                .terminate(Duration::from_secs(10))
                .is_some_and(|s| s.success()),
            "{transport}: gate A drained and exited by itself"
        );
        client.close().await;
    }
}

#[tokio::test]
async fn a_gate_killed_without_warning_is_left_after_the_backoff_and_giving_up_is_reported() {
    let certs = Certs::new("client-backoff");
    let gate_a = start(&certs, &[]);
    let gate_b = start(&certs, &[]);
    let logins = Arc::new(AtomicUsize::new(0));
    let backoff = Backoff {
        initial: Duration::from_millis(300),
        max: Duration::from_secs(1),
        factor: 2.0,
        max_attempts: Some(3),
    };
    let client = Reconnecting::connect(
        vec![
            Transport::Tls(gate_a.tcp.clone()),
            Transport::Tls(gate_b.tcp.clone()),
        ],
        PacketConfig::default(),
        tls_options(&certs),
        backoff,
        Some(login(Arc::clone(&logins))),
    )
    .await
    .expect("connects to gate A");
    let mut events = client.events();
    let started = Instant::now();
    drop(gate_a); // SIGKILL: no reconnect-elsewhere, just a lost connection
    assert!(matches!(
        next_event(&mut events, |e| matches!(e, ReconnectEvent::Disconnected(_))).await,
        ReconnectEvent::Disconnected(_)
    ));
    let ReconnectEvent::Reconnecting { attempt, delay } =
        next_event(&mut events, |e| matches!(e, ReconnectEvent::Reconnecting { .. })).await
    else {
        unreachable!()
    };
    assert_eq!((attempt, delay), (1, Duration::from_millis(300)));
    next_event(&mut events, |e| matches!(e, ReconnectEvent::Connected { .. })).await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited for the backoff"
    );
    assert_eq!(logins.load(Ordering::SeqCst), 2);
    let echo = client
        .request(1, &br#"{"message":"b"}"#[..])
        .await
        .expect("echo on B");
    assert_eq!(&echo[..], br#"{"code":0,"message":"b"}"#);

    // Now gate B dies too, and gate A is gone: three attempts with growing delays, then the client gives up.
    let lost = Instant::now();
    drop(gate_b);
    let mut delays = Vec::new();
    let gave_up = loop {
        match next_event(&mut events, |e| {
            matches!(e, ReconnectEvent::Reconnecting { .. } | ReconnectEvent::GaveUp(_))
        })
        .await
        {
            ReconnectEvent::Reconnecting { delay, .. } => delays.push(delay),
            ReconnectEvent::GaveUp(reason) => break reason,
            _ => unreachable!(),
        }
    };
    assert_eq!(
        delays,
        [300, 600, 1000].map(Duration::from_millis),
        "exponential, capped at max"
    );
    assert!(lost.elapsed() >= Duration::from_millis(1900));
    assert!(
        matches!(gave_up, ClientError::GaveUp { attempts: 3, .. }),
        "{gave_up}"
    );
    let after = client.request(1, &b"{}"[..]).await.expect_err("closed");
    assert!(matches!(after, ClientError::GaveUp { .. }), "{after}");
}

//! The gate's exposure limits against a real `switchyard dev` over real sockets: the per-source-IP
//! connection cap (`--max-connections-per-ip`, refused at accept and counted as
//! `switchyard_gate_connections_refused_total{reason="per_ip"}`), the same cap on the addresses that PROXY
//! protocol v2 headers name (`--proxy-protocol`), and the client TLS certificate replaced on disk while the
//! gate runs (`--tls-reload-interval`): new handshakes get the new certificate.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use serde_json::json;
use support::certs::Certs;
use support::{Conn, Dev, Wire, behind_balancer, metric_sum, proxy_v2};
use switchyard_testkit::eventually_true;

const HOST_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const HOST_B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

async fn logged_in(conn: &mut Conn, uid: i64) {
    let reply = conn
        .request(2, 1, json!({"uid": uid, "name": format!("p{uid}")}))
        .await;
    assert_eq!(reply["code"], 0, "{reply}");
}

#[tokio::test]
async fn one_address_holds_at_most_its_cap_and_others_are_not_affected() {
    let dev = Dev::start(&["--max-connections-per-ip", "2"]);
    let mut first = Conn::tcp_from(HOST_A, &dev.tcp, Wire::DEFAULT).await;
    let mut second = Conn::tcp_from(HOST_A, &dev.tcp, Wire::DEFAULT).await;
    logged_in(&mut first, 1).await;
    logged_in(&mut second, 2).await;

    // A third from the same address is closed at once, before it can send anything.
    let mut third = Conn::tcp_from(HOST_A, &dev.tcp, Wire::DEFAULT).await;
    let took = third.expect_closed(Duration::from_secs(2)).await;
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    let metrics = dev.metrics().await;
    let refused = |reason: &str| {
        metric_sum(
            &metrics,
            "switchyard_gate_connections_refused_total",
            &[&format!("reason=\"{reason}\"")],
        )
    };
    assert_eq!(refused("per_ip"), 1.0, "{metrics}");
    assert_eq!(refused("max_connections"), 0.0);

    // Another address has a cap of its own.
    let mut other = Conn::tcp_from(HOST_B, &dev.tcp, Wire::DEFAULT).await;
    logged_in(&mut other, 3).await;

    // A closed connection gives its slot back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = Conn::tcp_from(HOST_A, &dev.tcp, Wire::DEFAULT).await;
        match again.recv_within(Duration::from_millis(200)).await {
            // Open and silent: the slot was free. It must also work.
            Err(()) => {
                logged_in(&mut again, 4).await;
                break;
            }
            _ => assert!(
                Instant::now() < deadline,
                "the closed connection's slot never came back"
            ),
        }
    }
    logged_in(&mut second, 2).await;
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_connections() {
    let served = Certs::new("exposure-reload");
    let mut flags = served.flags();
    flags.extend(["--tls-reload-interval".to_owned(), "100ms".to_owned()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let dev = Dev::start(&flags);
    let before = served.tls_connect(&dev.tcp).await;

    // Rotate: another certificate and key written over the files the gate was started with.
    let renewed = Certs::new("exposure-renewed");
    let key = std::fs::read(&renewed.key).expect("renewed key");
    let cert = std::fs::read(&renewed.cert).expect("renewed certificate");
    std::fs::write(&served.key, key).expect("key replaced");
    std::fs::write(&served.cert, cert).expect("certificate replaced");

    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tcp = tokio::net::TcpStream::connect(&dev.tcp).await.expect("TCP");
        if renewed.connector().connect(name.clone(), tcp).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The old certificate is no longer served to a new client; the connection made before stays up.
    let tcp = tokio::net::TcpStream::connect(&dev.tcp).await.expect("TCP");
    assert!(
        served.connector().connect(name, tcp).await.is_err(),
        "a client trusting only the old certificate is refused now"
    );
    drop(before);
    // The gate counts the refused handshake when the client's alert reaches it, after the client's side
    // of the handshake has already failed: wait for it rather than read the counter once.
    eventually_true(
        "the refused handshake is counted",
        Duration::from_secs(5),
        || async {
            let metrics = dev.metrics().await;
            metric_sum(
                &metrics,
                "switchyard_gate_connections_refused_total",
                &["reason=\"handshake\""],
            ) >= 1.0
        },
    )
    .await;
}

#[tokio::test]
async fn behind_proxy_protocol_the_header_names_the_address_that_is_counted() {
    let dev = Dev::start(&["--proxy-protocol", "--max-connections-per-ip", "1"]);
    let player_a = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 40_001);
    let player_b = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 8), 40_002);

    // Every connection comes from 127.0.0.1, yet each player address has a cap of its own.
    let mut a = behind_balancer(&dev.tcp, &proxy_v2(player_a)).await;
    logged_in(&mut a, 1).await;
    let mut b = behind_balancer(&dev.tcp, &proxy_v2(player_b)).await;
    logged_in(&mut b, 2).await;
    let mut a_again = behind_balancer(&dev.tcp, &proxy_v2(player_a)).await;
    a_again.expect_closed(Duration::from_secs(2)).await;

    // No header: something other than the load balancer reached the gate; refused.
    let mut bare = Conn::tcp(&dev.tcp, Wire::DEFAULT).await;
    bare.send(2, 1, json!({"uid": 3, "name": "p3"})).await;
    bare.expect_closed(Duration::from_secs(2)).await;

    let metrics = dev.metrics().await;
    let refused = |reason: &str| {
        metric_sum(
            &metrics,
            "switchyard_gate_connections_refused_total",
            &[&format!("reason=\"{reason}\"")],
        )
    };
    assert_eq!(refused("per_ip"), 1.0, "{metrics}");
    assert_eq!(refused("handshake"), 1.0, "{metrics}");
    logged_in(&mut a, 1).await;
    logged_in(&mut b, 2).await;
}

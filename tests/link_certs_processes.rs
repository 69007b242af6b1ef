//! The link certificates the operator mints, used by real processes: the bytes of the three Secrets
//! (`NAME-link-ca` stays with the operator; `NAME-link-gate-tls` and `NAME-link-node-tls` laid out as the
//! kubelet lays out a Secret volume: one file per key) made by the operator's own minting code, given to a
//! real `switchyard gate` and real `switchyard node`s of two pools over `--link-tls-*`. The links form over
//! mutual TLS, a player is served, a lobby → battle node-to-node call (which travels over the gate links)
//! makes a match; and a gate whose certificate another GameCluster's CA minted links to nothing.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use serde_json::json;
use support::cluster::{Cluster, Player, admin_metrics, matched, strings};
use support::procs::{Proc, TempDir, free_port};
use support::{Conn, Wire, metric_sum, switchyard_binary};
use switchyard_operator::link_certs::{Leaf, LinkCa, leaf_secret_data, new_ca};
use switchyard_testkit::eventually_true;

/// Writes a leaf Secret's data as a Secret volume holds it (`ca.crt`, `tls.crt`, `tls.key`) under `dir`;
/// returns the `--link-tls-*` flags that name the files, as `SWITCHYARD_LINK_TLS_*` do in a pod.
fn secret_volume(ca: &LinkCa, leaf: Leaf, cluster: &str, dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(dir).expect("volume directory");
    let pem = ca
        .issue(leaf, cluster, SystemTime::now())
        .expect("the operator mints a leaf");
    for (key, value) in leaf_secret_data(&pem, ca) {
        std::fs::write(dir.join(&key), value.0).expect("Secret file written");
    }
    let file = |key: &str| dir.join(key).display().to_string();
    vec![
        "--link-tls-ca".into(),
        file("ca.crt"),
        "--link-tls-cert".into(),
        file("tls.crt"),
        "--link-tls-key".into(),
        file("tls.key"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_certificates_link_real_processes_and_carry_node_to_node_calls() {
    let scratch = TempDir::new("link-certs");
    let volumes = scratch.path();
    let (_, ca) = new_ca("arena", "games", SystemTime::now()).expect("the operator mints a CA");
    let gate_flags = secret_volume(&ca, Leaf::Gate, "arena", &volumes.join("gate"));
    let node_flags = secret_volume(&ca, Leaf::Node, "arena", &volumes.join("node"));

    // One gate, a lobby node and a battle node: start_with waits until the gate is linked to both.
    let cluster = Cluster::start_with(
        "link-certs",
        "5s",
        1,
        &[("lobby-1", "lobby"), ("battle-1", "battle")],
        &gate_flags,
        &node_flags,
    )
    .await;
    for (id, _, admin) in &cluster.nodes {
        let metrics = admin_metrics(admin).await;
        assert_eq!(
            metric_sum(&metrics, "switchyard_node_gate_links", &[]),
            1.0,
            "{id}: the gate linked"
        );
        assert_eq!(
            metric_sum(&metrics, "switchyard_node_link_refused_total", &[]),
            0.0,
            "{id}: no link was refused"
        );
    }

    // A player is served (demo echo), and two players queue in the lobby: the lobby node calls the battle
    // pool (node → gate → node, over the mutual TLS links) to create their match.
    let mut conn = Conn::tcp(cluster.gate_tcp(0), Wire::DEFAULT).await;
    let reply = conn
        .request(1, 1, json!({"message": "over minted certificates"}))
        .await;
    assert_eq!(reply["message"], "over minted certificates", "{reply}");

    // Fairness over a real mutual-TLS link: one connection floods the slow route (10, lobby pool) far past
    // its lane (256); another connection's echo goes over the same gate, link and lobby node and stays fast.
    let mut slow = Conn::tcp(cluster.gate_tcp(0), Wire::DEFAULT).await;
    for seq in 1..=400 {
        slow.send(10, seq, json!({"ms": 3000})).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for seq in 2..=6 {
        let started = Instant::now();
        let reply = conn.request(1, seq, json!({"message": "hi"})).await;
        let took = started.elapsed();
        assert_eq!(reply["message"], "hi", "{reply}");
        assert!(
            took < Duration::from_millis(250),
            "echo took {took:?} behind a flood of slow requests"
        );
    }
    let refused = metric_sum(
        &admin_metrics(cluster.node_admin("lobby-1")).await,
        "switchyard_node_packets_dropped_total",
        &["reason=\"lane_full\""],
    );
    assert!(
        refused >= 100.0,
        "the flood's overflow was refused and counted: {refused}"
    );
    drop(slow);
    let (mut first, lobby) = Player::login(&cluster, 0, 101).await;
    let (mut second, _) = Player::login(&cluster, 0, 102).await;
    assert_eq!(lobby, "lobby-1");
    let host = matched(&mut first, &mut second, "duel").await;
    assert_eq!(host, "battle-1", "the match lives on the battle node");
    let lobby_metrics = admin_metrics(cluster.node_admin("lobby-1")).await;
    assert!(
        metric_sum(
            &lobby_metrics,
            "switchyard_node_calls_total",
            &["direction=\"out\"", "outcome=\"ok\""]
        ) >= 1.0,
        "the lobby's call succeeded:\n{lobby_metrics}"
    );

    // A gate with a certificate of another GameCluster's CA (and that CA's file, so it starts): it links to
    // nothing, since neither side's CA vouches for the other.
    let (_, other) = new_ca("arena", "elsewhere", SystemTime::now()).expect("another CA");
    let foreign_dir = volumes.join("foreign");
    let foreign_flags = secret_volume(&other, Leaf::Gate, "arena", &foreign_dir);
    let dir = TempDir::new("link-certs-foreign");
    let admin = format!("127.0.0.1:{}", free_port());
    let mut args = strings(&[
        "gate",
        "--id",
        "gate-foreign",
        "--tcp",
        &format!("127.0.0.1:{}", free_port()),
        "--ws",
        "",
        "--http",
        &admin,
        "--locator",
        &cluster.redis.url(),
        "--nodes",
        &cluster.links.join(","),
    ]);
    args.extend(foreign_flags);
    let _foreign = Proc::spawn("gate-foreign", switchyard_binary(), &args, dir.path());
    let admin = format!("http://{admin}");
    eventually_true(
        "the foreign gate tried and failed",
        Duration::from_secs(20),
        || async {
            metric_sum(
                &admin_metrics(&admin).await,
                "switchyard_gate_node_link_failures_total",
                &[],
            ) >= 1.0
        },
    )
    .await;
    assert_eq!(
        metric_sum(&admin_metrics(&admin).await, "switchyard_gate_node_links", &[]),
        0.0
    );
    // The same foreign certificate presented by a client that does trust the cluster's CA (so the
    // handshake reaches the node's check of the client certificate): no link frame, counted as a bad
    // certificate.
    let lobby_link = &cluster.links[0];
    let received = present(&ca, &foreign_dir, lobby_link).await;
    assert!(
        received.is_empty(),
        "the foreign gate got {} bytes",
        received.len()
    );
    eventually_true(
        "the node counted the refusal",
        Duration::from_secs(10),
        || async {
            metric_sum(
                &admin_metrics(cluster.node_admin("lobby-1")).await,
                "switchyard_node_link_refused_total",
                &["reason=\"bad_certificate\""],
            ) >= 1.0
        },
    )
    .await;
}

/// Connects to the node at `address` as a TLS client trusting `ca`, presenting the certificate and key of
/// the Secret volume `dir`, sends a link `Hello`-sized probe and returns every byte that came back.
async fn present(ca: &LinkCa, dir: &Path, address: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("CA PEM"))
        .expect("CA as a root");
    let chain = vec![CertificateDer::from_pem_file(dir.join("tls.crt")).expect("certificate")];
    let key = PrivateKeyDer::from_pem_file(dir.join("tls.key")).expect("key");
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client certificate");
    let tcp = TcpStream::connect(address).await.expect("the node accepts TCP");
    let name = ServerName::try_from("switchyard-link").expect("server name");
    let Ok(mut stream) = TlsConnector::from(Arc::new(config)).connect(name, tcp).await else {
        return Vec::new();
    };
    let _ = stream.write_all(&[0, 0, 0, 1, 0]).await;
    let _ = stream.flush().await;
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

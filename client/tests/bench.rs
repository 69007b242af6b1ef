//! `bench::run` against the raw-protocol test server: counts, error detection, timeouts, transports and
//! packet settings, with the flags parsed as `switchyard bench` parses them.
#![allow(clippy::unwrap_used)] // helpers of tests, which may panic

mod support;

use clap::Parser;
use support::{Kind, TestServer};
use switchyard_client::PacketConfig;
use switchyard_client::bench::{self, BenchArgs, BenchTransport};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn args(server: &TestServer, extra: &[&str]) -> BenchArgs {
    let addr = server.addr.to_string();
    let transport = match server.kind {
        Kind::Tcp => "tcp",
        Kind::Ws => "ws",
    };
    let mut argv = vec![
        "bench",
        "--addr",
        &addr,
        "--transport",
        transport,
        "--warmup-secs",
        "0",
    ];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).unwrap().bench
}

#[test]
fn flags_and_defaults() {
    let args = Cli::try_parse_from(["bench"]).unwrap().bench;
    assert_eq!(args.addr, "127.0.0.1:3553");
    assert_eq!(args.transport, BenchTransport::Tcp);
    assert_eq!(
        (args.connections, args.pipeline, args.payload_bytes),
        (50, 1, 1024)
    );
    assert_eq!((args.route, args.route_bytes, args.seq_bytes), (1, 2, 2));
    assert_eq!((args.requests, args.duration, args.rate), (None, None, None));
    assert_eq!(args.packet_config().unwrap(), PacketConfig::default());
    assert!(Cli::try_parse_from(["bench", "--requests", "5", "--duration", "1"]).is_err());
    let ws = Cli::try_parse_from(["bench", "--transport", "ws", "--addr", "h:1", "--ws-path", "game"])
        .unwrap()
        .bench;
    assert_eq!(ws.target().target(), "ws://h:1/game");

    let (payload, message) = bench::echo_request(1024);
    assert_eq!(message.len(), 1024);
    assert_eq!(payload.len(), 1038, "due's benchmark payload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_request_budget_is_met_without_errors() {
    let server = TestServer::start(Kind::Tcp, PacketConfig::default()).await;
    let report = bench::run(args(
        &server,
        &["--connections", "4", "--pipeline", "8", "--requests", "2000"],
    ))
    .await
    .unwrap();
    println!("{report}");
    assert_eq!(report.requests_ok, 2000);
    assert_eq!((report.errors, report.timeouts, report.reconnects), (0, 0, 0));
    assert_eq!(report.request_bytes, 4 + 1 + 2 + 2 + 1038);
    assert!(report.tps > 0.0 && report.elapsed_secs > 0.0);
    assert!(report.latency_us.p50 > 0 && report.latency_us.p50 <= report.latency_us.max);
    assert_eq!(server.seen.packets.lock().len(), 2000);

    let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    assert_eq!(json["requests_ok"], 2000);
    assert_eq!(json["transport"], "tcp");
    assert!(json["latency_us"]["p99"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_duration_run_with_warmup() {
    let server = TestServer::start(Kind::Ws, PacketConfig::default()).await;
    let mut args = args(
        &server,
        &["--connections", "3", "--pipeline", "4", "--duration", "0.5"],
    );
    args.warmup_secs = 0.2;
    let report = bench::run(args).await.unwrap();
    println!("{report}");
    assert!(report.requests_ok > 0);
    assert_eq!((report.errors, report.timeouts), (0, 0));
    assert!(
        report.elapsed_secs >= 0.45 && report.elapsed_secs < 5.0,
        "{}",
        report.elapsed_secs
    );
    let sent = server.seen.packets.lock().len() as u64;
    assert!(
        sent > report.requests_ok,
        "warm-up requests are sent but not counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn little_endian_route4_seq0_fifo() {
    let config = PacketConfig::new(switchyard_client::ByteOrder::Little, 4, 0, 65536).unwrap();
    for kind in [Kind::Tcp, Kind::Ws] {
        let server = TestServer::start(kind, config).await;
        let flags = [
            "--byte-order",
            "little",
            "--route-bytes",
            "4",
            "--seq-bytes",
            "0",
            "--connections",
            "2",
            "--pipeline",
            "5",
            "--requests",
            "500",
            "--payload-bytes",
            "16",
        ];
        let report = bench::run(args(&server, &flags)).await.unwrap();
        assert_eq!(
            (report.requests_ok, report.errors, report.timeouts),
            (500, 0, 0),
            "{kind:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_on_schedule_whatever_the_answers_do() {
    for kind in [Kind::Tcp, Kind::Ws] {
        let server = TestServer::start(kind, PacketConfig::default()).await;
        // 400 requests/s over 4 connections for 1 s: about 400 counted requests, not as many as the
        // server could answer (a closed loop with this pipeline would send tens of thousands).
        let flags = [
            "--connections",
            "4",
            "--pipeline",
            "16",
            "--rate",
            "400",
            "--duration",
            "1",
        ];
        let report = bench::run(args(&server, &flags)).await.unwrap();
        println!("{report}");
        assert_eq!(report.offered_rate, Some(400.0));
        assert!(
            (380..=420).contains(&report.requests_ok),
            "{} requests at 400/s for 1 s",
            report.requests_ok
        );
        assert_eq!((report.errors, report.timeouts), (0, 0));
        assert!(report.tps > 300.0 && report.tps < 500.0, "{}", report.tps);
        let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_eq!(json["offered_rate"], 400.0);
    }

    // A server that never answers: the schedule keeps going until the pipeline is full, then the
    // requests wait; all of them time out and nothing is counted as answered.
    let server = TestServer::start(Kind::Tcp, PacketConfig::default()).await;
    let flags = [
        "--connections",
        "1",
        "--pipeline",
        "3",
        "--rate",
        "100",
        "--requests",
        "3",
        "--route",
        "3",
        "--timeout-ms",
        "200",
    ];
    let report = bench::run(args(&server, &flags)).await.unwrap();
    assert_eq!((report.requests_ok, report.timeouts), (0, 3));

    for bad in ["0", "-5", "nan"] {
        let rate = format!("--rate={bad}");
        let err = bench::run(args(&server, &[&rate, "--requests", "1"]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--rate"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_answers_are_errors_and_silence_is_timeouts() {
    let server = TestServer::start(Kind::Tcp, PacketConfig::default()).await;
    // Route 2 answers code 1.
    let report = bench::run(args(
        &server,
        &["--connections", "2", "--requests", "50", "--route", "2"],
    ))
    .await
    .unwrap();
    assert_eq!((report.requests_ok, report.errors), (0, 50));

    // Route 3 never answers: each timeout costs the requests in flight and reopens the connection.
    let flags = [
        "--connections",
        "1",
        "--pipeline",
        "2",
        "--requests",
        "4",
        "--route",
        "3",
        "--timeout-ms",
        "150",
    ];
    let report = bench::run(args(&server, &flags)).await.unwrap();
    println!("{report}");
    assert_eq!((report.requests_ok, report.errors, report.timeouts), (0, 0, 4));
    assert_eq!(report.reconnects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_and_unreachable_server_are_refused() {
    let server = TestServer::start(Kind::Tcp, PacketConfig::default()).await;
    let err = bench::run(args(&server, &["--seq-bytes", "1", "--pipeline", "200"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--pipeline"), "{err}");
    assert!(bench::run(args(&server, &["--route-bytes", "3"])).await.is_err());
    assert!(
        bench::run(args(&server, &["--max-packet-bytes", "100"]))
            .await
            .is_err()
    );

    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = unused.local_addr().unwrap().to_string();
    drop(unused);
    let argv = ["bench", "--addr", &addr, "--requests", "1", "--connections", "1"];
    let err = bench::run(Cli::try_parse_from(argv).unwrap().bench)
        .await
        .unwrap_err();
    assert!(matches!(err, bench::BenchError::Connect(_)), "{err}");
}

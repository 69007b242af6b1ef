//! The client against a raw-protocol test server: seq matching (pipelined, out of order, wrapping),
//! FIFO matching without seq, pushes, timeouts, heartbeats, reconnect-elsewhere and closes, over both
//! TCP and WebSocket.
#![allow(clippy::unwrap_used)] // helpers of tests, which may panic

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::{Kind, TestServer};
use switchyard_client::{
    ByteOrder, Client, ClientError, ClientOptions, Event, Fault, PacketConfig, Transport,
};
use switchyard_protocol::packet::DEFAULT_MAX_PACKET_BYTES;

const KINDS: [Kind; 2] = [Kind::Tcp, Kind::Ws];

async fn setup(kind: Kind, config: PacketConfig, options: ClientOptions) -> (TestServer, Client) {
    let server = TestServer::start(kind, config).await;
    let transport = match kind {
        Kind::Tcp => Transport::Tcp(server.target()),
        Kind::Ws => Transport::WebSocket(server.target()),
    };
    let client = Client::connect(&transport, config, options).await.unwrap();
    (server, client)
}

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), future)
        .await
        .expect("took too long")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_matched_by_seq_even_out_of_order() {
    for kind in KINDS {
        let (server, client) = setup(kind, PacketConfig::default(), ClientOptions::default()).await;

        // A slow request, then a fast one that overtakes it.
        let slow = tokio::spawn({
            let client = client.clone();
            async move { client.request(1, "delay:1000:slow").await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(within(client.request(1, "fast")).await.unwrap(), "fast");
        assert!(!slow.is_finished(), "{kind:?}: the slow request must still wait");
        assert_eq!(within(slow).await.unwrap().unwrap(), "delay:1000:slow");

        // Many in flight at once, answered in reverse order of sending.
        let requests = (0..60).map(|i| {
            let client = client.clone();
            async move {
                let payload = format!("delay:{}:{i}", (60 - i) * 3);
                let reply = client.request(7, payload.clone()).await.unwrap();
                assert_eq!(reply, payload.as_bytes());
            }
        });
        within(futures_util::future::join_all(requests)).await;
        assert_eq!(client.in_flight(), 0);

        let seqs: Vec<i32> = server.seen.packets.lock().iter().map(|&(_, seq)| seq).collect();
        assert_eq!(seqs.len(), 62);
        assert!(seqs.iter().all(|&seq| seq > 0), "{kind:?}: seq 0 is for pushes");
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_seq_wraps_from_127_to_1() {
    for kind in KINDS {
        let config = PacketConfig::new(ByteOrder::Big, 2, 1, DEFAULT_MAX_PACKET_BYTES).unwrap();
        let (server, client) = setup(kind, config, ClientOptions::default()).await;
        for i in 0..300 {
            let payload = format!("one-by-one {i}");
            assert_eq!(within(client.request(1, payload.clone())).await.unwrap(), payload);
        }
        // More concurrent requests than seq values: the rest wait for a free seq.
        let requests = (0..400).map(|i| {
            let client = client.clone();
            async move {
                let payload = format!("delay:{}:{i}", i % 7);
                assert_eq!(
                    client.request(1, payload.clone()).await.unwrap(),
                    payload.as_bytes()
                );
            }
        });
        within(futures_util::future::join_all(requests)).await;

        let seqs: Vec<i32> = server.seen.packets.lock().iter().map(|&(_, seq)| seq).collect();
        assert_eq!(seqs.len(), 700);
        assert!(
            seqs.iter().all(|&seq| (1..=127).contains(&seq)),
            "{kind:?}: {seqs:?}"
        );
        assert_eq!(&seqs[..3], &[1, 2, 3]);
        assert_eq!(
            &seqs[126..129],
            &[127, 1, 2],
            "{kind:?}: wraps to 1, never 0 or negative"
        );
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn little_endian_route4_without_seq_matches_fifo_per_route() {
    for kind in KINDS {
        let config = PacketConfig::new(ByteOrder::Little, 4, 0, DEFAULT_MAX_PACKET_BYTES).unwrap();
        let (server, client) = setup(kind, config, ClientOptions::default()).await;
        let requests = (0..200).map(|i| {
            let client = client.clone();
            async move {
                let route = if i % 2 == 0 { 100_000 } else { -7 };
                let payload = format!("route {route} request {i}");
                assert_eq!(
                    client.request(route, payload.clone()).await.unwrap(),
                    payload.as_bytes()
                );
            }
        });
        within(futures_util::future::join_all(requests)).await;
        let packets = server.seen.packets.lock().clone();
        assert_eq!(packets.len(), 200);
        assert!(
            packets
                .iter()
                .all(|&(route, seq)| (route == 100_000 || route == -7) && seq == 0)
        );
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_delivered() {
    for kind in KINDS {
        let (_server, client) = setup(kind, PacketConfig::default(), ClientOptions::default()).await;
        let mut pushes = client.pushes().unwrap();
        assert!(client.pushes().is_none(), "one consumer");

        assert_eq!(within(client.request(9, "push")).await.unwrap(), "push");
        let push = within(pushes.recv()).await.unwrap();
        assert_eq!((push.route, push.seq, &push.payload[..]), (9, 0, &b"pushed"[..]));

        // A raw send whose seq no request holds comes back as a push.
        client.send(3, 555, "raw").await.unwrap();
        let push = within(pushes.recv()).await.unwrap();
        assert_eq!(
            (push.route, push.seq, push.payload),
            (3, 555, Bytes::from_static(b"raw"))
        );
        assert_eq!(client.dropped_pushes(), 0);
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_request_times_out_and_the_connection_goes_on() {
    for kind in KINDS {
        let options = ClientOptions {
            request_timeout: Duration::from_millis(200),
            ..Default::default()
        };
        let (_server, client) = setup(kind, PacketConfig::default(), options).await;
        let started = tokio::time::Instant::now();
        let err = within(client.request(1, "noreply")).await.unwrap_err();
        assert!(matches!(err, ClientError::Timeout(_)), "{kind:?}: {err}");
        assert_eq!(err.fault(), Fault::Server);
        assert!(!err.is_connection_lost());
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(client.in_flight(), 0, "a timed-out request frees its seq");

        let err = within(client.request_with_timeout(1, "delay:300:x", Duration::from_millis(50)))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout(_)));
        assert_eq!(
            within(client.request(1, "still alive")).await.unwrap(),
            "still alive"
        );
        assert!(!client.is_closed());
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_explicit_and_automatic() {
    for kind in KINDS {
        let (server, client) = setup(kind, PacketConfig::default(), ClientOptions::default()).await;
        let mut events = client.events();
        client.heartbeat().await.unwrap();
        match within(events.recv()).await.unwrap() {
            Event::Heartbeat {
                extcode,
                server_time_nanos,
            } => assert_eq!((extcode, server_time_nanos), (0, Some(1_700_000_000_000_000_000))),
            other => panic!("{kind:?}: unexpected {other:?}"),
        }
        assert_eq!(
            server.seen.heartbeats.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        client.close().await;

        let options = ClientOptions {
            heartbeat_interval: Some(Duration::from_millis(40)),
            ..Default::default()
        };
        let (server, client) = setup(kind, PacketConfig::default(), options).await;
        let started = tokio::time::Instant::now();
        within(async {
            while server.seen.heartbeats.load(std::sync::atomic::Ordering::Relaxed) < 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "{kind:?}: not before their interval"
        );
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_elsewhere_is_surfaced() {
    for kind in KINDS {
        let (_server, client) = setup(kind, PacketConfig::default(), ClientOptions::default()).await;
        let mut events = client.events();
        assert!(!client.reconnect_requested());
        let asked = client.wait_reconnect_requested();
        assert_eq!(within(client.request(1, "reconnect")).await.unwrap(), "reconnect");
        assert!(within(asked).await);
        assert!(client.reconnect_requested());
        assert!(client.status().borrow().reconnect_requested);
        let mut saw = false;
        while let Ok(event) = events.try_recv() {
            saw |= matches!(event, Event::ReconnectElsewhere);
        }
        assert!(saw, "{kind:?}: ReconnectElsewhere event");
        // The connection stays usable until the server closes it.
        assert_eq!(within(client.request(1, "after")).await.unwrap(), "after");
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_close_fails_waiting_requests_and_is_surfaced() {
    for kind in KINDS {
        let (_server, client) = setup(kind, PacketConfig::default(), ClientOptions::default()).await;
        let mut events = client.events();
        let waiting = tokio::spawn({
            let client = client.clone();
            async move { client.request(1, "noreply").await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let err = within(client.request(1, "close")).await.unwrap_err();
        assert!(matches!(err, ClientError::ServerClosed), "{kind:?}: {err}");
        assert!(matches!(
            within(waiting).await.unwrap(),
            Err(ClientError::ServerClosed)
        ));
        assert!(matches!(within(client.closed()).await, ClientError::ServerClosed));
        assert!(matches!(client.close_reason(), Some(ClientError::ServerClosed)));
        let mut saw = false;
        while let Ok(event) = events.try_recv() {
            saw |= matches!(event, Event::Closed(ClientError::ServerClosed));
        }
        assert!(saw, "{kind:?}: Closed event");
        let err = client.request(1, "too late").await.unwrap_err();
        assert!(matches!(err, ClientError::ServerClosed));
        assert!(client.heartbeat().await.is_err());
        assert!(!client.wait_reconnect_requested().await);
        client.close().await;
        assert!(
            matches!(client.close_reason(), Some(ClientError::ServerClosed)),
            "first reason wins"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_by_client() {
    for kind in KINDS {
        let (server, client) = setup(kind, PacketConfig::default(), ClientOptions::default()).await;
        let waiting = tokio::spawn({
            let client = client.clone();
            async move { client.request(1, "noreply").await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.send(1, 999, "last words").await.unwrap();
        within(client.close()).await;
        let err = within(waiting).await.unwrap().unwrap_err();
        assert!(matches!(err, ClientError::Closed));
        assert_eq!(err.fault(), Fault::Local);
        assert!(matches!(client.request(1, "x").await, Err(ClientError::Closed)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            server.seen.packets.lock().len(),
            2,
            "{kind:?}: queued packets are written before closing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_and_connect_errors() {
    let (_server, client) = setup(Kind::Tcp, PacketConfig::default(), ClientOptions::default()).await;
    let err = client.request(40_000, "x").await.unwrap_err();
    assert!(matches!(err, ClientError::Encode(_)), "{err}");
    assert_eq!(err.fault(), Fault::Caller);
    let err = client.request(1, vec![b'x'; 70_000]).await.unwrap_err();
    assert!(matches!(err, ClientError::Encode(_)), "{err}");
    assert!(client.send(1, 40_000, "x").await.is_err());
    assert_eq!(within(client.request(1, "fine")).await.unwrap(), "fine");
    client.close().await;

    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = unused.local_addr().unwrap();
    drop(unused);
    let err = Client::connect_tcp(addr, PacketConfig::default(), ClientOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    assert_eq!(err.fault(), Fault::Network);
    let err = Client::connect_ws(
        &format!("ws://{addr}/"),
        PacketConfig::default(),
        ClientOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_closes_the_connection() {
    let server = TestServer::start(Kind::Tcp, PacketConfig::default()).await;
    let client = Client::connect_tcp(server.addr, PacketConfig::default(), ClientOptions::default())
        .await
        .unwrap();
    let mut status = client.status();
    assert_eq!(client.request(1, "hi").await.unwrap(), "hi");
    drop(client);
    // Both tasks end, so the status sender goes away.
    within(async { while status.changed().await.is_ok() {} }).await;
}

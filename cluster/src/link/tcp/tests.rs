//! Tests of TCP links over real sockets: both directions, heartbeats, silent and non-reading peers, garbage,
//! and uid lists over the frame limit.

use super::*;
use crate::link::Acceptor;
use bytes::Bytes;
use switchyard_protocol::link::{NodeState, Target, TraceParent};
use tokio::net::TcpListener;

fn fast() -> TcpLinkConfig {
    TcpLinkConfig {
        heartbeat_interval: Duration::from_millis(50),
        dead_after: Duration::from_millis(300),
        ..TcpLinkConfig::default()
    }
}

#[tokio::test]
async fn messages_cross_in_both_directions_and_heartbeats_stay_inside() {
    let mut acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), fast())
        .await
        .unwrap();
    let address = acceptor.local_addr().to_string();
    let mut gate = TcpConnector::new(fast()).connect(&address).await.unwrap();
    let mut node = acceptor.accept().await.unwrap();

    let body = Bytes::from_static(b"\x00\x00\x01\x00\x01{}");
    // Every other packet is traced: its trace context crosses the link with it.
    let trace = |cid: u64| (cid % 2 == 1).then(|| TraceParent::new([7; 16], cid.to_be_bytes(), 1).unwrap());
    for cid in 0..1000 {
        gate.tx
            .send(GateToNode::Packet {
                cid,
                uid: 7,
                body: body.clone(),
                trace: trace(cid),
                peer: None,
            })
            .await
            .unwrap();
    }
    for cid in 0..1000 {
        assert_eq!(
            node.rx.recv().await,
            Some(GateToNode::Packet {
                cid,
                uid: 7,
                body: body.clone(),
                trace: trace(cid),
                peer: None,
            })
        );
    }
    node.tx
        .send(NodeToGate::State(NodeState::Draining))
        .await
        .unwrap();
    node.tx
        .send(NodeToGate::Deliver {
            target: Target::Users(vec![1, 2]),
            packet: body.clone(),
            trace: None,
        })
        .await
        .unwrap();
    assert_eq!(gate.rx.recv().await, Some(NodeToGate::State(NodeState::Draining)));
    assert!(matches!(gate.rx.recv().await, Some(NodeToGate::Deliver { .. })));

    // Idle for several heartbeat intervals: the link stays up and no heartbeat is forwarded.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(gate.rx.try_recv().is_err());
    gate.tx.send(GateToNode::Heartbeat).await.unwrap();
    gate.tx
        .send(GateToNode::Disconnected { cid: 1, uid: 2 })
        .await
        .unwrap();
    assert_eq!(
        node.rx.recv().await,
        Some(GateToNode::Disconnected { cid: 1, uid: 2 })
    );
}

#[tokio::test]
async fn dropping_one_end_closes_the_other() {
    let mut acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), fast())
        .await
        .unwrap();
    let address = acceptor.local_addr().to_string();
    let gate = TcpConnector::new(fast()).connect(&address).await.unwrap();
    let mut node = acceptor.accept().await.unwrap();
    drop(gate);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), node.rx.recv())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_silent_peer_is_declared_dead() {
    // A "node" that accepts the connection and never writes a byte.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let mut gate = TcpConnector::new(fast()).connect(&address).await.unwrap();
    let (_silent, _) = listener.accept().await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), gate.rx.recv())
            .await
            .unwrap(),
        None
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn garbage_closes_the_link() {
    let mut acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), fast())
        .await
        .unwrap();
    let mut raw = TcpStream::connect(acceptor.local_addr()).await.unwrap();
    let mut node = acceptor.accept().await.unwrap();
    raw.write_all(&[0, 0, 0, 1, 0x7e]).await.unwrap(); // unknown type
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), node.rx.recv())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_closed_within_the_write_deadline() {
    // A "gate" that says hello, keeps heartbeating (so it is never silent) and never reads a byte.
    let config = TcpLinkConfig {
        write_timeout: Duration::from_millis(400),
        ..fast()
    };
    let mut acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let metrics = acceptor.metrics().links.clone();
    let mut raw = TcpStream::connect(acceptor.local_addr()).await.unwrap();
    let node = acceptor.accept().await.unwrap();
    let heartbeats = tokio::spawn(async move {
        let mut beat = BytesMut::new();
        switchyard_protocol::link::encode_gate_to_node(&GateToNode::Heartbeat, &mut beat).unwrap();
        loop {
            if raw.write_all(&beat).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    // The node pushes until its writes stall and the link closes under it.
    let packet = Bytes::from(vec![0u8; 60_000]);
    let started = std::time::Instant::now();
    let mut pushed = 0usize;
    loop {
        let deliver = NodeToGate::Deliver {
            target: Target::User(1),
            packet: packet.clone(),
            trace: None,
        };
        match tokio::time::timeout(Duration::from_secs(10), node.tx.send(deliver)).await {
            Ok(Ok(())) => pushed += 1,
            Ok(Err(_)) => break,
            Err(_) => panic!("the link neither took the push nor closed within 10 s"),
        }
    }
    assert!(pushed > 10, "only {pushed} pushes went out before the close");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
    assert_eq!(metrics.closed_by(LinkClose::WriteTimeout), 1);
    heartbeats.abort();
}

#[tokio::test]
async fn a_uid_list_over_the_frame_limit_arrives_whole_in_several_frames() {
    let small = TcpLinkConfig {
        max_frame_bytes: 4096,
        ..fast()
    };
    let mut acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), small.clone())
        .await
        .unwrap();
    let metrics = acceptor.metrics().links.clone();
    let mut gate = TcpConnector::new(small)
        .connect(&acceptor.local_addr().to_string())
        .await
        .unwrap();
    let node = acceptor.accept().await.unwrap();
    let uids: Vec<i64> = (0..5000).collect();
    let packet = Bytes::from_static(b"\x00\x00\x00\x01x");
    node.tx
        .send(NodeToGate::Deliver {
            target: Target::Users(uids.clone()),
            packet: packet.clone(),
            trace: None,
        })
        .await
        .unwrap();
    // Over the limit and not splittable: not sent, and the link stays up.
    node.tx
        .send(NodeToGate::Deliver {
            target: Target::Broadcast,
            packet: Bytes::from(vec![1; 5000]),
            trace: None,
        })
        .await
        .unwrap();
    node.tx.send(NodeToGate::State(NodeState::Busy)).await.unwrap();
    let mut seen = Vec::new();
    loop {
        match gate.rx.recv().await.unwrap() {
            NodeToGate::Deliver {
                target: Target::Users(run),
                packet: got,
                ..
            } => {
                assert_eq!(got, packet);
                assert!(run.len() * 8 < 4096);
                seen.extend(run);
            }
            NodeToGate::State(NodeState::Busy) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, uids);
    assert_eq!(metrics.split.get(), 1);
    assert_eq!(metrics.refused.get(), 1);
    assert_eq!(metrics.closed_by(LinkClose::InvalidFrame), 0);
}

#[tokio::test]
async fn connecting_to_nothing_fails_fast() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    assert!(matches!(
        TcpConnector::default().connect(&address).await,
        Err(LinkError::Io { .. })
    ));
}

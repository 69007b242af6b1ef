//! Codec throughput: packets/s and bytes/s for encoding and stream-decoding 64 B and 1 KiB payloads.

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_protocol::{ByteOrder, Frame, PacketConfig};

const PACKETS_PER_ITERATION: usize = 1024;

fn codec(c: &mut Criterion) {
    // due's benchmark shape: route 4, seq 4.
    let config = PacketConfig::new(ByteOrder::Big, 4, 4, 64 * 1024).expect("valid settings");
    for payload_len in [64usize, 1024] {
        let payload = vec![b'a'; payload_len];
        let mut stream = BytesMut::new();
        for seq in 0..PACKETS_PER_ITERATION {
            config
                .encode_data(1, seq as i32, &payload, &mut stream)
                .expect("fits");
        }
        let stream = stream.freeze();

        let mut group = c.benchmark_group(format!("payload_{payload_len}B"));
        group.throughput(Throughput::Elements(PACKETS_PER_ITERATION as u64));
        group.bench_function("encode/packets", |b| {
            let mut dst = BytesMut::with_capacity(stream.len());
            b.iter(|| {
                dst.clear();
                for seq in 0..PACKETS_PER_ITERATION {
                    config
                        .encode_data(1, seq as i32, &payload, &mut dst)
                        .expect("fits");
                }
                std::hint::black_box(&dst);
            });
        });
        group.bench_function("decode/packets", |b| {
            b.iter(|| decode_all(&config, &stream));
        });
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_function("decode/bytes", |b| {
            b.iter(|| decode_all(&config, &stream));
        });
        group.finish();
    }
}

fn decode_all(config: &PacketConfig, stream: &[u8]) -> usize {
    let mut buf = BytesMut::from(stream);
    let mut decoder = config.decoder();
    let mut payload_bytes = 0;
    while let Some(frame) = decoder.decode(&mut buf).expect("valid stream") {
        if let Frame::Data(data) = frame {
            payload_bytes += data.payload().len();
        }
    }
    assert_eq!(payload_bytes % PACKETS_PER_ITERATION, 0);
    std::hint::black_box(payload_bytes)
}

criterion_group!(benches, codec);
criterion_main!(benches);

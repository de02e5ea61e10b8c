//! Criterion benchmarks of the codec and reactors. `bench/compare-hg.sh`
//! runs the 1 KiB lines side by side with Mercurial's `wireprotoframing`.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use framegate_wire::frame::*;
use framegate_wire::stream::{Encoding, InboundStreams, OutboundStream};
use framegate_wire::{FrameDecoder, OutputMode, ServerConfig, ServerEvent, ServerReactor};

const FRAMES: usize = 100_000;
const KIB: usize = 1024;

fn data_frame(payload: Bytes, first: bool, last: bool) -> Frame {
    Frame {
        request_id: RequestId(1),
        stream_id: StreamId(1),
        stream_flags: if first {
            StreamFlags::BEGIN
        } else {
            StreamFlags::empty()
        },
        body: FrameBody::CommandData(CommandData {
            flags: if last {
                CommandDataFlags::EOS
            } else {
                CommandDataFlags::CONTINUATION
            },
            payload,
        }),
    }
}

/// Decodes every frame of `buf`; returns the payload bytes seen.
fn decode_payload_bytes(mut buf: BytesMut) -> usize {
    let mut dec = FrameDecoder::default();
    let mut n = 0;
    while let Some(f) = dec.decode(&mut buf).unwrap() {
        n += f.body.payload().len();
    }
    n
}

fn encoded(frames: &[Frame]) -> BytesMut {
    let mut wire = BytesMut::with_capacity(frames.iter().map(Frame::wire_len).sum());
    for f in frames {
        f.encode(&mut wire).unwrap();
    }
    wire
}

/// Text-like bytes (for zstd): words from a small vocabulary.
fn text(len: usize) -> Vec<u8> {
    let words = [
        "frame ", "stream ", "request ", "gateway ", "answer ", "proxy ", "zstd ", "\n",
    ];
    let mut x: u32 = 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        out.extend_from_slice(words[(x >> 16) as usize % words.len()].as_bytes());
    }
    out.truncate(len);
    out
}

fn one_kib(c: &mut Criterion) {
    let payload = Bytes::from(vec![0x61u8; KIB]);
    let frames: Vec<Frame> = (0..FRAMES)
        .map(|i| data_frame(payload.clone(), false, i + 1 == FRAMES))
        .collect();
    let wire = encoded(&frames).freeze();

    let mut g = c.benchmark_group("1kib");
    g.throughput(Throughput::Bytes((FRAMES * KIB) as u64));
    g.bench_function("encode_100k", |b| {
        let mut buf = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            buf.clear();
            for f in &frames {
                f.encode(&mut buf).unwrap();
            }
            black_box(buf.len())
        })
    });
    g.bench_function("decode_100k", |b| {
        // The input copy is set-up, not decoding: keep it out of the timing.
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |buf| black_box(decode_payload_bytes(buf)),
            BatchSize::LargeInput,
        )
    });
    let mut request: Vec<Frame> = vec![Frame {
        request_id: RequestId(1),
        stream_id: StreamId(1),
        stream_flags: StreamFlags::BEGIN,
        body: FrameBody::CommandName(CommandName::new("put", CommandNameFlags::HAVE_DATA)),
    }];
    request.extend(frames.iter().cloned());
    g.bench_function("server_reactor_100k_data_frames", |b| {
        b.iter(|| {
            let mut r = ServerReactor::new(
                ServerConfig::default(),
                OutputMode::Deferred,
                Encoding::Identity,
            );
            let mut n = 0;
            for f in request.iter().cloned() {
                r.handle_frame(f).unwrap();
                while let Some(ev) = r.poll_event() {
                    if let ServerEvent::Data { data, .. } = ev {
                        n += data.len();
                    }
                }
            }
            black_box(n)
        })
    });
    g.finish();
}

fn thirty_two_kib(c: &mut Criterion) {
    const N: usize = 2_000;
    let payload = Bytes::from(vec![0x62u8; 32 * KIB]);
    let frames: Vec<Frame> = (0..N)
        .map(|i| data_frame(payload.clone(), false, i + 1 == N))
        .collect();
    let wire = encoded(&frames).freeze();
    let mut g = c.benchmark_group("32kib");
    g.throughput(Throughput::Bytes((N * 32 * KIB) as u64));
    g.bench_function("decode_2k", |b| {
        // The input copy is set-up, not decoding: keep it out of the timing.
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |buf| black_box(decode_payload_bytes(buf)),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn zstd_stream(c: &mut Criterion) {
    const N: usize = 1_000;
    let chunks: Vec<Bytes> = (0..N).map(|i| Bytes::from(text(32 * KIB + i))).collect();
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let body = |p: &Bytes| {
        FrameBody::BytesResponse(BytesResponse {
            flags: BytesResponseFlags::CONTINUATION,
            payload: p.clone(),
        })
    };
    let mut g = c.benchmark_group("zstd_8mb");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("encode_1k_32kib", |b| {
        b.iter(|| {
            let mut out = OutboundStream::new(StreamId(2), Encoding::Zstd8Mb);
            let mut frames = Vec::with_capacity(N + 1);
            for p in &chunks {
                out.prepare(RequestId(1), body(p), true, &mut frames);
            }
            black_box(frames.len())
        })
    });
    let mut out = OutboundStream::new(StreamId(2), Encoding::Zstd8Mb);
    let mut frames = Vec::with_capacity(N + 1);
    for p in &chunks {
        out.prepare(RequestId(1), body(p), true, &mut frames);
    }
    g.bench_function("decode_1k_32kib", |b| {
        b.iter(|| {
            let mut inbound = InboundStreams::new(Side::Server, DEFAULT_MAX_FRAME_SIZE);
            let mut n = 0;
            for f in frames.iter().cloned() {
                if let Some(f) = inbound.receive(f).unwrap() {
                    n += f.body.payload().len();
                }
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = one_kib, thirty_two_kib, zstd_stream
}
criterion_main!(benches);

//! Microbenchmarks of the hot paths, each beside a `memcpy` of the same size.
//!
//! `cargo bench -p sockeye-proto --bench proto`; compare each group's throughput with the
//! `memcpy` group's for the same size (the machines are shared: read ratios, not times).

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sockeye_proto::extension::DeflateConfig;
use sockeye_proto::frame::{FrameHead, MAX_HEAD_LEN, OpCode};
use sockeye_proto::mask::{FixedMask, apply_mask};
use sockeye_proto::utf8::Utf8Validator;
use sockeye_proto::{Config, Connection, Event, Role};

const SIZES: [(usize, &str); 4] = [
    (20, "20B"),
    (1 << 10, "1KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
];
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Mostly ASCII with a two-, three- and four-byte code point every 64 bytes, like real text.
fn text(len: usize) -> Vec<u8> {
    let unit = "The quick brown fox jumps over the lazy dog, caf\u{e9} \u{20ac}5 \u{1f980} ok.\n";
    let mut out = unit.repeat(len / unit.len() + 1).into_bytes();
    out.truncate(len);
    while std::str::from_utf8(&out).is_err() {
        out.pop();
        out.push(b'.');
    }
    out
}

fn masked_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut head = FrameHead::new(true, opcode, payload.len() as u64);
    head.mask = Some(KEY);
    let mut bytes = [0; MAX_HEAD_LEN];
    let len = head.encode(&mut bytes);
    let mut out = bytes[..len].to_vec();
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], KEY, 0);
    out
}

fn config() -> Config {
    Config::builder().max_frame_size(2 << 20).build().unwrap()
}

fn receive(c: &mut Criterion, name: &str, opcode: OpCode) {
    let mut group = c.benchmark_group(name);
    for (size, label) in SIZES {
        let frame = masked_frame(opcode, &text(size));
        group.throughput(Throughput::Bytes(size as u64));
        let now = Instant::now();
        let mut conn = Connection::new(Role::Server, config(), now);
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_batched_ref(
                || BytesMut::from(&frame[..]),
                |buf| {
                    let _ = conn.handle_bytes(buf, now);
                    match conn.poll_event() {
                        Some(Event::Message(m)) => black_box(m),
                        other => panic!("unexpected {other:?}"),
                    }
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn decode_unmask(c: &mut Criterion) {
    receive(c, "decode_unmask_binary", OpCode::Binary);
    receive(c, "decode_unmask_text", OpCode::Text);
}

fn encode_mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_mask");
    for (size, label) in SIZES {
        let payload = Bytes::from(text(size));
        group.throughput(Throughput::Bytes(size as u64));
        let mut conn = Connection::new(Role::Client, config(), Instant::now())
            .with_mask_source(Box::new(FixedMask(KEY)));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                conn.send_binary(payload.clone()).unwrap();
                black_box(conn.poll_transmit())
            });
        });
    }
    group.finish();
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8_validate");
    for (size, label) in SIZES {
        let input = text(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                v.feed(black_box(&input)).unwrap();
                v.finish().unwrap();
            });
        });
    }
    group.finish();
}

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask_in_place");
    for (size, label) in SIZES {
        let mut buf = text(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), KEY, 0));
        });
    }
    group.finish();
}

/// Masking where payloads really start: a header of 2 to 14 bytes before them in the read
/// buffer. `+0` starts at a 64-byte boundary; `+8` is where a 126 to 64 KiB frame's payload
/// starts after its header (2 + 2 + a 4-byte key) in a 16-byte aligned buffer, `+14` a
/// larger frame's (2 + 8 + 4). From 2 KiB on, where masking starts its blocks at an aligned
/// address, the three should cost the same.
fn mask_unaligned(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask_in_place_unaligned");
    for (size, label) in [(1 << 10, "1KiB"), (16 << 10, "16KiB"), (1 << 20, "1MiB")] {
        let mut buf = vec![b'x'; size + 128];
        let base = buf.as_ptr().align_offset(64);
        group.throughput(Throughput::Bytes(size as u64));
        for start in [0, 8, 14] {
            let slice = &mut buf[base + start..base + start + size];
            group.bench_function(BenchmarkId::new(label, format!("+{start}")), |b| {
                b.iter(|| apply_mask(black_box(&mut *slice), KEY, 0));
            });
        }
    }
    group.finish();
}

fn memcpy(c: &mut Criterion) {
    let mut group = c.benchmark_group("memcpy");
    for (size, label) in SIZES {
        let src = text(size);
        let mut dst = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| dst.copy_from_slice(black_box(&src)));
        });
    }
    group.finish();
}

/// A JSON-like corpus: records with repeating keys and varying values, as chat or API traffic.
fn json(len: usize) -> String {
    let mut out = String::with_capacity(len + 128);
    let mut i = 0u32;
    while out.len() < len {
        let _ = write!(
            out,
            "{{\"id\":{i},\"room\":\"lobby\",\"user\":\"user{}\",\"text\":\"message number {} from the load generator\",\"ts\":{}}},",
            i % 97,
            i.wrapping_mul(2_654_435_761) % 10_000,
            1_700_000_000u64 + u64::from(i) * 17
        );
        i += 1;
    }
    out.truncate(len);
    out
}

fn deflate_pair() -> (Connection, Connection) {
    let deflate = DeflateConfig::new();
    let (answer, server_ext) = deflate.accept_offers(&[deflate.offer()]).unwrap();
    let client_ext = deflate.accept_response(&answer).unwrap();
    let now = Instant::now();
    let client = Connection::new(Role::Client, config(), now)
        .with_extension(Box::new(client_ext))
        .with_mask_source(Box::new(FixedMask(KEY)));
    let server = Connection::new(Role::Server, config(), now).with_extension(Box::new(server_ext));
    (client, server)
}

fn deflate(c: &mut Criterion) {
    let sizes = [
        (1 << 10, "1KiB"),
        (16 << 10, "16KiB"),
        (256 << 10, "256KiB"),
    ];
    let mut group = c.benchmark_group("deflate_compress");
    for (size, label) in sizes {
        let text = sockeye_proto::Utf8Bytes::from(json(size));
        group.throughput(Throughput::Bytes(size as u64));
        let (_, mut server) = deflate_pair();
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                server.send_text(text.clone()).unwrap();
                black_box(server.poll_transmit())
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("deflate_decompress");
    for (size, label) in sizes {
        let text = json(size);
        group.throughput(Throughput::Bytes(size as u64));
        // Frames compressed with a fresh context each, so each decodes on its own.
        let wire = {
            let mut frames = Vec::new();
            for _ in 0..64 {
                let (_, mut s) = deflate_pair();
                s.send_text(text.as_str()).unwrap();
                let mut bytes = Vec::new();
                while let Some(chunk) = s.poll_transmit() {
                    bytes.extend_from_slice(&chunk);
                }
                frames.push(bytes);
            }
            frames
        };
        let mut next = 0;
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_batched_ref(
                || {
                    // A fresh receiver per message: the frames do not share a context.
                    let (c, _) = deflate_pair();
                    next = (next + 1) % wire.len();
                    (c, BytesMut::from(&wire[next][..]))
                },
                |(conn, buf)| {
                    let _ = conn.handle_bytes(buf, Instant::now());
                    black_box(conn.poll_event())
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = short();
    targets = memcpy, mask, mask_unaligned, utf8, decode_unmask, encode_mask, deflate
}
criterion_main!(benches);

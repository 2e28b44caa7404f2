//! A decompression bomb: about 1 MiB of deflate data that would inflate to 1 GiB is refused with
//! 1009 while the process's heap stays bounded by the message limit.
//!
//! Its own test binary, so the counting allocator sees this test alone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::BytesMut;
use flate2::{Compress, Compression, FlushCompress};
use sockeye_proto::extension::{DeflateConfig, ExtensionParams};
use sockeye_proto::frame::{FrameHead, MAX_HEAD_LEN, OpCode, Rsv};
use sockeye_proto::{CloseCode, Config, Connection, Event, Role};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers every call to the system allocator and only counts sizes. `realloc` is passed
// through (glibc grows large blocks in place with mremap), so a growing buffer counts once.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on unchanged.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        new
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `dealloc` is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1 << 20;

/// Deflate data for `mib` MiB of zeros, made without holding the zeros: once the window is
/// full of zeros, each further MiB compresses to the same bytes.
fn bomb(mib: usize) -> Vec<u8> {
    let zeros = vec![0u8; MIB];
    let mut c = Compress::new_with_window_bits(Compression::best(), false, 15);
    let chunk = |c: &mut Compress| {
        let mut out = Vec::with_capacity(64 << 10);
        c.compress_vec(&zeros, &mut out, FlushCompress::Sync)
            .unwrap();
        out
    };
    let first = chunk(&mut c);
    let steady = chunk(&mut c);
    assert_eq!(chunk(&mut c), steady, "the steady-state chunk repeats");
    let mut data = first;
    for _ in 1..mib {
        data.extend_from_slice(&steady);
    }
    // The message's data ends without the sync flush's 00 00 ff ff (RFC 7692 section 7.2.1).
    assert!(data.ends_with(&[0, 0, 0xff, 0xff]));
    data.truncate(data.len() - 4);
    data
}

#[test]
fn decompression_bomb_is_refused_with_bounded_memory() {
    let data = bomb(1024);
    assert!(data.len() < 2 * MIB, "{} bytes compressed", data.len());

    let limit = 16 * MIB;
    let config = Config::builder()
        .max_message_size(limit)
        .max_frame_size(4 * MIB)
        .build()
        .unwrap();
    let deflate = DeflateConfig::new();
    let (response, _server_side) = deflate.accept_offers(&[deflate.offer()]).unwrap();
    assert_eq!(response, ExtensionParams::new("permessage-deflate"));
    let client_side = deflate.accept_response(&response).unwrap();
    let mut client =
        Connection::new(Role::Client, config, Instant::now()).with_extension(Box::new(client_side));

    // One compressed message from the server, in 1 MiB frames.
    let mut wire = BytesMut::new();
    let chunks: Vec<&[u8]> = data.chunks(MIB).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Binary
        } else {
            OpCode::Continuation
        };
        let mut head = FrameHead::new(i + 1 == chunks.len(), opcode, chunk.len() as u64);
        if i == 0 {
            head.rsv = Rsv::RSV1;
        }
        let mut bytes = [0; MAX_HEAD_LEN];
        let len = head.encode(&mut bytes);
        wire.extend_from_slice(&bytes[..len]);
        wire.extend_from_slice(chunk);
    }
    let baseline = CURRENT.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);

    while client.handle_bytes(&mut wire, Instant::now()).is_paused() {}
    let closed = std::iter::from_fn(|| client.poll_event())
        .find_map(|e| match e {
            Event::Closed(c) => Some(c),
            _ => None,
        })
        .expect("the connection closed");
    assert_eq!(closed.code(), CloseCode::MESSAGE_TOO_BIG);

    let growth = PEAK.load(Ordering::Relaxed) - baseline;
    // The limit, the inflater's state, and some slack; nowhere near the 1 GiB it would inflate to.
    assert!(growth < limit + 4 * MIB, "heap grew by {growth} bytes");
    // And it did inflate up to the limit rather than stopping early for another reason.
    assert!(growth > limit / 2, "heap grew by only {growth} bytes");
}

//! Heap held per idle connection pair once permessage-deflate has been used both ways, with and
//! without context takeover. Its own test binary so the counting allocator sees it alone; run
//! with `--nocapture` to read the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::BytesMut;
use sockeye_proto::extension::DeflateConfig;
use sockeye_proto::{Config, Connection, Event, Message, Role};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers every call to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        CURRENT.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `dealloc` is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PAIRS: usize = 50;

fn json(len: usize) -> String {
    let mut out = String::new();
    let mut i = 0u32;
    while out.len() < len {
        let _ = write!(
            out,
            "{{\"id\":{i},\"user\":\"u{}\",\"text\":\"hello from sockeye\",\"ok\":true}},",
            i * 7
        );
        i += 1;
    }
    out.truncate(len);
    out
}

fn pass(from: &mut Connection, to: &mut Connection) -> usize {
    let mut buf = BytesMut::new();
    while let Some(chunk) = from.poll_transmit() {
        buf.extend_from_slice(&chunk);
    }
    let wire = buf.len();
    while to.handle_bytes(&mut buf, Instant::now()).is_paused() {}
    while let Some(event) = to.poll_event() {
        assert!(matches!(event, Event::Message(Message::Text(_))));
    }
    wire
}

/// Heap per idle pair (client + server connection) after one message each way.
fn per_pair(client: &DeflateConfig, server: &DeflateConfig) -> (usize, usize) {
    let text = json(4096);
    let before = CURRENT.load(Ordering::Relaxed);
    let mut pairs = Vec::with_capacity(PAIRS);
    let mut wire = 0;
    for _ in 0..PAIRS {
        let (answer, server_ext) = server.accept_offers(&[client.offer()]).unwrap();
        let client_ext = client.accept_response(&answer).unwrap();
        let now = Instant::now();
        let mut c = Connection::new(Role::Client, Config::default(), now)
            .with_extension(Box::new(client_ext));
        let mut s = Connection::new(Role::Server, Config::default(), now)
            .with_extension(Box::new(server_ext));
        c.send_text(text.as_str()).unwrap();
        wire = pass(&mut c, &mut s);
        s.send_text(text.as_str()).unwrap();
        pass(&mut s, &mut c);
        pairs.push((c, s));
    }
    let held = CURRENT.load(Ordering::Relaxed) - before;
    drop(pairs);
    (held / PAIRS, wire)
}

#[test]
fn memory_per_connection_with_and_without_context_takeover() {
    let takeover = DeflateConfig::new();
    let no_takeover = DeflateConfig::new()
        .server_no_context_takeover(true)
        .client_no_context_takeover(true);
    let plain = {
        let before = CURRENT.load(Ordering::Relaxed);
        let conns: Vec<_> = (0..PAIRS)
            .flat_map(|_| {
                [Role::Client, Role::Server]
                    .map(|r| Connection::new(r, Config::default(), Instant::now()))
            })
            .collect();
        let held = CURRENT.load(Ordering::Relaxed) - before;
        drop(conns);
        held / PAIRS
    };
    let (with, wire_with) = per_pair(&takeover, &takeover);
    let (without, wire_without) = per_pair(&no_takeover, &no_takeover);
    eprintln!("idle pair without deflate: {plain} bytes");
    eprintln!(
        "idle pair, context takeover: {with} bytes (4096-byte JSON message: {wire_with} bytes on the wire)"
    );
    eprintln!("idle pair, no context takeover: {without} bytes ({wire_without} bytes on the wire)");
    // Context takeover keeps a compressor and a decompressor per connection.
    assert!(with > 200 << 10, "{with}");
    assert!(with < 1 << 20, "{with}");
    // Without it, an idle connection holds no zlib state at all.
    assert!(without < plain + (4 << 10), "{without} vs {plain}");
    assert!(wire_with < 4096 / 2 && wire_without < 4096 / 2);
}

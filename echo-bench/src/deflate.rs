//! The permessage-deflate workload (RFC 7692): the same load for every server that speaks it.
//!
//! The client offers what browsers offer (`permessage-deflate; client_max_window_bits`), reads
//! what the server agreed to, and then compresses for real, per connection: one raw deflate
//! stream per direction, kept across messages unless `client_no_context_takeover` was agreed,
//! each message ended with a sync flush whose `00 00 ff ff` tail is removed (RFC 7692 7.2.1).
//! So every server decompresses a real stream and compresses its answers. Messages are 1 KiB
//! JSON-like texts (chat and ticker objects with varied values) from a pool of 64, larger than
//! the 32 KiB window together, so a message never finds its own previous copy in the window.
//! Every reply must have RSV1 set on its first frame; every echoed message is inflated and
//! compared with what was sent.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::load::{self, Outcome, Spec, Target, err};

/// What browsers offer: permessage-deflate, context takeover, any client window.
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";
/// The same, asking both sides to reset their context after each message.
pub const OFFER_NO_CTX: &str = "permessage-deflate; server_no_context_takeover; \
                                client_no_context_takeover; client_max_window_bits";

const MASK: [u8; 4] = [0x5a, 0x13, 0xc4, 0x77];
/// Distinct messages: 64 x 1 KiB is twice the deflate window.
const POOL: usize = 64;

/// The parameters the server agreed to.
#[derive(Debug, Clone)]
pub struct Negotiated {
    /// The `Sec-WebSocket-Extensions` value of the response.
    pub header: String,
    /// The server resets its compressor after each message.
    pub server_no_ctx: bool,
    /// The client must reset its compressor after each message.
    pub client_no_ctx: bool,
    /// The client's compressor window (`client_max_window_bits`, 15 when not given).
    pub client_bits: u8,
}

impl Negotiated {
    /// The permessage-deflate agreement in a response head, if there is one.
    pub fn from_head(head: &str) -> Option<Self> {
        let value = head.split("\r\n").find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| v.trim().to_string())
        })?;
        let mut params = value.split(';').map(str::trim);
        if params.next()? != "permessage-deflate" {
            return None;
        }
        let mut n = Self {
            header: value.clone(),
            server_no_ctx: false,
            client_no_ctx: false,
            client_bits: 15,
        };
        for p in params {
            let (name, val) = p.split_once('=').map_or((p, None), |(a, b)| (a.trim(), Some(b.trim())));
            match name {
                "server_no_context_takeover" => n.server_no_ctx = true,
                "client_no_context_takeover" => n.client_no_ctx = true,
                "client_max_window_bits" => {
                    if let Some(bits) = val.and_then(|v| v.trim_matches('"').parse::<u8>().ok()) {
                        // zlib's raw deflate has no 8-bit window: 9 is the smallest it makes.
                        n.client_bits = bits.clamp(9, 15);
                    }
                }
                _ => {}
            }
        }
        Some(n)
    }
}

/// One connection's two deflate streams.
struct Codec {
    comp: Compress,
    decomp: Decompress,
    client_no_ctx: bool,
    /// The compressed payload plus the `00 00 ff ff` tail, for inflating.
    scratch: Vec<u8>,
}

impl Codec {
    fn new(n: &Negotiated) -> Self {
        Self {
            // Level 6: zlib's default, what browsers use.
            comp: Compress::new_with_window_bits(Compression::new(6), false, n.client_bits),
            // A 15-bit window inflates whatever window the server used.
            decomp: Decompress::new_with_window_bits(false, 15),
            client_no_ctx: n.client_no_ctx,
            scratch: Vec::with_capacity(2048),
        }
    }

    /// Appends `msg` compressed (without the sync flush's tail) to `out`.
    fn compress(&mut self, msg: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let start_in = self.comp.total_in();
        let start_len = out.len();
        out.reserve(msg.len() + 64);
        loop {
            let consumed = (self.comp.total_in() - start_in) as usize;
            self.comp
                .compress_vec(&msg[consumed..], out, FlushCompress::Sync)
                .map_err(|e| err(format!("deflate: {e}")))?;
            if (self.comp.total_in() - start_in) as usize == msg.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(256);
        }
        if out.len() < start_len + 4 || !out.ends_with(&[0, 0, 0xff, 0xff]) {
            return Err(err("deflate: no sync flush tail"));
        }
        out.truncate(out.len() - 4);
        if self.client_no_ctx {
            self.comp.reset();
        }
        Ok(())
    }

    /// Inflates one message's payload into `out` (cleared first), at most `limit` bytes.
    fn decompress(&mut self, payload: &[u8], out: &mut Vec<u8>, limit: usize) -> io::Result<()> {
        self.scratch.clear();
        self.scratch.extend_from_slice(payload);
        self.scratch.extend_from_slice(&[0, 0, 0xff, 0xff]);
        out.clear();
        let start_in = self.decomp.total_in();
        loop {
            out.reserve(2048);
            let consumed = (self.decomp.total_in() - start_in) as usize;
            let before = out.len();
            self.decomp
                .decompress_vec(&self.scratch[consumed..], out, FlushDecompress::Sync)
                .map_err(|e| err(format!("the server's deflate stream is corrupt: {e}")))?;
            let now = (self.decomp.total_in() - start_in) as usize;
            if now == self.scratch.len() && out.len() < out.capacity() {
                return Ok(());
            }
            if out.len() > limit {
                return Err(err("inflated reply longer than what was sent"));
            }
            if now == consumed && out.len() == before {
                return Err(err("the server's deflate stream is truncated"));
            }
        }
    }
}

/// A small xorshift generator: the same messages every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: [&str; 48] = [
    "the", "market", "opened", "higher", "after", "news", "that", "rates", "would", "hold",
    "steady", "traders", "watched", "volume", "climb", "across", "tech", "and", "energy", "while",
    "bonds", "slipped", "ok", "see", "you", "at", "lunch", "meeting", "moved", "to", "three",
    "did", "anyone", "check", "the", "deploy", "logs", "looks", "fine", "here", "thanks", "for",
    "update", "shipping", "tomorrow", "weather", "great", "again",
];

/// Message `i` of the pool: a chat or a ticker object of exactly `size` bytes (at least 200).
fn message(rng: &mut Rng, i: usize, size: usize) -> Vec<u8> {
    let mut s = if i.is_multiple_of(2) {
        format!(
            "{{\"type\":\"chat\",\"id\":{},\"room\":\"room-{}\",\"user\":{{\"id\":{},\"name\":\"user_{:05}\",\"status\":\"{}\"}},\"ts\":{},\"reactions\":{{\"like\":{},\"laugh\":{}}},\"reply_to\":{},\"text\":\"",
            rng.below(1_000_000_000),
            rng.below(500),
            rng.below(100_000),
            rng.below(100_000),
            ["online", "away", "busy"][rng.below(3) as usize],
            1_764_000_000_000 + rng.below(1_000_000_000),
            rng.below(50),
            rng.below(20),
            rng.below(1_000_000_000),
        )
    } else {
        let sym: String = (0..4).map(|_| char::from(b'A' + rng.below(26) as u8)).collect();
        let mut s = format!(
            "{{\"type\":\"ticker\",\"symbol\":\"{sym}\",\"seq\":{},\"bid\":{}.{:02},\"ask\":{}.{:02},\"volume\":{},\"trades\":[",
            rng.below(10_000_000),
            rng.below(1000),
            rng.below(100),
            rng.below(1000),
            rng.below(100),
            rng.below(100_000_000),
        );
        for t in 0..5 {
            if t > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "{{\"p\":{}.{:04},\"q\":{},\"side\":\"{}\",\"t\":{}}}",
                rng.below(1000),
                rng.below(10_000),
                rng.below(10_000),
                if rng.below(2) == 0 { "buy" } else { "sell" },
                1_764_000_000_000 + rng.below(1_000_000_000),
            ));
        }
        s.push_str("],\"note\":\"");
        s
    };
    // Words until the object is `size` bytes with its closing `"}`.
    while s.len() + 2 < size {
        let w = if rng.below(5) == 0 {
            format!("{}", rng.below(100_000))
        } else {
            WORDS[rng.below(WORDS.len() as u64) as usize].to_string()
        };
        s.push_str(&w);
        s.push(' ');
    }
    s.truncate(size - 2);
    s.push_str("\"}");
    s.into_bytes()
}

/// The pool of messages, each `size` bytes.
pub fn messages(size: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..POOL).map(|i| message(&mut rng, i, size.max(256))).collect()
}

/// Appends a masked text frame with RSV1 (compressed) carrying `payload`.
fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let n = payload.len();
    out.push(0x80 | 0x40 | 0x1);
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if let Ok(n16) = u16::try_from(n) {
        out.push(0x80 | 126);
        out.extend_from_slice(&n16.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

/// Reads a server frame header at the start of `b`: (b0, payload length, header length).
fn header(b: &[u8]) -> io::Result<Option<(u8, u64, usize)>> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[1] & 0x80 != 0 {
        return Err(err("server sent a masked frame"));
    }
    let (len, hdr) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")), 10),
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    Ok(Some((b[0], len, hdr)))
}

/// Checks a frame's flags: what it carries (`Some(first)` for data: whether it starts a
/// message) or `None` for a ping or a pong.
fn check_flags(b0: u8, in_message: bool) -> io::Result<Option<bool>> {
    if b0 & 0x30 != 0 {
        return Err(err("server set RSV2 or RSV3"));
    }
    let rsv1 = b0 & 0x40 != 0;
    match b0 & 0x0f {
        0x1 if !in_message => {
            if !rsv1 {
                return Err(err("reply not compressed (RSV1 clear)"));
            }
            Ok(Some(true))
        }
        0x0 if in_message => {
            if rsv1 {
                return Err(err("RSV1 set on a continuation frame"));
            }
            Ok(Some(false))
        }
        0x9 | 0xa if !rsv1 => Ok(None),
        0x2 => Err(err("echo of a text message came back as binary")),
        0x8 => Err(err("server sent Close")),
        o => Err(err(format!("unexpected frame (opcode {o:#x}, RSV1 {rsv1})"))),
    }
}

/// Connects with `offer` and returns the stream, the bytes past the response and the agreement.
async fn connect(target: &Target, offer: &str) -> io::Result<(TcpStream, Vec<u8>, Negotiated)> {
    let (s, rest, head) = load::connect_offer(target, Some(offer)).await?;
    let n = Negotiated::from_head(&head)
        .ok_or_else(|| err("the server did not agree to permessage-deflate"))?;
    Ok((s, rest, n))
}

/// Sends `msgs` one at a time on a fresh connection, each echo checked. Returns the stream
/// (held open by the caller) and the agreement.
async fn echo_some(target: &Target, offer: &str, msgs: &[&[u8]]) -> io::Result<(TcpStream, Negotiated)> {
    let (mut s, mut buf, n) = connect(target, offer).await?;
    let mut codec = Codec::new(&n);
    let mut compressed = Vec::new();
    let mut frame = Vec::new();
    let mut inflated = Vec::new();
    for msg in msgs {
        compressed.clear();
        codec.compress(msg, &mut compressed)?;
        frame.clear();
        push_frame(&mut frame, &compressed);
        s.write_all(&frame).await?;
        let mut payload = Vec::new();
        let mut in_message = false;
        loop {
            let Some((b0, len, hdr)) = header(&buf)? else {
                if s.read_buf(&mut buf).await? == 0 {
                    return Err(err("server closed the connection"));
                }
                continue;
            };
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > 1 << 20 {
                return Err(err("reply frame too long"));
            }
            while buf.len() < hdr + len {
                if s.read_buf(&mut buf).await? == 0 {
                    return Err(err("server closed the connection"));
                }
            }
            let flags = check_flags(b0, in_message)?;
            if flags.is_some() {
                payload.extend_from_slice(&buf[hdr..hdr + len]);
                in_message = true;
            }
            buf.drain(..hdr + len);
            if flags.is_some() && b0 & 0x80 != 0 {
                break;
            }
        }
        codec.decompress(&payload, &mut inflated, msg.len() * 2 + 64)?;
        if inflated != *msg {
            return Err(err("inflated echo differs from what was sent"));
        }
    }
    Ok((s, n))
}

/// The echo check of `run`: three different messages on one connection, each echo inflated and
/// compared (so the server's context is kept, or reset, coherently across messages).
pub async fn probe(target: &Target) -> Result<String, String> {
    let pool = messages(1024);
    let msgs: Vec<&[u8]> = pool.iter().take(3).map(Vec::as_slice).collect();
    tokio::time::timeout(Duration::from_secs(5), echo_some(target, OFFER, &msgs))
        .await
        .map_err(|_| "deflate echo check timed out".to_string())?
        .map(|(_, n)| n.header)
        .map_err(|e| e.to_string())
}

/// Server RSS per idle connection with deflate agreed, each connection idle after one echoed
/// message.
pub struct IdleRss {
    /// Connections held.
    pub conns: usize,
    /// Server RSS before and after (KiB).
    pub before_kib: u64,
    pub after_kib: u64,
    /// Failed connections.
    pub errors: usize,
    /// The first failure.
    pub first_error: Option<String>,
    /// What the server agreed to.
    pub negotiated: Option<String>,
}

impl IdleRss {
    /// KiB per connection.
    pub fn per_conn_kib(&self) -> f64 {
        (self.after_kib as f64 - self.before_kib as f64) / self.conns.max(1) as f64
    }
}

/// Opens `count` connections with `offer`, each echoing one message, and reads the server's
/// RSS before and after (1.5 s to settle each time: past Sockeye's 1 s idle buffer release).
pub fn idle_rss(target: &Target, pid: u32, offer: &'static str, count: usize) -> IdleRss {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let pool = Arc::new(messages(1024));
        let settle = || tokio::time::sleep(Duration::from_millis(1500));
        let mut out = IdleRss {
            conns: 0,
            before_kib: 0,
            after_kib: 0,
            errors: 0,
            first_error: None,
            negotiated: None,
        };
        // One connection first, so that lazily set up state is in the baseline.
        let warm = echo_some(target, offer, &[&pool[0]]).await;
        settle().await;
        out.before_kib = crate::rss_kib(pid).unwrap_or(0);
        let mut set = JoinSet::new();
        let mut held = Vec::with_capacity(count);
        let mut started = 0;
        while started < count || !set.is_empty() {
            while started < count && set.len() < 100 {
                let (t, pool) = (target.clone(), Arc::clone(&pool));
                let i = started;
                set.spawn(async move {
                    tokio::time::timeout(
                        Duration::from_secs(10),
                        echo_some(&t, offer, &[&pool[i % POOL]]),
                    )
                    .await
                    .unwrap_or_else(|_| Err(err("timed out")))
                });
                started += 1;
            }
            match set.join_next().await {
                Some(Ok(Ok((s, n)))) => {
                    out.negotiated.get_or_insert(n.header);
                    held.push(s);
                }
                Some(Ok(Err(e))) => {
                    out.errors += 1;
                    out.first_error.get_or_insert(e.to_string());
                }
                Some(Err(e)) => {
                    out.errors += 1;
                    out.first_error.get_or_insert(e.to_string());
                }
                None => {}
            }
        }
        out.conns = held.len();
        settle().await;
        out.after_kib = crate::rss_kib(pid).unwrap_or(0);
        drop((held, warm));
        out
    })
}

struct Shared {
    msgs: Vec<Vec<u8>>,
    size: usize,
    depth: usize,
}

#[derive(Default)]
struct ConnOutcome {
    msgs: u64,
    lat_ns: Vec<u64>,
    error: Option<String>,
    verified: bool,
    negotiated: Option<String>,
    reply_bytes: u64,
}

/// Runs the deflate load with `offer` on its own 2-worker runtime.
pub fn run(target: &Target, spec: &Spec, offer: &str) -> Outcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run_async(target, spec, offer))
}

async fn run_async(target: &Target, spec: &Spec, offer: &str) -> Outcome {
    let shared = Arc::new(Shared {
        msgs: messages(spec.size),
        size: spec.size.max(256),
        depth: spec.depth,
    });
    let (conns, connect_errors) = load::connect_many_offer(target, spec.conns, 100, Some(offer)).await;
    let mut out = Outcome {
        size: shared.size,
        secs: spec.duration.as_secs_f64(),
        errors: connect_errors.len() as u64,
        first_error: connect_errors.into_iter().next(),
        ..Outcome::default()
    };
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + spec.warmup;
    let deadline = measure_from + spec.duration;
    let cpu = spec.server_pid.map(|pid| {
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let before = load::cpu_secs(pid)?;
            tokio::time::sleep_until(deadline.into()).await;
            Some(load::cpu_secs(pid)? - before)
        })
    });
    let mut set = JoinSet::new();
    for (i, (stream, leftover, head)) in conns.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        set.spawn(async move {
            let mut c = ConnOutcome::default();
            let r = match Negotiated::from_head(&head) {
                Some(n) => {
                    c.negotiated = Some(n.header.clone());
                    drive(stream, leftover, &n, &shared, i, (start, measure_from, deadline), &mut c).await
                }
                None => Err(err("the server did not agree to permessage-deflate")),
            };
            if let Err(e) = r {
                c.error = Some(e.to_string());
            }
            c
        });
    }
    while let Some(r) = set.join_next().await {
        match r {
            Ok(c) => {
                out.msgs += c.msgs;
                out.reply_bytes += c.reply_bytes;
                out.lat_ns.extend_from_slice(&c.lat_ns);
                out.verified += u64::from(c.verified);
                if out.negotiated.is_none() {
                    out.negotiated = c.negotiated;
                }
                if let Some(e) = c.error {
                    out.errors += 1;
                    out.first_error.get_or_insert(e);
                }
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e.to_string());
            }
        }
    }
    out.lat_ns.sort_unstable();
    if let Some(cpu) = cpu {
        out.server_cpu_secs = cpu.await.ok().flatten();
    }
    out
}

/// Drives one connection until the deadline: `depth` compressed messages in flight, each reply
/// checked (RSV1, opcode) and inflated and compared with the message sent.
async fn drive(
    stream: TcpStream,
    leftover: Vec<u8>,
    n: &Negotiated,
    sh: &Shared,
    conn: usize,
    (start, measure_from, deadline): (Instant, Instant, Instant),
    c: &mut ConnOutcome,
) -> io::Result<()> {
    let mut codec = Codec::new(n);
    let mut rbuf = vec![0u8; 64 << 10];
    let mut rend = leftover.len();
    rbuf[..rend].copy_from_slice(&leftover);
    // Masked frames not yet written, from `woff`.
    let mut wbuf: Vec<u8> = Vec::with_capacity(sh.depth * (sh.size + 16));
    let mut woff = 0usize;
    let mut compressed = Vec::with_capacity(sh.size + 64);
    let mut inflated = Vec::with_capacity(sh.size + 64);
    // The message being received: its compressed payload so far, and whether one is open.
    let mut payload: Vec<u8> = Vec::with_capacity(sh.size + 64);
    let mut in_message = false;
    // Frame being read: (data, FIN, bytes of payload still to come).
    let mut frame: Option<(bool, bool, usize)> = None;
    // Messages in flight: pool index and send time.
    let mut sent: VecDeque<(usize, Instant)> = VecDeque::with_capacity(sh.depth + 1);
    let mut next = (conn * 7) % POOL;

    tokio::time::sleep_until(start.into()).await;
    let now = Instant::now();
    for _ in 0..sh.depth {
        compressed.clear();
        codec.compress(&sh.msgs[next], &mut compressed)?;
        push_frame(&mut wbuf, &compressed);
        sent.push_back((next, now));
        next = (next + 1) % POOL;
    }

    loop {
        while woff < wbuf.len() {
            match stream.try_write(&wbuf[woff..]) {
                Ok(k) => woff += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if woff == wbuf.len() {
            wbuf.clear();
            woff = 0;
        }
        let got = match load::read_when_ready(&stream, woff < wbuf.len(), deadline, &mut rbuf[rend..]).await? {
            load::Step::Read(k) => k,
            load::Step::Again => continue,
            load::Step::Deadline => return Ok(()),
        };
        rend += got;
        let mut pos = 0usize;
        let mut completed = 0usize;
        loop {
            let (data, fin, left) = match frame {
                Some(f) => f,
                None => {
                    let Some((b0, len, hdr)) = header(&rbuf[pos..rend])? else {
                        break;
                    };
                    if len > (sh.size as u64) * 2 + 1024 {
                        return Err(err("reply frame longer than any message sent"));
                    }
                    let data = check_flags(b0, in_message)?.is_some();
                    in_message |= data;
                    pos += hdr;
                    (data, b0 & 0x80 != 0, len as usize)
                }
            };
            let take = (rend - pos).min(left);
            if data {
                payload.extend_from_slice(&rbuf[pos..pos + take]);
                if payload.len() > sh.size * 2 + 1024 {
                    return Err(err("compressed reply longer than any message sent"));
                }
            }
            pos += take;
            if take < left {
                frame = Some((data, fin, left - take));
                break;
            }
            frame = None;
            if data && fin {
                let Some((idx, t0)) = sent.pop_front() else {
                    return Err(err("more replies than messages sent"));
                };
                codec.decompress(&payload, &mut inflated, sh.size * 2 + 64)?;
                if inflated != sh.msgs[idx] {
                    return Err(err("inflated echo differs from what was sent"));
                }
                c.verified = true;
                let compressed_len = payload.len();
                payload.clear();
                in_message = false;
                completed += 1;
                let now = Instant::now();
                if now >= measure_from && now < deadline {
                    c.msgs += 1;
                    c.reply_bytes += compressed_len as u64;
                    c.lat_ns.push((now - t0).as_nanos() as u64);
                }
            }
        }
        rbuf.copy_within(pos..rend, 0);
        rend -= pos;
        if completed > 0 {
            let now = Instant::now();
            if now < deadline {
                for _ in 0..completed {
                    compressed.clear();
                    codec.compress(&sh.msgs[next], &mut compressed)?;
                    push_frame(&mut wbuf, &compressed);
                    sent.push_back((next, now));
                    next = (next + 1) % POOL;
                }
            }
        }
    }
}

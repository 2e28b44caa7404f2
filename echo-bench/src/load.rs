//! The load generator, the same for every server.
//!
//! It does the client handshake itself (raw HTTP/1.1 upgrade with a fixed key), sends frames
//! masked once up front (the bytes are reused for every message), and parses replies with a
//! small frame-header parser, so the client costs the same whatever the server. One tokio task
//! per connection drives both directions off socket readiness (`try_read` / `try_write`), so a
//! large message in flight can never deadlock the two sides.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, Interest};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// The fixed `Sec-WebSocket-Key` (RFC 6455's example) and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// Server address.
    pub addr: SocketAddr,
    /// Request path (WebSocket only).
    pub path: String,
    /// Bare TCP: no handshake, no framing.
    pub tcp: bool,
}

impl Target {
    /// Parses `ws://HOST:PORT/PATH`, `tcp://HOST:PORT` or `HOST:PORT` (WebSocket unless `tcp`).
    pub fn parse(s: &str, tcp: bool) -> Result<Self, String> {
        let (tcp, rest) = if let Some(r) = s.strip_prefix("ws://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("tcp://") {
            (true, r)
        } else {
            (tcp, s)
        };
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let addr = hostport
            .parse::<SocketAddr>()
            .map_err(|e| format!("{hostport:?}: {e} (want IP:PORT)"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("{addr}: the load generator only targets loopback"));
        }
        Ok(Self { addr, path, tcp })
    }
}

/// One load run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Connections.
    pub conns: usize,
    /// Message payload size in bytes.
    pub size: usize,
    /// Messages in flight per connection.
    pub depth: usize,
    /// Not measured, after all connections are up.
    pub warmup: Duration,
    /// Measured.
    pub duration: Duration,
    /// A server process whose CPU time (user + system) over the measured window is reported.
    pub server_pid: Option<u32>,
}

/// What one load run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Whole echoed messages received in the measured window.
    pub msgs: u64,
    /// The measured window, in seconds.
    pub secs: f64,
    /// Payload size.
    pub size: usize,
    /// Round-trip latencies in the window, nanoseconds, sorted.
    pub lat_ns: Vec<u64>,
    /// Connections that failed (handshake, I/O, protocol or payload mismatch).
    pub errors: u64,
    /// The first error seen.
    pub first_error: Option<String>,
    /// Connections whose first echoed message was checked byte for byte and matched.
    pub verified: u64,
    /// The server's CPU seconds (user + system, all threads) in the measured window.
    pub server_cpu_secs: Option<f64>,
    /// The `Sec-WebSocket-Extensions` the server answered (deflate workload only).
    pub negotiated: Option<String>,
    /// Payload bytes of the server's replies in the measured window, as sent (compressed, for
    /// the deflate workload).
    pub reply_bytes: u64,
}

impl Outcome {
    /// The server's CPU time per echoed message, in microseconds: what it costs, however the
    /// machine's cores happen to be shared with the load generator.
    pub fn server_cpu_us_per_msg(&self) -> f64 {
        self.server_cpu_secs
            .map_or(f64::NAN, |secs| secs * 1e6 / self.msgs as f64)
    }
    /// Messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.msgs as f64 / self.secs
    }
    /// Payload megabytes (10^6) echoed per second, one direction.
    pub fn mb_per_sec(&self) -> f64 {
        self.msgs_per_sec() * self.size as f64 / 1e6
    }
    /// Latency percentile in microseconds.
    pub fn pct_us(&self, p: f64) -> f64 {
        if self.lat_ns.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat_ns.len() as f64 * p).ceil() as usize).clamp(1, self.lat_ns.len()) - 1;
        self.lat_ns[i] as f64 / 1e3
    }
}

/// A masked frame (FIN set) with `opcode` and `payload`.
pub fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    masked_frame_fin(true, opcode, payload)
}

fn masked_frame_fin(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut f = Vec::with_capacity(n + 14);
    f.push(if fin { 0x80 } else { 0 } | opcode);
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if let Ok(n16) = u16::try_from(n) {
        f.push(0x80 | 126);
        f.extend_from_slice(&n16.to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&MASK);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

/// The payload of every benchmark message: a pattern, so misplaced bytes show.
pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i.wrapping_mul(31) + 7) as u8).collect()
}

/// What one wait on a connection's socket gave.
pub(crate) enum Step {
    /// This many bytes were read.
    Read(usize),
    /// Nothing to read yet (the socket became writable, or the readiness was spurious).
    Again,
    /// The measured window is over.
    Deadline,
}

/// Waits until `stream` is readable, or writable too while `writing` (so that what is owed goes
/// out), or the deadline passes; then reads what is there into `buf`. A server that closes the
/// connection is an error.
pub(crate) async fn read_when_ready(
    stream: &TcpStream,
    writing: bool,
    deadline: Instant,
    buf: &mut [u8],
) -> io::Result<Step> {
    if Instant::now() >= deadline {
        return Ok(Step::Deadline);
    }
    let interest = if writing {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    let ready = match tokio::time::timeout_at(deadline.into(), stream.ready(interest)).await {
        Ok(r) => r?,
        Err(_) => return Ok(Step::Deadline),
    };
    if !ready.is_readable() {
        return Ok(Step::Again);
    }
    match stream.try_read(buf) {
        Ok(0) => Err(err("server closed the connection")),
        Ok(n) => Ok(Step::Read(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Step::Again),
        Err(e) => Err(e),
    }
}

pub(crate) fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Connects, sets `TCP_NODELAY` and (for WebSocket) does the opening handshake. Returns the
/// stream and any bytes read past the handshake response.
pub async fn connect(target: &Target) -> io::Result<(TcpStream, Vec<u8>)> {
    connect_offer(target, None).await.map(|(s, rest, _)| (s, rest))
}

/// As [`connect`], offering `extensions` (a `Sec-WebSocket-Extensions` value) if given; also
/// returns the response head.
pub async fn connect_offer(
    target: &Target,
    extensions: Option<&str>,
) -> io::Result<(TcpStream, Vec<u8>, String)> {
    let fut = async {
        let mut s = TcpStream::connect(target.addr).await?;
        s.set_nodelay(true)?;
        if target.tcp {
            return Ok((s, Vec::new(), String::new()));
        }
        let ext = extensions
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n",
            target.path, target.addr
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(512);
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 8192 {
                return Err(err("handshake response too long"));
            }
            if s.read_buf(&mut buf).await? == 0 {
                return Err(err("EOF during handshake"));
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]);
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default();
        if !status.starts_with("HTTP/1.1 101") {
            return Err(err(format!("handshake refused: {status}")));
        }
        let accept_ok = lines.any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == ACCEPT
            })
        });
        if !accept_ok {
            return Err(err("missing or wrong Sec-WebSocket-Accept"));
        }
        let rest = buf[end..].to_vec();
        Ok((s, rest, head.into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| err("connect/handshake timed out"))?
}

/// Opens `count` connections (handshake done), at most `parallel` handshakes at a time.
/// Returns the streams and the errors.
pub async fn connect_many(
    target: &Target,
    count: usize,
    parallel: usize,
) -> (Vec<(TcpStream, Vec<u8>)>, Vec<String>) {
    let (conns, errors) = connect_many_offer(target, count, parallel, None).await;
    (conns.into_iter().map(|(s, rest, _)| (s, rest)).collect(), errors)
}

/// As [`connect_many`], offering `extensions`; also returns each response head.
pub async fn connect_many_offer(
    target: &Target,
    count: usize,
    parallel: usize,
    extensions: Option<&str>,
) -> (Vec<(TcpStream, Vec<u8>, String)>, Vec<String>) {
    let mut set = JoinSet::new();
    let mut out = Vec::with_capacity(count);
    let mut errors = Vec::new();
    let mut started = 0;
    while started < count || !set.is_empty() {
        while started < count && set.len() < parallel {
            let t = target.clone();
            let ext = extensions.map(str::to_owned);
            set.spawn(async move { connect_offer(&t, ext.as_deref()).await });
            started += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(c))) => out.push(c),
            Some(Ok(Err(e))) => errors.push(e.to_string()),
            Some(Err(e)) => errors.push(e.to_string()),
            None => {}
        }
    }
    (out, errors)
}

struct Shared {
    tcp: bool,
    size: usize,
    /// What one message is on the wire (a masked frame, or the raw payload for TCP).
    msg_len: usize,
    /// `depth + 1` copies of the message bytes back to back, so any window of up to `depth`
    /// messages starting at any offset inside the first copy is one contiguous slice.
    batch: Vec<u8>,
    payload: Vec<u8>,
    depth: usize,
}

#[derive(Default)]
struct ConnOutcome {
    msgs: u64,
    lat_ns: Vec<u64>,
    error: Option<String>,
    verified: bool,
}

/// Runs one load on its own 2-worker runtime and returns what it measured.
pub fn run(target: &Target, spec: &Spec) -> Outcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run_async(target, spec))
}

async fn run_async(target: &Target, spec: &Spec) -> Outcome {
    let payload = payload(spec.size);
    let msg = if target.tcp {
        payload.clone()
    } else {
        masked_frame(0x2, &payload)
    };
    let batch = msg.repeat(spec.depth + 1);
    let shared = Arc::new(Shared {
        tcp: target.tcp,
        size: spec.size,
        msg_len: msg.len(),
        batch,
        payload,
        depth: spec.depth,
    });
    let (conns, connect_errors) = connect_many(target, spec.conns, 100).await;
    let mut out = Outcome {
        size: spec.size,
        secs: spec.duration.as_secs_f64(),
        errors: connect_errors.len() as u64,
        first_error: connect_errors.into_iter().next(),
        ..Outcome::default()
    };
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + spec.warmup;
    let deadline = measure_from + spec.duration;
    // The server's CPU clock read at the window's two ends (sleeping to a time, not waiting
    // for an event: the window is defined by the clock).
    let cpu = spec.server_pid.map(|pid| {
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let before = cpu_secs(pid)?;
            tokio::time::sleep_until(deadline.into()).await;
            Some(cpu_secs(pid)? - before)
        })
    });
    let mut set = JoinSet::new();
    for (stream, leftover) in conns {
        let shared = Arc::clone(&shared);
        set.spawn(async move {
            let mut c = ConnOutcome::default();
            if let Err(e) = drive(stream, leftover, &shared, start, measure_from, deadline, &mut c).await
            {
                c.error = Some(e.to_string());
            }
            c
        });
    }
    while let Some(r) = set.join_next().await {
        match r {
            Ok(c) => {
                out.msgs += c.msgs;
                out.lat_ns.extend_from_slice(&c.lat_ns);
                out.verified += u64::from(c.verified);
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

/// A process's CPU time so far (user + system), from `/proc/PID/stat`.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14 and
    // stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) as f64 / ticks as f64)
}

enum Rx {
    Header,
    Payload { left: u64, data: bool, fin: bool },
}

/// Drives one connection until `deadline`.
async fn drive(
    stream: TcpStream,
    leftover: Vec<u8>,
    sh: &Shared,
    start: Instant,
    measure_from: Instant,
    deadline: Instant,
    c: &mut ConnOutcome,
) -> io::Result<()> {
    let mut rbuf = vec![0u8; 64 << 10];
    let mut rend = leftover.len();
    rbuf[..rend].copy_from_slice(&leftover);
    let mut rx = Rx::Header;
    // Bytes of the message being received seen so far (across fragments).
    let mut msg_off = 0usize;
    let mut first_done = false;
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(sh.depth + 1);
    let mut owed = 0usize; // bytes queued but not yet written
    let mut sent_total = 0usize; // bytes written, modulo msg_len

    tokio::time::sleep_until(start.into()).await;
    let now = Instant::now();
    for _ in 0..sh.depth {
        sent_at.push_back(now);
    }
    owed += sh.depth * sh.msg_len;

    loop {
        // Write what is owed, as far as the socket takes it.
        while owed > 0 {
            let off = sent_total;
            let end = (off + owed).min(sh.batch.len());
            match stream.try_write(&sh.batch[off..end]) {
                Ok(n) => {
                    owed -= n;
                    sent_total = (sent_total + n) % sh.msg_len;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let n = match read_when_ready(&stream, owed > 0, deadline, &mut rbuf[rend..]).await? {
            Step::Read(n) => n,
            Step::Again => continue,
            Step::Deadline => return Ok(()),
        };
        rend += n;
        let mut pos = 0usize;
        let mut completed = 0usize;
        if sh.tcp {
            while pos < rend {
                let take = (rend - pos).min(sh.size - msg_off);
                if !first_done && rbuf[pos..pos + take] != sh.payload[msg_off..msg_off + take] {
                    return Err(err("echoed bytes differ from what was sent"));
                }
                pos += take;
                msg_off += take;
                if msg_off == sh.size {
                    msg_off = 0;
                    if !first_done {
                        first_done = true;
                        c.verified = true;
                    }
                    completed += 1;
                }
            }
        } else {
            loop {
                match rx {
                    Rx::Header => {
                        let avail = &rbuf[pos..rend];
                        if avail.len() < 2 {
                            break;
                        }
                        let (b0, b1) = (avail[0], avail[1]);
                        if b1 & 0x80 != 0 {
                            return Err(err("server sent a masked frame"));
                        }
                        if b0 & 0x70 != 0 {
                            return Err(err("server set reserved bits"));
                        }
                        let len7 = b1 & 0x7f;
                        let need = 2 + match len7 {
                            126 => 2,
                            127 => 8,
                            _ => 0,
                        };
                        if avail.len() < need {
                            break;
                        }
                        let len = match len7 {
                            126 => u64::from(u16::from_be_bytes([avail[2], avail[3]])),
                            127 => u64::from_be_bytes(avail[2..10].try_into().expect("8 bytes")),
                            n => u64::from(n),
                        };
                        let opcode = b0 & 0x0f;
                        let data = match opcode {
                            0x0 | 0x2 => true,
                            0x9 | 0xa => false,
                            0x1 => return Err(err("echo of a binary message came back as text")),
                            0x8 => return Err(err("server sent Close")),
                            o => return Err(err(format!("bad opcode {o:#x}"))),
                        };
                        pos += need;
                        rx = Rx::Payload {
                            left: len,
                            data,
                            fin: b0 & 0x80 != 0,
                        };
                    }
                    Rx::Payload {
                        ref mut left,
                        data,
                        fin,
                    } => {
                        let take = ((rend - pos) as u64).min(*left) as usize;
                        if data {
                            if msg_off + take > sh.size {
                                return Err(err("echoed message longer than sent"));
                            }
                            if !first_done
                                && rbuf[pos..pos + take] != sh.payload[msg_off..msg_off + take]
                            {
                                return Err(err("echoed bytes differ from what was sent"));
                            }
                            msg_off += take;
                        }
                        pos += take;
                        *left -= take as u64;
                        if *left > 0 {
                            break;
                        }
                        rx = Rx::Header;
                        if data && fin {
                            if msg_off != sh.size {
                                return Err(err("echoed message shorter than sent"));
                            }
                            msg_off = 0;
                            if !first_done {
                                first_done = true;
                                c.verified = true;
                            }
                            completed += 1;
                        }
                    }
                }
            }
        }
        // Keep the unparsed tail (at most a partial header) at the front.
        rbuf.copy_within(pos..rend, 0);
        rend -= pos;
        if completed > 0 {
            let now = Instant::now();
            let measuring = now >= measure_from && now < deadline;
            for _ in 0..completed {
                let Some(t0) = sent_at.pop_front() else {
                    return Err(err("more replies than messages sent"));
                };
                if measuring {
                    c.msgs += 1;
                    c.lat_ns.push((now - t0).as_nanos() as u64);
                }
            }
            if now < deadline {
                for _ in 0..completed {
                    sent_at.push_back(now);
                }
                owed += completed * sh.msg_len;
            }
        }
    }
}

/// Checks one connection's echo of a text message sent in two fragments, a binary message and a
/// Ping (for TCP: a few bytes). Returns a description of what went wrong, if anything.
pub async fn probe(target: &Target) -> Result<(), String> {
    let fut = async {
        let (mut s, mut buf) = connect(target).await.map_err(|e| e.to_string())?;
        if target.tcp {
            let msg = payload(1000);
            s.write_all(&msg).await.map_err(|e| e.to_string())?;
            while buf.len() < msg.len() {
                if s.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                    return Err("EOF".to_string());
                }
            }
            return if buf == msg { Ok(()) } else { Err("echo differs".into()) };
        }
        let text = "h\u{e9}llo, \u{2713} echo";
        let (t1, t2) = text.as_bytes().split_at(3);
        let bin: Vec<u8> = vec![0, 1, 2, 255, 254, 128];
        let mut out = masked_frame_fin(false, 0x1, t1);
        out.extend(masked_frame_fin(true, 0x0, t2));
        out.extend(masked_frame(0x2, &bin));
        out.extend(masked_frame(0x9, b"pp"));
        s.write_all(&out).await.map_err(|e| e.to_string())?;
        // Expect, in any order: text (whole), binary, pong.
        let (mut got_text, mut got_bin, mut got_pong) = (false, false, false);
        let mut msg: Vec<u8> = Vec::new();
        let mut msg_op = 0u8;
        while !(got_text && got_bin && got_pong) {
            // Parse one frame from buf, reading more as needed.
            let frame = loop {
                if let Some((fin, op, body, used)) = parse_frame(&buf)? {
                    buf.drain(..used);
                    break (fin, op, body);
                }
                if s.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                    return Err("server closed during the echo check".into());
                }
            };
            let (fin, op, body) = frame;
            match op {
                0xa => {
                    if body != b"pp" {
                        return Err("pong payload differs".into());
                    }
                    got_pong = true;
                }
                0x9 => {}
                0x0..=0x2 => {
                    if op != 0 {
                        msg_op = op;
                        msg.clear();
                    }
                    msg.extend_from_slice(&body);
                    if fin {
                        match msg_op {
                            0x1 if msg == text.as_bytes() => got_text = true,
                            0x2 if msg == bin => got_bin = true,
                            _ => return Err(format!("wrong echo (opcode {msg_op}): {msg:?}")),
                        }
                    }
                }
                o => return Err(format!("unexpected opcode {o:#x}")),
            }
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| "echo check timed out".to_string())?
}

/// One whole unmasked server frame at the start of `b`: (fin, opcode, payload, bytes used).
#[allow(clippy::type_complexity)]
fn parse_frame(b: &[u8]) -> Result<Option<(bool, u8, Vec<u8>, usize)>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[1] & 0x80 != 0 {
        return Err("server sent a masked frame".into());
    }
    let len7 = b[1] & 0x7f;
    let (len, hdr) = match len7 {
        126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => (
            usize::try_from(u64::from_be_bytes(b[2..10].try_into().expect("8"))).unwrap_or(usize::MAX),
            10,
        ),
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    if b.len() < hdr + len {
        return Ok(None);
    }
    Ok(Some((b[0] & 0x80 != 0, b[0] & 0x0f, b[hdr..hdr + len].to_vec(), hdr + len)))
}

/// Opens `count` idle WebSocket connections and holds them while `measure` runs.
pub fn hold_idle<T>(target: &Target, count: usize, measure: impl FnOnce(usize) -> T) -> (T, Vec<String>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (conns, errors) = rt.block_on(connect_many(target, count, 100));
    let r = measure(conns.len());
    drop(conns);
    (r, errors)
}

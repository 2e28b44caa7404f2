//! Rooms across nodes: members of one room split over two running servers that share a Redis,
//! some of them sending, and how fast, how late and at what cost the room is delivered.
//!
//! ```text
//! cargo run --release -p sockeye-relay --example crossnode -- ADDR1 PID1 ADDR2 PID2
//!     [--redis-pid PID] [--members 200] [--senders 10] [--messages 2000] [--size 64]
//!     [--window 160] [--room x]
//! ```
//!
//! `ADDR1` and `ADDR2` are loopback `IP:PORT`s serving rooms at `/rooms/NAME` (two
//! `sockeye serve --redis redis://…` on the same Redis), `PID1` and `PID2` their processes
//! (CPU time from `/proc/PID/stat`, RSS from `/proc/PID/status`), `--redis-pid` the
//! `redis-server`'s, whose CPU is reported apart. Member `i` joins node `i % 2`; the first
//! `--senders` members (so half on each node) each send `--messages` binary messages of
//! `--size` bytes, each at most `--window / --senders` ahead of the slowest member, so that no
//! member ever has more than `--window` messages outstanding (below the server's 256-message
//! member queue) and nobody is shed as too slow. Each payload carries its sender, its sequence number and when it was sent: members on
//! the other node than the sender measure the cross-node latency, and every member counts, per
//! sender, what it never got, got twice, or got after a later one. Reports deliveries per
//! second, the CPU per delivery of both nodes together and of Redis, cross-node latency p50 and
//! p99, both nodes' RSS, and the lost, duplicated and reordered counts per sender, then a
//! `RESULT key=value …` line for scripts. `--socketio` speaks to Socket.IO servers instead (the
//! WebSocket transport, Engine.IO 4: each message an event `m` whose one argument is a string of
//! `--size` characters, the header in hex then padding, which the server sends on to the room's
//! other members), for a side-by-side run with the same client. Exits 1 if anything was lost, duplicated or
//! reordered, or a member was closed. The members are raw sockets that parse frames without
//! copying payloads, so the load costs little next to the servers.

// Counts and rates are printed as floats; frame lengths are bounded by their match arms;
// percentiles index with a non-negative float.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::Notify;

#[path = "support/mod.rs"]
mod support;
use support::{cpu_secs, header, masked};

/// The most the whole run may take.
const LIMIT: Duration = Duration::from_secs(180);
/// How long the members may go without a message, once sending is over, before what is
/// missing counts as lost.
const IDLE: Duration = Duration::from_secs(3);
/// Latency samples kept per member (the first ones; enough for the defaults many times over).
const SAMPLES: usize = 100_000;
/// The payload's header: sender (u32), sequence number (u64), sent at (µs, u64).
const HEAD: usize = 20;

/// Socket.IO servers instead of `sockeye serve` (`--socketio`).
static SOCKET_IO: AtomicBool = AtomicBool::new(false);

/// When the run started: the clock the payloads' timestamps count from.
static BASE: OnceLock<Instant> = OnceLock::new();

fn micros() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
}

struct Args {
    nodes: [(SocketAddr, u32); 2],
    redis_pid: Option<u32>,
    members: usize,
    senders: usize,
    messages: u64,
    size: usize,
    window: u64,
    room: String,
}

fn parse() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut node = |which: &str| -> Result<(SocketAddr, u32), String> {
        let addr: SocketAddr = args
            .next()
            .ok_or("usage: crossnode ADDR1 PID1 ADDR2 PID2 [options]")?
            .parse()
            .map_err(|e| format!("ADDR{which}: {e}"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("ADDR{which} must be a loopback address"));
        }
        let pid = args
            .next()
            .ok_or(format!("PID{which} missing"))?
            .parse()
            .map_err(|e| format!("PID{which}: {e}"))?;
        Ok((addr, pid))
    };
    let nodes = [node("1")?, node("2")?];
    let mut parsed = Args {
        nodes,
        redis_pid: None,
        members: 200,
        senders: 10,
        messages: 2000,
        size: 64,
        window: 160,
        room: "x".into(),
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--redis-pid" => {
                parsed.redis_pid = Some(value()?.parse().map_err(|e| format!("{e}"))?);
            }
            "--members" => parsed.members = value()?.parse().map_err(|e| format!("{e}"))?,
            "--senders" => parsed.senders = value()?.parse().map_err(|e| format!("{e}"))?,
            "--messages" => parsed.messages = value()?.parse().map_err(|e| format!("{e}"))?,
            "--size" => parsed.size = value()?.parse().map_err(|e| format!("{e}"))?,
            "--window" => parsed.window = value()?.parse().map_err(|e| format!("{e}"))?,
            "--room" => parsed.room = value()?,
            "--socketio" => SOCKET_IO.store(true, Ordering::Relaxed),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if parsed.senders < 2 || parsed.senders > parsed.members || parsed.members > 5000 {
        return Err("need 2 <= senders <= members <= 5000 (senders on both nodes)".into());
    }
    if parsed.messages == 0 || parsed.messages > 100_000 {
        return Err("need 1 to 100,000 messages per sender".into());
    }
    if parsed.size < HEAD || parsed.size > 65_535 {
        return Err(format!("need {HEAD} <= size <= 65535"));
    }
    if parsed.window < parsed.senders as u64 || parsed.window > 10_000 {
        return Err("need senders <= window <= 10,000".into());
    }
    Ok(parsed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !support::main("crossnode", parse(), LIMIT, run).await {
        std::process::exit(1);
    }
}

/// What one member saw from one sender.
#[derive(Clone, Default)]
struct FromSender {
    /// Sequence numbers seen, one bit each.
    seen: Vec<u64>,
    distinct: u64,
    highest: Option<u64>,
    duplicated: u64,
    reordered: u64,
}

/// What one member saw.
struct Seen {
    from: Vec<FromSender>,
    /// Cross-node latencies, µs.
    latencies: Vec<u32>,
    /// Frames that were not one of the run's messages (a bad sender or sequence number).
    foreign: u64,
}

/// What every task shares.
struct Shared {
    /// Binary messages received, per member.
    counts: Vec<AtomicU64>,
    /// Which probers' probe (bit 0: member 0's, bit 1: member 1's) each member got.
    probed: Vec<AtomicU64>,
    /// Woken when members have read more, for the senders waiting on their window.
    progress: Notify,
    stop: AtomicBool,
    stopped: Notify,
}

// One run from connecting to the report, read top to bottom.
#[allow(clippy::too_many_lines)]
async fn run(args: Args) -> std::io::Result<bool> {
    micros();
    let shared = Arc::new(Shared {
        counts: (0..args.members).map(|_| AtomicU64::new(0)).collect(),
        probed: (0..args.members).map(|_| AtomicU64::new(0)).collect(),
        progress: Notify::new(),
        stop: AtomicBool::new(false),
        stopped: Notify::new(),
    });
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for i in 0..args.members {
        let (stream, rest) = connect(args.nodes[i % 2].0, &args.room).await?;
        let (read, write) = stream.into_split();
        writers.push(write);
        let member = Member {
            index: i,
            senders: args.senders,
            messages: args.messages,
            shared: Arc::clone(&shared),
        };
        readers.push(tokio::spawn(member.read(read, rest)));
    }
    // Everyone has joined, on both nodes and across Redis, once every member but a prober got
    // both probers' probes (member 0 is on node one, member 1 on node two).
    let everyone = || {
        shared.probed.iter().enumerate().all(|(i, p)| {
            let want = if i < 2 { 0b11 & !(1 << i) } else { 0b11 };
            p.load(Ordering::Relaxed) & want == want
        })
    };
    let joined_by = Instant::now() + Duration::from_secs(30);
    while !everyone() {
        if Instant::now() > joined_by {
            return Err(std::io::Error::other(
                "members did not all join within 30 s",
            ));
        }
        writers[0].write_all(&probe(b"probe0")).await?;
        writers[1].write_all(&probe(b"probe1")).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the last probes in flight land before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pids = [args.nodes[0].1, args.nodes[1].1];
    let nodes_cpu = || -> Option<f64> { Some(cpu_secs(pids[0])? + cpu_secs(pids[1])?) };
    let cpu_before = nodes_cpu().ok_or(std::io::Error::other("cannot read the nodes' CPU time"))?;
    let redis_before = args.redis_pid.and_then(cpu_secs);
    let start = Instant::now();
    let mut sending = Vec::new();
    for (sender, writer) in writers.drain(..args.senders).enumerate() {
        let shared = Arc::clone(&shared);
        let (messages, size, window, senders) =
            (args.messages, args.size, args.window, args.senders);
        sending.push(tokio::spawn(async move {
            send(writer, sender, messages, size, window, senders, &shared).await
        }));
    }
    let expected = |member: usize| {
        let from = if member < args.senders {
            args.senders - 1
        } else {
            args.senders
        };
        from as u64 * args.messages
    };
    let deliveries: u64 = (0..args.members).map(expected).sum();
    // Until every member has everything, or nothing more came for IDLE after the senders were
    // done (what is missing then is lost).
    let mut progress_at = (0, Instant::now());
    let mut closed = false;
    loop {
        let received: u64 = shared
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        if received >= deliveries
            && (0..args.members).all(|i| shared.counts[i].load(Ordering::Relaxed) >= expected(i))
        {
            break;
        }
        if readers.iter().any(tokio::task::JoinHandle::is_finished) {
            closed = true;
            break;
        }
        if received != progress_at.0 {
            progress_at = (received, Instant::now());
        } else if sending.iter().all(tokio::task::JoinHandle::is_finished)
            && progress_at.1.elapsed() > IDLE
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = nodes_cpu().unwrap_or(cpu_before) - cpu_before;
    let redis_cpu = match (args.redis_pid, redis_before) {
        (Some(pid), Some(before)) => cpu_secs(pid).map(|now| now - before),
        _ => None,
    };
    let rss = [rss_kib(pids[0]), rss_kib(pids[1])];
    // A short grace for late duplicates, then the members stop and hand over what they saw.
    tokio::time::sleep(Duration::from_millis(200)).await;
    shared.stop.store(true, Ordering::Relaxed);
    shared.stopped.notify_waiters();
    let mut seen = Vec::new();
    for reader in readers {
        let (s, error) = reader.await.map_err(std::io::Error::other)?;
        if let Some(e) = error {
            eprintln!("crossnode: {e}");
            closed = true;
        }
        seen.push(s);
    }
    // Only now may the senders' connections close (the members have stopped reading).
    for task in sending {
        task.abort();
    }

    let received: u64 = seen.iter().flat_map(|s| &s.from).map(|f| f.distinct).sum();
    let mut latencies: Vec<u32> = seen
        .iter()
        .flat_map(|s| s.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let at = ((latencies.len() - 1) as f64 * p).round() as usize;
        f64::from(latencies[at]) / 1000.0
    };
    let mib = |kib: Option<u64>| kib.map_or(f64::NAN, |k| k as f64 / 1024.0);
    println!(
        "members {} ({} + {}) senders {} messages {} size {} window {}: {} of {} deliveries in {:.3} s",
        args.members,
        args.members.div_ceil(2),
        args.members / 2,
        args.senders,
        args.messages,
        args.size,
        args.window,
        received,
        deliveries,
        elapsed,
    );
    println!(
        "  {:.0} deliveries/s; CPU per delivery: nodes {:.2} us ({:.3} s), redis {}",
        received as f64 / elapsed,
        cpu * 1e6 / received.max(1) as f64,
        cpu,
        redis_cpu.map_or("not measured".into(), |r| format!(
            "{:.2} us ({r:.3} s)",
            r * 1e6 / received.max(1) as f64
        ))
    );
    println!(
        "  cross-node latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        latencies.len()
    );
    println!(
        "  RSS: node one {:.1} MiB, node two {:.1} MiB, both {:.1} MiB",
        mib(rss[0]),
        mib(rss[1]),
        mib(rss[0]) + mib(rss[1])
    );
    let (mut lost_all, mut dup_all, mut reord_all) = (0, 0, 0);
    for sender in 0..args.senders {
        let (mut lost, mut dup, mut reord) = (0, 0, 0);
        for (member, s) in seen.iter().enumerate() {
            if member == sender {
                continue;
            }
            let f = &s.from[sender];
            lost += args.messages - f.distinct;
            dup += f.duplicated;
            reord += f.reordered;
        }
        println!(
            "  sender {sender} (node {}): lost {lost}, duplicated {dup}, reordered {reord}",
            if sender % 2 == 0 { "one" } else { "two" }
        );
        (lost_all, dup_all, reord_all) = (lost_all + lost, dup_all + dup, reord_all + reord);
    }
    let foreign: u64 = seen.iter().map(|s| s.foreign).sum();
    println!(
        "RESULT deliveries_per_s={:.0} nodes_us_per_delivery={:.3} redis_us_per_delivery={} p50_ms={:.3} p99_ms={:.3} rss_mib={:.1} lost={lost_all} duplicated={dup_all} reordered={reord_all} foreign={foreign} closed={}",
        received as f64 / elapsed,
        cpu * 1e6 / received.max(1) as f64,
        redis_cpu.map_or("nan".into(), |r| format!(
            "{:.3}",
            r * 1e6 / received.max(1) as f64
        )),
        pct(0.5),
        pct(0.99),
        mib(rss[0]) + mib(rss[1]),
        u8::from(closed),
    );
    Ok(!closed && lost_all == 0 && dup_all == 0 && reord_all == 0 && foreign == 0)
}

/// One sender: `messages` messages, written in batches as far as the window allows.
async fn send(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    sender: usize,
    messages: u64,
    size: usize,
    window: u64,
    senders: usize,
    shared: &Shared,
) -> std::io::Result<tokio::net::tcp::OwnedWriteHalf> {
    let mut payload = vec![0x5a; size];
    payload[..4].copy_from_slice(&(sender as u32).to_le_bytes());
    let mut batch = Vec::new();
    let mut sent = 0;
    while sent < messages {
        // Stay within a window of the slowest member, senders included (they receive the
        // others' messages, not their own).
        let allowed = loop {
            let progress = shared.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            let behind = shared
                .counts
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let from = if i < senders { senders - 1 } else { senders };
                    c.load(Ordering::Relaxed) / from as u64
                })
                .min()
                .unwrap_or(u64::MAX);
            let ahead = window / senders as u64;
            if sent < behind + ahead {
                break behind + ahead - sent;
            }
            // The timeout only guards against a missed wake-up.
            let _ = tokio::time::timeout(Duration::from_millis(50), progress).await;
        };
        batch.clear();
        for _ in 0..allowed.min(messages - sent) {
            payload[4..12].copy_from_slice(&sent.to_le_bytes());
            payload[12..20].copy_from_slice(&micros().to_le_bytes());
            if SOCKET_IO.load(Ordering::Relaxed) {
                batch.extend_from_slice(&masked(0x1, &event(&payload)));
            } else {
                batch.extend_from_slice(&masked(0x2, &payload));
            }
            sent += 1;
        }
        writer.write_all(&batch).await?;
    }
    // The caller keeps the connection open until the run ends.
    Ok(writer)
}

/// Connects and upgrades, returning the stream and the bytes read past the response.
async fn connect(addr: SocketAddr, room: &str) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let socket_io = SOCKET_IO.load(Ordering::Relaxed);
    let path = if socket_io {
        "/socket.io/?EIO=4&transport=websocket".to_owned()
    } else {
        format!("/rooms/{room}")
    };
    let (mut stream, rest) = support::connect(addr, &path, "").await?;
    if socket_io {
        // Joins the default namespace (the server puts every connection in the room).
        stream.write_all(&masked(0x1, b"40")).await?;
    }
    Ok((stream, rest))
}

/// A Socket.IO event `m` carrying `payload` as a string: its header in hex, then padding to
/// `payload.len()` characters.
fn event(payload: &[u8]) -> Vec<u8> {
    let mut event = br#"42["m",""#.to_vec();
    for byte in &payload[..HEAD] {
        event.extend_from_slice(format!("{byte:02x}").as_bytes());
    }
    event.resize(event.len() + payload.len().saturating_sub(2 * HEAD), b'Z');
    event.extend_from_slice(br#""]"#);
    event
}

/// The header of a Socket.IO event `m` made by [`event`].
fn unevent(text: &[u8]) -> Option<[u8; HEAD]> {
    let hex = text.strip_prefix(br#"42["m",""#)?.get(..2 * HEAD)?;
    let mut head = [0u8; HEAD];
    for (i, pair) in hex.chunks(2).enumerate() {
        head[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(head)
}

/// A probe message: as it is, or as a Socket.IO event `m`.
fn probe(text: &[u8]) -> Vec<u8> {
    if SOCKET_IO.load(Ordering::Relaxed) {
        let mut event = br#"42["m",""#.to_vec();
        event.extend_from_slice(text);
        event.extend_from_slice(br#""]"#);
        masked(0x1, &event)
    } else {
        masked(0x1, text)
    }
}

/// One member's reading side.
struct Member {
    index: usize,
    senders: usize,
    messages: u64,
    shared: Arc<Shared>,
}

impl Member {
    /// Reads frames until the run stops, checking each message against its sender's sequence.
    async fn read(self, read: OwnedReadHalf, buf: Vec<u8>) -> (Seen, Option<std::io::Error>) {
        let words = self.messages.div_ceil(64) as usize;
        let mut seen = Seen {
            from: vec![
                FromSender {
                    seen: vec![0; words],
                    ..FromSender::default()
                };
                self.senders
            ],
            latencies: Vec::new(),
            foreign: 0,
        };
        let error = self.read_into(read, buf, &mut seen).await.err();
        (seen, error)
    }

    async fn read_into(
        &self,
        mut read: OwnedReadHalf,
        mut buf: Vec<u8>,
        seen: &mut Seen,
    ) -> std::io::Result<()> {
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let mut at = 0;
            let mut got = 0;
            while let Some((opcode, head, len)) = header(&buf[at..]) {
                if buf.len() - at < head + len {
                    break;
                }
                let payload = &buf[at + head..at + head + len];
                match opcode & 0x0f {
                    0x2 => {
                        self.message(payload, seen);
                        got += 1;
                    }
                    0x1 if SOCKET_IO.load(Ordering::Relaxed) && unevent(payload).is_some() => {
                        if let Some(head) = unevent(payload) {
                            self.message(&head, seen);
                            got += 1;
                        }
                    }
                    0x1 => {
                        let bit = if payload.ends_with(b"probe0")
                            || payload.ends_with(br#"probe0"]"#)
                        {
                            1
                        } else if payload.ends_with(b"probe1") || payload.ends_with(br#"probe1"]"#)
                        {
                            2
                        } else {
                            0
                        };
                        self.shared.probed[self.index].fetch_or(bit, Ordering::Relaxed);
                    }
                    // A Close: the member was shed.
                    0x8 => {
                        let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                        let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                        return Err(std::io::Error::other(format!(
                            "member {} (node {}): closed by the server: {code:?} {reason}",
                            self.index,
                            self.index % 2 + 1
                        )));
                    }
                    _ => {}
                }
                at += head + len;
            }
            buf.drain(..at);
            if got > 0 {
                self.shared.counts[self.index].fetch_add(got, Ordering::Relaxed);
                self.shared.progress.notify_waiters();
            }
            let stopped = self.shared.stopped.notified();
            tokio::pin!(stopped);
            stopped.as_mut().enable();
            if self.shared.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let n = tokio::select! {
                n = read.read(&mut chunk) => n?,
                () = &mut stopped => return Ok(()),
            };
            if n == 0 {
                if self.shared.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                return Err(std::io::Error::other(format!(
                    "member {} (node {}): the server closed the connection",
                    self.index,
                    self.index % 2 + 1
                )));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Checks one binary message: its sender's sequence, and its latency if it crossed nodes.
    fn message(&self, payload: &[u8], seen: &mut Seen) {
        let now = micros();
        let Some(head) = payload.get(..HEAD) else {
            seen.foreign += 1;
            return;
        };
        let field = |range: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b[..range.len()].copy_from_slice(&head[range]);
            u64::from_le_bytes(b)
        };
        let (sender, seq, sent_at) = (field(0..4) as usize, field(4..12), field(12..20));
        if sender >= self.senders || seq >= self.messages || sender == self.index {
            seen.foreign += 1;
            return;
        }
        if sender % 2 != self.index % 2 && seen.latencies.len() < SAMPLES {
            seen.latencies
                .push(u32::try_from(now.saturating_sub(sent_at)).unwrap_or(u32::MAX));
        }
        let from = &mut seen.from[sender];
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if from.seen[word] & bit != 0 {
            from.duplicated += 1;
            return;
        }
        from.seen[word] |= bit;
        from.distinct += 1;
        match from.highest {
            Some(h) if seq < h => from.reordered += 1,
            _ => from.highest = Some(seq),
        }
    }
}

/// A process's resident set size, KiB, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

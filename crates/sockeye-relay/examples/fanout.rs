//! Fan-out load: members in one room of a running server, a few of them sending, and how fast
//! the server delivers and at what CPU cost.
//!
//! ```text
//! cargo run --release -p sockeye-relay --example fanout -- ADDR PID [--members 100]
//!     [--senders 1] [--messages 2000] [--size 64] [--deflate | --deflate-takeover] [--room x]
//!     [--window 64]
//! ```
//!
//! `ADDR` is a loopback `IP:PORT` serving rooms at `/rooms/NAME` (`sockeye serve`), `PID` that
//! server's process, whose CPU time is read from `/proc/PID/stat`. `--members` connections
//! (the senders among them) join the room; each sender sends `--messages` binary messages of
//! `--size` bytes, keeping at most `--window` (64) ahead of the slowest member; `--window 0`
//! sends as fast as the server reads, leaving the pacing to its backpressure (nobody that
//! reads may be shed as too slow either way). Every member reads every message but its own. `--deflate` offers permessage-deflate
//! with `server_no_context_takeover` (members can share one compressed frame),
//! `--deflate-takeover` without it (each member's compressor keeps its context). Reports
//! deliveries per second and the server's CPU time per delivery. The members are raw sockets
//! that parse frame headers only, so the load costs little next to the server.

// Counts and rates are printed as floats; frame lengths are bounded by their match arms.
#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

#[path = "support/mod.rs"]
mod support;
use support::{cpu_secs, header, masked};

/// Frames received with RSV1 (compressed).
static COMPRESSED: AtomicU64 = AtomicU64::new(0);
/// How many messages a sender may be ahead of the slowest member, by default.
const WINDOW: u64 = 64;
/// The most the whole run may take.
const LIMIT: Duration = Duration::from_secs(120);

struct Args {
    addr: SocketAddr,
    pid: u32,
    members: usize,
    senders: usize,
    messages: u64,
    size: usize,
    /// permessage-deflate offered: `Some(true)` with `server_no_context_takeover`.
    deflate: Option<bool>,
    room: String,
    /// How many messages a sender may be ahead of the slowest member; 0: no limit.
    window: u64,
}

fn parse() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .ok_or("usage: fanout ADDR PID [options]")?
        .parse()
        .map_err(|e| format!("ADDR: {e}"))?;
    if !addr.ip().is_loopback() {
        return Err("ADDR must be a loopback address".into());
    }
    let pid = args
        .next()
        .ok_or("PID missing")?
        .parse()
        .map_err(|e| format!("PID: {e}"))?;
    let mut parsed = Args {
        addr,
        pid,
        members: 100,
        senders: 1,
        messages: 2000,
        size: 64,
        deflate: None,
        room: "x".into(),
        window: WINDOW,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--members" => parsed.members = value()?.parse().map_err(|e| format!("{e}"))?,
            "--senders" => parsed.senders = value()?.parse().map_err(|e| format!("{e}"))?,
            "--messages" => parsed.messages = value()?.parse().map_err(|e| format!("{e}"))?,
            "--size" => parsed.size = value()?.parse().map_err(|e| format!("{e}"))?,
            "--room" => parsed.room = value()?,
            "--window" => parsed.window = value()?.parse().map_err(|e| format!("{e}"))?,
            "--deflate" => parsed.deflate = Some(true),
            "--deflate-takeover" => parsed.deflate = Some(false),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if parsed.senders == 0 || parsed.senders > parsed.members || parsed.messages > 1_000_000 {
        return Err("need 1 <= senders <= members and at most 1,000,000 messages".into());
    }
    Ok(parsed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    support::main("fanout", parse(), LIMIT, run).await;
}

async fn run(args: Args) -> std::io::Result<()> {
    // Binary messages counted per member; text ones are the probes that show who has joined.
    let counts: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.members).map(|_| AtomicU64::new(0)).collect());
    let probed: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.members).map(|_| AtomicU64::new(0)).collect());
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for i in 0..args.members {
        let (stream, rest) = connect(&args).await?;
        let (read, write) = stream.into_split();
        writers.push(write);
        let (counts, probed) = (Arc::clone(&counts), Arc::clone(&probed));
        readers.push(tokio::spawn(read_frames(read, rest, i, counts, probed)));
    }
    // Everyone has joined once each member but the prober got a probe.
    let probe = masked(0x1, b"probe");
    while probed
        .iter()
        .skip(1)
        .any(|p| p.load(Ordering::Relaxed) == 0)
    {
        writers[0].write_all(&probe).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let frame = masked(0x2, &vec![0x5a; args.size]);
    let cpu_before =
        cpu_secs(args.pid).ok_or(std::io::Error::other("cannot read the server's CPU time"))?;
    let start = Instant::now();
    let mut sending = Vec::new();
    for mut writer in writers.drain(..args.senders) {
        let (counts, frame, messages, senders, window) = (
            Arc::clone(&counts),
            frame.clone(),
            args.messages,
            args.senders,
            args.window,
        );
        sending.push(tokio::spawn(async move {
            for sent in 0..messages {
                // Stay within a window of the slowest member (senders receive the others').
                loop {
                    let slowest = counts
                        .iter()
                        .skip(senders)
                        .map(|c| c.load(Ordering::Relaxed))
                        .min();
                    let behind = slowest.unwrap_or(u64::MAX) / senders as u64;
                    if window == 0 || sent < behind + window {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                writer.write_all(&frame).await?;
            }
            Ok::<_, std::io::Error>(writer)
        }));
    }
    let total_senders = args.senders as u64;
    let expected = |member: usize| {
        if member < args.senders {
            (total_senders - 1) * args.messages
        } else {
            total_senders * args.messages
        }
    };
    loop {
        let done = counts
            .iter()
            .enumerate()
            .all(|(i, c)| c.load(Ordering::Relaxed) >= expected(i));
        if done {
            break;
        }
        if readers.iter().any(tokio::task::JoinHandle::is_finished) {
            return Err(std::io::Error::other("a member was closed before the end"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_secs(args.pid).unwrap_or(cpu_before) - cpu_before;
    let deliveries: u64 = (0..args.members).map(expected).sum();
    println!(
        "members {} senders {} messages {} size {} deflate {:?}: {} deliveries in {:.3} s, {:.0} deliveries/s, server CPU {:.3} s, {:.2} us/delivery, {} compressed",
        args.members,
        args.senders,
        args.messages,
        args.size,
        args.deflate,
        deliveries,
        elapsed,
        deliveries as f64 / elapsed,
        cpu,
        cpu * 1e6 / deliveries as f64,
        COMPRESSED.load(Ordering::Relaxed)
    );
    for task in sending {
        let _ = task.await;
    }
    Ok(())
}

/// Connects and upgrades, returning the stream and the bytes read past the response.
async fn connect(args: &Args) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let extensions = match args.deflate {
        Some(true) => {
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        }
        Some(false) => "Sec-WebSocket-Extensions: permessage-deflate\r\n",
        None => "",
    };
    support::connect(args.addr, &format!("/rooms/{}", args.room), extensions).await
}

/// Counts whole frames: binary ones in `counts`, text ones (probes) in `probed`. Payloads are
/// skipped, not read into memory.
async fn read_frames(
    mut read: OwnedReadHalf,
    mut buf: Vec<u8>,
    member: usize,
    counts: Arc<Vec<AtomicU64>>,
    probed: Arc<Vec<AtomicU64>>,
) -> std::io::Result<()> {
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let mut at = 0;
        while let Some((opcode, head, len)) = header(&buf[at..]) {
            let len = head + len;
            if buf.len() - at < len {
                break;
            }
            if opcode & 0x40 != 0 {
                COMPRESSED.fetch_add(1, Ordering::Relaxed);
            }
            match opcode & 0x0f {
                0x2 => counts[member].fetch_add(1, Ordering::Relaxed),
                0x1 => probed[member].fetch_add(1, Ordering::Relaxed),
                // A Close: the member was shed.
                0x8 => return Err(std::io::Error::other("closed by the server")),
                _ => 0,
            };
            at += len;
        }
        buf.drain(..at);
        let n = read.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

//! `echo-bench faults`: the load and fault checks a public server meets, each bounded in time
//! and count, over loopback only, against Sockeye's servers and (where the check applies) the
//! peers of `echo-bench serve`:
//!
//! - `idle`: N idle connections held, then each echoing once: the server's RSS per connection.
//! - `storm`: a slowloris storm (2,000 handshakes stalled: silent, a partial head, a byte a
//!   second, kept at 2,000 as the server drops them) while well-behaved clients keep echoing:
//!   their p99 before and during, and the share of newcomers served during the storm.
//! - `nonreading`: clients that send and never read (large messages, small messages, pings)
//!   beside well-behaved ones: the server's peak RSS and the others' p99.
//! - `resets`: connections reset (RST, `SO_LINGER` 0) mid-head, mid-header, mid-payload and
//!   mid-echo, all at once: the server's descriptors (`/proc/PID/fd`) and RSS afterwards.
//! - `shutdown`: `sockeye serve` rooms with slow (but reading) and fast members, a sender, then
//!   SIGTERM: every message counted.
//!
//! Each server runs in a process of its own (a child of this one), on a port picked here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

use crate::load::{self, Target};
use crate::serve::Kind;
use crate::{Res, flag_value, rss_kib};

const USAGE: &str = "\
usage: echo-bench faults [--checks idle,storm,nonreading,resets,shutdown]
                         [--only example,serve,sockeye,tungstenite,fastwebsockets] [-n IDLE]
                         [--example PATH] [--sockeye PATH]
  PATH defaults: target/release/examples/echo_server, target/release/sockeye (from the
  repository root); the peers are this program's own `serve KIND`.";

/// Every check, in the order they run.
const CHECKS: [&str; 5] = ["idle", "storm", "nonreading", "resets", "shutdown"];

/// Stalled handshakes in the storm.
const STALLED: usize = 2000;
/// Well-behaved clients echoing during the storm and beside the clients that never read.
const ECHOERS: usize = 50;
/// How long the storm lasts: past the 10 s handshake timeout of every server that has one.
const STORM: Duration = Duration::from_secs(12);
/// How often a newcomer tries its luck during the storm.
const NEWCOMER_EVERY: Duration = Duration::from_millis(500);
/// What a newcomer gets to connect, upgrade and have one message echoed.
const NEWCOMER_DEADLINE: Duration = Duration::from_secs(2);
/// Clients that never read, per kind of traffic.
const NON_READERS: usize = 50;
/// How long the clients that never read keep sending.
const NON_READING: Duration = Duration::from_secs(5);
/// Connections reset at once.
const RESETS: usize = 1000;
/// The payload a reset client asks echoed and never reads (mid-write when the reset comes).
const RESET_LARGE: usize = 1 << 20;
/// How long descriptors get to come back after the resets.
const RESET_SETTLE: Duration = Duration::from_secs(15);
/// Past this, a well-behaved client's echo counts as lost (and as this long).
const ECHO_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for a server to settle before its RSS is read: past the 1 s after which Sockeye
/// releases an idle connection's buffers.
const SETTLE: Duration = Duration::from_millis(1500);

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    /// `crates/sockeye/examples/echo_server.rs`.
    Example,
    /// `sockeye serve --echo`.
    ServeEcho,
    /// `sockeye serve`, members of rooms.
    ServeRooms,
    /// One of `echo-bench serve`'s.
    Bench(Kind),
}

impl Subject {
    fn name(self) -> String {
        match self {
            Self::Example => "echo example".into(),
            Self::ServeEcho => "sockeye serve --echo".into(),
            Self::ServeRooms => "sockeye serve (rooms)".into(),
            Self::Bench(Kind::Sockeye) => "sockeye (echo-bench)".into(),
            Self::Bench(kind) => kind.name().into(),
        }
    }

    fn selector(self) -> &'static str {
        match self {
            Self::Example => "example",
            Self::ServeEcho | Self::ServeRooms => "serve",
            Self::Bench(kind) => kind.name(),
        }
    }
}

struct Options {
    checks: Vec<String>,
    only: Option<Vec<String>>,
    idle: usize,
    example: String,
    sockeye: String,
}

impl Options {
    fn wants(&self, subject: Subject) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o == subject.selector()))
    }
}

/// A server process, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss(&self) -> u64 {
        rss_kib(self.pid()).unwrap_or(0)
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, Iterator::count)
    }

    fn target(&self, path: &str) -> Target {
        Target {
            addr: self.addr,
            path: path.into(),
            tcp: false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound, read, released).
fn free_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn spawn(subject: Subject, options: &Options) -> Result<Server, String> {
    let addr = free_port().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = match subject {
        Subject::Example => {
            let mut c = Command::new(&options.example);
            c.arg(addr.to_string());
            c
        }
        Subject::ServeEcho | Subject::ServeRooms => {
            let mut c = Command::new(&options.sockeye);
            c.arg("serve").arg(addr.to_string());
            if subject == Subject::ServeEcho {
                c.arg("--echo");
            }
            c
        }
        Subject::Bench(kind) => {
            let mut c = Command::new(exe);
            c.args(["serve", kind.name(), &addr.to_string()]);
            c
        }
    };
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", subject.name()))?;
    let server = Server { child, addr };
    // Up once it accepts a connection.
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!("{} did not listen on {addr}", subject.name()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The probe's connection goes before the baseline is read.
    std::thread::sleep(Duration::from_millis(200));
    Ok(server)
}

pub fn cmd_faults(args: &[String]) -> Res {
    let mut options = Options {
        checks: CHECKS.iter().map(|c| (*c).to_string()).collect(),
        only: None,
        idle: 10_000,
        example: "target/release/examples/echo_server".into(),
        sockeye: "target/release/sockeye".into(),
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--checks" => {
                options.checks = flag_value::<String>(args, &mut i)?
                    .split(',')
                    .map(str::to_string)
                    .collect();
                if let Some(bad) = options
                    .checks
                    .iter()
                    .find(|c| !CHECKS.contains(&c.as_str()))
                {
                    return Err(format!("unknown check {bad:?}\n{USAGE}").into());
                }
            }
            "--only" => {
                options.only = Some(
                    flag_value::<String>(args, &mut i)?
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                );
            }
            "-n" => options.idle = flag_value::<usize>(args, &mut i)?.clamp(1, 50_000),
            "--example" => options.example = flag_value(args, &mut i)?,
            "--sockeye" => options.sockeye = flag_value(args, &mut i)?,
            a => return Err(format!("unexpected argument {a:?}\n{USAGE}").into()),
        }
        i += 1;
    }
    let nofile = crate::raise_nofile();
    // The clients' ends only: each server is a process of its own, with its own limit.
    let need = options.idle.max(STALLED + 200) as u64 + 256;
    if nofile < need {
        return Err(format!(
            "RLIMIT_NOFILE is {nofile}: {need} needed (raise `ulimit -n`, or lower -n)"
        )
        .into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!("echo-bench faults: loopback, each server in its own process (2 tokio workers)");
    let echo_servers = [
        Subject::Example,
        Subject::ServeEcho,
        Subject::Bench(Kind::Sockeye),
        Subject::Bench(Kind::Tungstenite),
        Subject::Bench(Kind::Fastwebsockets),
    ];
    for check in &options.checks {
        let subjects: Vec<Subject> = match check.as_str() {
            "idle" => [Subject::Example, Subject::ServeEcho, Subject::ServeRooms]
                .into_iter()
                .chain(echo_servers[2..].iter().copied())
                .collect(),
            "shutdown" => vec![Subject::ServeRooms],
            _ => echo_servers.to_vec(),
        };
        println!("\n== {check} ==");
        for subject in subjects.into_iter().filter(|s| options.wants(*s)) {
            let server = match spawn(subject, &options) {
                Ok(server) => server,
                Err(e) => {
                    println!("{:<24} skipped: {e}", subject.name());
                    continue;
                }
            };
            let name = subject.name();
            let report = rt.block_on(async {
                let run = async {
                    match check.as_str() {
                        "idle" => idle(&server, subject, options.idle).await,
                        "storm" => storm(&server).await,
                        "nonreading" => non_reading(&server).await,
                        "resets" => resets(&server).await,
                        _ => shutdown(server).await,
                    }
                };
                // Every check is bounded; this is the backstop.
                tokio::time::timeout(Duration::from_secs(180), run)
                    .await
                    .unwrap_or_else(|_| "did not finish within 180 s".into())
            });
            println!("{name:<24} {report}");
        }
    }
    Ok(())
}

// ---- Clients ----

/// A 20-byte binary message, masked.
fn small_frame() -> Vec<u8> {
    load::masked_frame(0x2, &load::payload(20))
}

/// Reads one unmasked server frame: (opcode, payload length, first two payload bytes). Control
/// frames in between are returned like the others.
async fn read_frame(tcp: &mut TcpStream) -> std::io::Result<(u8, usize, [u8; 2])> {
    let mut head = [0_u8; 2];
    tcp.read_exact(&mut head).await?;
    let mut len = usize::from(head[1] & 0x7f);
    if len == 126 {
        let mut ext = [0_u8; 2];
        tcp.read_exact(&mut ext).await?;
        len = usize::from(u16::from_be_bytes(ext));
    } else if len == 127 {
        let mut ext = [0_u8; 8];
        tcp.read_exact(&mut ext).await?;
        len = usize::try_from(u64::from_be_bytes(ext)).unwrap_or(usize::MAX);
    }
    let mut first = [0_u8; 2];
    let mut rest = len;
    let mut buf = [0_u8; 4096];
    while rest > 0 {
        let n = tcp.read(&mut buf[..rest.min(4096)]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if rest == len {
            first[0] = buf[0];
            first[1] = if n > 1 { buf[1] } else { 0 };
        }
        rest -= n;
    }
    Ok((head[0] & 0x0f, len, first))
}

/// Well-behaved clients, each echoing one 20-byte message at a time; every round trip is
/// recorded with its time (a lost echo as `ECHO_TIMEOUT`).
struct Echoers {
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: JoinSet<()>,
}

impl Echoers {
    async fn start(target: &Target, count: usize) -> Result<Self, String> {
        let (conns, errors) = load::connect_many(target, count, 50).await;
        if let Some(e) = errors.first() {
            return Err(format!("well-behaved clients could not connect: {e}"));
        }
        let samples = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        for (mut tcp, _) in conns {
            let (samples, failed, stop) = (samples.clone(), failed.clone(), stop.clone());
            tasks.spawn(async move {
                let frame = small_frame();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let echoed = tokio::time::timeout(ECHO_TIMEOUT, async {
                        tcp.write_all(&frame).await?;
                        loop {
                            // Skip anything else the server sends.
                            if read_frame(&mut tcp).await?.0 == 0x2 {
                                return Ok::<_, std::io::Error>(());
                            }
                        }
                    })
                    .await;
                    let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    samples.lock().unwrap().push((start, ns));
                    if !matches!(echoed, Ok(Ok(()))) {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    // About 100 messages a second each: a steady load, not a saturating one.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
        Ok(Self {
            samples,
            failed,
            stop,
            tasks,
        })
    }

    /// p99 of the round trips started in `[from, to)`, in milliseconds, and their count.
    fn p99_ms(&self, from: Instant, to: Instant) -> (f64, usize) {
        let mut ns: Vec<u64> = self
            .samples
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, ns)| *ns)
            .collect();
        ns.sort_unstable();
        if ns.is_empty() {
            return (f64::NAN, 0);
        }
        let i = ((ns.len() as f64 * 0.99).ceil() as usize).clamp(1, ns.len()) - 1;
        (ns[i] as f64 / 1e6, ns.len())
    }

    async fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        self.failed.load(Ordering::Relaxed)
    }
}

/// A connection from `source` (a loopback address other than 127.0.0.1, so that per-address
/// accounting sees several attackers).
async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(to).await
}

fn request(addr: SocketAddr) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

// ---- The checks ----

async fn idle(server: &Server, subject: Subject, count: usize) -> String {
    let rooms = subject == Subject::ServeRooms;
    let target = |i: usize| {
        server.target(&if rooms {
            format!("/rooms/r{}", i % 100)
        } else {
            "/".into()
        })
    };
    let (warm, _) = load::connect_many(&target(0), 1, 1).await;
    tokio::time::sleep(SETTLE).await;
    let before = server.rss();
    // 100 rooms of 100 members for `sockeye serve`: open them room by room.
    let mut conns = Vec::with_capacity(count);
    let mut failed = 0;
    if rooms {
        for room in 0..100 {
            let (c, e) = load::connect_many(&target(room), count / 100, 100).await;
            conns.extend(c);
            failed += e.len();
        }
    } else {
        let (c, e) = load::connect_many(&target(0), count, 100).await;
        conns = c;
        failed = e.len();
    }
    tokio::time::sleep(SETTLE).await;
    let held = server.rss();
    let n = conns.len().max(1) as f64;
    let per = |rss: u64| (rss as f64 - before as f64) / n;
    // Each echoes one message (in rooms: one member per room sends one, which the 99 others
    // receive and do not read).
    let frame = small_frame();
    let mut echoed = 0;
    for (i, (tcp, _)) in conns.iter_mut().enumerate() {
        if rooms {
            if i % (count / 100).max(1) == 0 && tcp.write_all(&frame).await.is_ok() {
                echoed += 1;
            }
        } else if tcp.write_all(&frame).await.is_ok()
            && matches!(read_frame(tcp).await, Ok((0x2, 20, _)))
        {
            echoed += 1;
        }
    }
    tokio::time::sleep(SETTLE).await;
    let after = server.rss();
    drop((conns, warm));
    let what = if rooms {
        "after one message in each of 100 rooms"
    } else {
        "after each echoed once"
    };
    format!(
        "{n} idle ({failed} failed): RSS {before} -> {held} KiB, {:.2} KiB/conn held; \
         {what} ({echoed}): {after} KiB, {:.2} KiB/conn",
        per(held),
        per(after)
    )
}

async fn storm(server: &Server) -> String {
    let echoers = match Echoers::start(&server.target("/"), ECHOERS).await {
        Ok(e) => e,
        Err(e) => return e,
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calm_from = Instant::now() - Duration::from_secs(2);
    let storm_from = Instant::now();
    let storm_end = storm_from + STORM;
    // The stalled handshakes, kept at `STALLED`: each one reconnects when the server drops it.
    let dropped = Arc::new(AtomicU64::new(0));
    let opened = Arc::new(AtomicU64::new(0));
    let mut stalled = JoinSet::new();
    for i in 0..STALLED {
        let (addr, dropped, opened) = (server.addr, dropped.clone(), opened.clone());
        let source = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i % 8).unwrap_or(0));
        stalled.spawn(async move {
            let request = request(addr);
            while Instant::now() < storm_end {
                let Ok(mut tcp) = connect_from(source, addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let hold = async {
                    match i % 3 {
                        0 => {}
                        1 => tcp.write_all(&request.as_bytes()[..30]).await?,
                        _ => {
                            for b in request.as_bytes() {
                                tcp.write_all(std::slice::from_ref(b)).await?;
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                    // Held until the server drops it.
                    let mut buf = [0_u8; 512];
                    while tcp.read(&mut buf).await? > 0 {}
                    Ok::<_, std::io::Error>(())
                };
                let until = tokio::time::Instant::from_std(storm_end);
                if tokio::time::timeout_at(until, hold).await.is_ok() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        if i % 100 == 99 {
            tokio::task::yield_now().await;
        }
    }
    // Newcomers, from 127.0.0.1, one every `NEWCOMER_EVERY`.
    let mut newcomers = JoinSet::new();
    let target = server.target("/");
    while Instant::now() + NEWCOMER_DEADLINE < storm_end {
        tokio::time::sleep(NEWCOMER_EVERY).await;
        let target = target.clone();
        newcomers.spawn(async move {
            tokio::time::timeout(NEWCOMER_DEADLINE, async {
                let (mut tcp, _) = load::connect(&target).await.ok()?;
                tcp.write_all(&small_frame()).await.ok()?;
                matches!(read_frame(&mut tcp).await, Ok((0x2, 20, _))).then_some(())
            })
            .await
            .ok()
            .flatten()
            .is_some()
        });
    }
    let (mut admitted, mut tried) = (0, 0);
    while let Some(ok) = newcomers.join_next().await {
        tried += 1;
        admitted += usize::from(ok.unwrap_or(false));
    }
    while stalled.join_next().await.is_some() {}
    let held_fds = server.fds();
    let (calm, calm_n) = echoers.p99_ms(calm_from, storm_from);
    let (during, during_n) = echoers.p99_ms(storm_from, storm_end);
    let failed = echoers.stop().await;
    format!(
        "echoers' p99 {calm:.2} ms calm ({calm_n}), {during:.2} ms in the storm ({during_n}), \
         {failed} of {ECHOERS} lost; newcomers served {admitted} of {tried}; stalled opened {}, \
         dropped by the server {}; server fds at the storm's end {held_fds}",
        opened.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed)
    )
}

/// What a client that never reads sends.
#[derive(Clone, Copy)]
enum Flood {
    Large,
    Small,
    Pings,
}

async fn non_reading(server: &Server) -> String {
    let mut out = Vec::new();
    for flood in [Flood::Large, Flood::Small, Flood::Pings] {
        out.push(non_reading_one(server, flood).await);
    }
    out.join("\n                         ")
}

async fn non_reading_one(server: &Server, flood: Flood) -> String {
    let target = server.target("/");
    let echoers = match Echoers::start(&target, ECHOERS).await {
        Ok(e) => e,
        Err(e) => return e,
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calm_from = Instant::now() - Duration::from_secs(1);
    let before = server.rss();
    let (what, burst) = match flood {
        Flood::Large => (
            "64 KiB messages",
            load::masked_frame(0x2, &load::payload(64 << 10)),
        ),
        Flood::Small => ("20 B messages", small_frame().repeat(1000)),
        Flood::Pings => (
            "125 B pings",
            load::masked_frame(0x9, &load::payload(125)).repeat(200),
        ),
    };
    let burst = Arc::new(burst);
    let from = Instant::now();
    let end = from + NON_READING;
    // The senders run on a runtime of their own (one thread): on the echoers' runtime, their
    // write loops would delay the echoers' tasks, and the p99 would measure this program.
    let flood_rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return format!("no runtime for the senders: {e}"),
    };
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (target, sent) = (target.clone(), sent.clone());
        flood_rt.spawn(async move {
            let (conns, _) = load::connect_many(&target, NON_READERS, 50).await;
            let mut tasks = JoinSet::new();
            for (mut tcp, _) in conns {
                let (burst, sent) = (burst.clone(), sent.clone());
                tasks.spawn(async move {
                    let until = tokio::time::Instant::from_std(end);
                    let _ = tokio::time::timeout_at(until, async {
                        while tcp.write_all(&burst).await.is_ok() {
                            sent.fetch_add(burst.len() as u64, Ordering::Relaxed);
                        }
                    })
                    .await;
                    // Held (unread) until the phase ends, then dropped.
                    tokio::time::sleep_until(until).await;
                });
            }
            while tasks.join_next().await.is_some() {}
        })
    };
    let mut peak = before;
    while Instant::now() < end {
        peak = peak.max(server.rss());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = flood.await;
    flood_rt.shutdown_background();
    let (calm, _) = echoers.p99_ms(calm_from, from);
    let (during, n) = echoers.p99_ms(from, end);
    let failed = echoers.stop().await;
    tokio::time::sleep(SETTLE).await;
    let after = server.rss();
    format!(
        "{NON_READERS} never reading, {what}: {:.1} MiB sent; RSS {before} KiB, peak {peak} KiB \
         (+{:.1} MiB), {after} KiB after; echoers' p99 {calm:.2} ms calm, {during:.2} ms beside \
         them ({n}), {failed} of {ECHOERS} lost",
        sent.load(Ordering::Relaxed) as f64 / f64::from(1 << 20),
        (peak.saturating_sub(before)) as f64 / 1024.0
    )
}

async fn resets(server: &Server) -> String {
    let target = server.target("/");
    let (warm, _) = load::connect_many(&target, 1, 1).await;
    drop(warm);
    tokio::time::sleep(SETTLE).await;
    let (fds0, rss0) = (server.fds(), server.rss());
    let request = request(server.addr);
    let mut large = load::masked_frame(0x2, &load::payload(RESET_LARGE));
    large.extend_from_slice(&load::masked_frame(0x2, &load::payload(1000))[..200]);
    let large = Arc::new(large);
    let mut clients = Vec::with_capacity(RESETS);
    let mut set = JoinSet::new();
    for i in 0..RESETS {
        let (target, request, large) = (target.clone(), request.clone(), large.clone());
        set.spawn(async move { reset_client(&target, &request, &large, i % 4).await });
        while set.len() >= 100 {
            if let Some(Ok(Some(tcp))) = set.join_next().await {
                clients.push(tcp);
            }
        }
    }
    while let Some(joined) = set.join_next().await {
        if let Ok(Some(tcp)) = joined {
            clients.push(tcp);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fds_held, rss_held) = (server.fds(), server.rss());
    let opened = clients.len();
    for tcp in &clients {
        let _ = tcp.set_zero_linger();
    }
    let reset_at = Instant::now();
    drop(clients);
    let mut fds = server.fds();
    while fds > fds0 && reset_at.elapsed() < RESET_SETTLE {
        tokio::time::sleep(Duration::from_millis(10)).await;
        fds = server.fds();
    }
    let back_in = reset_at.elapsed();
    tokio::time::sleep(SETTLE).await;
    let rss = server.rss();
    format!(
        "{opened} reset at once: fds {fds0} -> {fds_held} -> {fds} ({}); RSS {rss0} -> {rss_held} \
         -> {rss} KiB ({:+} KiB)",
        if fds <= fds0 {
            format!("back in {:.0} ms", back_in.as_secs_f64() * 1e3)
        } else {
            format!("{} still open after {RESET_SETTLE:?}", fds - fds0)
        },
        rss as i64 - rss0 as i64
    )
}

/// A client left mid-head (0), mid-header (1), mid-payload (2) or with a large echo owed and a
/// frame half sent (3).
async fn reset_client(
    target: &Target,
    request: &str,
    large: &[u8],
    kind: usize,
) -> Option<TcpStream> {
    if kind == 0 {
        let mut tcp = TcpStream::connect(target.addr).await.ok()?;
        tcp.write_all(&request.as_bytes()[..40]).await.ok()?;
        return Some(tcp);
    }
    let (mut tcp, _) = load::connect(target).await.ok()?;
    match kind {
        1 => {
            let frame = load::masked_frame(0x2, &load::payload(70_000));
            tcp.write_all(&frame[..3]).await.ok()?;
        }
        2 => {
            let frame = load::masked_frame(0x2, &load::payload(64 << 10));
            tcp.write_all(&frame[..1000]).await.ok()?;
        }
        _ => {
            // The server's echo is never read: written until the socket buffers are full.
            let _ = tokio::time::timeout(Duration::from_secs(2), tcp.write_all(large)).await;
        }
    }
    Some(tcp)
}

/// Slow room members: a small receive buffer, and one message read every 20 ms.
const SLOW_MEMBERS: usize = 6;
const FAST_MEMBERS: usize = 2;
/// Messages the sender publishes, `PUBLISHED_SIZE` each (5.6 MiB for each member): more than
/// a member's WebSocket queues before `send` waits (1 MiB) plus what the sockets buffer, less
/// than that and the relay's queue (4 MiB) together, so that a slow member still has messages
/// waiting in the relay when the signal comes.
const PUBLISHED: usize = 120;
const PUBLISHED_SIZE: usize = 48 << 10;

async fn shutdown(server: Server) -> String {
    let mut server = server;
    let addr = server.addr;
    let target = server.target("/rooms/drain");
    let mut members = JoinSet::new();
    let mut streams = Vec::new();
    for i in 0..SLOW_MEMBERS + FAST_MEMBERS {
        let slow = i < SLOW_MEMBERS;
        let stream = async {
            let socket = TcpSocket::new_v4()?;
            if slow {
                socket.set_recv_buffer_size(4096)?;
            }
            let tcp = socket.connect(addr).await?;
            Ok::<_, std::io::Error>(tcp)
        };
        match stream.await {
            Ok(tcp) => streams.push((slow, tcp)),
            Err(e) => return format!("member could not connect: {e}"),
        }
    }
    // The handshake by hand on the prepared sockets.
    let mut ready = Vec::new();
    for (slow, mut tcp) in streams {
        let head = request(addr).replace("GET / ", "GET /rooms/drain ");
        if tcp.write_all(head.as_bytes()).await.is_err() {
            return "member handshake failed".into();
        }
        let mut got = Vec::new();
        let mut byte = [0_u8];
        while !got.ends_with(b"\r\n\r\n") {
            if tcp.read_exact(&mut byte).await.is_err() {
                return "member handshake failed".into();
            }
            got.push(byte[0]);
        }
        if !got.starts_with(b"HTTP/1.1 101") {
            return format!(
                "member refused: {}",
                String::from_utf8_lossy(&got[..12.min(got.len())])
            );
        }
        ready.push((slow, tcp));
    }
    let fast_done = Arc::new(AtomicU64::new(0));
    for (slow, mut tcp) in ready {
        let fast_done = fast_done.clone();
        members.spawn(async move {
            let (mut count, mut close) = (0_usize, None);
            let _ = tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    if slow {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    match read_frame(&mut tcp).await {
                        Ok((0x1 | 0x2, _, _)) => {
                            count += 1;
                            if !slow && count == PUBLISHED {
                                fast_done.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok((0x8, len, code)) => {
                            close = Some(if len >= 2 {
                                u16::from_be_bytes(code)
                            } else {
                                1005
                            });
                            // Our Close back (masked, empty), as a client does.
                            let _ = tcp.write_all(&[0x88, 0x80, 0, 0, 0, 0]).await;
                            return;
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            })
            .await;
            (slow, count, close)
        });
    }
    let (mut sender, _) = match load::connect(&target).await {
        Ok(c) => c,
        Err(e) => return format!("sender could not connect: {e}"),
    };
    // Members join when their task starts serving them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..PUBLISHED {
        let mut text = format!("{{\"n\":{i},\"pad\":\"");
        text.extend(std::iter::repeat_n('x', PUBLISHED_SIZE - text.len() - 2));
        text.push_str("\"}");
        if sender
            .write_all(&load::masked_frame(0x1, text.as_bytes()))
            .await
            .is_err()
        {
            return "sender failed".into();
        }
    }
    // Every message is in the server once the fast members have them all.
    let start = Instant::now();
    while fast_done.load(Ordering::Relaxed) < FAST_MEMBERS as u64
        && start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // SAFETY: kill(2) on our own child's pid, which we have not waited for yet.
    unsafe {
        libc::kill(i32::try_from(server.pid()).unwrap_or(0), libc::SIGTERM);
    }
    let signalled = Instant::now();
    let (mut slow_got, mut fast_got, mut codes) = (0, 0, Vec::new());
    while let Some(joined) = members.join_next().await {
        if let Ok((slow, count, close)) = joined {
            if slow {
                slow_got += count;
            } else {
                fast_got += count;
            }
            codes.push(close.map_or("none".to_string(), |c| c.to_string()));
        }
    }
    let status = (0..200)
        .find_map(|_| match server.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => {
                std::thread::sleep(Duration::from_millis(50));
                None
            }
        })
        .unwrap_or_else(|| "still running".into());
    codes.sort();
    codes.dedup();
    let slow_want = SLOW_MEMBERS * PUBLISHED;
    let fast_want = FAST_MEMBERS * PUBLISHED;
    format!(
        "SIGTERM after {PUBLISHED} x {} KiB published to {} members: slow members got {slow_got} of \
         {slow_want} (LOST {}), fast members {fast_got} of {fast_want} (LOST {}); close codes \
         seen {}; server {status} {:.1} s after the signal",
        PUBLISHED_SIZE >> 10,
        SLOW_MEMBERS + FAST_MEMBERS,
        slow_want - slow_got.min(slow_want),
        fast_want - fast_got.min(fast_want),
        codes.join(", "),
        signalled.elapsed().as_secs_f64()
    )
}

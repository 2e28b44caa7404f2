//! The HTTP/2 row: many WebSockets on one HTTP/2 connection (RFC 8441) against the same number
//! of WebSockets each on its own HTTP/1.1 connection, both over TLS, against one sockeye server
//! that serves both versions on one port (`sockeye::hyper::serve_connection`, ALPN `h2` and
//! `http/1.1`).
//!
//! The client is sockeye's own for both (`ClientBuilder::http2(Never)` per connection, or one
//! `Http2Connection` and `websocket` per stream), so the two columns differ only in the HTTP
//! version. Each WebSocket keeps DEPTH binary messages in flight and checks every echo.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sockeye::http2::Http2Connection;
use sockeye::{ClientBuilder, Http2Policy, Message, TlsConfig, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// HTTP version under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each WebSocket on its own TLS connection, HTTP/1.1 upgrade.
    Http1,
    /// Every WebSocket a stream of `h2_conns` TLS connections, extended CONNECT.
    Http2,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Http1 => "HTTP/1.1",
            Self::Http2 => "HTTP/2",
        }
    }
}

/// Runs the TLS echo server until killed: a self-signed certificate made at start, ALPN `h2`
/// and `http/1.1`, both versions through `sockeye::hyper::serve_connection`. Prints
/// `listening ADDR` once bound.
pub fn serve_tls(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    crate::raise_nofile();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let tls = sockeye::TlsAcceptor::builder(cert.cert.pem().as_bytes(), cert.signing_key.serialize_pem().as_bytes())?
        .alpn_protocols(["h2", "http/1.1"])
        .build()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        let mut out = std::io::stdout();
        writeln!(out, "listening {}", listener.local_addr()?)?;
        out.flush()?;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let tls = tls.clone();
            tokio::spawn(async move {
                let Ok(stream) = tls.accept(tcp).await else {
                    return;
                };
                let _ = sockeye::hyper::serve_connection(
                    sockeye::ServerBuilder::new(),
                    sockeye::MaybeTlsStream::ServerTls(Box::new(stream)),
                    |mut ws, _request| async move {
                        while let Some(Ok(message)) = ws.next().await {
                            if message.is_data() && ws.send(message).await.is_err() {
                                return;
                            }
                        }
                    },
                )
                .await;
            });
        }
    })
}

/// One load run against a TLS server.
#[derive(Debug, Clone)]
pub struct Spec {
    pub mode: Mode,
    pub conns: usize,
    pub h2_conns: usize,
    pub size: usize,
    pub depth: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub server_pid: Option<u32>,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub msgs: u64,
    pub secs: f64,
    pub lat_ns: Vec<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
    pub server_cpu_secs: Option<f64>,
}

impl Outcome {
    pub fn msgs_per_sec(&self) -> f64 {
        self.msgs as f64 / self.secs
    }
    pub fn cpu_us_per_msg(&self) -> f64 {
        self.server_cpu_secs.map_or(f64::NAN, |c| c * 1e6 / self.msgs.max(1) as f64)
    }
    pub fn pct_us(&self, p: f64) -> f64 {
        if self.lat_ns.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat_ns.len() - 1) as f64 * p).round() as usize;
        self.lat_ns[i] as f64 / 1000.0
    }
}

/// Runs the load on its own 2-worker runtime.
pub fn run(addr: SocketAddr, spec: &Spec) -> Outcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run_async(addr, spec))
}

fn client(addr: SocketAddr) -> ClientBuilder {
    // The certificate is the server's own self-signed one; verification costs only at connect.
    ClientBuilder::new(format!("wss://localhost:{}/echo", addr.port()))
        .tls(TlsConfig::new().dangerous_accept_any_certificate())
}

/// Either kind of WebSocket the run drives.
enum Ws {
    Http1(WebSocket<sockeye::MaybeTlsStream>),
    Http2(WebSocket<sockeye::http2::Http2Stream>),
}

async fn open(addr: SocketAddr, spec: &Spec) -> Result<Vec<Ws>, String> {
    let mut sockets = Vec::with_capacity(spec.conns);
    match spec.mode {
        Mode::Http1 => {
            let mut set = JoinSet::new();
            for _ in 0..spec.conns {
                set.spawn(client(addr).http2(Http2Policy::Never).connect());
            }
            while let Some(joined) = set.join_next().await {
                let (ws, response) = joined.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
                if response.version() != http::Version::HTTP_11 {
                    return Err(format!("expected HTTP/1.1, got {:?}", response.version()));
                }
                sockets.push(Ws::Http1(ws));
            }
        }
        Mode::Http2 => {
            let mut connections = Vec::new();
            for _ in 0..spec.h2_conns.max(1) {
                connections.push(Http2Connection::open(&client(addr)).await.map_err(|e| e.to_string())?);
            }
            for i in 0..spec.conns {
                let (ws, _) = connections[i % connections.len()]
                    .websocket(client(addr))
                    .await
                    .map_err(|e| e.to_string())?;
                sockets.push(Ws::Http2(ws));
            }
        }
    }
    Ok(sockets)
}

async fn run_async(addr: SocketAddr, spec: &Spec) -> Outcome {
    let mut out = Outcome {
        secs: spec.duration.as_secs_f64(),
        ..Outcome::default()
    };
    let sockets = match open(addr, spec).await {
        Ok(sockets) => sockets,
        Err(e) => {
            out.errors = spec.conns as u64;
            out.first_error = Some(e);
            return out;
        }
    };
    let payload = Message::binary(crate::load::payload(spec.size));
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + spec.warmup;
    let deadline = measure_from + spec.duration;
    let cpu = spec.server_pid.map(|pid| {
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let before = crate::load::cpu_secs(pid)?;
            tokio::time::sleep_until(deadline.into()).await;
            Some(crate::load::cpu_secs(pid)? - before)
        })
    });
    let counted = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for ws in sockets {
        let (payload, depth) = (payload.clone(), spec.depth);
        let counted = Arc::clone(&counted);
        set.spawn(async move {
            match ws {
                Ws::Http1(ws) => drive(ws, payload, depth, start, measure_from, deadline, &counted).await,
                Ws::Http2(ws) => drive(ws, payload, depth, start, measure_from, deadline, &counted).await,
            }
        });
    }
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(lat)) => out.lat_ns.extend(lat),
            Ok(Err(e)) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e.to_string());
            }
        }
    }
    out.msgs = counted.load(Ordering::Relaxed);
    out.lat_ns.sort_unstable();
    if let Some(cpu) = cpu {
        out.server_cpu_secs = cpu.await.ok().flatten();
    }
    out
}

/// Keeps `depth` messages in flight on one WebSocket until `deadline`, checking each echo;
/// the round-trip times of those echoed within the window.
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocket<S>,
    payload: Message,
    depth: usize,
    start: Instant,
    measure_from: Instant,
    deadline: Instant,
    counted: &AtomicU64,
) -> Result<Vec<u64>, String> {
    tokio::time::sleep_until(start.into()).await;
    let mut sent = std::collections::VecDeque::with_capacity(depth);
    let mut lat = Vec::new();
    for _ in 0..depth {
        ws.feed(payload.clone()).await.map_err(|e| e.to_string())?;
        sent.push_back(Instant::now());
    }
    ws.flush().await.map_err(|e| e.to_string())?;
    loop {
        let next = tokio::time::timeout_at(deadline.into(), ws.next()).await;
        let Ok(next) = next else {
            // The window is over; what is in flight is not waited for.
            return Ok(lat);
        };
        match next {
            Some(Ok(message)) if message.is_data() => {
                if message != payload {
                    return Err("an echo differs from the message sent".into());
                }
                let at = sent.pop_front().ok_or("an echo of nothing")?;
                let now = Instant::now();
                if now >= measure_from && now < deadline {
                    counted.fetch_add(1, Ordering::Relaxed);
                    lat.push(u64::try_from((now - at).as_nanos()).unwrap_or(u64::MAX));
                }
                ws.send(payload.clone()).await.map_err(|e| e.to_string())?;
                sent.push_back(Instant::now());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the server closed".into()),
        }
    }
}

struct Workload {
    id: &'static str,
    conns: usize,
    size: usize,
    depth: usize,
}

const WORKLOADS: [Workload; 4] = [
    Workload { id: "a", conns: 100, size: 20, depth: 1 },
    Workload { id: "b", conns: 100, size: 20, depth: 16 },
    Workload { id: "c", conns: 10, size: 16 << 10, depth: 1 },
    Workload { id: "d", conns: 10, size: 256 << 10, depth: 1 },
];

/// `echo-bench h2 [--quick] [--rounds N] [--secs S] [--h2-conns N]`: each workload against a
/// fresh server per run, HTTP/1.1 and HTTP/2 alternating first, medians over rounds, ratios.
pub fn cmd_h2(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let (mut rounds, mut secs, mut warmup, mut h2_conns) = (3_usize, 2.0_f64, 0.25_f64, 1_usize);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--quick" => {
                rounds = 1;
                secs = 1.0;
                warmup = 0.2;
            }
            "--rounds" => rounds = crate::flag_value::<usize>(args, &mut i)?.clamp(1, 9),
            "--secs" => secs = crate::flag_value::<f64>(args, &mut i)?.clamp(0.2, 30.0),
            "--h2-conns" => h2_conns = crate::flag_value::<usize>(args, &mut i)?.max(1),
            a => return Err(format!("unexpected argument {a:?}").into()),
        }
        i += 1;
    }
    crate::raise_nofile();
    let modes = [Mode::Http1, Mode::Http2];
    // samples[workload][mode] = (msg/s, cpu us/msg, p50, p99) per round
    let mut samples = vec![vec![Vec::new(); 2]; WORKLOADS.len()];
    let mut errors = vec![vec![(0_u64, None::<String>); 2]; WORKLOADS.len()];
    for round in 0..rounds {
        for (w, wl) in WORKLOADS.iter().enumerate() {
            let mut order = [0, 1];
            order.rotate_left(round % 2);
            for m in order {
                let server = crate::run::Server::spawn_named("sockeye-tls")?;
                let spec = Spec {
                    mode: modes[m],
                    conns: wl.conns,
                    h2_conns,
                    size: wl.size,
                    depth: wl.depth,
                    warmup: Duration::from_secs_f64(warmup),
                    duration: Duration::from_secs_f64(secs),
                    server_pid: Some(server.pid()),
                };
                let o = run(server.addr(), &spec);
                drop(server);
                eprintln!(
                    "  round {}/{rounds} ({}) {:<8} {:>10.0} msg/s  p50 {:>9.1} us  p99 {:>9.1} us  server CPU {:>7.3} us/msg  errors {}{}",
                    round + 1,
                    wl.id,
                    modes[m].name(),
                    o.msgs_per_sec(),
                    o.pct_us(0.5),
                    o.pct_us(0.99),
                    o.cpu_us_per_msg(),
                    o.errors,
                    o.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
                );
                samples[w][m].push((o.msgs_per_sec(), o.cpu_us_per_msg(), o.pct_us(0.5), o.pct_us(0.99)));
                errors[w][m].0 += o.errors;
                if errors[w][m].1.is_none() {
                    errors[w][m].1 = o.first_error;
                }
            }
        }
    }
    let median = |v: Vec<f64>| crate::run::median(v);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "echo-bench h2: {rounds} round(s) of {secs:.1} s per version per workload, median over rounds; TLS for both;"
    );
    let _ = writeln!(
        out,
        "HTTP/2 = every WebSocket a stream of {h2_conns} HTTP/2 connection(s); HTTP/1.1 = one TLS connection per WebSocket."
    );
    let _ = writeln!(
        out,
        "{:<4} {:<24} {:>11} {:>11} {:>8} {:>9} {:>9} {:>8} {:>10} {:>10} {:>7}",
        "", "workload", "h1 msg/s", "h2 msg/s", "h2/h1", "h1 CPU", "h2 CPU", "h2/h1", "h1 p99 us", "h2 p99 us", "errors"
    );
    for (w, wl) in WORKLOADS.iter().enumerate() {
        let col = |m: usize, k: usize| {
            median(
                samples[w][m]
                    .iter()
                    .map(|s: &(f64, f64, f64, f64)| [s.0, s.1, s.2, s.3][k])
                    .collect(),
            )
        };
        let (r1, r2) = (col(0, 0), col(1, 0));
        let (c1, c2) = (col(0, 1), col(1, 1));
        let _ = writeln!(
            out,
            "({}) {:<24} {:>11.0} {:>11.0} {:>7.2}x {:>9.3} {:>9.3} {:>7.2}x {:>10.1} {:>10.1} {:>7}",
            wl.id,
            format!("{} WS x {} B, {} in flight", wl.conns, wl.size, wl.depth),
            r1,
            r2,
            r2 / r1,
            c1,
            c2,
            c2 / c1,
            col(0, 3),
            col(1, 3),
            errors[w][0].0 + errors[w][1].0
        );
        for (m, (count, first)) in errors[w].iter().enumerate() {
            if let Some(e) = first {
                let _ = writeln!(out, "     {} errors {count}, first: {e}", modes[m].name());
            }
        }
    }
    let _ = writeln!(out, "CPU = server CPU time (user + system) per echoed message, in us.");
    print!("{out}");
    Ok(())
}

/// `echo-bench tls-load ADDR --h1|--h2 [-c N] [--h2-conns N] [-s SIZE] [-d DEPTH] [-t SECS]`:
/// one run against a running `serve sockeye-tls` (for profiling the server).
pub fn cmd_tls_load(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = None;
    let mut spec = Spec {
        mode: Mode::Http2,
        conns: 100,
        h2_conns: 1,
        size: 20,
        depth: 1,
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(2),
        server_pid: None,
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--h1" => spec.mode = Mode::Http1,
            "--h2" => spec.mode = Mode::Http2,
            "-c" => spec.conns = crate::flag_value(args, &mut i)?,
            "--h2-conns" => spec.h2_conns = crate::flag_value(args, &mut i)?,
            "-s" => spec.size = crate::flag_value(args, &mut i)?,
            "-d" => spec.depth = crate::flag_value(args, &mut i)?,
            "-t" => spec.duration = Duration::from_secs_f64(crate::flag_value::<f64>(args, &mut i)?.clamp(0.1, 120.0)),
            a if addr.is_none() && !a.starts_with('-') => addr = Some(a.parse::<SocketAddr>()?),
            a => return Err(format!("unexpected argument {a:?}").into()),
        }
        i += 1;
    }
    crate::raise_nofile();
    let o = run(addr.ok_or("tls-load needs ADDR")?, &spec);
    println!(
        "{} {} WS x {} B, {} in flight: {:.0} msg/s, p50 {:.1} us, p99 {:.1} us, {} errors{}",
        spec.mode.name(),
        spec.conns,
        spec.size,
        spec.depth,
        o.msgs_per_sec(),
        o.pct_us(0.5),
        o.pct_us(0.99),
        o.errors,
        o.first_error.map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
    Ok(())
}

//! `run`: the orchestrator. Spawns each server as a child process of this binary, runs the same
//! in-process load against it, kills it; alternates servers over rounds and reports medians.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::deflate;
use crate::load::{self, Outcome, Spec, Target};
use crate::serve::Kind;

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
    Workload { id: "d", conns: 4, size: 1 << 20, depth: 1 },
];

/// The permessage-deflate workload: JSON-like text, compressed by the client for real.
const DEFLATE_WORKLOAD: Workload = Workload { id: "e", conns: 100, size: 1 << 10, depth: 1 };

fn size_label(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// A server child process; killed and reaped on drop.
pub struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn spawn(kind: Kind) -> Result<Self, String> {
        Self::spawn_named(kind.name())
    }

    /// `serve NAME 127.0.0.1:0` as a child of this executable.
    pub fn spawn_named(name: &str) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .args(["serve", name, "127.0.0.1:0"])
            .env_remove(crate::serve::LEVEL_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn {name}: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        server.addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("{name} server did not start (said {line:?})"))?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn target(&self, kind: Kind) -> Target {
        Target {
            addr: self.addr,
            path: "/echo".into(),
            tcp: !kind.is_ws(),
        }
    }

    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Default)]
struct Sample {
    msgs_per_sec: f64,
    mb_per_sec: f64,
    p50: f64,
    p99: f64,
    cpu_us_per_msg: f64,
    errors: u64,
    verified: u64,
    expected: u64,
    first_error: Option<String>,
    negotiated: Option<String>,
    /// Payload bytes per reply as the server sent it (compressed, for deflate).
    reply_bytes: f64,
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Per-metric medians over rounds; errors and checks summed.
fn combine(samples: &[Sample]) -> Sample {
    Sample {
        msgs_per_sec: median(samples.iter().map(|s| s.msgs_per_sec).collect()),
        mb_per_sec: median(samples.iter().map(|s| s.mb_per_sec).collect()),
        p50: median(samples.iter().map(|s| s.p50).collect()),
        p99: median(samples.iter().map(|s| s.p99).collect()),
        cpu_us_per_msg: median(samples.iter().map(|s| s.cpu_us_per_msg).collect()),
        errors: samples.iter().map(|s| s.errors).sum(),
        verified: samples.iter().map(|s| s.verified).sum(),
        expected: samples.iter().map(|s| s.expected).sum(),
        first_error: samples.iter().find_map(|s| s.first_error.clone()),
        negotiated: samples.iter().find_map(|s| s.negotiated.clone()),
        reply_bytes: median(samples.iter().map(|s| s.reply_bytes).collect()),
    }
}

struct Opts {
    rounds: usize,
    secs: f64,
    warmup: f64,
    idle: usize,
    deflate_idle: usize,
    json: bool,
    kinds: Vec<Kind>,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        rounds: 3,
        secs: 2.0,
        warmup: 0.25,
        idle: 5000,
        deflate_idle: 1000,
        json: false,
        kinds: Kind::ALL.to_vec(),
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--quick" => {
                o.rounds = 1;
                o.secs = 1.0;
                o.warmup = 0.2;
            }
            "--json" => o.json = true,
            "--rounds" => o.rounds = crate::flag_value::<usize>(args, &mut i)?.clamp(1, 9),
            "--secs" => o.secs = crate::flag_value::<f64>(args, &mut i)?.clamp(0.2, 30.0),
            "--idle" => o.idle = crate::flag_value::<usize>(args, &mut i)?.min(20_000),
            "--deflate-idle" => {
                o.deflate_idle = crate::flag_value::<usize>(args, &mut i)?.min(5_000);
            }
            "--only" => {
                i += 1;
                let list = args.get(i).ok_or("--only needs a list")?;
                o.kinds = list
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<Vec<Kind>, String>>()?;
            }
            a => return Err(format!("unexpected argument {a:?}")),
        }
        i += 1;
    }
    Ok(o)
}

struct IdleMem {
    kind: Kind,
    conns: usize,
    before_kib: u64,
    after_kib: u64,
    errors: usize,
}

impl IdleMem {
    fn per_conn_kib(&self) -> f64 {
        (self.after_kib as f64 - self.before_kib as f64) / self.conns.max(1) as f64
    }
}

fn idle_memory(kind: Kind, count: usize) -> Result<IdleMem, String> {
    let server = Server::spawn(kind)?;
    let target = server.target(kind);
    // One connection first, so that lazily set up state (runtime, allocator arenas) is in the
    // baseline, then `count` more.
    let ((before_kib, (after_kib, conns), mut errors), warm_errors) =
        load::hold_idle(&target, 1, |_| {
            std::thread::sleep(Duration::from_millis(200));
            let before = server.rss_kib().unwrap_or(0);
            let ((after, conns), errors) = load::hold_idle(&target, count, |conns| {
                std::thread::sleep(Duration::from_millis(500));
                (server.rss_kib().unwrap_or(0), conns)
            });
            (before, (after, conns), errors)
        });
    errors.extend(warm_errors);
    drop(server);
    if let Some(e) = errors.first() {
        eprintln!("  {}: {} idle connections failed (first: {e})", kind.name(), errors.len());
    }
    Ok(IdleMem {
        kind,
        conns,
        before_kib,
        after_kib,
        errors: errors.len(),
    })
}

fn sample_of(o: Outcome, conns: usize) -> Sample {
    Sample {
        msgs_per_sec: o.msgs_per_sec(),
        mb_per_sec: o.mb_per_sec(),
        p50: o.pct_us(0.50),
        p99: o.pct_us(0.99),
        cpu_us_per_msg: o.server_cpu_us_per_msg(),
        errors: o.errors,
        verified: o.verified,
        expected: conns as u64,
        reply_bytes: if o.msgs > 0 { o.reply_bytes as f64 / o.msgs as f64 } else { f64::NAN },
        first_error: o.first_error,
        negotiated: o.negotiated,
    }
}

/// One line per measured round, the same for every workload.
fn log_round(round: usize, rounds: usize, workload: &str, server: &str, sample: &Sample) {
    eprintln!(
        "  round {}/{} ({}) {:<22} {:>12.0} msg/s  p50 {:>9.1} us  p99 {:>9.1} us  server CPU {:>7.3} us/msg  errors {}",
        round + 1,
        rounds,
        workload,
        server,
        sample.msgs_per_sec,
        sample.p50,
        sample.p99,
        sample.cpu_us_per_msg,
        sample.errors
    );
}

fn failed_sample(conns: usize, e: String) -> Sample {
    Sample {
        msgs_per_sec: f64::NAN,
        mb_per_sec: f64::NAN,
        p50: f64::NAN,
        p99: f64::NAN,
        cpu_us_per_msg: f64::NAN,
        errors: conns as u64,
        expected: conns as u64,
        first_error: Some(e),
        ..Sample::default()
    }
}

/// The server's RSS per connection with deflate agreed, for one server and one offer.
struct DeflateMem {
    kind: Kind,
    context_takeover: bool,
    rss: deflate::IdleRss,
}

fn fmt_ratio(x: f64) -> String {
    if x.is_finite() { format!("{x:.2}x") } else { "-".into() }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_num(x: f64) -> String {
    if x.is_finite() { format!("{x:.3}") } else { "null".into() }
}

#[allow(clippy::too_many_lines)]
pub fn cmd_run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let t_start = Instant::now();
    let opts = parse_opts(args)?;
    let nofile = crate::raise_nofile();
    let kinds: Vec<Kind> = opts.kinds.iter().copied().filter(|k| Kind::PLAIN.contains(k)).collect();
    let dkinds: Vec<Kind> = opts.kinds.iter().copied().filter(|k| Kind::DEFLATE.contains(k)).collect();
    // The peers built apart (`peers/`): say how to build any that is missing before anything runs.
    let mut missing: Vec<String> = opts
        .kinds
        .iter()
        .filter_map(|&k| crate::serve::peer_exe(k).err().filter(|_| k.peer_binary().is_some()))
        .collect();
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        return Err(format!("{}\n(or leave them out with --only)", missing.join("\n")).into());
    }

    // 1. Echo check: text in two fragments, binary, ping -> text, binary, pong; for the deflate
    //    servers also three compressed messages on one connection, each inflated and compared.
    eprintln!("echo check (fragmented text, binary, ping; deflate: 3 compressed texts):");
    let mut checks = Vec::new();
    for &kind in &opts.kinds {
        let result = Server::spawn(kind).and_then(|server| {
            let target = server.target(kind);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(load::probe(&target))?;
            if Kind::DEFLATE.contains(&kind) {
                let agreed = rt.block_on(deflate::probe(&target)).map_err(|e| format!("deflate: {e}"))?;
                eprintln!("  {:<22} agreed: {agreed}", kind.name());
            }
            Ok(())
        });
        eprintln!("  {:<22} {}", kind.name(), result.as_ref().map_or_else(|e| format!("FAILED: {e}"), |()| "ok".into()));
        checks.push((kind, result));
    }

    // 2. Throughput and latency: rounds x workloads x servers (rotated each round).
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); kinds.len()]; WORKLOADS.len()];
    let mut dsamples: Vec<Vec<Sample>> = vec![Vec::new(); dkinds.len()];
    for round in 0..opts.rounds {
        let mut order: Vec<usize> = (0..kinds.len()).collect();
        order.rotate_left(round % kinds.len().max(1));
        for (w, wl) in WORKLOADS.iter().enumerate() {
            for &k in &order {
                let kind = kinds[k];
                let spec = Spec {
                    conns: wl.conns,
                    size: wl.size,
                    depth: wl.depth,
                    warmup: Duration::from_secs_f64(opts.warmup),
                    duration: Duration::from_secs_f64(opts.secs),
                    server_pid: None,
                };
                let sample = match Server::spawn(kind) {
                    Ok(server) => {
                        let spec = Spec {
                            server_pid: Some(server.child.id()),
                            ..spec
                        };
                        let o: Outcome = load::run(&server.target(kind), &spec);
                        drop(server);
                        sample_of(o, wl.conns)
                    }
                    Err(e) => failed_sample(wl.conns, e),
                };
                log_round(round, opts.rounds, wl.id, kind.name(), &sample);
                samples[w][k].push(sample);
            }
        }
        // The deflate workload, its servers rotated the same way.
        let wl = &DEFLATE_WORKLOAD;
        let mut order: Vec<usize> = (0..dkinds.len()).collect();
        order.rotate_left(round % dkinds.len().max(1));
        for &k in &order {
            let kind = dkinds[k];
            let sample = match Server::spawn(kind) {
                Ok(server) => {
                    let spec = Spec {
                        conns: wl.conns,
                        size: wl.size,
                        depth: wl.depth,
                        warmup: Duration::from_secs_f64(opts.warmup),
                        duration: Duration::from_secs_f64(opts.secs),
                        server_pid: Some(server.child.id()),
                    };
                    let o = deflate::run(&server.target(kind), &spec, deflate::OFFER);
                    drop(server);
                    sample_of(o, wl.conns)
                }
                Err(e) => failed_sample(wl.conns, e),
            };
            log_round(round, opts.rounds, wl.id, kind.name(), &sample);
            dsamples[k].push(sample);
        }
    }

    // 3. Memory per idle connection.
    let mut idle = opts.idle;
    let mut idle_note = None;
    let fd_needed = idle as u64 + 256;
    if nofile < fd_needed {
        idle = usize::try_from(nofile.saturating_sub(256)).unwrap_or(0);
        idle_note = Some(format!(
            "RLIMIT_NOFILE is {nofile} (hard limit): {} idle connections lowered to {idle}",
            opts.idle
        ));
    }
    let mut mem = Vec::new();
    if idle > 0 {
        eprintln!("idle memory ({idle} connections per server):");
        for &kind in kinds.iter().filter(|k| k.is_ws()) {
            match idle_memory(kind, idle) {
                Ok(m) => {
                    eprintln!("  {:<22} {:.2} KiB/conn", kind.name(), m.per_conn_kib());
                    mem.push(m);
                }
                Err(e) => eprintln!("  {:<22} FAILED: {e}", kind.name()),
            }
        }
    }

    // 3b. Memory per connection with deflate agreed, idle after one message, with and without
    //     context takeover (the client's offer asks for it or not).
    let mut dmem: Vec<DeflateMem> = Vec::new();
    let dcount = opts.deflate_idle.min(idle);
    if dcount > 0 && !dkinds.is_empty() {
        eprintln!("memory with deflate ({dcount} connections per server, each idle after one message):");
        for &kind in &dkinds {
            for (context_takeover, offer) in [(true, deflate::OFFER), (false, deflate::OFFER_NO_CTX)] {
                match Server::spawn(kind) {
                    Ok(server) => {
                        let rss = deflate::idle_rss(&server.target(kind), server.pid(), offer, dcount);
                        drop(server);
                        eprintln!(
                            "  {:<22} {:<17} {:.2} KiB/conn ({} conns, {} errors; agreed: {})",
                            kind.name(),
                            if context_takeover { "context takeover" } else { "no context takeover" },
                            rss.per_conn_kib(),
                            rss.conns,
                            rss.errors,
                            rss.negotiated.as_deref().unwrap_or("-")
                        );
                        if let Some(e) = &rss.first_error {
                            eprintln!("  {:<22} first error: {e}", "");
                        }
                        dmem.push(DeflateMem { kind, context_takeover, rss });
                    }
                    Err(e) => eprintln!("  {:<22} FAILED: {e}", kind.name()),
                }
            }
        }
    }

    // 4. Report.
    let results: Vec<Vec<Sample>> = samples
        .iter()
        .map(|per_kind| per_kind.iter().map(|s| combine(s)).collect())
        .collect();
    let dresults: Vec<Sample> = dsamples.iter().map(|s| combine(s)).collect();
    // The better peer at the same zlib level: the lower CPU per message of ratchet and yawc (either
    // form), the higher msg/s.
    let peers = |level: Option<u32>| {
        dkinds
            .iter()
            .zip(&dresults)
            .filter(move |(k, _)| {
                k.is_deflate_peer() && k.deflate_level() == level
            })
            .map(|(_, s)| s)
    };
    let peer_cpu = |level| {
        peers(level)
            .map(|s| s.cpu_us_per_msg)
            .filter(|x| x.is_finite())
            .fold(f64::NAN, f64::min)
    };
    let peer_rate = |level| {
        peers(level)
            .map(|s| s.msgs_per_sec)
            .filter(|x| x.is_finite())
            .fold(f64::NAN, f64::max)
    };
    let idx = |k: Kind| kinds.iter().position(|&x| x == k);
    let elapsed = t_start.elapsed().as_secs_f64();

    if opts.json {
        let mut j = String::from("{\n");
        let _ = writeln!(j, "  \"rounds\": {}, \"secs_per_run\": {}, \"elapsed_secs\": {},", opts.rounds, json_num(opts.secs), json_num(elapsed));
        j.push_str("  \"echo_check\": {");
        let parts: Vec<String> = checks
            .iter()
            .map(|(k, r)| format!("{}: {}", json_str(k.name()), r.as_ref().map_or_else(|e| json_str(e), |()| "\"ok\"".into())))
            .collect();
        j.push_str(&parts.join(", "));
        j.push_str("},\n  \"workloads\": [\n");
        let mut wls = Vec::new();
        for (w, wl) in WORKLOADS.iter().enumerate() {
            let mut rows = Vec::new();
            for (k, kind) in kinds.iter().enumerate() {
                let s = &results[w][k];
                rows.push(format!(
                    "      {{\"server\": {}, \"msgs_per_sec\": {}, \"mb_per_sec\": {}, \"p50_us\": {}, \"p99_us\": {}, \"server_cpu_us_per_msg\": {}, \"errors\": {}, \"verified\": {}, \"expected\": {}}}",
                    json_str(kind.name()), json_num(s.msgs_per_sec), json_num(s.mb_per_sec), json_num(s.p50), json_num(s.p99), json_num(s.cpu_us_per_msg), s.errors, s.verified, s.expected
                ));
            }
            wls.push(format!(
                "    {{\"id\": {}, \"conns\": {}, \"size\": {}, \"in_flight\": {}, \"results\": [\n{}\n    ]}}",
                json_str(wl.id), wl.conns, wl.size, wl.depth, rows.join(",\n")
            ));
        }
        j.push_str(&wls.join(",\n"));
        j.push_str("\n  ],\n  \"idle_memory\": [");
        let rows: Vec<String> = mem
            .iter()
            .map(|m| format!(
                "{{\"server\": {}, \"conns\": {}, \"rss_before_kib\": {}, \"rss_after_kib\": {}, \"kib_per_conn\": {}, \"errors\": {}}}",
                json_str(m.kind.name()), m.conns, m.before_kib, m.after_kib, json_num(m.per_conn_kib()), m.errors
            ))
            .collect();
        j.push_str(&rows.join(", "));
        j.push_str("],\n  \"deflate\": {\"id\": \"e\", \"results\": [");
        let rows: Vec<String> = dkinds
            .iter()
            .zip(&dresults)
            .map(|(k, s)| format!(
                "{{\"server\": {}, \"deflate\": {}, \"msgs_per_sec\": {}, \"p50_us\": {}, \"p99_us\": {}, \"server_cpu_us_per_msg\": {}, \"reply_bytes\": {}, \"errors\": {}, \"verified\": {}, \"expected\": {}, \"agreed\": {}}}",
                json_str(k.name()), json_str(k.deflate_impl().unwrap_or("")), json_num(s.msgs_per_sec), json_num(s.p50), json_num(s.p99), json_num(s.cpu_us_per_msg), json_num(s.reply_bytes), s.errors, s.verified, s.expected, json_str(s.negotiated.as_deref().unwrap_or(""))
            ))
            .collect();
        j.push_str(&rows.join(", "));
        j.push_str("], \"memory\": [");
        let rows: Vec<String> = dmem
            .iter()
            .map(|m| format!(
                "{{\"server\": {}, \"context_takeover\": {}, \"conns\": {}, \"kib_per_conn\": {}, \"errors\": {}, \"agreed\": {}}}",
                json_str(m.kind.name()), m.context_takeover, m.rss.conns, json_num(m.rss.per_conn_kib()), m.rss.errors, json_str(m.rss.negotiated.as_deref().unwrap_or(""))
            ))
            .collect();
        j.push_str(&rows.join(", "));
        j.push_str("]}\n}");
        println!("{j}");
        return Ok(());
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "echo-bench: {} round(s), {:.1} s per server per workload per round ({:.2} s warm-up not counted); median over rounds.",
        opts.rounds, opts.secs, opts.warmup
    );
    let _ = writeln!(out, "MB/s = payload MB (10^6 B) echoed per second, one way. Latency = round trip per message.");
    let _ = writeln!(out, "vs tungstenite = msg/s over the best of tungstenite and tungstenite-batched; vs tcp = msg/s over bare TCP echo.");
    let _ = writeln!(out, "checked = connections whose first echoed message matched byte for byte / connections run.");
    let _ = writeln!(out, "CPU us/msg = the server process's CPU time (user + system) in the window per echoed message; CPU vs tcp = that over bare TCP's (lower is better).");
    let _ = writeln!(out, "The CPU figures do not depend on how the 2 cores are shared with the load generator, so they are steadier than msg/s.");
    let _ = write!(out, "echo check (fragmented text, binary, ping):");
    for (k, r) in &checks {
        let _ = write!(out, " {} {};", k.name(), if r.is_ok() { "ok" } else { "FAILED" });
    }
    out.push('\n');
    for (w, wl) in WORKLOADS.iter().enumerate() {
        let best_tung = [Kind::Tungstenite, Kind::TungsteniteBatched]
            .into_iter()
            .filter_map(|k| idx(k).map(|i| results[w][i].msgs_per_sec))
            .filter(|x| x.is_finite())
            .fold(f64::NAN, f64::max);
        let tcp = idx(Kind::Tcp).map_or(f64::NAN, |i| results[w][i].msgs_per_sec);
        let _ = writeln!(
            out,
            "\n({}) {} connections x {}, {} in flight",
            wl.id,
            wl.conns,
            size_label(wl.size),
            wl.depth
        );
        let _ = writeln!(
            out,
            "{:<22} {:>12} {:>10} {:>10} {:>10} {:>15} {:>8} {:>11} {:>11} {:>9} {:>7}",
            "server", "msg/s", "MB/s", "p50 us", "p99 us", "vs tungstenite", "vs tcp", "CPU us/msg", "CPU vs tcp", "checked", "errors"
        );
        let tcp_cpu = idx(Kind::Tcp).map_or(f64::NAN, |i| results[w][i].cpu_us_per_msg);
        for (k, kind) in kinds.iter().enumerate() {
            let s = &results[w][k];
            let _ = writeln!(
                out,
                "{:<22} {:>12.0} {:>10.2} {:>10.1} {:>10.1} {:>15} {:>8} {:>11.3} {:>11} {:>9} {:>7}",
                kind.name(),
                s.msgs_per_sec,
                s.mb_per_sec,
                s.p50,
                s.p99,
                fmt_ratio(s.msgs_per_sec / best_tung),
                fmt_ratio(s.msgs_per_sec / tcp),
                s.cpu_us_per_msg,
                fmt_ratio(s.cpu_us_per_msg / tcp_cpu),
                format!("{}/{}", s.verified, s.expected),
                s.errors
            );
            if let Some(e) = &s.first_error {
                let _ = writeln!(out, "{:<22}   first error: {e}", "");
            }
        }
    }
    if !mem.is_empty() {
        let _ = writeln!(out, "\nmemory per idle connection ({idle} idle WebSocket connections, server VmRSS after - before)");
        if let Some(n) = &idle_note {
            let _ = writeln!(out, "note: {n}");
        }
        let _ = writeln!(
            out,
            "{:<22} {:>12} {:>12} {:>10} {:>12} {:>7}",
            "server", "RSS before", "RSS after", "conns", "KiB/conn", "errors"
        );
        for m in &mem {
            let _ = writeln!(
                out,
                "{:<22} {:>8} KiB {:>8} KiB {:>10} {:>12.2} {:>7}",
                m.kind.name(),
                m.before_kib,
                m.after_kib,
                m.conns,
                m.per_conn_kib(),
                m.errors
            );
        }
    }
    if !dkinds.is_empty() {
        let wl = &DEFLATE_WORKLOAD;
        let _ = writeln!(
            out,
            "\n({}) {} connections x {} JSON-like text, {} in flight, permessage-deflate (offer: {})",
            wl.id,
            wl.conns,
            size_label(wl.size),
            wl.depth,
            deflate::OFFER
        );
        let _ = writeln!(
            out,
            "level = zlib level the server compresses with; deflate = the implementation it compresses with (each library's own: the peers are built apart);\n\
             B/reply = payload bytes of a reply as sent (compressed; the message is 1,024); vs peer = msg/s over the better of ratchet and yawc (either form) at the same level;\n\
             CPU vs peer = CPU per message over the lower of theirs at the same level (ratchet's default is level 1, yawc's and Sockeye's 6).\n\
             The load generator compresses and inflates with flate2 on zlib-rs for every server."
        );
        let _ = writeln!(
            out,
            "{:<22} {:>5} {:>12} {:>12} {:>10} {:>10} {:>9} {:>11} {:>12} {:>9} {:>9} {:>7}  agreed",
            "server", "level", "deflate", "msg/s", "p50 us", "p99 us", "vs peer", "CPU us/msg", "CPU vs peer", "B/reply", "checked", "errors"
        );
        for (k, kind) in dkinds.iter().enumerate() {
            let s = &dresults[k];
            let _ = writeln!(
                out,
                "{:<22} {:>5} {:>12} {:>12.0} {:>10.1} {:>10.1} {:>9} {:>11.3} {:>12} {:>9.0} {:>9} {:>7}  {}",
                kind.name(),
                kind.deflate_level().unwrap_or(0),
                kind.deflate_impl().unwrap_or("-"),
                s.msgs_per_sec,
                s.p50,
                s.p99,
                fmt_ratio(s.msgs_per_sec / peer_rate(kind.deflate_level())),
                s.cpu_us_per_msg,
                fmt_ratio(s.cpu_us_per_msg / peer_cpu(kind.deflate_level())),
                s.reply_bytes,
                format!("{}/{}", s.verified, s.expected),
                s.errors,
                s.negotiated.as_deref().unwrap_or("-")
            );
            if let Some(e) = &s.first_error {
                let _ = writeln!(out, "{:<22}   first error: {e}", "");
            }
        }
    }
    if !dmem.is_empty() {
        let _ = writeln!(
            out,
            "\nmemory per connection with deflate agreed (server VmRSS after - before; each connection idle after one echoed message)"
        );
        let _ = writeln!(
            out,
            "{:<22} {:<20} {:>12} {:>12} {:>7} {:>10} {:>7}  agreed",
            "server", "offer", "RSS before", "RSS after", "conns", "KiB/conn", "errors"
        );
        for m in &dmem {
            let _ = writeln!(
                out,
                "{:<22} {:<20} {:>8} KiB {:>8} KiB {:>7} {:>10.2} {:>7}  {}",
                m.kind.name(),
                if m.context_takeover { "context takeover" } else { "no context takeover" },
                m.rss.before_kib,
                m.rss.after_kib,
                m.rss.conns,
                m.rss.per_conn_kib(),
                m.rss.errors,
                m.rss.negotiated.as_deref().unwrap_or("-")
            );
        }
    }
    let _ = writeln!(out, "\ntotal time {elapsed:.1} s");
    print!("{out}");
    Ok(())
}

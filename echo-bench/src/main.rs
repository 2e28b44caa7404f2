//! `echo-bench`: end-to-end WebSocket echo benchmark.
//!
//! ```text
//! echo-bench serve KIND ADDR
//! echo-bench load ADDR|ws://ADDR/PATH|tcp://ADDR [--tcp] [-c CONNS] [-s SIZE] [-d DEPTH] [-t SECS]
//! echo-bench deflate-load ADDR|ws://ADDR/PATH [--no-ctx] [--pid PID] [-c CONNS] [-s SIZE] [-d DEPTH] [-t SECS]
//! echo-bench run [--quick] [--json] [--rounds N] [--secs S] [--idle N]
//! echo-bench idle ADDR --pid PID [-n N]
//! echo-bench h2 [--quick] [--rounds N] [--secs S] [--h2-conns N]
//! echo-bench tls-load ADDR --h1|--h2 [-c CONNS] [--h2-conns N] [-s SIZE] [-d DEPTH] [-t SECS]
//! echo-bench faults [--checks idle,storm,nonreading,resets,shutdown] [--only KIND,...] [-n N]
//! ```

mod deflate;
mod faults;
mod h2;
mod load;
mod run;
mod serve;

use std::process::ExitCode;
use std::time::Duration;

use crate::load::{Spec, Target};
use crate::serve::Kind;

const USAGE: &str = "\
usage:
  echo-bench serve KIND ADDR        KIND: tcp sockeye tungstenite tungstenite-batched fastwebsockets
                                    sockeye-deflate sockeye-deflate-nctx sockeye-deflate-l1
                                    ratchet ratchet-l6 yawc yawc-zlib (deflate; ratchet* and yawc
                                    run the binaries built from peers/, see README)
                                    sockeye-tls (TLS, ALPN h2 and http/1.1, for the h2 row)
  echo-bench load TARGET [--tcp] [-c CONNS] [-s SIZE] [-d DEPTH] [-t SECS]
                                    TARGET: IP:PORT, ws://IP:PORT/PATH or tcp://IP:PORT (loopback)
  echo-bench deflate-load TARGET [--no-ctx] [--pid PID] [-c CONNS] [-s SIZE] [-d DEPTH] [-t SECS]
                                    permessage-deflate load: JSON-like text, compressed per
                                    connection, every echo inflated and checked (PID: the
                                    server's process, for its CPU per message)
  echo-bench run [--quick] [--json] [--rounds N] [--secs S] [--idle N] [--deflate-idle N]
                 [--only KIND,KIND]
  echo-bench idle TARGET --pid PID [-n N]
                                    N idle WebSocket connections to any server (PID: its process):
                                    its RSS per connection held idle, then after each echoed once
  echo-bench h2 [--quick] [--rounds N] [--secs S] [--h2-conns N]
                                    many WebSockets on one HTTP/2 connection vs as many HTTP/1.1
                                    connections, both over TLS, against sockeye-tls
  echo-bench tls-load ADDR --h1|--h2 [-c CONNS] [--h2-conns N] [-s SIZE] [-d DEPTH] [-t SECS]
  echo-bench faults [--checks CHECK,...] [--only SERVER,...] [-n IDLE]
                                    load and fault checks (idle, storm, nonreading, resets,
                                    shutdown) against Sockeye's servers and the peers";

/// Raises `RLIMIT_NOFILE` to its hard limit; returns the soft limit in force afterwards.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit for the duration of the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
    }
    r.rlim_cur
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => cmd_serve(&args[1..]),
        Some("load") => cmd_load(&args[1..]),
        Some("deflate-load") => cmd_deflate_load(&args[1..]),
        Some("run") => run::cmd_run(&args[1..]),
        Some("idle") => cmd_idle(&args[1..]),
        Some("h2") => h2::cmd_h2(&args[1..]),
        Some("tls-load") => h2::cmd_tls_load(&args[1..]),
        Some("faults") => faults::cmd_faults(&args[1..]),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

fn cmd_serve(args: &[String]) -> Res {
    let [kind, addr] = args else {
        return Err(USAGE.into());
    };
    if kind == "sockeye-tls" {
        return h2::serve_tls(addr);
    }
    serve::serve(kind.parse::<Kind>()?, addr)
}

/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn cmd_idle(args: &[String]) -> Res {
    let (mut target, mut pid, mut count) = (None, None, 10_000_usize);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--pid" => pid = Some(flag_value::<u32>(args, &mut i)?),
            "-n" => count = flag_value::<usize>(args, &mut i)?.clamp(1, 50_000),
            a if target.is_none() && !a.starts_with('-') => target = Some(a.to_string()),
            a => return Err(format!("unexpected argument {a:?}\n{USAGE}").into()),
        }
        i += 1;
    }
    let target = Target::parse(&target.ok_or(USAGE)?, false)?;
    let pid = pid.ok_or("idle needs --pid PID (the server's process)")?;
    let nofile = raise_nofile();
    if (count as u64) + 64 > nofile {
        return Err(format!("RLIMIT_NOFILE is {nofile}: too low for {count} connections").into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Past the 1 s after which Sockeye releases the buffers of a connection gone idle.
        let settle = || tokio::time::sleep(Duration::from_millis(1500));
        // One connection first, so that lazily set up state is in the baseline.
        let (warm, _) = load::connect_many(&target, 1, 1).await;
        settle().await;
        let before = rss_kib(pid).ok_or("cannot read the server's RSS")?;
        let (mut conns, errors) = load::connect_many(&target, count, 100).await;
        settle().await;
        let held = rss_kib(pid).unwrap_or(0);
        let n = conns.len().max(1) as f64;
        println!(
            "{} idle connections ({} failed): RSS {before} -> {held} KiB, {:.2} KiB per connection",
            conns.len(),
            errors.len(),
            (held as f64 - before as f64) / n
        );
        // Each echoes one 20-byte message, then is idle again.
        let mut frame = vec![0x82_u8, 0x80 | 20, 1, 2, 3, 4];
        frame.extend((0..20_u8).map(|b| b ^ [1, 2, 3, 4][usize::from(b % 4)]));
        let mut echoed = 0;
        for (tcp, _) in &mut conns {
            let mut back = [0_u8; 22];
            if tcp.write_all(&frame).await.is_ok() && tcp.read_exact(&mut back).await.is_ok() {
                echoed += 1;
            }
        }
        settle().await;
        let after = rss_kib(pid).unwrap_or(0);
        println!(
            "after each echoed once ({echoed} echoed): RSS {after} KiB, {:.2} KiB per connection",
            (after as f64 - before as f64) / n
        );
        drop((conns, warm));
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

fn flag_value<T: std::str::FromStr>(args: &[String], i: &mut usize) -> Result<T, String> {
    *i += 1;
    let v = args
        .get(*i)
        .ok_or_else(|| format!("{} needs a value", args[*i - 1]))?;
    v.parse::<T>()
        .map_err(|_| format!("bad value {v:?} for {}", args[*i - 1]))
}

/// `-c CONNS`, `-s SIZE`, `-d DEPTH` and `-t SECS`, shared by `load` and `deflate-load`.
fn spec_flag(spec: &mut Spec, args: &[String], i: &mut usize) -> Result<(), String> {
    match args[*i].as_str() {
        "-c" => spec.conns = flag_value(args, i)?,
        "-s" => spec.size = flag_value(args, i)?,
        "-d" => spec.depth = flag_value(args, i)?,
        _ => spec.duration = Duration::from_secs_f64(flag_value::<f64>(args, i)?.clamp(0.1, 60.0)),
    }
    Ok(())
}

fn cmd_load(args: &[String]) -> Res {
    let mut target = None;
    let mut tcp = false;
    let mut spec = Spec {
        conns: 100,
        size: 20,
        depth: 1,
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(2),
        server_pid: None,
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--tcp" => tcp = true,
            "-c" | "-s" | "-d" | "-t" => spec_flag(&mut spec, args, &mut i)?,
            a if target.is_none() && !a.starts_with('-') => target = Some(a.to_string()),
            a => return Err(format!("unexpected argument {a:?}\n{USAGE}").into()),
        }
        i += 1;
    }
    let target = Target::parse(&target.ok_or(USAGE)?, tcp)?;
    if spec.conns == 0 || spec.size == 0 || spec.depth == 0 || spec.conns > 20_000 {
        return Err("conns, size and depth must be positive (conns at most 20000)".into());
    }
    raise_nofile();
    let o = load::run(&target, &spec);
    println!(
        "{} conns x {} B, {} in flight, {:.1} s: {:.0} msg/s, {:.2} MB/s, p50 {:.1} us, p99 {:.1} us, \
         {} verified, {} errors{}",
        spec.conns,
        spec.size,
        spec.depth,
        o.secs,
        o.msgs_per_sec(),
        o.mb_per_sec(),
        o.pct_us(0.50),
        o.pct_us(0.99),
        o.verified,
        o.errors,
        o.first_error
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    Ok(())
}

fn cmd_deflate_load(args: &[String]) -> Res {
    let mut target = None;
    let mut offer = deflate::OFFER;
    let mut spec = Spec {
        conns: 100,
        size: 1024,
        depth: 1,
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(2),
        server_pid: None,
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--no-ctx" => offer = deflate::OFFER_NO_CTX,
            "--pid" => spec.server_pid = Some(flag_value::<u32>(args, &mut i)?),
            "-c" | "-s" | "-d" | "-t" => spec_flag(&mut spec, args, &mut i)?,
            a if target.is_none() && !a.starts_with('-') => target = Some(a.to_string()),
            a => return Err(format!("unexpected argument {a:?}\n{USAGE}").into()),
        }
        i += 1;
    }
    let target = Target::parse(&target.ok_or(USAGE)?, false)?;
    if spec.conns == 0 || spec.depth == 0 || spec.conns > 20_000 || !(256..=1 << 20).contains(&spec.size) {
        return Err("conns and depth must be positive (conns at most 20000), size 256 B to 1 MiB".into());
    }
    raise_nofile();
    let o = deflate::run(&target, &spec, offer);
    println!(
        "{} conns x {} B deflated text, {} in flight, {:.1} s: {:.0} msg/s, p50 {:.1} us, p99 {:.1} us, \
         {:.0} B per reply, server CPU {:.1} us/msg, {} verified, {} errors{}; agreed: {}",
        spec.conns,
        spec.size.max(256),
        spec.depth,
        o.secs,
        o.msgs_per_sec(),
        o.pct_us(0.50),
        o.pct_us(0.99),
        o.reply_bytes as f64 / o.msgs.max(1) as f64,
        o.server_cpu_us_per_msg(),
        o.verified,
        o.errors,
        o.first_error
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        o.negotiated.as_deref().unwrap_or("-")
    );
    Ok(())
}

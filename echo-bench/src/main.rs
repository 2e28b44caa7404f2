//! `echo-bench`: end-to-end WebSocket echo benchmark.
//!
//! ```text
//! echo-bench serve KIND ADDR
//! echo-bench load ADDR|ws://ADDR/PATH|tcp://ADDR [--tcp] [-c CONNS] [-s SIZE] [-d DEPTH] [-t SECS]
//! echo-bench run [--quick] [--json] [--rounds N] [--secs S] [--idle N]
//! ```

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
  echo-bench load TARGET [--tcp] [-c CONNS] [-s SIZE] [-d DEPTH] [-t SECS]
                                    TARGET: IP:PORT, ws://IP:PORT/PATH or tcp://IP:PORT (loopback)
  echo-bench run [--quick] [--json] [--rounds N] [--secs S] [--idle N] [--only KIND,KIND]";

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
        Some("run") => run::cmd_run(&args[1..]),
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
    serve::serve(kind.parse::<Kind>()?, addr)
}

fn flag_value<T: std::str::FromStr>(args: &[String], i: &mut usize) -> Result<T, String> {
    *i += 1;
    let v = args.get(*i).ok_or_else(|| format!("{} needs a value", args[*i - 1]))?;
    v.parse::<T>()
        .map_err(|_| format!("bad value {v:?} for {}", args[*i - 1]))
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
            "-c" => spec.conns = flag_value(args, &mut i)?,
            "-s" => spec.size = flag_value(args, &mut i)?,
            "-d" => spec.depth = flag_value(args, &mut i)?,
            "-t" => spec.duration = Duration::from_secs_f64(flag_value::<f64>(args, &mut i)?.clamp(0.1, 60.0)),
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
        o.first_error.map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
    Ok(())
}

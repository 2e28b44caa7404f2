//! `yawc-server yawc ADDR`: echo-bench's yawc echo server, on yawc's default deflate (flate2's
//! `miniz_oxide`: yawc without its `zlib` feature). `echo-bench serve yawc` runs this binary in
//! its own place (exec, same process), so the process measured is this one.
//!
//! The same contract as every `echo-bench serve` server: a multi-thread tokio runtime with 2
//! worker threads, `TCP_NODELAY` on each accepted socket, text and binary echoed on any path,
//! `listening ADDR` printed once bound, nothing logged per connection.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::SinkExt as _;
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, addr] = args.as_slice() else {
        eprintln!("usage: yawc-server yawc ADDR");
        return ExitCode::FAILURE;
    };
    if kind != "yawc" {
        eprintln!("usage: yawc-server yawc ADDR");
        return ExitCode::FAILURE;
    }
    match serve(addr) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("yawc-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    raise_nofile();
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
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    // EMFILE and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(yawc_conn(tcp));
        }
    })
}

async fn yawc_conn(tcp: TcpStream) {
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service_fn(yawc_upgrade))
        .with_upgrades()
        .await;
}

async fn yawc_upgrade(
    mut req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, yawc::WebSocketError> {
    // Compression on, at the default level (6), context takeover allowed.
    let options = yawc::Options::default().with_balanced_compression();
    let (response, fut) = yawc::WebSocket::upgrade_with_options(&mut req, options)?;
    tokio::spawn(async move {
        let Ok(mut ws) = fut.await else {
            return;
        };
        // yawc answers pings and closes itself, and reassembles fragments.
        while let Ok(frame) = ws.next_frame().await {
            match frame.opcode() {
                yawc::OpCode::Close => return,
                yawc::OpCode::Text | yawc::OpCode::Binary => {}
                _ => continue,
            }
            if ws.send(frame).await.is_err() {
                return;
            }
        }
    });
    Ok(response)
}

/// Raises `RLIMIT_NOFILE` to its hard limit (the memory figures hold 1,000 connections).
fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit for the duration of the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut r) == 0 && r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const want);
        }
    }
}

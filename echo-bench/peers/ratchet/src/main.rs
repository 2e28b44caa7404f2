//! `ratchet-server KIND ADDR`: echo-bench's ratchet_rs echo server (`KIND`: `ratchet`, its default
//! deflate config at level 1, or `ratchet-l6`, the same at level 6). `echo-bench serve ratchet*`
//! runs this binary in its own place (exec, same process), so the process measured is this one.
//!
//! The same contract as every `echo-bench serve` server: a multi-thread tokio runtime with 2
//! worker threads, `TCP_NODELAY` on each accepted socket, text and binary echoed on any path,
//! `listening ADDR` printed once bound, nothing logged per connection.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use ratchet_rs::deflate::{Compression, DeflateConfig, DeflateExtProvider};
use ratchet_rs::{Message, PayloadType};
use tokio::net::{TcpListener, TcpStream};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let level = match args.first().map(String::as_str) {
        Some("ratchet") => None,
        Some("ratchet-l6") => Some(6),
        _ => {
            eprintln!("usage: ratchet-server ratchet|ratchet-l6 ADDR");
            return ExitCode::FAILURE;
        }
    };
    let Some(addr) = args.get(1) else {
        eprintln!("usage: ratchet-server ratchet|ratchet-l6 ADDR");
        return ExitCode::FAILURE;
    };
    match serve(level, addr) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ratchet-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(level: Option<u32>, addr: &str) -> Result<(), Box<dyn std::error::Error>> {
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
            tokio::spawn(async move {
                let _ = ratchet_echo(tcp, level).await;
            });
        }
    })
}

async fn ratchet_echo(tcp: TcpStream, level: Option<u32>) -> Result<(), ratchet_rs::Error> {
    // As the crate's autobahn server: the deflate provider with its defaults (or another level).
    let mut config = DeflateConfig::default();
    if let Some(level) = level {
        config.compression_level = Compression::new(level);
    }
    let mut ws = ratchet_rs::accept_with(
        tcp,
        ratchet_rs::WebSocketConfig::default(),
        DeflateExtProvider::with_config(config),
        ratchet_rs::SubprotocolRegistry::default(),
    )
    .await?
    .upgrade()
    .await?
    .websocket;
    let mut buf = bytes::BytesMut::new();
    loop {
        let kind = match ws.read(&mut buf).await? {
            Message::Text => PayloadType::Text,
            Message::Binary => PayloadType::Binary,
            // Pings are answered inside `read`.
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return Ok(()),
        };
        ws.write(&mut buf, kind).await?;
        ws.flush().await?;
        buf.clear();
    }
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

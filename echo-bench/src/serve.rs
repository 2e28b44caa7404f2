//! `serve KIND ADDR`: one echo server per process.
//!
//! Every server echoes text and binary messages on any path, sets `TCP_NODELAY` on each accepted
//! socket, and runs on a multi-thread tokio runtime with 2 worker threads. Servers log nothing
//! per connection: the load generator drops its connections abruptly at the end of a run.

use std::io::Write as _;
use std::str::FromStr;
use std::time::Duration;

use fastwebsockets::{FragmentCollector, OpCode, WebSocketError};
use futures_util::{SinkExt as _, StreamExt as _, TryStreamExt as _, future};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bare TCP echo: the physical limit.
    Tcp,
    /// sockeye, plain `next` / `send` loop.
    Sockeye,
    /// tokio-tungstenite, plain `StreamExt::next` / `SinkExt::send` loop.
    Tungstenite,
    /// tokio-tungstenite, `split()` then `read.try_filter(data).forward(write)`.
    TungsteniteBatched,
    /// fastwebsockets (hyper upgrade, `FragmentCollector`), `read_frame` / `write_frame` loop.
    Fastwebsockets,
    /// sockeye with permessage-deflate accepted (`DeflateConfig::default()`: context takeover),
    /// plain `next` / `send` loop.
    SockeyeDeflate,
    /// sockeye with permessage-deflate, insisting on `server_no_context_takeover`.
    SockeyeDeflateNoCtx,
    /// sockeye with permessage-deflate at level 1 (ratchet's default level).
    SockeyeDeflateL1,
    /// ratchet_rs with its `DeflateExtProvider` (default config: level 1), `read` / `write`
    /// loop, on the C zlib: the `ratchet-server` binary (`peers/ratchet`).
    Ratchet,
    /// ratchet_rs with its `DeflateExtProvider` at level 6 (zlib's default, Sockeye's and yawc's).
    RatchetL6,
    /// yawc (hyper upgrade) with compression on (`DeflateOptions::balanced()`), `next_frame` /
    /// `send` loop, on its default deflate (miniz_oxide): the `yawc-server` binary (`peers/yawc`).
    Yawc,
    /// The same yawc server with yawc's `zlib` feature (flate2's zlib-rs, as Sockeye), in this
    /// binary.
    YawcZlib,
}

impl Kind {
    /// Every server `serve` knows.
    pub const ALL: [Self; 12] = [
        Self::Tcp,
        Self::Sockeye,
        Self::Tungstenite,
        Self::TungsteniteBatched,
        Self::Fastwebsockets,
        Self::SockeyeDeflate,
        Self::SockeyeDeflateNoCtx,
        Self::SockeyeDeflateL1,
        Self::Ratchet,
        Self::RatchetL6,
        Self::Yawc,
        Self::YawcZlib,
    ];

    /// The servers of the uncompressed workloads (a) to (d), in table order.
    pub const PLAIN: [Self; 5] = [
        Self::Tcp,
        Self::Sockeye,
        Self::Tungstenite,
        Self::TungsteniteBatched,
        Self::Fastwebsockets,
    ];

    /// The servers of the permessage-deflate workload, in table order.
    pub const DEFLATE: [Self; 7] = [
        Self::SockeyeDeflate,
        Self::SockeyeDeflateNoCtx,
        Self::SockeyeDeflateL1,
        Self::Ratchet,
        Self::RatchetL6,
        Self::Yawc,
        Self::YawcZlib,
    ];

    /// The zlib level a deflate server compresses with.
    pub fn deflate_level(self) -> Option<u32> {
        match self {
            Self::SockeyeDeflate
            | Self::SockeyeDeflateNoCtx
            | Self::RatchetL6
            | Self::Yawc
            | Self::YawcZlib => Some(6),
            Self::SockeyeDeflateL1 | Self::Ratchet => Some(1),
            _ => None,
        }
    }

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Sockeye => "sockeye",
            Self::Tungstenite => "tungstenite",
            Self::TungsteniteBatched => "tungstenite-batched",
            Self::Fastwebsockets => "fastwebsockets",
            Self::SockeyeDeflate => "sockeye-deflate",
            Self::SockeyeDeflateNoCtx => "sockeye-deflate-nctx",
            Self::SockeyeDeflateL1 => "sockeye-deflate-l1",
            Self::Ratchet => "ratchet",
            Self::RatchetL6 => "ratchet-l6",
            Self::Yawc => "yawc",
            Self::YawcZlib => "yawc-zlib",
        }
    }

    /// The deflate implementation the server compresses with.
    pub fn deflate_impl(self) -> Option<&'static str> {
        match self {
            Self::SockeyeDeflate | Self::SockeyeDeflateNoCtx | Self::SockeyeDeflateL1 | Self::YawcZlib => {
                Some("zlib-rs")
            }
            Self::Ratchet | Self::RatchetL6 => Some("C zlib"),
            Self::Yawc => Some("miniz_oxide"),
            _ => None,
        }
    }

    /// Whether it is a peer library's server (ratchet or yawc), not Sockeye's.
    pub fn is_deflate_peer(self) -> bool {
        matches!(self, Self::Ratchet | Self::RatchetL6 | Self::Yawc | Self::YawcZlib)
    }

    /// The server that runs as a binary of its own, built apart from this one so that its deflate
    /// backend does not leak into this binary's flate2 (Cargo unifies features): its name (next
    /// to this executable) and the directory of its Cargo workspace under `echo-bench/`.
    pub fn peer_binary(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::Ratchet | Self::RatchetL6 => Some(("ratchet-server", "peers/ratchet")),
            Self::Yawc => Some(("yawc-server", "peers/yawc")),
            _ => None,
        }
    }

    /// Whether it speaks WebSocket (everything but `tcp`).
    pub fn is_ws(self) -> bool {
        self != Self::Tcp
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
                format!("unknown server kind {s:?} (one of: {})", names.join(", "))
            })
    }
}

/// Overrides the level of the `sockeye-deflate*` servers when `serve` is run by hand.
pub const LEVEL_ENV: &str = "ECHO_BENCH_DEFLATE_LEVEL";

/// The path of a peer's own server binary: next to this executable (both built into
/// `echo-bench/target`), or an error that says how to build it.
pub fn peer_exe(kind: Kind) -> Result<std::path::PathBuf, String> {
    let Some((bin, dir)) = kind.peer_binary() else {
        return Err(format!("{} is served by echo-bench itself", kind.name()));
    };
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let path = exe.with_file_name(bin);
    if path.is_file() {
        return Ok(path);
    }
    // `TARGET/release/echo-bench`: the peer goes into the same TARGET.
    let target = exe
        .parent()
        .filter(|dir| dir.ends_with("release"))
        .and_then(std::path::Path::parent)
        .unwrap_or(std::path::Path::new("echo-bench/target"));
    Err(format!(
        "{bin} (the server of `serve {}`) is not built: {} is missing. Build it (from the repository root) with\n  \
         cargo build --release --manifest-path echo-bench/{dir}/Cargo.toml --target-dir {}",
        if bin == "ratchet-server" { "ratchet` and `ratchet-l6" } else { "yawc" },
        path.display(),
        target.display()
    ))
}

/// Runs the echo server until killed. Prints `listening ADDR` on stdout once bound.
pub fn serve(kind: Kind, addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    if kind.peer_binary().is_some() {
        // Replaces this process, so that the PID `run` measures is the server's.
        let exe = peer_exe(kind)?;
        let e = std::os::unix::process::CommandExt::exec(std::process::Command::new(&exe).args([kind.name(), addr]));
        return Err(format!("exec {}: {e}", exe.display()).into());
    }
    crate::raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        let deflate = match kind {
            Kind::SockeyeDeflateNoCtx => {
                sockeye::DeflateConfig::default().server_no_context_takeover(true)
            }
            Kind::SockeyeDeflateL1 => sockeye::DeflateConfig::default().level(1),
            _ => sockeye::DeflateConfig::default(),
        };
        // For measuring other levels by hand (`serve` then `deflate-load`); `run` clears it.
        let deflate = match std::env::var(LEVEL_ENV).ok().and_then(|v| v.parse::<u32>().ok()) {
            Some(level) if level <= 9 => deflate.level(level),
            _ => deflate,
        };
        let sockeye_server = std::sync::Arc::new(sockeye::ServerBuilder::new().deflate(deflate));
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
            match kind {
                Kind::Tcp => tokio::spawn(tcp_echo(tcp)),
                Kind::Sockeye => tokio::spawn(sockeye_echo(tcp)),
                Kind::Tungstenite => tokio::spawn(tungstenite_echo(tcp)),
                Kind::TungsteniteBatched => tokio::spawn(tungstenite_batched_echo(tcp)),
                Kind::Fastwebsockets => tokio::spawn(fastwebsockets_conn(tcp)),
                Kind::SockeyeDeflate | Kind::SockeyeDeflateNoCtx | Kind::SockeyeDeflateL1 => {
                    let server = std::sync::Arc::clone(&sockeye_server);
                    tokio::spawn(async move {
                        if let Ok(ws) = server.accept(tcp).await {
                            sockeye_loop(ws).await;
                        }
                    })
                }
                Kind::YawcZlib => tokio::spawn(yawc_conn(tcp)),
                // Run by their own binaries (`peer_exe`), never here.
                Kind::Ratchet | Kind::RatchetL6 | Kind::Yawc => continue,
            };
        }
    })
}

async fn tcp_echo(mut tcp: TcpStream) {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tcp.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn sockeye_echo(tcp: TcpStream) {
    let Ok(ws) = sockeye::accept(tcp).await else {
        return;
    };
    sockeye_loop(ws).await;
}

async fn sockeye_loop(mut ws: sockeye::WebSocket<TcpStream>) {
    while let Some(message) = ws.next().await {
        match message {
            Ok(m @ (sockeye::Message::Text(_) | sockeye::Message::Binary(_))) => {
                if ws.send(m).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

async fn tungstenite_echo(tcp: TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    while let Some(Ok(m)) = ws.next().await {
        if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
            return;
        }
    }
}

async fn tungstenite_batched_echo(tcp: TcpStream) {
    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    // `forward` feeds while the stream has items ready and flushes only when it would wait.
    let (write, read) = ws.split();
    let _ = read
        .try_filter(|m| future::ready(m.is_text() || m.is_binary()))
        .forward(write)
        .await;
}

async fn fastwebsockets_conn(tcp: TcpStream) {
    // The crate's documented server: hyper http1 with upgrades, then `upgrade::upgrade`.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service_fn(fastwebsockets_upgrade))
        .with_upgrades()
        .await;
}

async fn fastwebsockets_upgrade(
    mut req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = fastwebsockets::upgrade::upgrade(&mut req)?;
    tokio::spawn(async move {
        let Ok(ws) = fut.await else {
            return;
        };
        // Defaults: auto pong and auto close on.
        let mut ws = FragmentCollector::new(ws);
        loop {
            let Ok(frame) = ws.read_frame().await else {
                return;
            };
            match frame.opcode {
                OpCode::Close => return,
                OpCode::Text | OpCode::Binary => {
                    let Ok(()) = ws.write_frame(frame).await else {
                        return;
                    };
                }
                _ => {}
            }
        }
    });
    Ok(response)
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

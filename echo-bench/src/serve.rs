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
}

impl Kind {
    /// Every server, in table order.
    pub const ALL: [Self; 5] = [
        Self::Tcp,
        Self::Sockeye,
        Self::Tungstenite,
        Self::TungsteniteBatched,
        Self::Fastwebsockets,
    ];

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Sockeye => "sockeye",
            Self::Tungstenite => "tungstenite",
            Self::TungsteniteBatched => "tungstenite-batched",
            Self::Fastwebsockets => "fastwebsockets",
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

/// Runs the echo server until killed. Prints `listening ADDR` on stdout once bound.
pub fn serve(kind: Kind, addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    crate::raise_nofile();
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
            match kind {
                Kind::Tcp => tokio::spawn(tcp_echo(tcp)),
                Kind::Sockeye => tokio::spawn(sockeye_echo(tcp)),
                Kind::Tungstenite => tokio::spawn(tungstenite_echo(tcp)),
                Kind::TungsteniteBatched => tokio::spawn(tungstenite_batched_echo(tcp)),
                Kind::Fastwebsockets => tokio::spawn(fastwebsockets_conn(tcp)),
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
    let Ok(mut ws) = sockeye::accept(tcp).await else {
        return;
    };
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

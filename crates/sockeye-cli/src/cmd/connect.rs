//! `sockeye connect`: stdin to messages, messages to stdout.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use sockeye::{ClientBuilder, CloseCode, Config, DeflateConfig, Message, WebSocketConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::Usage;
use crate::args::ConnectArgs;
use crate::display;
use crate::exit;

/// What ended one connection.
enum End {
    /// Stdin ended and the connection was closed by us.
    InputDone,
    /// The server closed; `normal` says whether with 1000/1001 (or no code).
    ServerClosed { normal: bool },
}

pub(crate) async fn run(args: ConnectArgs) -> anyhow::Result<u8> {
    let builder = builder(&args)?;
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    tokio::spawn(read_stdin(args.binary, tx));

    let mut backoff = Duration::from_millis(200);
    loop {
        match session(&args, builder.clone(), &mut rx).await {
            Ok(End::InputDone) => return Ok(exit::OK),
            Ok(End::ServerClosed { normal }) if !args.reconnect => {
                return Ok(if normal { exit::OK } else { exit::ABNORMAL });
            }
            Ok(End::ServerClosed { .. }) => {}
            Err(e) if args.reconnect => {
                eprintln!(
                    "sockeye: {}; reconnecting in {backoff:?}",
                    exit::describe(&e)
                );
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

fn builder(args: &ConnectArgs) -> anyhow::Result<ClientBuilder> {
    let proto = Config::builder()
        .ping_interval(args.ping_interval)
        .build()?;
    let config = WebSocketConfig::builder().proto(proto).build()?;
    let mut builder = args
        .net
        .apply(ClientBuilder::new(&args.url).config(config))?;
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| Usage(format!("header {header:?}: use \"Name: value\"")))?;
        let name = HeaderName::try_from(name.trim())
            .map_err(|e| Usage(format!("header name {name:?}: {e}")))?;
        let value = HeaderValue::try_from(value.trim())
            .map_err(|e| Usage(format!("header value {value:?}: {e}")))?;
        builder = builder.header(name, value);
    }
    for protocol in &args.subprotocols {
        builder = builder.protocol(protocol);
    }
    if let Some(origin) = &args.origin {
        builder = builder.origin(
            HeaderValue::try_from(origin.as_str()).map_err(|e| Usage(format!("origin: {e}")))?,
        );
    }
    if args.compress {
        builder = builder.deflate(DeflateConfig::new());
    }
    Ok(builder)
}

/// Reads stdin into messages: lines as text, or chunks as binary. Ends the channel at EOF.
async fn read_stdin(binary: bool, tx: mpsc::Sender<Message>) {
    let mut stdin = BufReader::new(tokio::io::stdin());
    if binary {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0
                || tx
                    .send(Message::binary(Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
            {
                return;
            }
        }
        return;
    }
    let mut lines = stdin.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if tx.send(Message::text(line)).await.is_err() {
            return;
        }
    }
}

async fn session(
    args: &ConnectArgs,
    builder: ClientBuilder,
    rx: &mut mpsc::Receiver<Message>,
) -> anyhow::Result<End> {
    if args.show_headers {
        eprintln!("> GET {}", args.url);
        for header in &args.headers {
            eprintln!("> {header}");
        }
    }
    let (mut ws, response) = builder.connect().await?;
    if args.show_headers {
        eprintln!("< {:?} {}", response.version(), response.status());
        for (name, value) in response.headers() {
            eprintln!("< {name}: {}", value.to_str().unwrap_or("<binary>"));
        }
    }
    tracing::info!(url = %args.url, protocol = ?ws.protocol(), extension = ?ws.extension(), "connected");
    if let Some(preamble) = &args.preamble {
        ws.send(Message::text(preamble.as_str())).await?;
    }
    let mut stdout = tokio::io::stdout();
    let mut input_open = true;
    // In --once mode, the time allowed for replies after stdin ended; reset by each reply.
    let idle = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(idle);
    loop {
        tokio::select! {
            message = rx.recv(), if input_open => match message {
                Some(message) => ws.send(message).await?,
                None if args.once => {
                    input_open = false;
                    idle.as_mut().reset(tokio::time::Instant::now() + args.wait);
                }
                None => {
                    ws.close(CloseCode::NORMAL, "").await?;
                    return Ok(End::InputDone);
                }
            },
            () = &mut idle, if !input_open => {
                ws.close(CloseCode::NORMAL, "").await?;
                return Ok(End::InputDone);
            }
            message = ws.next() => {
                let Some(message) = message else {
                    let closed = ws.close_status().context("connection ended")?;
                    eprintln!("sockeye: server closed the connection: {}", display::close_line(closed));
                    return Ok(End::ServerClosed { normal: display::is_normal(closed.code()) });
                };
                if !input_open {
                    idle.as_mut().reset(tokio::time::Instant::now() + args.wait);
                }
                match message? {
                    Message::Text(text) => {
                        let line = display::text_line(&text, args.pretty);
                        stdout.write_all(line.as_bytes()).await?;
                        stdout.write_all(b"\n").await?;
                        stdout.flush().await?;
                    }
                    Message::Binary(data) if args.binary => {
                        stdout.write_all(&data).await?;
                        stdout.flush().await?;
                    }
                    Message::Binary(data) => {
                        stdout.write_all(format!("[binary message: {} bytes]\n", data.len()).as_bytes()).await?;
                        stdout.flush().await?;
                    }
                    other => {
                        if let Some(note) = display::control_note(&other) {
                            tracing::info!("{note}");
                        }
                    }
                }
            }
        }
    }
}

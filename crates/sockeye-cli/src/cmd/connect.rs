//! `sockeye connect`: stdin to messages, messages to stdout; or an interactive session.

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use sockeye::{
    ClientBuilder, CloseCode, Config, DeflateConfig, Kind, Message, WebSocket, WebSocketConfig,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::Usage;
use crate::args::ConnectArgs;
use crate::{addr, display, exit};

/// How long the server gets to answer our Close after Ctrl-C or SIGTERM.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What ended one connection.
enum End {
    /// Stdin ended (or the user asked) and the connection was closed by us.
    InputDone,
    /// Ctrl-C or SIGTERM: the connection was closed by us, and the command ends.
    Interrupted,
    /// The server closed; `normal` says whether with 1000/1001 (or no code).
    ServerClosed { normal: bool },
}

/// What the user typed, in interactive mode.
#[derive(Debug, PartialEq)]
enum Command {
    Send(Message),
    Ping(Bytes),
    Close(CloseCode, String),
    /// A command that could not be read: the message says why.
    Bad(String),
}

pub(crate) async fn run(args: ConnectArgs) -> anyhow::Result<u8> {
    let url = addr::ws_url(&args.url);
    addr::check_ws_url(&url).map_err(Usage)?;
    let interactive = args.interactive
        || (!args.receive_only
            && !args.once
            && !args.binary
            && std::io::stdin().is_terminal()
            && std::io::stdout().is_terminal());
    let builder = builder(&args, &url)?;
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    if args.receive_only {
        // Nothing is read; the sender stays alive so the input never "ends".
        std::mem::forget(tx);
    } else {
        tokio::spawn(read_stdin(args.binary, tx));
    }
    let view = View::new(interactive);

    let mut history = History::default();
    // Failed attempts in a row: the back-off grows with them, and --reconnect-tries bounds them.
    let mut failures = 0u32;
    loop {
        // After a drop, a server that sent ids is asked for what was missed.
        let builder = match history.resume_url(&url) {
            Some(resume) => self::builder(&args, &resume)?,
            None => builder.clone(),
        };
        let mut connected = false;
        let end = session(
            &args,
            &url,
            &view,
            builder,
            &mut rx,
            &mut history,
            &mut connected,
        )
        .await;
        if connected {
            failures = 0;
        }
        match end {
            Ok(End::InputDone | End::Interrupted) => return Ok(exit::OK),
            Ok(End::ServerClosed { normal }) if !args.reconnect => {
                return Ok(if normal { exit::OK } else { exit::ABNORMAL });
            }
            Ok(End::ServerClosed { .. }) => {}
            Err(e) if args.reconnect => {
                failures = failures.saturating_add(u32::from(!connected));
                if args.reconnect_tries > 0 && failures >= args.reconnect_tries {
                    eprintln!(
                        "sockeye: {}; giving up after {failures} attempts",
                        exit::describe(&e)
                    );
                    return Err(e);
                }
                eprintln!(
                    "sockeye: {}; reconnecting in {:?}",
                    exit::describe(&e),
                    backoff(failures)
                );
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff(failures)) => {}
            () = crate::signal::terminate() => return Ok(exit::OK),
        }
    }
}

/// The wait before the next attempt after `failures` failed ones in a row: from 200 ms (after
/// a drop), doubling up to 5 s, drawn between half and all of it so that the clients of a
/// server that restarts do not all come back at once.
fn backoff(failures: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let step = Duration::from_millis(200)
        .saturating_mul(1 << failures.min(5))
        .min(Duration::from_secs(5));
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(failures);
    let half = step / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_nanos(hasher.finish() % nanos)
}

/// What a sockeye room with history told this client: the id of the last message it saw,
/// from the `{"sockeye":"id",...}` notices that follow each message (sent to a member that
/// joined with `?since=`). Reconnections ask for what came after it.
#[derive(Debug, Default)]
struct History {
    last: Option<String>,
}

impl History {
    /// Takes a room's notice: `Some` with a note to show for a history notice, `Some("")`
    /// for an id (nothing to show), `None` for any other message.
    fn notice(&mut self, text: &str) -> Option<&'static str> {
        if !text.starts_with(r#"{"sockeye":"#) {
            return None;
        }
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        match (
            value["sockeye"].as_str()?,
            value["id"].as_str(),
            value["event"].as_str(),
        ) {
            ("id", Some(id), _) if id.parse::<sockeye_relay::HistoryId>().is_ok() => {
                self.last = Some(id.to_owned());
                Some("")
            }
            ("history", _, Some("truncated")) => {
                Some("the room's history did not hold everything missed: some messages are lost")
            }
            _ => None,
        }
    }

    /// `url` with `since=LAST` (replacing any `since`), once an id is known.
    fn resume_url(&self, url: &str) -> Option<String> {
        let last = self.last.as_deref()?;
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut pairs: Vec<&str> = query
            .split('&')
            .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some("since"))
            .collect();
        let since = format!("since={last}");
        pairs.push(&since);
        Some(format!("{base}?{}", pairs.join("&")))
    }
}

fn builder(args: &ConnectArgs, url: &str) -> anyhow::Result<ClientBuilder> {
    let mut proto = Config::builder().ping_interval(args.ping_interval);
    if let Some(max) = args.max_message_size {
        proto = proto.max_message_size(max).max_frame_size(max);
    }
    let config = WebSocketConfig::builder()
        .proto(proto.build().map_err(|e| Usage(format!("{e}")))?)
        .handshake_timeout(args.connect_timeout)
        .build()
        .map_err(|e| Usage(format!("{e}")))?;
    let mut builder = args
        .http
        .apply(args.net.apply(ClientBuilder::new(url).config(config))?);
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
    if let Some(auth) = &args.auth {
        if !auth.contains(':') {
            return Err(Usage("--auth: use USER:PASSWORD".into()).into());
        }
        let token = base64::engine::general_purpose::STANDARD.encode(auth);
        let value = HeaderValue::try_from(format!("Basic {token}"))
            .map_err(|e| Usage(format!("--auth: {e}")))?;
        builder = builder.header(http::header::AUTHORIZATION, value);
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

/// How messages and notes are shown: plain lines for scripts, or markers, a prompt and colour
/// for a person at a terminal.
struct View {
    interactive: bool,
    colour: bool,
}

impl View {
    fn new(interactive: bool) -> Self {
        let colour = interactive
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none();
        Self {
            interactive,
            colour,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// The prompt, after each line in interactive mode.
    fn prompt(&self) -> &'static str {
        if self.interactive { "> " } else { "" }
    }

    /// A received text message as it is written to stdout.
    fn incoming(&self, line: &str) -> String {
        if self.interactive {
            format!("\r{} {line}\n{}", self.paint("32", "<"), self.prompt())
        } else {
            format!("{line}\n")
        }
    }

    /// A note for a person, on stderr in script mode, on stdout among the messages in
    /// interactive mode.
    async fn note(&self, stdout: &mut tokio::io::Stdout, text: &str) -> std::io::Result<()> {
        if self.interactive {
            let line = format!("\r{}\n{}", self.paint("2", text), self.prompt());
            stdout.write_all(line.as_bytes()).await?;
            stdout.flush().await
        } else {
            eprintln!("sockeye: {text}");
            Ok(())
        }
    }
}

/// A line typed in interactive mode: a message, or a command (`/ping`, `/close`, `/binary`).
/// A line starting with `//` sends the rest with one `/` (to send a message that starts with
/// `/`).
fn parse_command(line: &str) -> Command {
    if let Some(rest) = line.strip_prefix("//") {
        return Command::Send(Message::text(format!("/{rest}")));
    }
    let Some(command) = line.strip_prefix('/') else {
        return Command::Send(Message::text(line));
    };
    let (name, rest) = command.split_once(' ').unwrap_or((command, ""));
    match name {
        "ping" => Command::Ping(Bytes::copy_from_slice(rest.as_bytes())),
        "close" => {
            let rest = rest.trim();
            if rest.is_empty() {
                return Command::Close(CloseCode::NORMAL, String::new());
            }
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            match code.parse::<u16>().ok().map(CloseCode::from) {
                Some(code) if code.is_sendable() => Command::Close(code, reason.to_owned()),
                _ => Command::Bad(format!(
                    "/close {code}: the code must be 1000, 1001-1003, 1007-1014 or 3000-4999"
                )),
            }
        }
        "binary" => match hex(rest) {
            Ok(bytes) => Command::Send(Message::binary(bytes)),
            Err(e) => Command::Bad(format!("/binary: {e}")),
        },
        _ => Command::Bad(format!(
            "unknown command /{name}: /ping [TEXT], /close [CODE [REASON]], /binary HEX (// sends a line starting with /)"
        )),
    }
}

/// Bytes from hexadecimal digits, spaces allowed between bytes.
fn hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err("an odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("{:?} is not a hex byte", String::from_utf8_lossy(pair)))
        })
        .collect()
}

/// Prints the whole handshake, for --show-headers: the request as it was sent, and the
/// response with the server's own reason phrase.
fn show_handshake(response: &http::Response<()>) {
    if let Some(sent) = response.extensions().get::<sockeye::SentRequest>() {
        for line in String::from_utf8_lossy(&sent.0).lines() {
            if !line.is_empty() {
                eprintln!("> {line}");
            }
        }
    }
    let reason = response
        .extensions()
        .get::<sockeye::proto::handshake::ReasonPhrase>()
        .map_or_else(
            || response.status().canonical_reason().unwrap_or_default(),
            |r| r.0.as_str(),
        );
    eprintln!(
        "< {:?} {} {reason}",
        response.version(),
        response.status().as_u16()
    );
    for (name, value) in response.headers() {
        eprintln!("< {name}: {}", value.to_str().unwrap_or("<binary>"));
    }
}

/// How logs and reports name the HTTP version a WebSocket was opened over.
pub(crate) fn http_version(version: http::Version) -> &'static str {
    if version == http::Version::HTTP_2 {
        "HTTP/2"
    } else {
        "HTTP/1.1"
    }
}

/// The HTTP version policy of this connect: the flags', or the library's default for the
/// URL's scheme.
fn effective_policy(args: &ConnectArgs, url: &str) -> sockeye::Http2Policy {
    args.http.policy().unwrap_or(if url.starts_with("wss://") {
        sockeye::Http2Policy::Prefer
    } else {
        sockeye::Http2Policy::Never
    })
}

/// Prints the response of a refused handshake, for --show-headers, with the HTTP version it
/// came over (HTTP/2 or HTTP/1.1, which the policy alone does not tell when it prefers HTTP/2).
fn show_refusal(error: &sockeye::Error) {
    if let Kind::Refused {
        status,
        headers,
        version,
        ..
    } = error.kind()
    {
        eprintln!("< {version:?} {status}");
        for (name, value) in headers {
            eprintln!("< {name}: {}", value.to_str().unwrap_or("<binary>"));
        }
    }
}

async fn session(
    args: &ConnectArgs,
    url: &str,
    view: &View,
    builder: ClientBuilder,
    rx: &mut mpsc::Receiver<Message>,
    history: &mut History,
    opened: &mut bool,
) -> anyhow::Result<End> {
    // HTTP/2 or HTTP/1.1 as --http2, --http1 or --prefer-http2 say (by default: HTTP/2 when a
    // wss:// server takes it); the library falls back on its own.
    let connected = tokio::select! {
        connected = builder.connect() => connected,
        () = crate::signal::terminate() => return Ok(End::Interrupted),
    };
    let (ws, response) = match connected {
        Ok(connected) => connected,
        Err(e) => {
            if args.show_headers {
                show_refusal(&e);
            }
            return Err(e.into());
        }
    };
    *opened = true;
    if effective_policy(args, url) == sockeye::Http2Policy::Prefer
        && response.version() != http::Version::HTTP_2
    {
        tracing::info!(%url, "HTTP/2 unavailable: falling back to HTTP/1.1");
    }
    converse(args, url, view, ws, &response, rx, history).await
}

/// One connection's exchange, over HTTP/1.1 or HTTP/2.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    args: &ConnectArgs,
    url: &str,
    view: &View,
    mut ws: WebSocket<S>,
    response: &http::Response<()>,
    rx: &mut mpsc::Receiver<Message>,
    history: &mut History,
) -> anyhow::Result<End> {
    if args.show_headers {
        show_handshake(response);
    }
    let version = http_version(response.version());
    tracing::info!(%url, http = %version, protocol = ?ws.protocol(), extension = ?ws.extension(), "connected");
    let mut stdout = tokio::io::stdout();
    greet(args, url, view, &ws, &mut stdout).await?;
    if let Some(preamble) = &args.preamble {
        ws.send(Message::text(preamble.as_str())).await?;
    }
    let mut input_open = !args.receive_only;
    // In --once mode, the time allowed for replies after stdin ended; reset by each reply.
    let idle = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(idle);
    let mut waiting = false;
    loop {
        tokio::select! {
            message = rx.recv(), if input_open => match message {
                Some(Message::Text(line)) if view.interactive => {
                    let result = match parse_command(&line) {
                        Command::Send(message) => ws.send(message).await,
                        Command::Ping(data) => {
                            if args.show_ping_pong {
                                view.note(&mut stdout, &format!("> ping ({} bytes)", data.len())).await?;
                            }
                            ws.send(Message::Ping(data)).await
                        }
                        Command::Close(code, reason) => {
                            return close(&mut ws, code, &reason).await.map(|()| End::InputDone);
                        }
                        Command::Bad(why) => {
                            view.note(&mut stdout, &why).await?;
                            Ok(())
                        }
                    };
                    if let Err(e) = result {
                        return after_failed_send(&mut ws, e).await;
                    }
                    stdout.write_all(view.prompt().as_bytes()).await?;
                    stdout.flush().await?;
                }
                Some(message) => {
                    if let Err(e) = ws.send(message).await {
                        return after_failed_send(&mut ws, e).await;
                    }
                }
                None if args.once => {
                    input_open = false;
                    waiting = true;
                    idle.as_mut().reset(tokio::time::Instant::now() + args.wait);
                }
                None if args.no_close => input_open = false,
                None => return close_at_end(&mut ws).await,
            },
            () = &mut idle, if waiting => return close_at_end(&mut ws).await,
            () = crate::signal::terminate() => {
                close(&mut ws, CloseCode::NORMAL, "").await?;
                return Ok(End::Interrupted);
            }
            message = ws.next() => {
                let Some(message) = message else {
                    return server_closed(&ws);
                };
                if waiting {
                    idle.as_mut().reset(tokio::time::Instant::now() + args.wait);
                }
                show(args, view, &mut stdout, message?, history).await?;
            }
        }
    }
}

/// The first lines of a session: the warning when no subprotocol was selected, and in
/// interactive mode what was negotiated.
async fn greet<S: AsyncRead + AsyncWrite + Unpin>(
    args: &ConnectArgs,
    url: &str,
    view: &View,
    ws: &WebSocket<S>,
    stdout: &mut tokio::io::Stdout,
) -> std::io::Result<()> {
    if !args.subprotocols.is_empty() && ws.protocol().is_none() {
        eprintln!(
            "sockeye: warning: the server selected none of the subprotocols offered ({})",
            args.subprotocols.join(", ")
        );
    }
    if view.interactive {
        let protocol = ws
            .protocol()
            .map(|p| format!(", subprotocol {p}"))
            .unwrap_or_default();
        let extension = ws
            .extension()
            .map(|e| format!(", extension {e}"))
            .unwrap_or_default();
        let line = format!("connected to {url}{protocol}{extension} (Ctrl-C or /close to quit)");
        view.note(stdout, &line).await?;
    }
    Ok(())
}

/// Writes a received message: text as a line, binary raw with --binary (a note otherwise),
/// control frames as notes with --show-ping-pong.
async fn show(
    args: &ConnectArgs,
    view: &View,
    stdout: &mut tokio::io::Stdout,
    message: Message,
    history: &mut History,
) -> std::io::Result<()> {
    match message {
        // A room's id notice is bookkeeping, not a message (logged with -v).
        Message::Text(text) if let Some(note) = history.notice(&text) => {
            tracing::info!(notice = %text, "room history");
            if note.is_empty() {
                Ok(())
            } else {
                view.note(stdout, note).await
            }
        }
        Message::Text(text) => {
            let line = view.incoming(&display::text_line(&text, args.pretty));
            stdout.write_all(line.as_bytes()).await?;
            stdout.flush().await
        }
        Message::Binary(data) if args.binary => {
            stdout.write_all(&data).await?;
            stdout.flush().await
        }
        Message::Binary(data) => {
            let note = format!(
                "< binary message of {} bytes (--binary writes it to stdout): {}",
                data.len(),
                display::hex_preview(&data, 32)
            );
            view.note(stdout, &note).await
        }
        other => {
            if let Some(note) = display::control_note(&other) {
                if args.show_ping_pong {
                    view.note(stdout, &note).await?;
                } else {
                    tracing::info!("{note}");
                }
            }
            Ok(())
        }
    }
}

/// Closes with `code`, waiting a little for the server's answer.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
    code: CloseCode,
    reason: &str,
) -> anyhow::Result<()> {
    match tokio::time::timeout(CLOSE_WAIT, ws.close(code, reason)).await {
        Ok(result) => Ok(result?),
        Err(_) => Ok(()),
    }
}

/// Closes at the end of the input; when the server had closed first (a message over its
/// limit, say), reports its Close instead.
async fn close_at_end<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
) -> anyhow::Result<End> {
    let result = close(ws, CloseCode::NORMAL, "").await;
    // The server closed first, or answered with a code of its own (1009 for a message it
    // had already refused while we were still sending it, say).
    if let Some(closed) = ws.close_status()
        && (closed.initiator == sockeye::proto::Initiator::Remote
            || closed
                .remote
                .as_ref()
                .is_some_and(|frame| !display::is_normal(frame.code)))
    {
        return server_closed(ws);
    }
    result.map(|()| End::InputDone)
}

/// Reports how the server closed the connection.
fn server_closed<S: AsyncRead + AsyncWrite + Unpin>(ws: &WebSocket<S>) -> anyhow::Result<End> {
    let closed = ws.close_status().context("connection ended")?;
    eprintln!(
        "sockeye: server closed the connection: {}",
        display::close_line(closed)
    );
    Ok(End::ServerClosed {
        normal: display::is_normal(closed.code()),
    })
}

/// A send failed: when the server closed the connection (a message too large for it, say),
/// report its Close frame rather than the failed write.
async fn after_failed_send<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
    error: sockeye::Error,
) -> anyhow::Result<End> {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    match ws.close_status() {
        Some(closed) if closed.remote.is_some() => server_closed(ws),
        _ => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_notices_are_kept_and_reconnections_ask_for_what_came_after() {
        let mut history = History::default();
        assert_eq!(history.resume_url("ws://h/rooms/r?since="), None);
        assert_eq!(history.notice("hello"), None);
        assert_eq!(
            history.notice(r#"{"sockeye":"presence","event":"join"}"#),
            None
        );
        assert_eq!(history.notice(r#"{"sockeye":"id","id":"nonsense"}"#), None);
        assert_eq!(history.notice(r#"{"sockeye":"id","id":"17-3"}"#), Some(""));
        assert!(
            history
                .notice(r#"{"sockeye":"history","event":"truncated"}"#)
                .is_some_and(|note| !note.is_empty())
        );
        assert_eq!(
            history
                .resume_url("ws://h/rooms/r?name=ann&since=")
                .as_deref(),
            Some("ws://h/rooms/r?name=ann&since=17-3")
        );
        assert_eq!(
            history.resume_url("ws://h/rooms/r").as_deref(),
            Some("ws://h/rooms/r?since=17-3")
        );
    }

    #[test]
    fn the_back_off_is_jittered_and_capped() {
        for failures in 0..40 {
            let wait = backoff(failures);
            assert!(wait <= Duration::from_secs(5), "{wait:?}");
            assert!(wait >= Duration::from_millis(100), "{wait:?}");
        }
        assert!(backoff(0) <= Duration::from_millis(200));
    }

    #[test]
    fn interactive_commands() {
        assert_eq!(
            parse_command("hello"),
            Command::Send(Message::text("hello"))
        );
        assert_eq!(parse_command("//x"), Command::Send(Message::text("/x")));
        assert_eq!(parse_command("/ping"), Command::Ping(Bytes::new()));
        assert_eq!(
            parse_command("/ping abc"),
            Command::Ping(Bytes::from_static(b"abc"))
        );
        assert_eq!(
            parse_command("/close"),
            Command::Close(CloseCode::NORMAL, String::new())
        );
        assert_eq!(
            parse_command("/close 4000 bye now"),
            Command::Close(CloseCode::from(4000), "bye now".into())
        );
        assert!(matches!(parse_command("/close 1006"), Command::Bad(_)));
        assert!(matches!(parse_command("/close x"), Command::Bad(_)));
        assert_eq!(
            parse_command("/binary 00 ff 10"),
            Command::Send(Message::binary(vec![0, 255, 16]))
        );
        assert!(matches!(parse_command("/binary 0"), Command::Bad(_)));
        assert!(matches!(parse_command("/binary zz"), Command::Bad(_)));
        assert!(matches!(parse_command("/nope"), Command::Bad(_)));
    }
}

//! `sockeye bench`: many connections echoing messages; throughput and latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use sockeye::http2::Http2Connection;
use sockeye::{ClientBuilder, CloseCode, Message, Utf8Bytes, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;

use super::Usage;
use crate::args::BenchArgs;
use crate::exit;

/// How long the first echo, which checks that the endpoint echoes, may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the close at the end of the run may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Totals {
    messages: AtomicU64,
}

struct ConnResult {
    latencies_us: Vec<u32>,
    /// Whether the WebSocket ran over HTTP/2.
    http2: bool,
    /// What ended the connection early, if anything did.
    error: Option<Failure>,
}

/// Why a connection of the run failed.
enum Failure {
    /// It could not connect (or the handshake was refused).
    Connect(anyhow::Error),
    /// It connected, and then this went wrong.
    Run(String),
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<u8> {
    if args.connections == 0 || args.in_flight == 0 {
        return Err(Usage("--connections and --in-flight must be at least 1".into()).into());
    }
    let payload = payload(args.size, args.binary);
    let totals = Arc::new(Totals::default());
    let start = Instant::now();
    let deadline = start + args.duration;
    // Each connection's share of the rate, as a pause between sends.
    let pace = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.connections as f64 / args.rate as f64));

    let url = crate::addr::ws_url(&args.url);
    crate::addr::check_ws_url(&url).map_err(Usage)?;
    let client = args.http.apply(args.net.apply(ClientBuilder::new(&url))?);
    // --http2: the WebSockets share --h2-connections HTTP/2 connections, opened first.
    let mut shared = Vec::new();
    if args.http.http2 {
        if args.h2_connections == 0 {
            return Err(Usage("--h2-connections must be at least 1".into()).into());
        }
        for _ in 0..args.h2_connections {
            shared.push(Http2Connection::open(&client).await?);
        }
    }
    let mut tasks = JoinSet::new();
    for i in 0..args.connections {
        let via = match shared.get(i % shared.len().max(1)) {
            Some(connection) => Via::Shared(connection.clone(), client.clone()),
            None => Via::Own(client.clone()),
        };
        let payload = payload.clone();
        let totals = Arc::clone(&totals);
        let in_flight = args.in_flight;
        tasks.spawn(
            async move { connection(via, payload, in_flight, pace, deadline, &totals).await },
        );
    }
    drop(shared);

    let bar = (!args.json).then(|| {
        let bar = ProgressBar::new(args.duration.as_millis() as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:40}] {elapsed}/{duration} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    let mut results = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(result)) => results.push(result),
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
            _ = ticker.tick(), if bar.is_some() => {
                if let Some(bar) = &bar {
                    let elapsed = start.elapsed();
                    bar.set_position((elapsed.min(args.duration)).as_millis() as u64);
                    let done = totals.messages.load(Ordering::Relaxed);
                    bar.set_message(format!("{:.0} msg/s", done as f64 / elapsed.as_secs_f64().max(1e-3)));
                }
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    report(&args, &url, results)
}

fn payload(size: usize, binary: bool) -> Message {
    if binary {
        Message::Binary(Bytes::from(
            (0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
        ))
    } else {
        Message::Text(Utf8Bytes::from("x".repeat(size)))
    }
}

/// How a connection of the run opens its WebSocket.
enum Via {
    /// A connection of its own (HTTP/2 or HTTP/1.1, as the client's policy says).
    Own(ClientBuilder),
    /// A stream of a shared HTTP/2 connection.
    Shared(Http2Connection, ClientBuilder),
}

async fn connection(
    via: Via,
    payload: Message,
    in_flight: usize,
    pace: Option<Duration>,
    deadline: Instant,
    totals: &Totals,
) -> ConnResult {
    let failed = |e: sockeye::Error| ConnResult {
        latencies_us: Vec::new(),
        http2: false,
        error: Some(Failure::Connect(e.into())),
    };
    match via {
        Via::Own(client) => match client.connect().await {
            Ok((ws, response)) => {
                let http2 = response.version() == http::Version::HTTP_2;
                echoes(ws, http2, payload, in_flight, pace, deadline, totals).await
            }
            Err(e) => failed(e),
        },
        Via::Shared(connection, client) => match connection.websocket(client).await {
            Ok((ws, _)) => echoes(ws, true, payload, in_flight, pace, deadline, totals).await,
            Err(e) => failed(e),
        },
    }
}

/// One connection's run: the probe, then echoes until the deadline.
async fn echoes<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocket<S>,
    http2: bool,
    payload: Message,
    in_flight: usize,
    pace: Option<Duration>,
    deadline: Instant,
    totals: &Totals,
) -> ConnResult {
    let mut result = ConnResult {
        latencies_us: Vec::new(),
        http2,
        error: None,
    };
    if let Err(why) = probe(&mut ws, &payload, deadline).await {
        result.error = Some(Failure::Run(why));
        return result;
    }
    let mut sent: std::collections::VecDeque<Instant> =
        std::collections::VecDeque::with_capacity(in_flight);
    let mut next_send = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            // What is still in flight is not waited for: the run is over.
            break;
        }
        // Keep `in_flight` messages outstanding (at the paced rate) until the deadline.
        while sent.len() < in_flight && next_send <= now {
            if let Err(e) = ws.feed(payload.clone()).await {
                result.error = Some(Failure::Run(format!("sending failed: {e}")));
                return result;
            }
            sent.push_back(Instant::now());
            if let Some(pace) = pace {
                next_send += pace;
            }
        }
        if let Err(e) = ws.flush().await {
            result.error = Some(Failure::Run(format!("sending failed: {e}")));
            return result;
        }
        if sent.is_empty() {
            tokio::time::sleep_until(next_send.min(deadline).into()).await;
            continue;
        }
        match tokio::time::timeout_at(deadline.into(), ws.next()).await {
            Ok(Some(Ok(message))) if message.is_data() => {
                if let Some(at) = sent.pop_front() {
                    let micros = at.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                    result.latencies_us.push(micros);
                    totals.messages.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(Some(Err(e))) => {
                result.error = Some(Failure::Run(format!("the connection failed: {e}")));
                return result;
            }
            Ok(None) => {
                result.error = Some(Failure::Run(server_closed(&ws)));
                return result;
            }
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(CloseCode::NORMAL, "bench done")).await;
    result
}

/// Sends one message and checks that the same comes back first: a room or a server that
/// answers something else is not measured as if it echoed.
async fn probe<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
    payload: &Message,
    deadline: Instant,
) -> Result<(), String> {
    // A marker no other connection sends, in front of the payload's own bytes.
    let marker = format!("sockeye bench probe {:016x} ", rand_u64());
    let probe = match payload {
        Message::Binary(data) => {
            let mut bytes = marker.into_bytes();
            bytes.extend_from_slice(data);
            Message::binary(bytes)
        }
        _ => Message::text(marker),
    };
    ws.send(probe.clone())
        .await
        .map_err(|e| format!("sending failed: {e}"))?;
    // Within the run: a bench keeps to its duration, whatever the endpoint does.
    let wait = PROBE_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
    let answer = tokio::time::timeout(wait, async {
        loop {
            match ws.next().await {
                Some(Ok(message)) if message.is_data() => return Ok(message),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("the connection failed: {e}")),
                None => return Err(server_closed(ws)),
            }
        }
    })
    .await
    .map_err(|_| format!("no echo within {wait:.1?}: is this an echo endpoint?"))??;
    if answer == probe {
        Ok(())
    } else {
        Err("not an echo endpoint: the first message back was not the one sent (a room relays others' messages)".to_owned())
    }
}

/// Why a connection the server closed ended: its close code and reason.
fn server_closed<S: AsyncRead + AsyncWrite + Unpin>(ws: &WebSocket<S>) -> String {
    let how = ws.close_status().map_or_else(
        || "without a close frame".to_owned(),
        crate::display::close_line,
    );
    format!("the server closed the connection: {how}")
}

/// A random number for the probe's marker, from the standard library's hasher keys.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(u64::from(std::process::id()));
    hasher.finish()
}

fn report(args: &BenchArgs, url: &str, results: Vec<ConnResult>) -> anyhow::Result<u8> {
    let mut latencies: Vec<u32> = Vec::new();
    let mut reasons: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut first_connect_error = None;
    let mut connected = 0_usize;
    let mut over_h2 = 0_usize;
    for result in results {
        latencies.extend_from_slice(&result.latencies_us);
        if result.http2 && !matches!(result.error, Some(Failure::Connect(_))) {
            over_h2 += 1;
        }
        match result.error {
            Some(Failure::Connect(e)) => {
                *reasons.entry(exit::describe(&e)).or_default() += 1;
                first_connect_error.get_or_insert(e);
            }
            Some(Failure::Run(why)) => {
                connected += 1;
                *reasons.entry(why).or_default() += 1;
            }
            None => connected += 1,
        }
    }
    // No connection could be made: the reason and the exit code of the failure (3 for a
    // refused port, 4 for an HTTP status), as `connect` would give.
    if connected == 0
        && let Some(error) = first_connect_error
    {
        return Err(error);
    }
    latencies.sort_unstable();
    let errors: u64 = reasons.values().sum();
    let messages = latencies.len() as u64;
    let percentile = |p: f64| -> u32 {
        if latencies.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * (latencies.len() - 1) as f64).round() as usize;
        latencies[rank.min(latencies.len() - 1)]
    };
    let seconds = args.duration.as_secs_f64().max(1e-3);
    let rate = messages as f64 / seconds;
    let mb_per_s = rate * args.size as f64 / 1e6;
    // Which HTTP version carried the WebSockets that connected.
    let http = match over_h2 {
        0 => "HTTP/1.1".to_owned(),
        n if n == connected => "HTTP/2".to_owned(),
        n => format!("HTTP/2 for {n}, HTTP/1.1 for {}", connected - n),
    };
    let h2_connections = args.http.http2.then_some(args.h2_connections);
    if args.json {
        let value = serde_json::json!({
            "url": url,
            "connections": args.connections,
            "size": args.size,
            "in_flight": args.in_flight,
            "http": http,
            "websockets_over_http2": over_h2,
            "http2_connections": h2_connections,
            "seconds": seconds,
            "messages": messages,
            "errors": errors,
            "error_reasons": reasons,
            "messages_per_sec": rate,
            "mb_per_sec": mb_per_s,
            "latency_us": {
                "p50": percentile(50.0),
                "p90": percentile(90.0),
                "p99": percentile(99.0),
                "max": latencies.last().copied().unwrap_or(0),
            },
        });
        println!("{value}");
    } else {
        println!(
            "{messages} echoes in {seconds:.2} s over {} connections ({} bytes, {} in flight)",
            args.connections, args.size, args.in_flight
        );
        match h2_connections {
            Some(n) => println!(
                "http: {http}, {over_h2} WebSockets over {n} HTTP/2 connection{}",
                if n == 1 { "" } else { "s" }
            ),
            None => println!("http: {http}"),
        }
        println!("throughput: {rate:.0} messages/s, {mb_per_s:.2} MB/s");
        println!(
            "latency: p50 {} us, p90 {} us, p99 {} us, max {} us",
            percentile(50.0),
            percentile(90.0),
            percentile(99.0),
            latencies.last().copied().unwrap_or(0)
        );
        println!("errors: {errors}");
    }
    for (reason, count) in &reasons {
        eprintln!("sockeye: {count} connection(s): {reason}");
    }
    Ok(if errors == 0 && messages > 0 {
        exit::OK
    } else {
        exit::ERROR
    })
}

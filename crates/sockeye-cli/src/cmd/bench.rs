//! `sockeye bench`: many connections echoing messages; throughput and latency percentiles.

use std::collections::VecDeque;
use std::future::Future as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
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

/// The message every connection sends. Its bytes live as long as the process (one buffer for
/// the whole run), so that copying the message for each send is a pointer copy: a shared
/// buffer's reference count, taken and dropped by every connection's thread for every message,
/// was a cache line bounced between the cores.
fn payload(size: usize, binary: bool) -> Message {
    if binary {
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        Message::Binary(Bytes::from_static(Box::leak(bytes.into_boxed_slice())))
    } else {
        Message::Text(Utf8Bytes::from_static(Box::leak(
            "x".repeat(size).into_boxed_str(),
        )))
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
    // The loop costs the client as little as it can, so that a fast server is measured and not
    // the bench: sends are only queued (`feed`), and the next `next()` writes everything queued
    // in one write before it reads; every echo already received is taken without waiting, and
    // the clock is read once for all of them; the run's deadline is one timer for the whole run.
    // Send times in microseconds since `epoch`: a latency is then one subtraction.
    let mut sent: VecDeque<u64> = VecDeque::with_capacity(in_flight);
    let epoch = Instant::now();
    let micros = |at: Instant| at.saturating_duration_since(epoch).as_micros() as u64;
    let mut next_send = epoch;
    let mut now = epoch;
    let mut now_us = 0;
    let end = tokio::time::sleep_until(deadline.into());
    tokio::pin!(end);
    while now < deadline {
        // Keep `in_flight` messages outstanding (at the paced rate) until the deadline.
        while sent.len() < in_flight && next_send <= now {
            if let Err(e) = ws.feed(payload.clone()).await {
                result.error = Some(Failure::Run(format!("sending failed: {e}")));
                return result;
            }
            sent.push_back(now_us);
            if let Some(pace) = pace {
                next_send += pace;
            }
        }
        // Wait for an echo, or (paced, with room in flight) for the time of the next send.
        let pace_due = pace.is_some() && sent.len() < in_flight;
        let item = tokio::select! {
            biased;
            () = &mut end => break,
            () = tokio::time::sleep_until(next_send.into()), if pace_due || sent.is_empty() => {
                if sent.is_empty() {
                    // Nothing in flight: what was queued must still go out.
                    if let Err(e) = ws.flush().await {
                        result.error = Some(Failure::Run(format!("sending failed: {e}")));
                        return result;
                    }
                }
                now = Instant::now();
                now_us = micros(now);
                continue;
            }
            item = ws.next(), if !sent.is_empty() => item,
        };
        now = Instant::now();
        now_us = micros(now);
        let mut echoed = 0_u64;
        let mut item = Some(item);
        while let Some(next) = item.take() {
            match next {
                Some(Ok(message)) if message.is_data() => {
                    if let Some(at) = sent.pop_front() {
                        let latency = now_us.saturating_sub(at).min(u64::from(u32::MAX));
                        result.latencies_us.push(latency as u32);
                        echoed += 1;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    result.error = Some(Failure::Run(format!("the connection failed: {e}")));
                    return result;
                }
                None => {
                    result.error = Some(Failure::Run(server_closed(&ws)));
                    return result;
                }
            }
            // Only while echoes are owed: a drained connection would read once more for nothing.
            if !sent.is_empty() {
                item = ready_now(&mut ws).await;
            }
        }
        totals.messages.fetch_add(echoed, Ordering::Relaxed);
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(CloseCode::NORMAL, "bench done")).await;
    result
}

/// The next message if it is already here (read or decoded), without waiting for one: polls
/// `next()` once (it is cancel-safe). On the way it writes what was queued.
async fn ready_now<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
) -> Option<Option<Result<Message, sockeye::Error>>> {
    std::future::poll_fn(|cx| {
        let next = std::pin::pin!(ws.next());
        Poll::Ready(match next.poll(cx) {
            Poll::Ready(item) => Some(item),
            Poll::Pending => None,
        })
    })
    .await
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

/// The latencies at percentiles `ps` (ascending, 0 to 100; each the value of rank
/// `round(p / 100 * (n - 1))` in sorted order), 0 when there are none. Selects each rank in
/// the part above the previous one rather than sorting: a run can hold tens of millions.
fn percentiles<const N: usize>(latencies: &mut [u32], ps: [f64; N]) -> [u32; N] {
    let mut out = [0; N];
    let Some(last) = latencies.len().checked_sub(1) else {
        return out;
    };
    let mut low = 0;
    for (value, p) in out.iter_mut().zip(ps) {
        let rank = (((p / 100.0) * last as f64).round() as usize).clamp(low, last);
        // Everything from `low` on is at least as large as everything before it.
        let (_, nth, _) = latencies[low..].select_nth_unstable(rank - low);
        *value = *nth;
        low = rank;
    }
    out
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
    let errors: u64 = reasons.values().sum();
    let messages = latencies.len() as u64;
    let [p50, p90, p99, max] = percentiles(&mut latencies, [50.0, 90.0, 99.0, 100.0]);
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
                "p50": p50,
                "p90": p90,
                "p99": p99,
                "max": max,
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
        println!("latency: p50 {p50} us, p90 {p90} us, p99 {p99} us, max {max} us");
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

#[cfg(test)]
mod tests {
    use super::percentiles;

    /// The ranks a sort would give, for comparison.
    fn sorted_ranks(latencies: &[u32], ps: [f64; 4]) -> [u32; 4] {
        let mut sorted = latencies.to_vec();
        sorted.sort_unstable();
        ps.map(|p| sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize])
    }

    #[test]
    fn percentiles_select_what_sorting_would() {
        let ps = [50.0, 90.0, 99.0, 100.0];
        // A scrambled sequence with repeats, of a few lengths (1 and 2 included).
        for n in [1_usize, 2, 3, 10, 101, 1000, 4099] {
            let latencies: Vec<u32> = (0..n).map(|i| ((i * 7919 + 13) % 997) as u32 / 3).collect();
            let expected = sorted_ranks(&latencies, ps);
            let mut scratch = latencies.clone();
            assert_eq!(percentiles(&mut scratch, ps), expected, "n = {n}");
        }
        assert_eq!(percentiles(&mut [], ps), [0; 4]);
    }
}

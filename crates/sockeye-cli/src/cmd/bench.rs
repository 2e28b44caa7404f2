//! `sockeye bench`: many connections echoing messages; throughput and latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use sockeye::{ClientBuilder, CloseCode, Message, Utf8Bytes};
use tokio::task::JoinSet;

use super::Usage;
use crate::args::BenchArgs;
use crate::exit;

/// How long outstanding echoes may take once the run is over.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Totals {
    messages: AtomicU64,
}

struct ConnResult {
    latencies_us: Vec<u32>,
    errors: u64,
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

    let client = args.net.apply(ClientBuilder::new(&args.url))?;
    let mut tasks = JoinSet::new();
    for _ in 0..args.connections {
        let client = client.clone();
        let payload = payload.clone();
        let totals = Arc::clone(&totals);
        let in_flight = args.in_flight;
        tasks.spawn(async move {
            connection(client, payload, in_flight, pace, deadline, &totals).await
        });
    }

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
    let elapsed = start
        .elapsed()
        .min(args.duration + DRAIN)
        .as_secs_f64()
        .max(1e-3);
    Ok(report(&args, &results, elapsed))
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

async fn connection(
    client: ClientBuilder,
    payload: Message,
    in_flight: usize,
    pace: Option<Duration>,
    deadline: Instant,
    totals: &Totals,
) -> ConnResult {
    let mut result = ConnResult {
        latencies_us: Vec::new(),
        errors: 0,
    };
    let Ok((mut ws, _)) = client.connect().await else {
        result.errors += 1;
        return result;
    };
    let mut sent: std::collections::VecDeque<Instant> =
        std::collections::VecDeque::with_capacity(in_flight);
    let mut next_send = Instant::now();
    loop {
        let now = Instant::now();
        // Keep `in_flight` messages outstanding (at the paced rate) until the deadline.
        while now < deadline && sent.len() < in_flight && next_send <= now {
            if ws.feed(payload.clone()).await.is_err() {
                result.errors += 1;
                return result;
            }
            sent.push_back(Instant::now());
            if let Some(pace) = pace {
                next_send += pace;
            }
        }
        if ws.flush().await.is_err() {
            result.errors += 1;
            return result;
        }
        if sent.is_empty() {
            if now >= deadline {
                break;
            }
            tokio::time::sleep_until(next_send.into()).await;
            continue;
        }
        let limit = if now >= deadline {
            deadline + DRAIN
        } else {
            deadline.max(next_send) + DRAIN
        };
        match tokio::time::timeout_at(limit.into(), ws.next()).await {
            Ok(Some(Ok(message))) if message.is_data() => {
                if let Some(at) = sent.pop_front() {
                    let micros = at.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                    result.latencies_us.push(micros);
                    totals.messages.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) | Err(_) => {
                result.errors += 1;
                return result;
            }
        }
    }
    let _ = ws.close(CloseCode::NORMAL, "bench done").await;
    result
}

fn report(args: &BenchArgs, results: &[ConnResult], seconds: f64) -> u8 {
    let mut latencies: Vec<u32> = results
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let messages = latencies.len() as u64;
    let percentile = |p: f64| -> u32 {
        if latencies.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * (latencies.len() - 1) as f64).round() as usize;
        latencies[rank.min(latencies.len() - 1)]
    };
    let rate = messages as f64 / seconds;
    let mb_per_s = rate * args.size as f64 / 1e6;
    if args.json {
        let value = serde_json::json!({
            "url": args.url,
            "connections": args.connections,
            "size": args.size,
            "in_flight": args.in_flight,
            "seconds": seconds,
            "messages": messages,
            "errors": errors,
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
    if errors == 0 && messages > 0 {
        exit::OK
    } else {
        exit::ERROR
    }
}

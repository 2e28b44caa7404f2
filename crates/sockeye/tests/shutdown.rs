//! Graceful shutdown over loopback: a slow but reading peer gets everything queued before the
//! signal, then the 1001 Close; a peer that never reads is cut at the grace period and what it
//! lost is counted.

use std::time::Duration;

use sockeye::{CloseCode, Message, ServerBuilder, Shutdown, WebSocketConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const MESSAGE: usize = 8 << 10;

/// A server accepting one connection that queues `count` messages of 8 KiB (numbered), says so,
/// then reads until the connection ends. Returns the URL, the "queued" signal and the server's
/// outcome: whether `next` ended with an error.
async fn server(
    shutdown: &Shutdown,
    count: usize,
) -> (String, oneshot::Receiver<()>, tokio::task::JoinHandle<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    // Everything is queued at once: no waiting on the high-water mark.
    let config = WebSocketConfig::builder()
        .write_buffer_high_water(256 << 20)
        .build()
        .unwrap();
    let server = ServerBuilder::new().config(config).shutdown(shutdown);
    let (queued_tx, queued_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = server.accept_tcp(tcp).await.unwrap();
        for i in 0..count {
            let mut payload = vec![0_u8; MESSAGE];
            payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
            ws.feed(Message::binary(payload)).await.unwrap();
        }
        queued_tx.send(()).unwrap();
        let mut failed = false;
        while let Some(item) = ws.next().await {
            if item.is_err() {
                failed = true;
            }
        }
        failed
    });
    (url, queued_rx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_everything_queued_before_the_signal() {
    let shutdown = Shutdown::new().grace_period(Duration::from_secs(20));
    let count = 1000;
    let (url, queued, server) = server(&shutdown, count).await;
    let (mut client, _) = sockeye::connect(&url).await.unwrap();
    queued.await.unwrap();
    shutdown.trigger();
    // Sends after the signal are refused; the queue was 8 MB, most of it still unsent.
    assert!(shutdown.is_triggered());

    let mut received = 0_usize;
    let mut close = None;
    while let Some(message) = client.next().await {
        match message.unwrap() {
            Message::Binary(payload) => {
                assert_eq!(payload.len(), MESSAGE);
                assert_eq!(payload[..8], (received as u64).to_be_bytes());
                received += 1;
                // Slow: a pause every 50 messages, the server's queue waits for us.
                if received.is_multiple_of(50) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Message::Close(frame) => close = frame,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        received, count,
        "every message queued before the signal arrives"
    );
    let close = close.expect("a Close frame with a code");
    assert_eq!(close.code, CloseCode::GOING_AWAY);
    assert!(!server.await.unwrap(), "the server's side ended cleanly");

    let report = tokio::time::timeout(Duration::from_secs(5), shutdown.drained())
        .await
        .unwrap();
    assert_eq!(report.connections, 1);
    assert_eq!(report.drained, 1);
    assert_eq!(report.cut, 0);
    assert_eq!(report.dropped_bytes, 0);
    assert_eq!(report.dropped_messages, 0);
    assert_eq!(report.remaining, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_cut_at_the_grace_period_and_the_loss_counted() {
    let grace = Duration::from_millis(500);
    let shutdown = Shutdown::new().grace_period(grace);
    // 32 MiB: far more than the kernel's socket buffers hold.
    let count = 4096;
    let (url, queued, server) = server(&shutdown, count).await;
    let (client, _) = sockeye::connect(&url).await.unwrap();
    queued.await.unwrap();
    let start = tokio::time::Instant::now();
    shutdown.trigger();

    assert!(
        server.await.unwrap(),
        "the server's `next` ends with an error"
    );
    let report = tokio::time::timeout(Duration::from_secs(5), shutdown.drained())
        .await
        .unwrap();
    let elapsed = start.elapsed();
    assert!(elapsed >= grace, "cut before the grace period: {elapsed:?}");
    assert!(
        elapsed < grace + Duration::from_secs(2),
        "cut late: {elapsed:?}"
    );
    assert_eq!(report.connections, 1);
    assert_eq!(report.cut, 1);
    assert_eq!(report.drained, 0);
    let total = (count * (MESSAGE + 4)) as u64;
    assert!(
        report.dropped_bytes > total / 2 && report.dropped_bytes <= total,
        "{report:?}"
    );
    // Each dropped message holds at most 8 KiB and a header: the counts agree.
    let messages = report.dropped_messages;
    assert!(messages <= count as u64, "{report:?}");
    assert!(
        messages * (MESSAGE as u64 + 4) >= report.dropped_bytes,
        "{report:?}"
    );
    assert!(
        (messages - 1) * (MESSAGE as u64 + 4) < report.dropped_bytes,
        "{report:?}"
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_at_once_and_new_handshakes_are_refused() {
    let shutdown = Shutdown::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = ServerBuilder::new().shutdown(&shutdown);
    let accepting = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (tcp, _) = listener.accept().await.unwrap();
            let server = server.clone();
            tasks.push(tokio::spawn(async move {
                match server.accept_tcp(tcp).await {
                    Ok(mut ws) => while ws.next().await.is_some() {},
                    Err(e) => assert!(matches!(e.kind(), sockeye::Kind::Busy), "{e}"),
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(sockeye::connect(&url).await.unwrap().0);
    }
    while shutdown.connections() < 3 {
        tokio::task::yield_now().await;
    }
    let start = tokio::time::Instant::now();
    shutdown.trigger();
    for client in &mut clients {
        match client.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::GOING_AWAY),
            other => panic!("expected the 1001 Close, got {other:?}"),
        }
        assert!(client.next().await.is_none());
    }
    let report = shutdown.drained().await;
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!((report.connections, report.drained, report.cut), (3, 3, 0));
    let refused = sockeye::connect(&url).await.unwrap_err();
    assert_eq!(
        refused.status(),
        Some(http::StatusCode::SERVICE_UNAVAILABLE)
    );
    accepting.await.unwrap();
}

//! Messages framed once ([`PreparedMessage`]) sent through `WebSocket` and a split writer, with
//! and without permessage-deflate, over loopback.

use std::sync::Arc;

use sockeye::{ClientBuilder, DeflateConfig, Message, PreparedMessage, ServerBuilder};
use tokio::net::TcpListener;

async fn pair(
    server: ServerBuilder,
    deflate: bool,
) -> (
    sockeye::WebSocket<tokio::net::TcpStream>,
    sockeye::WebSocket<sockeye::MaybeTlsStream>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.accept(tcp).await.unwrap()
    });
    let mut client = ClientBuilder::new(url);
    if deflate {
        client = client.deflate(DeflateConfig::new());
    }
    let (client, _) = client.connect().await.unwrap();
    (accepting.await.unwrap(), client)
}

#[tokio::test]
async fn prepared_messages_arrive_whole_with_and_without_deflate() {
    let text = "framed once, sent to many; framed once, sent to many".repeat(10);
    let message = Arc::new(PreparedMessage::text(text.as_str()));
    let binary = PreparedMessage::binary(vec![3u8; 100_000]);
    for (server, deflate, compressions) in [
        (ServerBuilder::new(), false, 0),
        (
            ServerBuilder::new().deflate(DeflateConfig::new().server_no_context_takeover(true)),
            true,
            1,
        ),
        (ServerBuilder::new().deflate(DeflateConfig::new()), true, 1),
    ] {
        let (mut server, mut client) = pair(server, deflate).await;
        assert_eq!(client.extension().is_some(), deflate);
        server.send_prepared(&message).await.unwrap();
        server.feed_prepared(&binary).await.unwrap();
        server.flush().await.unwrap();
        let (mut reader, writer) = server.split();
        writer.send_prepared(&message).await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::text(text.as_str())
        );
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::binary(vec![3u8; 100_000])
        );
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::text(text.as_str())
        );
        // Only connections without server context takeover use the shared compressed frame;
        // after the first of them, the count stays at one.
        assert_eq!(message.compressions(), compressions);
        // The server reads the client's Close (reported as a message) and answers it.
        let server_end = async {
            let mut last = None;
            while let Some(message) = reader.next().await {
                last = Some(message.unwrap());
            }
            last
        };
        let (closed, last) = tokio::join!(client.close(sockeye::CloseCode::NORMAL, ""), server_end);
        closed.unwrap();
        assert!(matches!(last, Some(Message::Close(_))));
    }
}

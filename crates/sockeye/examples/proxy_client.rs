//! A client that reaches its server through a proxy: HTTP CONNECT (`http://[USER:PASS@]HOST:PORT`)
//! or SOCKS5 (`socks5h://`, names resolved by the proxy; `socks5://`, resolved here). For
//! `wss://`, TLS runs end to end inside the tunnel: the proxy sees only ciphertext.
//!
//! ```text
//! cargo run -p sockeye --example proxy_client -- http://127.0.0.1:3128 ws://HOST/ hello
//! cargo run -p sockeye --example proxy_client -- env ws://HOST/ hello   # HTTP(S)_PROXY, ALL_PROXY, NO_PROXY
//! ```
//!
//! Prints the server's answer to the message (against an echo server, the message).

use sockeye::{ClientBuilder, CloseCode, Message, Proxy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: proxy_client PROXY_URL|env WS_URL MESSAGE";
    let proxy = args.next().ok_or(usage)?;
    let url = args.next().ok_or(usage)?;
    let text = args.next().ok_or(usage)?;
    println!("{}", ask_through(&proxy, &url, &text).await?);
    Ok(())
}

/// Sends `text` to `url` through `proxy` (`env`: the proxy the environment names, if any) and
/// returns the first text message that comes back.
pub(crate) async fn ask_through(
    proxy: &str,
    url: &str,
    text: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let client = ClientBuilder::new(url);
    let client = if proxy == "env" {
        client.proxy_from_env()
    } else {
        // A bad URL is a `ProxyUrlError`; a proxy that refuses is `Kind::Proxy` with its status.
        client.proxy(proxy.parse::<Proxy>()?)
    };
    let (mut ws, _response) = client.connect().await?;
    ws.send(Message::text(text)).await?;
    let answer = loop {
        match ws.next().await {
            Some(Ok(Message::Text(answer))) => break answer.to_string(),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err("closed before answering".into()),
        }
    };
    ws.close(CloseCode::NORMAL, "").await?;
    Ok(answer)
}

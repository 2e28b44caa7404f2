//! Sends text and binary messages of many sizes to an echo server and checks every echo; used
//! by the interoperability tests against other implementations.
//!
//! `interop_client URL [--no-deflate] [--server-no-context-takeover]
//!  [--client-no-context-takeover] [--server-max-window-bits N] [--client-max-window-bits N]
//!  [--ca CA.pem]`
//!
//! With `--ca`, a `wss://` server's certificate must chain to that CA.
//!
//! Exits 0 when every echo matched (and, unless `--no-deflate`, permessage-deflate was
//! negotiated), 1 otherwise.

use std::process::ExitCode;

use sockeye::{ClientBuilder, CloseCode, DeflateConfig, Message, TlsConfig};

const SIZES: [usize; 10] = [
    0,
    1,
    125,
    126,
    1000,
    65_535,
    65_536,
    100_000,
    300_000,
    1 << 20,
];

fn payload(size: usize, seed: usize) -> Vec<u8> {
    // Half compressible JSON-like text, half noise, so both paths of the compressor run.
    let text = b"{\"id\":42,\"name\":\"sockeye\",\"tags\":[\"a\",\"b\"]} ";
    let mut state = u32::try_from(seed).unwrap_or(1).wrapping_mul(2_654_435_761) | 1;
    (0..size)
        .map(|i| {
            if (i / 512) % 2 == 0 {
                text[i % text.len()]
            } else {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                b'a' + (state % 26) as u8
            }
        })
        .collect()
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("interop_client: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: interop_client URL [options]")?;
    let mut deflate = Some(DeflateConfig::new());
    let mut tls = TlsConfig::new();
    while let Some(arg) = args.next() {
        if arg == "--ca" {
            let path = args.next().ok_or("--ca needs a path")?;
            tls = tls
                .webpki_roots(false)
                .add_root_pem(&std::fs::read(path)?)?;
            continue;
        }
        let mut value = || -> Result<u8, Box<dyn std::error::Error>> {
            Ok(args.next().ok_or("missing value")?.parse()?)
        };
        deflate = match (arg.as_str(), deflate) {
            ("--no-deflate", _) => None,
            ("--server-no-context-takeover", Some(d)) => Some(d.server_no_context_takeover(true)),
            ("--client-no-context-takeover", Some(d)) => Some(d.client_no_context_takeover(true)),
            ("--server-max-window-bits", Some(d)) => Some(d.server_max_window_bits(value()?)),
            ("--client-max-window-bits", Some(d)) => Some(d.client_max_window_bits(value()?)),
            (other, _) => return Err(format!("unknown option {other}").into()),
        };
    }
    let want_deflate = deflate.is_some();
    let mut builder = ClientBuilder::new(&url).tls(tls);
    if let Some(d) = deflate {
        builder = builder.deflate(d);
    }
    let (mut ws, response) = builder.connect().await?;
    let negotiated = response
        .headers()
        .get("sec-websocket-extensions")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if want_deflate != (ws.extension() == Some("permessage-deflate")) {
        return Err(format!(
            "permessage-deflate negotiated: {:?} (answer {negotiated:?})",
            ws.extension()
        )
        .into());
    }
    let mut count = 0;
    for (seed, size) in SIZES.iter().copied().enumerate() {
        for text in [true, false] {
            let data = payload(size, seed);
            let message = if text {
                Message::text(String::from_utf8(data)?)
            } else {
                Message::binary(data)
            };
            ws.send(message.clone()).await?;
            let echo = loop {
                let m = ws.next().await.ok_or("connection ended")??;
                if m.is_data() {
                    break m;
                }
            };
            if echo != message {
                return Err(format!("echo of a {size}-byte message differs").into());
            }
            count += 1;
        }
    }
    ws.close(CloseCode::NORMAL, "done").await?;
    println!("interop_client: {count} echoes matched; extensions: {negotiated:?}");
    Ok(())
}

//! The Autobahn `TestSuite` client protocol: runs every case the fuzzing server offers, echoing
//! each message, then asks it to write the reports.
//!
//! `cargo run --release -p sockeye --example autobahn_client -- ws://127.0.0.1:9001 AGENT`
//!
//! Every case connection offers permessage-deflate with `client_no_context_takeover`: the
//! suite's 13.2, 13.5 and 13.6 cases have the server ask the client not to take over context,
//! and its server only asks that of a client whose offer carries the parameter (RFC 7692
//! section 7.1.1.2 makes it a hint; the suite reads it as consent).

use sockeye::{ClientBuilder, DeflateConfig, Message};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| "ws://127.0.0.1:9001".into());
    let agent = args.next().unwrap_or_else(|| "sockeye".into());

    let count = case_count(&base).await?;
    eprintln!("{count} cases");
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        if let Err(e) = run_case(&url).await {
            eprintln!("case {case}: {e}");
        }
    }
    let (mut ws, _) = sockeye::connect(&format!("{base}/updateReports?agent={agent}")).await?;
    while ws.next().await.is_some() {}
    Ok(())
}

async fn case_count(base: &str) -> Result<u32, Box<dyn std::error::Error>> {
    let (mut ws, _) = sockeye::connect(&format!("{base}/getCaseCount")).await?;
    while let Some(message) = ws.next().await {
        if let Message::Text(text) = message? {
            return Ok(text.trim().parse()?);
        }
    }
    Err("no case count".into())
}

async fn run_case(url: &str) -> Result<(), sockeye::Error> {
    let (mut ws, _) = ClientBuilder::new(url)
        .deflate(DeflateConfig::new().client_no_context_takeover(true))
        .connect()
        .await?;
    while let Some(message) = ws.next().await {
        let message = message?;
        if message.is_data() {
            ws.send(message).await?;
        }
    }
    Ok(())
}

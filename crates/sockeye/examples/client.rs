//! A tokio client: sends each argument as a text message and prints what comes back, until
//! it has as many answers as it sent messages.
//!
//! ```text
//! cargo run -p sockeye --example client -- ws://127.0.0.1:9001/ hello world
//! ```

use sockeye::{CloseCode, Message};

#[tokio::main]
async fn main() -> Result<(), sockeye::Error> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:9001/".into());
    let texts: Vec<String> = args.collect();
    for answer in ask(&url, &texts).await? {
        match answer {
            Message::Text(text) => println!("{text}"),
            other => println!("{other:?}"),
        }
    }
    Ok(())
}

/// Sends `texts` to `url` and returns the first as many messages that come back.
pub(crate) async fn ask(url: &str, texts: &[String]) -> Result<Vec<Message>, sockeye::Error> {
    let (mut ws, _response) = sockeye::connect(url).await?;
    for text in texts {
        ws.send(Message::text(text.as_str())).await?;
    }
    let mut answers = Vec::new();
    while answers.len() < texts.len() {
        match ws.next().await {
            Some(message) => answers.push(message?), // Text, Binary, Ping, Pong or Close
            None => break,                           // the connection has closed
        }
    }
    ws.close(CloseCode::NORMAL, "").await?;
    Ok(answers)
}

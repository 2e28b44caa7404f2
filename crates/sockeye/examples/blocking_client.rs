//! A client without an async runtime: sends each argument as a text message and prints the
//! answer to each, over `ws://` or `wss://`.
//!
//! ```text
//! cargo run -p sockeye --example blocking_client -- ws://127.0.0.1:9001/ hello world
//! ```
//!
//! Against an echo server (the `echo` example) it prints `hello` and `world`.

use sockeye::{CloseCode, Message};

fn main() -> Result<(), sockeye::Error> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:9001/".into());
    let texts: Vec<String> = args.collect();
    for answer in round_trips(&url, &texts)? {
        println!("{answer}");
    }
    Ok(())
}

/// Connects to `url`, sends each text and reads one answer to each, then closes with 1000.
pub(crate) fn round_trips(url: &str, texts: &[String]) -> Result<Vec<String>, sockeye::Error> {
    let (mut ws, _response) = sockeye::blocking::connect(url)?;
    let mut answers = Vec::new();
    for text in texts {
        ws.send(Message::text(text.as_str()))?;
        // `read` blocks until a whole message arrives; Pings are answered inside it.
        loop {
            match ws.read() {
                Some(Ok(Message::Text(answer))) => {
                    answers.push(answer.to_string());
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(answers),
            }
        }
    }
    ws.close(CloseCode::NORMAL, "")?;
    Ok(answers)
}

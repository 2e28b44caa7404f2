//! Messages and close reasons rendered for humans.

use sockeye::proto::Closed;
use sockeye::{CloseCode, Message};

/// Text cut in the middle when longer than `max` characters.
pub(crate) fn elide(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let keep = max / 2;
    let head: String = text.chars().take(keep).collect();
    let tail: String = text.chars().skip(count - keep).collect();
    format!("{head}...({} more)...{tail}", count - 2 * keep)
}

/// A received text message as a line, indented when it is JSON and `pretty` is set.
pub(crate) fn text_line(text: &str, pretty: bool) -> String {
    if pretty
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(text)
        && let Ok(indented) = serde_json::to_string_pretty(&value)
    {
        return indented;
    }
    text.to_owned()
}

/// The first `max` bytes of `data` in hexadecimal, `...` when there are more.
pub(crate) fn hex_preview(data: &[u8], max: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(max.min(data.len()) * 3 + 3);
    for (i, byte) in data.iter().take(max).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{byte:02x}");
    }
    if data.len() > max {
        out.push_str(" ...");
    }
    out
}

/// A control message as a note for stderr, if worth showing.
pub(crate) fn control_note(message: &Message) -> Option<String> {
    match message {
        Message::Ping(data) => Some(format!("< ping ({} bytes)", data.len())),
        Message::Pong(data) => Some(format!("< pong ({} bytes)", data.len())),
        _ => None,
    }
}

/// "1000 (NORMAL) bye", or "no status code".
pub(crate) fn close_line(closed: &Closed) -> String {
    match &closed.remote {
        Some(frame) => {
            let name = frame
                .code
                .name()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            if frame.reason.is_empty() {
                format!("{}{name}", frame.code)
            } else {
                format!("{}{name} {}", frame.code, elide(&frame.reason, 120))
            }
        }
        None => "no status code".to_owned(),
    }
}

/// Whether a close code counts as a normal end for the exit code.
pub(crate) fn is_normal(code: CloseCode) -> bool {
    matches!(
        code,
        CloseCode::NORMAL | CloseCode::GOING_AWAY | CloseCode::NO_STATUS_RECEIVED
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elides_long_text() {
        assert_eq!(elide("short", 10), "short");
        assert_eq!(elide("abcdefghijklmnop", 6), "abc...(10 more)...nop");
    }

    #[test]
    fn hex_previews() {
        assert_eq!(hex_preview(&[0, 0xab, 16], 8), "00 ab 10");
        assert_eq!(hex_preview(&[1, 2, 3], 2), "01 02 ...");
        assert_eq!(hex_preview(&[], 2), "");
    }

    #[test]
    fn pretty_json() {
        assert_eq!(text_line("{\"a\":1}", true), "{\n  \"a\": 1\n}");
        assert_eq!(text_line("not json", true), "not json");
        assert_eq!(text_line("{\"a\":1}", false), "{\"a\":1}");
    }
}

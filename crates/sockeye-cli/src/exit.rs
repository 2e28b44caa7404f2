//! Exit codes that mean something, and one-line error messages that say what to do.

use sockeye::Kind;

/// Success, or a normal close (1000 or 1001).
pub(crate) const OK: u8 = 0;
/// Any other error.
pub(crate) const ERROR: u8 = 1;
/// Bad usage or a bad URL.
pub(crate) const USAGE: u8 = 2;
/// The connection could not be made: DNS, refused, unreachable, timed out.
pub(crate) const CONNECT: u8 = 3;
/// The server refused the handshake with an HTTP status.
pub(crate) const REFUSED: u8 = 4;
/// The connection closed abnormally.
pub(crate) const ABNORMAL: u8 = 5;

/// The exit code for an error that ended a command.
pub(crate) fn code_for(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<crate::cmd::Usage>().is_some() {
        return USAGE;
    }
    let Some(ws) = error.downcast_ref::<sockeye::Error>() else {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return io_code(io);
        }
        return ERROR;
    };
    match ws.kind() {
        Kind::Url(_) | Kind::Unsupported(_) | Kind::HandshakeMisuse(_) => USAGE,
        Kind::Io(io) => io_code(io),
        Kind::Timeout(_) => CONNECT,
        Kind::Refused { .. } | Kind::Handshake(_) | Kind::Negotiation(_) => REFUSED,
        Kind::Closed { .. } => ABNORMAL,
        _ => ERROR,
    }
}

fn io_code(io: &std::io::Error) -> u8 {
    use std::io::ErrorKind as K;
    match io.kind() {
        K::ConnectionRefused
        | K::NotFound
        | K::TimedOut
        | K::AddrNotAvailable
        | K::HostUnreachable
        | K::NetworkUnreachable => CONNECT,
        // Name resolution failures come back as "other" errors with a telling message.
        K::Other if io.to_string().contains("lookup") || io.to_string().contains("resolve") => {
            CONNECT
        }
        K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => ABNORMAL,
        _ => ERROR,
    }
}

/// One line: what happened and, where it helps, what to do.
pub(crate) fn describe(error: &anyhow::Error) -> String {
    let Some(ws) = error.downcast_ref::<sockeye::Error>() else {
        return format!("{error:#}");
    };
    match ws.kind() {
        Kind::Url(_) => {
            format!("{ws}: use ws://HOST[:PORT]/PATH (wss:// needs TLS, not in this build yet)")
        }
        Kind::Refused { status, body, .. } => {
            let body = String::from_utf8_lossy(body);
            let body = body.trim();
            if body.is_empty() {
                format!("the server refused the WebSocket upgrade with HTTP {status}")
            } else {
                format!(
                    "the server refused the WebSocket upgrade with HTTP {status}: {}",
                    crate::display::elide(body, 200)
                )
            }
        }
        Kind::Io(io) if io_code(io) == CONNECT => {
            format!("cannot connect: {io} (is the server running, and is the address right?)")
        }
        _ => format!("{error:#}"),
    }
}

//! Exit codes that mean something, and one-line error messages that say what to do.

use http::StatusCode;
use sockeye::rustls::AlertDescription;
use sockeye::{Kind, ProxyError, TlsFailure};

/// Success, or a normal close (1000 or 1001).
pub(crate) const OK: u8 = 0;
/// Any other error.
pub(crate) const ERROR: u8 = 1;
/// Bad usage or a bad URL.
pub(crate) const USAGE: u8 = 2;
/// The connection could not be made: DNS, refused, unreachable, timed out, TLS, proxy.
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
    if let Some(redis) = error.downcast_ref::<sockeye_relay::RedisError>() {
        return match redis {
            sockeye_relay::RedisError::Unreachable { .. } => CONNECT,
            _ => USAGE,
        };
    }
    let Some(ws) = error.downcast_ref::<sockeye::Error>() else {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return io_code(io);
        }
        return ERROR;
    };
    // `--http2` against a server that does not take it: the connection could not be made as
    // asked.
    if sockeye::http2::is_http2_unavailable(ws) {
        return CONNECT;
    }
    match ws.kind() {
        Kind::Url(_) | Kind::HandshakeMisuse(_) | Kind::ProxyUrl(_) | Kind::TlsSetup(_) => USAGE,
        // The connection ended before the handshake did: it was never made (a TLS port
        // spoken to in plain text, a server that dropped the request).
        Kind::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => CONNECT,
        Kind::Io(io) => io_code(io),
        Kind::Timeout(_)
        | Kind::Dns { .. }
        | Kind::ConnectionRefused { .. }
        | Kind::Connect { .. }
        | Kind::Tls(_)
        | Kind::Proxy { .. } => CONNECT,
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
        Kind::Url(_) => format!("{ws}: use ws://HOST[:PORT]/PATH or wss://HOST[:PORT]/PATH"),
        Kind::Dns { host, .. } => format!("cannot resolve {host:?}: check the host name"),
        Kind::ConnectionRefused { addr } => {
            format!("nothing listens at {addr}: is the server running, and is the port right?")
        }
        Kind::Tls(tls) => {
            let hint = match tls.failure() {
                TlsFailure::UnknownIssuer => {
                    " (trust its CA with --cacert FILE, or --native-roots for the system's)"
                }
                TlsFailure::WrongName => " (is the host name in the URL the certificate's?)",
                TlsFailure::BadCertificate => {
                    " (a self-signed certificate? trust that very certificate with --cacert FILE)"
                }
                TlsFailure::Expired | TlsFailure::NotYetValid => {
                    " (check the server's certificate and this machine's clock)"
                }
                TlsFailure::PeerAlert(
                    AlertDescription::CertificateRequired
                    | AlertDescription::BadCertificate
                    | AlertDescription::UnknownCA
                    | AlertDescription::CertificateUnknown,
                ) => " (the server wants a client certificate it trusts: --cert and --key)",
                TlsFailure::NotTls => {
                    " (this port does not serve TLS: use ws:// instead of wss://)"
                }
                _ => "",
            };
            format!("{ws}{hint}")
        }
        Kind::Proxy {
            error: ProxyError::Refused { status, .. },
            proxy,
        } if *status == StatusCode::PROXY_AUTHENTICATION_REQUIRED
            || *status == StatusCode::UNAUTHORIZED =>
        {
            format!(
                "proxy {proxy} refused CONNECT with HTTP {status}: give credentials as --proxy http://USER:PASS@HOST:PORT"
            )
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
        Kind::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("{ws} (if the port serves TLS, use wss:// instead of ws://)")
        }
        Kind::Io(io) if io_code(io) == CONNECT => {
            format!("cannot connect: {io} (is the server running, and is the address right?)")
        }
        _ => format!("{error:#}"),
    }
}

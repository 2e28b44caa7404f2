//! Addresses as people type them: a bare port, `:PORT`, `HOST:PORT`, and URLs without a scheme.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use sockeye::proto::handshake::WsUri;

/// A WebSocket URL from what was typed: a `ws://` or `wss://` URL as it is; without a scheme,
/// `wss://` for port 443 and `ws://` otherwise (`example.com:443/x`, `127.0.0.1:9001`,
/// `localhost/chat`). Anything else with a scheme (`http://`) is left for the URL parser to
/// refuse with its own message.
pub(crate) fn ws_url(text: &str) -> String {
    let text = text.trim();
    if text.contains("://") {
        return text.to_owned();
    }
    let authority = text.split(['/', '?']).next().unwrap_or(text);
    let port = authority
        .rsplit_once(':')
        .filter(|(host, _)| !host.ends_with(':') || host.starts_with('['))
        .and_then(|(_, port)| port.parse::<u16>().ok());
    let scheme = if port == Some(443) { "wss" } else { "ws" };
    format!("{scheme}://{text}")
}

/// Checks a WebSocket URL before anything runs, so that a typo is exit code 2 at once rather
/// than a failure on the first connection.
pub(crate) fn check_ws_url(url: &str) -> Result<(), String> {
    url.parse::<WsUri>()
        .map(|_| ())
        .map_err(|e| format!("{url:?} is not a WebSocket URL ({e}): use ws://HOST[:PORT]/PATH or wss://HOST[:PORT]/PATH"))
}

/// An address to listen on: `PORT` (loopback, 127.0.0.1), `:PORT` (every interface),
/// `HOST:PORT` (a name is resolved, its first address taken) or `[IPV6]:PORT`.
pub(crate) fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Some(port) = text.strip_prefix(':') {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{text:?}: the port must be a number from 0 to 65535"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "{text:?}: use PORT, :PORT (every interface), HOST:PORT or [IPV6]:PORT"
        ));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "{text:?}: the port must be a number from 0 to 65535"
        ));
    }
    (host, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .map(|addr| SocketAddr::new(addr.ip(), port.parse().unwrap_or_default()))
        .ok_or_else(|| format!("{text:?}: cannot resolve {host:?}"))
}

/// A TCP address to connect to, `HOST:PORT`, checked for its shape (the name is resolved at
/// each connection).
pub(crate) fn check_host_port(text: &str) -> Result<(), String> {
    let hint = "use HOST:PORT (or unix:PATH)";
    if text.contains("://") {
        return Err(format!("{text:?} is a URL: {hint}"));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("{text:?} has no port: {hint}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_a_scheme() {
        assert_eq!(ws_url("127.0.0.1:9001"), "ws://127.0.0.1:9001");
        assert_eq!(ws_url("localhost/chat"), "ws://localhost/chat");
        assert_eq!(ws_url("example.com:443/x?y"), "wss://example.com:443/x?y");
        assert_eq!(ws_url("[::1]:443"), "wss://[::1]:443");
        assert_eq!(ws_url("[::1]:80"), "ws://[::1]:80");
        assert_eq!(ws_url("wss://a.example/"), "wss://a.example/");
        assert_eq!(ws_url("http://a.example/"), "http://a.example/");
        assert!(check_ws_url(&ws_url("localhost:9001")).is_ok());
        assert!(check_ws_url("http://a.example/").is_err());
        assert!(check_ws_url(&ws_url("")).is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(listen_addr("9012"), Ok("127.0.0.1:9012".parse().unwrap()));
        assert_eq!(listen_addr(":9012"), Ok("0.0.0.0:9012".parse().unwrap()));
        assert_eq!(
            listen_addr("127.0.0.1:9012"),
            Ok("127.0.0.1:9012".parse().unwrap())
        );
        assert_eq!(listen_addr("[::1]:9012"), Ok("[::1]:9012".parse().unwrap()));
        assert_eq!(
            listen_addr("localhost:9012").map(|a| (a.ip().is_loopback(), a.port())),
            Ok((true, 9012))
        );
        assert!(listen_addr("localhost").is_err());
        assert!(listen_addr(":99999").is_err());
        assert!(listen_addr("host:x").is_err());
    }

    #[test]
    fn host_and_port_targets() {
        assert!(check_host_port("127.0.0.1:7007").is_ok());
        assert!(check_host_port("db.internal:5432").is_ok());
        assert!(check_host_port("127.0.0.1").is_err());
        assert!(check_host_port("ws://127.0.0.1:7007").is_err());
        assert!(check_host_port(":7007").is_err());
    }
}

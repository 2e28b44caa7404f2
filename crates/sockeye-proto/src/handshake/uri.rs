//! `ws` and `wss` URIs (RFC 6455 section 3).

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// A parsed `ws://` or `wss://` URI: what a client needs to connect and to write its request.
///
/// ```text
/// ws-URI  = "ws:"  "//" host [ ":" port ] path [ "?" query ]
/// wss-URI = "wss:" "//" host [ ":" port ] path [ "?" query ]
/// ```
///
/// The scheme and host are stored in lower case. The path defaults to `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WsUri {
    secure: bool,
    host: String,
    ipv6: bool,
    port: u16,
    path_and_query: String,
}

impl WsUri {
    /// Whether the scheme is `wss` (TLS).
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// `"ws"` or `"wss"`.
    pub fn scheme(&self) -> &'static str {
        if self.secure { "wss" } else { "ws" }
    }

    /// The host: a registered name, an IPv4 address, or an IPv6 address without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, explicit or the scheme's default (80 for `ws`, 443 for `wss`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path and query for the request line, e.g. `/chat?room=1`; always starts with `/`.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// The `Host` header value: the host (bracketed if IPv6), with `:port` only when the port is
    /// not the scheme's default.
    pub fn host_header(&self) -> String {
        let mut out = if self.ipv6 {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port != self.default_port() {
            out.push(':');
            out.push_str(&self.port.to_string());
        }
        out
    }

    fn default_port(&self) -> u16 {
        // Section 3: port 80 for ws, 443 for wss when none is given.
        if self.secure { 443 } else { 80 }
    }
}

impl FromStr for WsUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, UriError> {
        let (scheme, rest) = s.split_once("://").ok_or(UriError::MissingScheme)?;
        // Section 3: the scheme is ws or wss; RFC 3986 makes schemes case-insensitive.
        let secure = if scheme.eq_ignore_ascii_case("ws") {
            false
        } else if scheme.eq_ignore_ascii_case("wss") {
            true
        } else {
            return Err(UriError::UnsupportedScheme);
        };
        // Section 3: fragment identifiers have no meaning for WebSocket URIs and must not appear.
        if rest.contains('#') {
            return Err(UriError::FragmentNotAllowed);
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest
            .split_at_checked(authority_end)
            .ok_or(UriError::MissingHost)?;
        // The section 3 grammar has host and port only, no userinfo.
        if authority.contains('@') {
            return Err(UriError::UserinfoNotAllowed);
        }
        let (host, ipv6, port) = split_authority(authority)?;
        let default_port = if secure { 443 } else { 80 };
        let port = match port {
            // RFC 3986 section 3.2.3: an empty port is the same as none.
            None | Some("") => default_port,
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(UriError::InvalidPort),
                Ok(port) => port,
            },
            Some(_) => return Err(UriError::InvalidPort),
        };
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        if !path.bytes().all(|b| is_pchar(b) || b == b'/') || !pct_encoding_ok(path) {
            return Err(UriError::InvalidPath);
        }
        if let Some(q) = query
            && (!q.bytes().all(|b| is_pchar(b) || b == b'/' || b == b'?') || !pct_encoding_ok(q))
        {
            return Err(UriError::InvalidQuery);
        }
        let mut pq = String::with_capacity(path_and_query.len().saturating_add(1));
        if path.is_empty() {
            pq.push('/');
        }
        pq.push_str(path_and_query);
        Ok(Self {
            secure,
            host: host.to_ascii_lowercase(),
            ipv6,
            port,
            path_and_query: pq,
        })
    }
}

impl fmt::Display for WsUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme(),
            self.host_header(),
            self.path_and_query
        )
    }
}

/// A string that is not a valid `ws` or `wss` URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// No `scheme://` prefix.
    #[error("missing scheme")]
    MissingScheme,
    /// A scheme other than `ws` or `wss`.
    #[error("scheme is not ws or wss")]
    UnsupportedScheme,
    /// No host after `//`.
    #[error("missing host")]
    MissingHost,
    /// A host that is not a registered name, an IPv4 address or a bracketed IPv6 address.
    #[error("invalid host")]
    InvalidHost,
    /// A port that is not a number from 1 to 65535.
    #[error("invalid port")]
    InvalidPort,
    /// A `user@` part, which WebSocket URIs do not have.
    #[error("userinfo is not allowed in a WebSocket URI")]
    UserinfoNotAllowed,
    /// A `#fragment`, which WebSocket URIs must not have.
    #[error("fragment is not allowed in a WebSocket URI")]
    FragmentNotAllowed,
    /// A path with characters that must be percent-encoded.
    #[error("invalid path")]
    InvalidPath,
    /// A query with characters that must be percent-encoded.
    #[error("invalid query")]
    InvalidQuery,
}

/// Splits `host[:port]` or `[v6]:port`.
fn split_authority(authority: &str) -> Result<(&str, bool, Option<&str>), UriError> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or(UriError::InvalidHost)?;
        // IPvFuture and zone identifiers are not supported.
        inner
            .parse::<Ipv6Addr>()
            .map_err(|_| UriError::InvalidHost)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(UriError::InvalidHost)?),
        };
        return Ok((inner, true, port));
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err(UriError::MissingHost);
    }
    // RFC 3986 reg-name (which also covers IPv4 literals).
    if !host
        .bytes()
        .all(|b| is_unreserved(b) || is_sub_delim(b) || b == b'%')
        || !pct_encoding_ok(host)
    {
        return Err(UriError::InvalidHost);
    }
    Ok((host, false, port))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// RFC 3986 `pchar`, with `%` standing for a percent-encoding checked by [`pct_encoding_ok`].
fn is_pchar(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b) || matches!(b, b':' | b'@' | b'%')
}

/// Every `%` is followed by two hex digits.
fn pct_encoding_ok(s: &str) -> bool {
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = |d: Option<u8>| d.is_some_and(|d| d.is_ascii_hexdigit());
            if !hex(bytes.next()) || !hex(bytes.next()) {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_3_valid_uris() {
        // (input, secure, host, port, path_and_query, host_header)
        let cases = [
            (
                "ws://example.com",
                false,
                "example.com",
                80,
                "/",
                "example.com",
            ),
            (
                "wss://example.com:8443/a/b?x=1",
                true,
                "example.com",
                8443,
                "/a/b?x=1",
                "example.com:8443",
            ),
            ("ws://[::1]:9001/", false, "::1", 9001, "/", "[::1]:9001"),
            ("wss://[::1]", true, "::1", 443, "/", "[::1]"),
            (
                "WS://Example.com/",
                false,
                "example.com",
                80,
                "/",
                "example.com",
            ),
            (
                "ws://example.com:80/",
                false,
                "example.com",
                80,
                "/",
                "example.com",
            ),
            (
                "wss://example.com:80/",
                true,
                "example.com",
                80,
                "/",
                "example.com:80",
            ),
            (
                "ws://example.com:/",
                false,
                "example.com",
                80,
                "/",
                "example.com",
            ),
            (
                "ws://127.0.0.1:9001?x=1",
                false,
                "127.0.0.1",
                9001,
                "/?x=1",
                "127.0.0.1:9001",
            ),
            (
                "ws://h/a%20b?q=a/b?c",
                false,
                "h",
                80,
                "/a%20b?q=a/b?c",
                "h",
            ),
        ];
        for (input, secure, host, port, pq, host_header) in cases {
            let uri: WsUri = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(uri.is_secure(), secure, "{input}");
            assert_eq!(uri.host(), host, "{input}");
            assert_eq!(uri.port(), port, "{input}");
            assert_eq!(uri.path_and_query(), pq, "{input}");
            assert_eq!(uri.host_header(), host_header, "{input}");
            // Display reparses to the same URI.
            assert_eq!(uri.to_string().parse::<WsUri>(), Ok(uri.clone()), "{input}");
        }
    }

    #[test]
    fn rfc6455_3_invalid_uris() {
        use UriError::*;
        let cases = [
            ("ws://example.com/#frag", FragmentNotAllowed),
            ("ws://example.com#", FragmentNotAllowed),
            ("http://example.com/", UnsupportedScheme),
            ("https://example.com/", UnsupportedScheme),
            ("example.com/chat", MissingScheme),
            ("ws:example.com", MissingScheme),
            ("ws://", MissingHost),
            ("ws:///chat", MissingHost),
            ("ws://:80/", MissingHost),
            ("ws://user@example.com/", UserinfoNotAllowed),
            ("ws://user:pw@example.com/", UserinfoNotAllowed),
            ("ws://example.com:65536/", InvalidPort),
            ("ws://example.com:0/", InvalidPort),
            ("ws://example.com:8o/", InvalidPort),
            ("ws://example.com:+80/", InvalidPort),
            ("ws://example.com:80:80/", InvalidPort),
            ("ws://[::1/", InvalidHost),
            ("ws://[example.com]/", InvalidHost),
            ("ws://[::1]x/", InvalidHost),
            ("ws://exa mple.com/", InvalidHost),
            ("ws://ex%zzample.com/", InvalidHost),
            ("ws://example.com/a b", InvalidPath),
            ("ws://example.com/\u{e9}", InvalidPath),
            ("ws://example.com/a%2", InvalidPath),
            ("ws://example.com/?a b", InvalidQuery),
            ("ws://example.com/?a\r\nb", InvalidQuery),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<WsUri>(), Err(want), "{input}");
        }
    }
}

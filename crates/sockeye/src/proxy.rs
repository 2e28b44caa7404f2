//! Client proxies: HTTP CONNECT (with basic auth) and SOCKS5 (with username and password),
//! chosen by hand or from `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY`/`NO_PROXY`.

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use base64::Engine as _;
use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::net::{self, ConnectError};

/// The largest CONNECT response head we read from an HTTP proxy.
const MAX_CONNECT_RESPONSE: usize = 16 * 1024;
/// The most headers we parse in a CONNECT response.
const MAX_CONNECT_HEADERS: usize = 64;

/// A proxy to reach WebSocket servers through.
///
/// Parsed from a URL: `http://[user:password@]host[:port]` for HTTP CONNECT (port 80 by
/// default), `socks5h://[user:password@]host[:port]` for SOCKS5 with the proxy resolving the
/// server's name, `socks5://…` for SOCKS5 with the name resolved here (port 1080 by default).
/// User and password may be percent-encoded.
///
/// ```
/// let proxy: sockeye::Proxy = "http://alice:s3cret@proxy.internal:3128".parse().unwrap();
/// assert_eq!(proxy.to_string(), "http://proxy.internal:3128");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    protocol: ProxyProtocol,
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

/// The protocol spoken to a [`Proxy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyProtocol {
    /// HTTP `CONNECT` (RFC 9110 section 9.3.6).
    Http,
    /// SOCKS5 (RFC 1928), the server's name resolved by the proxy (`socks5h://`).
    Socks5RemoteDns,
    /// SOCKS5 (RFC 1928), the server's name resolved by the client (`socks5://`).
    Socks5,
}

/// A proxy URL that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyUrlError {
    /// The scheme is not `http`, `socks5` or `socks5h`.
    #[error("unsupported proxy scheme {0:?} (use http://, socks5:// or socks5h://)")]
    Scheme(String),
    /// No host, or a malformed one.
    #[error("proxy URL has no valid host")]
    Host,
    /// The port is not a number from 1 to 65535.
    #[error("proxy URL has an invalid port")]
    Port,
}

impl Proxy {
    /// An HTTP CONNECT proxy.
    pub fn http(host: impl Into<String>, port: u16) -> Self {
        Self {
            protocol: ProxyProtocol::Http,
            host: host.into(),
            port,
            credentials: None,
        }
    }

    /// A SOCKS5 proxy that resolves server names itself.
    pub fn socks5(host: impl Into<String>, port: u16) -> Self {
        Self {
            protocol: ProxyProtocol::Socks5RemoteDns,
            host: host.into(),
            port,
            credentials: None,
        }
    }

    /// Authenticates to the proxy: HTTP basic auth, or SOCKS5 username and password (RFC 1929).
    #[must_use]
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// The protocol spoken to the proxy.
    pub fn protocol(&self) -> ProxyProtocol {
        self.protocol
    }

    /// The proxy's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The proxy the environment names for a server at `host:port`, `secure` for `wss://`:
    /// `https_proxy` (then `HTTPS_PROXY`) for `wss://`, `http_proxy` (then `HTTP_PROXY`) for
    /// `ws://`, else `all_proxy`/`ALL_PROXY`; none when `no_proxy`/`NO_PROXY` matches the host.
    /// A value without a scheme is an HTTP proxy. When `REQUEST_METHOD` is set (a CGI program,
    /// where a request's `Proxy:` header becomes `HTTP_PROXY`), only `http_proxy` is read.
    ///
    /// # Errors
    /// The variable's value is not a proxy URL.
    pub fn from_env(secure: bool, host: &str, port: u16) -> Result<Option<Self>, ProxyUrlError> {
        Self::from_vars(secure, host, port, |name| std::env::var(name).ok())
    }

    pub(crate) fn from_vars(
        secure: bool,
        host: &str,
        port: u16,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ProxyUrlError> {
        let first = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| var(name).filter(|v| !v.trim().is_empty()))
        };
        if let Some(no_proxy) = first(&["no_proxy", "NO_PROXY"])
            && no_proxy_matches(&no_proxy, host, port)
        {
            return Ok(None);
        }
        // Under CGI a request's `Proxy:` header arrives as HTTP_PROXY ("httpoxy"): only the
        // lower-case name is believed there.
        let cgi = var("REQUEST_METHOD").is_some();
        let scheme_var: &[&str] = match (secure, cgi) {
            (true, _) => &["https_proxy", "HTTPS_PROXY"],
            (false, false) => &["http_proxy", "HTTP_PROXY"],
            (false, true) => &["http_proxy"],
        };
        let Some(value) = first(scheme_var).or_else(|| first(&["all_proxy", "ALL_PROXY"])) else {
            return Ok(None);
        };
        let value = value.trim();
        if value.contains("://") {
            value.parse().map(Some)
        } else {
            format!("http://{value}").parse().map(Some)
        }
    }

    /// Opens a TCP connection through the proxy to `host:port`. With `socks5://` the name is
    /// resolved here and each address tried in turn, as a direct connection would.
    pub(crate) async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, ProxyError> {
        let targets: Vec<Target<'_>> = if let Ok(ip) = host.parse::<IpAddr>() {
            vec![Target::Addr(SocketAddr::new(ip, port))]
        } else if self.protocol == ProxyProtocol::Socks5 {
            net::resolve(host, port)
                .await
                .map_err(ProxyError::Resolve)?
                .into_iter()
                .map(Target::Addr)
                .collect()
        } else {
            vec![Target::Name(host, port)]
        };
        let mut last = None;
        for target in targets {
            let tcp = net::connect(&self.host, self.port, None)
                .await
                .map_err(ProxyError::Unreachable)?;
            let result = match self.protocol {
                ProxyProtocol::Http => self.http_connect(tcp, &target).await,
                ProxyProtocol::Socks5 | ProxyProtocol::Socks5RemoteDns => {
                    self.socks5_connect(tcp, &target).await
                }
            };
            match result {
                Ok(tcp) => return Ok(tcp),
                // The proxy could not reach this address: try the next, as a direct
                // connection would.
                Err(e @ ProxyError::SocksRefused(_)) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ProxyError::Malformed("no address to connect to")))
    }

    async fn http_connect(
        &self,
        mut tcp: TcpStream,
        target: &Target<'_>,
    ) -> Result<TcpStream, ProxyError> {
        let authority = match target {
            Target::Addr(addr) => addr.to_string(),
            Target::Name(host, port) => format!("{host}:{port}"),
        };
        let mut request =
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
        if let Some((user, password)) = &self.credentials {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request.extend_from_slice(format!("Proxy-Authorization: Basic {token}\r\n").as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        tcp.write_all(&request).await.map_err(ProxyError::Io)?;

        let mut buf = BytesMut::with_capacity(1024);
        let mut answer = ConnectAnswer::default();
        loop {
            if tcp.read_buf(&mut buf).await.map_err(ProxyError::Io)? == 0 {
                return Err(ProxyError::Malformed(
                    "the proxy closed the connection before answering CONNECT",
                ));
            }
            if answer.parse(&mut buf)? {
                return Ok(tcp);
            }
        }
    }

    async fn socks5_connect(
        &self,
        tcp: TcpStream,
        target: &Target<'_>,
    ) -> Result<TcpStream, ProxyError> {
        use tokio_socks::tcp::Socks5Stream;
        use tokio_socks::{Error as E, TargetAddr};

        let target = match target {
            Target::Addr(addr) => TargetAddr::Ip(*addr),
            Target::Name(host, port) => TargetAddr::Domain((*host).into(), *port),
        };
        let result = match &self.credentials {
            Some((user, password)) => {
                Socks5Stream::connect_with_password_and_socket(tcp, target, user, password).await
            }
            None => Socks5Stream::connect_with_socket(tcp, target).await,
        };
        let e = match result {
            Ok(stream) => return Ok(stream.into_inner()),
            Err(e) => e,
        };
        let reply = match e {
            E::Io(e) => return Err(ProxyError::Io(e)),
            E::PasswordAuthFailure(_) | E::NoAcceptableAuthMethods | E::AuthorizationRequired => {
                return Err(ProxyError::AuthRejected(e.to_string()));
            }
            // Checks tokio-socks makes before sending: the proxy is not to blame.
            E::InvalidAuthValues(why) | E::InvalidTargetAddress(why) => {
                return Err(ProxyError::Invalid(why));
            }
            E::GeneralSocksServerFailure => SocksReply::GeneralFailure,
            E::ConnectionNotAllowedByRuleset => SocksReply::NotAllowed,
            E::NetworkUnreachable => SocksReply::NetworkUnreachable,
            E::HostUnreachable => SocksReply::HostUnreachable,
            E::ConnectionRefused => SocksReply::ConnectionRefused,
            E::TtlExpired => SocksReply::TtlExpired,
            E::CommandNotSupported => SocksReply::CommandNotSupported,
            E::AddressTypeNotSupported => SocksReply::AddressTypeNotSupported,
            E::UnknownError => SocksReply::Other,
            _ => {
                return Err(ProxyError::Malformed(
                    "the SOCKS5 proxy's answer is malformed",
                ));
            }
        };
        Err(ProxyError::SocksRefused(reply))
    }
}

/// Reads an HTTP proxy's answer to CONNECT as it arrives, bounded in size (interim answers
/// included) and in header count.
#[derive(Debug, Default)]
struct ConnectAnswer {
    /// Bytes of interim (1xx) answers already consumed.
    interim: usize,
}

impl ConnectAnswer {
    /// `Ok(true)` once a 2xx answer is complete (the tunnel is open), `Ok(false)` when more
    /// bytes are needed.
    fn parse(&mut self, buf: &mut BytesMut) -> Result<bool, ProxyError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_CONNECT_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            let head_len = match response.parse(buf) {
                Ok(httparse::Status::Complete(head_len)) => head_len,
                Ok(httparse::Status::Partial) => {
                    if self.interim.saturating_add(buf.len()) >= MAX_CONNECT_RESPONSE {
                        return Err(ProxyError::Malformed(
                            "the proxy's CONNECT answer is too large",
                        ));
                    }
                    return Ok(false);
                }
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(ProxyError::Malformed(
                        "the proxy's CONNECT answer has too many headers",
                    ));
                }
                Err(_) => {
                    return Err(ProxyError::Malformed(
                        "the proxy's CONNECT answer is not HTTP",
                    ));
                }
            };
            let status = response
                .code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or(ProxyError::Malformed("invalid status"))?;
            // RFC 9110 section 15.2: interim answers come before the final one.
            if status.is_informational() {
                self.interim = self.interim.saturating_add(head_len);
                if self.interim >= MAX_CONNECT_RESPONSE {
                    return Err(ProxyError::Malformed(
                        "the proxy's CONNECT answer is too large",
                    ));
                }
                let _ = buf.split_to(head_len);
                continue;
            }
            if !status.is_success() {
                let mut map = HeaderMap::new();
                for h in response.headers.iter() {
                    if let (Ok(name), Ok(value)) = (
                        HeaderName::from_bytes(h.name.as_bytes()),
                        HeaderValue::from_bytes(h.value),
                    ) {
                        map.append(name, value);
                    }
                }
                return Err(ProxyError::Refused {
                    status,
                    headers: map,
                });
            }
            // The server speaks only after we do, so nothing may follow the head yet.
            if buf.len() > head_len {
                return Err(ProxyError::Malformed(
                    "the proxy sent data after its CONNECT answer",
                ));
            }
            return Ok(true);
        }
    }
}

/// What to ask the proxy to connect to.
enum Target<'a> {
    Addr(SocketAddr),
    Name(&'a str, u16),
}

/// A SOCKS5 proxy's reason for not connecting (RFC 1928 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocksReply {
    /// General SOCKS server failure (1).
    GeneralFailure,
    /// Connection not allowed by ruleset (2).
    NotAllowed,
    /// Network unreachable (3).
    NetworkUnreachable,
    /// Host unreachable (4).
    HostUnreachable,
    /// Connection refused (5).
    ConnectionRefused,
    /// TTL expired (6).
    TtlExpired,
    /// Command not supported (7).
    CommandNotSupported,
    /// Address type not supported (8).
    AddressTypeNotSupported,
    /// Another code.
    Other,
}

/// Why a proxy did not open the tunnel.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProxyError {
    /// The proxy itself could not be reached.
    Unreachable(ConnectError),
    /// The server's name could not be resolved (`socks5://` resolves it here, not at the
    /// proxy). The crate's [`Error`](crate::Error) reports it as
    /// [`Kind::Dns`](crate::Kind::Dns), as for a direct connection.
    Resolve(ConnectError),
    /// The connection to the proxy failed while it was opening the tunnel.
    Io(std::io::Error),
    /// The HTTP proxy answered `CONNECT` with this status (407 for missing or wrong credentials,
    /// 403 for a destination it does not allow...).
    Refused {
        /// The status.
        status: StatusCode,
        /// The response's headers (`Proxy-Authenticate`, say).
        headers: HeaderMap,
    },
    /// The SOCKS5 proxy refused our credentials or every authentication method we offered.
    AuthRejected(String),
    /// The SOCKS5 proxy could not or would not connect to the server (every address, for
    /// `socks5://`).
    SocksRefused(SocksReply),
    /// What we would send the proxy is invalid (a SOCKS5 user name, password or host name
    /// over 255 bytes, an empty password).
    Invalid(&'static str),
    /// The proxy did not speak its protocol.
    Malformed(&'static str),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "cannot reach the proxy: {e}"),
            Self::Resolve(e) => fmt::Display::fmt(e, f),
            Self::Io(e) => write!(f, "the connection to the proxy failed: {e}"),
            Self::Invalid(why) => write!(f, "cannot ask the proxy: {why}"),
            Self::Refused { status, .. } => {
                write!(f, "the proxy refused CONNECT with HTTP {status}")
            }
            Self::AuthRejected(why) => write!(f, "the proxy refused authentication: {why}"),
            Self::SocksRefused(reply) => write!(f, "the SOCKS5 proxy answered {reply:?}"),
            Self::Malformed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ProxyError {
    /// What the message does not already say: the text of the cause is part of it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unreachable(e) | Self::Resolve(e) => e.source(),
            Self::Io(e) => e.source(),
            Self::Refused { .. }
            | Self::AuthRejected(_)
            | Self::SocksRefused(_)
            | Self::Invalid(_)
            | Self::Malformed(_) => None,
        }
    }
}

impl FromStr for Proxy {
    type Err = ProxyUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = url.split_once("://").ok_or(ProxyUrlError::Host)?;
        let (protocol, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "http" => (ProxyProtocol::Http, 80),
            "socks5h" => (ProxyProtocol::Socks5RemoteDns, 1080),
            "socks5" => (ProxyProtocol::Socks5, 1080),
            other => return Err(ProxyUrlError::Scheme(other.to_owned())),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (credentials, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (
                    Some((percent_decode(user), percent_decode(password))),
                    hostport,
                )
            }
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(ProxyUrlError::Host)?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| ProxyUrlError::Host)?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        if host.is_empty()
            || host
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')))
        {
            return Err(ProxyUrlError::Host);
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or(ProxyUrlError::Port)?,
            None => default_port,
        };
        Ok(Self {
            protocol,
            host: host.to_ascii_lowercase(),
            port,
            credentials,
        })
    }
}

impl fmt::Display for Proxy {
    /// The URL without the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.protocol {
            ProxyProtocol::Http => "http",
            ProxyProtocol::Socks5RemoteDns => "socks5h",
            ProxyProtocol::Socks5 => "socks5",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for Proxy {
    /// Never shows the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("url", &self.to_string())
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| {
            bytes
                .get(j)
                .and_then(|c| char::from(*c).to_digit(16))
                .and_then(|d| u8::try_from(d).ok())
        };
        if let (b'%', Some(hi), Some(lo)) = (b, hex(i + 1), hex(i + 2)) {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a `NO_PROXY` list exempts `host:port`: `*` exempts every host; `example.com` and
/// `.example.com` exempt that domain and its subdomains; an IP address or CIDR block exempts
/// those addresses; an entry with `:port` applies to that port only.
fn no_proxy_matches(list: &str, host: &str, port: u16) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    list.split([',', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let (name, entry_port) = split_entry_port(entry);
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            if let Some(ip) = host_ip {
                return ip_matches(name, ip);
            }
            let name = name
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.')
                .to_ascii_lowercase();
            !name.is_empty()
                && (host == name
                    || host
                        .strip_suffix(name.as_str())
                        .is_some_and(|rest| rest.ends_with('.')))
        })
}

fn split_entry_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(v6) = entry.strip_prefix('[') {
        if let Some((ip, rest)) = v6.split_once(']') {
            return (ip, rest.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
        return (entry, None);
    }
    // An IPv6 address (with or without a prefix length) has several colons and no port.
    if entry.matches(':').count() == 1
        && let Some((name, port)) = entry.split_once(':')
    {
        return (name, port.parse().ok());
    }
    (entry, None)
}

fn ip_matches(entry: &str, ip: IpAddr) -> bool {
    let (addr, prefix) = match entry.split_once('/') {
        Some((addr, prefix)) => (addr, prefix.parse::<u32>().ok()),
        None => (entry, None),
    };
    let Ok(net) = addr.parse::<IpAddr>() else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let bits = prefix.unwrap_or(32).min(32);
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let bits = prefix.unwrap_or(128).min(128);
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proxy_urls() {
        let p: Proxy = "http://proxy:3128".parse().unwrap();
        assert_eq!(
            (p.protocol(), p.host(), p.port()),
            (ProxyProtocol::Http, "proxy", 3128)
        );
        assert_eq!(p.credentials, None);
        let p: Proxy = "socks5h://u%40x:p%3Aw@127.0.0.1".parse().unwrap();
        assert_eq!(p.protocol(), ProxyProtocol::Socks5RemoteDns);
        assert_eq!(p.port(), 1080);
        assert_eq!(p.credentials, Some(("u@x".into(), "p:w".into())));
        let p: Proxy = "SOCKS5://[::1]:9050/".parse().unwrap();
        assert_eq!(
            (p.protocol(), p.host(), p.port()),
            (ProxyProtocol::Socks5, "::1", 9050)
        );
        assert_eq!(p.to_string(), "socks5://[::1]:9050");
        assert_eq!(
            "https://p:1".parse::<Proxy>(),
            Err(ProxyUrlError::Scheme("https".into()))
        );
        assert_eq!("http://p:0".parse::<Proxy>(), Err(ProxyUrlError::Port));
        assert_eq!("http://p:x".parse::<Proxy>(), Err(ProxyUrlError::Port));
        assert_eq!("http://:80".parse::<Proxy>(), Err(ProxyUrlError::Host));
        assert_eq!("proxy:80".parse::<Proxy>(), Err(ProxyUrlError::Host));
    }

    #[test]
    fn debug_hides_the_password() {
        let p: Proxy = "http://alice:hunter2@proxy:8080".parse().unwrap();
        let shown = format!("{p:?} {p}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
    }

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn environment_picks_the_variable_by_scheme() {
        let env = [
            ("http_proxy", "http://plain:1"),
            ("HTTPS_PROXY", "secure:2"),
            ("ALL_PROXY", "socks5h://all:3"),
        ];
        let plain = Proxy::from_vars(false, "example.com", 80, vars(&env)).unwrap();
        assert_eq!(plain.unwrap().to_string(), "http://plain:1");
        let secure = Proxy::from_vars(true, "example.com", 443, vars(&env)).unwrap();
        assert_eq!(secure.unwrap().to_string(), "http://secure:2");
        let only_all = [("ALL_PROXY", "socks5h://all:3")];
        let p = Proxy::from_vars(true, "example.com", 443, vars(&only_all)).unwrap();
        assert_eq!(p.unwrap().to_string(), "socks5h://all:3");
        assert_eq!(Proxy::from_vars(false, "x", 80, vars(&[])), Ok(None));
        // Lower case wins over upper case.
        let both = [("http_proxy", "lower:1"), ("HTTP_PROXY", "upper:1")];
        let p = Proxy::from_vars(false, "x", 80, vars(&both)).unwrap();
        assert_eq!(p.unwrap().host(), "lower");
        // httpoxy: under CGI, HTTP_PROXY may come from the request.
        let cgi = [("REQUEST_METHOD", "GET"), ("HTTP_PROXY", "evil:1")];
        assert_eq!(Proxy::from_vars(false, "x", 80, vars(&cgi)), Ok(None));
        let cgi = [("REQUEST_METHOD", "GET"), ("http_proxy", "mine:1")];
        let p = Proxy::from_vars(false, "x", 80, vars(&cgi)).unwrap();
        assert_eq!(p.unwrap().host(), "mine");
        let bad = [("http_proxy", "ftp://x:1")];
        assert!(Proxy::from_vars(false, "x", 80, vars(&bad)).is_err());
    }

    #[test]
    fn no_proxy_exempts_hosts() {
        let env = [
            ("http_proxy", "http://p:1"),
            (
                "NO_PROXY",
                "localhost, .internal,example.org:8080,10.0.0.0/8,::1",
            ),
        ];
        let proxied = |host: &str, port| {
            Proxy::from_vars(false, host, port, vars(&env))
                .unwrap()
                .is_some()
        };
        assert!(!proxied("localhost", 80));
        assert!(!proxied("a.b.internal", 80));
        assert!(!proxied("internal", 80));
        assert!(proxied("notinternal", 80));
        assert!(!proxied("example.org", 8080));
        assert!(proxied("example.org", 80));
        assert!(!proxied("10.1.2.3", 80));
        assert!(proxied("11.1.2.3", 80));
        assert!(!proxied("::1", 80));
        assert!(proxied("::2", 80));
        assert!(no_proxy_matches("*", "anything", 1));
        assert!(!no_proxy_matches("", "anything", 1));
        assert!(no_proxy_matches("[::1]:80", "::1", 80));
        assert!(!no_proxy_matches("[::1]:80", "::1", 81));
        assert!(no_proxy_matches("EXAMPLE.com", "www.example.COM", 1));
    }

    /// The outcome of feeding `input` in pieces of `chunk` bytes: `Some(Ok(()))` open,
    /// `Some(Err(text))` refused or malformed, `None` still waiting.
    fn feed(input: &[u8], chunk: usize) -> Option<Result<(), String>> {
        let mut answer = ConnectAnswer::default();
        let mut buf = BytesMut::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            match answer.parse(&mut buf) {
                Ok(true) => return Some(Ok(())),
                Ok(false) => {}
                Err(e) => return Some(Err(e.to_string())),
            }
        }
        None
    }

    #[test]
    fn connect_answers() {
        let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
        for chunk in [1, 3, 1000] {
            assert_eq!(feed(ok, chunk), Some(Ok(())));
        }
        let interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nVia: x\r\n\r\n";
        assert_eq!(feed(interim, 1), Some(Ok(())));
        assert_eq!(feed(interim, 7), Some(Ok(())));
        let refused = feed(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", 5);
        assert!(refused.unwrap().unwrap_err().contains("407"));
        assert_eq!(feed(b"HTTP/1.1 200 OK\r\n", 4), None);
        // Endless interim answers stop at the bound.
        let endless = b"HTTP/1.1 102 Processing\r\n\r\n".repeat(1000);
        let e = feed(&endless, 100).unwrap().unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn any_connect_answer_is_parsed_without_panic_and_alike_in_any_chunking(
            input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            chunk in 1_usize..40,
        ) {
            let whole = feed(&input, input.len().max(1));
            let pieces = feed(&input, chunk);
            // An answer complete in the whole input is the same however it arrived; one cut
            // short may have been judged earlier in pieces only if it was already wrong.
            if let Some(Ok(())) = whole {
                proptest::prop_assert_eq!(pieces, whole);
            }
        }
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%20b%zz%4"), "a b%zz%4");
    }
}

//! Which `Origin` a server accepts (RFC 6455 section 10.2), and how origins compare.

use std::fmt;
use std::sync::Arc;

#[cfg(doc)]
use super::ServerHandshake;
use super::UpgradeRequest;

type CheckOrigin = dyn Fn(&str, &UpgradeRequest) -> bool + Send + Sync;

/// Which `Origin` a server accepts, against cross-site WebSocket hijacking: a page on another
/// site opening a WebSocket to this server with the visitor's cookies (RFC 6455 section 10.2).
/// Browsers always send `Origin`; other clients usually send none. A refused Origin is
/// answered with 403.
///
/// The default is [`same_host`](Self::same_host) with requests without `Origin` allowed.
///
/// Same-host trusts the `Host` header, which a DNS-rebinding page controls as well as its
/// Origin: a server on a private address that must not be reached from any site should also
/// check `Host` against its own names (in [`ServerHandshake::on_request`]). Behind a reverse
/// proxy that rewrites `Host`, use an [`allow`](Self::allow) list.
#[derive(Clone)]
#[must_use]
pub struct OriginPolicy {
    rule: OriginRule,
    allow_missing: bool,
}

#[derive(Clone)]
enum OriginRule {
    Any,
    /// The request's own host, and these origins besides (normalised).
    SameHost(Vec<String>),
    List(Vec<String>),
    Custom(Arc<CheckOrigin>),
}

impl Default for OriginPolicy {
    fn default() -> Self {
        Self::same_host()
    }
}

impl OriginPolicy {
    /// Any Origin: for servers that authenticate every connection without cookies.
    pub fn any() -> Self {
        Self {
            rule: OriginRule::Any,
            allow_missing: true,
        }
    }

    /// An Origin whose host and port are the request's `Host` (the page came from this server),
    /// and whose scheme is `https` when the server is reached over TLS
    /// ([`ServerHandshake::served_over_tls`]) and `http` when it is known not to be.
    pub fn same_host() -> Self {
        Self {
            rule: OriginRule::SameHost(Vec::new()),
            allow_missing: true,
        }
    }

    /// [`same_host`](Self::same_host), and these origins besides (compared as
    /// [`allow`](Self::allow) compares them): for a server whose pages are also served from
    /// elsewhere.
    pub fn same_host_or<I, O>(origins: I) -> Self
    where
        I: IntoIterator<Item = O>,
        O: Into<String>,
    {
        Self {
            rule: OriginRule::SameHost(normalized(origins)),
            allow_missing: true,
        }
    }

    /// Only these origins (`https://app.example`, `http://localhost:3000`). Both sides are
    /// normalised before comparing: ASCII case, a default port spelled out, a trailing `/`.
    pub fn allow<I, O>(origins: I) -> Self
    where
        I: IntoIterator<Item = O>,
        O: Into<String>,
    {
        Self {
            rule: OriginRule::List(normalized(origins)),
            allow_missing: true,
        }
    }

    /// The callback decides, given the Origin and the request.
    pub fn custom<F>(check: F) -> Self
    where
        F: Fn(&str, &UpgradeRequest) -> bool + Send + Sync + 'static,
    {
        Self {
            rule: OriginRule::Custom(Arc::new(check)),
            allow_missing: true,
        }
    }

    /// Whether a request without `Origin` (not from a browser) is allowed; yes by default.
    pub fn allow_missing(mut self, allow: bool) -> Self {
        self.allow_missing = allow;
        self
    }

    /// Whether the policy accepts `request`, not knowing whether it came over TLS.
    pub fn allows(&self, request: &UpgradeRequest) -> bool {
        self.allows_over(request, None)
    }

    /// Whether the policy accepts `request`, which came over TLS if `secure` says so
    /// (`None`: not known).
    pub fn allows_over(&self, request: &UpgradeRequest, secure: Option<bool>) -> bool {
        let Some(origin) = request.origin() else {
            return self.allow_missing;
        };
        // A header that is not text (or the opaque origin "null") matches nothing.
        let Ok(origin) = origin.to_str() else {
            return matches!(self.rule, OriginRule::Any);
        };
        let origin = origin.trim();
        let listed = |list: &[String]| list.contains(&normalized_one(origin));
        match &self.rule {
            OriginRule::Any => true,
            OriginRule::SameHost(also) => {
                request
                    .host()
                    .is_some_and(|host| same_host(origin, host, secure))
                    || (!also.is_empty() && listed(also))
            }
            OriginRule::List(list) => listed(list),
            OriginRule::Custom(check) => check(origin, request),
        }
    }
}

impl fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = match &self.rule {
            OriginRule::Any => "any".to_owned(),
            OriginRule::SameHost(also) if also.is_empty() => "same host".to_owned(),
            OriginRule::SameHost(also) => format!("same host or {also:?}"),
            OriginRule::List(list) => format!("{list:?}"),
            OriginRule::Custom(_) => "custom".to_owned(),
        };
        f.debug_struct("OriginPolicy")
            .field("rule", &rule)
            .field("allow_missing", &self.allow_missing)
            .finish()
    }
}

fn normalized<I, O>(origins: I) -> Vec<String>
where
    I: IntoIterator<Item = O>,
    O: Into<String>,
{
    origins
        .into_iter()
        .map(|o| normalized_one(&o.into()))
        .collect()
}

/// An origin as the lists keep it: normalised when it is an http(s) or ws(s) origin, else
/// lower-cased as it is.
fn normalized_one(origin: &str) -> String {
    normalize_origin(origin).unwrap_or_else(|| origin.to_ascii_lowercase())
}

/// `scheme://host[:port]` in lower case, without a default port or a trailing `/`; `None` for
/// what is not an http(s) or ws(s) origin.
fn normalize_origin(origin: &str) -> Option<String> {
    let (scheme, authority) = origin.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = default_port(&scheme)?;
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = split_host_port(authority);
    let port = match port {
        Some(p) => p.parse::<u16>().ok()?,
        None => default_port,
    };
    let host = host.to_ascii_lowercase();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Some(if port == default_port {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{port}")
    })
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the host and port of `host` (`host[:port]`,
/// the request's Host header), with an `https` scheme when `secure` is known true and `http`
/// when known false.
fn same_host(origin: &str, host: &str, secure: Option<bool>) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let scheme = scheme.to_ascii_lowercase();
    let origin_secure = match scheme.as_str() {
        "http" | "ws" => false,
        "https" | "wss" => true,
        _ => return false,
    };
    if secure.is_some_and(|secure| secure != origin_secure) {
        return false;
    }
    let server_secure = secure.unwrap_or(origin_secure);
    let port_of = |port: Option<&str>, secure: bool| match port {
        Some(p) => p.parse::<u16>().ok(),
        None => Some(if secure { 443 } else { 80 }),
    };
    let (origin_host, origin_port) = split_host_port(authority);
    let (host_host, host_port) = split_host_port(host.trim());
    let origin_port = port_of(origin_port, origin_secure);
    // The Host header leaves out the port when it is the default of the server's scheme.
    let host_port = port_of(host_port, server_secure);
    !origin_host.is_empty()
        && origin_host.eq_ignore_ascii_case(host_host)
        && origin_port.is_some()
        && origin_port == host_port
}

fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.split_once(']') {
            Some((host, rest)) => (host.get(1..).map_or(host, |h| h), rest.strip_prefix(':')),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_host_compares_host_and_port() {
        for secure in [None, Some(false)] {
            assert!(same_host("http://example.com", "example.com", secure));
            assert!(same_host("http://EXAMPLE.com:80", "example.com", secure));
            assert!(same_host("http://127.0.0.1:9001", "127.0.0.1:9001", secure));
            assert!(same_host("http://[::1]:9001", "[::1]:9001", secure));
            assert!(!same_host(
                "http://127.0.0.1:9002",
                "127.0.0.1:9001",
                secure
            ));
            assert!(!same_host("http://evil.example", "example.com", secure));
            assert!(!same_host("http://example.com.evil", "example.com", secure));
            assert!(!same_host("null", "example.com", secure));
            assert!(!same_host("file://", "example.com", secure));
            assert!(!same_host("http://example.com:x", "example.com", secure));
            assert!(!same_host("http://:80", ":80", secure));
        }
        // Not knowing the server's scheme, the Origin's is believed.
        assert!(same_host("https://example.com", "example.com", None));
        // Knowing it, the schemes must agree: a page of the plain-http site may not reach the
        // TLS server (and its secure cookies), nor the other way round.
        assert!(same_host("https://example.com", "example.com", Some(true)));
        assert!(!same_host("http://example.com", "example.com", Some(true)));
        assert!(!same_host(
            "http://example.com:443",
            "example.com",
            Some(true)
        ));
        assert!(!same_host(
            "https://example.com",
            "example.com",
            Some(false)
        ));
        assert!(same_host(
            "https://example.com:8443",
            "example.com:8443",
            Some(true)
        ));
    }

    #[test]
    fn origins_are_normalized() {
        let n = |o| normalize_origin(o);
        assert_eq!(
            n("HTTPS://App.Example:443/").as_deref(),
            Some("https://app.example")
        );
        assert_eq!(
            n("http://a.example:8080").as_deref(),
            Some("http://a.example:8080")
        );
        assert_eq!(n("http://[::1]:80").as_deref(), Some("http://[::1]"));
        assert_eq!(n("null"), None);
        assert_eq!(n("http://u@a.example"), None);
        assert_eq!(n("http://a.example/path"), None);
        assert_eq!(n("ftp://a.example"), None);
    }

    /// A request from `origin` (none if empty) to `host`, as an HTTP server hands it over.
    fn request(origin: &str, host: &str) -> UpgradeRequest {
        let mut request = http::Request::builder()
            .uri("/chat")
            .header("host", host)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13");
        if !origin.is_empty() {
            request = request.header("origin", origin);
        }
        UpgradeRequest::from_request(request.body(()).unwrap()).unwrap()
    }

    #[test]
    fn policies_on_requests() {
        let host = "app.example:8443";
        let same = OriginPolicy::same_host();
        assert!(same.allows(&request("https://app.example:8443", host)));
        assert!(same.allows(&request("", host)));
        assert!(!same.allows(&request("https://other.example", host)));
        assert!(!same.allows_over(&request("http://app.example:8443", host), Some(true)));

        let also = OriginPolicy::same_host_or(["HTTPS://Pages.Example:443/"]);
        assert!(also.allows(&request("https://pages.example", host)));
        assert!(!also.allows(&request("https://evil.example", host)));

        let list = OriginPolicy::allow(["http://localhost:3000"]).allow_missing(false);
        assert!(list.allows(&request("http://LOCALHOST:3000/", host)));
        assert!(!list.allows(&request("http://localhost:3001", host)));
        assert!(!list.allows(&request("", host)));
        assert!(!list.allows(&request("null", host)));

        let any = OriginPolicy::any();
        assert!(any.allows(&request("null", host)));

        let custom = OriginPolicy::custom(|origin, request| {
            origin.ends_with(".trusted") && request.path() == "/chat"
        });
        assert!(custom.allows(&request("https://a.trusted", host)));
        assert!(!custom.allows(&request("https://a.untrusted", host)));
        assert_eq!(
            format!("{also:?}"),
            "OriginPolicy { rule: \"same host or [\\\"https://pages.example\\\"]\", allow_missing: true }"
        );
    }
}

//! The bottom layer: name resolution and TCP connections, async and blocking, with one
//! classification of what can go wrong ([`ConnectError`]). Nothing here knows about WebSocket,
//! TLS or proxies; the layers above build on it.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// Why a TCP connection to a host could not be opened.
///
/// Where several addresses were tried, the error is the last one's. The crate's
/// [`Error`](crate::Error) turns each case into its own [`Kind`](crate::Kind): `Dns`,
/// `ConnectionRefused`, `Connect`, `Timeout(Connect)`.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// The name could not be resolved, or has no addresses.
    Dns {
        /// The name.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// Nothing listens at the address.
    Refused {
        /// The address.
        addr: SocketAddr,
    },
    /// The connection failed for another reason (an unreachable network, say).
    Failed {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// No address answered within the time allowed.
    TimedOut,
}

impl ConnectError {
    /// The one classification of a failed attempt to reach `host`: the last address tried
    /// and its error, or `None` when the name had no addresses.
    fn classify(host: &str, last: Option<(SocketAddr, io::Error)>) -> Self {
        match last {
            Some((addr, e)) => match e.kind() {
                io::ErrorKind::ConnectionRefused => Self::Refused { addr },
                // A connect that ran out of its share of the time (or of the OS's patience).
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Self::TimedOut,
                _ => Self::Failed { addr, source: e },
            },
            None => no_addresses(host),
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns { host, source } => write!(f, "cannot resolve {host:?}: {source}"),
            Self::Refused { addr } => write!(f, "connection refused by {addr}"),
            Self::Failed { addr, source } => write!(f, "cannot connect to {addr}: {source}"),
            Self::TimedOut => f.write_str("connecting timed out"),
        }
    }
}

impl std::error::Error for ConnectError {
    /// What the message does not already say: the text of every cause is part of it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Dns { source, .. } | Self::Failed { source, .. } => source.source(),
            Self::Refused { .. } | Self::TimedOut => None,
        }
    }
}

fn no_addresses(host: &str) -> ConnectError {
    ConnectError::Dns {
        host: host.to_owned(),
        source: io::Error::new(io::ErrorKind::NotFound, "the name has no addresses"),
    }
}

/// Resolves `host:port` with tokio's resolver.
pub(crate) async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| ConnectError::Dns {
            host: host.to_owned(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(no_addresses(host));
    }
    Ok(addrs)
}

/// Opens TCP to `host:port`, trying each address in turn. With a `budget`, every address but
/// the last gets an equal share of it, so that one that never answers (a black-holed IPv6
/// route, say) leaves time for the others; the caller bounds the whole.
pub(crate) async fn connect(
    host: &str,
    port: u16,
    budget: Option<Duration>,
) -> Result<TcpStream, ConnectError> {
    let addrs = resolve(host, port).await?;
    let count = u32::try_from(addrs.len()).unwrap_or(u32::MAX);
    let share = budget.map(|b| b / count.max(1));
    let mut last = None;
    for (i, addr) in addrs.iter().copied().enumerate() {
        let attempt = TcpStream::connect(addr);
        let result = match share {
            Some(share) if i + 1 < addrs.len() => tokio::time::timeout(share, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no answer in this address's share of the time",
                    ))
                }),
            _ => attempt.await,
        };
        match result {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(ConnectError::classify(host, last))
}

/// Resolves (with the system resolver) and connects, each address getting an equal share of
/// the time left before `deadline`.
#[cfg(feature = "blocking")]
pub(crate) fn connect_blocking(
    host: &str,
    port: u16,
    deadline: std::time::Instant,
) -> Result<std::net::TcpStream, ConnectError> {
    use std::net::ToSocketAddrs as _;

    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|source| ConnectError::Dns {
            host: host.to_owned(),
            source,
        })?
        .collect();
    let mut last = None;
    for (i, addr) in addrs.iter().enumerate() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let share = left / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX).max(1);
        if share.is_zero() {
            return Err(ConnectError::TimedOut);
        }
        match std::net::TcpStream::connect_timeout(addr, share) {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some((*addr, e)),
        }
    }
    Err(ConnectError::classify(host, last))
}

/// Sets `tcp`'s read and write timeouts to the time left before `deadline`; a `TimedOut`
/// error when none is left.
#[cfg(feature = "blocking")]
pub(crate) fn until(tcp: &std::net::TcpStream, deadline: std::time::Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    tcp.set_read_timeout(Some(left))?;
    tcp.set_write_timeout(Some(left))
}

/// Whether an I/O error is a timeout: a read or write timeout set on a blocking socket shows
/// as `WouldBlock` on some platforms and `TimedOut` on others.
#[cfg(feature = "blocking")]
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Sets `TCP_NODELAY` when `stream` is a tokio TCP stream.
pub(crate) fn set_nodelay<S: 'static>(stream: &S, on: bool) {
    let any: &dyn std::any::Any = stream;
    if let Some(tcp) = any.downcast_ref::<TcpStream>()
        && let Err(e) = tcp.set_nodelay(on)
    {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_classification_of_the_last_attempt() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(matches!(
            ConnectError::classify("h", Some((addr, refused))),
            ConnectError::Refused { addr: a } if a == addr
        ));
        let timed_out = io::Error::from(io::ErrorKind::TimedOut);
        assert!(matches!(
            ConnectError::classify("h", Some((addr, timed_out))),
            ConnectError::TimedOut
        ));
        let other = io::Error::from(io::ErrorKind::NetworkUnreachable);
        assert!(matches!(
            ConnectError::classify("h", Some((addr, other))),
            ConnectError::Failed { .. }
        ));
        let none = ConnectError::classify("h", None);
        assert_eq!(
            none.to_string(),
            "cannot resolve \"h\": the name has no addresses"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        // Bind, learn the port, close: nothing listens there now.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let e = connect("127.0.0.1", port, None).await.unwrap_err();
        assert!(matches!(e, ConnectError::Refused { .. }), "{e:?}");
    }
}

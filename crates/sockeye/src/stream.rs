//! The transports the client opens itself.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The stream under a connection that [`connect`](crate::connect) opened or
/// [`ServerBuilder::accept_tcp`](crate::ServerBuilder::accept_tcp) accepted: TCP (perhaps
/// through a proxy), perhaps with TLS over it, or (feature `http2`) a stream of an HTTP/2
/// connection (RFC 8441).
#[derive(Debug)]
#[non_exhaustive]
pub enum MaybeTlsStream {
    /// Plain TCP, for `ws://`.
    Plain(TcpStream),
    /// TLS over TCP, client side, for `wss://`.
    #[cfg(feature = "rustls")]
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// TLS over TCP, server side.
    #[cfg(feature = "rustls")]
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A stream of an HTTP/2 connection, client side: what [`connect`](crate::connect) opens
    /// when the server takes WebSocket connections over HTTP/2. The connection itself (its
    /// TCP and TLS) belongs to a task of its own.
    #[cfg(feature = "http2")]
    Http2(Box<crate::http2::Http2Stream>),
}

impl MaybeTlsStream {
    /// The TCP connection underneath (to the proxy, when there is one); `None` for a stream of
    /// an HTTP/2 connection, whose TCP connection its connection's task holds.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Self::Plain(tcp) => Some(tcp),
            #[cfg(feature = "rustls")]
            Self::ClientTls(tls) => Some(tls.get_ref().0),
            #[cfg(feature = "rustls")]
            Self::ServerTls(tls) => Some(tls.get_ref().0),
            #[cfg(feature = "http2")]
            Self::Http2(_) => None,
        }
    }

    /// Whether TLS runs over the connection.
    pub fn is_tls(&self) -> bool {
        match self {
            Self::Plain(_) => false,
            #[cfg(feature = "http2")]
            Self::Http2(stream) => stream.is_tls(),
            #[cfg(feature = "rustls")]
            _ => true,
        }
    }

    /// The application protocol TLS negotiated (ALPN): `http/1.1` or `h2`, or `None` when the
    /// peer offered or chose none, or without TLS.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        #[cfg(feature = "http2")]
        if let Self::Http2(stream) = self {
            return stream.is_tls().then_some(b"h2".as_slice());
        }
        #[cfg(feature = "rustls")]
        return self.tls_state()?.alpn_protocol();
        #[cfg(not(feature = "rustls"))]
        None
    }

    /// The HTTP version that carries the WebSocket: HTTP/2 for a stream of an HTTP/2
    /// connection, HTTP/1.1 otherwise.
    pub fn http_version(&self) -> http::Version {
        match self {
            #[cfg(feature = "http2")]
            Self::Http2(_) => http::Version::HTTP_2,
            _ => http::Version::HTTP_11,
        }
    }

    /// On a server, the host name the client asked for (SNI); clients connecting to an IP
    /// address send none.
    pub fn server_name(&self) -> Option<&str> {
        match self {
            #[cfg(feature = "rustls")]
            Self::ServerTls(tls) => tls.get_ref().1.server_name(),
            _ => None,
        }
    }

    /// The certificate chain the peer presented over TLS (a client certificate, on a server),
    /// leaf first.
    #[cfg(feature = "rustls")]
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.tls_state()?.peer_certificates()
    }

    /// What both TLS sides share (the negotiated protocol, the peer's certificates).
    #[cfg(feature = "rustls")]
    fn tls_state(&self) -> Option<&rustls::CommonState> {
        match self {
            Self::ClientTls(tls) => Some(tls.get_ref().1),
            Self::ServerTls(tls) => Some(tls.get_ref().1),
            _ => None,
        }
    }
}

macro_rules! each {
    ($stream:expr, $s:ident => $body:expr) => {
        match $stream {
            MaybeTlsStream::Plain($s) => $body,
            #[cfg(feature = "rustls")]
            MaybeTlsStream::ClientTls($s) => $body,
            #[cfg(feature = "rustls")]
            MaybeTlsStream::ServerTls($s) => $body,
            #[cfg(feature = "http2")]
            MaybeTlsStream::Http2($s) => $body,
        }
    };
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        each!(self, s => s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}

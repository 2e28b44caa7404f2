//! The sans-I/O core driven by plain blocking `std::net`, with no async runtime: an echo
//! server, one thread per connection. The same loop fits any event loop (`mio`, `epoll`, a
//! game loop): the core only ever takes bytes and the time, and hands back bytes, events and
//! the next deadline.
//!
//! ```text
//! cargo run -p sockeye-proto --example std_net_echo -- [ADDR]    # 127.0.0.1:9001 by default
//! ```
//!
//! `docs/how-to/sans-io.md` walks through it.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sockeye_proto::handshake::{OriginPolicy, RequestParser, ServerHandshake};
use sockeye_proto::{CloseCode, Closed, Event, Progress};

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&addr)?;
    println!("sans-I/O echo server on ws://{}/", listener.local_addr()?);
    // The handshake's policy, built once; clones share it.
    let server = ServerHandshake::new().origin_policy(OriginPolicy::any());
    for stream in listener.incoming() {
        let (stream, server) = (stream?, server.clone());
        std::thread::spawn(move || match serve(&server, stream) {
            Ok(code) => eprintln!("closed: {code:?}"),
            Err(e) => eprintln!("failed: {e}"),
        });
    }
    Ok(())
}

/// Runs one connection: the opening handshake, then echoes until it closes. Returns the close
/// code (`None` when the handshake was refused or the peer left without one).
pub(crate) fn serve(server: &ServerHandshake, mut tcp: TcpStream) -> io::Result<Option<CloseCode>> {
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Vec::new();

    // 1. The opening handshake: feed the request's bytes until the core decides.
    let mut parser = RequestParser::new();
    let accepted = loop {
        if read_some(&mut tcp, &mut buf)? == 0 {
            return Ok(None);
        }
        match server.handle_bytes(&mut parser, &mut buf, Instant::now()) {
            None => {} // the head is not complete: read more
            Some(Ok(accepted)) => break accepted,
            Some(Err(refusal)) => {
                refusal.encode(&mut out); // 400, 403, 426...: write it and close
                tcp.write_all(&out)?;
                return Ok(None);
            }
        }
    };
    accepted.encode(&mut out); // 101 Switching Protocols
    tcp.write_all(&out)?;
    let mut conn = accepted.connection;
    // What followed the request in `buf` is already WebSocket data.

    // 2. The connection: feed bytes, answer events, write what the core queued, wait for
    //    bytes or the core's next deadline (keepalive Ping, close timeout), again.
    loop {
        loop {
            let progress = conn.handle_bytes(&mut buf, Instant::now());
            while let Some(event) = conn.poll_event() {
                // Pings are answered and a Close is replied to by the core itself.
                if let Event::Message(message) = event
                    && message.is_data()
                {
                    // Fails only once the connection is closing: nothing to echo then.
                    let _ = conn.send(message);
                }
            }
            if progress == Progress::NeedBytes {
                break;
            }
        }
        while let Some(chunk) = conn.poll_transmit() {
            tcp.write_all(&chunk)?;
        }
        if conn.should_close_transport() {
            // Dropping `tcp` closes it: the server closes first (RFC 6455, section 7.1.1).
            return Ok(conn.close_status().map(Closed::code));
        }
        let wait = conn
            .poll_timeout()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()));
        // A zero read timeout is an error in std: wait at least a millisecond.
        tcp.set_read_timeout(wait.map(|wait| wait.max(Duration::from_millis(1))))?;
        match read_some(&mut tcp, &mut buf) {
            Ok(0) => {
                conn.handle_eof();
                while let Some(chunk) = conn.poll_transmit() {
                    let _ = tcp.write_all(&chunk);
                }
                return Ok(conn.close_status().map(Closed::code));
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                conn.handle_timeout(Instant::now());
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads what the socket has (at most 16 KiB) onto the end of `buf`; 0 at the end of input.
fn read_some(tcp: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let mut chunk = [0; 16 * 1024];
    let n = tcp.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

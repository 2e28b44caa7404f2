//! What the load examples (`fanout`, `crossnode`) share: a raw WebSocket client that upgrades
//! with a fixed request and reads frame headers only, and the server's CPU time.
//!
//! Included by each with `#[path = "support/mod.rs"] mod support;` (a directory, so Cargo does
//! not take it for an example of its own).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs an example: its arguments from `parse`, or exit status 2 with the error; then `run`
/// with them, and exit status 1 with the error if it fails or takes longer than `limit`.
pub(crate) async fn main<A, T, F>(
    name: &str,
    parse: Result<A, String>,
    limit: Duration,
    run: impl FnOnce(A) -> F,
) -> T
where
    F: Future<Output = std::io::Result<T>>,
{
    let args = parse.unwrap_or_else(|e| {
        eprintln!("{name}: {e}");
        std::process::exit(2);
    });
    match tokio::time::timeout(limit, run(args)).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            eprintln!("{name}: {e}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("{name}: did not finish within {limit:?}");
            std::process::exit(1);
        }
    }
}

/// Connects to `addr` and upgrades at `path`, with `headers` (whole lines, each ending in
/// `\r\n`) added to the request; returns the stream and the bytes read past the response.
pub(crate) async fn connect(
    addr: SocketAddr,
    path: &str,
    headers: &str,
) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 8192 || stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::other("no handshake response"));
        }
    };
    if !buf.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&buf[..end]).into_owned(),
        ));
    }
    Ok((stream, buf.split_off(end)))
}

/// The RSV bits and opcode, the header's length and the payload's length of the unmasked frame
/// at the start of `b`, once its header is there.
pub(crate) fn header(b: &[u8]) -> Option<(u8, usize, usize)> {
    let (first, second) = (*b.first()?, *b.get(1)?);
    let (len, head) = match second & 0x7f {
        126 => (usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])), 4),
        127 => (
            usize::try_from(u64::from_be_bytes(b.get(2..10)?.try_into().ok()?)).ok()?,
            10,
        ),
        n => (usize::from(n), 2),
    };
    Some((first & 0x7f, head, len))
}

/// A masked client frame (mask key 0: the payload as it is).
pub(crate) fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            frame.push(0xfe);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0xff);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    frame
}

/// A process's CPU time so far (user + system), from `/proc/PID/stat`.
pub(crate) fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold spaces): utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()?;
    let ticks: f64 = String::from_utf8_lossy(&ticks.stdout).trim().parse().ok()?;
    Some((utime + stime) as f64 / ticks)
}

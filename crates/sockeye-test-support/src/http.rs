//! Raw HTTP/1.1 on loopback: requests written by hand, responses read without a client
//! library, so a test sees exactly what a server sent.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response head these helpers read before failing the test.
const MAX_HEAD: usize = 64 << 10;

/// Sends `request` on a new connection and reads the whole response, up to the server's close.
pub async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("read");
    String::from_utf8(response).expect("UTF-8 response")
}

/// A plain `GET path` with `Connection: close`, and the whole response.
pub async fn get(addr: SocketAddr, path: &str) -> String {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Sends `request` on a new connection and returns the response head.
pub async fn request_head(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    read_head(&mut tcp).await
}

/// Reads one response head off `tcp`, up to its blank line and no further.
pub async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < MAX_HEAD, "no end of head");
        head.push(tcp.read_u8().await.expect("a response head"));
    }
    String::from_utf8(head).expect("a text head")
}

/// One response read off `tcp`, no further: its status, its head, and its body (by
/// `content-length`, or none).
pub async fn read_response(tcp: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let head = read_head(tcp).await;
    let status = head
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length = header(&head, "content-length")
        .map_or(0, |value| value.parse::<usize>().expect("a length"));
    let mut body = vec![0; length];
    tcp.read_exact(&mut body).await.expect("the body");
    (status, head, body)
}

/// The value of header `name` in a response head (names compared ignoring case).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

//! A `redis-server` of the test's own, and the few commands the tests send it.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Daemon, TempDir, TlsFiles, program};

/// A `redis-server` on loopback, with no persistence, on `port`; `None` when it is not
/// installed. Dropping it stops it, and the same port can serve a new one (a restart).
pub async fn redis_server(port: u16) -> Option<Daemon> {
    let exe = program("redis-server")?;
    let dir = TempDir::new("redis");
    let mut command = Command::new(exe);
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir.path());
    Some(Daemon::start(command, port, Some(dir)).await)
}

/// A `redis-server` like [`redis_server`] that also speaks TLS on `tls_port`, with the server
/// certificate of `certs` and no client certificates; the daemon's port is `tls_port`, and
/// `port` stays plain for [`redis_command`].
pub async fn redis_server_tls(port: u16, tls_port: u16, certs: &TlsFiles) -> Option<Daemon> {
    let exe = program("redis-server")?;
    let dir = TempDir::new("redis-tls");
    let mut command = Command::new(exe);
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--tls-port",
            &tls_port.to_string(),
            "--tls-auth-clients",
            "no",
        ])
        .args(["--tls-cert-file", &certs.chain_file])
        .args(["--tls-key-file", &certs.key_file])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir.path());
    Some(Daemon::start(command, tls_port, Some(dir)).await)
}

/// Runs one Redis command over RESP on `port` and returns the raw reply (one line, or an
/// array of lines, as the commands used in tests answer).
pub async fn redis_command(port: u16, args: &[&str]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        let _ = write!(request, "${}\r\n{arg}\r\n", arg.len());
    }
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let mut buf = [0; 1024];
    // Every reply here ends in a line that is not an array or bulk header.
    loop {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "redis closed before replying");
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        let last = text
            .trim_end_matches("\r\n")
            .rsplit("\r\n")
            .next()
            .unwrap_or("");
        if text.ends_with("\r\n") && !last.starts_with(['*', '$']) {
            return text.into_owned();
        }
    }
}

/// Waits until `channel` has `subscribers` subscribers in the Redis on `port`: only then does a
/// message published anywhere reach every one of them.
pub async fn until_redis_subscribers(port: u16, channel: &str, subscribers: usize) {
    let want = format!(":{subscribers}\r\n");
    while !redis_command(port, &["PUBSUB", "NUMSUB", channel])
        .await
        .ends_with(&want)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

//! `sockeye serve` behind real reverse proxies from Debian's packages, nginx and Caddy, with
//! the very configuration files `docs/how-to/` documents (`nginx.conf`, `Caddyfile`): only
//! their ports are substituted. A missing proxy skips its test unless
//! `SOCKEYE_REQUIRE_DAEMONS` is set (`scripts/test` installs both and sets it).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use http::HeaderValue;
use sockeye::{
    ClientBuilder, CloseCode, Config, MaybeTlsStream, Message, WebSocket, WebSocketConfig,
};
use sockeye_test_support::{Daemon, TempDir, bounded, free_port, program};

mod common;
use common::{Running, start};

/// One test at a time: each picks free ports for its proxy, and two picked at once could be
/// the same.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const NGINX_CONF: &str = include_str!("../../../docs/how-to/nginx.conf");
const CADDYFILE: &str = include_str!("../../../docs/how-to/Caddyfile");

/// `sockeye serve ARGS` on a fresh loopback port, and the address it printed.
fn serve(args: &[&str]) -> (Running, SocketAddr) {
    start(&[&["serve"], args, &["127.0.0.1:0"]].concat())
}

/// `text` with `from` replaced by `to`, which must be there (else the docs changed under the
/// test).
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "{from:?} is no longer in the documented file"
    );
    text.replace(from, to)
}

/// nginx on a fresh port in front of `upstream`, with the documented file and `read_timeout`.
async fn nginx(upstream: SocketAddr, read_timeout: &str) -> Option<Daemon> {
    nginx_with(upstream, read_timeout, true).await
}

/// As [`nginx`], without the documented `Host` line when `pass_host` is false.
async fn nginx_with(upstream: SocketAddr, read_timeout: &str, pass_host: bool) -> Option<Daemon> {
    let exe = program("nginx")?;
    let dir = TempDir::new("nginx");
    let port = free_port();
    let site = substitute(
        NGINX_CONF,
        "listen 8080;",
        &format!("listen 127.0.0.1:{port};"),
    );
    let site = substitute(
        &site,
        "server 127.0.0.1:9001;",
        &format!("server {upstream};"),
    );
    let site = substitute(
        &site,
        "proxy_read_timeout 1h;",
        &format!("proxy_read_timeout {read_timeout};"),
    );
    let site = if pass_host {
        site
    } else {
        substitute(&site, "proxy_set_header Host $http_host;", "")
    };
    let d = dir.path().display();
    std::fs::write(dir.path().join("sockeye.conf"), site).unwrap();
    // What Debian's /etc/nginx/nginx.conf provides around a conf.d file, in the test's directory;
    // one process (no master and workers), so that killing it leaves nothing behind.
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             include {d}/sockeye.conf;\n}}\n"
        ),
    )
    .unwrap();
    let mut command = Command::new(exe);
    command
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-c")
        .arg(dir.path().join("nginx.conf"));
    Some(Daemon::start(command, port, Some(dir)).await)
}

/// Caddy on a fresh port in front of `upstream`, with the documented Caddyfile.
async fn caddy(upstream: SocketAddr) -> Option<Daemon> {
    let exe = program("caddy")?;
    let dir = TempDir::new("caddy");
    let port = free_port();
    // Bound to 127.0.0.1 only, the address `free_port` found free: Caddy's default, every
    // address, can collide with a socket elsewhere on the machine.
    let site = substitute(
        CADDYFILE,
        ":8080 {",
        &format!("http://127.0.0.1:{port} {{\n    bind 127.0.0.1"),
    );
    let site = substitute(
        &site,
        "reverse_proxy 127.0.0.1:9001",
        &format!("reverse_proxy {upstream}"),
    );
    // No admin endpoint, no certificates, no HTTP/3 (a UDP port nobody checked is free): a
    // test instance.
    let config = format!(
        "{{\n  admin off\n  auto_https off\n  servers {{\n    protocols h1 h2\n  }}\n}}\n{site}"
    );
    let file = dir.path().join("Caddyfile");
    std::fs::write(&file, config).unwrap();
    let mut command = Command::new(exe);
    command
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&file)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path());
    Some(Daemon::start(command, port, Some(dir)).await)
}

/// A member of `room` through the proxy on `port`, as a page of the proxy's own address would
/// connect (its Origin), so that `sockeye serve`'s same-host check sees the Host the browser
/// used.
async fn member(port: u16, room: &str, config: WebSocketConfig) -> WebSocket<MaybeTlsStream> {
    let url = format!("ws://127.0.0.1:{port}/rooms/{room}");
    let origin = HeaderValue::from_str(&format!("http://127.0.0.1:{port}")).unwrap();
    ClientBuilder::new(url)
        .origin(origin)
        .config(config)
        .connect()
        .await
        .unwrap()
        .0
}

/// Two members of a room through the proxy on `port` talk; a page of another site is refused.
async fn chat_through(port: u16) {
    let config = WebSocketConfig::default;
    let mut a = member(port, "proxied", config()).await;
    let mut b = member(port, "proxied", config()).await;
    // b's membership is settled once its first message went through the room.
    b.send(Message::text("b here")).await.unwrap();
    assert_eq!(a.next().await.unwrap().unwrap(), Message::text("b here"));
    a.send(Message::text("through the proxy")).await.unwrap();
    a.send(Message::binary(vec![9_u8; 70_000])).await.unwrap();
    assert_eq!(
        b.next().await.unwrap().unwrap(),
        Message::text("through the proxy")
    );
    assert_eq!(
        b.next().await.unwrap().unwrap(),
        Message::binary(vec![9_u8; 70_000])
    );
    a.close(CloseCode::NORMAL, "").await.unwrap();
    b.close(CloseCode::NORMAL, "").await.unwrap();

    let foreign = ClientBuilder::new(format!("ws://127.0.0.1:{port}/rooms/proxied"))
        .origin(HeaderValue::from_static("https://evil.example"))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        foreign.status(),
        Some(http::StatusCode::FORBIDDEN),
        "{foreign}"
    );
}

#[tokio::test]
async fn behind_nginx() {
    let _turn = ONE_AT_A_TIME.lock().await;
    bounded(async {
        let (_server, addr) = serve(&[]);
        let Some(proxy) = nginx(addr, "1h").await else {
            return;
        };
        chat_through(proxy.port).await;
        // Without the Host line, the server sees nginx's name for it and refuses the page.
        let proxy = nginx_with(addr, "1h", false).await.unwrap();
        let url = format!("ws://127.0.0.1:{}/rooms/proxied", proxy.port);
        let origin = HeaderValue::from_str(&format!("http://127.0.0.1:{}", proxy.port)).unwrap();
        let refused = ClientBuilder::new(url)
            .origin(origin)
            .connect()
            .await
            .unwrap_err();
        assert_eq!(
            refused.status(),
            Some(http::StatusCode::FORBIDDEN),
            "{refused}"
        );
    })
    .await;
}

/// The next data message, or how the connection ended; Pongs are skipped.
async fn data_or_end(
    ws: &mut WebSocket<MaybeTlsStream>,
) -> Option<Result<Message, sockeye::Error>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Pong(_) | Message::Ping(_))) => {}
            other => return other,
        }
    }
}

#[tokio::test]
async fn behind_nginx_an_idle_connection_lives_as_long_as_it_pings() {
    let _turn = ONE_AT_A_TIME.lock().await;
    bounded(async {
        let (_server, addr) = serve(&[]);
        let Some(proxy) = nginx(addr, "1s").await else {
            return;
        };
        // Quiet for 2 s with nginx's read timeout at 1 s: nginx closes the silent one, and the
        // one that pings every 300 ms (the server's Pongs are traffic) stays.
        let pinging = WebSocketConfig::builder()
            .proto(
                Config::builder()
                    .ping_interval(Some(Duration::from_millis(300)))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let mut silent = member(proxy.port, "idle", WebSocketConfig::default()).await;
        let mut a = member(proxy.port, "idle", pinging.clone()).await;
        let mut b = member(proxy.port, "idle", pinging).await;
        // Pings go out while a WebSocket is polled: all three are read for the quiet time.
        let quiet = Duration::from_secs(2);
        let (end, a_quiet, b_quiet) = tokio::join!(
            tokio::time::timeout(quiet, silent.next()),
            tokio::time::timeout(quiet, data_or_end(&mut a)),
            tokio::time::timeout(quiet, data_or_end(&mut b)),
        );
        let end = end.expect("nginx closes a silent connection past its read timeout");
        assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
        assert!(a_quiet.is_err(), "{a_quiet:?}");
        assert!(b_quiet.is_err(), "{b_quiet:?}");
        a.send(Message::text("still here")).await.unwrap();
        assert_eq!(
            data_or_end(&mut b).await.unwrap().unwrap(),
            Message::text("still here")
        );
        a.close(CloseCode::NORMAL, "").await.unwrap();
        b.close(CloseCode::NORMAL, "").await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn behind_caddy() {
    let _turn = ONE_AT_A_TIME.lock().await;
    bounded(async {
        let (_server, addr) = serve(&[]);
        let Some(proxy) = caddy(addr).await else {
            return;
        };
        chat_through(proxy.port).await;
    })
    .await;
}

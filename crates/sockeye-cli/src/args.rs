//! The command line, with clap.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  success, or the server closed normally (1000 or 1001)
  1  an error not listed here
  2  bad usage or a bad URL
  3  the connection could not be made (DNS, refused, timeout, TLS, proxy)
  4  the server refused the WebSocket handshake (an HTTP status instead of 101)
  5  the connection closed abnormally (another close code, a protocol error, a dropped connection)";

/// WebSocket toolkit: connect to, serve, forward and benchmark WebSockets.
#[derive(Debug, Parser)]
#[command(name = "sockeye", version, after_help = EXIT_CODES, propagate_version = true)]
pub(crate) struct Cli {
    /// More logs on stderr (-v: a line per connection, -vv: debug, -vvv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Talk to a WebSocket server: stdin lines go out as messages, messages come out as lines.
    #[command(after_help = "Examples:
  sockeye connect ws://127.0.0.1:9001/rooms/lobby
  echo '{\"hello\":1}' | sockeye connect --once ws://127.0.0.1:9001/
  sockeye connect -H 'Authorization: Bearer TOKEN' --subprotocol chat ws://host/ws")]
    Connect(ConnectArgs),
    /// Run a server: a demo chat page at /, rooms at /rooms/NAME, or an echo server.
    #[command(after_help = "Examples:
  sockeye serve                       # then open http://127.0.0.1:9001/
  sockeye serve 0.0.0.0:8080 -v
  sockeye serve --echo 127.0.0.1:9001")]
    Serve(ServeArgs),
    /// Bridge TCP and WebSocket: a local TCP port to a WebSocket URL, or the reverse.
    #[command(after_help = "Examples:
  sockeye forward --listen tcp:127.0.0.1:2222 ws://server/ssh   # TCP clients -> WebSocket
  sockeye forward --listen ws://127.0.0.1:8022 127.0.0.1:22     # WebSocket clients -> TCP")]
    Forward(ForwardArgs),
    /// Load-test a WebSocket echo endpoint: throughput and latency percentiles.
    #[command(after_help = "Examples:
  sockeye bench ws://127.0.0.1:9001/ -c 100 -s 20 --in-flight 16 -d 10s
  sockeye bench ws://127.0.0.1:9001/ -c 4 -s 1048576 --json")]
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// The server, ws://HOST[:PORT][/PATH][?QUERY] or wss://...; without a scheme, ws:// (wss://
    /// for port 443).
    pub(crate) url: String,
    /// Send stdin in binary messages (chunks as read) and write binary messages raw to stdout.
    #[arg(long)]
    pub(crate) binary: bool,
    /// Keep the connection open after stdin ends, until the server closes it (or Ctrl-C).
    #[arg(short = 'n', long)]
    pub(crate) no_close: bool,
    /// Only receive: do not read stdin at all; stay until the server closes (or Ctrl-C).
    #[arg(short = 'u', long, conflicts_with_all = ["once", "no_close"])]
    pub(crate) receive_only: bool,
    /// Interactive mode: a prompt, > and < markers, and the commands /ping [TEXT],
    /// /close [CODE [REASON]] and /binary HEX. On by default when stdin and stdout are terminals.
    #[arg(short = 'i', long, conflicts_with_all = ["once", "receive_only", "binary"])]
    pub(crate) interactive: bool,
    /// Basic authentication, USER:PASSWORD (an Authorization header).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub(crate) auth: Option<String>,
    /// Show the Pings and Pongs received (and sent by /ping) on stderr.
    #[arg(long)]
    pub(crate) show_ping_pong: bool,
    /// Largest message accepted from the server, in bytes; a larger one closes with 1009.
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_message_size: Option<usize>,
    /// Time allowed to connect: DNS, TCP, proxy, TLS and the WebSocket handshake.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
    pub(crate) connect_timeout: Duration,
    /// An extra request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub(crate) headers: Vec<String>,
    /// Offer a subprotocol (repeatable, in order of preference).
    #[arg(long = "subprotocol", value_name = "NAME")]
    pub(crate) subprotocols: Vec<String>,
    /// Send this Origin header.
    #[arg(long)]
    pub(crate) origin: Option<String>,
    /// Send a Ping this often (e.g. 20s); the server is declared dead after 20 s without answer.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) ping_interval: Option<Duration>,
    /// Offer permessage-deflate.
    #[arg(long)]
    pub(crate) compress: bool,
    #[command(flatten)]
    pub(crate) net: NetArgs,
    /// Send what stdin holds, wait for the replies, then close: for scripts.
    #[arg(long)]
    pub(crate) once: bool,
    /// How long --once waits for replies after the last message was sent.
    #[arg(long, value_parser = parse_duration, default_value = "1s", value_name = "DURATION")]
    pub(crate) wait: Duration,
    /// Print the handshake to stderr: the request and the response (a refusal's too).
    #[arg(long)]
    pub(crate) show_headers: bool,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
    /// Reconnect when the connection drops, after a jittered back-off (200 ms doubling up to
    /// 5 s), until Ctrl-C or --reconnect-tries. When the server sent message ids (a sockeye
    /// room joined with ?since=), reconnects ask for what was missed (?since=LAST_ID).
    #[arg(long)]
    pub(crate) reconnect: bool,
    /// With --reconnect: give up after this many failed attempts in a row (0: never).
    #[arg(long, default_value_t = 0, value_name = "N", requires = "reconnect")]
    pub(crate) reconnect_tries: u32,
    /// A message sent right after each connect (and reconnect).
    #[arg(long, value_name = "TEXT")]
    pub(crate) preamble: Option<String>,
    /// Indent received JSON text messages.
    #[arg(long)]
    pub(crate) pretty: bool,
}

/// Which HTTP version carries a client's WebSockets. Without a flag, wss:// offers HTTP/2 and
/// HTTP/1.1 (ALPN) and uses HTTP/2 when the server takes WebSockets over it (RFC 8441);
/// ws:// speaks HTTP/1.1.
#[derive(Debug, Clone, Args)]
pub(crate) struct HttpArgs {
    /// HTTP/2 only (RFC 8441: the WebSocket as a stream of an HTTP/2 connection, by ALPN h2,
    /// or prior knowledge for ws://); fail when the server does not take it. -v and
    /// --show-headers report the version used.
    #[arg(long, conflicts_with_all = ["http1", "prefer_http2"])]
    pub(crate) http2: bool,
    /// HTTP/1.1 only (ALPN offers http/1.1 alone).
    #[arg(long, conflicts_with = "prefer_http2")]
    pub(crate) http1: bool,
    /// HTTP/2 when the server takes it, HTTP/1.1 otherwise: the default for wss://; for
    /// ws://, tries HTTP/2 with prior knowledge first.
    #[arg(long)]
    pub(crate) prefer_http2: bool,
}

impl HttpArgs {
    /// The policy the flags ask for; `None`: the library's default for the URL's scheme.
    pub(crate) fn policy(&self) -> Option<sockeye::Http2Policy> {
        if self.http2 {
            Some(sockeye::Http2Policy::Require)
        } else if self.http1 {
            Some(sockeye::Http2Policy::Never)
        } else if self.prefer_http2 {
            Some(sockeye::Http2Policy::Prefer)
        } else {
            None
        }
    }

    /// Applies the policy to a client.
    pub(crate) fn apply(&self, builder: sockeye::ClientBuilder) -> sockeye::ClientBuilder {
        match self.policy() {
            Some(policy) => builder.http2(policy),
            None => builder,
        }
    }
}

/// How a client reaches a server: TLS trust and identity, proxies.
#[derive(Debug, Clone, Args)]
pub(crate) struct NetArgs {
    /// Trust this CA certificate (PEM) for wss://, besides the public roots (repeatable).
    #[arg(long = "cacert", value_name = "FILE")]
    pub(crate) ca_certs: Vec<std::path::PathBuf>,
    /// Trust the platform's root certificates too (the system CA bundle, SSL_CERT_FILE).
    #[arg(long)]
    pub(crate) native_roots: bool,
    /// Present this client certificate chain (PEM) to wss:// servers that ask; needs --key.
    #[arg(long, requires = "key", value_name = "FILE")]
    pub(crate) cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, requires = "cert", value_name = "FILE")]
    pub(crate) key: Option<std::path::PathBuf>,
    /// Accept any TLS certificate, unverified: anyone on the path can read and change the
    /// traffic. For self-signed test servers only; prefer --cacert.
    #[arg(short = 'k', long)]
    pub(crate) insecure: bool,
    /// Connect through this proxy: http://[USER:PASS@]HOST:PORT (CONNECT),
    /// socks5h://[USER:PASS@]HOST:PORT (SOCKS5, the proxy resolves names) or socks5://. Without
    /// it, HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY apply.
    #[arg(long, value_name = "URL")]
    pub(crate) proxy: Option<String>,
    /// Ignore the proxy environment variables.
    #[arg(long, conflicts_with = "proxy")]
    pub(crate) no_proxy: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on: PORT (on 127.0.0.1), :PORT (every interface), HOST:PORT.
    #[arg(default_value = "127.0.0.1:9001", value_parser = crate::addr::listen_addr)]
    pub(crate) addr: SocketAddr,
    /// Echo every message back instead of relaying it to a room.
    #[arg(long)]
    pub(crate) echo: bool,
    /// A subprotocol this server speaks (repeatable, in order of preference): selected when a
    /// client offers it. Clients that offer none are accepted all the same.
    #[arg(long = "subprotocol", value_name = "NAME")]
    pub(crate) subprotocols: Vec<String>,
    /// Do not offer permessage-deflate to clients that ask for it.
    #[arg(long)]
    pub(crate) no_compress: bool,
    /// Messages queued for one client at most: senders to its room wait while it has half of
    /// that queued; it is closed with 1008 as too slow when it holds its room back for
    /// --max-stall, or when messages that cannot wait (from other servers) fill it.
    #[arg(long, default_value_t = 256, value_name = "MESSAGES")]
    pub(crate) client_queue: usize,
    /// Bytes queued for one client at most, with the same rules as --client-queue.
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    pub(crate) client_queue_bytes: usize,
    /// How long a client may hold its room back (its queue at half of --client-queue or
    /// --client-queue-bytes, so that senders wait) before it is closed with 1008 as too slow:
    /// "500ms", "5s", "1m"...
    #[arg(long, value_parser = parse_stall, default_value = "5s", value_name = "DURATION")]
    pub(crate) max_stall: Duration,
    /// Largest message a client may send, in bytes (after decompression); larger ones close
    /// the connection with 1009.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub(crate) max_message: usize,
    /// Also accept browsers' WebSocket connections from pages at this origin, such as
    /// https://app.example (repeatable; * for any). Pages served by this server are always
    /// accepted; requests without Origin (not from a browser) too.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub(crate) allow_origins: Vec<String>,
    /// TLS certificate chain (PEM, leaf first); serves https:// and wss://. Needs --tls-key.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub(crate) tls_cert: Option<std::path::PathBuf>,
    /// TLS private key (PEM); needs --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub(crate) tls_key: Option<std::path::PathBuf>,
    /// Share rooms with every other `sockeye serve` on this Redis (pub/sub), so members on
    /// different servers talk to each other: redis://[:PASSWORD@]HOST[:PORT], or rediss:// for
    /// TLS (verified against the system's roots, or --redis-cacert). A /DB other than /0 is
    /// refused: pub/sub ignores it; separate servers with --redis-prefix. For a Redis Cluster
    /// (sharded pub/sub, Redis 7), the URL of any node, or several separated by commas.
    #[arg(long, value_name = "URL[,URL…]")]
    pub(crate) redis: Option<String>,
    /// The CA (PEM) to verify a rediss:// server against, instead of the system's roots.
    #[arg(long, value_name = "FILE", requires = "redis")]
    pub(crate) redis_cacert: Option<std::path::PathBuf>,
    /// Messages waiting to go to Redis before senders are closed with 1013 (try again later).
    #[arg(
        long,
        default_value_t = 16_384,
        value_name = "MESSAGES",
        requires = "redis"
    )]
    pub(crate) redis_queue: usize,
    /// Bytes waiting to go to Redis before senders are closed with 1013 (try again later).
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES", requires = "redis")]
    pub(crate) redis_queue_bytes: usize,
    /// The namespace on Redis: servers share rooms only with the servers of the same prefix
    /// (channels PREFIX:room:NAME). 1 to 64 visible ASCII characters without { or }.
    #[arg(
        long,
        default_value = "sockeye",
        value_name = "PREFIX",
        requires = "redis"
    )]
    pub(crate) redis_prefix: String,
    /// Keep the last N messages of each room (in memory, or with --redis in a Redis stream per
    /// room), for an hour at most: a member that joins with ?since=ID (the id of the last
    /// message it saw) gets what it missed; with ?since= it is sent each message's id. 0: no
    /// history; at most 100,000.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) history: usize,
}

#[derive(Debug, Args)]
pub(crate) struct ForwardArgs {
    /// Where to listen: tcp:ADDR or unix:PATH (clients bridged to a WebSocket URL), or
    /// ws://ADDR or wss://ADDR (WebSocket clients bridged to a TCP address or unix:PATH). ADDR is
    /// PORT, :PORT or HOST:PORT.
    #[arg(long, value_name = "tcp:ADDR | unix:PATH | ws://ADDR | wss://ADDR")]
    pub(crate) listen: String,
    /// Where to go: a ws:// or wss:// URL (for --listen tcp: or unix:), or HOST:PORT or
    /// unix:PATH (for --listen ws:// or wss://).
    pub(crate) target: String,
    /// TLS certificate chain (PEM) for a wss:// listener. Needs --tls-key.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub(crate) tls_cert: Option<std::path::PathBuf>,
    /// TLS private key (PEM) for a wss:// listener. Needs --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub(crate) tls_key: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub(crate) net: NetArgs,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// An echo endpoint, ws://HOST[:PORT][/PATH] or wss://... (without a scheme, ws://).
    pub(crate) url: String,
    #[command(flatten)]
    pub(crate) net: NetArgs,
    /// Concurrent connections.
    #[arg(short, long, default_value_t = 10)]
    pub(crate) connections: usize,
    /// Message size in bytes.
    #[arg(short, long, default_value_t = 20)]
    pub(crate) size: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub(crate) in_flight: usize,
    /// Total messages per second across all connections (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub(crate) rate: u64,
    /// How long to run.
    #[arg(short, long, value_parser = parse_duration, default_value = "5s")]
    pub(crate) duration: Duration,
    /// Send binary messages instead of text.
    #[arg(long)]
    pub(crate) binary: bool,
    /// Print the result as JSON on stdout (no progress bar).
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
    /// With --http2: the HTTP/2 connections the WebSockets share (each opened once, the
    /// WebSockets spread over them in turn).
    #[arg(long, default_value_t = 1, value_name = "N", requires = "http2")]
    pub(crate) h2_connections: usize,
}

impl ServeArgs {
    /// What the relay allows each client to queue, and for how long it may hold its room back.
    pub(crate) fn queue_limits(&self) -> sockeye_relay::QueueLimits {
        sockeye_relay::QueueLimits::new(self.client_queue, self.client_queue_bytes)
            .max_stall(self.max_stall)
    }
}

/// A duration above zero, for --max-stall (zero would close a client the moment its room
/// waits for it).
fn parse_stall(text: &str) -> Result<Duration, String> {
    let stall = parse_duration(text)?;
    if stall.is_zero() {
        return Err("must be more than 0".to_owned());
    }
    Ok(stall)
}

/// "500ms", "2s", "1m", or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit in {text}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("3h").is_err());
    }

    /// `--max-stall` reaches the relay's queue limits; the default is the relay's own.
    #[test]
    fn max_stall_sets_the_relays_stall() {
        use clap::Parser;
        let serve = |args: &[&str]| -> Result<sockeye_relay::QueueLimits, String> {
            let cli = Cli::try_parse_from([&["sockeye", "serve"], args].concat())
                .map_err(|e| e.to_string())?;
            match cli.command {
                Command::Serve(serve) => Ok(serve.queue_limits()),
                other => panic!("not serve: {other:?}"),
            }
        };
        let limits = serve(&["--max-stall", "1500ms", "--client-queue", "10"]).unwrap();
        assert_eq!(limits.stall(), Duration::from_millis(1500));
        assert_eq!(limits.messages(), 10);
        let defaults = serve(&[]).unwrap();
        assert_eq!(defaults.stall(), sockeye_relay::DEFAULT_MAX_STALL);
        assert_eq!(
            defaults.stall(),
            sockeye_relay::QueueLimits::default().stall()
        );
        assert!(serve(&["--max-stall", "0"]).is_err());
        assert!(serve(&["--max-stall", "soon"]).is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

//! What the tests of the built `sockeye` binary share: starting it without the environment's
//! proxies, reading the address a server prints, killing it when the test ends, signalling it.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStderr, Command, Stdio};

use sockeye_test_support::TlsFiles;

pub const BIN: &str = env!("CARGO_BIN_EXE_sockeye");

/// The proxy variables of the environment, which would reroute the children's connections.
const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// A child process killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `sockeye` command, without the environment's proxy variables.
pub fn sockeye() -> Command {
    let mut command = Command::new(BIN);
    for var in PROXY_VARS {
        command.env_remove(var);
    }
    command
}

/// Spawns `command` (stdin and stdout null, stderr piped) and reads the first line it prints
/// on stderr, which names the address it serves (`scheme://ADDR...`). Returns the process,
/// that address, the line, and the rest of its stderr (keep reading it, so that the child's
/// later messages do not meet a closed pipe).
pub fn spawn_serving(
    command: &mut Command,
) -> (Running, SocketAddr, String, BufReader<ChildStderr>) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut reader = BufReader::new(child.stderr.take().expect("stderr is piped"));
    let running = Running(child);
    let mut line = String::new();
    reader.read_line(&mut line).expect("a first line");
    let addr = line
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ' ']).next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (running, addr, line, reader)
}

/// Starts `sockeye ARGS` and returns it with the address it printed; the rest of its stderr
/// is read and dropped.
pub fn start(args: &[&str]) -> (Running, SocketAddr) {
    let (running, addr, _, mut rest) = spawn_serving(sockeye().args(args));
    std::thread::spawn(move || std::io::copy(&mut rest, &mut std::io::sink()));
    (running, addr)
}

/// `sockeye serve ARGS` over TLS on a fresh loopback port, with a certificate for `localhost`
/// made for the test (`tag` names its files): the server, its address, and the files (the
/// CA's is the one to trust).
pub fn serve_tls(tag: &str, args: &[&str]) -> (Running, SocketAddr, TlsFiles) {
    let certs = TlsFiles::new(tag);
    let (running, addr) = start(
        &[
            &["serve"],
            args,
            &[
                "--tls-cert",
                &certs.chain_file,
                "--tls-key",
                &certs.key_file,
                "127.0.0.1:0",
            ],
        ]
        .concat(),
    );
    (running, addr, certs)
}

/// Sends the signal `name` (`-INT`, `-TERM`...) to the process.
pub fn signal(running: &Running, name: &str) {
    let status = Command::new("kill")
        .args([name, &running.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

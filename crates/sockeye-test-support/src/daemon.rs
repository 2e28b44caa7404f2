//! Programs of the machine run for one test, free ports, listeners and temporary directories.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A directory removed when dropped; `.0` (or [`TempDir::path`]) is where it is.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates a new directory under the system's temporary directory, named after `tag`.
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sockeye-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Where the directory is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where `name` is installed, or `None`. When it is missing and `SOCKEYE_REQUIRE_DAEMONS` is
/// set (the test script sets it, after installing them), the test fails instead of skipping.
pub fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("SOCKEYE_REQUIRE_DAEMONS").is_none(),
            "{name} is not installed (scripts/test installs it)"
        );
        eprintln!("skipping: {name} is not installed (scripts/test installs it)");
    }
    found
}

/// A free TCP port on 127.0.0.1: for a program that must be told its port, or as a port
/// nobody listens on (the listener that found it is closed).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tokio listener on a fresh port of 127.0.0.1, and its address.
pub async fn listen() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A std listener on a fresh port of 127.0.0.1, and its address.
pub fn listen_blocking() -> (std::net::TcpListener, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A program from the machine's packages, run for one test and killed when dropped.
pub struct Daemon {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    _dir: Option<TempDir>,
}

impl Daemon {
    /// Starts `command` (which listens on `port` of 127.0.0.1) and waits until the port
    /// accepts; `dir`, its files, is removed when the daemon is dropped.
    pub async fn start(mut command: Command, port: u16, dir: Option<TempDir>) -> Self {
        // Its standard error goes to a file of `dir`, to say why it exited if it does.
        let log = dir.as_ref().map(|dir| dir.path().join("stderr.log"));
        let stderr = log
            .as_ref()
            .and_then(|path| std::fs::File::create(path).ok())
            .map_or_else(Stdio::null, Stdio::from);
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let mut daemon = Self {
            child,
            port,
            _dir: dir,
        };
        // Readiness is the port accepting; retry until it does (bounded by the test's deadline).
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                let said = log
                    .as_ref()
                    .and_then(|path| std::fs::read_to_string(path).ok())
                    .unwrap_or_default();
                let tail: Vec<&str> = said.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!("{command:?} exited with {status}:\n{}", tail.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        daemon
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

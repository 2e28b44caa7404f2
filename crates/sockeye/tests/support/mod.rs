//! Helpers shared by the integration tests: a deadline, certificates made at test time, and an
//! echo server that reports how each of its handshakes ended.

#![allow(dead_code, unreachable_pub, clippy::missing_panics_doc)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use sockeye::{Error, ServerBuilder};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The most any one test may take.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Runs a test body, failing it if it does not finish within [`LIMIT`]. The deadline is polled
/// first, so that a body stuck on a lost wakeup cannot be rescued by the deadline's own wakeup.
pub async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::select! {
        biased;
        () = tokio::time::sleep(LIMIT) => panic!("test did not finish within {LIMIT:?}"),
        out = body => out,
    }
}

/// A certificate authority made for one test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate chain (leaf, then the CA) and its key, in PEM.
pub struct Leaf {
    pub chain_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn sign(&self, mut params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.issuer.pem()),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for these names (DNS names or IP addresses), valid now.
    pub fn server(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A server certificate for these names that expired in 2021.
    pub fn expired_server(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.sign(params)
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }
}

/// An echo server on 127.0.0.1 that accepts with `builder` (TLS when it has it), echoes data
/// messages, and sends the outcome of every handshake down the channel.
pub async fn echo_server(
    builder: ServerBuilder,
) -> (SocketAddr, mpsc::UnboundedReceiver<Result<(), Error>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let builder = builder.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match builder.accept_tcp(tcp).await {
                    Ok(mut ws) => {
                        let _ = tx.send(Ok(()));
                        while let Some(Ok(message)) = ws.next().await {
                            if message.is_data() && ws.send(message).await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// A program from the machine's packages, run for one test and killed when dropped.
pub struct Daemon {
    child: std::process::Child,
    pub port: u16,
    _dir: Option<TempDir>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sockeye-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where `name` is installed, or `None`. When it is missing and `SOCKEYE_REQUIRE_DAEMONS` is
/// set (the test script sets it, after installing them), the test fails instead of skipping.
pub fn program(name: &str) -> Option<std::path::PathBuf> {
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

/// A free TCP port on 127.0.0.1, for a program that must be told its port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Daemon {
    /// Starts `command` (which listens on `port`) and waits until the port accepts.
    pub async fn start(
        mut command: std::process::Command,
        port: u16,
        dir: Option<TempDir>,
    ) -> Self {
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
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
                panic!("{command:?} exited with {status}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        daemon
    }
}

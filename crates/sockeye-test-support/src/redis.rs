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

/// A local Redis Cluster of masters without replicas, one `redis-server` per port; `None` when
/// Redis is not installed. Dropping it stops every node.
pub struct RedisCluster {
    /// The nodes' ports, in the order of their slots (the first owns slots 0 to 5460 of three).
    pub ports: Vec<u16>,
    nodes: Vec<Option<Daemon>>,
    dirs: Vec<TempDir>,
}

fn cluster_node(port: u16, dir: &TempDir) -> Option<Command> {
    let mut command = Command::new(program("redis-server")?);
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        .args(["--cluster-node-timeout", "5000"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir.path());
    Some(command)
}

impl RedisCluster {
    /// Starts `nodes` nodes on free ports, makes them one cluster (`redis-cli --cluster
    /// create`) and waits until every node says the cluster is ok.
    pub async fn start(nodes: usize) -> Option<Self> {
        let cli = program("redis-cli")?;
        let mut cluster = Self {
            ports: Vec::new(),
            nodes: Vec::new(),
            dirs: Vec::new(),
        };
        for _ in 0..nodes {
            let port = crate::free_port();
            let dir = TempDir::new("redis-cluster");
            let command = cluster_node(port, &dir)?;
            cluster
                .nodes
                .push(Some(Daemon::start(command, port, None).await));
            cluster.ports.push(port);
            cluster.dirs.push(dir);
        }
        let addresses: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = tokio::task::spawn_blocking(move || {
            Command::new(cli)
                .arg("--cluster")
                .arg("create")
                .args(&addresses)
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(created.status.success(), "{created:?}");
        for port in cluster.ports.clone() {
            cluster.until_ok(port).await;
        }
        Some(cluster)
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// Kills node `index` (SIGKILL).
    pub fn kill(&mut self, index: usize) {
        self.nodes[index] = None;
    }

    /// Starts node `index` again on its port, with its cluster state, and waits until the
    /// cluster is ok again on it.
    pub async fn restart(&mut self, index: usize) {
        let port = self.ports[index];
        let command = cluster_node(port, &self.dirs[index]).unwrap();
        self.nodes[index] = Some(Daemon::start(command, port, None).await);
        for port in self.ports.clone() {
            self.until_ok(port).await;
        }
    }

    async fn until_ok(&self, port: u16) {
        while !redis_command(port, &["CLUSTER", "INFO"])
            .await
            .contains("cluster_state:ok")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The index of the node that owns `key`'s slot (the slots are split evenly, in order).
    pub async fn owner(&self, key: &str) -> usize {
        let reply = redis_command(self.ports[0], &["CLUSTER", "KEYSLOT", key]).await;
        let slot: usize = reply.trim_start_matches(':').trim_end().parse().unwrap();
        // redis-cli gives each of n masters 16384 / n slots, the remainder spread from the
        // first: the owner is found by the ranges' ends.
        let nodes = self.ports.len();
        (0..nodes)
            .find(|i| slot < (16_384 * (i + 1)).div_ceil(nodes))
            .unwrap_or(nodes - 1)
    }
}

/// Waits until `channel` (a shard channel) has `subscribers` subscribers on the cluster node on
/// `port`.
pub async fn until_shard_subscribers(port: u16, channel: &str, subscribers: usize) {
    let want = format!(":{subscribers}\r\n");
    while !redis_command(port, &["PUBSUB", "SHARDNUMSUB", channel])
        .await
        .ends_with(&want)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

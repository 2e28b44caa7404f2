//! Helpers shared by the integration tests of the Sockeye crates: a deadline for each test,
//! certificates made at test time, programs of the machine (tinyproxy, microsocks,
//! redis-server) started for one test, free ports and temporary directories, raw HTTP/1.1
//! exchanges, an echo server that reports how each handshake ended (and its echo loop), and
//! numbered messages read in order by clients that may be made slow.
//!
//! A dev-dependency only (`publish = false`). The helpers panic when something goes wrong:
//! that is how a test fails.
//!
//! # Programs the tests need
//!
//! [`program`] finds a program on the machine. When it is missing the test is skipped, unless
//! `SOCKEYE_REQUIRE_DAEMONS` is set (the test script sets it after installing the programs):
//! then the test fails, so that a missing package cannot pass for a passing test.

#![allow(clippy::missing_panics_doc)]

mod certs;
mod daemon;
mod deadline;
mod echo;
pub mod http;
mod numbered;
mod proxies;
mod redis;

pub use certs::{Ca, Leaf, TlsFiles};
pub use daemon::{Daemon, TempDir, free_port, listen, listen_blocking, program};
pub use deadline::{LIMIT, bounded};
pub use echo::{echo, echo_server};
pub use numbered::{Texts, client_with_rcvbuf, number, numbered, read_numbered};
pub use proxies::{microsocks, tinyproxy};
pub use redis::{
    RedisCluster, redis_command, redis_server, redis_server_tls, until_redis_subscribers,
    until_shard_subscribers,
};

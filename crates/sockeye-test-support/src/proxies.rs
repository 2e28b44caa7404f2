//! Proxies from the machine's packages: tinyproxy (HTTP CONNECT) and microsocks (SOCKS5).

use std::process::Command;

use crate::{Daemon, TempDir, free_port, program};

/// tinyproxy on loopback, for clients from 127.0.0.1, with `extra` lines of configuration
/// (`BasicAuth alice s3cret\n`, `ConnectPort 443\n`); `None` when it is not installed.
pub async fn tinyproxy(extra: &str) -> Option<Daemon> {
    let exe = program("tinyproxy")?;
    let dir = TempDir::new("tinyproxy");
    let port = free_port();
    let conf = dir.path().join("tinyproxy.conf");
    let log = dir.path().join("tinyproxy.log");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\nAllow 127.0.0.1\n\
             DisableViaHeader Yes\nLogFile \"{}\"\nLogLevel Warning\n{extra}",
            log.display()
        ),
    )
    .unwrap();
    let mut command = Command::new(exe);
    command.arg("-d").arg("-c").arg(&conf);
    Some(Daemon::start(command, port, Some(dir)).await)
}

/// microsocks on loopback, asking for this username and password when given; `None` when it
/// is not installed.
pub async fn microsocks(credentials: Option<(&str, &str)>) -> Option<Daemon> {
    let exe = program("microsocks")?;
    let port = free_port();
    let mut command = Command::new(exe);
    command.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
    if let Some((user, password)) = credentials {
        command.args(["-u", user, "-P", password]);
    }
    Some(Daemon::start(command, port, None).await)
}

//! `sockeye`: connect to, serve, forward and benchmark WebSockets from the terminal.
//!
//! Exit codes (also in `sockeye --help`):
//! 0 success or a normal close (1000/1001); 1 an error not listed here; 2 bad usage or a bad URL;
//! 3 the connection could not be made (DNS, refused, timeout); 4 the server refused the
//! handshake (an HTTP status instead of 101); 5 the connection closed abnormally (a close code
//! other than 1000/1001, a protocol error, or the transport failing).

// Doc comments here are clap's help text, read in a terminal, not rustdoc; flags are bools by
// nature; the bench's statistics convert counts to floating point on purpose.
#![allow(
    clippy::doc_markdown,
    clippy::struct_excessive_bools,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

mod addr;
mod args;
mod cmd;
mod display;
mod exit;
mod signal;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sockeye: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let result = runtime.block_on(async move {
        signal::install();
        match cli.command {
            Command::Connect(args) => cmd::connect::run(args).await,
            Command::Serve(args) => cmd::serve::run(args).await,
            Command::Forward(args) => cmd::forward::run(args).await,
            Command::Bench(args) => cmd::bench::run(args).await,
        }
    });
    // Not waiting for tasks still parked in a blocking read (stdin, which cannot be
    // cancelled): the command is over, and it must not hang until the next line of input.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = exit::code_for(&e);
            eprintln!("sockeye: {}", exit::describe(&e));
            ExitCode::from(code)
        }
    }
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOCKEYE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

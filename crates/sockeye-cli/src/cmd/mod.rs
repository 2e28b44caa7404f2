//! The subcommands.

pub(crate) mod bench;
pub(crate) mod connect;
pub(crate) mod forward;
pub(crate) mod rooms;
pub(crate) mod serve;

/// A usage error found after parsing (a feature this build does not have, a bad header).
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

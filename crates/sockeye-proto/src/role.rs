//! Which end of the connection we are, and what differs by role.

/// The two ends of a WebSocket connection.
///
/// The role decides who masks (RFC 6455 section 5.1: every frame from a client is masked, no frame
/// from a server is) and who closes the TCP connection first (section 7.1.1: the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that sent the opening handshake request.
    Client,
    /// The end that answered the opening handshake.
    Server,
}

impl Role {
    /// Whether frames this end sends carry a masking key.
    pub fn masks_outgoing(self) -> bool {
        matches!(self, Self::Client)
    }

    /// Whether frames this end receives must carry a masking key.
    pub fn expects_masked(self) -> bool {
        matches!(self, Self::Server)
    }

    /// The other end.
    #[must_use]
    pub fn peer(self) -> Self {
        match self {
            Self::Client => Self::Server,
            Self::Server => Self::Client,
        }
    }
}

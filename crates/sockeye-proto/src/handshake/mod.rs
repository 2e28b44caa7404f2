//! Placeholder until the handshake lands.

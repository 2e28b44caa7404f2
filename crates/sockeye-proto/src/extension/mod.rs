//! The extension seam (RFC 6455 section 9): header grammar, negotiation hooks, and the
//! per-message transform a negotiated extension applies.
//!
//! An extension owns some RSV bits. The connection lets those bits through on the first frame of
//! a data message and hands the message's payload to [`Extension::decode`] frame by frame, with
//! the remaining message budget, so a decompressor can stop before producing more than the
//! message size limit. Outgoing messages pass through [`Extension::encode`].

pub mod deflate;
pub mod header;

use bytes::Bytes;

pub use self::deflate::{Deflate, DeflateConfig};
pub use self::header::ExtensionParams;
use crate::error::ExtensionError;
use crate::frame::{OpCode, Rsv};
use crate::prepared::SharedEncoding;

/// A negotiated extension, as the connection drives it.
pub trait Extension: Send {
    /// The extension's registered name, as in `Sec-WebSocket-Extensions`.
    fn name(&self) -> &str;

    /// The RSV bits this extension may set on the first frame of a data message.
    fn rsv(&self) -> Rsv;

    /// Transforms an outgoing text or binary message; returns the RSV bits for its first frame
    /// ([`Rsv::NONE`] when the message is sent as it is) and the payload to send.
    fn encode(&mut self, opcode: OpCode, payload: Bytes) -> (Rsv, Bytes);

    /// Decodes one received frame of a message whose first frame had this extension's RSV bits.
    /// `fin` marks the last frame. The result must not exceed `limit` bytes, the budget left for
    /// the whole message.
    ///
    /// # Errors
    /// [`ExtensionError::DecodedTooBig`] past `limit` (1009), [`ExtensionError::InvalidCompressedData`]
    /// for data the extension cannot decode (1007).
    fn decode(&mut self, payload: Bytes, fin: bool, limit: usize) -> Result<Bytes, ExtensionError>;

    /// How this extension encodes outgoing messages when that does not depend on the messages
    /// sent before, so that a message sent to many connections can be encoded once for all of
    /// them ([`PreparedMessage`](crate::PreparedMessage)). The default, `None`, says the encoding
    /// depends on this connection's state: [`encode`](Self::encode) is called for each message.
    fn shared_encoding(&self) -> Option<SharedEncoding> {
        None
    }
}

/// Negotiation for one extension, on the offering (client) and accepting (server) side.
///
/// The handshake code collects the offers and answers as [`ExtensionParams`]; an implementation
/// of this trait turns them into a running [`Extension`].
pub trait ExtensionNegotiator: Send + Sync {
    /// The extension's registered name.
    fn name(&self) -> &str;

    /// Client side: the offers to send, most preferred first.
    fn offers(&self) -> Vec<ExtensionParams>;

    /// Client side: the server accepted with `response`; `None` declines it (the client must then
    /// fail the connection, RFC 6455 section 4.1).
    fn accept_response(&self, response: &ExtensionParams) -> Option<Box<dyn Extension>>;

    /// Server side: pick the first acceptable offer, in the client's order; returns the answer to
    /// put in the response and the running extension, or `None` to decline every offer.
    fn accept_offers(
        &self,
        offers: &[ExtensionParams],
    ) -> Option<(ExtensionParams, Box<dyn Extension>)>;
}

//! What the connection delivers to the application.

use std::fmt;

use bytes::Bytes;

use crate::close::{CloseCode, CloseFrame};
use crate::display::Elided;
use crate::error::ConnectionError;
use crate::utf8::Utf8Bytes;

/// A message, received or to be sent.
#[derive(Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message: known-valid UTF-8.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A Ping with its application data (at most 125 bytes).
    Ping(Bytes),
    /// A Pong with its application data (at most 125 bytes).
    Pong(Bytes),
    /// A Close frame; `None` when it carried no status code.
    Close(Option<CloseFrame>),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Self::Binary(data.into())
    }

    /// A Ping.
    pub fn ping(data: impl Into<Bytes>) -> Self {
        Self::Ping(data.into())
    }

    /// A Pong.
    pub fn pong(data: impl Into<Bytes>) -> Self {
        Self::Pong(data.into())
    }

    /// Whether this is a text or binary message.
    pub fn is_data(&self) -> bool {
        matches!(self, Self::Text(_) | Self::Binary(_))
    }

    /// The payload's bytes (the reason, for Close).
    pub fn as_payload(&self) -> &[u8] {
        match self {
            Self::Text(text) => text.as_bytes(),
            Self::Binary(data) | Self::Ping(data) | Self::Pong(data) => data,
            Self::Close(Some(frame)) => frame.reason.as_bytes(),
            Self::Close(None) => &[],
        }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_payload().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(text) => f
                .debug_tuple("Text")
                .field(&Elided(text.as_bytes()))
                .finish(),
            Self::Binary(data) => f.debug_tuple("Binary").field(&Elided(data)).finish(),
            Self::Ping(data) => f.debug_tuple("Ping").field(&Elided(data)).finish(),
            Self::Pong(data) => f.debug_tuple("Pong").field(&Elided(data)).finish(),
            Self::Close(frame) => f.debug_tuple("Close").field(frame).finish(),
        }
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Self::text(text)
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Self::text(text)
    }
}

impl From<Utf8Bytes> for Message {
    fn from(text: Utf8Bytes) -> Self {
        Self::Text(text)
    }
}

impl From<Bytes> for Message {
    fn from(data: Bytes) -> Self {
        Self::Binary(data)
    }
}

impl From<Vec<u8>> for Message {
    fn from(data: Vec<u8>) -> Self {
        Self::binary(data)
    }
}

/// The type of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataKind {
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
}

/// One frame of a data message, delivered in streaming mode
/// ([`ConfigBuilder::streaming`](crate::ConfigBuilder::streaming)).
#[derive(Clone, PartialEq, Eq)]
pub struct DataFrame {
    /// The message's type (the first frame's opcode).
    pub kind: DataKind,
    /// The payload (decoded, where an extension applies). For text, a code point may be split
    /// between two frames; the text as a whole has been checked so far.
    pub payload: Bytes,
    /// The first frame of its message.
    pub first: bool,
    /// The last frame of its message.
    pub fin: bool,
}

impl fmt::Debug for DataFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataFrame")
            .field("kind", &self.kind)
            .field("payload", &Elided(&self.payload))
            .field("first", &self.first)
            .field("fin", &self.fin)
            .finish()
    }
}

/// Who started the end of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// The application called [`close`](crate::Connection::close).
    Local,
    /// The peer: its Close frame came first, or its transport ended.
    Remote,
    /// This library, failing the connection for a protocol error or a timeout.
    Library,
}

/// How the connection ended; delivered once, as the last event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Who started the closing.
    pub initiator: Initiator,
    /// What we sent in our Close frame (`None`: no code, or no Close frame sent).
    pub local: Option<CloseFrame>,
    /// What the peer sent in its Close frame (`None`: no code, or no Close frame received).
    pub remote: Option<CloseFrame>,
    /// Why the close was not a clean handshake; `None` for a clean close.
    pub error: Option<ConnectionError>,
}

impl Closed {
    /// Whether both Close frames were exchanged.
    pub fn is_clean(&self) -> bool {
        self.error.is_none()
    }

    /// The code that describes the ending, as section 7.1.5 defines "the WebSocket Connection
    /// Close Code": the peer's code after a clean close (1005 when its frame had none), the code
    /// we sent after a protocol error, 1006 when the transport ended or timed out.
    pub fn code(&self) -> CloseCode {
        match (&self.error, &self.remote) {
            (Some(error), _) => error.close_code(),
            (None, Some(frame)) => frame.code,
            (None, None) => CloseCode::NO_STATUS_RECEIVED,
        }
    }
}

/// What [`Connection::poll_event`](crate::Connection::poll_event) hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole message, or a control frame (Ping, Pong, the peer's Close).
    Message(Message),
    /// One frame of a data message, in streaming mode.
    Frame(DataFrame),
    /// The connection is closed; the last event. Boxed, so that the events that come by the
    /// million, messages, are moved at their own size.
    Closed(Box<Closed>),
}

//! Errors, one enum per layer. Peer faults ([`ProtocolError`]) know the close code they send;
//! caller bugs ([`ApiMisuse`]) are kept apart because no network input can cause them.

use crate::close::CloseCode;

/// The peer broke RFC 6455 (or a negotiated extension), or exceeded a configured limit.
///
/// The connection never returns these from `handle_bytes`: it fails the connection itself,
/// queues a Close frame with [`close_code`](Self::close_code), and reports the error in
/// [`Event::Closed`](crate::Event::Closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1, RSV2 or RSV3 set where no negotiated extension gave them a meaning (section 5.2).
    #[error("reserved bits {bits:#04x} set without an extension that defines them")]
    ReservedBitsSet {
        /// The RSV bits as they sit in the first header byte (0x40, 0x20, 0x10).
        bits: u8,
    },
    /// An opcode that RFC 6455 reserves (0x3-0x7, 0xB-0xF).
    #[error("reserved opcode {opcode:#x}")]
    ReservedOpcode {
        /// The four opcode bits.
        opcode: u8,
    },
    /// A control frame with FIN clear (section 5.5: control frames are never fragmented).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A control frame with more than 125 bytes of payload (section 5.5).
    #[error("control frame payload of {len} bytes exceeds 125")]
    ControlFrameTooLong {
        /// The payload length from the header.
        len: u64,
    },
    /// A 64-bit payload length with its most significant bit set (section 5.2).
    #[error("64-bit payload length with the most significant bit set")]
    InvalidPayloadLength,
    /// A client frame without a masking key (section 5.1).
    #[error("unmasked frame from a client")]
    UnmaskedFrameFromClient,
    /// A server frame with a masking key (section 5.1).
    #[error("masked frame from a server")]
    MaskedFrameFromServer,
    /// A continuation frame with no fragmented message to continue (section 5.4).
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message was unfinished (section 5.4).
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// A Close frame with a one-byte payload (section 5.5.1).
    #[error("close frame with a one-byte payload")]
    InvalidCloseLength,
    /// A Close frame whose code may not be sent (section 7.4).
    #[error("close code {code} may not be sent")]
    InvalidCloseCode {
        /// The code as received.
        code: u16,
    },
    /// Text (a message or a close reason) that is not UTF-8 (section 8.1).
    #[error("invalid UTF-8 after {valid_up_to} valid bytes")]
    InvalidUtf8 {
        /// Valid bytes from the start of the text.
        valid_up_to: usize,
    },
    /// A frame payload over the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooBig {
        /// The payload length from the header.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// A message over the configured maximum (after decompression, where an extension inflates).
    #[error("message exceeds the limit of {max} bytes")]
    MessageTooBig {
        /// The limit in force.
        max: usize,
    },
    /// A message split into more frames than allowed.
    #[error("message split into more than {max} frames")]
    TooManyFragments {
        /// The limit in force.
        max: usize,
    },
    /// A negotiated extension could not decode what it received.
    #[error("extension error: {0}")]
    Extension(#[from] ExtensionError),
}

impl ProtocolError {
    /// The close code sent when this error fails the connection (RFC 6455 section 7.4.1).
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::ReservedBitsSet { .. }
            | Self::ReservedOpcode { .. }
            | Self::FragmentedControlFrame
            | Self::ControlFrameTooLong { .. }
            | Self::InvalidPayloadLength
            | Self::UnmaskedFrameFromClient
            | Self::MaskedFrameFromServer
            | Self::UnexpectedContinuation
            | Self::ExpectedContinuation
            | Self::InvalidCloseLength
            | Self::InvalidCloseCode { .. } => CloseCode::PROTOCOL_ERROR,
            Self::InvalidUtf8 { .. } => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooBig { .. }
            | Self::MessageTooBig { .. }
            | Self::TooManyFragments { .. } => CloseCode::MESSAGE_TOO_BIG,
            Self::Extension(e) => e.close_code(),
        }
    }
}

/// A negotiated extension failed on received data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtensionError {
    /// The compressed data was corrupt (RFC 7692 section 6.2: fail with 1007).
    #[error("invalid compressed data")]
    InvalidCompressedData,
    /// The decoded message would exceed the message size limit (1009).
    #[error("decoded message exceeds the limit of {max} bytes")]
    DecodedTooBig {
        /// The limit in force.
        max: usize,
    },
    /// Any other failure of the extension (1011, with no details sent to the peer).
    #[error("extension failed: {0}")]
    Internal(&'static str),
}

impl ExtensionError {
    /// The close code sent when this error fails the connection.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            Self::DecodedTooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
            Self::Internal(_) => CloseCode::INTERNAL_ERROR,
        }
    }
}

/// Why a connection ended other than by a clean close handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer broke the protocol; the Close frame carrying its code was queued.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The transport ended before the close handshake finished (reported as 1006).
    #[error("connection ended without a close handshake")]
    UnexpectedEof,
    /// The peer did not answer our Close frame in time.
    #[error("timed out waiting for the peer's close frame")]
    CloseTimeout,
    /// No pong (nor any other frame) arrived within the pong timeout after a keepalive ping.
    #[error("timed out waiting for a pong")]
    PongTimeout,
}

impl ConnectionError {
    /// The close code that describes this ending locally: the code sent for a protocol error,
    /// 1006 ([`CloseCode::ABNORMAL`]) for the rest.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::Protocol(e) => e.close_code(),
            Self::UnexpectedEof | Self::CloseTimeout | Self::PongTimeout => CloseCode::ABNORMAL,
        }
    }
}

/// The caller used the API wrongly. No network input causes these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiMisuse {
    /// A data frame, ping or pong after our Close frame was queued (section 5.5.1).
    #[error("the connection is closing; nothing more can be sent")]
    Closing,
    /// A ping or pong payload over 125 bytes.
    #[error("control frame payload of {len} bytes exceeds 125")]
    ControlPayloadTooLong {
        /// The payload length given.
        len: usize,
    },
    /// A close code that must not appear on the wire (1005, 1006, 1015, or outside the ranges).
    #[error("close code {code} may not be sent")]
    InvalidCloseCode {
        /// The code given.
        code: u16,
    },
    /// A close reason over 123 bytes.
    #[error("close reason of {len} bytes exceeds 123")]
    CloseReasonTooLong {
        /// The reason's length.
        len: usize,
    },
    /// A whole message or a first fragment while a fragmented message was still being sent.
    #[error("a fragmented message is being sent; finish it first")]
    FragmentedMessageInProgress,
}

/// A configuration value was out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit that must be positive was zero.
    #[error("{field} must be greater than zero")]
    Zero {
        /// The setting's name.
        field: &'static str,
    },
    /// Two settings contradict each other.
    #[error("{field} must not exceed {other}")]
    Exceeds {
        /// The setting that is too large.
        field: &'static str,
        /// The setting it must not exceed.
        other: &'static str,
    },
    /// A value outside the range the protocol allows.
    #[error("{field} is out of range")]
    OutOfRange {
        /// The setting's name.
        field: &'static str,
    },
}

//! Frames (RFC 6455 section 5): the pure types, and every header rule in one place.
//!
//! [`FrameHead::parse`] reads a header without consuming anything, [`FrameHead::check`] applies
//! the rules that depend on role, extensions and limits, and [`FrameHead::encode`] writes a header
//! into at most [`MAX_HEAD_LEN`] bytes, leaving the payload to be written separately (vectored).

mod decode;
mod encode;

use std::fmt;

use bytes::Bytes;

pub use self::decode::FrameDecoder;
#[cfg(fuzzing)]
pub(crate) use self::decode::assert_whole_message_agrees;
use crate::error::ProtocolError;
use crate::extension::deflate::max_compressed_len;
use crate::role::Role;

/// The longest frame header: 2 bytes, an 8-byte extended length and a 4-byte masking key.
pub const MAX_HEAD_LEN: usize = 14;

/// The largest payload a control frame may carry (section 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame's opcode. Closed: the reserved opcodes are a [`ProtocolError::ReservedOpcode`].
///
/// Each variant's discriminant is its four bits on the wire, so that converting either way is
/// free (the header is read for every frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation = 0x0,
    /// 0x1: the first frame of a text message.
    Text = 0x1,
    /// 0x2: the first frame of a binary message.
    Binary = 0x2,
    /// 0x8: Close.
    Close = 0x8,
    /// 0x9: Ping.
    Ping = 0x9,
    /// 0xA: Pong.
    Pong = 0xa,
}

impl OpCode {
    /// The opcode for the low four bits of the first header byte.
    ///
    /// # Errors
    /// [`ProtocolError::ReservedOpcode`] for 0x3-0x7 and 0xB-0xF: section 5.2 says a recipient
    /// that meets an opcode it does not know must fail the connection.
    #[inline]
    pub fn from_bits(bits: u8) -> Result<Self, ProtocolError> {
        Ok(match bits & 0x0f {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xa => Self::Pong,
            opcode => return Err(ProtocolError::ReservedOpcode { opcode }),
        })
    }

    /// The four opcode bits.
    #[inline]
    pub fn bits(self) -> u8 {
        self as u8
    }

    /// Close, Ping and Pong (opcodes with the high bit set, section 5.5).
    #[inline]
    pub fn is_control(self) -> bool {
        self.bits() & 0x8 != 0
    }
}

/// The three reserved bits of a header, kept where they sit in the first byte (0x70).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rsv(u8);

impl Rsv {
    /// No bit set.
    pub const NONE: Self = Self(0);
    /// RSV1 (0x40), used by permessage-deflate for "compressed".
    pub const RSV1: Self = Self(0x40);
    /// RSV2 (0x20).
    pub const RSV2: Self = Self(0x20);
    /// RSV3 (0x10).
    pub const RSV3: Self = Self(0x10);

    /// The bits of the first header byte that are RSV bits.
    pub fn from_byte(byte: u8) -> Self {
        Self(byte & 0x70)
    }

    /// The bits, in their header-byte positions.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether no bit is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every bit of `other` is set in `self`.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits set in `self` but not in `allowed`.
    #[must_use]
    pub fn outside(self, allowed: Self) -> Self {
        Self(self.0 & !allowed.0)
    }
}

impl fmt::Debug for Rsv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rsv({:#04x})", self.0)
    }
}

/// A frame header as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// The final frame of a message.
    pub fin: bool,
    /// The reserved bits.
    pub rsv: Rsv,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on every frame a client sends.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

/// What [`FrameHead::check`] needs to know about the connection.
#[derive(Debug, Clone, Copy)]
pub struct HeadRules {
    /// Who receives the frame.
    pub role: Role,
    /// RSV bits a negotiated extension allows on the first frame of a data message.
    pub extension_rsv: Rsv,
    /// The largest payload accepted; a frame with RSV1 set (compressed, under
    /// permessage-deflate) may be longer by deflate's worst case, see
    /// [`Config::max_compressed_frame_size`](crate::Config::max_compressed_frame_size).
    pub max_frame_size: usize,
}

impl FrameHead {
    /// A header for an unmasked frame.
    pub fn new(fin: bool, opcode: OpCode, payload_len: u64) -> Self {
        Self {
            fin,
            rsv: Rsv::NONE,
            opcode,
            mask: None,
            payload_len,
        }
    }

    /// Checks the rules that depend on who receives the frame and what was negotiated:
    /// masking by role (section 5.1), RSV bits (section 5.2), and the frame size limit.
    /// Rules that hold for every connection were checked by [`parse`](Self::parse).
    ///
    /// RSV bits an extension owns are allowed only on the first frame of a data message, as
    /// RFC 7692 section 6 specifies for permessage-deflate; continuation and control frames
    /// carry none.
    ///
    /// # Errors
    /// The broken rule, each with its close code.
    #[inline]
    pub fn check(&self, rules: &HeadRules) -> Result<(), ProtocolError> {
        // Section 5.1: a server must close on an unmasked frame, a client on a masked one.
        match (rules.role, self.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrameFromClient),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrameFromServer),
            _ => {}
        }
        let allowed = match self.opcode {
            OpCode::Text | OpCode::Binary => rules.extension_rsv,
            OpCode::Continuation | OpCode::Close | OpCode::Ping | OpCode::Pong => Rsv::NONE,
        };
        // Section 5.2: a nonzero RSV bit no extension defines fails the connection.
        let stray = self.rsv.outside(allowed);
        if !stray.is_empty() {
            return Err(ProtocolError::ReservedBitsSet { bits: stray.bits() });
        }
        let max = if self.rsv.contains(Rsv::RSV1) {
            max_compressed_len(rules.max_frame_size)
        } else {
            rules.max_frame_size
        };
        if self.payload_len > max as u64 {
            return Err(ProtocolError::FrameTooBig {
                len: self.payload_len,
                max,
            });
        }
        Ok(())
    }

    /// The length of this header on the wire.
    pub fn encoded_len(&self) -> usize {
        let len: usize = match self.payload_len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        };
        if self.mask.is_some() {
            len.saturating_add(4)
        } else {
            len
        }
    }
}

/// A whole frame with its payload, unmasked.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// The final frame of a message.
    pub fin: bool,
    /// The reserved bits.
    pub rsv: Rsv,
    /// The opcode.
    pub opcode: OpCode,
    /// The payload, unmasked.
    pub payload: Bytes,
}

impl Frame {
    /// A final frame with no RSV bits.
    pub fn new(opcode: OpCode, payload: impl Into<Bytes>) -> Self {
        Self {
            fin: true,
            rsv: Rsv::NONE,
            opcode,
            payload: payload.into(),
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("fin", &self.fin)
            .field("rsv", &self.rsv)
            .field("opcode", &self.opcode)
            .field("payload", &crate::display::Elided(&self.payload))
            .finish()
    }
}

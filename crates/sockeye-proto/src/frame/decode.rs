//! Incremental header decoding: `Ok(None)` means more bytes are needed and nothing was consumed.

use bytes::{Buf, BytesMut};

use super::{Frame, FrameHead, HeadRules, MAX_CONTROL_PAYLOAD, OpCode, Rsv};
use crate::error::ProtocolError;
use crate::mask::apply_mask;

impl FrameHead {
    /// Reads a header from the start of `buf`; `Ok(None)` when `buf` is too short to hold it.
    ///
    /// Returns the header and its length. Checks the rules every frame obeys whatever the
    /// connection: known opcode, control frames final and at most 125 bytes, and a 64-bit length
    /// with its top bit clear. Nothing is allocated, whatever length the header claims.
    ///
    /// # Errors
    /// The broken rule, each with its close code.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let Some(&[b0, b1]) = buf.first_chunk::<2>() else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        let rsv = Rsv::from_byte(b0);
        let opcode = OpCode::from_bits(b0)?;
        let masked = b1 & 0x80 != 0;
        let rest = buf.get(2..).unwrap_or_default();
        let (payload_len, rest, len_bytes) = match b1 & 0x7f {
            126 => match rest.split_first_chunk::<2>() {
                Some((len, rest)) => (u64::from(u16::from_be_bytes(*len)), rest, 2),
                None => return Ok(None),
            },
            127 => match rest.split_first_chunk::<8>() {
                Some((len, rest)) => {
                    let len = u64::from_be_bytes(*len);
                    // Section 5.2: the most significant bit of a 64-bit length must be 0.
                    if len >> 63 != 0 {
                        return Err(ProtocolError::InvalidPayloadLength);
                    }
                    (len, rest, 8)
                }
                None => return Ok(None),
            },
            len => (u64::from(len), rest, 0),
        };
        if opcode.is_control() {
            // Section 5.5: control frames carry at most 125 bytes and are never fragmented.
            if payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooLong { len: payload_len });
            }
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
        }
        let mask = if masked {
            match rest.first_chunk::<4>() {
                Some(key) => Some(*key),
                None => return Ok(None),
            }
        } else {
            None
        };
        let head_len = 2usize
            .saturating_add(len_bytes)
            .saturating_add(if masked { 4 } else { 0 });
        let head = Self {
            fin,
            rsv,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((head, head_len)))
    }
}

/// Splits whole frames off a read buffer, without copying their payloads.
///
/// This is the frame layer alone, for tools and tests; [`Connection`](crate::Connection) adds
/// message assembly, control frame handling and fail-fast UTF-8 checks on top of the same header
/// rules.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    rules: HeadRules,
}

impl FrameDecoder {
    /// A decoder for frames received under `rules`.
    pub fn new(rules: HeadRules) -> Self {
        Self { rules }
    }

    /// Takes the next whole frame off the front of `buf`, unmasked; `Ok(None)` when `buf` does
    /// not yet hold one (nothing is consumed then).
    ///
    /// The payload shares `buf`'s allocation: it is split off and unmasked in place.
    ///
    /// # Errors
    /// Any header rule broken, checked as soon as the header is complete, before the payload
    /// has arrived.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        let Some((head, head_len)) = FrameHead::parse(buf)? else {
            return Ok(None);
        };
        head.check(&self.rules)?;
        // `check` bounded the length by `max_frame_size`, a usize.
        let payload_len =
            usize::try_from(head.payload_len).map_err(|_| ProtocolError::FrameTooBig {
                len: head.payload_len,
                max: self.rules.max_frame_size,
            })?;
        let Some(total) = head_len.checked_add(payload_len) else {
            return Ok(None);
        };
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(head_len);
        let mut payload = buf.split_to(payload_len);
        if let Some(key) = head.mask {
            apply_mask(&mut payload, key, 0);
        }
        Ok(Some(Frame {
            fin: head.fin,
            rsv: head.rsv,
            opcode: head.opcode,
            payload: payload.freeze(),
        }))
    }

    /// How many more bytes `buf` needs before [`decode`](Self::decode) can return a frame:
    /// at least 2 while no header is complete.
    pub fn read_hint(&self, buf: &[u8]) -> usize {
        match FrameHead::parse(buf) {
            Ok(Some((head, head_len))) => usize::try_from(head.payload_len)
                .ok()
                .and_then(|len| len.checked_add(head_len))
                .map_or(0, |total| total.saturating_sub(buf.len())),
            Ok(None) => 2usize.saturating_sub(buf.len()).max(1),
            Err(_) => 0,
        }
    }
}

//! Header decoding, the one reader of frame headers: `Ok(None)` means more bytes are needed and
//! nothing was consumed. [`FrameDecoder`] splits whole frames off a buffer; its
//! [`decode_whole_message`](FrameDecoder::decode_whole_message) is the connection's fast path.

use bytes::{Buf, BytesMut};

use super::{Frame, FrameHead, HeadRules, MAX_CONTROL_PAYLOAD, OpCode, Rsv};
use crate::error::ProtocolError;
use crate::mask::apply_mask;
use crate::role::Role;

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
        let (payload_len, rest) = match b1 & 0x7f {
            126 => match rest.split_first_chunk::<2>() {
                Some((len, rest)) => (u64::from(u16::from_be_bytes(*len)), rest),
                None => return Ok(None),
            },
            127 => match rest.split_first_chunk::<8>() {
                Some((len, rest)) => {
                    let len = u64::from_be_bytes(*len);
                    // Section 5.2: the most significant bit of a 64-bit length must be 0.
                    if len >> 63 != 0 {
                        return Err(ProtocolError::InvalidPayloadLength);
                    }
                    (len, rest)
                }
                None => return Ok(None),
            },
            len => (u64::from(len), rest),
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
        let (mask, rest) = if masked {
            match rest.split_first_chunk::<4>() {
                Some((key, rest)) => (Some(*key), rest),
                None => return Ok(None),
            }
        } else {
            (None, rest)
        };
        // `rest` is what follows the header in `buf`.
        let head_len = buf.len().wrapping_sub(rest.len());
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

    /// The rules frames are checked against.
    pub fn rules(&self) -> &HeadRules {
        &self.rules
    }

    /// Takes a whole message in one frame off the front of `buf`, unmasked: the common case, which
    /// [`Connection`](crate::Connection) reads this way when no fragmented message is in progress.
    ///
    /// `Some` only for a final text or binary frame with no RSV bits, masked as the rules' role
    /// expects, at most `max_message_size` and the frame size limit long, and entirely in `buf`.
    /// Such a frame is one [`decode`](Self::decode) would return the same way, and one that
    /// passes every rule of message assembly. Anything else, including anything invalid or
    /// incomplete, is `None` with nothing consumed: the general path then reads it and names
    /// what is wrong. Text is not checked for UTF-8 here.
    #[inline]
    pub fn decode_whole_message(
        &self,
        buf: &mut BytesMut,
        max_message_size: usize,
    ) -> Option<Frame> {
        // Only the first byte of a final text (0x81) or binary (0x82) frame without RSV bits;
        // knowing it lets the compiler drop the parts of `parse` that cannot apply.
        if !matches!(buf.first(), Some(0x81 | 0x82)) {
            return None;
        }
        let Ok(Some((head, head_len))) = FrameHead::parse(buf) else {
            return None;
        };
        // Section 5.1: masked exactly when a client sent it.
        let key = match (self.rules.role, head.mask) {
            (Role::Server, Some(key)) => Some(key),
            (Role::Client, None) => None,
            (Role::Server, None) | (Role::Client, Some(_)) => return None,
        };
        let payload_len = usize::try_from(head.payload_len).ok()?;
        if payload_len > self.rules.max_frame_size
            || payload_len > max_message_size
            // `parse` read `head_len` bytes of `buf`: no wrap.
            || buf.len().wrapping_sub(head_len) < payload_len
        {
            return None;
        }
        // One split, and the header skipped on the frozen payload: a `BytesMut` advance is a
        // call into `bytes`, a `Bytes` advance two additions.
        // `parse` read `head_len` bytes and `payload_len` more are in `buf`: no wrap.
        let mut frame = buf.split_to(head_len.wrapping_add(payload_len));
        if let Some(key) = key
            && let Some(payload) = frame.get_mut(head_len..)
        {
            apply_mask(payload, key, 0);
        }
        let mut payload = frame.freeze();
        payload.advance(head_len);
        Some(Frame {
            fin: true,
            rsv: Rsv::NONE,
            opcode: head.opcode,
            payload,
        })
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

/// Checks that [`FrameDecoder::decode_whole_message`] agrees with [`FrameDecoder::decode`] on
/// `bytes`: what it takes, `decode` returns the same way and leaves the same rest; what it
/// leaves, it leaves untouched, and `decode` finds invalid, incomplete, or not a whole message
/// within `max_message_size`. Panics when they disagree; for the tests and the fuzzer.
#[cfg(any(test, fuzzing))]
pub(crate) fn assert_whole_message_agrees(rules: HeadRules, max_message_size: usize, bytes: &[u8]) {
    let decoder = FrameDecoder::new(rules);
    let mut fast = BytesMut::from(bytes);
    let whole = decoder.decode_whole_message(&mut fast, max_message_size);
    let mut general = BytesMut::from(bytes);
    let frame = FrameDecoder::new(rules).decode(&mut general);
    if let Some(whole) = whole {
        assert_eq!(frame, Ok(Some(whole)), "the general decoder disagrees");
        assert_eq!(fast, general, "they consumed different lengths");
    } else {
        assert_eq!(fast, bytes, "consumed bytes without taking a message");
        if let Ok(Some(frame)) = frame {
            let takeable = frame.fin
                && frame.rsv.is_empty()
                && matches!(frame.opcode, OpCode::Text | OpCode::Binary)
                && frame.payload.len() <= max_message_size;
            assert!(!takeable, "left a whole message: {frame:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn rules(role: Role) -> HeadRules {
        HeadRules {
            role,
            extension_rsv: Rsv::RSV1,
            max_frame_size: 1 << 20,
        }
    }

    /// A frame with any first byte, masked with `KEY` when `masked`.
    fn frame(b0: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
        let mut head = FrameHead::new(true, OpCode::Text, payload.len() as u64);
        head.mask = masked.then_some(KEY);
        let mut out = Vec::new();
        head.encode_into(&mut out);
        out[0] = b0;
        let start = out.len();
        out.extend_from_slice(payload);
        if masked {
            apply_mask(&mut out[start..], KEY, 0);
        }
        out
    }

    #[test]
    fn takes_a_whole_message_as_decode_does() {
        let payload: Vec<u8> = (0..=255).collect();
        for (role, masked) in [(Role::Server, true), (Role::Client, false)] {
            for b0 in [0x81, 0x82] {
                for len in [0, 1, 125, 126, 256, 70_000] {
                    let payload = payload
                        .iter()
                        .copied()
                        .cycle()
                        .take(len)
                        .collect::<Vec<_>>();
                    let mut bytes = frame(b0, masked, &payload);
                    bytes.extend_from_slice(b"next");
                    let mut buf = BytesMut::from(&bytes[..]);
                    let taken = FrameDecoder::new(rules(role)).decode_whole_message(&mut buf, len);
                    let taken = taken.expect("a whole message");
                    assert_eq!(taken.payload, payload);
                    assert_eq!(taken.opcode, OpCode::from_bits(b0).unwrap());
                    assert_eq!(buf, &b"next"[..]);
                    assert_whole_message_agrees(rules(role), len, &bytes);
                }
            }
        }
    }

    #[test]
    fn leaves_everything_else_untouched() {
        let server = rules(Role::Server);
        let cases: Vec<(HeadRules, usize, Vec<u8>)> = vec![
            // Not final; RSV1 (an extension's); RSV2; continuation; ping; close; reserved opcode.
            (server, 100, frame(0x01, true, b"a")),
            (server, 100, frame(0xc1, true, b"a")),
            (server, 100, frame(0xa2, true, b"a")),
            (server, 100, frame(0x80, true, b"a")),
            (server, 100, frame(0x89, true, b"a")),
            (server, 100, frame(0x88, true, b"")),
            (server, 100, frame(0x83, true, b"a")),
            // Unmasked to a server, masked to a client.
            (server, 100, frame(0x81, false, b"a")),
            (rules(Role::Client), 100, frame(0x81, true, b"a")),
            // Over the message limit, over the frame limit.
            (server, 3, frame(0x82, true, b"abcd")),
            (
                HeadRules {
                    max_frame_size: 3,
                    ..server
                },
                100,
                frame(0x82, true, b"abcd"),
            ),
            // A 64-bit length with the top bit set.
            (
                server,
                100,
                vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4],
            ),
            // Text that is not UTF-8 is taken: the connection checks it.
            (server, 100, frame(0x81, true, b"\xff")),
        ];
        for (i, (rules, max, bytes)) in cases.iter().enumerate() {
            let mut buf = BytesMut::from(&bytes[..]);
            let taken = FrameDecoder::new(*rules).decode_whole_message(&mut buf, *max);
            assert_eq!(taken.is_some(), i == cases.len() - 1, "case {i}");
            assert_whole_message_agrees(*rules, *max, bytes);
        }
    }

    #[test]
    fn byte_by_byte_takes_nothing_until_the_frame_is_complete() {
        for (role, masked) in [(Role::Server, true), (Role::Client, false)] {
            for len in [0, 5, 200, 70_000] {
                let payload = vec![b'x'; len];
                let bytes = frame(0x81, masked, &payload);
                let decoder = FrameDecoder::new(rules(role));
                let mut buf = BytesMut::new();
                for (i, &b) in bytes.iter().enumerate() {
                    buf.extend_from_slice(&[b]);
                    let taken = decoder.decode_whole_message(&mut buf, usize::MAX);
                    if i + 1 < bytes.len() {
                        assert_eq!(taken, None, "after {} of {} bytes", i + 1, bytes.len());
                        assert_eq!(buf.len(), i + 1);
                    } else {
                        assert_eq!(taken.map(|f| f.payload), Some(payload.clone().into()));
                        assert!(buf.is_empty());
                    }
                }
            }
        }
    }

    proptest! {
        /// Any bytes, any limits: the whole-message path and the general decoder agree.
        #[test]
        fn agrees_with_decode_on_any_input(
            bytes in prop::collection::vec(any::<u8>(), 0..64),
            client in any::<bool>(),
            max_message in 0usize..40,
            max_frame in 0usize..40,
        ) {
            let role = if client { Role::Client } else { Role::Server };
            let rules = HeadRules { role, extension_rsv: Rsv::RSV1, max_frame_size: max_frame };
            assert_whole_message_agrees(rules, max_message, &bytes);
        }

        /// Valid frames of every kind, split anywhere: at each point the two agree.
        #[test]
        fn agrees_with_decode_on_frames(
            b0 in prop_oneof![Just(0x81u8), Just(0x82), Just(0x01), Just(0x80), Just(0x89), Just(0xc1)],
            payload in prop::collection::vec(any::<u8>(), 0..300),
            client in any::<bool>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let role = if client { Role::Client } else { Role::Server };
            let bytes = frame(b0, role.expects_masked(), &payload);
            let bytes = &bytes[..cut.index(bytes.len() + 1)];
            assert_whole_message_agrees(rules(role), 200, bytes);
        }
    }
}

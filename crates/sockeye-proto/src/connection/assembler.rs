//! Message assembly: data frames into messages (RFC 6455 section 5.4), under the message limits
//! (size, after an extension decodes; number of fragments), with text checked for UTF-8 across
//! fragments (section 8.1).
//!
//! The connection reads frames and hands each data frame here: first its header
//! ([`check_head`](Assembler::check_head), before the payload is read), then, in pieces as they
//! arrive, the payload of text to check ([`feed_text`](Assembler::feed_text)), and finally the
//! whole frame ([`push`](Assembler::push)), which returns what to deliver.

use bytes::{Bytes, BytesMut};

use crate::config::Config;
use crate::error::ProtocolError;
use crate::event::{DataFrame, DataKind, Event, Message};
use crate::extension::Extension;
use crate::frame::{Frame, FrameHead, OpCode};
use crate::utf8::{Utf8Bytes, Utf8Error, Utf8Validator};

/// The message being received, if any, and the UTF-8 state of its text.
#[derive(Debug, Default)]
pub(super) struct Assembler {
    incoming: Option<Incoming>,
    utf8: Utf8Validator,
}

/// A data message being received.
#[derive(Debug)]
struct Incoming {
    kind: DataKind,
    /// The first frame had the extension's RSV bits: decode each frame through it.
    encoded: bool,
    frames: usize,
    /// Bytes received so far (after decoding).
    size: usize,
    /// The assembled payload; unused in streaming mode.
    buf: BytesMut,
}

impl Assembler {
    /// Whether a fragmented message has begun and not ended.
    #[inline]
    pub(super) fn in_progress(&self) -> bool {
        self.incoming.is_some()
    }

    /// Drops the message in progress (the connection closed or failed).
    pub(super) fn reset(&mut self) {
        self.incoming = None;
        self.utf8 = Utf8Validator::new();
    }

    /// Checks a frame header against the message in progress (section 5.4) and the message
    /// limits, before its payload is read. Returns whether its payload is text to check for
    /// UTF-8 as it arrives ([`feed_text`](Self::feed_text)).
    pub(super) fn check_head(
        &self,
        head: &FrameHead,
        config: &Config,
    ) -> Result<bool, ProtocolError> {
        let max = config.max_message_size();
        let encoded = !head.rsv.is_empty();
        match (head.opcode, &self.incoming) {
            (OpCode::Close | OpCode::Ping | OpCode::Pong, _) => Ok(false),
            // Section 5.4: fragments of one message may not interleave with another message.
            (OpCode::Text | OpCode::Binary, Some(_)) => Err(ProtocolError::ExpectedContinuation),
            (OpCode::Continuation, None) => Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, None) => {
                if !encoded && head.payload_len > max as u64 {
                    return Err(ProtocolError::MessageTooBig { max });
                }
                Ok(head.opcode == OpCode::Text && !encoded)
            }
            (OpCode::Continuation, Some(incoming)) => {
                if incoming.frames >= config.max_fragments() {
                    return Err(ProtocolError::TooManyFragments {
                        max: config.max_fragments(),
                    });
                }
                // Streaming mode holds nothing of the message: the limit is per frame there.
                let kept = if config.streaming() {
                    0
                } else {
                    incoming.size as u64
                };
                let total = kept.saturating_add(head.payload_len);
                if !incoming.encoded && total > max as u64 {
                    return Err(ProtocolError::MessageTooBig { max });
                }
                Ok(incoming.kind == DataKind::Text && !incoming.encoded)
            }
        }
    }

    /// Checks the next piece of a text payload as it arrives, so that text which can no longer
    /// become valid UTF-8 fails the connection now (section 8.1), not when the message ends.
    pub(super) fn feed_text(&mut self, piece: &[u8]) -> Result<(), ProtocolError> {
        self.utf8.feed(piece).map_err(invalid_utf8)
    }

    /// Adds a complete data frame (its header passed [`check_head`](Self::check_head)) to the
    /// message. Returns the event to deliver: the message when this frame ends it, each frame in
    /// streaming mode, nothing while a message is still being gathered.
    #[inline]
    pub(super) fn push(
        &mut self,
        frame: Frame,
        config: &Config,
        extension: Option<&mut dyn Extension>,
    ) -> Result<Option<Event>, ProtocolError> {
        let first = frame.opcode != OpCode::Continuation;
        let mut incoming = match self.incoming.take() {
            Some(incoming) => incoming,
            None => Incoming {
                kind: if frame.opcode == OpCode::Text {
                    DataKind::Text
                } else {
                    DataKind::Binary
                },
                encoded: !frame.rsv.is_empty(),
                frames: 0,
                size: 0,
                buf: BytesMut::new(),
            },
        };
        incoming.frames = incoming.frames.saturating_add(1);
        let max = config.max_message_size();
        let payload = if incoming.encoded {
            let budget = if config.streaming() {
                max
            } else {
                max.saturating_sub(incoming.size)
            };
            let extension = extension.ok_or(ProtocolError::ReservedBitsSet {
                bits: frame.rsv.bits(),
            })?;
            let decoded = extension.decode(frame.payload, frame.fin, budget)?;
            if decoded.len() > budget {
                return Err(ProtocolError::MessageTooBig { max });
            }
            if incoming.kind == DataKind::Text {
                self.feed_text(&decoded)?;
            }
            decoded
        } else {
            frame.payload
        };
        incoming.size = incoming.size.saturating_add(payload.len());
        if frame.fin && incoming.kind == DataKind::Text {
            self.utf8.finish().map_err(invalid_utf8)?;
        }

        if config.streaming() {
            let event = Event::Frame(DataFrame {
                kind: incoming.kind,
                payload,
                first,
                fin: frame.fin,
            });
            if !frame.fin {
                self.incoming = Some(incoming);
            }
            return Ok(Some(event));
        }
        if !frame.fin {
            incoming.buf.extend_from_slice(&payload);
            self.incoming = Some(incoming);
            return Ok(None);
        }
        // A message in one frame keeps the read buffer's allocation: no copy.
        let data = if first {
            payload
        } else {
            incoming.buf.extend_from_slice(&payload);
            incoming.buf.freeze()
        };
        let message = message(incoming.kind, data).map_err(invalid_utf8)?;
        Ok(Some(Event::Message(message)))
    }
}

/// A complete message's payload as the message: text is checked for UTF-8 once, here, where a
/// whole message in one frame skipped the piecewise check.
#[inline]
pub(super) fn message(kind: DataKind, data: Bytes) -> Result<Message, Utf8Error> {
    Ok(match kind {
        DataKind::Binary => Message::Binary(data),
        DataKind::Text => Message::Text(Utf8Bytes::try_from(data)?),
    })
}

/// The error that fails the connection for text that is not UTF-8 (1007).
pub(super) fn invalid_utf8(error: Utf8Error) -> ProtocolError {
    ProtocolError::InvalidUtf8 {
        valid_up_to: error.valid_up_to(),
    }
}

//! A data message framed once for many connections: fan-out without encoding per receiver.
//!
//! A server does not mask what it sends (RFC 6455 section 5.1), so the frame of a message is the
//! same bytes on every server connection that sends it as it is. [`PreparedMessage`] holds that
//! frame, built once, and [`Connection::send_prepared`](crate::Connection::send_prepared) queues
//! those very bytes.
//!
//! permessage-deflate (RFC 7692) changes the bytes, and how depends on the connection: with
//! context takeover each compressor carries what came before, so such a connection compresses the
//! message itself, as for any message it sends. Without it (`server_no_context_takeover`, section
//! 7.1.1.1), every message is compressed from a fresh state, so connections that agree on the
//! window and level produce the same bytes: the prepared message compresses once, on first use,
//! and shares that frame with each of them. [`SharedEncoding`] says which of the two a
//! connection's extension is.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::{DataKind, Message};
use crate::extension::deflate;
use crate::frame::{FrameHead, MAX_HEAD_LEN, OpCode, Rsv};
use crate::utf8::Utf8Bytes;

/// How an extension encodes a message when that does not depend on the messages sent before,
/// so that equal values encode a message to equal bytes on every connection.
///
/// Returned by [`Extension::shared_encoding`](crate::extension::Extension::shared_encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SharedEncoding {
    /// permessage-deflate without context takeover on the sending side.
    Deflate {
        /// The LZ77 window the sender compresses with, 8 to 15 bits (8 cannot be compressed
        /// with: such messages go out uncompressed).
        window_bits: u8,
        /// zlib level, 0 to 9.
        level: u32,
        /// Messages shorter than this are sent uncompressed.
        threshold: usize,
    },
}

/// Compressed frames are keyed by window and level; a server has one of each in practice, and
/// there are at most 7 × 10 of them.
type DeflateKey = (u8, u32);

/// A text or binary message, framed once for every server connection that sends it.
///
/// Build it once per message, share it (it is `Sync`; wrap it in an `Arc`), and give it to
/// [`Connection::send_prepared`](crate::Connection::send_prepared) of each connection. The
/// unmasked frame is built here; a compressed frame is built on first use by a connection that
/// compresses without context takeover, once per window and level. Clients, which mask, and
/// connections with context takeover encode their own frame from [`payload`](Self::payload).
pub struct PreparedMessage {
    message: Message,
    frame: Bytes,
    /// The first compressed frame made (the common case: one server configuration).
    deflated: OnceLock<(DeflateKey, Option<Bytes>)>,
    /// Further ones, for connections that negotiated another window or level.
    deflated_other: Mutex<Vec<(DeflateKey, Option<Bytes>)>>,
    compressions: AtomicUsize,
}

impl PreparedMessage {
    /// Frames `message`. `None` for anything but [`Message::Text`] and [`Message::Binary`]:
    /// control frames are per connection.
    pub fn new(message: Message) -> Option<Self> {
        let opcode = match &message {
            Message::Text(_) => OpCode::Text,
            Message::Binary(_) => OpCode::Binary,
            _ => return None,
        };
        Some(Self::framed(message, opcode))
    }

    /// A text message, framed.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::framed(Message::Text(text.into()), OpCode::Text)
    }

    /// A binary message, framed.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Self::framed(Message::Binary(data.into()), OpCode::Binary)
    }

    fn framed(message: Message, opcode: OpCode) -> Self {
        let frame = frame(opcode, Rsv::NONE, message.as_payload());
        Self {
            message,
            frame,
            deflated: OnceLock::new(),
            deflated_other: Mutex::new(Vec::new()),
            compressions: AtomicUsize::new(0),
        }
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Text or binary.
    pub fn kind(&self) -> DataKind {
        match self.message {
            Message::Text(_) => DataKind::Text,
            _ => DataKind::Binary,
        }
    }

    /// The message's payload, as given.
    pub fn payload(&self) -> &[u8] {
        self.message.as_payload()
    }

    /// The uncompressed server frame: header and payload, unmasked.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// How many compressed frames were built for this message (0 until a connection that
    /// compresses without context takeover sends it, then one per window and level).
    pub fn compressions(&self) -> usize {
        self.compressions.load(Ordering::Relaxed)
    }

    /// The frame a server connection whose extension encodes as `encoding` sends: shared by
    /// every such connection.
    pub(crate) fn frame_for(&self, encoding: SharedEncoding) -> Bytes {
        match encoding {
            SharedEncoding::Deflate {
                window_bits,
                level,
                threshold,
            } => {
                // As `Deflate::encode` decides: short messages, and an 8-bit window zlib
                // cannot compress with, go out as they are.
                if self.payload().len() < threshold || window_bits < 9 {
                    return self.frame.clone();
                }
                self.deflated((window_bits, level))
                    .unwrap_or_else(|| self.frame.clone())
            }
        }
    }

    fn deflated(&self, key: DeflateKey) -> Option<Bytes> {
        let (first_key, first) = self.deflated.get_or_init(|| (key, self.deflate(key)));
        if *first_key == key {
            return first.clone();
        }
        let mut others = self
            .deflated_other
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, frame)) = others.iter().find(|(k, _)| *k == key) {
            return frame.clone();
        }
        let frame = self.deflate(key);
        others.push((key, frame.clone()));
        frame
    }

    fn deflate(&self, (window_bits, level): DeflateKey) -> Option<Bytes> {
        self.compressions.fetch_add(1, Ordering::Relaxed);
        let compressed = deflate::compress_once(self.payload(), window_bits, level)?;
        let opcode = match self.kind() {
            DataKind::Text => OpCode::Text,
            DataKind::Binary => OpCode::Binary,
        };
        // Section 6: RSV1 marks a compressed message.
        Some(frame(opcode, Rsv::RSV1, &compressed))
    }
}

impl std::fmt::Debug for PreparedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedMessage")
            .field("kind", &self.kind())
            .field("len", &self.payload().len())
            .field("compressions", &self.compressions())
            .finish_non_exhaustive()
    }
}

/// One whole unmasked frame.
fn frame(opcode: OpCode, rsv: Rsv, payload: &[u8]) -> Bytes {
    let head = FrameHead {
        fin: true,
        rsv,
        opcode,
        mask: None,
        payload_len: payload.len() as u64,
    };
    let mut out = BytesMut::with_capacity(MAX_HEAD_LEN.saturating_add(payload.len()));
    head.encode_into(&mut out);
    out.put_slice(payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::BytesMut;

    use super::*;
    use crate::config::Config;
    use crate::connection::Connection;
    use crate::event::Event;
    use crate::extension::DeflateConfig;
    use crate::mask::FixedMask;
    use crate::role::Role;

    /// A server and a client that negotiated `server` (server side) from the client's `offer`.
    fn pair(deflate: Option<(DeflateConfig, DeflateConfig)>) -> (Connection, Connection) {
        let now = Instant::now();
        let mut server = Connection::new(Role::Server, Config::default(), now);
        let mut client = Connection::new(Role::Client, Config::default(), now)
            .with_mask_source(Box::new(FixedMask([1, 2, 3, 4])));
        if let Some((client_config, server_config)) = deflate {
            let (answer, extension) = server_config
                .accept_offers(&[client_config.offer()])
                .unwrap();
            server = server.with_extension(Box::new(extension));
            client =
                client.with_extension(Box::new(client_config.accept_response(&answer).unwrap()));
        }
        (server, client)
    }

    fn wire(conn: &mut Connection) -> (Vec<Bytes>, BytesMut) {
        let mut chunks = Vec::new();
        let mut all = BytesMut::new();
        while let Some(chunk) = conn.poll_transmit() {
            all.extend_from_slice(&chunk);
            chunks.push(chunk);
        }
        (chunks, all)
    }

    fn received(client: &mut Connection, mut bytes: BytesMut) -> Vec<Message> {
        let now = Instant::now();
        while client.handle_bytes(&mut bytes, now).is_paused() {}
        let mut messages = Vec::new();
        while let Some(event) = client.poll_event() {
            if let Event::Message(message) = event {
                messages.push(message);
            }
        }
        assert!(bytes.is_empty());
        messages
    }

    #[test]
    fn rfc6455_5_7_unmasked_text_frame() {
        let prepared = PreparedMessage::text("Hello");
        assert_eq!(
            &prepared.frame()[..],
            [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']
        );
        assert!(PreparedMessage::new(Message::ping("x")).is_none());
        let (mut server, _) = pair(None);
        server.send_prepared(&prepared).unwrap();
        assert_eq!(&wire(&mut server).1[..], &prepared.frame()[..]);
    }

    #[test]
    fn large_frames_leave_as_the_prepared_bytes_without_a_copy() {
        let prepared = PreparedMessage::binary(vec![7u8; 100_000]);
        for _ in 0..3 {
            let (mut server, mut client) = pair(None);
            server.send_text("before").unwrap();
            server.send_prepared(&prepared).unwrap();
            let (chunks, all) = wire(&mut server);
            assert!(
                chunks
                    .iter()
                    .any(|c| c.as_ptr() == prepared.frame().as_ptr()
                        && c.len() == prepared.frame().len()),
                "the prepared frame itself is written"
            );
            assert_eq!(
                received(&mut client, all),
                [Message::text("before"), Message::binary(vec![7u8; 100_000])]
            );
        }
    }

    #[test]
    fn rfc7692_7_1_1_1_no_context_takeover_compresses_once_for_every_connection() {
        let text = "a message compressed once, a message compressed once, a message".repeat(4);
        let prepared = PreparedMessage::text(text.as_str());
        let config = DeflateConfig::new().server_no_context_takeover(true);
        let mut frames = Vec::new();
        for _ in 0..5 {
            let (mut server, mut client) = pair(Some((DeflateConfig::new(), config.clone())));
            // Twice on one connection too: no state carries over.
            server.send_prepared(&prepared).unwrap();
            server.send_prepared(&prepared).unwrap();
            let (_, all) = wire(&mut server);
            assert_eq!(all[0] & 0x40, 0x40, "RSV1: compressed");
            assert!(all.len() < 2 * text.len());
            frames.push(all.clone());
            assert_eq!(
                received(&mut client, all),
                [Message::text(text.as_str()), Message::text(text.as_str())]
            );
        }
        assert_eq!(prepared.compressions(), 1);
        assert!(frames.windows(2).all(|w| w[0] == w[1]));
        // A connection that compresses the same way on its own sends the same bytes.
        let (mut server, _) = pair(Some((DeflateConfig::new(), config)));
        server.send_text(text.as_str()).unwrap();
        server.send_text(text.as_str()).unwrap();
        assert_eq!(wire(&mut server).1, frames[0]);
    }

    #[test]
    fn context_takeover_connections_compress_their_own() {
        let text = "takeover takeover takeover takeover takeover";
        let prepared = PreparedMessage::text(text);
        let (mut server, mut client) = pair(Some((DeflateConfig::new(), DeflateConfig::new())));
        server.send_prepared(&prepared).unwrap();
        server.send_prepared(&prepared).unwrap();
        let (_, all) = wire(&mut server);
        assert_eq!(prepared.compressions(), 0);
        assert_eq!(all[0] & 0x40, 0x40, "RSV1: compressed by the connection");
        assert_eq!(
            received(&mut client, all),
            [Message::text(text), Message::text(text)]
        );
    }

    #[test]
    fn below_the_threshold_or_with_8_bit_windows_the_plain_frame_is_shared() {
        let prepared = PreparedMessage::binary(vec![1u8; 10]);
        let config = DeflateConfig::new()
            .server_no_context_takeover(true)
            .threshold(64);
        let (mut server, mut client) = pair(Some((DeflateConfig::new(), config)));
        server.send_prepared(&prepared).unwrap();
        let (_, all) = wire(&mut server);
        assert_eq!(&all[..], &prepared.frame()[..]);
        assert_eq!(received(&mut client, all), [Message::binary(vec![1u8; 10])]);
        let eight = DeflateConfig::new()
            .server_no_context_takeover(true)
            .server_max_window_bits(8);
        let (mut server, mut client) = pair(Some((DeflateConfig::new(), eight)));
        server.send_prepared(&prepared).unwrap();
        let (_, all) = wire(&mut server);
        assert_eq!(&all[..], &prepared.frame()[..]);
        assert_eq!(received(&mut client, all), [Message::binary(vec![1u8; 10])]);
        assert_eq!(prepared.compressions(), 0);
    }

    #[test]
    fn clients_mask_their_own_frame_and_closing_connections_refuse() {
        let prepared = PreparedMessage::text("hi");
        let (mut server, mut client) = pair(None);
        client.send_prepared(&prepared).unwrap();
        let (_, all) = wire(&mut client);
        assert_eq!(all[1] & 0x80, 0x80, "masked");
        assert_eq!(received(&mut server, all), [Message::text("hi")]);
        server.close(Instant::now(), None).unwrap();
        assert_eq!(
            server.send_prepared(&prepared),
            Err(crate::ApiMisuse::Closing)
        );
    }
}

//! Entry points for the fuzz targets under `fuzz/`; compiled only with `--cfg fuzzing`.
//!
//! Each accepts arbitrary bytes and asserts the invariants of its layer: accept, or reject with
//! a documented error; never panic, hang, or hold more than the limits allow. They panic (by
//! assertion) exactly when an invariant breaks: that is how the fuzzer reports a bug.

#![allow(clippy::missing_panics_doc)]
// A test harness, outside the crate's rule against panics: it panics on purpose when an
// invariant breaks, and its arithmetic is on small lengths.
#![allow(clippy::arithmetic_side_effects)]

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::frame::{FrameDecoder, HeadRules};
use crate::mask::{FixedMask, apply_mask, apply_mask_bytewise};
use crate::utf8::Utf8Validator;
use crate::{Config, Connection, Event, Role};

/// Small limits, so the fuzzer reaches them quickly.
fn fuzz_config() -> Config {
    Config::builder()
        .max_frame_size(4096)
        .max_message_size(8192)
        .max_fragments(64)
        .build()
        .unwrap_or_default()
}

/// Frame decoding, by both readers the connection uses: at every frame boundary, the
/// whole-message path ([`FrameDecoder::decode_whole_message`]) agrees with the general decoder
/// (takes exactly the frames that are whole messages within the limits, the same way, and
/// leaves the rest untouched); every frame decoded fits the limit, and decoding consumes what
/// it returns. The first byte chooses the role, the limits and whether RSV1 is negotiated.
pub fn frame_decode(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let role = if control & 1 == 1 {
        Role::Client
    } else {
        Role::Server
    };
    let extension_rsv = if control & 2 == 2 {
        crate::frame::Rsv::RSV1
    } else {
        crate::frame::Rsv::NONE
    };
    let max_frame_size = if control & 4 == 4 { 4096 } else { 300 };
    let max_message_size = if control & 8 == 8 { 4096 } else { 200 };
    let rules = HeadRules {
        role,
        extension_rsv,
        max_frame_size,
    };
    let mut decoder = FrameDecoder::new(rules);
    let mut buf = BytesMut::from(rest);
    loop {
        crate::frame::assert_whole_message_agrees(rules, max_message_size, &buf);
        let before = buf.len();
        let Ok(Some(frame)) = decoder.decode(&mut buf) else {
            assert_eq!(
                buf.len(),
                before,
                "consumed bytes without returning a frame"
            );
            break;
        };
        assert!(frame.payload.len() <= max_frame_size);
        assert!(buf.len() < before);
    }
}

/// A connection of either role fed the input in chunks whose sizes the input chooses.
pub fn connection(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let role = if control & 1 == 1 {
        Role::Client
    } else {
        Role::Server
    };
    let config = fuzz_config();
    let limit = config.max_message_size();
    let now = Instant::now();
    let mut conn =
        Connection::new(role, config, now).with_mask_source(Box::new(FixedMask([1, 2, 3, 4])));
    let chunk = usize::from(control >> 1).max(1);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        while conn.handle_bytes(&mut buf, now).is_paused() {}
        while conn.poll_transmit().is_some() {}
        while let Some(event) = conn.poll_event() {
            if let Event::Message(message) = event {
                assert!(message.len() <= limit);
            }
        }
        // A partial frame never holds more than a frame's worth.
        assert!(buf.len() <= 4096 + 14 + rest.len().min(4096 + 14));
    }
    conn.handle_eof();
    conn.handle_timeout(now + Duration::from_secs(60));
    while conn.poll_transmit().is_some() {}
    while conn.poll_event().is_some() {}
    assert!(conn.is_closed());
}

/// The streaming UTF-8 validator and `Utf8Bytes` (the one `unsafe` view of the project) agree
/// with `std`, at split points the input chooses.
pub fn utf8(data: &[u8]) {
    let Some((&cut, text)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(text.len());
    let (a, b) = text.split_at(cut);
    let mut v = Utf8Validator::new();
    let ours = v.feed(a).and_then(|()| v.feed(b)).and_then(|()| v.finish());
    let wrapped = crate::Utf8Bytes::try_from(bytes::Bytes::copy_from_slice(text));
    match std::str::from_utf8(text) {
        Ok(expected) => {
            assert!(ours.is_ok());
            assert_eq!(wrapped.map(|t| t.as_str() == expected), Ok(true));
        }
        Err(e) => {
            assert_eq!(ours.map_err(|e| e.valid_up_to()), Err(e.valid_up_to()));
            assert_eq!(wrapped.map_err(|e| e.valid_up_to()), Err(e.valid_up_to()));
        }
    }
}

/// The fast mask agrees with the byte loop, at any alignment.
pub fn mask(data: &[u8]) {
    let Some((key, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Some((&offset, payload)) = rest.split_first() else {
        return;
    };
    // Masked in place 0 to 63 bytes into a buffer, so that the payload starts at any address
    // modulo the alignment `apply_mask` works from.
    let start = usize::from(offset % 64);
    let mut fast = vec![0; start];
    fast.extend_from_slice(payload);
    let mut slow = fast.clone();
    if let (Some(fast), Some(slow)) = (fast.get_mut(start..), slow.get_mut(start..)) {
        apply_mask(fast, *key, usize::from(offset));
        apply_mask_bytewise(slow, *key, usize::from(offset));
    }
    assert_eq!(fast, slow);
}

/// The server's handshake, fed in chunks: an acceptance, `None` (more bytes needed), or a
/// refusal with a status; never more buffered than the limit allows. Both answers encode.
pub fn handshake_request(data: &[u8]) {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let server = crate::handshake::ServerHandshake::new()
        .origin_policy(crate::handshake::OriginPolicy::any())
        .protocols(["chat"])
        .deflate(crate::extension::DeflateConfig::new());
    let max = Config::default().max_handshake_bytes();
    let now = Instant::now();
    let mut parser = crate::handshake::RequestParser::new();
    let mut buf = BytesMut::new();
    for piece in rest.chunks(usize::from(chunk).max(1)) {
        buf.extend_from_slice(piece);
        let mut out = Vec::new();
        match server.handle_bytes(&mut parser, &mut buf, now) {
            None => assert!(buf.len() <= max + piece.len()),
            Some(Ok(accepted)) => {
                accepted.encode(&mut out);
                return;
            }
            Some(Err(refusal)) => {
                assert!(matches!(
                    refusal.reason(),
                    crate::handshake::RefusalReason::Invalid(_)
                ));
                refusal.encode(&mut out);
                return;
            }
        }
    }
}

/// The client's response validation, fed in chunks.
pub fn handshake_response(data: &[u8]) {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let Ok(uri) = "ws://example.com/chat".parse() else {
        return;
    };
    let config = Config::default();
    let mut handshake = crate::handshake::ClientHandshake::with_key(uri, [7; 16])
        .protocols(vec!["chat".into()])
        .extensions(vec![crate::extension::ExtensionParams::new(
            "permessage-deflate",
        )]);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(usize::from(chunk).max(1)) {
        buf.extend_from_slice(piece);
        match handshake.handle_response(&mut buf, &config) {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => return,
        }
    }
}

/// The `Sec-WebSocket-Extensions` grammar: what parses formats back to something that parses
/// to the same.
pub fn extension_header(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(list) = crate::extension::header::parse_extensions([text]) {
        let formatted = crate::extension::header::format_extensions(&list);
        let again = crate::extension::header::parse_extensions([formatted.as_str()]);
        assert_eq!(again.ok(), Some(list));
    }
}

/// permessage-deflate: negotiation over arbitrary header text never panics, and arbitrary
/// compressed data (split into frames where the input says) inflates within the cap or fails
/// the connection with 1007 or 1009.
pub fn deflate(data: &[u8]) {
    use crate::extension::DeflateConfig;
    use crate::frame::{FrameHead, MAX_HEAD_LEN, OpCode, Rsv};

    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let config = DeflateConfig::new().client_no_context_takeover(control & 1 == 1);
    if let Ok(text) = std::str::from_utf8(rest)
        && let Ok(list) = crate::extension::header::parse_extensions([text])
    {
        let _ = config.accept_offers(&list);
        for params in &list {
            let _ = config.accept_response(params);
        }
    }
    let Ok(extension) = config.accept_response(&crate::extension::ExtensionParams::new(
        "permessage-deflate",
    )) else {
        return;
    };
    let limits = fuzz_config();
    let max = limits.max_message_size();
    let now = Instant::now();
    let mut conn = Connection::new(Role::Client, limits, now).with_extension(Box::new(extension));
    let pieces: Vec<&[u8]> = rest.chunks(usize::from(control >> 1).max(1) * 16).collect();
    let mut wire = BytesMut::new();
    for (i, piece) in pieces.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Text
        } else {
            OpCode::Continuation
        };
        let mut head = FrameHead::new(i + 1 == pieces.len(), opcode, piece.len() as u64);
        if i == 0 {
            head.rsv = Rsv::RSV1;
        }
        let mut bytes = [0; MAX_HEAD_LEN];
        let len = head.encode(&mut bytes);
        wire.extend_from_slice(bytes.get(..len).unwrap_or_default());
        wire.extend_from_slice(piece);
    }
    while conn.handle_bytes(&mut wire, now).is_paused() {}
    while let Some(event) = conn.poll_event() {
        match event {
            Event::Message(message) => assert!(message.len() <= max),
            Event::Closed(closed) => {
                let code = closed.code().0;
                assert!(matches!(code, 1002 | 1007 | 1009), "closed with {code}");
            }
            Event::Frame(_) => {}
        }
    }
}

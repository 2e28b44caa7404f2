//! Bytes-in, bytes-out tests of the state machine, grouped by RFC 6455 section. What went over
//! the wire is checked by decoding it as the peer would.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::event::DataFrame;
use crate::frame::{FrameDecoder, HeadRules, MAX_HEAD_LEN};
use crate::mask::FixedMask;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One fixed instant for the tests that do not move time.
fn t0() -> Instant {
    static T0: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    *T0
}

fn server() -> Connection {
    Connection::new(Role::Server, Config::default(), t0())
}

fn client() -> Connection {
    Connection::new(Role::Client, Config::default(), t0())
        .with_mask_source(Box::new(FixedMask(KEY)))
}

fn with_config(role: Role, config: Config) -> Connection {
    Connection::new(role, config, t0()).with_mask_source(Box::new(FixedMask(KEY)))
}

/// A frame as a peer of `to` would send it: masked when `to` is a server.
fn frame_to(to: Role, fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(
        fin,
        rsv,
        opcode,
        (to == Role::Server).then_some(KEY),
        payload,
    )
}

fn raw_frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut head = FrameHead::new(fin, OpCode::Text, payload.len() as u64);
    head.mask = mask;
    let mut bytes = [0; MAX_HEAD_LEN];
    let len = head.encode(&mut bytes);
    bytes[0] = (bytes[0] & 0x80) | rsv | opcode;
    let mut out = bytes[..len].to_vec();
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

/// Feeds `bytes` as one read; the events stay queued.
fn feed(conn: &mut Connection, bytes: &[u8]) -> BytesMut {
    let mut buf = BytesMut::from(bytes);
    while conn.handle_bytes(&mut buf, t0()).is_paused() {}
    buf
}

fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn wire(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = conn.poll_transmit() {
        out.extend_from_slice(&chunk);
    }
    out
}

/// Decodes what `conn` sent, as its peer would.
fn sent_frames(conn: &mut Connection) -> Vec<Frame> {
    let mut buf = BytesMut::from(&wire(conn)[..]);
    let mut decoder = FrameDecoder::new(HeadRules {
        role: conn.role().peer(),
        extension_rsv: Rsv::RSV1,
        max_frame_size: usize::MAX,
    });
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf).expect("we sent a valid frame") {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "trailing bytes: {buf:?}");
    frames
}

fn close_frame(code: u16, reason: &str) -> Frame {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    Frame::new(OpCode::Close, payload)
}

/// Asserts that `conn` failed with `code` and told the peer so.
fn assert_failed(conn: &mut Connection, code: CloseCode) -> ProtocolError {
    let frames = sent_frames(conn);
    let last = frames.last().expect("a close frame was sent");
    assert_eq!(last.opcode, OpCode::Close);
    assert_eq!(&last.payload[..2], &code.0.to_be_bytes());
    assert!(conn.is_closed());
    assert!(conn.should_close_transport());
    let closed = events(conn)
        .into_iter()
        .find_map(|e| match e {
            Event::Closed(c) => Some(c),
            _ => None,
        })
        .expect("a Closed event");
    assert_eq!(closed.initiator, Initiator::Library);
    assert_eq!(closed.code(), code);
    match closed.error {
        Some(ConnectionError::Protocol(error)) => {
            assert_eq!(error.close_code(), code);
            error
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

fn text_event(text: &str) -> Event {
    Event::Message(Message::text(text))
}

mod rfc6455_5_7_examples {
    use super::*;

    /// The section's examples, as received by a client (unmasked) or a server (masked).
    fn vectors() -> Vec<(Role, Vec<u8>, Vec<Event>)> {
        let big = vec![0xabu8; 256];
        let huge = vec![0xcdu8; 65536];
        let mut medium_frame = vec![0x82, 0x7e, 0x01, 0x00];
        medium_frame.extend_from_slice(&big);
        let mut long_frame = vec![0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0];
        long_frame.extend_from_slice(&huge);
        vec![
            (
                Role::Client,
                vec![0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
                vec![text_event("Hello")],
            ),
            (
                Role::Server,
                vec![
                    0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
                ],
                vec![text_event("Hello")],
            ),
            (
                Role::Client,
                vec![0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f],
                vec![text_event("Hello")],
            ),
            (
                Role::Client,
                vec![0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
                vec![Event::Message(Message::ping(&b"Hello"[..]))],
            ),
            (
                Role::Server,
                vec![
                    0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
                ],
                vec![Event::Message(Message::pong(&b"Hello"[..]))],
            ),
            (
                Role::Client,
                medium_frame,
                vec![Event::Message(Message::binary(big))],
            ),
            (
                Role::Client,
                long_frame,
                vec![Event::Message(Message::binary(huge))],
            ),
        ]
    }

    #[test]
    fn decoded_whole() {
        for (role, bytes, expected) in vectors() {
            let mut conn = with_config(role, Config::default());
            let rest = feed(&mut conn, &bytes);
            assert!(rest.is_empty());
            assert_eq!(events(&mut conn), expected, "{bytes:02x?}");
        }
    }

    #[test]
    fn decoded_in_every_split() {
        for (role, bytes, expected) in vectors() {
            let step = if bytes.len() > 1000 { 997 } else { 1 };
            for cut in (0..=bytes.len()).step_by(step) {
                let mut conn = with_config(role, Config::default());
                let mut buf = BytesMut::from(&bytes[..cut]);
                while conn.handle_bytes(&mut buf, t0()).is_paused() {}
                buf.extend_from_slice(&bytes[cut..]);
                while conn.handle_bytes(&mut buf, t0()).is_paused() {}
                assert!(buf.is_empty());
                assert_eq!(events(&mut conn), expected, "cut {cut}");
            }
        }
    }

    #[test]
    fn decoded_byte_by_byte() {
        for (role, bytes, expected) in vectors().into_iter().filter(|v| v.1.len() < 1000) {
            let mut conn = with_config(role, Config::default());
            let mut buf = BytesMut::new();
            for &b in &bytes {
                buf.extend_from_slice(&[b]);
                let _ = conn.handle_bytes(&mut buf, t0());
            }
            assert!(buf.is_empty());
            assert_eq!(events(&mut conn), expected);
        }
    }

    #[test]
    fn encoded_unmasked_by_server() {
        let mut conn = server();
        conn.send_text("Hello").unwrap();
        assert_eq!(wire(&mut conn), [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        conn.send_binary(vec![0xab; 256]).unwrap();
        assert_eq!(wire(&mut conn)[..4], [0x82, 0x7e, 0x01, 0x00]);
        conn.send_binary(vec![0xcd; 65536]).unwrap();
        let bytes = wire(&mut conn);
        assert_eq!(bytes[..10], [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(bytes.len(), 10 + 65536);
    }

    #[test]
    fn encoded_masked_by_client() {
        let mut conn = client();
        conn.send_text("Hello").unwrap();
        assert_eq!(
            wire(&mut conn),
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
    }
}

mod buffers {
    //! How bytes move through the connection: payloads shared with the read buffer or the
    //! caller's, small frames gathered into one chunk, and how much to read next.

    use super::*;

    #[test]
    fn large_server_payload_leaves_without_copy() {
        let mut conn = server();
        let payload = Bytes::from(vec![7u8; 100_000]);
        conn.send_binary(payload.clone()).unwrap();
        assert_eq!(conn.buffered_amount(), 10 + 100_000);
        let head = conn.poll_transmit().unwrap();
        assert_eq!(head.len(), 10);
        let body = conn.poll_transmit().unwrap();
        assert_eq!(
            body.as_ptr(),
            payload.as_ptr(),
            "the payload is shared, not copied"
        );
        assert_eq!(conn.poll_transmit(), None);
        assert_eq!(conn.buffered_amount(), 0);
    }

    #[test]
    fn small_frames_gather_into_one_chunk() {
        let mut conn = server();
        for _ in 0..10 {
            conn.send_text("hi").unwrap();
        }
        let chunk = conn.poll_transmit().unwrap();
        assert_eq!(chunk.len(), 40);
        assert_eq!(conn.poll_transmit(), None);
    }

    #[test]
    fn single_frame_message_shares_the_read_buffer() {
        let mut conn = client();
        let bytes = raw_frame(true, 0, 2, None, &[9; 1000]);
        let mut buf = BytesMut::from(&bytes[..]);
        let start = buf.as_ptr() as usize;
        let _ = conn.handle_bytes(&mut buf, t0());
        let Some(Event::Message(Message::Binary(data))) = conn.poll_event() else {
            panic!("expected binary");
        };
        assert_eq!(data.as_ptr() as usize, start + 4);
    }

    #[test]
    fn read_hint_asks_for_the_rest_of_the_frame_and_next_header() {
        let mut conn = client();
        let bytes = raw_frame(true, 0, 2, None, &[0; 300]);
        let mut buf = BytesMut::from(&bytes[..50]);
        let _ = conn.handle_bytes(&mut buf, t0());
        assert_eq!(conn.read_hint(&buf), bytes.len() - 50 + 2);
    }
}

mod rfc6455_5_1_masking {
    use super::*;

    #[test]
    fn server_fails_on_unmasked_frame() {
        let mut conn = server();
        feed(&mut conn, &raw_frame(true, 0, 1, None, b"hi"));
        let error = assert_failed(&mut conn, CloseCode::PROTOCOL_ERROR);
        assert_eq!(error, ProtocolError::UnmaskedFrameFromClient);
    }

    #[test]
    fn client_fails_on_masked_frame() {
        let mut conn = client();
        feed(&mut conn, &raw_frame(true, 0, 1, Some(KEY), b"hi"));
        let error = assert_failed(&mut conn, CloseCode::PROTOCOL_ERROR);
        assert_eq!(error, ProtocolError::MaskedFrameFromServer);
    }

    #[test]
    fn client_masks_every_frame() {
        let mut conn = Connection::new(Role::Client, Config::default(), t0());
        conn.send_text("a").unwrap();
        conn.send_ping(Bytes::new()).unwrap();
        let bytes = wire(&mut conn);
        assert_eq!(bytes[1] & 0x80, 0x80);
        assert_eq!(bytes[2 + 4 + 1 + 1] & 0x80, 0x80);
    }
}

mod rfc6455_5_2_base_framing {
    use super::*;

    #[test]
    fn reserved_bits_without_extension_fail() {
        for rsv in [0x40, 0x20, 0x10, 0x70] {
            let mut conn = server();
            feed(&mut conn, &frame_to(Role::Server, true, rsv, 1, b"x"));
            let error = assert_failed(&mut conn, CloseCode::PROTOCOL_ERROR);
            assert_eq!(error, ProtocolError::ReservedBitsSet { bits: rsv });
        }
    }

    #[test]
    fn reserved_opcodes_fail() {
        for opcode in [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            let mut conn = client();
            feed(&mut conn, &frame_to(Role::Client, true, 0, opcode, b""));
            let error = assert_failed(&mut conn, CloseCode::PROTOCOL_ERROR);
            assert_eq!(error, ProtocolError::ReservedOpcode { opcode });
        }
    }

    #[test]
    fn length_with_top_bit_set_fails() {
        let mut conn = client();
        feed(&mut conn, &[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0]);
        let error = assert_failed(&mut conn, CloseCode::PROTOCOL_ERROR);
        assert_eq!(error, ProtocolError::InvalidPayloadLength);
    }

    #[test]
    fn huge_length_allocates_nothing_and_fails_with_1009() {
        let mut conn = client();
        // 2^62 bytes announced.
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(&[0x82, 0x7f, 0x40, 0, 0, 0, 0, 0, 0, 0]);
        let capacity = buf.capacity();
        let _ = conn.handle_bytes(&mut buf, t0());
        assert!(buf.capacity() <= capacity);
        let error = assert_failed(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(
            error,
            ProtocolError::FrameTooBig {
                len: 1 << 62,
                max: 16 << 20
            }
        );
    }

    #[test]
    fn frame_over_limit_fails_before_payload_arrives() {
        let config = Config::builder().max_frame_size(100).build().unwrap();
        let mut conn = with_config(Role::Client, config);
        feed(&mut conn, &[0x82, 0x65]);
        assert_failed(&mut conn, CloseCode::MESSAGE_TOO_BIG);
    }
}

mod rfc6455_5_4_fragmentation {
    use super::*;

    #[test]
    fn control_frames_interleave_with_fragments() {
        let mut conn = server();
        let mut bytes = frame_to(Role::Server, false, 0, 1, b"Hel");
        bytes.extend(frame_to(Role::Server, true, 0, 9, b"p"));
        bytes.extend(frame_to(Role::Server, true, 0, 0, b"lo"));
        feed(&mut conn, &bytes);
        assert_eq!(
            events(&mut conn),
            [
                Event::Message(Message::ping(&b"p"[..])),
                text_event("Hello")
            ]
        );
        let frames = sent_frames(&mut conn);
        assert_eq!(frames, [Frame::new(OpCode::Pong, &b"p"[..])]);
    }

    #[test]
    fn continuation_without_message_fails() {
        let mut conn = server();
        feed(&mut conn, &frame_to(Role::Server, true, 0, 0, b"x"));
        let error = assert_failed(&mut conn, CloseCode::PROTOCOL_ERROR);
        assert_eq!(error, ProtocolError::UnexpectedContinuation);
    }

    #[test]
    fn new_message_inside_fragmented_one_fails() {
        let mut conn = server();
        let mut bytes = frame_to(Role::Server, false, 0, 1, b"a");
        bytes.extend(frame_to(Role::Server, true, 0, 2, b"b"));
        feed(&mut conn, &bytes);
        let error = assert_failed(&mut conn, CloseCode::PROTOCOL_ERROR);
        assert_eq!(error, ProtocolError::ExpectedContinuation);
    }

    #[test]
    fn message_over_limit_fails_when_announced() {
        let config = Config::builder().max_message_size(10).build().unwrap();
        let mut conn = with_config(Role::Server, config);
        let mut bytes = frame_to(Role::Server, false, 0, 2, &[0; 6]);
        bytes.extend(&frame_to(Role::Server, true, 0, 0, &[0; 6])[..6]);
        feed(&mut conn, &bytes);
        let error = assert_failed(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(error, ProtocolError::MessageTooBig { max: 10 });
    }

    #[test]
    fn empty_fragments_count_against_the_limit() {
        let config = Config::builder().max_fragments(3).build().unwrap();
        let mut conn = with_config(Role::Server, config);
        let mut bytes = frame_to(Role::Server, false, 0, 2, b"");
        for _ in 0..5 {
            bytes.extend(frame_to(Role::Server, false, 0, 0, b""));
        }
        feed(&mut conn, &bytes);
        let error = assert_failed(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(error, ProtocolError::TooManyFragments { max: 3 });
    }

    #[test]
    fn streaming_mode_delivers_frames() {
        let config = Config::builder().streaming(true).build().unwrap();
        let mut conn = with_config(Role::Client, config);
        let mut bytes = frame_to(Role::Client, false, 0, 1, "\u{e9}t".as_bytes());
        bytes.extend(frame_to(Role::Client, true, 0, 0, b"e"));
        feed(&mut conn, &bytes);
        assert_eq!(
            events(&mut conn),
            [
                Event::Frame(DataFrame {
                    kind: DataKind::Text,
                    payload: Bytes::from("\u{e9}t"),
                    first: true,
                    fin: false
                }),
                Event::Frame(DataFrame {
                    kind: DataKind::Text,
                    payload: Bytes::from_static(b"e"),
                    first: false,
                    fin: true
                }),
            ]
        );
    }

    #[test]
    fn streaming_mode_bounds_frames_not_messages() {
        let config = Config::builder()
            .streaming(true)
            .max_message_size(4)
            .build()
            .unwrap();
        let mut conn = with_config(Role::Client, config);
        // Twelve bytes in frames of four: three times the message limit, delivered.
        let mut bytes = frame_to(Role::Client, false, 0, 2, b"abcd");
        bytes.extend(frame_to(Role::Client, false, 0, 0, b"efgh"));
        bytes.extend(frame_to(Role::Client, true, 0, 0, b"ijkl"));
        feed(&mut conn, &bytes);
        let payloads: Vec<Bytes> = events(&mut conn)
            .into_iter()
            .map(|event| match event {
                Event::Frame(frame) => frame.payload,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(payloads.concat(), b"abcdefghijkl");
        // A frame over the limit still fails the connection.
        feed(&mut conn, &frame_to(Role::Client, true, 0, 2, b"abcde"));
        let error = assert_failed(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(error, ProtocolError::MessageTooBig { max: 4 });
    }

    #[test]
    fn streaming_mode_checks_a_whole_text_frame() {
        let config = Config::builder().streaming(true).build().unwrap();
        let mut conn = with_config(Role::Client, config);
        feed(
            &mut conn,
            &frame_to(Role::Client, true, 0, 1, b"ok\xff\xfe"),
        );
        let error = assert_failed(&mut conn, CloseCode::INVALID_PAYLOAD);
        assert_eq!(error, ProtocolError::InvalidUtf8 { valid_up_to: 2 });
    }

    #[test]
    fn sending_fragments() {
        let mut conn = server();
        conn.send_fragment(DataKind::Binary, &b"ab"[..], false)
            .unwrap();
        assert_eq!(
            conn.send_text("x"),
            Err(ApiMisuse::FragmentedMessageInProgress)
        );
        assert_eq!(
            conn.send_fragment(DataKind::Text, &b"x"[..], true),
            Err(ApiMisuse::FragmentedMessageInProgress)
        );
        conn.send_ping(&b"p"[..]).unwrap();
        conn.send_fragment(DataKind::Binary, &b"cd"[..], true)
            .unwrap();
        let frames = sent_frames(&mut conn);
        let shape: Vec<_> = frames.iter().map(|f| (f.opcode, f.fin)).collect();
        assert_eq!(
            shape,
            [
                (OpCode::Binary, false),
                (OpCode::Ping, true),
                (OpCode::Continuation, true)
            ]
        );
        conn.send_text("after").unwrap();
    }
}

mod rfc6455_5_5_control_frames {
    use super::*;

    #[test]
    fn long_control_frame_fails() {
        let mut conn = server();
        feed(&mut conn, &frame_to(Role::Server, true, 0, 9, &[0; 126]));
        let error = assert_failed(&mut conn, CloseCode::PROTOCOL_ERROR);
        assert_eq!(error, ProtocolError::ControlFrameTooLong { len: 126 });
    }

    #[test]
    fn fragmented_control_frame_fails() {
        let mut conn = server();
        feed(&mut conn, &frame_to(Role::Server, false, 0, 9, b""));
        let error = assert_failed(&mut conn, CloseCode::PROTOCOL_ERROR);
        assert_eq!(error, ProtocolError::FragmentedControlFrame);
    }

    #[test]
    fn ping_is_answered_with_same_payload() {
        let mut conn = client();
        feed(&mut conn, &frame_to(Role::Client, true, 0, 9, &[1; 125]));
        assert_eq!(
            sent_frames(&mut conn),
            [Frame::new(OpCode::Pong, vec![1; 125])]
        );
    }

    #[test]
    fn every_ping_is_answered_in_order() {
        let mut conn = server();
        let mut bytes = Vec::new();
        for i in 0..10u16 {
            bytes.extend(frame_to(Role::Server, true, 0, 9, &i.to_be_bytes()));
        }
        feed(&mut conn, &bytes);
        let want: Vec<Frame> = (0..10u16)
            .map(|i| Frame::new(OpCode::Pong, i.to_be_bytes().to_vec()))
            .collect();
        assert_eq!(sent_frames(&mut conn), want);
    }

    #[test]
    fn ping_flood_against_unread_output_stays_bounded() {
        let config = Config::builder().pong_backlog(100).build().unwrap();
        let mut conn = with_config(Role::Server, config);
        let mut bytes = Vec::new();
        for i in 0..1000u16 {
            bytes.extend(frame_to(Role::Server, true, 0, 9, &i.to_be_bytes()));
        }
        feed(&mut conn, &bytes);
        // 100 bytes of Pongs (4-byte frames), then one slot.
        assert!(conn.buffered_amount() <= 100, "{}", conn.buffered_amount());
        let frames = sent_frames(&mut conn);
        assert_eq!(frames.len(), 26);
        assert_eq!(
            frames.last().unwrap().payload,
            999u16.to_be_bytes().to_vec()
        );
    }

    #[test]
    fn pong_goes_before_answers_to_later_messages() {
        // Autobahn 5.6: a Ping between two fragments is answered before the echo of the message.
        let mut conn = server();
        let mut bytes = frame_to(Role::Server, false, 0, 1, b"frag1");
        bytes.extend(frame_to(Role::Server, true, 0, 9, b"ping"));
        bytes.extend(frame_to(Role::Server, true, 0, 0, b"frag2"));
        feed(&mut conn, &bytes);
        for event in events(&mut conn) {
            if let Event::Message(message @ Message::Text(_)) = event {
                conn.send(message).unwrap();
            }
        }
        let frames = sent_frames(&mut conn);
        assert_eq!(
            frames,
            [
                Frame::new(OpCode::Pong, &b"ping"[..]),
                Frame::new(OpCode::Text, "frag1frag2")
            ]
        );
    }

    #[test]
    fn oversized_ping_from_api_is_misuse() {
        let mut conn = server();
        assert_eq!(
            conn.send_ping(vec![0; 126]),
            Err(ApiMisuse::ControlPayloadTooLong { len: 126 })
        );
    }
}

mod rfc6455_5_5_1_close {
    use super::*;

    #[test]
    fn server_echoes_peer_close_code_and_closes_transport() {
        let mut conn = server();
        feed(
            &mut conn,
            &frame_to(Role::Server, true, 0, 8, b"\x03\xe8bye"),
        );
        let frames = sent_frames(&mut conn);
        assert_eq!(frames, [close_frame(1000, "")]);
        let events = events(&mut conn);
        let remote = CloseFrame::new(CloseCode::NORMAL, "bye").unwrap();
        assert_eq!(
            events[0],
            Event::Message(Message::Close(Some(remote.clone())))
        );
        let Event::Closed(closed) = &events[1] else {
            panic!("expected Closed");
        };
        assert_eq!(closed.initiator, Initiator::Remote);
        assert_eq!(closed.remote, Some(remote));
        assert!(closed.is_clean());
        assert_eq!(closed.code(), CloseCode::NORMAL);
        assert!(conn.should_close_transport());
    }

    #[test]
    fn empty_close_is_answered_with_empty_close() {
        let mut conn = server();
        feed(&mut conn, &frame_to(Role::Server, true, 0, 8, b""));
        assert_eq!(
            sent_frames(&mut conn),
            [Frame::new(OpCode::Close, Bytes::new())]
        );
        let closed = events(&mut conn).pop();
        let Some(Event::Closed(closed)) = closed else {
            panic!("expected Closed");
        };
        assert_eq!(closed.code(), CloseCode::NO_STATUS_RECEIVED);
    }

    #[test]
    fn client_waits_for_server_to_close_transport() {
        let mut conn = client();
        feed(&mut conn, &frame_to(Role::Client, true, 0, 8, b"\x03\xe9"));
        assert_eq!(sent_frames(&mut conn), [close_frame(1001, "")]);
        assert!(conn.is_closed());
        assert!(!conn.should_close_transport());
        let deadline = conn
            .poll_timeout()
            .expect("a deadline for the server's TCP close");
        assert_eq!(deadline, t0() + Config::default().close_timeout());
        conn.handle_eof();
        assert!(conn.should_close_transport());
    }

    #[test]
    fn client_closes_transport_itself_after_timeout() {
        let mut conn = client();
        let now = Instant::now();
        let mut buf = BytesMut::from(&frame_to(Role::Client, true, 0, 8, b"")[..]);
        let _ = conn.handle_bytes(&mut buf, now);
        conn.handle_timeout(now + Duration::from_secs(1));
        assert!(!conn.should_close_transport());
        wire(&mut conn);
        conn.handle_timeout(now + Duration::from_secs(6));
        assert!(conn.should_close_transport());
    }

    #[test]
    fn frames_after_close_are_ignored() {
        let mut conn = server();
        let mut bytes = frame_to(Role::Server, true, 0, 8, b"\x03\xe8");
        bytes.extend(frame_to(Role::Server, true, 0, 1, b"late"));
        bytes.extend(frame_to(Role::Server, true, 0, 9, b"ping"));
        let rest = feed(&mut conn, &bytes);
        assert!(rest.is_empty());
        assert_eq!(sent_frames(&mut conn), [close_frame(1000, "")]);
        assert!(
            events(&mut conn)
                .iter()
                .all(|e| !matches!(e, Event::Message(Message::Text(_))))
        );
    }

    #[test]
    fn invalid_close_payloads_fail() {
        let cases: [(&[u8], CloseCode); 5] = [
            (b"\x03", CloseCode::PROTOCOL_ERROR),
            (b"\x03\xed", CloseCode::PROTOCOL_ERROR),
            (b"\x00\x00", CloseCode::PROTOCOL_ERROR),
            (b"\x07\xd0", CloseCode::PROTOCOL_ERROR),
            (
                b"\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80",
                CloseCode::INVALID_PAYLOAD,
            ),
        ];
        for (payload, code) in cases {
            let mut conn = server();
            feed(&mut conn, &frame_to(Role::Server, true, 0, 8, payload));
            assert_failed(&mut conn, code);
        }
    }

    #[test]
    fn application_codes_pass_through() {
        let mut conn = server();
        feed(
            &mut conn,
            &frame_to(Role::Server, true, 0, 8, b"\x0f\xa0app"),
        );
        assert_eq!(sent_frames(&mut conn), [close_frame(4000, "")]);
    }

    #[test]
    fn local_close_then_peer_reply() {
        let mut conn = server();
        let now = Instant::now();
        conn.send_text("before").unwrap();
        conn.close(
            now,
            Some(CloseFrame::new(CloseCode::GOING_AWAY, "shutdown").unwrap()),
        )
        .unwrap();
        assert!(!conn.is_open());
        assert_eq!(conn.send_text("after"), Err(ApiMisuse::Closing));
        assert_eq!(conn.close(now, None), Err(ApiMisuse::Closing));
        let frames = sent_frames(&mut conn);
        assert_eq!(
            frames,
            [
                Frame::new(OpCode::Text, "before"),
                close_frame(1001, "shutdown")
            ]
        );
        // Data the peer sent before seeing our Close is still delivered.
        let mut bytes = frame_to(Role::Server, true, 0, 1, b"in flight");
        bytes.extend(frame_to(Role::Server, true, 0, 8, b"\x03\xe9"));
        feed(&mut conn, &bytes);
        let events = events(&mut conn);
        assert_eq!(events[0], text_event("in flight"));
        let Some(Event::Closed(closed)) = events.last() else {
            panic!("expected Closed");
        };
        assert_eq!(closed.initiator, Initiator::Local);
        assert!(closed.is_clean());
        assert_eq!(closed.local.as_ref().unwrap().code, CloseCode::GOING_AWAY);
        assert!(conn.should_close_transport());
        // No second Close frame.
        assert!(sent_frames(&mut conn).is_empty());
    }

    #[test]
    fn local_close_times_out() {
        let mut conn = client();
        let now = Instant::now();
        conn.close(now, None).unwrap();
        assert_eq!(conn.poll_timeout(), Some(now + Duration::from_secs(5)));
        wire(&mut conn);
        conn.handle_timeout(now + Duration::from_secs(5));
        let Some(Event::Closed(closed)) = conn.poll_event() else {
            panic!("expected Closed");
        };
        assert_eq!(closed.error, Some(ConnectionError::CloseTimeout));
        assert_eq!(closed.code(), CloseCode::ABNORMAL);
        assert!(conn.should_close_transport());
    }

    #[test]
    fn close_through_send_times_out_from_the_latest_time_given() {
        let mut conn = client();
        let later = t0() + Duration::from_secs(2);
        let mut buf = BytesMut::new();
        let _ = conn.handle_bytes(&mut buf, later);
        let mut buf = BytesMut::from(&frame_to(Role::Client, true, 0, 1, b"x")[..]);
        let _ = conn.handle_bytes(&mut buf, later);
        conn.send(Message::Close(None)).unwrap();
        assert_eq!(conn.poll_timeout(), Some(later + Duration::from_secs(5)));
        let status = conn.close_status();
        assert!(status.is_none());
        wire(&mut conn);
        conn.handle_timeout(later + Duration::from_secs(5));
        assert_eq!(
            conn.close_status().map(|c| c.error.clone()),
            Some(Some(ConnectionError::CloseTimeout))
        );
    }

    #[test]
    fn close_codes_that_may_not_be_sent_are_misuse() {
        let mut conn = server();
        let frame = CloseFrame {
            code: CloseCode::ABNORMAL,
            reason: Utf8Bytes::new(),
        };
        assert_eq!(
            conn.close(t0(), Some(frame)),
            Err(ApiMisuse::InvalidCloseCode { code: 1006 })
        );
        assert!(conn.is_open());
    }

    #[test]
    fn pong_owed_goes_before_close() {
        let mut conn = server();
        feed(&mut conn, &frame_to(Role::Server, true, 0, 9, b"x"));
        conn.close(t0(), None).unwrap();
        let shape: Vec<_> = sent_frames(&mut conn).iter().map(|f| f.opcode).collect();
        assert_eq!(shape, [OpCode::Pong, OpCode::Close]);
    }

    #[test]
    fn eof_before_close_is_abnormal() {
        let mut conn = server();
        feed(&mut conn, &frame_to(Role::Server, true, 0, 1, b"x")[..3]);
        conn.handle_eof();
        let Some(Event::Closed(closed)) = conn.poll_event() else {
            panic!("expected Closed");
        };
        assert_eq!(closed.error, Some(ConnectionError::UnexpectedEof));
        assert_eq!(closed.initiator, Initiator::Remote);
        assert_eq!(closed.code(), CloseCode::ABNORMAL);
        assert!(conn.should_close_transport());
    }
}

mod message_before_violation {
    use super::*;

    #[test]
    fn stops_after_a_message_so_it_can_be_answered_before_a_later_failure() {
        // Autobahn 3.3: a valid message, then a frame with a reserved bit, in one read. The
        // message is delivered and echoed before the connection fails.
        let mut conn = server();
        let mut bytes = frame_to(Role::Server, true, 0, 1, b"hello");
        bytes.extend(frame_to(Role::Server, true, 0x20, 1, b"bad"));
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(conn.handle_bytes(&mut buf, t0()), Progress::Paused);
        assert_eq!(events(&mut conn), [text_event("hello")]);
        conn.send_text("hello").unwrap();
        assert_eq!(conn.handle_bytes(&mut buf, t0()), Progress::NeedBytes);
        let frames = sent_frames(&mut conn);
        assert_eq!(frames[0], Frame::new(OpCode::Text, "hello"));
        assert_eq!(frames[1].opcode, OpCode::Close);
        assert_eq!(&frames[1].payload[..2], &1002u16.to_be_bytes());
    }

    #[test]
    fn does_not_stop_after_the_last_frame_or_control_frames() {
        let mut conn = server();
        let mut bytes = frame_to(Role::Server, true, 0, 9, b"");
        bytes.extend(frame_to(Role::Server, true, 0, 1, b"x"));
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(conn.handle_bytes(&mut buf, t0()), Progress::NeedBytes);
        assert!(buf.is_empty());
    }
}

mod rfc6455_8_1_utf8 {
    use super::*;

    #[test]
    fn invalid_text_fails_with_1007() {
        let mut conn = server();
        feed(
            &mut conn,
            &frame_to(Role::Server, true, 0, 1, b"\xce\xba\xff"),
        );
        let error = assert_failed(&mut conn, CloseCode::INVALID_PAYLOAD);
        assert_eq!(error, ProtocolError::InvalidUtf8 { valid_up_to: 2 });
    }

    #[test]
    fn fails_fast_inside_a_partial_frame() {
        // Autobahn 6.4.3: the frame's header announces the whole payload; the invalid part
        // arrives before the rest, and the connection must fail then.
        let payload = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited";
        let bytes = frame_to(Role::Server, true, 0, 1, payload);
        let mut conn = server();
        let head_len = 6;
        let mut buf = BytesMut::from(&bytes[..head_len + 11]);
        let _ = conn.handle_bytes(&mut buf, t0());
        assert!(!conn.is_closed());
        buf.extend_from_slice(&bytes[head_len + 11..head_len + 15]);
        let _ = conn.handle_bytes(&mut buf, t0());
        assert_failed(&mut conn, CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn fails_fast_across_fragments() {
        let mut conn = server();
        feed(&mut conn, &frame_to(Role::Server, false, 0, 1, b"ok\xed"));
        assert!(!conn.is_closed());
        feed(&mut conn, &frame_to(Role::Server, false, 0, 0, b"\xa0\x80"));
        assert_failed(&mut conn, CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn code_point_split_between_fragments_is_fine() {
        let mut conn = server();
        let euro = "\u{20ac}".as_bytes();
        let mut bytes = frame_to(Role::Server, false, 0, 1, &euro[..1]);
        bytes.extend(frame_to(Role::Server, false, 0, 0, &euro[1..2]));
        bytes.extend(frame_to(Role::Server, true, 0, 0, &euro[2..]));
        feed(&mut conn, &bytes);
        assert_eq!(events(&mut conn), [text_event("\u{20ac}")]);
    }

    #[test]
    fn truncated_code_point_at_end_fails() {
        let mut conn = server();
        feed(&mut conn, &frame_to(Role::Server, true, 0, 1, b"a\xe2\x82"));
        assert_failed(&mut conn, CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn binary_is_not_checked() {
        let mut conn = server();
        feed(&mut conn, &frame_to(Role::Server, true, 0, 2, b"\xff\xfe"));
        assert_eq!(
            events(&mut conn),
            [Event::Message(Message::binary(&b"\xff\xfe"[..]))]
        );
    }
}

mod keepalive {
    use super::*;

    fn keepalive_config() -> Config {
        Config::builder()
            .ping_interval(Some(Duration::from_secs(10)))
            .pong_timeout(Duration::from_secs(3))
            .build()
            .unwrap()
    }

    #[test]
    fn pings_on_interval_and_pong_clears_deadline() {
        let now = Instant::now();
        let mut conn = Connection::new(Role::Server, keepalive_config(), now);
        assert_eq!(conn.poll_timeout(), Some(now + Duration::from_secs(10)));
        conn.handle_timeout(now + Duration::from_secs(10));
        assert_eq!(
            sent_frames(&mut conn),
            [Frame::new(OpCode::Ping, Bytes::new())]
        );
        assert_eq!(conn.poll_timeout(), Some(now + Duration::from_secs(13)));
        let mut buf = BytesMut::from(&frame_to(Role::Server, true, 0, 0xa, b"")[..]);
        let _ = conn.handle_bytes(&mut buf, now + Duration::from_secs(11));
        assert_eq!(conn.poll_timeout(), Some(now + Duration::from_secs(20)));
    }

    #[test]
    fn silent_peer_times_out() {
        let now = Instant::now();
        let mut conn = Connection::new(Role::Server, keepalive_config(), now);
        conn.handle_timeout(now + Duration::from_secs(10));
        conn.handle_timeout(now + Duration::from_secs(13));
        let closed = events(&mut conn).pop();
        let Some(Event::Closed(closed)) = closed else {
            panic!("expected Closed");
        };
        assert_eq!(closed.error, Some(ConnectionError::PongTimeout));
        assert_eq!(closed.initiator, Initiator::Library);
        wire(&mut conn);
        assert!(conn.should_close_transport());
    }
}

mod extension_seam {
    use super::*;
    use crate::error::ExtensionError;

    /// Encodes by reversing the payload and setting RSV1; decodes per message.
    struct Reverse {
        held: Vec<u8>,
    }

    impl Extension for Reverse {
        fn name(&self) -> &'static str {
            "x-reverse"
        }

        fn rsv(&self) -> Rsv {
            Rsv::RSV1
        }

        fn encode(&mut self, _: OpCode, payload: Bytes) -> (Rsv, Bytes) {
            (Rsv::RSV1, payload.iter().rev().copied().collect())
        }

        fn decode(
            &mut self,
            payload: Bytes,
            fin: bool,
            limit: usize,
        ) -> Result<Bytes, ExtensionError> {
            self.held.extend_from_slice(&payload);
            if self.held.len() > limit {
                return Err(ExtensionError::DecodedTooBig { max: limit });
            }
            if !fin {
                return Ok(Bytes::new());
            }
            Ok(self.held.drain(..).rev().collect())
        }
    }

    fn with_reverse(role: Role, config: Config) -> Connection {
        with_config(role, config).with_extension(Box::new(Reverse { held: Vec::new() }))
    }

    #[test]
    fn encoded_messages_round_trip() {
        let mut conn = with_reverse(Role::Server, Config::default());
        assert_eq!(conn.extension_name(), Some("x-reverse"));
        let mut bytes = frame_to(Role::Server, false, 0x40, 1, b"ol");
        bytes.extend(frame_to(Role::Server, true, 0, 0, b"leh"));
        feed(&mut conn, &bytes);
        assert_eq!(events(&mut conn), [text_event("hello")]);
        conn.send_text("abc").unwrap();
        let frames = sent_frames(&mut conn);
        assert_eq!(frames[0].rsv, Rsv::RSV1);
        assert_eq!(frames[0].payload, "cba");
    }

    #[test]
    fn rsv1_on_continuation_or_control_fails() {
        for bytes in [
            [
                frame_to(Role::Server, false, 0x40, 1, b"a"),
                frame_to(Role::Server, true, 0x40, 0, b"b"),
            ]
            .concat(),
            frame_to(Role::Server, true, 0x40, 9, b""),
        ] {
            let mut conn = with_reverse(Role::Server, Config::default());
            feed(&mut conn, &bytes);
            let error = assert_failed(&mut conn, CloseCode::PROTOCOL_ERROR);
            assert_eq!(error, ProtocolError::ReservedBitsSet { bits: 0x40 });
        }
    }

    #[test]
    fn rsv2_stays_reserved() {
        let mut conn = with_reverse(Role::Server, Config::default());
        feed(&mut conn, &frame_to(Role::Server, true, 0x20, 1, b"a"));
        assert_failed(&mut conn, CloseCode::PROTOCOL_ERROR);
    }

    #[test]
    fn decoded_size_is_capped() {
        let config = Config::builder().max_message_size(4).build().unwrap();
        let mut conn = with_reverse(Role::Server, config);
        feed(&mut conn, &frame_to(Role::Server, true, 0x40, 2, b"12345"));
        let error = assert_failed(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(
            error,
            ProtocolError::Extension(ExtensionError::DecodedTooBig { max: 4 })
        );
    }

    #[test]
    fn decoded_text_is_checked() {
        let mut conn = with_reverse(Role::Server, Config::default());
        feed(&mut conn, &frame_to(Role::Server, true, 0x40, 1, b"\xffa"));
        assert_failed(&mut conn, CloseCode::INVALID_PAYLOAD);
    }
}

mod pair {
    //! A client and a server wired together, with messages of every shape in any chunking.

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        Text(String),
        Binary(Vec<u8>),
        Fragmented(DataKind, Vec<Vec<u8>>),
        Ping(Vec<u8>),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            "\\PC{0,200}".prop_map(Step::Text),
            prop::collection::vec(any::<u8>(), 0..300).prop_map(Step::Binary),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..5)
                .prop_map(|parts| Step::Fragmented(DataKind::Binary, parts)),
            "\\PC{1,60}".prop_map(|s| {
                // Split text at byte positions, through code points.
                let bytes = s.into_bytes();
                let parts = bytes.chunks(3).map(<[u8]>::to_vec).collect();
                Step::Fragmented(DataKind::Text, parts)
            }),
            prop::collection::vec(any::<u8>(), 0..125).prop_map(Step::Ping),
        ]
    }

    fn expected(step: &Step) -> Event {
        match step {
            Step::Text(text) => Event::Message(Message::text(text.as_str())),
            Step::Binary(data) => Event::Message(Message::binary(data.clone())),
            Step::Fragmented(DataKind::Binary, parts) => {
                Event::Message(Message::binary(parts.concat()))
            }
            Step::Fragmented(DataKind::Text, parts) => {
                Event::Message(Message::text(String::from_utf8(parts.concat()).unwrap()))
            }
            Step::Ping(data) => Event::Message(Message::ping(data.clone())),
        }
    }

    fn send(conn: &mut Connection, step: &Step) {
        match step {
            Step::Text(text) => conn.send_text(text.as_str()).unwrap(),
            Step::Binary(data) => conn.send_binary(data.clone()).unwrap(),
            Step::Fragmented(kind, parts) => {
                for (i, part) in parts.iter().enumerate() {
                    conn.send_fragment(*kind, part.clone(), i + 1 == parts.len())
                        .unwrap();
                }
            }
            Step::Ping(data) => conn.send_ping(data.clone()).unwrap(),
        }
    }

    /// Moves everything `from` wrote to `to` in chunks of the given sizes (cycled).
    fn transfer(from: &mut Connection, to: &mut Connection, chunks: &[usize]) {
        let bytes = wire(from);
        let mut buf = BytesMut::new();
        let mut rest = &bytes[..];
        let mut sizes = chunks.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).clamp(1, rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            while to.handle_bytes(&mut buf, t0()).is_paused() {}
        }
        assert!(buf.is_empty());
    }

    fn run(steps: &[Step], chunks: &[usize], client_sends: bool) -> Result<(), TestCaseError> {
        let mut client = Connection::new(Role::Client, Config::default(), t0());
        let mut server = Connection::new(Role::Server, Config::default(), t0());
        let (sender, receiver) = if client_sends {
            (&mut client, &mut server)
        } else {
            (&mut server, &mut client)
        };
        for step in steps {
            send(sender, step);
        }
        transfer(sender, receiver, chunks);
        let got = events(receiver);
        let want: Vec<Event> = steps.iter().map(expected).collect();
        prop_assert_eq!(got, want);
        // Every Ping was answered.
        transfer(receiver, sender, &[usize::MAX]);
        let replies = events(sender);
        prop_assert!(
            replies
                .iter()
                .all(|e| matches!(e, Event::Message(Message::Pong(_))))
        );
        let pings = steps.iter().filter(|s| matches!(s, Step::Ping(_))).count();
        prop_assert_eq!(replies.len(), pings);

        // Close from the sender; the receiver replies; both report a clean close.
        sender
            .close(
                t0(),
                Some(CloseFrame::new(CloseCode::NORMAL, "done").unwrap()),
            )
            .unwrap();
        transfer(sender, receiver, chunks);
        transfer(receiver, sender, chunks);
        for conn in [sender, receiver] {
            let Some(Event::Closed(closed)) = events(conn).pop() else {
                return Err(TestCaseError::fail("no Closed event"));
            };
            prop_assert!(closed.is_clean());
            prop_assert_eq!(closed.code(), CloseCode::NORMAL);
        }
        prop_assert!(server.should_close_transport());
        prop_assert!(!client.should_close_transport());
        Ok(())
    }

    proptest! {
        #[test]
        fn client_to_server_any_chunking(
            steps in prop::collection::vec(step(), 0..12),
            chunks in prop::collection::vec(1usize..64, 1..8),
        ) {
            run(&steps, &chunks, true)?;
        }

        #[test]
        fn server_to_client_any_chunking(
            steps in prop::collection::vec(step(), 0..12),
            chunks in prop::collection::vec(1usize..64, 1..8),
        ) {
            run(&steps, &chunks, false)?;
        }

        #[test]
        fn byte_by_byte(steps in prop::collection::vec(step(), 0..6), client_sends in any::<bool>()) {
            run(&steps, &[1], client_sends)?;
        }

        /// Whatever bytes arrive, in any chunking, the connection never panics, holds at most a
        /// frame's worth of them, and a Closed event it reports carries the error that ended it.
        #[test]
        fn arbitrary_input_never_panics(
            data in prop::collection::vec(any::<u8>(), 0..512),
            chunk in 1usize..32,
            server_role in any::<bool>(),
        ) {
            let role = if server_role { Role::Server } else { Role::Client };
            let mut conn = with_config(role, Config::builder().max_frame_size(256).build().unwrap());
            let mut buf = BytesMut::new();
            for piece in data.chunks(chunk) {
                buf.extend_from_slice(piece);
                while conn.handle_bytes(&mut buf, t0()).is_paused() {}
                prop_assert!(buf.len() <= 256 + 14 + chunk);
            }
            let _ = wire(&mut conn);
            for event in events(&mut conn) {
                if let Event::Closed(closed) = event {
                    prop_assert!(closed.error.is_some());
                }
            }
        }
    }
}

/// The whole-message path (`read_whole_message`, on `FrameDecoder::decode_whole_message`) takes
/// only frames that pass every rule; the rest goes the general way. These pin the cases where the
/// two could disagree, through `handle_bytes`.
mod whole_message_path {
    use super::*;

    /// Feeds `bytes` whole and byte by byte; both must give the same events and wire output.
    fn same_whole_and_bytewise(role: Role, config: &Config, bytes: &[u8]) -> (Vec<Event>, Vec<u8>) {
        let mut whole = with_config(role, config.clone());
        let _ = feed(&mut whole, bytes);
        let mut piecewise = with_config(role, config.clone());
        let mut buf = BytesMut::new();
        for &b in bytes {
            buf.extend_from_slice(&[b]);
            while piecewise.handle_bytes(&mut buf, t0()).is_paused() {}
        }
        let out = (events(&mut whole), wire(&mut whole));
        assert_eq!(out, (events(&mut piecewise), wire(&mut piecewise)));
        out
    }

    /// Reads `bytes` as the async driver does: `handle_bytes_message` first, `handle_bytes` when
    /// it declines; returns every event in order.
    fn feed_message_first(conn: &mut Connection, bytes: &[u8]) -> Vec<Event> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            if let Some(message) = conn.handle_bytes_message(&mut buf, t0()) {
                out.push(Event::Message(message));
                if buf.is_empty() {
                    break;
                }
                continue;
            }
            let progress = conn.handle_bytes(&mut buf, t0());
            out.extend(events(conn));
            if !progress.is_paused() {
                break;
            }
        }
        out.extend(events(conn));
        out
    }

    /// `handle_bytes_message` gives what `handle_bytes` and `poll_event` give, events and wire
    /// output alike, whatever comes between the whole messages it takes.
    #[test]
    fn message_first_agrees_with_handle_bytes() {
        let to = Role::Server;
        let cases: Vec<Vec<Vec<u8>>> = vec![
            vec![
                frame_to(to, true, 0, 1, b"one"),
                frame_to(to, true, 0, 2, &[7; 300]),
                frame_to(to, true, 0, 9, b"ping"),
                frame_to(to, true, 0, 2, b"after ping"),
                frame_to(to, false, 0, 1, b"frag"),
                frame_to(to, true, 0, 0, b"mented"),
                frame_to(to, true, 0, 1, b""),
                frame_to(to, true, 0, 8, &[0x03, 0xe8]),
                frame_to(to, true, 0, 1, b"after close"),
            ],
            vec![
                frame_to(to, true, 0, 1, b"fine"),
                frame_to(to, true, 0, 1, &[0xff, 0xfe]),
                frame_to(to, true, 0, 1, b"never read"),
            ],
            vec![
                frame_to(to, true, 0x40, 1, b"reserved bit"),
                frame_to(to, true, 0, 1, b"never read"),
            ],
            vec![
                raw_frame(true, 0, 2, None, b"unmasked"),
                frame_to(to, true, 0, 2, b"never read"),
            ],
            vec![frame_to(to, true, 0, 2, &[1; 70_000])],
        ];
        for frames in cases {
            let bytes = frames.concat();
            let mut general = server();
            let _ = feed(&mut general, &bytes);
            let mut first = server();
            let got = feed_message_first(&mut first, &bytes);
            assert_eq!(got, events(&mut general), "{frames:02x?}");
            assert_eq!(wire(&mut first), wire(&mut general));
        }
        // A message over the size limit is refused the same way.
        let config = Config::builder().max_message_size(16).build().unwrap();
        let bytes = frame_to(to, true, 0, 2, &[1; 17]);
        let mut general = with_config(to, config.clone());
        let _ = feed(&mut general, &bytes);
        let mut first = with_config(to, config);
        assert_eq!(feed_message_first(&mut first, &bytes), events(&mut general));
        assert_eq!(wire(&mut first), wire(&mut general));
    }

    #[test]
    fn several_messages_in_one_read_come_one_call_at_a_time() {
        let mut bytes = frame_to(Role::Server, true, 0, 1, b"one");
        bytes.extend(frame_to(Role::Server, true, 0, 2, &[7; 300]));
        bytes.extend(frame_to(Role::Server, true, 0, 1, b""));
        let mut conn = server();
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(conn.handle_bytes(&mut buf, t0()), Progress::Paused);
        assert_eq!(events(&mut conn), [Event::Message(Message::text("one"))]);
        assert_eq!(conn.handle_bytes(&mut buf, t0()), Progress::Paused);
        assert_eq!(
            events(&mut conn),
            [Event::Message(Message::Binary(Bytes::from(vec![7; 300])))]
        );
        assert_eq!(conn.handle_bytes(&mut buf, t0()), Progress::NeedBytes);
        assert_eq!(events(&mut conn), [Event::Message(Message::text(""))]);
        assert!(buf.is_empty());
    }

    #[test]
    fn invalid_text_fails_with_1007_and_nothing_after_it_is_read() {
        let mut bytes = frame_to(Role::Server, true, 0, 1, b"ok\xff\xfe");
        bytes.extend(frame_to(Role::Server, true, 0, 1, b"later"));
        let (events, wire) = same_whole_and_bytewise(Role::Server, &Config::default(), &bytes);
        assert!(
            matches!(&events[..], [Event::Closed(c)] if c.error == Some(ConnectionError::Protocol(ProtocolError::InvalidUtf8 { valid_up_to: 2 })))
        );
        assert_eq!(&wire[..4], [0x88, wire[1], 0x03, 0xef]);
    }

    #[test]
    fn a_whole_message_over_the_limits_fails_with_1009() {
        for config in [
            Config::builder().max_message_size(10).build().unwrap(),
            Config::builder().max_frame_size(10).build().unwrap(),
        ] {
            let bytes = frame_to(Role::Server, true, 0, 2, &[1; 11]);
            let (events, _) = same_whole_and_bytewise(Role::Server, &config, &bytes);
            let [Event::Closed(closed)] = &events[..] else {
                panic!("expected a failure, got {events:?}");
            };
            assert_eq!(
                closed.local.as_ref().map(|f| f.code),
                Some(CloseCode::MESSAGE_TOO_BIG)
            );
            // At the limit it is a message.
            let at_limit = frame_to(Role::Server, true, 0, 2, &[1; 10]);
            let (events, _) = same_whole_and_bytewise(Role::Server, &config, &at_limit);
            assert_eq!(
                events,
                [Event::Message(Message::Binary(Bytes::from(vec![1; 10])))]
            );
        }
    }

    #[test]
    fn other_frames_go_the_general_way_with_the_same_outcome() {
        let cases: Vec<Vec<u8>> = vec![
            // Unmasked to a server; RSV1 without an extension; a reserved opcode.
            raw_frame(true, 0, 2, None, b"x"),
            frame_to(Role::Server, true, 0x40, 2, b"x"),
            frame_to(Role::Server, true, 0, 3, b"x"),
            // A 16-bit and a 64-bit length, and a continuation with no message.
            frame_to(Role::Server, true, 0, 2, &[5; 200]),
            frame_to(Role::Server, true, 0, 2, &[5; 70_000]),
            frame_to(Role::Server, true, 0, 0, b"x"),
            // A fragmented message, then a whole one.
            [
                frame_to(Role::Server, false, 0, 1, b"a"),
                frame_to(Role::Server, true, 0, 0, b"b"),
                frame_to(Role::Server, true, 0, 1, b"c"),
            ]
            .concat(),
            // A whole message inside a fragmented one.
            [
                frame_to(Role::Server, false, 0, 1, b"a"),
                frame_to(Role::Server, true, 0, 1, b"c"),
            ]
            .concat(),
        ];
        let mut seen = Vec::new();
        for bytes in &cases {
            let (events, _) = same_whole_and_bytewise(Role::Server, &Config::default(), bytes);
            seen.push(events);
        }
        assert!(
            matches!(&seen[0][..], [Event::Closed(c)] if c.error == Some(ConnectionError::Protocol(ProtocolError::UnmaskedFrameFromClient)))
        );
        assert!(
            matches!(&seen[1][..], [Event::Closed(c)] if c.error == Some(ConnectionError::Protocol(ProtocolError::ReservedBitsSet { bits: 0x40 })))
        );
        assert!(matches!(&seen[2][..], [Event::Closed(_)]));
        assert_eq!(
            seen[3],
            [Event::Message(Message::Binary(Bytes::from(vec![5; 200])))]
        );
        assert_eq!(
            seen[4],
            [Event::Message(Message::Binary(Bytes::from(vec![
                5;
                70_000
            ])))]
        );
        assert!(
            matches!(&seen[5][..], [Event::Closed(c)] if c.error == Some(ConnectionError::Protocol(ProtocolError::UnexpectedContinuation)))
        );
        assert_eq!(
            seen[6],
            [
                Event::Message(Message::text("ab")),
                Event::Message(Message::text("c"))
            ]
        );
        assert!(
            matches!(&seen[7][..], [Event::Closed(c)] if c.error == Some(ConnectionError::Protocol(ProtocolError::ExpectedContinuation)))
        );
    }

    #[test]
    fn a_client_takes_unmasked_messages_and_refuses_masked_ones() {
        let config = Config::default();
        let (events, _) =
            same_whole_and_bytewise(Role::Client, &config, &raw_frame(true, 0, 1, None, b"hi"));
        assert_eq!(events, [Event::Message(Message::text("hi"))]);
        let (events, _) = same_whole_and_bytewise(
            Role::Client,
            &config,
            &raw_frame(true, 0, 1, Some(KEY), b"hi"),
        );
        assert!(
            matches!(&events[..], [Event::Closed(c)] if c.error == Some(ConnectionError::Protocol(ProtocolError::MaskedFrameFromServer)))
        );
    }
}

/// The small-frame send path writes what the general framing writes.
mod small_frame_send_path {
    use super::*;

    /// What `send` must put on the wire for one final data frame: the header as
    /// `FrameHead::encode` writes it, then the payload, masked with `KEY` by a client.
    fn expected(role: Role, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut head = FrameHead::new(true, opcode, payload.len() as u64);
        head.mask = role.masks_outgoing().then_some(KEY);
        let mut bytes = [0; MAX_HEAD_LEN];
        let len = head.encode(&mut bytes);
        let mut out = bytes[..len].to_vec();
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = head.mask {
            apply_mask(&mut out[start..], key, 0);
        }
        out
    }

    #[test]
    fn every_short_length_both_roles_and_kinds() {
        for role in [Role::Server, Role::Client] {
            for len in (0..=130_usize).chain([1000, 9000]) {
                let payload: Vec<u8> = (b'a'..=b'z').cycle().take(len).collect();
                let text = String::from_utf8(payload.clone()).unwrap();
                let mut conn = with_config(role, Config::default());
                conn.send(Message::text(text)).unwrap();
                conn.send(Message::binary(payload.clone())).unwrap();
                let mut want = expected(role, OpCode::Text, &payload);
                want.extend(expected(role, OpCode::Binary, &payload));
                assert_eq!(conn.buffered_amount(), want.len(), "{role:?} {len}");
                assert_eq!(wire(&mut conn), want, "{role:?} {len}");
                assert_eq!(conn.buffered_amount(), 0);
            }
        }
    }

    /// The cases the short path must leave to the general one: a fragmented message in
    /// progress, and a closing connection.
    #[test]
    fn refusals_are_the_general_paths() {
        let mut conn = server();
        conn.send_fragment(DataKind::Text, "a", false).unwrap();
        assert_eq!(
            conn.send(Message::text("b")),
            Err(ApiMisuse::FragmentedMessageInProgress)
        );
        conn.send_fragment(DataKind::Text, "c", true).unwrap();
        conn.send(Message::text("d")).unwrap();
        conn.close(t0(), None).unwrap();
        assert_eq!(
            conn.send(Message::binary(&b"e"[..])),
            Err(ApiMisuse::Closing)
        );
        let frames = sent_frames(&mut conn);
        let payloads: Vec<&[u8]> = frames.iter().map(|f| &f.payload[..]).collect();
        assert_eq!(payloads, [&b"a"[..], b"c", b"d", b""]);
    }
}

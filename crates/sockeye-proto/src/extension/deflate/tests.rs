//! RFC 7692 negotiation rules (section 7), one test per rule and role; the section 7.2.3
//! vectors; and compressed traffic between two connections under several parameter sets.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::extension::header::parse_extensions;
use crate::frame::{FrameDecoder, FrameHead, HeadRules, MAX_HEAD_LEN};
use crate::mask::{FixedMask, apply_mask};
use crate::{CloseCode, Config, Connection, Event, Message, ProtocolError, Role};

fn params(header: &str) -> ExtensionParams {
    parse_extensions([header]).unwrap().remove(0)
}

fn offers(header: &str) -> Vec<ExtensionParams> {
    parse_extensions([header]).unwrap()
}

fn server_answer(config: &DeflateConfig, header: &str) -> Option<String> {
    config
        .accept_offers(&offers(header))
        .map(|(response, _)| response.to_string())
}

mod rfc7692_7_server_side {
    use super::*;

    #[test]
    fn plain_offer_is_accepted_as_is() {
        assert_eq!(
            server_answer(&DeflateConfig::new(), "permessage-deflate").as_deref(),
            Some("permessage-deflate")
        );
    }

    #[test]
    fn browser_offer_is_accepted() {
        assert_eq!(
            server_answer(
                &DeflateConfig::new(),
                "permessage-deflate; client_max_window_bits"
            )
            .as_deref(),
            Some("permessage-deflate")
        );
    }

    #[test]
    fn s7_1_1_1_server_no_context_takeover_request_is_honoured() {
        assert_eq!(
            server_answer(
                &DeflateConfig::new(),
                "permessage-deflate; server_no_context_takeover"
            )
            .as_deref(),
            Some("permessage-deflate; server_no_context_takeover")
        );
    }

    #[test]
    fn s7_1_1_2_server_may_ask_client_no_context_takeover() {
        let config = DeflateConfig::new().client_no_context_takeover(true);
        assert_eq!(
            server_answer(&config, "permessage-deflate").as_deref(),
            Some("permessage-deflate; client_no_context_takeover")
        );
    }

    #[test]
    fn s7_1_2_1_server_window_is_limited_by_the_client() {
        assert_eq!(
            server_answer(
                &DeflateConfig::new(),
                "permessage-deflate; server_max_window_bits=10"
            )
            .as_deref(),
            Some("permessage-deflate; server_max_window_bits=10")
        );
        let small = DeflateConfig::new().server_max_window_bits(9);
        assert_eq!(
            server_answer(&small, "permessage-deflate; server_max_window_bits=12").as_deref(),
            Some("permessage-deflate; server_max_window_bits=9")
        );
    }

    #[test]
    fn s7_1_2_2_client_window_only_if_offered() {
        let config = DeflateConfig::new().client_max_window_bits(10);
        assert_eq!(
            server_answer(&config, "permessage-deflate; client_max_window_bits").as_deref(),
            Some("permessage-deflate; client_max_window_bits=10")
        );
        assert_eq!(
            server_answer(&config, "permessage-deflate; client_max_window_bits=12").as_deref(),
            Some("permessage-deflate; client_max_window_bits=10")
        );
        // Without the client's parameter the server cannot limit its window: decline.
        assert_eq!(server_answer(&config, "permessage-deflate"), None);
    }

    #[test]
    fn offered_client_window_value_is_echoed() {
        assert_eq!(
            server_answer(
                &DeflateConfig::new(),
                "permessage-deflate; client_max_window_bits=9"
            )
            .as_deref(),
            Some("permessage-deflate; client_max_window_bits=9")
        );
    }

    #[test]
    fn invalid_offers_are_declined() {
        for offer in [
            "permessage-deflate; unknown",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits=10; client_max_window_bits=11",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=abc",
            "x-other-extension",
        ] {
            assert_eq!(server_answer(&DeflateConfig::new(), offer), None, "{offer}");
        }
    }

    #[test]
    fn offers_are_taken_in_order() {
        let header = "permessage-deflate; bogus, permessage-deflate; server_max_window_bits=11, permessage-deflate";
        assert_eq!(
            server_answer(&DeflateConfig::new(), header).as_deref(),
            Some("permessage-deflate; server_max_window_bits=11")
        );
    }

    #[test]
    fn quoted_values_are_accepted() {
        assert_eq!(
            server_answer(
                &DeflateConfig::new(),
                "permessage-deflate; server_max_window_bits=\"10\""
            )
            .as_deref(),
            Some("permessage-deflate; server_max_window_bits=10")
        );
    }
}

mod rfc7692_7_client_side {
    use super::*;

    #[test]
    fn offer_names_client_max_window_bits() {
        assert_eq!(
            DeflateConfig::new().offer().to_string(),
            "permessage-deflate; client_max_window_bits"
        );
        let config = DeflateConfig::new()
            .server_no_context_takeover(true)
            .server_max_window_bits(10);
        assert_eq!(
            config.offer().to_string(),
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits"
        );
    }

    #[test]
    fn accepts_valid_responses() {
        let config = DeflateConfig::new();
        for response in [
            "permessage-deflate",
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=9",
            "permessage-deflate; client_max_window_bits=8",
        ] {
            assert!(
                config.accept_response(&params(response)).is_ok(),
                "{response}"
            );
        }
    }

    #[test]
    fn refuses_invalid_responses() {
        let config = DeflateConfig::new().client_max_window_bits(10);
        for (response, error) in [
            ("permessage-deflate; x", NegotiationError::UnknownParameter),
            (
                "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
                NegotiationError::DuplicateParameter(CLIENT_NO_CONTEXT_TAKEOVER),
            ),
            (
                "permessage-deflate; client_max_window_bits",
                NegotiationError::MissingValue(CLIENT_MAX_WINDOW_BITS),
            ),
            (
                "permessage-deflate; client_max_window_bits=12",
                NegotiationError::InvalidValue(CLIENT_MAX_WINDOW_BITS),
            ),
            (
                "permessage-deflate; server_max_window_bits=6",
                NegotiationError::InvalidValue(SERVER_MAX_WINDOW_BITS),
            ),
        ] {
            assert_eq!(
                config.accept_response(&params(response)).unwrap_err(),
                error,
                "{response}"
            );
        }
    }

    #[test]
    fn s7_1_1_1_requested_server_no_context_takeover_must_be_granted() {
        let config = DeflateConfig::new().server_no_context_takeover(true);
        assert_eq!(
            config
                .accept_response(&params("permessage-deflate"))
                .unwrap_err(),
            NegotiationError::Declined(SERVER_NO_CONTEXT_TAKEOVER)
        );
    }

    #[test]
    fn s7_1_2_1_requested_server_window_limit_must_be_kept() {
        let config = DeflateConfig::new().server_max_window_bits(10);
        assert!(
            config
                .accept_response(&params("permessage-deflate"))
                .is_err()
        );
        assert!(
            config
                .accept_response(&params("permessage-deflate; server_max_window_bits=11"))
                .is_err()
        );
        assert!(
            config
                .accept_response(&params("permessage-deflate; server_max_window_bits=10"))
                .is_ok()
        );
    }
}

/// A connection of `role` with permessage-deflate settled by a real negotiation.
fn negotiated_pair(
    client: &DeflateConfig,
    server: &DeflateConfig,
    config: &Config,
) -> (Connection, Connection) {
    let (response, server_ext) = server
        .accept_offers(&[client.offer()])
        .expect("server accepts");
    let client_ext = client.accept_response(&response).expect("client accepts");
    let now = Instant::now();
    let c = Connection::new(Role::Client, config.clone(), now).with_extension(Box::new(client_ext));
    let s = Connection::new(Role::Server, config.clone(), now).with_extension(Box::new(server_ext));
    (c, s)
}

fn transfer(from: &mut Connection, to: &mut Connection) -> Vec<Event> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = from.poll_transmit() {
        buf.extend_from_slice(&chunk);
    }
    let now = Instant::now();
    while to.handle_bytes(&mut buf, now).is_paused() {}
    std::iter::from_fn(|| to.poll_event()).collect()
}

fn server_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode];
    let mut head = FrameHead::new(fin, OpCode::Text, payload.len() as u64);
    head.mask = None;
    let mut bytes = [0; MAX_HEAD_LEN];
    let len = head.encode(&mut bytes);
    out.extend_from_slice(&bytes[1..len]);
    out.extend_from_slice(payload);
    out
}

fn client_conn() -> Connection {
    let (client, _) = negotiated_pair(
        &DeflateConfig::new(),
        &DeflateConfig::new(),
        &Config::default(),
    );
    client
}

fn receive(conn: &mut Connection, bytes: &[u8]) -> Vec<Event> {
    let mut buf = BytesMut::from(bytes);
    while conn.handle_bytes(&mut buf, Instant::now()).is_paused() {}
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn hello() -> Event {
    Event::Message(Message::text("Hello"))
}

mod rfc7692_7_2_3_examples {
    use super::*;

    #[test]
    fn s7_2_3_1_a_message_compressed_using_one_block() {
        let mut conn = client_conn();
        assert_eq!(
            receive(
                &mut conn,
                &[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
            ),
            [hello()]
        );
    }

    #[test]
    fn s7_2_3_1_fragmented() {
        let mut conn = client_conn();
        let bytes = [
            0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(receive(&mut conn, &bytes), [hello()]);
    }

    #[test]
    fn s7_2_3_2_sharing_the_window_across_messages() {
        let mut conn = client_conn();
        let bytes = [
            0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, // first "Hello"
            0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00,
            0x00, // second, referring back into the window
        ];
        assert_eq!(receive(&mut conn, &bytes), [hello(), hello()]);
    }

    #[test]
    fn s7_2_3_3_uncompressed_deflate_block() {
        let mut conn = client_conn();
        let bytes = [
            0xc1, 0x0b, 0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(receive(&mut conn, &bytes), [hello()]);
    }

    #[test]
    fn s7_2_3_5_two_deflate_blocks_in_one_message() {
        let mut conn = client_conn();
        let bytes = [
            0xc1, 0x0d, 0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07,
            0x00,
        ];
        assert_eq!(receive(&mut conn, &bytes), [hello()]);
    }

    #[test]
    fn s7_2_3_4_bfinal_set() {
        let mut conn = client_conn();
        let bytes = [0xc1, 0x08, 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(receive(&mut conn, &bytes), [hello()]);
        // A new deflate stream starts with the next message.
        assert_eq!(
            receive(
                &mut conn,
                &[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
            ),
            [hello()]
        );
    }

    #[test]
    fn our_encoding_of_hello_matches_the_rfc() {
        let (_, mut server) = negotiated_pair(
            &DeflateConfig::new(),
            &DeflateConfig::new().threshold(0),
            &Config::default(),
        );
        server.send_text("Hello").unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = server.poll_transmit() {
            out.extend_from_slice(&chunk);
        }
        assert_eq!(out, [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    }
}

mod rfc7692_6_errors {
    use super::*;

    fn closed_code(events: &[Event]) -> Option<CloseCode> {
        events.iter().find_map(|e| match e {
            Event::Closed(c) => Some(c.code()),
            _ => None,
        })
    }

    #[test]
    fn corrupt_data_fails_with_1007() {
        let mut conn = client_conn();
        let events = receive(
            &mut conn,
            &server_frame(true, true, 1, &[0xff, 0xff, 0xff, 0xff]),
        );
        assert_eq!(closed_code(&events), Some(CloseCode::INVALID_PAYLOAD));
    }

    #[test]
    fn rsv1_on_continuation_fails_with_1002() {
        let mut conn = client_conn();
        let mut bytes = server_frame(false, true, 1, &[0xf2, 0x48]);
        bytes.extend(server_frame(true, true, 0, &[0xcd, 0xc9, 0xc9, 0x07, 0x00]));
        let events = receive(&mut conn, &bytes);
        assert_eq!(closed_code(&events), Some(CloseCode::PROTOCOL_ERROR));
    }

    #[test]
    fn rsv1_on_control_frame_fails_with_1002() {
        let mut conn = client_conn();
        let events = receive(&mut conn, &server_frame(true, true, 9, b""));
        assert_eq!(closed_code(&events), Some(CloseCode::PROTOCOL_ERROR));
    }

    #[test]
    fn inflated_size_is_capped_with_1009() {
        let config = Config::builder().max_message_size(1000).build().unwrap();
        let (mut client, _) =
            negotiated_pair(&DeflateConfig::new(), &DeflateConfig::new(), &config);
        let compressed = raw_deflate(&[b'a'; 5000], 15);
        assert!(compressed.len() < 100);
        let events = receive(&mut client, &server_frame(true, true, 2, &compressed));
        let closed = events.iter().find_map(|e| match e {
            Event::Closed(c) => Some(c.clone()),
            _ => None,
        });
        let closed = closed.expect("closed");
        assert_eq!(closed.code(), CloseCode::MESSAGE_TOO_BIG);
        assert!(matches!(
            closed.error,
            Some(crate::ConnectionError::Protocol(ProtocolError::Extension(
                ExtensionError::DecodedTooBig { .. }
            )))
        ));
    }

    /// A receiver whose frame limit is its message limit takes a compressed frame of a message
    /// at that limit, though deflate made the frame longer than the limit; a compressed frame
    /// longer than deflate can make such a message, or an uncompressed one over the frame
    /// limit, still fails with 1009.
    #[test]
    fn compressed_frames_get_deflates_allowance_over_the_frame_limit() {
        let config = Config::builder()
            .max_frame_size(1000)
            .max_message_size(1000)
            .build()
            .unwrap();
        let connect = || negotiated_pair(&DeflateConfig::new(), &DeflateConfig::new(), &config).0;
        let data = incompressible(1000);
        let compressed = compress_once(&data, 15, 1).unwrap();
        assert!(
            compressed.len() > 1000 && compressed.len() <= max_compressed_len(1000),
            "{} compressed",
            compressed.len()
        );
        let events = receive(&mut connect(), &server_frame(true, true, 2, &compressed));
        assert_eq!(events, [Event::Message(Message::binary(data))]);

        let too_long = vec![0; max_compressed_len(1000) + 1];
        let events = receive(&mut connect(), &server_frame(true, true, 2, &too_long));
        assert_eq!(closed_code(&events), Some(CloseCode::MESSAGE_TOO_BIG));
        let events = receive(&mut connect(), &server_frame(true, false, 2, &[0; 1001]));
        assert_eq!(closed_code(&events), Some(CloseCode::MESSAGE_TOO_BIG));
    }

    #[test]
    fn invalid_utf8_after_inflating_fails_with_1007() {
        let mut conn = client_conn();
        let events = receive(
            &mut conn,
            &server_frame(true, true, 1, &raw_deflate(b"ok\xff", 15)),
        );
        assert_eq!(closed_code(&events), Some(CloseCode::INVALID_PAYLOAD));
    }
}

mod traffic {
    use super::*;

    fn param_sets() -> Vec<(DeflateConfig, DeflateConfig)> {
        vec![
            (DeflateConfig::new(), DeflateConfig::new()),
            (
                DeflateConfig::new().server_no_context_takeover(true),
                DeflateConfig::new(),
            ),
            (
                DeflateConfig::new(),
                DeflateConfig::new().client_no_context_takeover(true),
            ),
            (
                DeflateConfig::new().server_max_window_bits(9),
                DeflateConfig::new().client_max_window_bits(10),
            ),
            // 8-bit windows: messages leave uncompressed, and that is still valid.
            (
                DeflateConfig::new()
                    .server_max_window_bits(8)
                    .client_max_window_bits(8),
                DeflateConfig::new(),
            ),
            (
                DeflateConfig::new().threshold(0),
                DeflateConfig::new().threshold(0).level(1),
            ),
        ]
    }

    #[test]
    fn window_8_sends_uncompressed() {
        let client = DeflateConfig::new().server_max_window_bits(8);
        let (_, mut server) = negotiated_pair(&client, &DeflateConfig::new(), &Config::default());
        server.send_text("x".repeat(1000)).unwrap();
        let mut buf = BytesMut::new();
        while let Some(chunk) = server.poll_transmit() {
            buf.extend_from_slice(&chunk);
        }
        let mut decoder = FrameDecoder::new(HeadRules {
            role: Role::Client,
            extension_rsv: Rsv::RSV1,
            max_frame_size: 1 << 20,
        });
        let frame = decoder.decode(&mut buf).unwrap().unwrap();
        assert!(frame.rsv.is_empty());
        assert_eq!(frame.payload.len(), 1000);
    }

    #[test]
    fn compresses_text_both_ways() {
        let (mut client, mut server) = negotiated_pair(
            &DeflateConfig::new(),
            &DeflateConfig::new(),
            &Config::default(),
        );
        let text = "{\"id\": 1, \"name\": \"sockeye\", \"tags\": [\"a\", \"b\"]}".repeat(50);
        client.send_text(text.as_str()).unwrap();
        let wire = client.buffered_amount();
        assert!(
            wire < text.len() / 5,
            "{wire} bytes on the wire for {}",
            text.len()
        );
        assert_eq!(
            transfer(&mut client, &mut server),
            [Event::Message(Message::text(text.as_str()))]
        );
        server.send_text(text.as_str()).unwrap();
        assert_eq!(
            transfer(&mut server, &mut client),
            [Event::Message(Message::text(text))]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn messages_round_trip_under_every_parameter_set(
            set in 0usize..6,
            messages in prop::collection::vec(
                prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..3000).prop_map(Message::binary),
                    "[a-e ]{0,3000}".prop_map(Message::text),
                    prop::collection::vec(0u8..4, 0..20000).prop_map(Message::binary),
                ],
                1..8,
            ),
        ) {
            let (client_config, server_config) = &param_sets()[set];
            let (mut client, mut server) = negotiated_pair(client_config, server_config, &Config::default());
            for message in &messages {
                client.send(message.clone()).unwrap();
            }
            let got = transfer(&mut client, &mut server);
            let want: Vec<Event> = messages.iter().cloned().map(Event::Message).collect();
            prop_assert_eq!(&got, &want);
            for message in &messages {
                server.send(message.clone()).unwrap();
            }
            prop_assert_eq!(transfer(&mut server, &mut client), want);
        }

        /// A compressed message split into frames anywhere decodes the same.
        #[test]
        fn fragmented_compressed_message(text in "[a-z]{1,2000}", cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4)) {
            let compressed = raw_deflate(text.as_bytes(), 15);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(compressed.len() + 1)).collect();
            points.sort_unstable();
            points.dedup();
            let mut bytes = Vec::new();
            let mut start = 0;
            for (i, end) in points.iter().copied().chain([compressed.len()]).enumerate() {
                if end < start { continue; }
                let last = end == compressed.len();
                bytes.extend(server_frame(last, i == 0, u8::from(i == 0), &compressed[start..end]));
                start = end;
                if last { break; }
            }
            let mut conn = client_conn();
            prop_assert_eq!(receive(&mut conn, &bytes), vec![Event::Message(Message::text(text))]);
        }
    }

    #[test]
    fn masked_client_frames_decode_at_the_server() {
        let (client, mut server) = negotiated_pair(
            &DeflateConfig::new(),
            &DeflateConfig::new(),
            &Config::default(),
        );
        let mut client = client.with_mask_source(Box::new(FixedMask([9, 8, 7, 6])));
        client.send_binary(Bytes::from(vec![42u8; 10_000])).unwrap();
        let events = transfer(&mut client, &mut server);
        assert_eq!(
            events,
            [Event::Message(Message::binary(vec![42u8; 10_000]))]
        );
        let _ = apply_mask;
    }
}

mod empty_messages {
    use super::*;

    fn wire(conn: &mut Connection) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = conn.poll_transmit() {
            out.extend_from_slice(&chunk);
        }
        out
    }

    #[test]
    fn rfc7692_7_2_3_6_empty_message_is_one_zero_byte_even_after_others() {
        let (_, mut server) = negotiated_pair(
            &DeflateConfig::new(),
            &DeflateConfig::new(),
            &Config::default(),
        );
        server.send_text("").unwrap();
        assert_eq!(wire(&mut server), [0xc1, 0x01, 0x00]);
        server.send_text("abc").unwrap();
        let _ = wire(&mut server);
        // A second flush has nothing new to emit; the empty message is still 0x00.
        server.send_text("").unwrap();
        assert_eq!(wire(&mut server), [0xc1, 0x01, 0x00]);
    }

    #[test]
    fn empty_messages_between_others_round_trip() {
        let (mut client, mut server) = negotiated_pair(
            &DeflateConfig::new(),
            &DeflateConfig::new(),
            &Config::default(),
        );
        for text in ["a", "", "", "bcd", "", "bcd"] {
            server.send_text(text).unwrap();
            assert_eq!(
                transfer(&mut server, &mut client),
                [Event::Message(Message::text(text))]
            );
            client.send_text(text).unwrap();
            assert_eq!(
                transfer(&mut client, &mut server),
                [Event::Message(Message::text(text))]
            );
        }
    }

    #[test]
    fn an_empty_compressed_payload_is_taken_as_an_empty_message() {
        let mut conn = client_conn();
        let mut bytes = server_frame(true, true, 1, b"");
        bytes.extend_from_slice(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(
            receive(&mut conn, &bytes),
            [Event::Message(Message::text("")), hello()]
        );
    }
}

#[test]
fn inflated_small_messages_hold_small_buffers() {
    let mut conn = client_conn();
    let events = receive(
        &mut conn,
        &[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
    );
    assert_eq!(events, [hello()]);
    let mut deflate = client_side_deflate();
    let out = deflate
        .decode(
            Bytes::from_static(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
            true,
            1 << 20,
        )
        .unwrap();
    assert_eq!(&out[..], b"Hello");
    // `Bytes::from(Vec)` keeps the Vec's capacity; a shrunk Vec converts without waste.
    let vec: Vec<u8> = out.into();
    assert!(vec.capacity() < 128, "capacity {}", vec.capacity());
}

fn client_side_deflate() -> Deflate {
    DeflateConfig::new()
        .accept_response(&ExtensionParams::new(NAME))
        .unwrap()
}

/// Random bytes do not compress: the worst case for [`max_compressed_len`].
fn incompressible(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[test]
fn max_compressed_len_bounds_every_window_and_level() {
    for len in [0, 1, 100, 512, 513, 4096, 65_536, 150_000] {
        let data = incompressible(len);
        for window in 9..=15 {
            // Level 0 sends stored blocks; level 1 fixed-code blocks, about 5% larger than random input.
            for level in [0, 1, 9] {
                let out = compress_once(&data, window, level).unwrap();
                assert!(
                    out.len() <= max_compressed_len(len),
                    "{len} bytes at window {window}, level {level}: {} compressed, bound {}",
                    out.len(),
                    max_compressed_len(len)
                );
            }
        }
    }
}

//! Close codes and Close frame payloads (RFC 6455 sections 5.5.1 and 7.4).

use std::fmt;

use bytes::{BufMut, Bytes};

use crate::error::{ApiMisuse, ProtocolError};
use crate::utf8::Utf8Bytes;

/// A close status code (RFC 6455 section 7.4).
///
/// An open newtype: codes this crate has no constant for (the 3000-4999 ranges registered by
/// libraries and applications) pass through untouched.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

macro_rules! close_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        impl CloseCode {
            $($(#[$doc])* pub const $name: Self = Self($value);)*

            /// The constant's name for a code this crate knows.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

close_codes! {
    /// 1000: the purpose of the connection has been fulfilled.
    NORMAL = 1000,
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    GOING_AWAY = 1001,
    /// 1002: the peer broke the protocol.
    PROTOCOL_ERROR = 1002,
    /// 1003: a data type the endpoint cannot accept (binary for a text-only endpoint).
    UNSUPPORTED_DATA = 1003,
    /// 1005: reserved; reported when a Close frame had no status code. Never sent.
    NO_STATUS_RECEIVED = 1005,
    /// 1006: reserved; reported when the connection ended without a Close frame. Never sent.
    ABNORMAL = 1006,
    /// 1007: message data inconsistent with its type (invalid UTF-8 in a text message).
    INVALID_PAYLOAD = 1007,
    /// 1008: a message violated the endpoint's policy.
    POLICY_VIOLATION = 1008,
    /// 1009: a message too big to process.
    MESSAGE_TOO_BIG = 1009,
    /// 1010: the client expected the server to negotiate an extension it did not.
    MANDATORY_EXTENSION = 1010,
    /// 1011: the server met an unexpected condition.
    INTERNAL_ERROR = 1011,
    /// 1012: the service is restarting (IANA registry).
    SERVICE_RESTART = 1012,
    /// 1013: try again later (IANA registry).
    TRY_AGAIN_LATER = 1013,
    /// 1014: a gateway received an invalid response upstream (IANA registry).
    BAD_GATEWAY = 1014,
    /// 1015: reserved; reported when the TLS handshake failed. Never sent.
    TLS_HANDSHAKE = 1015,
}

impl CloseCode {
    /// Whether this code may appear in a Close frame on the wire (RFC 6455 section 7.4.1 and the
    /// IANA registry of section 11.7): 1000-1003, 1007-1014, and 3000-4999.
    ///
    /// 1004 is reserved, 1005, 1006 and 1015 are only ever reported locally, codes below 1000 are
    /// not used, and 1016-2999 are reserved for future revisions of the protocol.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "CloseCode({} {name})", self.0),
            None => write!(f, "CloseCode({})", self.0),
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

/// The most bytes a close reason may take: a control frame payload is at most 125 bytes (RFC 6455
/// section 5.5), two of which are the code.
pub const MAX_REASON_LEN: usize = 123;

/// The contents of a Close frame: a status code and a UTF-8 reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// Why the connection closed, for humans; at most [`MAX_REASON_LEN`] bytes.
    pub reason: Utf8Bytes,
}

impl CloseFrame {
    /// A Close frame with a code and a reason, checked for what may be sent.
    ///
    /// # Errors
    /// [`ApiMisuse::InvalidCloseCode`] for a code that must not be sent (1005, 1006, 1015, ...),
    /// [`ApiMisuse::CloseReasonTooLong`] for a reason over [`MAX_REASON_LEN`] bytes.
    pub fn new(code: CloseCode, reason: impl Into<Utf8Bytes>) -> Result<Self, ApiMisuse> {
        let reason = reason.into();
        if !code.is_sendable() {
            return Err(ApiMisuse::InvalidCloseCode { code: code.0 });
        }
        if reason.len() > MAX_REASON_LEN {
            return Err(ApiMisuse::CloseReasonTooLong { len: reason.len() });
        }
        Ok(Self { code, reason })
    }

    /// Parses the payload of a received Close frame (RFC 6455 section 5.5.1).
    ///
    /// `Ok(None)` is an empty payload: no status code (reported as 1005).
    ///
    /// # Errors
    /// A one-byte payload and a code that may not be sent are protocol errors (1002); a reason
    /// that is not UTF-8 is invalid payload data (1007).
    pub fn parse(payload: &Bytes) -> Result<Option<Self>, ProtocolError> {
        let Some((code, _)) = payload.split_first_chunk::<2>() else {
            if payload.is_empty() {
                return Ok(None);
            }
            return Err(ProtocolError::InvalidCloseLength);
        };
        let code = CloseCode(u16::from_be_bytes(*code));
        if !code.is_sendable() {
            return Err(ProtocolError::InvalidCloseCode { code: code.0 });
        }
        // Section 5.5.1: the body after the code is UTF-8 encoded data.
        let reason =
            Utf8Bytes::try_from(payload.slice(2..)).map_err(|e| ProtocolError::InvalidUtf8 {
                valid_up_to: e.valid_up_to(),
            })?;
        Ok(Some(Self { code, reason }))
    }

    /// The wire form: the code in network byte order, then the reason.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u16(self.code.0);
        out.put_slice(self.reason.as_bytes());
    }

    /// Length of the wire form.
    pub fn encoded_len(&self) -> usize {
        2usize.saturating_add(self.reason.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod rfc6455_7_4_close_codes {
        use super::*;

        #[test]
        fn sendable_ranges() {
            for code in [
                1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
            ] {
                assert!(CloseCode(code).is_sendable(), "{code}");
            }
            for code in [3000, 3999, 4000, 4999] {
                assert!(CloseCode(code).is_sendable(), "{code}");
            }
            for code in [
                0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
            ] {
                assert!(!CloseCode(code).is_sendable(), "{code}");
            }
        }

        #[test]
        fn debug_names_known_codes() {
            assert_eq!(format!("{:?}", CloseCode::NORMAL), "CloseCode(1000 NORMAL)");
            assert_eq!(format!("{:?}", CloseCode(4321)), "CloseCode(4321)");
        }
    }

    mod rfc6455_5_5_1_close_payload {
        use super::*;

        #[test]
        fn empty_payload_has_no_code() {
            assert_eq!(CloseFrame::parse(&Bytes::new()), Ok(None));
        }

        #[test]
        fn one_byte_payload_is_protocol_error() {
            assert_eq!(
                CloseFrame::parse(&Bytes::from_static(&[0x03])),
                Err(ProtocolError::InvalidCloseLength)
            );
        }

        #[test]
        fn code_and_reason() {
            let frame = CloseFrame::parse(&Bytes::from_static(b"\x03\xe8bye"))
                .unwrap()
                .unwrap();
            assert_eq!(frame.code, CloseCode::NORMAL);
            assert_eq!(frame.reason.as_str(), "bye");
        }

        #[test]
        fn reserved_code_is_protocol_error() {
            assert_eq!(
                CloseFrame::parse(&Bytes::from_static(b"\x03\xed")),
                Err(ProtocolError::InvalidCloseCode { code: 1005 })
            );
        }

        #[test]
        fn invalid_utf8_reason_is_invalid_payload() {
            let err = CloseFrame::parse(&Bytes::from_static(b"\x03\xe8ok\xff")).unwrap_err();
            assert_eq!(err, ProtocolError::InvalidUtf8 { valid_up_to: 2 });
            assert_eq!(err.close_code(), CloseCode::INVALID_PAYLOAD);
        }

        #[test]
        fn encode_round_trips() {
            let frame = CloseFrame::new(CloseCode(4000), "app").unwrap();
            let mut out = Vec::new();
            frame.encode(&mut out);
            assert_eq!(out, b"\x0f\xa0app");
            assert_eq!(out.len(), frame.encoded_len());
            assert_eq!(CloseFrame::parse(&Bytes::from(out)).unwrap(), Some(frame));
        }

        #[test]
        fn new_refuses_what_may_not_be_sent() {
            assert_eq!(
                CloseFrame::new(CloseCode::NO_STATUS_RECEIVED, ""),
                Err(ApiMisuse::InvalidCloseCode { code: 1005 })
            );
            let long = "x".repeat(MAX_REASON_LEN + 1);
            assert_eq!(
                CloseFrame::new(CloseCode::NORMAL, long),
                Err(ApiMisuse::CloseReasonTooLong { len: 124 })
            );
            assert!(CloseFrame::new(CloseCode::NORMAL, "x".repeat(MAX_REASON_LEN)).is_ok());
        }
    }
}

//! [`Utf8Bytes`]: immutable, cheaply cloneable bytes known to be valid UTF-8.
//!
//! This crate exists for one `unsafe` block. `sockeye-proto` forbids `unsafe`, and without it a
//! `Bytes` buffer can only be viewed as `&str` by validating it again on every view, or once
//! more with `std`'s slower validator when it is wrapped. The `decode_unmask_text` benchmark of
//! `sockeye-proto` showed that second validation cutting text decoding to about a fifth of
//! binary decoding. Here every constructor validates (with `simdutf8`) or starts from a `str`,
//! so [`Utf8Bytes::as_str`] can skip the check.

// docs.rs (`--cfg docsrs`, on nightly): each item marked with the Cargo features it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_code)]
// `try_from` reads what a peer sent: no indexing, unwrapping, panicking or overflowing arithmetic
// outside the tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// Immutable, cheaply cloneable bytes known to be valid UTF-8; derefs to `str` for free.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Utf8Bytes(Bytes);

/// The bytes were not valid UTF-8: the one error type for UTF-8 in Sockeye, from
/// [`Utf8Bytes::try_from`] and from `sockeye-proto`'s streaming validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error {
    valid_up_to: usize,
}

impl Utf8Error {
    /// The error for text whose first `valid_up_to` bytes are valid and the next are not (or
    /// end inside a code point), for validators other than [`Utf8Bytes::try_from`].
    pub const fn new(valid_up_to: usize) -> Self {
        Self { valid_up_to }
    }

    /// How many bytes from the start are valid UTF-8.
    pub fn valid_up_to(&self) -> usize {
        self.valid_up_to
    }
}

impl fmt::Display for Utf8Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid UTF-8 after {} valid bytes", self.valid_up_to)
    }
}

impl std::error::Error for Utf8Error {}

impl Utf8Bytes {
    /// An empty string.
    pub const fn new() -> Self {
        Self(Bytes::new())
    }

    /// A string from static text, without copying.
    pub const fn from_static(text: &'static str) -> Self {
        Self(Bytes::from_static(text.as_bytes()))
    }

    /// The text.
    #[allow(unsafe_code)]
    pub fn as_str(&self) -> &str {
        // SAFETY: every way to build a `Utf8Bytes` either validated the bytes (`try_from`) or
        // copied them from a `str` (`From<&str>`, `From<String>`, `from_static`), and the bytes
        // are immutable afterwards: the field is private and `Bytes` never changes its contents.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The text as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The underlying shared buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = Utf8Error;

    /// Validates `bytes` (with `simdutf8`) and wraps them without copying.
    fn try_from(bytes: Bytes) -> Result<Self, Utf8Error> {
        if simdutf8::basic::from_utf8(&bytes).is_ok() {
            return Ok(Self(bytes));
        }
        // The slower, precise validator only on the error path, for the position.
        let valid_up_to = match simdutf8::compat::from_utf8(&bytes) {
            Ok(_) => bytes.len(),
            Err(e) => e.valid_up_to(),
        };
        Err(Utf8Error { valid_up_to })
    }
}

impl Deref for Utf8Bytes {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Borrow<str> for Utf8Bytes {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<&str> for Utf8Bytes {
    fn from(text: &str) -> Self {
        Self(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl From<String> for Utf8Bytes {
    fn from(text: String) -> Self {
        Self(Bytes::from(text.into_bytes()))
    }
}

impl From<&String> for Utf8Bytes {
    fn from(text: &String) -> Self {
        Self::from(text.as_str())
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(text: Utf8Bytes) -> Self {
        text.0
    }
}

impl From<Utf8Bytes> for String {
    fn from(text: Utf8Bytes) -> Self {
        text.as_str().to_owned()
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn valid_and_invalid() {
        let text = Utf8Bytes::try_from(Bytes::from_static("h\u{e9}".as_bytes())).unwrap();
        assert_eq!(text.as_str(), "h\u{e9}");
        assert_eq!(&*text, "h\u{e9}");
        let err = Utf8Bytes::try_from(Bytes::from_static(b"ab\xc0")).unwrap_err();
        assert_eq!(err.valid_up_to(), 2);
        assert_eq!(Utf8Bytes::from("x"), "x");
        assert_eq!(Utf8Bytes::from(String::from("y")).as_bytes(), b"y");
        assert_eq!(Utf8Bytes::from_static("z").into_bytes(), "z");
    }

    proptest! {
        /// `try_from` agrees with `std::str::from_utf8`, and what it accepts reads back the same.
        #[test]
        fn agrees_with_std(bytes in prop::collection::vec(
            prop_oneof![any::<u8>(), Just(0xe2u8), Just(0x82u8), Just(0xacu8), Just(0xf0u8)],
            0..80,
        )) {
            let ours = Utf8Bytes::try_from(Bytes::from(bytes.clone()));
            match std::str::from_utf8(&bytes) {
                Ok(text) => {
                    let ours = ours.unwrap();
                    prop_assert_eq!(ours.as_str(), text);
                }
                Err(e) => prop_assert_eq!(ours.unwrap_err().valid_up_to(), e.valid_up_to()),
            }
        }

        #[test]
        fn text_round_trips(text in "\\PC{0,64}") {
            let ours = Utf8Bytes::from(text.as_str());
            prop_assert_eq!(ours.as_str(), text.as_str());
        }
    }
}

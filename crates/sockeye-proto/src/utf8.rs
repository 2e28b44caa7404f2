//! UTF-8 for text messages: a streaming validator that carries a partial code point across frames
//! and fails as soon as the bytes can no longer become valid, and [`Utf8Bytes`] (from the
//! `sockeye-utf8` crate), a shared buffer known to hold UTF-8. Both report a [`Utf8Error`], the
//! `sockeye-utf8` crate's.

pub use sockeye_utf8::{Utf8Bytes, Utf8Error};

/// Incremental UTF-8 validation of a message that arrives in pieces.
///
/// Feed the pieces in order with [`feed`](Self::feed) and end the message with
/// [`finish`](Self::finish). A code point may be split between pieces; the validator keeps its
/// first bytes (at most three) until the rest arrives. It reports an error as soon as the bytes
/// seen so far cannot be the start of any valid UTF-8 text, not only at the end.
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    /// Leading bytes of a code point split at the end of the last piece.
    partial: [u8; 4],
    partial_len: u8,
    /// Bytes fed and accepted so far, for the error's `valid_up_to`.
    consumed: usize,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece of the message.
    ///
    /// # Errors
    /// When the message so far cannot be extended to valid UTF-8. `valid_up_to` counts from the
    /// start of the message.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), Utf8Error> {
        if self.partial_len > 0 {
            input = self.complete_partial(input)?;
            if self.partial_len > 0 {
                // The whole piece went into a code point that is still incomplete.
                return Ok(());
            }
        }
        match simdutf8::compat::from_utf8(input) {
            Ok(_) => {
                self.consumed = self.consumed.saturating_add(input.len());
                Ok(())
            }
            Err(e) => {
                let valid = e.valid_up_to();
                if e.error_len().is_some() {
                    return Err(self.error_at(valid));
                }
                // The piece ends inside a code point whose bytes so far are a valid prefix:
                // `error_len() == None` guarantees it, so the tail is at most three bytes.
                let tail = input.get(valid..).unwrap_or_default();
                self.consumed = self.consumed.saturating_add(valid);
                self.stash(tail);
                Ok(())
            }
        }
    }

    /// Ends the message.
    ///
    /// # Errors
    /// When the message ends inside a code point.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let result = if self.partial_len == 0 {
            Ok(())
        } else {
            Err(self.error_at(0))
        };
        *self = Self::default();
        result
    }

    /// Whether no bytes of an unfinished code point are held.
    pub fn is_at_boundary(&self) -> bool {
        self.partial_len == 0
    }

    /// Adds bytes from `input` to the held partial code point; returns what is left of `input`.
    fn complete_partial<'a>(&mut self, input: &'a [u8]) -> Result<&'a [u8], Utf8Error> {
        let held = usize::from(self.partial_len);
        // The held bytes, then as many of `input` as fit beside them in four.
        let mut joined = self.partial;
        let take = input.len().min(joined.len().saturating_sub(held));
        for (slot, byte) in joined.iter_mut().skip(held).zip(input) {
            *slot = *byte;
        }
        let candidate = joined.get(..held.saturating_add(take)).unwrap_or_default();
        match simdutf8::compat::from_utf8(candidate) {
            // Four bytes or fewer that are all valid: the held code point is complete, and the
            // bytes after it belong to the bulk validation below.
            Ok(_) => Ok(self.accept_partial(held, candidate.len(), input)),
            Err(e) if e.valid_up_to() > 0 => Ok(self.accept_partial(held, e.valid_up_to(), input)),
            Err(e) if e.error_len().is_none() => {
                // Still a valid prefix, and `input` was too short to finish it.
                self.stash(candidate);
                Ok(&[])
            }
            Err(_) => Err(self.error_at(0)),
        }
    }

    /// The held code point ends at byte `end` of the joined buffer.
    fn accept_partial<'a>(&mut self, held: usize, end: usize, input: &'a [u8]) -> &'a [u8] {
        self.consumed = self.consumed.saturating_add(end);
        self.partial_len = 0;
        // `end` is past the held bytes: the completed code point is longer than they are.
        input.get(end.saturating_sub(held)..).unwrap_or_default()
    }

    fn stash(&mut self, tail: &[u8]) {
        let len = tail.len().min(self.partial.len());
        for (slot, byte) in self.partial.iter_mut().zip(tail) {
            *slot = *byte;
        }
        self.partial_len = u8::try_from(len).unwrap_or(4);
    }

    fn error_at(&self, offset: usize) -> Utf8Error {
        Utf8Error::new(self.consumed.saturating_add(offset))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    fn feed_all(pieces: &[&[u8]]) -> Result<(), Utf8Error> {
        let mut v = Utf8Validator::new();
        for piece in pieces {
            v.feed(piece)?;
        }
        v.finish()
    }

    #[test]
    fn code_point_split_across_pieces() {
        // U+1F600 (4 bytes) split in every place, and U+20AC (3 bytes).
        let smile = "a\u{1F600}b".as_bytes();
        for cut in 0..=smile.len() {
            let (a, b) = smile.split_at(cut);
            assert_eq!(feed_all(&[a, b]), Ok(()), "cut at {cut}");
        }
        let euro = "\u{20AC}".as_bytes();
        assert_eq!(feed_all(&[&euro[..1], &euro[1..2], &euro[2..]]), Ok(()));
    }

    #[test]
    fn fails_fast_inside_a_piece() {
        let mut v = Utf8Validator::new();
        // 0xF4 0x90 starts a code point above U+10FFFF: invalid before the piece ends.
        assert_eq!(v.feed(b"ab\xf4\x90"), Err(Utf8Error::new(2)));
    }

    #[test]
    fn fails_fast_on_held_prefix() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"xy\xed"), Ok(()));
        // 0xED 0xA0 would be a UTF-16 surrogate.
        assert_eq!(v.feed(b"\xa0\x80"), Err(Utf8Error::new(2)));
    }

    #[test]
    fn valid_up_to_counts_from_message_start() {
        let mut v = Utf8Validator::new();
        v.feed(b"hello").unwrap();
        v.feed(&"\u{e9}".as_bytes()[..1]).unwrap();
        v.feed(&"\u{e9}".as_bytes()[1..]).unwrap();
        assert_eq!(v.feed(b"ok\xff"), Err(Utf8Error::new(9)));
    }

    #[test]
    fn truncated_at_end_fails_on_finish() {
        let mut v = Utf8Validator::new();
        v.feed(b"a\xe2\x82").unwrap();
        assert!(!v.is_at_boundary());
        assert_eq!(v.finish(), Err(Utf8Error::new(1)));
        // finish resets for the next message
        assert!(v.is_at_boundary());
        assert_eq!(v.feed(b"ok"), Ok(()));
    }

    #[test]
    fn one_byte_at_a_time_through_held_prefix() {
        let text = "\u{10348}\u{20AC}x".as_bytes();
        let pieces: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(feed_all(&pieces), Ok(()));
    }

    #[test]
    fn utf8_bytes_validates_when_wrapping() {
        let text = Utf8Bytes::try_from(Bytes::from_static("h\u{e9}".as_bytes())).unwrap();
        assert_eq!(text.as_str(), "h\u{e9}");
        assert_eq!(&*text, "h\u{e9}");
        assert_eq!(
            Utf8Bytes::try_from(Bytes::from_static(b"a\xc0"))
                .unwrap_err()
                .valid_up_to(),
            1
        );
    }

    proptest! {
        /// The validator agrees with `std::str::from_utf8` for any bytes split anywhere.
        #[test]
        fn agrees_with_std(
            bytes in prop::collection::vec(
                prop_oneof![any::<u8>(), Just(0xe2u8), Just(0x82u8), Just(0xacu8), Just(0xf0u8), Just(0x9fu8)],
                0..64,
            ),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for p in points {
                pieces.push(&bytes[start..p]);
                start = p;
            }
            pieces.push(&bytes[start..]);
            let ours = feed_all(&pieces);
            match std::str::from_utf8(&bytes) {
                Ok(_) => prop_assert_eq!(ours, Ok(())),
                Err(e) => prop_assert_eq!(ours, Err(Utf8Error::new(e.valid_up_to()))),
            }
        }

        /// Valid text split anywhere is accepted.
        #[test]
        fn accepts_valid_text_in_any_split(text in "\\PC{0,40}", cut in any::<prop::sample::Index>()) {
            let bytes = text.as_bytes();
            let (a, b) = bytes.split_at(cut.index(bytes.len() + 1));
            prop_assert_eq!(feed_all(&[a, b]), Ok(()));
        }
    }
}

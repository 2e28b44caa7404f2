//! Payloads rendered for humans in `Debug` output: long ones elided in the middle.

use std::fmt;

/// Shows at most 32 bytes of a payload: the first and last 16 around a count of the rest.
pub(crate) struct Elided<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for Elided<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const EDGE: usize = 16;
        let bytes = self.0;
        if bytes.len() <= 2 * EDGE {
            return write!(f, "{:?}", bytes::Bytes::copy_from_slice(bytes));
        }
        let (head, rest) = bytes.split_at(EDGE);
        let (middle, tail) = rest.split_at(rest.len().saturating_sub(EDGE));
        write!(
            f,
            "{:?}...({} bytes)...{:?}",
            bytes::Bytes::copy_from_slice(head),
            middle.len(),
            bytes::Bytes::copy_from_slice(tail)
        )
    }
}

//! Header encoding into a fixed array, the payload kept apart for vectored writes.

use bytes::BufMut;

use super::{FrameHead, MAX_HEAD_LEN};

impl FrameHead {
    /// Writes this header into `out` and returns its length, using the shortest length form
    /// (section 5.2: the minimal number of bytes must be used).
    #[inline]
    pub fn encode(&self, out: &mut [u8; MAX_HEAD_LEN]) -> usize {
        let mut b0 = self.opcode.bits() | self.rsv.bits();
        if self.fin {
            b0 |= 0x80;
        }
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut buf = &mut out[..];
        buf.put_u8(b0);
        match self.payload_len {
            // The match arms bound each value, so the casts cannot truncate.
            #[allow(clippy::cast_possible_truncation)]
            len @ 0..=125 => buf.put_u8(mask_bit | len as u8),
            #[allow(clippy::cast_possible_truncation)]
            len @ 126..=0xffff => {
                buf.put_u8(mask_bit | 0x7e);
                buf.put_u16(len as u16);
            }
            len => {
                buf.put_u8(mask_bit | 0x7f);
                buf.put_u64(len);
            }
        }
        if let Some(key) = self.mask {
            buf.put_slice(&key);
        }
        MAX_HEAD_LEN.saturating_sub(buf.remaining_mut())
    }

    /// Appends this header to `out`.
    pub fn encode_into(&self, out: &mut impl BufMut) {
        let mut head = [0; MAX_HEAD_LEN];
        let len = self.encode(&mut head);
        out.put_slice(head.get(..len).unwrap_or_default());
    }
}

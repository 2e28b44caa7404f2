//! Masking (RFC 6455 section 5.3): XOR of the payload with a 4-byte key, and where keys come from.

/// Buffers from this length on are masked from an aligned address (see [`ALIGN`]). Below it,
/// the split costs about what the aligned accesses save (measured, a payload 8 or 14 bytes
/// past a 16-byte boundary against the same loop unaligned: about even at 1 KiB, 1.4 times
/// faster at 2 KiB, 1.8 times at 8 KiB, 1.3 times at 1 MiB).
const ALIGN_FROM: usize = 2 << 10;
/// The address the 32-byte blocks start at a multiple of. A payload starts wherever its header
/// ends (2 to 14 bytes into the read buffer), so otherwise about one vector access in four
/// would straddle two cache lines; the `mask_in_place_unaligned` benchmark measures it. 32,
/// so that neither the 16-byte accesses of a default build nor the 32-byte ones of an AVX2
/// build straddle.
const ALIGN: usize = 32;

/// XORs `buf` with `key`, as if `buf` started `offset` bytes into a masked payload.
///
/// Masking and unmasking are the same operation. `offset` lets a payload be unmasked in pieces
/// as it arrives. The loop works on 32-byte blocks with no data-dependent branches, which the
/// compiler turns into vector instructions; from 2 KiB on, the blocks start at a 32-byte
/// aligned address (the bytes before it are masked as words, then bytes). See the `mask`
/// benchmarks against `memcpy`.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    if buf.len() >= ALIGN_FROM {
        // Out of line, so that the short payloads' path stays what it was.
        mask_aligned(buf, key);
    } else {
        mask_blocks(buf, key);
    }
}

/// [`mask_blocks`] from the first [`ALIGN`]ed address in `buf`; `key` is the phase at its start.
#[inline(never)]
fn mask_aligned(buf: &mut [u8], key: [u8; 4]) {
    // `align_offset` may answer `usize::MAX` ("cannot align"): then nothing is split off.
    let lead = buf.as_ptr().align_offset(ALIGN);
    if lead < ALIGN {
        let (head, rest) = buf.split_at_mut(lead);
        mask_words(head, key);
        mask_blocks(rest, rotate_key(key, lead));
    } else {
        mask_blocks(buf, key);
    }
}

/// Masks `buf` in 32-byte blocks, then words, then bytes; `key` is the phase at its start.
#[inline]
fn mask_blocks(buf: &mut [u8], key: [u8; 4]) {
    let (blocks, rest) = buf.as_chunks_mut::<32>();
    if !blocks.is_empty() {
        let wide = [key; 8];
        for block in blocks {
            for (b, k) in block.iter_mut().zip(wide.as_flattened()) {
                *b ^= k;
            }
        }
    }
    // 32 is a multiple of 4, so the tail starts at key phase 0.
    mask_words(rest, key);
}

/// Masks `buf` a word at a time, then its last bytes; `key` is the phase at `buf`'s start.
#[inline]
fn mask_words(buf: &mut [u8], key: [u8; 4]) {
    let (words, tail) = buf.as_chunks_mut::<4>();
    let word = u32::from_ne_bytes(key);
    for w in words {
        *w = (u32::from_ne_bytes(*w) ^ word).to_ne_bytes();
    }
    for (b, k) in tail.iter_mut().zip(key) {
        *b ^= k;
    }
}

/// The reference implementation: one byte at a time, straight from section 5.3.
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key
            .get(i.wrapping_add(offset) % 4)
            .copied()
            .unwrap_or_default();
    }
}

/// The key as seen from `offset` bytes into the payload: byte `offset % 4` first.
fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    // Rotating the bytes left by n is rotating their little-endian word right by 8n bits.
    let bits = u32::try_from(offset % 4).unwrap_or(0).wrapping_mul(8);
    u32::from_le_bytes(key).rotate_right(bits).to_le_bytes()
}

/// Where a client's masking keys come from.
///
/// Section 5.3 asks for keys a proxy cannot predict, from a strong source of entropy. The default
/// [`OsMaskSource`] draws them from the operating system; tests use [`FixedMask`].
pub trait MaskSource: Send {
    /// The key for the next frame.
    fn next_key(&mut self) -> [u8; 4];
}

/// Masking keys from the operating system's random number generator.
///
/// Each key is four bytes the operating system's generator gave (`getrandom`), used once. They
/// are fetched 4 KiB (1,024 keys) at a time into a pool per thread, which every connection on
/// that thread draws from: one system call per 1,024 frames, and nothing held per connection
/// (the source itself is zero-sized). The keys stay as unpredictable as the operating system's
/// generator makes them (RFC 6455 section 5.3); what changes is only how many are fetched at
/// once. One caveat, as with any pool of random bytes in memory (`rand`'s thread generator has
/// the same): a process that forks gives the child's thread a copy of the parent thread's
/// unused bytes, so up to 1,024 keys may repeat between the two processes.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsMaskSource {
    _private: (),
}

impl OsMaskSource {
    /// A source drawing from this thread's pool (filled at the first key).
    pub fn new() -> Self {
        Self::default()
    }
}

/// Random bytes fetched at once for masking keys, per thread.
const POOL_LEN: usize = 4 << 10;

/// One thread's unused random bytes: `bytes[used..]`.
struct KeyPool {
    bytes: [u8; POOL_LEN],
    used: usize,
}

std::thread_local! {
    static KEY_POOL: std::cell::RefCell<KeyPool> = const {
        std::cell::RefCell::new(KeyPool { bytes: [0; POOL_LEN], used: POOL_LEN })
    };
}

impl MaskSource for OsMaskSource {
    #[inline]
    fn next_key(&mut self) -> [u8; 4] {
        KEY_POOL.with_borrow_mut(|pool| {
            let unused = pool.bytes.get(pool.used..).unwrap_or_default();
            let key = if let Some(key) = unused.first_chunk::<4>() {
                *key
            } else {
                fill_random(&mut pool.bytes);
                pool.used = 0;
                let [a, b, c, d, ..] = pool.bytes;
                [a, b, c, d]
            };
            pool.used = pool.used.saturating_add(4);
            key
        })
    }
}

/// Fills `buf` from the operating system's random number generator.
///
/// # Panics
/// When the operating system has no random number generator to offer, which no network input can
/// cause; continuing with predictable keys would defeat the purpose of masking.
pub fn fill_random(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// The same key for every frame: for tests and reproducible vectors only.
#[derive(Debug, Clone, Copy)]
pub struct FixedMask(pub [u8; 4]);

impl MaskSource for FixedMask {
    fn next_key(&mut self) -> [u8; 4] {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn rfc6455_5_7_masked_hello() {
        let mut payload = *b"Hello";
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(payload, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn every_length_and_offset_matches_reference() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..=255u8).cycle().take(2200).collect();
        // Masked in place, so that the slices start at every address modulo the 32-byte
        // alignment; every short length, and the lengths around the 2 KiB threshold.
        for start in 0..40 {
            for len in (0..300).chain(ALIGN_FROM - 40..ALIGN_FROM + 100) {
                for offset in 0..4 {
                    let mut fast = data.clone();
                    let mut slow = data.clone();
                    apply_mask(&mut fast[start..start + len], key, offset);
                    apply_mask_bytewise(&mut slow[start..start + len], key, offset);
                    assert_eq!(fast, slow, "start {start} len {len} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn unmasking_in_pieces_equals_whole() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..100u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        let mut pieces = data;
        let (a, b) = pieces.split_at_mut(37);
        apply_mask(a, key, 0);
        apply_mask(b, key, 37);
        assert_eq!(whole, pieces);
    }

    /// Keys from two sources on one thread, and from another thread, over more than one fill
    /// of the pool: no key is handed out twice (2,500 draws from 2^32 values collide with
    /// probability about 0.07%, and a repeated pool would repeat them all).
    #[test]
    fn os_source_keys_are_not_reused_across_sources_threads_or_fills() {
        let mut a = OsMaskSource::new();
        let mut b = OsMaskSource::new();
        let mut keys: Vec<[u8; 4]> = (0..1000)
            .flat_map(|_| [a.next_key(), b.next_key()])
            .collect();
        let other = std::thread::spawn(|| {
            let mut c = OsMaskSource::new();
            (0..500).map(|_| c.next_key()).collect::<Vec<_>>()
        });
        keys.extend(other.join().unwrap());
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert!(
            distinct.len() >= keys.len() - 2,
            "{} distinct of {}",
            distinct.len(),
            keys.len()
        );
    }

    #[test]
    fn os_source_gives_varied_keys() {
        let mut source = OsMaskSource::new();
        let keys: Vec<[u8; 4]> = (0..200).map(|_| source.next_key()).collect();
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        // 200 draws from 2^32 values collide with negligible probability.
        assert!(distinct.len() > 190, "{} distinct keys", distinct.len());
    }

    proptest! {
        #[test]
        fn fast_mask_matches_bytewise(
            data in prop::collection::vec(any::<u8>(), 0..4200),
            skip in 0usize..40,
            key in any::<[u8; 4]>(),
            offset in any::<usize>(),
        ) {
            let skip = skip.min(data.len());
            let mut fast = data.clone();
            let mut slow = data;
            apply_mask(&mut fast[skip..], key, offset);
            apply_mask_bytewise(&mut slow[skip..], key, offset);
            prop_assert_eq!(fast, slow);
        }
    }
}

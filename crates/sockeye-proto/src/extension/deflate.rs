//! permessage-deflate (RFC 7692): negotiation of its four parameters, compression per message,
//! and decompression capped at the message size limit.
//!
//! Window bits: RFC 7692 allows 8 to 15, zlib cannot compress with an 8-bit window (and flate2
//! panics outside 9..=15). A negotiated value never reaches zlib unchecked: a decompressor
//! always uses at least 9 bits (a stream made with a 256-byte window decodes with a 512-byte
//! one), and a compressor limited to 8 bits is not created at all: those messages go out
//! uncompressed, which RFC 7692 allows for any message.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{Extension, ExtensionNegotiator, ExtensionParams};
use crate::error::{ConfigError, ExtensionError};
use crate::frame::{OpCode, Rsv};
use crate::prepared::SharedEncoding;

/// The extension's registered name.
pub const NAME: &str = "permessage-deflate";

/// The most room a message of `len` bytes can need once deflated: the allowance
/// [`Config::max_compressed_frame_size`](crate::Config::max_compressed_frame_size) gives
/// compressed frames over the frame limit.
///
/// Deflate cannot shrink incompressible data, and an encoder need not fall back to stored
/// blocks: zlib's fastest level (and any encoder whose window no longer holds the input) codes
/// every byte with the fixed Huffman codes, at most 9 bits for 8. The allowance is that eighth
/// plus 64 bytes for block headers and the final flush. A receiver whose frame limit equals its
/// message limit would otherwise refuse, with 1009, a compressed frame of random bytes whose
/// message is within the limit.
#[must_use]
pub const fn max_compressed_len(len: usize) -> usize {
    len.saturating_add(len / 8).saturating_add(64)
}

/// The four octets a compressed message's deflate data ends with, removed by the sender and
/// appended again by the receiver (RFC 7692 section 7.2.1 and 7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Output grows in steps of this much while inflating.
const INFLATE_STEP: usize = 16 << 10;

const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";

/// What this end wants from permessage-deflate, for either role.
///
/// The defaults follow what browsers do: context takeover both ways, 15-bit windows, and every
/// message compressed (a threshold of 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateConfig {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: u8,
    client_max_window_bits: u8,
    level: u32,
    threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            level: 6,
            threshold: 0,
        }
    }
}

impl DeflateConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask (client) or insist (server) that the server reset its compression context after
    /// each message. Saves the peer's memory, costs compression ratio.
    #[must_use]
    pub fn server_no_context_takeover(mut self, on: bool) -> Self {
        self.server_no_context_takeover = on;
        self
    }

    /// Ask (server) or announce (client) that the client resets its context after each message.
    #[must_use]
    pub fn client_no_context_takeover(mut self, on: bool) -> Self {
        self.client_no_context_takeover = on;
        self
    }

    /// The largest LZ77 window the server may compress with, 8 to 15 bits. Default 15.
    #[must_use]
    pub fn server_max_window_bits(mut self, bits: u8) -> Self {
        self.server_max_window_bits = bits;
        self
    }

    /// The largest LZ77 window the client may compress with, 8 to 15 bits. Default 15.
    #[must_use]
    pub fn client_max_window_bits(mut self, bits: u8) -> Self {
        self.client_max_window_bits = bits;
        self
    }

    /// zlib compression level, 0 to 9. Default 6.
    #[must_use]
    pub fn level(mut self, level: u32) -> Self {
        self.level = level;
        self
    }

    /// Messages shorter than this many bytes are sent uncompressed (RFC 7692 lets any message go
    /// out uncompressed). Default 0: compress everything, as browsers do. Small messages gain
    /// little from compression; 64 to 1024 saves CPU where they dominate.
    #[must_use]
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// Checks the values.
    ///
    /// # Errors
    /// [`ConfigError::OutOfRange`] for window bits outside 8..=15 or a level above 9.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(8..=15).contains(&self.server_max_window_bits) {
            return Err(ConfigError::OutOfRange {
                field: SERVER_MAX_WINDOW_BITS,
            });
        }
        if !(8..=15).contains(&self.client_max_window_bits) {
            return Err(ConfigError::OutOfRange {
                field: CLIENT_MAX_WINDOW_BITS,
            });
        }
        if self.level > 9 {
            return Err(ConfigError::OutOfRange { field: "level" });
        }
        Ok(())
    }

    /// Client side: the offer to send.
    pub fn offer(&self) -> ExtensionParams {
        let mut offer = ExtensionParams::new(NAME);
        if self.server_no_context_takeover {
            offer = offer.with_param(SERVER_NO_CONTEXT_TAKEOVER, None);
        }
        if self.client_no_context_takeover {
            offer = offer.with_param(CLIENT_NO_CONTEXT_TAKEOVER, None);
        }
        if self.server_max_window_bits < 15 {
            offer = offer.with_param(
                SERVER_MAX_WINDOW_BITS,
                Some(&self.server_max_window_bits.to_string()),
            );
        }
        // Section 7.1.2.2: without a value, this tells the server it may limit our window.
        if self.client_max_window_bits < 15 {
            offer.with_param(
                CLIENT_MAX_WINDOW_BITS,
                Some(&self.client_max_window_bits.to_string()),
            )
        } else {
            offer.with_param(CLIENT_MAX_WINDOW_BITS, None)
        }
    }

    /// Client side: checks the server's answer to [`offer`](Self::offer) (RFC 7692 section
    /// 7.1) and builds the extension.
    ///
    /// # Errors
    /// [`NegotiationError`] for an answer the client must refuse (failing the connection).
    pub fn accept_response(&self, response: &ExtensionParams) -> Result<Deflate, NegotiationError> {
        let params = Params::parse(response)?;
        // Section 7.1.2.2: the server may only limit our window if we offered the parameter,
        // which `offer` always does, and to at most what we asked for.
        let client_bits = match params.client_max_window_bits {
            WindowBits::Bits(bits) if bits <= self.client_max_window_bits => bits,
            WindowBits::Bits(_) => {
                return Err(NegotiationError::InvalidValue(CLIENT_MAX_WINDOW_BITS));
            }
            // Section 7.1.2.2: in a response the parameter must carry a value.
            WindowBits::NoValue => {
                return Err(NegotiationError::MissingValue(CLIENT_MAX_WINDOW_BITS));
            }
            WindowBits::Absent => self.client_max_window_bits,
        };
        let server_bits = match params.server_max_window_bits {
            WindowBits::Bits(bits) if bits <= self.server_max_window_bits => bits,
            WindowBits::Bits(_) => {
                return Err(NegotiationError::InvalidValue(SERVER_MAX_WINDOW_BITS));
            }
            WindowBits::NoValue => {
                return Err(NegotiationError::MissingValue(SERVER_MAX_WINDOW_BITS));
            }
            // Section 7.1.2.1: the server must answer a limit we asked for with a value no larger;
            // an answer without it is refused (the strict reading).
            WindowBits::Absent if self.server_max_window_bits < 15 => {
                return Err(NegotiationError::MissingValue(SERVER_MAX_WINDOW_BITS));
            }
            WindowBits::Absent => 15,
        };
        // Section 7.1.1.1: we asked the server not to take over context; it must agree.
        if self.server_no_context_takeover && !params.server_no_context_takeover {
            return Err(NegotiationError::Declined(SERVER_NO_CONTEXT_TAKEOVER));
        }
        Ok(Deflate::new(
            Side::Client,
            Negotiated {
                send_no_context_takeover: params.client_no_context_takeover
                    || self.client_no_context_takeover,
                receive_no_context_takeover: params.server_no_context_takeover,
                send_window_bits: client_bits,
                receive_window_bits: server_bits,
            },
            self.level,
            self.threshold,
        ))
    }

    /// Server side: takes the first acceptable offer, in the client's order (RFC 7692 section
    /// 5: several offers are alternatives in order of preference). Offers with unknown or
    /// repeated parameters or bad values are declined; so is one whose limits cannot be met.
    pub fn accept_offers(&self, offers: &[ExtensionParams]) -> Option<(ExtensionParams, Deflate)> {
        offers
            .iter()
            .filter(|offer| offer.is_named(NAME))
            .find_map(|offer| self.accept_offer(offer).ok())
    }

    fn accept_offer(
        &self,
        offer: &ExtensionParams,
    ) -> Result<(ExtensionParams, Deflate), NegotiationError> {
        let params = Params::parse(offer)?;
        let mut response = ExtensionParams::new(NAME);

        // Section 7.1.1.1: a client's request that we reset our context must be honoured.
        let server_nct = params.server_no_context_takeover || self.server_no_context_takeover;
        if server_nct {
            response = response.with_param(SERVER_NO_CONTEXT_TAKEOVER, None);
        }
        // Section 7.1.1.2: we may always ask the client to reset its context.
        let client_nct = params.client_no_context_takeover || self.client_no_context_takeover;
        if client_nct {
            response = response.with_param(CLIENT_NO_CONTEXT_TAKEOVER, None);
        }
        // Section 7.1.2.1: the client limits our window; we may use less.
        let server_bits = match params.server_max_window_bits {
            WindowBits::Bits(bits) => bits.min(self.server_max_window_bits),
            WindowBits::NoValue => {
                return Err(NegotiationError::MissingValue(SERVER_MAX_WINDOW_BITS));
            }
            WindowBits::Absent => self.server_max_window_bits,
        };
        if server_bits < 15 {
            response = response.with_param(SERVER_MAX_WINDOW_BITS, Some(&server_bits.to_string()));
        }
        // Section 7.1.2.2: we may limit the client's window only if it offered the parameter.
        let client_bits = match params.client_max_window_bits {
            WindowBits::Bits(offered) => {
                let bits = offered.min(self.client_max_window_bits);
                response = response.with_param(CLIENT_MAX_WINDOW_BITS, Some(&bits.to_string()));
                bits
            }
            WindowBits::NoValue => {
                let bits = self.client_max_window_bits;
                if bits < 15 {
                    response = response.with_param(CLIENT_MAX_WINDOW_BITS, Some(&bits.to_string()));
                }
                bits
            }
            WindowBits::Absent if self.client_max_window_bits < 15 => {
                return Err(NegotiationError::Declined(CLIENT_MAX_WINDOW_BITS));
            }
            WindowBits::Absent => 15,
        };
        let deflate = Deflate::new(
            Side::Server,
            Negotiated {
                send_no_context_takeover: server_nct,
                receive_no_context_takeover: client_nct,
                send_window_bits: server_bits,
                receive_window_bits: client_bits,
            },
            self.level,
            self.threshold,
        );
        Ok((response, deflate))
    }
}

impl ExtensionNegotiator for DeflateConfig {
    fn name(&self) -> &str {
        NAME
    }

    fn offers(&self) -> Vec<ExtensionParams> {
        vec![self.offer()]
    }

    fn accept_response(&self, response: &ExtensionParams) -> Option<Box<dyn Extension>> {
        Self::accept_response(self, response)
            .ok()
            .map(|d| Box::new(d) as Box<dyn Extension>)
    }

    fn accept_offers(
        &self,
        offers: &[ExtensionParams],
    ) -> Option<(ExtensionParams, Box<dyn Extension>)> {
        Self::accept_offers(self, offers)
            .map(|(params, d)| (params, Box::new(d) as Box<dyn Extension>))
    }
}

/// Why an offer or a response was not acceptable (RFC 7692 section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiationError {
    /// A parameter RFC 7692 does not define.
    #[error("unknown parameter")]
    UnknownParameter,
    /// A parameter given twice.
    #[error("parameter {0} given twice")]
    DuplicateParameter(&'static str),
    /// A value where none is allowed, or a bad one.
    #[error("invalid value for {0}")]
    InvalidValue(&'static str),
    /// A parameter that needs a value without one.
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    /// The peer did not agree to what we require.
    #[error("the peer did not agree to {0}")]
    Declined(&'static str),
}

/// The parameters of one offer or response, checked for the grammar of section 7.
#[derive(Debug, Default)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: WindowBits,
    client_max_window_bits: WindowBits,
}

/// A `*_max_window_bits` parameter as given: absent, present without a value, or with one.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum WindowBits {
    #[default]
    Absent,
    NoValue,
    Bits(u8),
}

impl Params {
    fn parse(ext: &ExtensionParams) -> Result<Self, NegotiationError> {
        let mut params = Self::default();
        for (name, value) in &ext.params {
            let name = name.to_ascii_lowercase();
            match name.as_str() {
                SERVER_NO_CONTEXT_TAKEOVER => {
                    flag(
                        &mut params.server_no_context_takeover,
                        value.as_deref(),
                        SERVER_NO_CONTEXT_TAKEOVER,
                    )?;
                }
                CLIENT_NO_CONTEXT_TAKEOVER => {
                    flag(
                        &mut params.client_no_context_takeover,
                        value.as_deref(),
                        CLIENT_NO_CONTEXT_TAKEOVER,
                    )?;
                }
                SERVER_MAX_WINDOW_BITS => {
                    bits(
                        &mut params.server_max_window_bits,
                        value.as_deref(),
                        SERVER_MAX_WINDOW_BITS,
                    )?;
                }
                CLIENT_MAX_WINDOW_BITS => {
                    bits(
                        &mut params.client_max_window_bits,
                        value.as_deref(),
                        CLIENT_MAX_WINDOW_BITS,
                    )?;
                }
                _ => return Err(NegotiationError::UnknownParameter),
            }
        }
        Ok(params)
    }
}

fn flag(slot: &mut bool, value: Option<&str>, name: &'static str) -> Result<(), NegotiationError> {
    if *slot {
        return Err(NegotiationError::DuplicateParameter(name));
    }
    if value.is_some() {
        return Err(NegotiationError::InvalidValue(name));
    }
    *slot = true;
    Ok(())
}

fn bits(
    slot: &mut WindowBits,
    value: Option<&str>,
    name: &'static str,
) -> Result<(), NegotiationError> {
    if *slot != WindowBits::Absent {
        return Err(NegotiationError::DuplicateParameter(name));
    }
    let parsed = match value {
        None => WindowBits::NoValue,
        // Section 7.1.2: a decimal integer 8 to 15, without leading zeros.
        Some(v) if v.len() <= 2 && !v.starts_with('0') && v.bytes().all(|b| b.is_ascii_digit()) => {
            match v.parse::<u8>() {
                Ok(n @ 8..=15) => WindowBits::Bits(n),
                _ => return Err(NegotiationError::InvalidValue(name)),
            }
        }
        Some(_) => return Err(NegotiationError::InvalidValue(name)),
    };
    *slot = parsed;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// What the handshake settled, from this end's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Negotiated {
    send_no_context_takeover: bool,
    receive_no_context_takeover: bool,
    send_window_bits: u8,
    receive_window_bits: u8,
}

/// A running permessage-deflate extension: one compressor and one decompressor.
///
/// Both are created on first use, so a connection that never sends (or never receives) a
/// compressed message holds no zlib state for that direction. With context takeover a
/// direction keeps its state between messages (the point of takeover: later messages refer back
/// into earlier ones); without it the state is freed after each message. The
/// `deflate_memory` test measures what that means per connection.
pub struct Deflate {
    side: Side,
    negotiated: Negotiated,
    level: Compression,
    threshold: usize,
    compress: Option<Compress>,
    decompress: Option<Decompress>,
    /// The message being received ended its deflate stream with a final block.
    ended: bool,
    /// Compressed bytes of the message being received so far.
    received: usize,
}

impl Deflate {
    fn new(side: Side, negotiated: Negotiated, level: u32, threshold: usize) -> Self {
        Self {
            side,
            negotiated,
            level: Compression::new(level.min(9)),
            threshold,
            compress: None,
            decompress: None,
            ended: false,
            received: 0,
        }
    }

    /// Whether outgoing messages can be compressed at all: not with an 8-bit window.
    fn can_compress(&self) -> bool {
        self.negotiated.send_window_bits >= 9
    }

    fn compress_message(&mut self, payload: &[u8]) -> Option<Bytes> {
        let window = self.negotiated.send_window_bits.clamp(9, 15);
        let level = self.level;
        let compress = self
            .compress
            .get_or_insert_with(|| Compress::new_with_window_bits(level, false, window));
        let Some(out) = compress_sync(compress, payload) else {
            // zlib reports errors only for misuse; fall back to sending uncompressed.
            self.compress = None;
            return None;
        };
        // Without context takeover nothing carries over to the next message, so the state
        // (about 400 KiB with zlib-rs at 15 bits, `docs/topics/compression.md`) is freed rather
        // than kept: an idle connection holds none.
        if self.negotiated.send_no_context_takeover {
            self.compress = None;
        }
        Some(Bytes::from(out))
    }

    /// Inflates `input` into `out`, never letting `out` exceed `limit` bytes.
    fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), ExtensionError> {
        let window = self.negotiated.receive_window_bits.clamp(9, 15);
        let decompress = self
            .decompress
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, window));
        let mut input = input;
        loop {
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(ExtensionError::DecodedTooBig { max: limit });
                }
                // Geometric growth from a guess at the output size, with room for at most one
                // byte past the limit: enough to tell it was exceeded.
                let room = limit.saturating_add(1).saturating_sub(out.len());
                let guess = input.len().saturating_mul(4).clamp(256, INFLATE_STEP);
                out.reserve_exact(room.min(out.capacity().max(guess)));
            }
            let (before_in, before_out) = (decompress.total_in(), decompress.total_out());
            let status = decompress
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| ExtensionError::InvalidCompressedData)?;
            let consumed = usize::try_from(decompress.total_in().saturating_sub(before_in))
                .unwrap_or(input.len());
            let produced = decompress.total_out().saturating_sub(before_out);
            input = input.get(consumed..).unwrap_or_default();
            if out.len() > limit {
                return Err(ExtensionError::DecodedTooBig { max: limit });
            }
            match status {
                // A final block ends this deflate stream; what follows it (the 00 00 ff ff we
                // appended, at least) is ignored, and the next message starts a new stream.
                Status::StreamEnd => {
                    decompress.reset(false);
                    self.ended = true;
                    return Ok(());
                }
                Status::Ok | Status::BufError => {
                    if input.is_empty() && out.len() < out.capacity() {
                        return Ok(());
                    }
                    if consumed == 0 && produced == 0 && out.len() < out.capacity() {
                        // No progress with input and room left: the data is broken.
                        return Err(ExtensionError::InvalidCompressedData);
                    }
                }
            }
        }
    }
}

/// Compresses one message with a sync flush, without the 00 00 ff ff tail (RFC 7692 section
/// 7.2.1); `None` when zlib fails (only for misuse).
fn compress_sync(compress: &mut Compress, payload: &[u8]) -> Option<Vec<u8>> {
    // Compressed data is rarely longer than its input plus a little framing.
    let mut out = Vec::with_capacity(payload.len().saturating_div(2).saturating_add(64));
    let mut input = payload;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64));
        }
        let before = compress.total_in();
        if compress
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .is_err()
        {
            return None;
        }
        let consumed =
            usize::try_from(compress.total_in().saturating_sub(before)).unwrap_or(input.len());
        input = input.get(consumed..).unwrap_or_default();
        // A sync flush is complete when all input is in and output space is left over.
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
    }
    // Section 7.2.1: remove the 00 00 ff ff the sync flush ends with.
    if out.ends_with(&TAIL) {
        out.truncate(out.len().saturating_sub(TAIL.len()));
    }
    // A flush with nothing new to say (an empty message after another) emits no bytes at
    // all; the receiver would then append 00 00 ff ff to nothing and lose its place. An
    // empty stored block, 0x00 plus that tail, is the empty message (section 7.2.3.6).
    if out.is_empty() {
        out.push(0x00);
    }
    Some(out)
}

/// Compresses one message from a fresh state, as a sender without context takeover does: the
/// bytes every such connection with this window and level would send. `None` for a window zlib
/// cannot compress with (below 9 bits) or a zlib failure.
pub(crate) fn compress_once(payload: &[u8], window_bits: u8, level: u32) -> Option<Vec<u8>> {
    if !(9..=15).contains(&window_bits) {
        return None;
    }
    let mut compress =
        Compress::new_with_window_bits(Compression::new(level.min(9)), false, window_bits);
    compress_sync(&mut compress, payload)
}

impl Extension for Deflate {
    fn name(&self) -> &str {
        NAME
    }

    fn rsv(&self) -> Rsv {
        // Section 6: the "Per-Message Compressed" bit is RSV1.
        Rsv::RSV1
    }

    fn encode(&mut self, _opcode: OpCode, payload: Bytes) -> (Rsv, Bytes) {
        if payload.len() < self.threshold || !self.can_compress() {
            return (Rsv::NONE, payload);
        }
        match self.compress_message(&payload) {
            Some(compressed) => (Rsv::RSV1, compressed),
            None => (Rsv::NONE, payload),
        }
    }

    fn shared_encoding(&self) -> Option<SharedEncoding> {
        // Section 7.1.1.1: without context takeover each message starts from a fresh state.
        self.negotiated
            .send_no_context_takeover
            .then_some(SharedEncoding::Deflate {
                window_bits: self.negotiated.send_window_bits,
                level: self.level.level(),
                threshold: self.threshold,
            })
    }

    fn decode(&mut self, payload: Bytes, fin: bool, limit: usize) -> Result<Bytes, ExtensionError> {
        let mut out = Vec::new();
        self.received = self.received.saturating_add(payload.len());
        if !self.ended {
            self.inflate(&payload, &mut out, limit)?;
        }
        if fin {
            // Section 7.2.2: append 00 00 ff ff to the message's data before inflating the end,
            // unless a final block already ended the stream (the tail would start a new one) or
            // the message carried no data at all (the tail alone would leave the inflater in the
            // middle of a stored block; some senders do send such empty messages).
            if !self.ended && self.received > 0 {
                self.inflate(&TAIL, &mut out, limit)?;
            }
            self.ended = false;
            self.received = 0;
            if self.negotiated.receive_no_context_takeover {
                self.decompress = None;
            }
        }
        // A small message must not keep a large buffer alive while it is queued or held.
        if out.capacity() > out.len().saturating_mul(2).saturating_add(64) {
            out.shrink_to_fit();
        }
        Ok(Bytes::from(out))
    }
}

impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate")
            .field("side", &self.side)
            .field("negotiated", &self.negotiated)
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

// Used by tests in this module and the bomb test of the connection.
#[cfg(test)]
pub(crate) fn raw_deflate(data: &[u8], window: u8) -> Vec<u8> {
    let mut c = Compress::new_with_window_bits(Compression::default(), false, window);
    let mut out = Vec::with_capacity(data.len() + 1024);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - 4);
    out
}

#[cfg(test)]
mod tests;

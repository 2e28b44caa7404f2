//! The connection state machine: data frames, control frames, the close handshake, keepalive.
//! Frames are read by [`crate::frame`]'s decoder; their messages are assembled by
//! [`assembler`].

mod assembler;

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use self::assembler::Assembler;
use crate::close::{CloseCode, CloseFrame, MAX_REASON_LEN};
use crate::config::Config;
use crate::error::{ApiMisuse, ConnectionError, ProtocolError};
use crate::event::{Closed, DataKind, Event, Initiator, Message};
use crate::extension::Extension;
use crate::frame::{
    Frame, FrameDecoder, FrameHead, HeadRules, MAX_CONTROL_PAYLOAD, MAX_HEAD_LEN, OpCode, Rsv,
};
use crate::mask::{MaskSource, OsMaskSource, apply_mask};
use crate::prepared::PreparedMessage;
use crate::role::Role;
use crate::utf8::Utf8Bytes;

/// Payloads up to this size are copied into the shared output buffer, so that many small frames
/// leave in one write; larger ones (from a server, which does not mask) are handed out as their
/// own chunk, without a copy, for a vectored write.
const COPY_LIMIT: usize = 8 << 10;
/// The longest payload whose length fits a frame header's first length field (section 5.2).
const SHORT_PAYLOAD: usize = 125;

/// One WebSocket connection after the opening handshake, for either role. No I/O, no clock.
///
/// # Contract
/// - **Input**: [`handle_bytes`](Self::handle_bytes) with the read buffer (whole frames are split
///   off it; a partial frame stays, already unmasked and checked as far as it goes),
///   [`handle_eof`](Self::handle_eof) when the transport's read side ends, and
///   [`handle_timeout`](Self::handle_timeout) when the deadline from
///   [`poll_timeout`](Self::poll_timeout) passes.
/// - **Commands**: [`send`](Self::send) and its shorthands, [`send_fragment`](Self::send_fragment),
///   [`close`](Self::close). They fail only for [`ApiMisuse`], never because of the peer.
/// - **Output**, after any input or command, in this order:
///   1. [`poll_event`](Self::poll_event) until `None`, answering events with commands as you go;
///   2. when `handle_bytes` returned [`Progress::Paused`], call it again and go back to 1, before
///      writing or reading more, so that the answers to everything one read brought leave
///      together;
///   3. [`poll_transmit`](Self::poll_transmit) until `None`, writing each chunk in order;
///   4. once all of it is written, close the transport if
///      [`should_close_transport`](Self::should_close_transport) says so;
///   5. [`poll_timeout`](Self::poll_timeout) to re-arm the one timer.
///
///   After a command alone, steps 3 to 5. The async and blocking drivers of the `sockeye` crate
///   follow this order.
///
/// A peer's protocol violation never comes back as an `Err`: the connection queues the Close
/// frame with the code RFC 6455 names (1002, 1007, 1009), stops reading, and reports
/// [`Event::Closed`] with the error. Pongs and the reply to a peer's Close are sent automatically.
pub struct Connection {
    role: Role,
    config: Config,
    state: State,
    /// Where a client's masking keys come from; created on a client's first frame (a server
    /// never masks, and keeps no pool of random bytes).
    mask: Option<Box<dyn MaskSource>>,
    extension: Option<Box<dyn Extension>>,

    // Input.
    /// The header rules of this role, extension and frame size limit.
    decoder: FrameDecoder,
    pending: Option<PendingFrame>,
    assembler: Assembler,

    // Output.
    out_buf: BytesMut,
    out_chunks: VecDeque<Bytes>,
    queued: usize,
    pending_pong: Option<Bytes>,
    outgoing: Option<DataKind>,
    events: VecDeque<Event>,

    // Closing.
    /// Both Close frames, who started, and the report: boxed, since most of a connection's
    /// life has none of it (memory per idle connection).
    closing: Option<Box<Closing>>,
    close_transport: bool,

    // Timers.
    /// The latest time given to the connection, for deadlines set by calls that take none.
    last_now: Instant,
    close_deadline: Option<Instant>,
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
}

/// Where [`Connection::handle_bytes`] stopped.
#[must_use = "after `Progress::Paused`, take the events and call `handle_bytes` again before reading more"]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Progress {
    /// The buffer holds no whole frame any more (at most the start of one, already checked as
    /// far as it goes): read more from the transport.
    NeedBytes,
    /// Stopped after a complete data message with bytes left in the buffer: take the events
    /// (and answer them), then call `handle_bytes` again before reading more.
    Paused,
}

impl Progress {
    /// Whether `handle_bytes` stopped with more input in the buffer ([`Progress::Paused`]).
    #[inline]
    pub fn is_paused(self) -> bool {
        self == Self::Paused
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Both directions open.
    Open,
    /// Our Close frame is queued; data frames from the peer are still delivered.
    CloseSent,
    /// The WebSocket is closed; only queued output and the transport remain.
    Closed,
}

/// The state of the close handshake, once it begins.
#[derive(Debug, Default)]
struct Closing {
    local: Option<CloseFrame>,
    remote: Option<CloseFrame>,
    initiator: Option<Initiator>,
    closed: Option<Closed>,
}

/// A frame whose header has been read and checked while its payload is still arriving.
#[derive(Debug, Clone, Copy)]
struct PendingFrame {
    head: FrameHead,
    head_len: usize,
    payload_len: usize,
    /// Payload bytes already unmasked (and checked for UTF-8, where that applies).
    done: usize,
    /// Whether the payload is text to check for UTF-8 as it arrives.
    check_utf8: bool,
}

impl Connection {
    /// A connection for `role` under `config`, opened at `now` (keepalive counts from there).
    pub fn new(role: Role, config: Config, now: Instant) -> Self {
        let next_ping = config.ping_interval().and_then(|i| now.checked_add(i));
        let decoder = FrameDecoder::new(HeadRules {
            role,
            extension_rsv: Rsv::NONE,
            max_frame_size: config.max_frame_size(),
        });
        Self {
            role,
            config,
            state: State::Open,
            mask: None,
            extension: None,
            decoder,
            pending: None,
            assembler: Assembler::default(),
            out_buf: BytesMut::new(),
            out_chunks: VecDeque::new(),
            queued: 0,
            pending_pong: None,
            outgoing: None,
            events: VecDeque::new(),
            closing: None,
            close_transport: false,
            last_now: now,
            close_deadline: None,
            next_ping,
            pong_deadline: None,
        }
    }

    /// Installs the extension negotiated in the opening handshake.
    #[must_use]
    pub fn with_extension(mut self, extension: Box<dyn Extension>) -> Self {
        self.decoder = FrameDecoder::new(HeadRules {
            extension_rsv: extension.rsv(),
            ..*self.decoder.rules()
        });
        self.extension = Some(extension);
        self
    }

    /// Replaces where masking keys come from (a client's only); for tests and reproducible output.
    #[must_use]
    pub fn with_mask_source(mut self, source: Box<dyn MaskSource>) -> Self {
        self.mask = Some(source);
        self
    }

    // ---- Getters ----

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The negotiated extension's name, if any.
    pub fn extension_name(&self) -> Option<&str> {
        self.extension.as_deref().map(Extension::name)
    }

    /// Whether messages can still be sent (no Close frame queued yet).
    #[inline]
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether the WebSocket is closed ([`Event::Closed`] has been queued).
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// How the connection ended, once it has (the same report as [`Event::Closed`]).
    #[inline]
    pub fn close_status(&self) -> Option<&Closed> {
        self.closing.as_ref()?.closed.as_ref()
    }

    /// Bytes queued for sending and not yet taken by [`poll_transmit`](Self::poll_transmit); the
    /// I/O layer compares this with its write-buffer high-water mark.
    #[inline]
    pub fn buffered_amount(&self) -> usize {
        self.queued
    }

    /// How many more bytes the read buffer must hold before the frame in progress is complete,
    /// or at least the 2 bytes of the next header. An I/O layer can reserve this much (bounded by
    /// the frame size limit) so the frame and the next header arrive in one read.
    #[inline]
    pub fn read_hint(&self, buf: &[u8]) -> usize {
        match &self.pending {
            Some(p) => p
                .head_len
                .saturating_add(p.payload_len)
                .saturating_add(2)
                .saturating_sub(buf.len())
                .max(1),
            None => 2usize.saturating_sub(buf.len()).max(1),
        }
    }

    // ---- Input ----

    /// Processes received bytes. Whole frames are split off the front of `buf` without copying;
    /// a partial frame stays in `buf`, unmasked and checked as far as it has arrived.
    ///
    /// Returns [`Progress::Paused`] when it stopped after a complete data message with bytes
    /// left in `buf`: take the events, then call it again (before reading more). Stopping there
    /// lets the application answer a message before later frames are looked at, so a violation
    /// that follows a message fails the connection only after that message was delivered and
    /// answered. [`Progress::NeedBytes`] when `buf` holds no whole frame any more.
    ///
    /// After the WebSocket is closed, input is discarded. A protocol violation fails the
    /// connection (see the type's docs); the rest of `buf` is discarded then.
    pub fn handle_bytes(&mut self, buf: &mut BytesMut, now: Instant) -> Progress {
        self.last_now = self.last_now.max(now);
        loop {
            if buf.is_empty() {
                return Progress::NeedBytes;
            }
            if !self.reads_frames() {
                buf.clear();
                return Progress::NeedBytes;
            }
            if let Some(done) = self.read_whole_message(buf) {
                match done {
                    Ok(()) if !buf.is_empty() => return Progress::Paused,
                    Ok(()) => return Progress::NeedBytes,
                    Err(error) => {
                        self.fail(error);
                        continue;
                    }
                }
            }
            match self.read_frame(buf) {
                Ok(Some(frame)) => {
                    // Any frame shows the peer is alive.
                    self.pong_deadline = None;
                    let data = !frame.opcode.is_control();
                    let events = self.events.len();
                    if let Err(error) = self.handle_frame(frame, now) {
                        self.fail(error);
                    } else if data && self.events.len() > events && !buf.is_empty() {
                        return Progress::Paused;
                    }
                }
                Ok(None) => return Progress::NeedBytes,
                Err(error) => self.fail(error),
            }
        }
    }

    /// [`handle_bytes`](Self::handle_bytes) and [`poll_event`](Self::poll_event) in one call,
    /// for the common case: when no event is waiting and the next frame in `buf` is a whole
    /// message in one frame (the case `handle_bytes` reads without its general machinery), it
    /// is split off `buf` and returned, not queued. The caller then goes on as after
    /// `handle_bytes` returned with that message as its one event: [`Progress::Paused`] if
    /// `buf` still holds bytes, [`Progress::NeedBytes`] if not.
    ///
    /// `None` for anything else: nothing was taken, and `handle_bytes` reads it as usual; or the
    /// message was text that is not UTF-8, and the connection failed as `handle_bytes` fails it
    /// (its events wait in `poll_event`).
    #[inline]
    pub fn handle_bytes_message(&mut self, buf: &mut BytesMut, now: Instant) -> Option<Message> {
        if !self.events.is_empty() || buf.is_empty() || !self.reads_frames() {
            return None;
        }
        // `max`, written as a store only when the time moved: the driver passes the same time
        // for every message of a read.
        if now > self.last_now {
            self.last_now = now;
        }
        match self.take_whole_message(buf)? {
            Ok(message) => Some(message),
            Err(error) => {
                self.fail(error);
                None
            }
        }
    }

    /// The transport's read side ended.
    ///
    /// Before the close handshake completed this ends the connection abnormally (1006); after it,
    /// it is the expected end, and the transport may be closed.
    pub fn handle_eof(&mut self) {
        if self.state != State::Closed {
            self.pending = None;
            self.assembler.reset();
            self.finish(Initiator::Remote, Some(ConnectionError::UnexpectedEof));
        }
        self.close_transport = true;
    }

    /// Runs the timers that are due at `now`: keepalive pings, the pong timeout, the close
    /// handshake timeout, and a client's wait for the server to close the transport.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        if self.close_deadline.is_some_and(|d| d <= now) {
            self.close_deadline = None;
            if self.state == State::CloseSent {
                self.finish(Initiator::Local, Some(ConnectionError::CloseTimeout));
            }
            // Section 7.1.1: the client closes the transport itself when the server does not.
            self.close_transport = true;
        }
        if self.pong_deadline.is_some_and(|d| d <= now) {
            self.pong_deadline = None;
            if self.state != State::Closed {
                self.finish(Initiator::Library, Some(ConnectionError::PongTimeout));
                self.close_transport = true;
            }
        }
        if self.state == State::Open && self.next_ping.is_some_and(|d| d <= now) {
            let interval = self.config.ping_interval();
            self.next_ping = interval.and_then(|i| now.checked_add(i));
            self.push_frame(OpCode::Ping, true, Rsv::NONE, Bytes::new());
            if self.pong_deadline.is_none() {
                self.pong_deadline = now.checked_add(self.config.pong_timeout());
            }
        }
    }

    // ---- Commands ----

    /// Queues a message: text, binary, ping, pong, or close (as [`close`](Self::close), with the
    /// close timeout counted from the latest time the connection was given).
    ///
    /// # Errors
    /// [`ApiMisuse`] when the connection is closing, a control payload is over 125 bytes, or a
    /// fragmented message is being sent.
    #[inline]
    pub fn send(&mut self, message: Message) -> Result<(), ApiMisuse> {
        match message {
            Message::Text(text) => self.send_data(OpCode::Text, text.into_bytes()),
            Message::Binary(data) => self.send_data(OpCode::Binary, data),
            Message::Ping(data) => self.send_ping(data),
            Message::Pong(data) => self.send_pong(data),
            Message::Close(frame) => self.close_at(None, frame),
        }
    }

    /// Queues a text message.
    ///
    /// # Errors
    /// [`ApiMisuse::Closing`] after a Close frame was queued;
    /// [`ApiMisuse::FragmentedMessageInProgress`] while a fragmented message is being sent.
    pub fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), ApiMisuse> {
        self.send_data(OpCode::Text, text.into().into_bytes())
    }

    /// Queues a binary message.
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub fn send_binary(&mut self, data: impl Into<Bytes>) -> Result<(), ApiMisuse> {
        self.send_data(OpCode::Binary, data.into())
    }

    /// Queues a Ping.
    ///
    /// # Errors
    /// [`ApiMisuse::Closing`] after a Close frame was queued;
    /// [`ApiMisuse::ControlPayloadTooLong`] over 125 bytes.
    pub fn send_ping(&mut self, data: impl Into<Bytes>) -> Result<(), ApiMisuse> {
        self.send_control(OpCode::Ping, data.into())
    }

    /// Queues an unsolicited Pong (section 5.5.3 allows one as a heartbeat).
    ///
    /// # Errors
    /// As [`send_ping`](Self::send_ping).
    pub fn send_pong(&mut self, data: impl Into<Bytes>) -> Result<(), ApiMisuse> {
        self.send_control(OpCode::Pong, data.into())
    }

    /// Queues one frame of a fragmented data message. The first call starts a message of `kind`;
    /// later calls with the same `kind` continue it; `fin` ends it. Control frames may be sent in
    /// between. Extensions do not apply to fragments: they go out as they are.
    ///
    /// For text, the caller ensures the message as a whole is UTF-8 (a code point may be split
    /// between fragments).
    ///
    /// # Errors
    /// [`ApiMisuse::Closing`] after a Close frame was queued;
    /// [`ApiMisuse::FragmentedMessageInProgress`] for a `kind` other than the message's.
    pub fn send_fragment(
        &mut self,
        kind: DataKind,
        payload: impl Into<Bytes>,
        fin: bool,
    ) -> Result<(), ApiMisuse> {
        self.ensure_open()?;
        let opcode = match self.outgoing {
            None => kind_opcode(kind),
            Some(current) if current == kind => OpCode::Continuation,
            Some(_) => return Err(ApiMisuse::FragmentedMessageInProgress),
        };
        self.outgoing = if fin { None } else { Some(kind) };
        self.push_frame(opcode, fin, Rsv::NONE, payload.into());
        Ok(())
    }

    /// Starts the closing handshake: queues a Close frame (`None`: without a status code) after
    /// everything already queued, and waits up to the close timeout for the peer's.
    ///
    /// Data frames the peer sent before it saw our Close are still delivered.
    ///
    /// # Errors
    /// [`ApiMisuse::Closing`] when a Close frame was already queued; [`ApiMisuse::InvalidCloseCode`]
    /// or [`ApiMisuse::CloseReasonTooLong`] for a frame that may not be sent.
    pub fn close(&mut self, now: Instant, frame: Option<CloseFrame>) -> Result<(), ApiMisuse> {
        self.close_at(Some(now), frame)
    }

    /// Releases the memory of the output buffer and of the event and chunk queues when they
    /// hold nothing, so that an idle connection keeps no allocation of its own. An I/O layer
    /// calls it when the connection goes idle (a read found nothing); they are allocated again
    /// when needed.
    pub fn release_idle_buffers(&mut self) {
        if self.out_buf.is_empty() && self.out_buf.capacity() > 0 {
            self.out_buf = BytesMut::new();
        }
        if self.out_chunks.is_empty() && self.out_chunks.capacity() > 0 {
            self.out_chunks = VecDeque::new();
        }
        if self.events.is_empty() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
    }

    // ---- Output ----

    /// The next chunk of bytes to write, in order; `None` when nothing is queued.
    ///
    /// Small frames are gathered into one chunk; a large payload from a server comes as a
    /// chunk of its own, sharing the caller's buffer. Take every chunk and write them in order,
    /// vectored if you like.
    #[must_use]
    #[inline]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        // Asked after every write and at every turn of a driver's loop: nothing queued (no
        // byte counted, no Pong owed) is the answer most of the time.
        if self.queued == 0 && self.pending_pong.is_none() {
            return None;
        }
        self.flush_pong();
        let chunk = match self.out_chunks.pop_front() {
            Some(chunk) => chunk,
            None if !self.out_buf.is_empty() => self.out_buf.split().freeze(),
            None => return None,
        };
        self.queued = self.queued.saturating_sub(chunk.len());
        Some(chunk)
    }

    /// The next event for the application.
    #[must_use]
    #[inline]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, if ever.
    #[must_use]
    #[inline]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let keepalive = if self.state == State::Open {
            self.next_ping
        } else {
            None
        };
        // Written out rather than as an iterator: this runs on every send and flush.
        earliest(earliest(self.close_deadline, self.pong_deadline), keepalive)
    }

    /// Whether this end should close the transport now, once every chunk from
    /// [`poll_transmit`](Self::poll_transmit) has been written.
    ///
    /// Section 7.1.1: the server closes the TCP connection right after the close handshake; the
    /// client waits for the server to do so (until the close timeout), so that the server, not
    /// the client, holds the `TIME_WAIT` state. After a failure or timeout, either end closes.
    #[inline]
    pub fn should_close_transport(&self) -> bool {
        self.close_transport && self.queued == 0 && self.pending_pong.is_none()
    }

    // ---- Internals: input ----

    fn reads_frames(&self) -> bool {
        self.state != State::Closed
    }

    /// The common case, taken without the general machinery: a message in one frame, complete
    /// in `buf`, with no other message in progress
    /// ([`FrameDecoder::decode_whole_message`], which takes only frames that pass every rule of
    /// the general path). `None` when the next frame is anything else, and nothing was consumed:
    /// [`read_frame`](Self::read_frame) then reads it and names what is wrong.
    #[inline]
    fn read_whole_message(&mut self, buf: &mut BytesMut) -> Option<Result<(), ProtocolError>> {
        let message = self.take_whole_message(buf)?;
        Some(message.map(|message| self.events.push_back(Event::Message(message))))
    }

    /// [`read_whole_message`](Self::read_whole_message)'s message, returned rather than queued.
    #[inline]
    fn take_whole_message(&mut self, buf: &mut BytesMut) -> Option<Result<Message, ProtocolError>> {
        if self.pending.is_some() || self.assembler.in_progress() || self.config.streaming() {
            return None;
        }
        let frame = self
            .decoder
            .decode_whole_message(buf, self.config.max_message_size())?;
        let kind = if frame.opcode == OpCode::Text {
            DataKind::Text
        } else {
            DataKind::Binary
        };
        let message = match assembler::message(kind, frame.payload) {
            Ok(message) => message,
            Err(error) => return Some(Err(assembler::invalid_utf8(error))),
        };
        // Any frame shows the peer is alive.
        self.pong_deadline = None;
        Some(Ok(message))
    }

    /// Reads the next frame; `Ok(None)` when the rest of it has not arrived.
    fn read_frame(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        let mut pending = if let Some(pending) = self.pending.take() {
            pending
        } else if let Some(pending) = self.start_frame(buf)? {
            pending
        } else {
            return Ok(None);
        };
        let body = buf.get_mut(pending.head_len..).unwrap_or_default();
        let arrived = body.len().min(pending.payload_len);
        if let Some(new) = body.get_mut(pending.done..arrived)
            && !new.is_empty()
        {
            if let Some(key) = pending.head.mask {
                apply_mask(new, key, pending.done);
            }
            // Fail fast (section 8.1): text that can no longer become valid UTF-8 fails the
            // connection now, not when the frame or message is complete.
            if pending.check_utf8 {
                self.assembler.feed_text(new)?;
            }
            pending.done = arrived;
        }
        if pending.done < pending.payload_len {
            self.pending = Some(pending);
            return Ok(None);
        }
        buf.advance(pending.head_len);
        let payload = buf.split_to(pending.payload_len).freeze();
        Ok(Some(Frame {
            fin: pending.head.fin,
            rsv: pending.head.rsv,
            opcode: pending.head.opcode,
            payload,
        }))
    }

    /// Reads and checks the next frame's header; `Ok(None)` while it is incomplete.
    fn start_frame(&self, buf: &BytesMut) -> Result<Option<PendingFrame>, ProtocolError> {
        let Some((head, head_len)) = FrameHead::parse(buf)? else {
            return Ok(None);
        };
        head.check(self.decoder.rules())?;
        let check_utf8 = self.assembler.check_head(&head, &self.config)?;
        // `check` bounded the length by `max_frame_size`, a usize.
        let payload_len =
            usize::try_from(head.payload_len).map_err(|_| ProtocolError::FrameTooBig {
                len: head.payload_len,
                max: self.config.max_frame_size(),
            })?;
        // A whole one-frame text message that has arrived entirely is checked once, when
        // it becomes a `Utf8Bytes`: checking it piecewise too would only repeat the work.
        // Streaming mode hands frames out as they are, so it checks them here.
        let whole = head.fin
            && !self.config.streaming()
            && !self.assembler.in_progress()
            && buf.len().saturating_sub(head_len) >= payload_len;
        Ok(Some(PendingFrame {
            head,
            head_len,
            payload_len,
            done: 0,
            check_utf8: check_utf8 && !whole,
        }))
    }

    fn handle_frame(&mut self, frame: Frame, now: Instant) -> Result<(), ProtocolError> {
        match frame.opcode {
            OpCode::Ping => {
                // Section 5.5.2: answer with a Pong carrying the same data. Every Ping is answered
                // while little output is queued; past `pong_backlog` only the latest is (section
                // 5.5.3 allows that), so a peer that pings without reading cannot grow the queue.
                // The Pong is queued at once, so it goes out before anything the application
                // sends in answer to messages that came after the Ping.
                if self.state == State::Open {
                    if self.queued < self.config.pong_backlog() {
                        self.flush_pong();
                        self.push_frame(OpCode::Pong, true, Rsv::NONE, frame.payload.clone());
                    } else {
                        self.pending_pong = Some(frame.payload.clone());
                    }
                }
                self.events
                    .push_back(Event::Message(Message::Ping(frame.payload)));
                Ok(())
            }
            OpCode::Pong => {
                self.events
                    .push_back(Event::Message(Message::Pong(frame.payload)));
                Ok(())
            }
            OpCode::Close => self.handle_close(&frame.payload, now),
            OpCode::Text | OpCode::Binary | OpCode::Continuation => self.handle_data(frame),
        }
    }

    fn handle_close(&mut self, payload: &Bytes, now: Instant) -> Result<(), ProtocolError> {
        let frame = CloseFrame::parse(payload)?;
        self.closing_mut().remote.clone_from(&frame);
        self.events
            .push_back(Event::Message(Message::Close(frame.clone())));
        self.pending = None;
        self.assembler.reset();
        let initiator = if self.state == State::CloseSent {
            Initiator::Local
        } else {
            // Section 5.5.1: an endpoint that receives a Close frame and has not sent one must
            // send one in response; it echoes the status code it received.
            let reply = frame.map(|f| CloseFrame {
                code: f.code,
                reason: Utf8Bytes::new(),
            });
            self.queue_close(reply);
            Initiator::Remote
        };
        self.finish(initiator, None);
        match self.role {
            Role::Server => self.close_transport = true,
            // Section 7.1.1: the client waits for the server to close the transport.
            Role::Client => self.close_deadline = now.checked_add(self.config.close_timeout()),
        }
        Ok(())
    }

    fn handle_data(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        let extension = self
            .extension
            .as_deref_mut()
            .map(|e| e as &mut dyn Extension);
        if let Some(event) = self.assembler.push(frame, &self.config, extension)? {
            self.events.push_back(event);
        }
        Ok(())
    }

    /// Fails the connection (section 7.1.7): sends a Close frame with the error's code, then
    /// expects the transport to be closed without waiting for the peer.
    fn fail(&mut self, error: ProtocolError) {
        if self.state == State::Closed {
            return;
        }
        self.pending = None;
        self.assembler.reset();
        if self.state == State::Open {
            let reason = truncate_reason(error.to_string(), error.close_code());
            self.queue_close(Some(CloseFrame {
                code: error.close_code(),
                reason,
            }));
        }
        self.finish(Initiator::Library, Some(ConnectionError::Protocol(error)));
        self.close_transport = true;
    }

    /// Marks the WebSocket closed and reports it, once.
    fn finish(&mut self, initiator: Initiator, error: Option<ConnectionError>) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        self.pending_pong = None;
        let closing = self.closing_mut();
        let initiator = *closing.initiator.get_or_insert(initiator);
        let closed = Closed {
            initiator,
            local: closing.local.clone(),
            remote: closing.remote.clone(),
            error,
        };
        closing.closed = Some(closed.clone());
        self.events.push_back(Event::Closed(Box::new(closed)));
    }

    // ---- Internals: output ----

    fn ensure_open(&self) -> Result<(), ApiMisuse> {
        if self.state == State::Open {
            Ok(())
        } else {
            Err(ApiMisuse::Closing)
        }
    }

    #[inline]
    fn send_data(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), ApiMisuse> {
        // The common case, decided in a few comparisons: an open connection, no fragmented
        // message being sent, no extension, a payload whose length fits the header's first
        // length field. `send_data_general` writes the same bytes for it.
        if self.state == State::Open
            && self.outgoing.is_none()
            && self.extension.is_none()
            && payload.len() <= SHORT_PAYLOAD
        {
            self.push_short(opcode, &payload);
            return Ok(());
        }
        self.send_data_general(opcode, payload)
    }

    #[inline(never)]
    fn send_data_general(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), ApiMisuse> {
        self.ensure_open()?;
        if self.outgoing.is_some() {
            return Err(ApiMisuse::FragmentedMessageInProgress);
        }
        let (rsv, payload) = match self.extension.as_deref_mut() {
            Some(extension) => extension.encode(opcode, payload),
            None => (Rsv::NONE, payload),
        };
        self.push_frame(opcode, true, rsv, payload);
        Ok(())
    }

    fn send_control(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), ApiMisuse> {
        self.ensure_open()?;
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(ApiMisuse::ControlPayloadTooLong { len: payload.len() });
        }
        self.push_frame(opcode, true, Rsv::NONE, payload);
        Ok(())
    }

    fn close_at(
        &mut self,
        now: Option<Instant>,
        frame: Option<CloseFrame>,
    ) -> Result<(), ApiMisuse> {
        self.ensure_open()?;
        if let Some(frame) = &frame {
            CloseFrame::new(frame.code, frame.reason.clone())?;
        }
        self.queue_close(frame);
        self.state = State::CloseSent;
        self.closing_mut().initiator = Some(Initiator::Local);
        let now = now.unwrap_or(self.last_now);
        self.last_now = self.last_now.max(now);
        self.close_deadline = now.checked_add(self.config.close_timeout());
        Ok(())
    }

    fn queue_close(&mut self, frame: Option<CloseFrame>) {
        // A Pong owed for an earlier Ping goes before the Close: nothing may follow a Close.
        self.flush_pong();
        let mut payload =
            BytesMut::with_capacity(frame.as_ref().map_or(0, CloseFrame::encoded_len));
        if let Some(frame) = &frame {
            frame.encode(&mut payload);
        }
        self.push_frame(OpCode::Close, true, Rsv::NONE, payload.freeze());
        self.closing_mut().local = frame;
    }

    fn closing_mut(&mut self) -> &mut Closing {
        self.closing.get_or_insert_with(Box::default)
    }

    fn flush_pong(&mut self) {
        if let Some(payload) = self.pending_pong.take() {
            self.push_frame(OpCode::Pong, true, Rsv::NONE, payload);
        }
    }

    /// Queues a final frame without RSV bits and with a payload of at most 125 bytes (its
    /// length in the header's first length field): what `push_frame` writes for it, with the
    /// header written as words and the payload copied after one reservation.
    #[inline]
    fn push_short(&mut self, opcode: OpCode, payload: &[u8]) {
        debug_assert!(payload.len() <= SHORT_PAYLOAD);
        let b0 = 0x80 | opcode.bits();
        // At most 125: fits the 7 bits of the length.
        #[allow(clippy::cast_possible_truncation)]
        let b1 = payload.len() as u8;
        if self.role.masks_outgoing() {
            let key = self.next_mask_key();
            let len = payload.len().saturating_add(6);
            self.out_buf.reserve(len);
            self.out_buf.put_u16(u16::from_be_bytes([b0, b1 | 0x80]));
            self.out_buf.put_u32(u32::from_be_bytes(key));
            let start = self.out_buf.len();
            self.out_buf.extend_from_slice(payload);
            if let Some(masked) = self.out_buf.get_mut(start..) {
                apply_mask(masked, key, 0);
            }
            self.queued = self.queued.saturating_add(len);
        } else {
            let len = payload.len().saturating_add(2);
            self.out_buf.reserve(len);
            self.out_buf.put_u16(u16::from_be_bytes([b0, b1]));
            self.out_buf.extend_from_slice(payload);
            self.queued = self.queued.saturating_add(len);
        }
    }

    /// The masking key for the next frame (a client's).
    #[inline]
    fn next_mask_key(&mut self) -> [u8; 4] {
        self.mask
            .get_or_insert_with(|| Box::new(OsMaskSource::new()))
            .next_key()
    }

    fn push_frame(&mut self, opcode: OpCode, fin: bool, rsv: Rsv, payload: Bytes) {
        let mut head = FrameHead {
            fin,
            rsv,
            opcode,
            mask: None,
            payload_len: payload.len() as u64,
        };
        let mut head_bytes = [0; MAX_HEAD_LEN];
        if self.role.masks_outgoing() {
            let key = self.next_mask_key();
            head.mask = Some(key);
            let head_len = head.encode(&mut head_bytes);
            let head_bytes = head_bytes.get(..head_len).unwrap_or_default();
            let len = head_bytes.len().saturating_add(payload.len());
            self.out_buf.reserve(len);
            self.out_buf.extend_from_slice(head_bytes);
            let start = self.out_buf.len();
            self.out_buf.extend_from_slice(&payload);
            if let Some(masked) = self.out_buf.get_mut(start..) {
                apply_mask(masked, key, 0);
            }
            self.queued = self.queued.saturating_add(len);
            return;
        }
        if payload.len() <= SHORT_PAYLOAD {
            // The common small frame: its 2-byte header (the length in the second byte, no mask)
            // and payload appended after one reservation, the header as one word rather than
            // a copy of a slice. `encode` writes the same bytes for it.
            let mut b0 = opcode.bits() | rsv.bits();
            if fin {
                b0 |= 0x80;
            }
            // At most 125: fits the 7 bits of the length.
            #[allow(clippy::cast_possible_truncation)]
            let b1 = payload.len() as u8;
            let len = payload.len().saturating_add(2);
            self.out_buf.reserve(len);
            self.out_buf.put_u16(u16::from_be_bytes([b0, b1]));
            self.out_buf.extend_from_slice(&payload);
            self.queued = self.queued.saturating_add(len);
            return;
        }
        let head_len = head.encode(&mut head_bytes);
        let head_bytes = head_bytes.get(..head_len).unwrap_or_default();
        self.queued = self
            .queued
            .saturating_add(head_bytes.len().saturating_add(payload.len()));
        if payload.len() <= COPY_LIMIT {
            self.out_buf
                .reserve(head_bytes.len().saturating_add(payload.len()));
            self.out_buf.extend_from_slice(head_bytes);
            self.out_buf.extend_from_slice(&payload);
        } else {
            self.out_buf.extend_from_slice(head_bytes);
            self.out_chunks.push_back(self.out_buf.split().freeze());
            self.out_chunks.push_back(payload);
        }
    }

    /// Queues a message framed once for many connections: a server sends the
    /// [`PreparedMessage`]'s own bytes (its compressed frame when this connection compresses
    /// without context takeover), so fan-out to many members encodes once. With context
    /// takeover the connection compresses the message itself, and a client masks its own copy,
    /// as for [`send`](Self::send).
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub fn send_prepared(&mut self, message: &PreparedMessage) -> Result<(), ApiMisuse> {
        self.ensure_open()?;
        if self.outgoing.is_some() {
            return Err(ApiMisuse::FragmentedMessageInProgress);
        }
        let shared = match self.extension.as_deref() {
            _ if self.role.masks_outgoing() => None,
            None => Some(message.frame().clone()),
            Some(extension) => extension
                .shared_encoding()
                .map(|encoding| message.frame_for(encoding)),
        };
        let Some(frame) = shared else {
            let payload = match message.message() {
                Message::Text(text) => text.clone().into_bytes(),
                Message::Binary(data) => data.clone(),
                // A prepared message is text or binary.
                _ => Bytes::new(),
            };
            return self.send_data(kind_opcode(message.kind()), payload);
        };
        // As `push_frame` does: small frames join the shared buffer, large ones go as they are.
        self.queued = self.queued.saturating_add(frame.len());
        if frame.len() <= COPY_LIMIT {
            self.out_buf.extend_from_slice(&frame);
        } else {
            if !self.out_buf.is_empty() {
                self.out_chunks.push_back(self.out_buf.split().freeze());
            }
            self.out_chunks.push_back(frame);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("extension", &self.extension_name())
            .field("queued", &self.queued)
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

/// The earlier of two optional deadlines.
#[inline]
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn kind_opcode(kind: DataKind) -> OpCode {
    match kind {
        DataKind::Text => OpCode::Text,
        DataKind::Binary => OpCode::Binary,
    }
}

/// The reason sent when failing the connection: the error's description, cut to fit, except for
/// internal errors, whose details stay private.
fn truncate_reason(mut text: String, code: CloseCode) -> Utf8Bytes {
    if code == CloseCode::INTERNAL_ERROR {
        return Utf8Bytes::new();
    }
    if text.len() > MAX_REASON_LEN {
        let mut end = MAX_REASON_LEN;
        while !text.is_char_boundary(end) {
            end = end.saturating_sub(1);
        }
        text.truncate(end);
    }
    Utf8Bytes::from(text)
}

#[cfg(test)]
mod tests;

//! The loop that drives a protocol [`Connection`] over an `AsyncRead + AsyncWrite` stream:
//! read into one reusable buffer, hand it to the core, write what the core queued (vectored),
//! and keep one timer armed at the core's next deadline.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use sockeye_proto::{
    CloseCode, CloseFrame, Closed, Connection, ConnectionError, DataFrame, Event, Message,
};
use std::future::Future as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use crate::config::WebSocketConfig;
use crate::error::{Error, Kind};
use crate::shutdown::Watch;

/// Chunks gathered into one vectored write at most.
const MAX_IOV: usize = 64;
/// The most the read buffer grows by at once.
const MAX_RESERVE: usize = 1 << 20;
/// The largest read size the adaptive read chunk grows to.
const MAX_READ_CHUNK: usize = 64 << 10;
/// What one read of a lingering close takes at most (the bytes are dropped).
const DRAIN_CHUNK: usize = 16 << 10;
/// How long a lingering close waits for the peer to end its side after a clean close handshake.
const CLEAN_LINGER: std::time::Duration = std::time::Duration::from_millis(500);
/// What a read on an idle connection (one without a read buffer) takes at most, on the stack.
const IDLE_READ: usize = 4 << 10;
/// Reads of a lingering close before it yields to other tasks (and checks its deadline).
const DRAIN_READS: usize = 16;

/// What [`WebSocket::next_frame`](crate::WebSocket::next_frame) (and the blocking API's
/// `read_frame`) yields: whole messages and, in streaming mode, the frames of data messages
/// as they arrive.
///
/// With [`Config`](crate::Config)'s `streaming` on, a text or binary message is not assembled:
/// each of its frames comes as [`Incoming::Frame`], in order, `first` on the first and `fin`
/// on the last, so a message larger than memory allows (larger than `max_message_size`, which
/// then bounds each frame) can be consumed piece by piece. Text is still checked for UTF-8
/// across frames (invalid text fails the connection with 1007), but a frame may end inside a
/// code point, so its payload is bytes. Control messages (Ping, Pong, the peer's Close) come
/// whole, as [`Incoming::Message`], also between the frames of a message. Without streaming,
/// every item is an `Incoming::Message`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// A whole message: a control message or, without streaming mode, a text or binary one.
    Message(Message),
    /// One frame of a text or binary message, in streaming mode.
    Frame(DataFrame),
}

/// The current time, from tokio's clock so that tests may pause it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

// The flags are independent facts about the transport, not a state machine in disguise.
#[allow(clippy::struct_excessive_bools)]
pub(crate) struct Driver<S> {
    io: S,
    conn: Connection,
    read_buf: BytesMut,
    /// Chunks taken from the core and not yet fully written.
    out: VecDeque<Bytes>,
    out_len: usize,
    needs_flush: bool,
    timer: Option<Pin<Box<Sleep>>>,
    timer_at: Option<Instant>,
    /// `read_buf` may hold whole frames the core has not looked at yet.
    input_pending: bool,
    /// When the bytes in `read_buf` arrived: the core's `now` for them. Read once per read, not
    /// once per message (the clock is a visible cost at millions of messages a second).
    read_at: Instant,
    /// The stream's read side ended (or failed).
    read_done: bool,
    /// A transport error, reported in place of the core's view of the ending.
    io_error: Option<io::Error>,
    /// The transport was shut down and the final item handed out.
    finished: bool,
    /// Data came after the handshake: until then, an idle connection's buffers (the
    /// handshake's) are released at the first read that finds nothing, not after a delay.
    data_seen: bool,
    /// Our side of the transport was shut down (the close handshake is over for us).
    shut_down: bool,
    /// While the peer may still be sending after our side was shut down, how long what it
    /// sends is read and dropped (a lingering close).
    linger: Option<Pin<Box<Sleep>>>,
    high_water: usize,
    /// How much the next read asks for at least: starts at the configured read buffer size and
    /// doubles (up to `MAX_READ_CHUNK`) after each read that filled what it was given.
    read_chunk: usize,
    protocol: Option<String>,
    /// A streamed frame that a read of whole messages came upon: the next read of frames
    /// hands it out.
    stashed: Option<DataFrame>,
    /// The server's [`Shutdown`](crate::Shutdown), when the connection watches one.
    watch: Option<Box<Watch>>,
    /// Armed while the connection holds buffers and has nothing to read: when it fires and no
    /// data came for `release_after_ms`, the buffers are released (`release_idle`).
    idle_timer: Option<Pin<Box<Sleep>>>,
    /// How long a connection with nothing to read keeps its buffers, in milliseconds (zero:
    /// released at once); 4 bytes rather than a `Duration`'s 16 in every connection.
    release_after_ms: u32,
}

impl<S> Drop for Driver<S> {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.as_deref() {
            watch.finish(self.backlog());
        }
    }
}

impl<S> Driver<S> {
    /// Unsent bytes, in the core and in our write queue.
    fn backlog(&self) -> usize {
        self.out_len + self.conn.buffered_amount()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    pub(crate) fn new(
        io: S,
        conn: Connection,
        config: &WebSocketConfig,
        read_buf: BytesMut,
        protocol: Option<String>,
    ) -> Self {
        Self {
            io,
            conn,
            read_buf,
            out: VecDeque::new(),
            out_len: 0,
            needs_flush: false,
            timer: None,
            timer_at: None,
            input_pending: false,
            read_at: now(),
            read_done: false,
            io_error: None,
            finished: false,
            data_seen: false,
            shut_down: false,
            linger: None,
            high_water: config.write_buffer_high_water,
            read_chunk: config.read_buffer_size,
            protocol,
            stashed: None,
            watch: config
                .shutdown
                .as_ref()
                .map(|shutdown| Box::new(shutdown.watch())),
            idle_timer: None,
            release_after_ms: u32::try_from(config.release_idle_buffers_after.as_millis())
                .unwrap_or(u32::MAX),
        }
    }

    /// After a read: the read buffer holds bytes the core has not looked at. They are handed to
    /// it by the loop of `poll_next_inner`, which goes on right after the read, where a whole
    /// message in one frame is taken straight from the buffer (`handle_bytes_message`) rather
    /// than queued as an event and taken again.
    pub(crate) fn feed_core(&mut self) {
        self.input_pending = !self.read_buf.is_empty();
    }

    /// Hands the core what is in the read buffer now (at first: the bytes that came with the
    /// handshake).
    pub(crate) fn feed_core_now(&mut self) {
        self.input_pending = self
            .conn
            .handle_bytes(&mut self.read_buf, self.read_at)
            .is_paused();
    }

    pub(crate) fn io(&self) -> &S {
        &self.io
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn closed(&self) -> Option<&Closed> {
        self.conn.close_status()
    }

    pub(crate) fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The next message. In streaming mode a data frame is not a message: it is kept for
    /// [`poll_next_incoming`](Self::poll_next_incoming), and this fails as a misuse.
    #[inline]
    pub(crate) fn poll_next_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, Error>>> {
        // The common case first: the next of the messages one read brought, taken straight
        // from the core (no event queued and taken again). It is what the loop of
        // `poll_next_incoming` would do first: hand the core the rest of the read buffer.
        // Small enough to be inlined into the caller's future; everything else is out of line.
        // (The shutdown's trigger is not looked at here: `poll_ready` looks before every send,
        // and the drain itself runs where this waits, in `poll_next_incoming`.)
        if self.input_pending
            && self.backlog() <= self.high_water
            && let Some(message) = self
                .conn
                .handle_bytes_message(&mut self.read_buf, self.read_at)
        {
            self.input_pending = !self.read_buf.is_empty();
            return Poll::Ready(Some(Ok(message)));
        }
        self.poll_next_message_general(cx)
    }

    /// [`poll_next_message`](Self::poll_next_message) for everything but a message taken
    /// straight from the read buffer.
    #[inline(never)]
    fn poll_next_message_general(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, Error>>> {
        Poll::Ready(match ready!(self.poll_next_incoming(cx)) {
            Some(Ok(Incoming::Message(message))) => Some(Ok(message)),
            Some(Ok(Incoming::Frame(frame))) => {
                self.stashed = Some(frame);
                Some(Err(Error::new(Kind::StreamingFrame)))
            }
            Some(Err(e)) => Some(Err(e)),
            None => None,
        })
    }

    /// The next message or streamed frame. Cancel-safe: an item is taken from the core only
    /// when it is returned.
    pub(crate) fn poll_next_incoming(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Incoming, Error>>> {
        if let Some(frame) = self.stashed.take() {
            return Poll::Ready(Some(Ok(Incoming::Frame(frame))));
        }
        // The shutdown's trigger is looked at on every call, but the task registered to be woken
        // by it only before it waits: registering takes a lock, once per message otherwise.
        if let Some(watch) = self.watch.as_deref_mut() {
            watch.check_triggered();
        }
        loop {
            let poll = self.poll_next_inner(cx);
            if poll.is_pending()
                && let Some(watch) = self.watch.as_deref_mut()
                && !watch.draining()
                && watch.poll_triggered(cx)
            {
                // Triggered since it was looked at: go round again, draining.
                continue;
            }
            return poll;
        }
    }

    fn poll_next_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming, Error>>> {
        loop {
            if let Some(incoming) = self.take_event() {
                return Poll::Ready(Some(Ok(incoming)));
            }
            if self.finished {
                return Poll::Ready(None);
            }
            // The core stops after each message so that it is answered before later frames are
            // looked at; hand it the rest of what was read before writing or reading more, so
            // the answers to one read's messages leave together in one write.
            if self.input_pending && self.backlog() <= self.high_water {
                if let Some(message) = self
                    .conn
                    .handle_bytes_message(&mut self.read_buf, self.read_at)
                {
                    self.input_pending = !self.read_buf.is_empty();
                    return Poll::Ready(Some(Ok(Incoming::Message(message))));
                }
                self.feed_core_now();
                continue;
            }
            // Write what the core queued (pongs, close replies, the user's messages); a full
            // transport is not a reason to stop reading unless we are over the high-water mark.
            if let Poll::Ready(Err(e)) = self.poll_output(cx) {
                self.transport_failed(e);
                continue;
            }
            if self.poll_drain(cx) {
                continue;
            }
            if self.conn.is_closed() && self.out.is_empty() && self.conn.should_close_transport() {
                // Section 7.1.1: the server closes first; a client gets here after the server's
                // EOF or after the close timeout.
                if !self.shut_down {
                    let _ = ready!(Pin::new(&mut self.io).poll_shutdown(cx));
                    self.shut_down = true;
                }
                ready!(self.poll_linger(cx));
                self.finished = true;
                return Poll::Ready(self.final_error().map(Err));
            }
            if self.poll_timer(cx) {
                continue;
            }
            // Backpressure: a peer that does not read our output makes us stop reading its
            // input, so nothing it sends (pings, or messages an echo loop answers) can grow the
            // queue without bound. `poll_output` has registered for write readiness.
            if self.backlog() > self.high_water || self.read_done {
                return Poll::Pending;
            }
            ready!(self.poll_read(cx));
        }
    }

    /// The server's graceful shutdown, once triggered: when everything queued before the signal
    /// is written, sends a Close with 1001; at the end of the grace period, cuts the connection
    /// with whatever is still unsent. Returns whether it changed the connection's state.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(watch) = self.watch.as_deref_mut() else {
            return false;
        };
        if !watch.draining() || self.finished {
            return false;
        }
        if watch.poll_deadline(cx) {
            if self.conn.is_closed() && self.out.is_empty() && self.conn.should_close_transport() {
                // Only the transport's shutdown is left.
                return false;
            }
            // `backlog()`, spelled out: `watch` borrows `self.watch` here.
            let unsent = self.out_len + self.conn.buffered_amount();
            watch.cut(unsent);
            let e = io::Error::new(
                io::ErrorKind::TimedOut,
                format!("server shutting down: grace period over with {unsent} bytes unsent"),
            );
            self.transport_failed(e);
            // What `transport_failed` dropped is counted when the connection is dropped.
            self.io_error.get_or_insert_with(|| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "server shutting down: grace period over",
                )
            });
            return true;
        }
        if self.conn.is_open() && self.backlog() == 0 {
            let frame = CloseFrame::new(CloseCode::GOING_AWAY, "server shutting down").ok();
            let _ = self.conn.close(now(), frame);
            return true;
        }
        false
    }

    /// A lingering close: after our side is shut down, reads and drops what the peer still
    /// sends until it ends its side, for at most the close timeout. Closing with unread input
    /// would reset the connection, and a peer still busy sending (a message over our limit,
    /// say) would lose our Close frame, and with it the reason, in the reset. The bytes are
    /// dropped as they come: memory stays what the read buffer holds.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.read_done {
            return Poll::Ready(());
        }
        // After we failed the connection, the peer may still be sending what we refused: up to
        // the close timeout. After a close handshake, the peer ends its side at once (an HTTP/2
        // stream that we dropped before the peer's END_STREAM would be reset, not ended): a
        // moment, so that a peer that keeps its side open does not hold us.
        let failed = matches!(
            self.conn
                .close_status()
                .and_then(|closed| closed.error.as_ref()),
            Some(ConnectionError::Protocol(_))
        );
        let close_timeout = self.conn.config().close_timeout();
        let timeout = if failed {
            close_timeout
        } else {
            close_timeout.min(CLEAN_LINGER)
        };
        let linger = self
            .linger
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if linger.as_mut().poll(cx).is_ready() {
            self.read_done = true;
            return Poll::Ready(());
        }
        for _ in 0..DRAIN_READS {
            self.read_buf.clear();
            self.read_buf.reserve(DRAIN_CHUNK);
            match ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut self.io),
                cx,
                &mut self.read_buf
            )) {
                Ok(0) | Err(_) => {
                    self.read_buf.clear();
                    self.read_done = true;
                    return Poll::Ready(());
                }
                Ok(_) => {}
            }
        }
        // A peer that keeps sending: let other tasks run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Reads once and feeds the core. Pending when nothing could be read.
    ///
    /// An idle connection holds no read buffer: when a read finds nothing with the buffer
    /// empty, the buffer (and the empty output queues) are released, and the next read goes
    /// to the stack first and allocates only for what arrived.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.read_buf.capacity() == 0 {
            return self.poll_read_idle(cx);
        }
        // Room for the rest of the frame in progress plus the next header, so a large frame
        // completes in one buffer; at least a quarter of the configured size for small ones.
        // Reservations are capped so that a header announcing a large frame commits memory
        // only as its payload arrives.
        let need = self.conn.read_hint(&self.read_buf).min(MAX_RESERVE);
        let mut spare = self.read_buf.capacity() - self.read_buf.len();
        if spare < need.max(self.read_chunk / 4) {
            self.read_buf.reserve(need.max(self.read_chunk));
            spare = self.read_buf.capacity() - self.read_buf.len();
        }
        let polled = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf);
        let Poll::Ready(result) = polled else {
            if self.read_buf.is_empty() {
                self.poll_release(cx);
            }
            return Poll::Pending;
        };
        self.after_read(result, spare);
        Poll::Ready(())
    }

    /// A read with no buffer: into the stack, then into a buffer sized for what came.
    fn poll_read_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); IDLE_READ];
        let mut buf = tokio::io::ReadBuf::uninit(&mut stack);
        let Poll::Ready(result) = Pin::new(&mut self.io).poll_read(cx, &mut buf) else {
            // The read buffer is gone already; the core's queues may have been used since.
            self.poll_release(cx);
            return Poll::Pending;
        };
        let result = result.map(|()| {
            let filled = buf.filled();
            if !filled.is_empty() {
                // Just what came: a small message costs a small allocation (the allocator's
                // fast path), which the message then shares.
                self.read_buf.reserve(filled.len());
                self.read_buf.extend_from_slice(filled);
            }
            filled.len()
        });
        self.after_read(result, IDLE_READ);
        Poll::Ready(())
    }

    /// Handles the outcome of a read that had `spare` bytes of room.
    fn after_read(&mut self, result: io::Result<usize>, spare: usize) {
        match result {
            Ok(0) => {
                self.read_done = true;
                self.conn.handle_eof();
            }
            Ok(n) => {
                self.data_seen = true;
                // A read that took all it was given suggests more was waiting: ask for more.
                if n >= spare {
                    self.read_chunk = (self.read_chunk * 2).min(MAX_READ_CHUNK);
                }
                self.read_at = now();
                self.feed_core();
            }
            Err(e) => self.transport_failed(e),
        }
    }

    /// A read found nothing and nothing is buffered: releases the buffers once no data came
    /// for `release_after_ms` (at once before any data came). The timer is armed once per idle period, not per read: while
    /// data keeps coming, it fires at most once per period, finds recent data and is re-armed;
    /// the connection's task is woken by it once when it goes idle.
    ///
    /// The timer is polled (its waker registered) only when it is armed or re-armed; otherwise
    /// a read that finds nothing only asks whether it fired, which is what keeps this cheap
    /// with one message at a time in flight. Should the connection move to another task while
    /// the timer runs, the release waits for the next read that finds nothing.
    fn poll_release(&mut self, cx: &mut Context<'_>) {
        // A connection that has been sent nothing since its handshake is not busy: freeing the
        // handshake's buffers at once lets the next connection's handshake reuse the memory,
        // where a release a second later, after thousands of other handshakes, leaves holes.
        if self.release_after_ms == 0 || !self.data_seen {
            self.release_idle();
            return;
        }
        let after = std::time::Duration::from_millis(u64::from(self.release_after_ms));
        let due = tokio::time::Instant::from_std(self.read_at + after);
        let timer = match &mut self.idle_timer {
            Some(timer) if !timer.is_elapsed() => return,
            Some(timer) => timer,
            None if self.read_buf.capacity() > 0 || self.out.capacity() > 0 => {
                let timer = self
                    .idle_timer
                    .insert(Box::pin(tokio::time::sleep_until(due)));
                if timer.as_mut().poll(cx).is_pending() {
                    return;
                }
                timer
            }
            // No data came since the last release: only what sending queued in the core
            // may be held (a server pushing to a quiet client), released as before.
            None => {
                self.conn.release_idle_buffers();
                return;
            }
        };
        loop {
            if due <= tokio::time::Instant::now() {
                self.release_idle();
                return;
            }
            // Data came since the timer was armed: wait for the rest of the period.
            timer.as_mut().reset(due);
            if timer.as_mut().poll(cx).is_pending() {
                return;
            }
        }
    }

    /// Releases the buffers of a connection that has nothing buffered.
    fn release_idle(&mut self) {
        self.idle_timer = None;
        if let Some(watch) = self.watch.as_deref_mut() {
            watch.release_idle();
        }
        self.read_buf = BytesMut::new();
        if self.out.is_empty() && self.out.capacity() > 0 {
            self.out = VecDeque::new();
        }
        self.conn.release_idle_buffers();
    }

    fn transport_failed(&mut self, e: io::Error) {
        tracing::debug!(error = %e, "transport failed");
        if self.io_error.is_none() && !self.conn.is_closed() {
            self.io_error = Some(e);
        }
        self.read_done = true;
        self.out.clear();
        self.out_len = 0;
        self.conn.handle_eof();
        while self.conn.poll_transmit().is_some() {}
    }

    /// Takes the next message or streamed frame, passing over the closing report.
    fn take_event(&mut self) -> Option<Incoming> {
        while let Some(event) = self.conn.poll_event() {
            match event {
                Event::Message(message) => return Some(Incoming::Message(message)),
                Event::Frame(frame) => return Some(Incoming::Frame(frame)),
                Event::Closed(closed) => {
                    // The core keeps the report too (`close_status`); it is read from there.
                    tracing::debug!(code = %closed.code(), initiator = ?closed.initiator, "closed");
                }
            }
        }
        None
    }

    fn final_error(&mut self) -> Option<Error> {
        if let Some(e) = self.io_error.take() {
            return Some(Error::from(e));
        }
        closed_error(self.conn.close_status()?)
    }

    /// Arms the timer at the core's deadline; returns whether it fired (and was handled).
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.conn.poll_timeout() else {
            self.timer_at = None;
            return false;
        };
        let tokio_deadline = tokio::time::Instant::from_std(deadline);
        match &mut self.timer {
            Some(timer) if self.timer_at != Some(deadline) => timer.as_mut().reset(tokio_deadline),
            Some(_) => {}
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(tokio_deadline))),
        }
        self.timer_at = Some(deadline);
        let Some(timer) = self.timer.as_mut() else {
            return false;
        };
        if timer.as_mut().poll(cx).is_ready() {
            self.timer_at = None;
            self.conn.handle_timeout(now());
            return true;
        }
        false
    }

    /// Writes everything queued, then flushes the transport.
    pub(crate) fn poll_output(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            // Past the high-water mark, output stays in the core, where the pong backlog sees it.
            while self.out_len <= self.high_water
                && let Some(chunk) = self.conn.poll_transmit()
            {
                self.out_len += chunk.len();
                self.out.push_back(chunk);
            }
            if self.out.is_empty() {
                break;
            }
            let written = if self.out.len() > 1 && self.io.is_write_vectored() {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let mut count = 0;
                for (slot, chunk) in slices.iter_mut().zip(self.out.iter()) {
                    *slot = IoSlice::new(chunk);
                    count += 1;
                }
                ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]))?
            } else {
                let first = &self.out[0];
                ready!(Pin::new(&mut self.io).poll_write(cx, first))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.needs_flush = true;
            self.advance_out(written);
        }
        if self.needs_flush {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.needs_flush = false;
        }
        Poll::Ready(Ok(()))
    }

    fn advance_out(&mut self, mut written: usize) {
        self.out_len -= written;
        if let Some(watch) = self.watch.as_deref_mut() {
            watch.wrote(written);
        }
        while written > 0 {
            let Some(front) = self.out.front_mut() else {
                return;
            };
            if written >= front.len() {
                written -= front.len();
                self.out.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }

    // ---- Sending ----

    /// Ready when the backlog is under the high-water mark.
    #[inline]
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // The common case, inlined into the caller's future: open, room in the queue, and no
        // drain started (the trigger looked at without registering the task).
        if self.conn.is_open()
            && self.backlog() <= self.high_water
            && self
                .watch
                .as_deref_mut()
                .is_none_or(|watch| !watch.check_triggered())
        {
            return Poll::Ready(Ok(()));
        }
        self.poll_ready_general(cx)
    }

    #[inline(never)]
    fn poll_ready_general(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if !self.conn.is_open() {
            return Poll::Ready(Err(Self::already_closed()));
        }
        let backlogged = self.backlog() > self.high_water;
        // The trigger is looked at on every call; the task registered to be woken by it (a lock)
        // only when it may wait, as in `poll_next_incoming`.
        if let Some(watch) = self.watch.as_deref_mut()
            && (if backlogged {
                watch.poll_triggered(cx)
            } else {
                watch.check_triggered()
            })
        {
            // A task that only sends still drives the drain (and its deadline).
            let _ = self.poll_output(cx);
            self.poll_drain(cx);
            return Poll::Ready(Err(Self::already_closed()));
        }
        if backlogged {
            // A sender that never reads still drives keepalive and the close timeout: the timer
            // is armed before waiting here, and run by every flush (`poll_flush`).
            while self.poll_timer(cx) {}
            if !self.conn.is_open() {
                return Poll::Ready(Err(Self::already_closed()));
            }
            if let Err(e) = ready!(self.poll_output(cx)) {
                self.transport_failed(e);
                return Poll::Ready(Err(Self::already_closed()));
            }
            if self.backlog() > self.high_water {
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }

    #[inline]
    pub(crate) fn start_send(&mut self, message: Message) -> Result<(), Error> {
        let Some(watch) = self.watch.as_deref_mut() else {
            return queue(&mut self.conn, message);
        };
        if watch.draining() {
            return Err(Self::already_closed());
        }
        let data = message.is_data();
        queue(&mut self.conn, message)?;
        if data {
            let backlog = self.backlog();
            if let Some(watch) = self.watch.as_deref_mut() {
                watch.queued(backlog);
            }
        }
        Ok(())
    }

    pub(crate) fn start_send_prepared(
        &mut self,
        message: &sockeye_proto::PreparedMessage,
    ) -> Result<(), Error> {
        let conn = &mut self.conn;
        conn.send_prepared(message).map_err(|e| {
            if conn.is_open() {
                Error::from(e)
            } else {
                Error::new(Kind::AlreadyClosed)
            }
        })
    }

    /// Like [`poll_flush`](Self::poll_flush), but leaves the write to the next
    /// [`poll_next_message`](Self::poll_next_message) while more received messages are already
    /// waiting in the read buffer: that call writes before it reads, and by then the answers to
    /// the whole burst are queued together.
    #[inline]
    pub(crate) fn poll_flush_deferred(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.input_pending && self.backlog() <= self.high_water && self.conn.is_open() {
            return Poll::Ready(Ok(()));
        }
        self.poll_flush(cx)
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while self.poll_timer(cx) {}
        match ready!(self.poll_output(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => {
                self.transport_failed(e);
                Poll::Ready(Err(Self::already_closed()))
            }
        }
    }

    /// Starts the close handshake if nobody did yet.
    pub(crate) fn start_close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        if self.conn.is_open() {
            self.conn.close(now(), frame)?;
        }
        Ok(())
    }

    /// Drives the connection until it is closed. With `consume`, messages received meanwhile
    /// are read and dropped, and the transport is shut down; without it (a writer half), only
    /// output and timers are driven, and the reader half does the reading.
    pub(crate) fn poll_closed(
        &mut self,
        cx: &mut Context<'_>,
        consume: bool,
    ) -> Poll<Result<(), Error>> {
        if consume {
            loop {
                match ready!(self.poll_next_incoming(cx)) {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Poll::Ready(Err(e)),
                    None => return Poll::Ready(Ok(())),
                }
            }
        }
        loop {
            let written = match self.poll_output(cx) {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(e)) => {
                    self.transport_failed(e);
                    true
                }
                Poll::Pending => false,
            };
            if self.poll_drain(cx) {
                continue;
            }
            // Done once the core is closed and our Close (or reply) has been written.
            if (self.conn.is_closed() && written) || self.finished {
                return Poll::Ready(match self.io_error.take() {
                    Some(e) => Err(Error::from(e)),
                    None => self
                        .conn
                        .close_status()
                        .and_then(closed_error)
                        .map_or(Ok(()), Err),
                });
            }
            if !self.poll_timer(cx) {
                return Poll::Pending;
            }
        }
    }

    /// The error for sending on a connection that is no longer open.
    fn already_closed() -> Error {
        Error::new(Kind::AlreadyClosed)
    }
}

/// Queues `message` in the core (a Close starts the close handshake); a message the protocol
/// refuses is a misuse, and one sent after the close began is `AlreadyClosed`.
// Always inlined: as a call (which `#[inline]` left it) the echo loop's cost per message was 4%
// higher (callgrind, 692 against 665 instructions).
#[allow(clippy::inline_always)]
#[inline(always)]
pub(crate) fn queue(conn: &mut Connection, message: Message) -> Result<(), Error> {
    let result = match message {
        Message::Close(frame) => conn.close(now(), frame),
        message => conn.send(message),
    };
    result.map_err(|e| {
        if conn.is_open() {
            Error::from(e)
        } else {
            Error::new(Kind::AlreadyClosed)
        }
    })
}

/// The error for a closing report that was not a clean close handshake.
pub(crate) fn closed_error(closed: &Closed) -> Option<Error> {
    let error = closed.error.clone()?;
    Some(Error::new(Kind::Closed {
        error,
        initiator: closed.initiator,
        local: closed.local.clone(),
        remote: closed.remote.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one connection's state takes inline (docs/topics/memory.md): a change that grows it
    /// shows here.
    #[test]
    fn per_connection_state_sizes() {
        let driver = size_of::<Driver<tokio::net::TcpStream>>();
        let conn = size_of::<Connection>();
        let stream = size_of::<crate::MaybeTlsStream>();
        let socket = size_of::<crate::WebSocket<crate::MaybeTlsStream>>();
        println!(
            "Driver<TcpStream> {driver}, WebSocket<MaybeTlsStream> {socket}, Connection {conn}, \
             MaybeTlsStream {stream}, Config {}, Event {}, Message {}, CloseFrame {}, Closed {}",
            size_of::<sockeye_proto::Config>(),
            size_of::<Event>(),
            size_of::<Message>(),
            size_of::<CloseFrame>(),
            size_of::<Closed>()
        );
        assert!(socket <= 768, "{socket}");
        assert!(conn <= 512, "{conn}");
    }

    // Not an `async fn`: those keep their arguments twice (the argument, and the local it
    // is moved to), a second WebSocket's worth of memory for the task's whole life.
    #[allow(clippy::manual_async_fn)]
    fn echo(mut ws: crate::WebSocket<crate::MaybeTlsStream>) -> impl Future<Output = ()> {
        async move {
            while let Some(Ok(message)) = ws.next().await {
                let _ = ws.send(message).await;
            }
        }
    }

    /// The futures a server's task holds: the handshake's only while it runs, `next` and
    /// `send` for the connection's life.
    #[tokio::test]
    async fn future_sizes() {
        let server = crate::ServerBuilder::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let accept = server.accept_tcp(tcp);
        println!("accept_tcp future {}", size_of_val(&accept));
        drop(accept);
        let (tcp, _) = tokio::try_join!(
            async { listener.accept().await },
            tokio::net::TcpStream::connect(addr)
        )
        .unwrap()
        .0;
        let ws = crate::WebSocket::from_raw(
            crate::MaybeTlsStream::Plain(tcp),
            crate::Role::Server,
            &WebSocketConfig::default(),
            BytesMut::new(),
        );
        let mut probe = crate::WebSocket::from_raw(
            tokio::io::empty(),
            crate::Role::Server,
            &WebSocketConfig::default(),
            BytesMut::new(),
        );
        let send = size_of_val(&probe.send(Message::text("x")));
        let next = size_of_val(&probe.next());
        println!(
            "an echo task's future {} (the WebSocket {}), `send` {send}, `next` {next}",
            size_of_val(&echo(ws)),
            size_of::<crate::WebSocket<crate::MaybeTlsStream>>(),
        );
    }
}

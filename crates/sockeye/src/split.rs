//! A reader and cloneable writers over one connection.
//!
//! Both halves share the driver behind a `std` mutex that is held only for the duration of one
//! poll, never across an `.await`. Either half may be the one that polls the transport, so the
//! transport and the timer get a waker that wakes every task waiting on this connection.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use futures_core::Stream;
use futures_sink::Sink;
use sockeye_proto::{CloseCode, CloseFrame, Message, PreparedMessage};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::driver::{Driver, Incoming};
use crate::error::Error;

pub(crate) fn split<S>(driver: Driver<S>) -> (WsReader<S>, WsWriter<S>) {
    let shared = Arc::new(Shared {
        driver: Mutex::new(driver),
        wakers: Arc::new(WakerSet::default()),
    });
    (
        WsReader {
            shared: Arc::clone(&shared),
        },
        WsWriter { shared },
    )
}

struct Shared<S> {
    driver: Mutex<Driver<S>>,
    wakers: Arc<WakerSet>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Shared<S> {
    /// Runs one poll of the driver on behalf of the task in `cx`.
    fn poll<T>(
        &self,
        cx: &Context<'_>,
        f: impl FnOnce(&mut Driver<S>, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.wakers.register(cx.waker());
        let waker = Waker::from(Arc::clone(&self.wakers));
        let mut inner_cx = Context::from_waker(&waker);
        let mut driver = self.lock();
        let before = phase(&driver);
        let result = f(&mut driver, &mut inner_cx);
        let changed = phase(&driver) != before;
        drop(driver);
        // A task that got its answer is not waiting any more: keep the set to the waiting ones.
        if result.is_ready() {
            self.wakers.forget(cx.waker());
        }
        // A poll by one half can close the connection that another half waits on (the reader
        // reads the peer's Close while a writer waits in `close`); no transport event may come
        // to wake that one any more.
        if changed {
            self.wakers.wake_others(cx.waker());
        }
        result
    }
}

/// Whether the connection is open, and whether it is closed: what writers wait on.
fn phase<S: AsyncRead + AsyncWrite + Unpin>(driver: &Driver<S>) -> (bool, bool) {
    let conn = driver.connection();
    (conn.is_open(), conn.is_closed())
}

impl<S> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, Driver<S>> {
        // A panic while polling leaves the driver in a consistent state (every step is a whole
        // state transition), so a poisoned lock is still usable.
        self.driver.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The tasks waiting on one connection; waking it wakes them all.
#[derive(Default)]
struct WakerSet {
    wakers: Mutex<Vec<Waker>>,
}

impl WakerSet {
    fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    /// Removes the registration of the task `waker` wakes.
    fn forget(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        wakers.retain(|w| !w.will_wake(waker));
    }

    /// Wakes every task but the one `current` wakes, which stays registered.
    fn wake_others(&self, current: &Waker) {
        let others: Vec<Waker> = {
            let mut wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
            let (mine, others) = std::mem::take(&mut *wakers)
                .into_iter()
                .partition(|w| w.will_wake(current));
            *wakers = mine;
            others
        };
        for waker in others {
            waker.wake();
        }
    }
}

impl Wake for WakerSet {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wakers =
            std::mem::take(&mut *self.wakers.lock().unwrap_or_else(PoisonError::into_inner));
        for waker in wakers {
            waker.wake();
        }
    }
}

/// The receiving half of a split [`WebSocket`](crate::WebSocket): a `Stream` of messages.
///
/// Keep polling it: it is what answers pings and the peer's Close and finishes the close
/// handshake, also for the writers.
pub struct WsReader<S> {
    shared: Arc<Shared<S>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsReader<S> {
    /// The next message; `None` after a clean close. Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<Message, Error>> {
        std::future::poll_fn(|cx| self.shared.poll(cx, Driver::poll_next_message)).await
    }

    /// The next message or, in streaming mode, frame; see
    /// [`WebSocket::next_frame`](crate::WebSocket::next_frame). Cancel-safe.
    pub async fn next_frame(&mut self) -> Option<Result<Incoming, Error>> {
        std::future::poll_fn(|cx| self.shared.poll(cx, Driver::poll_next_incoming)).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WsReader<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.shared.poll(cx, Driver::poll_next_message)
    }
}

/// The sending half of a split [`WebSocket`](crate::WebSocket): a cloneable `Sink` of messages.
pub struct WsWriter<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for WsWriter<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsWriter<S> {
    /// Sends a message and flushes it; see [`WebSocket::send`](crate::WebSocket::send).
    ///
    /// # Errors
    /// As [`WebSocket::send`](crate::WebSocket::send).
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Queues a message without flushing.
    ///
    /// # Errors
    /// As [`WebSocket::send`](crate::WebSocket::send).
    pub async fn feed(&self, message: impl Into<Message>) -> Result<(), Error> {
        let message = message.into();
        std::future::poll_fn(|cx| self.shared.poll(cx, Driver::poll_ready)).await?;
        self.shared.lock().start_send(message)
    }

    /// Sends a message framed once for many connections and flushes it; see
    /// [`WebSocket::send_prepared`](crate::WebSocket::send_prepared).
    ///
    /// # Errors
    /// As [`WebSocket::send`](crate::WebSocket::send).
    pub async fn send_prepared(&self, message: &PreparedMessage) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.shared.poll(cx, Driver::poll_ready)).await?;
        self.shared.lock().start_send_prepared(message)?;
        self.flush().await
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// When the transport fails.
    pub async fn flush(&self) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.shared.poll(cx, Driver::poll_flush)).await
    }

    /// Sends a Close frame and waits until the connection is closed (the reader must be polled
    /// for the peer's answer to be read; otherwise this ends at the close timeout).
    ///
    /// # Errors
    /// As [`WebSocket::close`](crate::WebSocket::close).
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let frame = CloseFrame::new(code, reason)?;
        self.shared.lock().start_close(Some(frame))?;
        std::future::poll_fn(|cx| self.shared.poll(cx, |d, cx| d.poll_closed(cx, false))).await
    }

    /// Whether both halves belong to the same connection.
    pub fn is_pair_of(&self, reader: &WsReader<S>) -> bool {
        Arc::ptr_eq(&self.shared, &reader.shared)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WsWriter<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.poll(cx, Driver::poll_ready)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        self.shared.lock().start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.poll(cx, Driver::poll_flush)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared
            .lock()
            .start_close(Some(CloseFrame::new(CloseCode::NORMAL, "")?))?;
        self.shared.poll(cx, |d, cx| d.poll_closed(cx, false))
    }
}

impl<S> std::fmt::Debug for WsReader<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsReader").finish_non_exhaustive()
    }
}

impl<S> std::fmt::Debug for WsWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsWriter").finish_non_exhaustive()
    }
}

//! Graceful shutdown of a server's connections: [`Shutdown`] and its [`DrainReport`].

use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// The default grace period of a [`Shutdown`].
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// A drain handle for the connections of a server: trigger it to close them all gracefully.
/// Clones share the same signal.
///
/// A [`Shutdown`] given to a [`ServerBuilder`](crate::ServerBuilder) is watched by every
/// WebSocket the builder accepts (through [`accept`](crate::ServerBuilder::accept),
/// [`accept_tcp`](crate::ServerBuilder::accept_tcp), or the hyper and axum upgrades). When it is
/// [triggered](Shutdown::trigger), each connection, as its task polls it:
///
/// 1. refuses new messages (`send` fails with [`Kind::AlreadyClosed`](crate::Kind::AlreadyClosed)),
/// 2. writes out everything that was queued before the signal, at the pace the peer reads it,
/// 3. then sends a Close frame with 1001 (going away) and waits for the peer's Close,
/// 4. and is cut (its transport dropped, its `next` ending with an error) if all this is not
///    done by the end of the grace period, counted from the signal.
///
/// Messages the peer sends meanwhile are still delivered to the application. The
/// [`DrainReport`] says how many connections drained and how many were cut, with what they
/// still had unsent: only a peer that did not read its queue within the grace period loses
/// messages. The builder also stops accepting: a handshake that starts after the signal in
/// [`accept`](crate::ServerBuilder::accept) or [`accept_tcp`](crate::ServerBuilder::accept_tcp)
/// is answered 503 (hyper and axum upgrades are the application's to refuse).
///
/// The task that owns a connection must keep polling it (`next`, or the reader half of a
/// split) until it ends, as it does anyway: dropping a connection early counts what it had
/// unsent as dropped.
///
/// ```no_run
/// # async fn run(stop: impl std::future::Future<Output = ()>) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// // `stop`: SIGINT or SIGTERM (tokio::signal), or any other reason to stop.
/// tokio::pin!(stop);
/// let shutdown = sockeye::Shutdown::new().grace_period(Duration::from_secs(5));
/// let server = sockeye::ServerBuilder::new().shutdown(&shutdown);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// loop {
///     tokio::select! {
///         accepted = listener.accept() => {
///             let (tcp, _) = accepted?;
///             let server = server.clone();
///             tokio::spawn(async move {
///                 let Ok(mut ws) = server.accept_tcp(tcp).await else { return };
///                 while let Some(Ok(message)) = ws.next().await {
///                     if message.is_data() {
///                         // Fails once the shutdown began; keep reading until the end.
///                         let _ = ws.send(message).await;
///                     }
///                 }
///             });
///         }
///         () = &mut stop => break,
///     }
/// }
/// shutdown.trigger();
/// let report = shutdown.drained().await;
/// eprintln!("{report}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    grace: Duration,
    triggered: AtomicBool,
    /// The end of the grace period, set by the trigger.
    deadline: OnceLock<Instant>,
    registry: Mutex<Registry>,
    /// Woken when the last connection ends after the trigger.
    drained: Notify,
}

#[derive(Default)]
struct Registry {
    /// One slot per live connection; `None` where a connection ended.
    slots: Vec<Option<Arc<Slot>>>,
    free: Vec<usize>,
    live: usize,
    report: DrainReport,
}

/// Where a connection's task leaves its waker for the trigger.
#[derive(Default)]
struct Slot {
    waker: Mutex<Option<Waker>>,
}

impl Slot {
    /// Leaves the waker of `cx` for the trigger (unless the one left already wakes that task).
    fn register(&self, cx: &Context<'_>) {
        let mut waker = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
        match &*waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *waker = Some(cx.waker().clone()),
        }
    }
}

/// What a shutdown did: connections drained or cut, and what the cut ones had not sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Connections that were open at the signal (or opened after it) and have ended.
    pub connections: usize,
    /// Of those, the ones that ended with nothing unsent.
    pub drained: usize,
    /// Of those, the ones cut with output unsent: at the end of the grace period, or dropped
    /// by their application before they finished.
    pub cut: usize,
    /// Bytes (frames as they would have been written) that the cut connections had not handed
    /// to their transport.
    pub dropped_bytes: u64,
    /// Messages the cut connections had not completely handed to their transport.
    pub dropped_messages: u64,
    /// Connections still open when the report was taken.
    pub remaining: usize,
}

impl fmt::Display for DrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connection(s) closed: {} drained, {} cut with {} message(s) ({} bytes) unsent",
            self.connections, self.drained, self.cut, self.dropped_messages, self.dropped_bytes
        )?;
        if self.remaining > 0 {
            write!(f, "; {} still open", self.remaining)?;
        }
        Ok(())
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A shutdown handle, not triggered, with the [`DEFAULT_GRACE_PERIOD`].
    #[must_use]
    pub fn new() -> Self {
        Self::with_grace(DEFAULT_GRACE_PERIOD)
    }

    /// How long, from the signal, each connection has to write out its queue and finish the
    /// close handshake before it is cut. Returns a new handle (not a clone of this one): set it
    /// before giving the handle to a builder.
    #[must_use]
    pub fn grace_period(self, grace: Duration) -> Self {
        Self::with_grace(grace)
    }

    fn with_grace(grace: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                grace,
                triggered: AtomicBool::new(false),
                deadline: OnceLock::new(),
                registry: Mutex::new(Registry::default()),
                drained: Notify::new(),
            }),
        }
    }

    /// The grace period.
    #[must_use]
    pub fn grace(&self) -> Duration {
        self.inner.grace
    }

    /// Starts the shutdown: every connection watching this handle drains and closes with 1001.
    /// Idempotent; the grace period counts from the first call. Must be called within a tokio
    /// runtime (the grace period is on its clock).
    pub fn trigger(&self) {
        let now = Instant::now();
        let _ = self
            .inner
            .deadline
            .get_or_init(|| now.checked_add(self.inner.grace).unwrap_or(now));
        if self.inner.triggered.swap(true, Ordering::AcqRel) {
            return;
        }
        let slots: Vec<Arc<Slot>> = self.inner.lock().slots.iter().flatten().cloned().collect();
        tracing::debug!(connections = slots.len(), "shutdown: draining");
        for slot in slots {
            let waker = slot
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        self.inner.drained.notify_waiters();
    }

    /// Whether [`trigger`](Self::trigger) was called.
    #[must_use]
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::Acquire)
    }

    /// Connections watching this handle that are still open.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.inner.lock().live
    }

    /// The report so far.
    #[must_use]
    pub fn report(&self) -> DrainReport {
        let registry = self.inner.lock();
        DrainReport {
            remaining: registry.live,
            ..registry.report
        }
    }

    /// Waits until the shutdown was triggered and every connection has ended, and returns the
    /// report. Connections end by the grace period if their tasks keep polling them; bound this
    /// wait with a timeout if some task may not.
    pub async fn drained(&self) -> DrainReport {
        loop {
            let notified = self.inner.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_triggered() && self.connections() == 0 {
                return self.report();
            }
            notified.await;
        }
    }

    /// Resolves once [`trigger`](Self::trigger) was called (at once if it was already).
    pub async fn triggered(&self) {
        loop {
            let notified = self.inner.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }

    /// The end of the grace period, once triggered.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline.get().copied()
    }

    /// Registers a connection that its own task drains, rather than the WebSocket's driver: one
    /// whose queue lives outside the WebSocket (a relay's room member, say). The connection
    /// counts among [`connections`](Self::connections) and [`drained`](Self::drained) waits for
    /// it until the returned guard is dropped; what the task could not send is told with
    /// [`DrainGuard::dropped`] and goes into the [`DrainReport`].
    ///
    /// The WebSocket of such a connection must not watch the same handle (through
    /// [`ServerBuilder::shutdown`](crate::ServerBuilder::shutdown)): it would refuse the
    /// messages its task still has to write once the shutdown began.
    #[must_use]
    pub fn register(&self) -> DrainGuard {
        let (slot, index) = self.enroll();
        DrainGuard {
            inner: Arc::clone(&self.inner),
            slot,
            index,
            dropped_messages: 0,
            dropped_bytes: 0,
        }
    }

    /// Adds a connection to the registry.
    fn enroll(&self) -> (Arc<Slot>, usize) {
        let slot = Arc::new(Slot::default());
        let mut registry = self.inner.lock();
        registry.live += 1;
        let index = if let Some(index) = registry.free.pop() {
            if let Some(entry) = registry.slots.get_mut(index) {
                *entry = Some(Arc::clone(&slot));
            }
            index
        } else {
            registry.slots.push(Some(Arc::clone(&slot)));
            registry.slots.len() - 1
        };
        (slot, index)
    }

    /// Registers a new connection.
    pub(crate) fn watch(&self) -> Watch {
        let (slot, index) = self.enroll();
        Watch {
            inner: Arc::clone(&self.inner),
            slot,
            index,
            deadline: None,
            first_end: None,
            more_ends: Vec::new(),
            more_head: 0,
            written: 0,
            refused: false,
            cut: None,
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection in slot `index` ended, with `unsent` bytes and `messages` messages not
    /// handed to its transport; `counted`: it ended after the signal (it goes in the report).
    fn finish(&self, index: usize, counted: bool, unsent: u64, messages: u64) {
        let mut registry = self.lock();
        if let Some(entry) = registry.slots.get_mut(index) {
            *entry = None;
            registry.free.push(index);
        }
        registry.live = registry.live.saturating_sub(1);
        if counted || self.triggered.load(Ordering::Acquire) {
            let report = &mut registry.report;
            report.connections += 1;
            if unsent == 0 && messages == 0 {
                report.drained += 1;
            } else {
                report.cut += 1;
                report.dropped_bytes = report.dropped_bytes.saturating_add(unsent);
                report.dropped_messages = report.dropped_messages.saturating_add(messages);
                tracing::info!(
                    unsent_bytes = unsent,
                    unsent_messages = messages,
                    "shutdown: connection cut with output unsent"
                );
            }
        }
        let last = registry.live == 0;
        drop(registry);
        if last {
            self.drained.notify_waiters();
        }
    }
}

/// A connection drained by its own task, registered with [`Shutdown::register`]: counted by
/// the shutdown until dropped.
pub struct DrainGuard {
    inner: Arc<Inner>,
    slot: Arc<Slot>,
    index: usize,
    dropped_messages: u64,
    dropped_bytes: u64,
}

impl DrainGuard {
    /// Whether the shutdown was triggered; if not, the task of `cx` is woken when it is.
    pub fn poll_triggered(&self, cx: &Context<'_>) -> bool {
        self.slot.register(cx);
        // Checked after registering: a trigger in between wakes the waker just left.
        self.is_triggered()
    }

    /// Resolves once the shutdown was triggered. Cheap to poll often: it waits on this
    /// connection's own slot, not on a lock shared with the others.
    pub async fn triggered(&self) {
        std::future::poll_fn(|cx| {
            if self.poll_triggered(cx) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }

    /// Whether the shutdown was triggered.
    #[must_use]
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::Acquire)
    }

    /// The end of the grace period, once triggered.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline.get().copied()
    }

    /// The connection is ending with `messages` messages (`bytes` bytes) it could not send:
    /// they count as dropped in the report. Adds to what earlier calls told.
    pub fn dropped(&mut self, messages: u64, bytes: u64) {
        self.dropped_messages = self.dropped_messages.saturating_add(messages);
        self.dropped_bytes = self.dropped_bytes.saturating_add(bytes);
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        self.inner
            .finish(self.index, false, self.dropped_bytes, self.dropped_messages);
    }
}

impl fmt::Debug for DrainGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainGuard")
            .field("triggered", &self.is_triggered())
            .field("dropped_messages", &self.dropped_messages)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("grace", &self.inner.grace)
            .field("triggered", &self.is_triggered())
            .finish_non_exhaustive()
    }
}

/// One connection's view of a [`Shutdown`], kept by its driver.
pub(crate) struct Watch {
    inner: Arc<Inner>,
    slot: Arc<Slot>,
    index: usize,
    /// Armed when the drain starts: the end of the grace period.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Where the oldest data message queued and not yet written ends, as an offset in the
    /// output stream; with `more_ends`, counts the messages lost when the connection is cut.
    /// Kept apart so that a connection with one message in flight allocates nothing for this.
    first_end: Option<u64>,
    /// Where the later ones end: those from `more_head` on are not written yet. A `Vec` and an
    /// index rather than a ring: a write that takes the whole backlog (the common case) clears
    /// it at once, and pushing is a store.
    more_ends: Vec<u64>,
    more_head: usize,
    /// Bytes handed to the transport so far.
    written: u64,
    /// The drain started: no new message is taken.
    refused: bool,
    /// What was unsent when the grace period cut the connection.
    cut: Option<usize>,
}

impl Watch {
    /// Whether the drain has started; registers the task to be woken by the trigger if not.
    pub(crate) fn poll_triggered(&mut self, cx: &Context<'_>) -> bool {
        if self.refused {
            return true;
        }
        self.slot.register(cx);
        // Checked after registering: a trigger in between wakes the waker just left.
        if self.inner.triggered.load(Ordering::Acquire) {
            self.refused = true;
        }
        self.refused
    }

    /// Whether the drain has started, looking at the trigger without registering the task: the
    /// cheap check a driver makes on every call, registering (`poll_triggered`) only before
    /// it waits.
    #[inline]
    pub(crate) fn check_triggered(&mut self) -> bool {
        if !self.refused && self.inner.triggered.load(Ordering::Acquire) {
            self.refused = true;
        }
        self.refused
    }

    /// Whether the drain has started (without registering).
    pub(crate) fn draining(&self) -> bool {
        self.refused
    }

    /// Whether the grace period is over; arms its timer on `cx` if not.
    pub(crate) fn poll_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(&at) = self.inner.deadline.get() else {
            return false;
        };
        let sleep = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        sleep.as_mut().poll(cx).is_ready()
    }

    /// A data message was queued; its last byte is `backlog` bytes past what was written.
    #[inline]
    pub(crate) fn queued(&mut self, backlog: usize) {
        let end = self.written.saturating_add(backlog as u64);
        if self.first_end.is_none() {
            self.first_end = Some(end);
        } else {
            self.more_ends.push(end);
        }
    }

    /// `n` more bytes were handed to the transport.
    #[inline]
    pub(crate) fn wrote(&mut self, n: usize) {
        self.written = self.written.saturating_add(n as u64);
        if self.first_end.is_none_or(|end| end > self.written) {
            return;
        }
        // Everything queued is written: the usual end of a burst.
        if self.more_ends.last().is_none_or(|&end| end <= self.written) {
            self.first_end = None;
            self.more_ends.clear();
            self.more_head = 0;
            return;
        }
        // Some are left (the last one is not written yet, so the head stays in bounds).
        self.first_end = None;
        while let Some(&end) = self.more_ends.get(self.more_head) {
            self.more_head += 1;
            if end > self.written {
                self.first_end = Some(end);
                break;
            }
        }
    }

    /// The connection went idle: it keeps nothing for the message ends of its last burst
    /// (kept while it is busy, so that each burst does not allocate them again).
    pub(crate) fn release_idle(&mut self) {
        if self.first_end.is_none() && self.more_ends.capacity() > 0 {
            self.more_ends = Vec::new();
            self.more_head = 0;
        }
    }

    /// The grace period cut the connection with `unsent` bytes not handed to the transport.
    pub(crate) fn cut(&mut self, unsent: usize) {
        self.cut = Some(unsent);
    }

    /// The connection ended with `unsent` bytes not handed to the transport (or what it had
    /// when it was cut).
    pub(crate) fn finish(&self, unsent: usize) {
        let unsent = self.cut.unwrap_or(unsent);
        let later = self.more_ends.len().saturating_sub(self.more_head);
        let messages = u64::from(self.first_end.is_some()) + later as u64;
        self.inner
            .finish(self.index, self.refused, unsent as u64, messages);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_guards_count_in_the_report() {
        let shutdown = Shutdown::new();
        let drained = shutdown.register();
        let mut cut = shutdown.register();
        // Ended before the signal: not in the report.
        drop(shutdown.register());
        assert_eq!(shutdown.connections(), 2);
        assert!(!drained.is_triggered());
        assert_eq!(drained.deadline(), None);
        shutdown.trigger();
        drained.triggered().await;
        shutdown.triggered().await;
        assert!(cut.deadline().is_some());
        cut.dropped(3, 30);
        drop(drained);
        drop(cut);
        let report = tokio::time::timeout(Duration::from_secs(5), shutdown.drained())
            .await
            .unwrap();
        assert_eq!(
            (
                report.connections,
                report.drained,
                report.cut,
                report.dropped_messages,
                report.dropped_bytes,
                report.remaining
            ),
            (2, 1, 1, 3, 30, 0)
        );
    }

    /// The messages a connection loses when cut: those whose last byte was not written, after
    /// whole and partial writes.
    #[tokio::test]
    async fn message_ends_count_what_was_not_written() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let counts = [
            // (message ends as backlogs when queued, writes) -> messages lost
            (vec![10, 20, 30], vec![30], 0),
            (vec![10, 20, 30], vec![5], 3),
            (vec![10, 20, 30], vec![10], 2),
            (vec![10, 20, 30], vec![15, 10], 1),
            (vec![10, 20, 30], vec![29], 1),
            (vec![10], vec![], 1),
        ];
        let mut expected = 0;
        for (ends, writes, lost) in counts {
            let mut watch = shutdown.watch();
            for end in ends {
                watch.queued(end);
            }
            for n in writes {
                watch.wrote(n);
            }
            // A burst after a whole write starts from an empty list.
            let messages = u64::from(watch.first_end.is_some())
                + (watch.more_ends.len() - watch.more_head) as u64;
            assert_eq!(messages, lost);
            expected += lost;
            watch.finish(0);
        }
        let mut watch = shutdown.watch();
        watch.queued(4);
        watch.queued(8);
        watch.wrote(8);
        assert!(watch.first_end.is_none() && watch.more_ends.is_empty());
        watch.queued(4);
        watch.wrote(2);
        watch.finish(2);
        expected += 1;
        let report = tokio::time::timeout(Duration::from_secs(5), shutdown.drained())
            .await
            .unwrap();
        assert_eq!(report.dropped_messages, expected);
    }
}

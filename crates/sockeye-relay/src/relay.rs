//! The rooms on tokio: [`Relay`] runs the [`Rooms`] core behind a lock, one task per member.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use sockeye::{CloseCode, DrainGuard, Error, Message, PreparedMessage, Shutdown, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

use crate::backplane::{Backplane, Local, Overloaded};
use crate::core::{Fanout, MemberId, QueueLimits, Rooms};
use crate::history::{self, HistoryId, HistoryLimits, MemoryHistory, Replay, Since};

/// Messages a member writes between two flushes while it drains at shutdown: what was fed and
/// not flushed when the grace period ends counts as dropped, so this bounds the overcount.
const DRAIN_CHUNK: usize = 16;

/// Payload bytes a member writes between two flushes of a large batch: each flush tells that the
/// member reads, and its send timeout starts again.
const WRITE_CHUNK: usize = 64 << 10;

/// Rooms for WebSocket connections: every message a member sends reaches every other member of
/// its room, here and (with a [`Backplane`]) on the other nodes. Cheap to clone; every clone is
/// the same rooms.
///
/// Each member's connection is run by [`serve`](Self::serve), in its own task. A message is
/// framed once ([`PreparedMessage`]) and the same bytes are written to every member; a member
/// writes everything queued for it in one flush.
///
/// Backpressure is fair: a sender whose room cannot take more (another member has
/// [`pause_messages`](QueueLimits::pause_messages) queued) waits, its reads paused, until the
/// members have written their queues out. Only a member that holds its room back for longer
/// than [`QueueLimits::max_stall`], or whose queue a message that cannot wait (from another
/// node, from [`publish`](Self::publish)) would put over the hard bound, is closed with 1008. A
/// sender whose message the backplane cannot take is closed with 1013.
///
/// # Graceful shutdown
/// Given a [`Shutdown`] ([`RelayBuilder::shutdown`]), the relay drains its members when it is
/// triggered, as the [`ServerBuilder`](sockeye::ServerBuilder) drains plain connections: the
/// rooms take no more messages, each member writes out everything that was queued for it
/// before the signal, closes with 1001 (or the 1008 it was due) and waits for its peer's Close,
/// all within the grace period; a member still writing at its end is cut, and what it had not
/// written counts in the [`DrainReport`](sockeye::DrainReport) (and a log line names the
/// count). Messages members send after the signal are not delivered.
///
/// ```no_run
/// use std::time::Duration;
/// use axum::extract::{Path, State};
/// use axum::response::Response;
/// use axum::routing::get;
/// use sockeye::{ServerBuilder, Shutdown};
/// use sockeye::axum::WebSocketUpgrade;
/// use sockeye_relay::Relay;
///
/// async fn room(
///     Path(name): Path<String>,
///     State(relay): State<Relay>,
///     upgrade: WebSocketUpgrade,
/// ) -> Response {
///     // The relay drains room members itself: this builder does not watch the Shutdown.
///     upgrade.accept(&ServerBuilder::new(), move |ws| async move {
///         let _ = relay.serve(ws, &name).await;
///     })
/// }
///
/// # async fn run(
/// #     stop: impl std::future::Future<Output = ()> + Send + 'static,
/// # ) -> std::io::Result<()> {
/// // `stop`: SIGINT or SIGTERM (tokio::signal), or any other reason to stop.
/// let shutdown = Shutdown::new().grace_period(Duration::from_secs(5));
/// let relay = Relay::builder().shutdown(&shutdown).build();
/// let app = axum::Router::new()
///     .route("/rooms/{name}", get(room))
///     .with_state(relay);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// let trigger = shutdown.clone();
/// axum::serve(listener, app)
///     .with_graceful_shutdown(async move {
///         stop.await;
///         trigger.trigger();
///     })
///     .await?;
/// // Every member has written out its queue, or was cut at the end of the grace period.
/// let report = shutdown.drained().await;
/// eprintln!("{report}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Relay {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    backplane: Box<dyn Backplane>,
    send_timeout: Duration,
    shutdown: Option<Shutdown>,
}

struct State {
    rooms: Rooms,
    /// What waits for each member here.
    outboxes: HashMap<MemberId, Outbox>,
    /// The members that joined with a name: they are listed, and told of joins and leaves.
    names: HashMap<MemberId, String>,
    /// Where the senders waiting for room in a room wait: woken when one of its members has
    /// written its queue out or leaves.
    waiters: HashMap<Arc<str>, Arc<Notify>>,
    stats: RelayStats,
    /// History kept here (with a backplane that does not keep it itself).
    history: Option<MemoryHistory>,
    /// The members sent ids ([`Since`]): `Some` while their history is read, with the live
    /// messages that arrived meanwhile.
    ids: HashMap<MemberId, Option<Vec<Pending>>>,
}

/// A live message for a member whose history is being read: the message and its id notice.
type Pending = (HistoryId, (Arc<PreparedMessage>, Arc<PreparedMessage>));

/// What waits for one member, and its task's waker: 24 bytes while nothing does.
#[derive(Default)]
struct Outbox {
    /// Allocated when something is queued; the member's task takes it whole, so an idle
    /// member keeps none.
    pending: Option<Box<Batch>>,
    /// The member's task, waiting for something to write.
    waker: Option<Waker>,
}

impl Outbox {
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// What waits for a member, taken whole by its task to write: messages, then perhaps the close
/// it is due. Unbounded as a queue; the core bounds what is in it. The close is kept apart from
/// the messages, so it always reaches the member after what was queued before it.
#[derive(Default)]
struct Batch {
    messages: Vec<Arc<PreparedMessage>>,
    close: Option<(CloseCode, &'static str)>,
}

/// Counters of a [`Relay`], for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Messages framed for a room (each once, however many members it went to).
    pub prepared: u64,
    /// Messages handed to members.
    pub deliveries: u64,
    /// Members closed with 1008 as too slow.
    pub closed_slow: u64,
    /// Senders closed with 1013 because the backplane was full.
    pub closed_overloaded: u64,
    /// Times a sender waited because its room could not take more.
    pub paused: u64,
    /// Messages members had not written out when they were cut at the end of a shutdown's
    /// grace period.
    pub dropped_at_shutdown: u64,
}

/// Settings of a [`Relay`].
#[must_use]
pub struct RelayBuilder {
    limits: QueueLimits,
    send_timeout: Duration,
    backplane: Box<dyn Backplane>,
    shutdown: Option<Shutdown>,
    history: Option<HistoryLimits>,
}

impl std::fmt::Debug for RelayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBuilder")
            .field("limits", &self.limits)
            .field("send_timeout", &self.send_timeout)
            .field("shutdown", &self.shutdown)
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

impl Default for RelayBuilder {
    fn default() -> Self {
        Self {
            limits: QueueLimits::default(),
            send_timeout: Duration::from_secs(10),
            backplane: Box::new(Local),
            shutdown: None,
            history: None,
        }
    }
}

impl RelayBuilder {
    /// How much may wait for one member, when its room's senders wait, and how long it may
    /// hold them back before it is closed with 1008. Default: [`QueueLimits::default`].
    pub fn queue_limits(mut self, limits: QueueLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How long writing to a member may wait for it to read; past it the connection is dropped
    /// without a close frame (which could not be delivered either). Counted from the last
    /// message the member took, not for its whole queue: a member that reads, however slowly,
    /// is given what was queued for it and the 1008 it may be due. Default 10 s.
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Shares the rooms with other nodes through `backplane`. Default: [`Local`], this process
    /// only.
    pub fn backplane(mut self, backplane: impl Backplane) -> Self {
        self.backplane = Box::new(backplane);
        self
    }

    /// Graceful shutdown: when `shutdown` is triggered, every member writes out what was queued
    /// for it, closes with 1001 and ends within the grace period (see
    /// [`Relay`'s docs](Relay#graceful-shutdown)). Each member counts among the shutdown's
    /// connections, and in its [`DrainReport`](sockeye::DrainReport).
    ///
    /// Accept the members with a [`ServerBuilder`](sockeye::ServerBuilder) that does not watch
    /// the same `shutdown`: a WebSocket that watches it refuses, once it is triggered, the
    /// messages the relay still has to write to it.
    pub fn shutdown(mut self, shutdown: &Shutdown) -> Self {
        self.shutdown = Some(shutdown.clone());
        self
    }

    /// Keeps each room's last messages within `limits`, numbered, so that a member that
    /// comes back after a drop with the id of the last message it saw gets what it missed
    /// ([`JoinOptions::since`]; see [history](crate#history)). With the in-process backplane
    /// the relay keeps them in memory; a backplane that keeps history itself
    /// ([`Backplane::keep_history`]; `RedisBackplane` does, in a stream per room) numbers
    /// them for every node. Default: no history, no ids.
    pub fn history(mut self, limits: HistoryLimits) -> Self {
        self.history = Some(limits);
        self
    }

    /// The relay.
    pub fn build(self) -> Relay {
        let mut rooms = Rooms::new(self.limits);
        let history = self.history.and_then(|limits| {
            if self.backplane.keep_history(limits) {
                rooms.set_backplane_delivers(true);
                None
            } else {
                Some(MemoryHistory::new(limits, history::now_ms()))
            }
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rooms,
                outboxes: HashMap::new(),
                names: HashMap::new(),
                waiters: HashMap::new(),
                stats: RelayStats::default(),
                history,
                ids: HashMap::new(),
            }),
            backplane: self.backplane,
            send_timeout: self.send_timeout,
            shutdown: self.shutdown,
        });
        shared.backplane.attach(Inbound {
            shared: Arc::downgrade(&shared),
        });
        Relay { shared }
    }
}

impl Default for Relay {
    fn default() -> Self {
        Self::new()
    }
}

/// How a member joins: with a display name (presence), with ids and what it missed
/// (history).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct JoinOptions {
    name: Option<String>,
    since: Option<Since>,
}

impl JoinOptions {
    /// No name, no ids: as [`Relay::serve_until`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes part in presence with this display name (see
    /// [`Relay::serve_named_until`]).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Asks for ids: after each room message, the member is sent its id (the
    /// [format](crate#history)); with [`Since::After`], it first gets what its room carried
    /// after that id (with a relay that keeps [history](RelayBuilder::history)). Without
    /// history the member gets no ids, and a `since` id is answered with the truncated notice
    /// (what it missed is not known).
    pub fn since(mut self, since: Since) -> Self {
        self.since = Some(since);
        self
    }
}

/// What woke a member's task.
enum Event {
    /// The shutdown, or the caller's `stop`.
    Stop,
    /// Something to write (`None`: the relay let go of the member).
    Write(Option<Box<Batch>>),
    /// The room a held message waits for may take it now.
    Retry,
    /// Something read.
    Read(Option<Result<Message, Error>>),
}

/// A message a member sent that its room could not take yet, and what it waits for.
struct Held {
    message: Arc<PreparedMessage>,
    room_freed: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Relay {
    /// Rooms in this process, with the default limits.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A relay with other settings.
    pub fn builder() -> RelayBuilder {
        RelayBuilder::default()
    }

    /// Runs `ws` as a member of `room` until it closes: what it sends goes to the other
    /// members, what they send is written to it. Its reads pause while its room cannot take
    /// more; it is closed with 1008 when it cannot keep up, 1013 when the backplane cannot take
    /// what it sends, and drains and closes with 1001 when the relay's
    /// [`Shutdown`](RelayBuilder::shutdown) is triggered.
    ///
    /// Not an `async fn` (nor are the other `serve` methods): one keeps its arguments twice in
    /// its future, a second WebSocket's worth of memory for the member's whole life. A task
    /// spawned for a member should likewise hand it the WebSocket, not hold it and pass it on.
    ///
    /// # Errors
    /// How the connection ended, when that was not a clean close.
    pub fn serve<S>(&self, ws: WebSocket<S>, room: &str) -> impl Future<Output = Result<(), Error>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.serve_named_until(ws, room, None, std::future::pending())
    }

    /// As [`serve`](Self::serve), and drains the member when `stop` completes, as at a shutdown:
    /// it writes out what was queued for it (for at most the send timeout), then closes with
    /// 1001 (going away).
    ///
    /// # Errors
    /// As [`serve`](Self::serve).
    pub fn serve_until<S>(
        &self,
        ws: WebSocket<S>,
        room: &str,
        stop: impl Future<Output = ()>,
    ) -> impl Future<Output = Result<(), Error>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.serve_named_until(ws, room, None, stop)
    }

    /// As [`serve_until`](Self::serve_until), for a member with a display `name` (`None`: as
    /// `serve_until`). A named member takes part in presence: it is sent the room's named
    /// members when it joins, and the others are told of its joining and leaving, as small
    /// JSON text messages (the [presence format](crate#presence)). Members without a name
    /// receive none of them. The lists cover the members of this process, and those of the
    /// other nodes when the backplane shares presence ([`Backplane::remote_members`]).
    ///
    /// # Errors
    /// As [`serve`](Self::serve).
    pub fn serve_named_until<S>(
        &self,
        ws: WebSocket<S>,
        room: &str,
        name: Option<&str>,
        stop: impl Future<Output = ()>,
    ) -> impl Future<Output = Result<(), Error>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.run(ws, room, name, None, stop)
    }

    /// As [`serve_named_until`](Self::serve_named_until), with every way of joining:
    /// a name (presence) and ids with what the member missed (history), as `options` say.
    ///
    /// # Errors
    /// As [`serve`](Self::serve).
    pub fn serve_with<S>(
        &self,
        ws: WebSocket<S>,
        room: &str,
        options: &JoinOptions,
        stop: impl Future<Output = ()>,
    ) -> impl Future<Output = Result<(), Error>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.run(ws, room, options.name.as_deref(), options.since, stop)
    }

    /// The member's task, for every `serve` method.
    #[allow(clippy::manual_async_fn)]
    fn run<S>(
        &self,
        mut ws: WebSocket<S>,
        room: &str,
        name: Option<&str>,
        since: Option<Since>,
        stop: impl Future<Output = ()>,
    ) -> impl Future<Output = Result<(), Error>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // What the future holds while the member is idle is kept small: the WebSocket, the
        // relay, the member's guard and held message, and the one poll below. Writing,
        // draining and reading what a member missed are on the heap, only while they run.
        async move {
            let mut guard = self.shared.shutdown.as_ref().map(Shutdown::register);
            let mut stop = std::pin::pin!(stop);
            // Accepted while shutting down: no room, just the 1001.
            let stopped = guard.as_ref().is_some_and(DrainGuard::is_triggered)
                || tokio::select! {
                    biased;
                    () = stop.as_mut() => true,
                    () = std::future::ready(()) => false,
                };
            if stopped {
                return going_away(&mut ws).await;
            }
            let member = self.join(room, name, since.is_some());
            let _leave = Leave {
                relay: self,
                member,
            };
            if let Some(since) = since {
                // Live messages wait aside meanwhile (`State::ids`); its outbox is not read
                // until they and what it missed are in it, in order.
                let mut resume = Box::pin(self.resume(member, room, since));
                let stopped = std::future::poll_fn(|cx| {
                    if resume.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(false);
                    }
                    if stop.as_mut().poll(cx).is_ready()
                        || guard.as_ref().is_some_and(|guard| guard.poll_triggered(cx))
                    {
                        return Poll::Ready(true);
                    }
                    Poll::Pending
                })
                .await;
                drop(resume);
                if stopped {
                    // Stopped while its history was read: it is not waited for. The member
                    // is told that what it missed is not known, gets what arrived meanwhile,
                    // and closes as the others do.
                    self.shared.lock().resumed(
                        member,
                        Replay {
                            entries: Vec::new(),
                            truncated: true,
                        },
                    );
                    return Box::pin(self.drain(&mut ws, member, guard.as_mut())).await;
                }
            }
            // Boxed: a sender waits only while its room is full.
            let mut held: Option<Box<Held>> = None;
            loop {
                // In a block: the event is gone before the write's `await` (a value matched in
                // place would stay in the member's future, as large as a message).
                let batch = {
                    // What `select!` with `biased` would do, in one small closure rather than
                    // a future for each branch held in the member's future.
                    let event = std::future::poll_fn(|cx| {
                        if stop.as_mut().poll(cx).is_ready()
                            || guard.as_ref().is_some_and(|guard| guard.poll_triggered(cx))
                        {
                            return Poll::Ready(Event::Stop);
                        }
                        if let Poll::Ready(batch) = self.poll_outbox(member, cx) {
                            return Poll::Ready(Event::Write(batch));
                        }
                        match held.as_mut() {
                            Some(held) => held.room_freed.as_mut().poll(cx).map(|()| Event::Retry),
                            // Cancel-safe: a future dropped before it completes loses no
                            // message.
                            None => std::pin::pin!(ws.next()).poll(cx).map(Event::Read),
                        }
                    })
                    .await;
                    match event {
                        Event::Stop => break,
                        Event::Write(batch) => batch,
                        Event::Retry => {
                            if let Some(waiting) = held.take() {
                                held = self.publish_prepared(member, waiting.message).map(Box::new);
                            }
                            continue;
                        }
                        Event::Read(message) => match message {
                            Some(Ok(message)) if message.is_data() => {
                                // Framed before the lock is taken: once, for every member.
                                if let Some(prepared) = PreparedMessage::new(message) {
                                    held = self
                                        .publish_prepared(member, Arc::new(prepared))
                                        .map(Box::new);
                                }
                                continue;
                            }
                            Some(Ok(_)) => continue,
                            Some(Err(e)) => return Err(e),
                            None => return Ok(()),
                        },
                    }
                };
                let end = Box::pin(self.write(&mut ws, member, batch, guard.as_mut())).await;
                if let Some(end) = end {
                    return end;
                }
            }
            Box::pin(self.drain(&mut ws, member, guard.as_mut())).await
        }
    }

    /// Sends `message` to every member of `room`, here and on the other nodes. It does not
    /// wait: a member it would put over the hard bound of its queue is closed with 1008.
    ///
    /// # Errors
    /// [`Overloaded`] when the backplane cannot take it; nobody gets it then.
    pub fn publish(
        &self,
        room: &str,
        message: impl Into<Arc<PreparedMessage>>,
    ) -> Result<(), Overloaded> {
        let message = message.into();
        let mut state = self.shared.lock();
        self.shared.backplane.publish(room, message.message())?;
        if state.rooms.backplane_delivers() {
            // The backplane hands it back, numbered, to every node.
            return Ok(());
        }
        let fanout = state
            .rooms
            .deliver(room, message.payload().len(), Instant::now());
        state.stats.prepared += 1;
        let id = state.remember(room, message.message());
        state.carry_out_with_id(room, fanout, &message, id, &*self.shared.backplane);
        Ok(())
    }

    /// The counters.
    pub fn stats(&self) -> RelayStats {
        self.shared.lock().stats
    }

    /// The members of `room` in this process.
    pub fn members(&self, room: &str) -> usize {
        self.shared.lock().rooms.members(room).len()
    }

    /// Puts a member in `room`; `ids`: it asked for ids, and its live messages wait aside
    /// until [`resume`](Self::resume) has read what it missed.
    fn join(&self, room: &str, name: Option<&str>, ids: bool) -> MemberId {
        let mut state = self.shared.lock();
        let joined = state.rooms.join(room);
        if joined.first {
            self.shared.backplane.subscribe(room);
        }
        let member = joined.member;
        state.outboxes.insert(member, Outbox::default());
        if ids {
            // Live messages wait aside until its history is read (`resume`).
            state.ids.insert(member, Some(Vec::new()));
        }
        if let Some(name) = name.map(presence::clean_name) {
            state.names.insert(member, name.clone());
            // The newcomer gets the list (itself included), the others the news.
            let listed: Vec<(MemberId, &str)> = state
                .rooms
                .members(room)
                .iter()
                .filter_map(|m| state.names.get(m).map(|n| (*m, n.as_str())))
                .collect();
            let remote = self.shared.backplane.remote_members(room);
            self.shared.backplane.member_joined(room, member, &name);
            let list = presence::members(member, &name, &listed, &remote);
            state.notify(room, list, |m| m == member, &*self.shared.backplane);
            let news = presence::event("join", member, &name);
            let names = state
                .names
                .keys()
                .copied()
                .collect::<std::collections::HashSet<_>>();
            state.notify(
                room,
                news,
                |m| m != member && names.contains(&m),
                &*self.shared.backplane,
            );
        }
        member
    }

    /// Takes `member` out of its room (and its outbox, returned, with what was queued in it).
    fn leave(&self, member: MemberId) -> Option<Outbox> {
        let mut state = self.shared.lock();
        let outbox = state.outboxes.remove(&member);
        state.ids.remove(&member);
        let Some(room) = state.rooms.room_name(member) else {
            return outbox;
        };
        if let Some(emptied) = state.rooms.leave(member) {
            self.shared.backplane.unsubscribe(&emptied);
            state.waiters.remove(emptied.as_str());
        } else {
            // It may have been the one its room's senders waited for.
            state.wake(&room);
        }
        // A named member's leaving (closed as too slow included) is news to the others.
        if let Some(name) = state.names.remove(&member) {
            self.shared.backplane.member_left(&room, member, &name);
            let news = presence::event("leave", member, &name);
            let names = state
                .names
                .keys()
                .copied()
                .collect::<std::collections::HashSet<_>>();
            state.notify(&room, news, |m| names.contains(&m), &*self.shared.backplane);
        }
        outbox
    }

    /// What was queued for `member`, taken whole, once there is something; `None` once the
    /// relay let go of it.
    fn poll_outbox(&self, member: MemberId, cx: &Context<'_>) -> Poll<Option<Box<Batch>>> {
        let mut state = self.shared.lock();
        let Some(outbox) = state.outboxes.get_mut(&member) else {
            return Poll::Ready(None);
        };
        if let Some(batch) = outbox.pending.take() {
            return Poll::Ready(Some(batch));
        }
        match &outbox.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => outbox.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// A member that asked for ids joined: reads what it missed (`since`), then queues, in
    /// order, the history it gets and the live messages that arrived meanwhile (those not
    /// replayed already), each followed by its id, in its outbox.
    async fn resume(&self, member: MemberId, room: &str, since: Since) {
        let limits = self.shared.lock().rooms.limits();
        let (max, max_bytes) = (limits.messages(), limits.bytes());
        let replay = match since {
            Since::Now => Replay::default(),
            Since::After(since) => {
                let read = {
                    let mut state = self.shared.lock();
                    let delivers = state.rooms.backplane_delivers();
                    match state.history.as_mut() {
                        Some(history) => Ok(history.read(room, since, max, history::now_ms())),
                        None if delivers => {
                            Err(self.shared.backplane.history(room, since, max, max_bytes))
                        }
                        // No history kept: nothing to give, and it may have missed some.
                        None => Ok(Replay {
                            entries: Vec::new(),
                            truncated: true,
                        }),
                    }
                };
                match read {
                    Ok(replay) => replay,
                    Err(read) => read.await,
                }
            }
        };
        self.shared.lock().resumed(member, replay);
    }

    /// Publishes a member's message; `Some` when its room cannot take it yet: the sender keeps
    /// it and waits.
    fn publish_prepared(&self, member: MemberId, prepared: Arc<PreparedMessage>) -> Option<Held> {
        let backplane = &*self.shared.backplane;
        let mut state = self.shared.lock();
        let room = state.rooms.room_name(member)?;
        let mut taken = false;
        let fanout =
            state
                .rooms
                .publish(member, prepared.payload().len(), Instant::now(), |room| {
                    let result = backplane.publish_from(room, member, prepared.message());
                    taken = result.is_ok();
                    result
                });
        let Some(until) = fanout.wait else {
            state.stats.prepared += 1;
            let id = if taken {
                state.remember(&room, prepared.message())
            } else {
                None
            };
            state.carry_out_with_id(&room, fanout, &prepared, id, backplane);
            return None;
        };
        state.stats.paused += 1;
        let notify = Arc::clone(state.waiters.entry(Arc::clone(&room)).or_default());
        // Registered before the lock is let go: a member that drains meanwhile wakes it.
        let mut notified = Box::pin(notify.notified_owned());
        notified.as_mut().enable();
        state.carry_out(&room, fanout, &prepared, backplane);
        drop(state);
        let until = tokio::time::Instant::from_std(until);
        let room_freed = async move {
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(until) => {}
            }
        };
        Some(Held {
            message: prepared,
            room_freed: Box::pin(room_freed),
        })
    }

    /// Writes what the room queued for `member` (everything queued already, taken whole) in
    /// one flush, then the close it was due; `Some` when the member's connection is done.
    async fn write<S>(
        &self,
        ws: &mut WebSocket<S>,
        member: MemberId,
        batch: Option<Box<Batch>>,
        guard: Option<&mut DrainGuard>,
    ) -> Option<Result<(), Error>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(Batch {
            messages: batch,
            close,
        }) = batch.map(|batch| *batch)
        else {
            // The relay let go of this member without a word: only when it is dropped.
            return Some(going_away(ws).await);
        };
        let bytes = batch.iter().map(|m| m.payload().len()).sum::<usize>();
        let send_timeout = self.shared.send_timeout;
        // `Err(())`: the member took nothing for the send timeout. It bounds a wait for the
        // member to read, not the whole batch: a member that reads, however slowly, takes its
        // queue and the close it may be due (the core bounds how long it may hold its room
        // back, and how much may be queued for it). So a large batch is flushed every
        // `WRITE_CHUNK` bytes, each flush a sign that the member reads.
        let write = async {
            let idle = tokio::time::sleep(send_timeout);
            let mut idle = std::pin::pin!(idle);
            let mut unflushed = 0;
            for (i, message) in batch.iter().enumerate() {
                tokio::select! {
                    biased;
                    fed = ws.feed_prepared(message) => {
                        if let Err(e) = fed {
                            return Ok(Err(e));
                        }
                    }
                    () = idle.as_mut() => return Err(()),
                }
                unflushed += message.payload().len();
                if unflushed < WRITE_CHUNK || i + 1 == batch.len() {
                    continue;
                }
                tokio::select! {
                    biased;
                    flushed = ws.flush() => {
                        if let Err(e) = flushed {
                            return Ok(Err(e));
                        }
                    }
                    () = idle.as_mut() => return Err(()),
                }
                unflushed = 0;
                idle.as_mut()
                    .reset(tokio::time::Instant::now() + send_timeout);
            }
            tokio::select! {
                biased;
                flushed = ws.flush() => Ok(flushed),
                () = idle => Err(()),
            }
        };
        let written = tokio::select! {
            written = write => written,
            // A shutdown's grace period ended while the member was still writing.
            () = grace_over(guard.as_deref()) => {
                let rest = self.take_outbox(member);
                return Some(self.cut(member, batch.len() + rest.0, bytes + rest.1, guard));
            }
        };
        match written {
            Ok(Ok(())) => {}
            // The connection no longer takes messages: the peer's Close arrived while this
            // batch was written (or the transport failed). The reply to that Close is queued;
            // reading on until the end sends it, so the peer sees its close handshake finish.
            Ok(Err(e)) if e.is_misuse() => {
                let _ = tokio::time::timeout(self.shared.send_timeout, async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                return Some(Ok(()));
            }
            Ok(Err(e)) => return Some(Err(e)),
            // A member that does not read at all: give up on it without a close frame, which
            // could not be delivered either.
            Err(()) => {
                tracing::info!(member = member.get(), "member does not read; dropped");
                return Some(Ok(()));
            }
        }
        // Written out: the room may queue that much again for it.
        {
            let mut state = self.shared.lock();
            if state.rooms.sent(member, batch.len(), bytes)
                && let Some(room) = state.rooms.room_name(member)
            {
                state.wake(&room);
            }
        }
        let (code, reason) = close?;
        Some(ws.close(code, reason).await)
    }

    /// The member's part of a shutdown (or of its `stop`): it leaves its room (and, at a
    /// shutdown, the rooms take no more messages), writes out what was queued for it, and
    /// closes with 1001, all by the end of the grace period (or the send timeout).
    async fn drain<S>(
        &self,
        ws: &mut WebSocket<S>,
        member: MemberId,
        guard: Option<&mut DrainGuard>,
    ) -> Result<(), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // Out of the room under the lock: nothing more is queued for it, and everything
        // queued before is in its outbox, taken with it.
        let batch = self
            .leave(member)
            .and_then(|outbox| outbox.pending)
            .map(|batch| *batch)
            .unwrap_or_default();
        let queue = batch.messages;
        let bytes = queue.iter().map(|m| m.payload().len()).sum::<usize>();
        let close = batch
            .close
            .unwrap_or((CloseCode::GOING_AWAY, "server shutting down"));
        let deadline = guard
            .as_deref()
            .and_then(DrainGuard::deadline)
            .unwrap_or_else(|| tokio::time::Instant::now() + self.shared.send_timeout);
        // Messages written out for sure (flushed), and their bytes.
        let mut flushed = 0;
        let mut flushed_bytes = 0;
        let drained = tokio::time::timeout_at(deadline, async {
            for chunk in queue.chunks(DRAIN_CHUNK) {
                for message in chunk {
                    ws.feed_prepared(message).await?;
                }
                ws.flush().await?;
                flushed += chunk.len();
                flushed_bytes += chunk.iter().map(|m| m.payload().len()).sum::<usize>();
            }
            // The Close, then the peer's.
            ws.close(close.0, close.1).await
        })
        .await;
        match drained {
            Ok(result) => result,
            Err(_) => self.cut(member, queue.len() - flushed, bytes - flushed_bytes, guard),
        }
    }

    /// Takes what is left in `member`'s outbox: how many messages, and their payload bytes.
    fn take_outbox(&self, member: MemberId) -> (usize, usize) {
        let mut state = self.shared.lock();
        let Some(batch) = state
            .outboxes
            .get_mut(&member)
            .and_then(|outbox| outbox.pending.take())
        else {
            return (0, 0);
        };
        let queue = &batch.messages;
        (queue.len(), queue.iter().map(|m| m.payload().len()).sum())
    }

    /// The grace period is over with `messages` messages (`bytes` payload bytes) not written
    /// out to `member`: they are dropped, counted and logged.
    fn cut(
        &self,
        member: MemberId,
        messages: usize,
        bytes: usize,
        guard: Option<&mut DrainGuard>,
    ) -> Result<(), Error> {
        self.shared.lock().stats.dropped_at_shutdown += messages as u64;
        if let Some(guard) = guard {
            // The shutdown's report counts them, and its log line names the count.
            guard.dropped(messages as u64, bytes as u64);
        } else {
            tracing::info!(
                member = member.get(),
                dropped_messages = messages,
                "member cut with messages unsent"
            );
        }
        Err(Error::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "server shutting down: grace period over",
        )))
    }
}

/// The notice with a message's id, framed.
fn id_message(id: HistoryId) -> Option<Arc<PreparedMessage>> {
    PreparedMessage::new(Message::text(history::id_notice(id))).map(Arc::new)
}

/// Resolves at the end of the shutdown's grace period; never without one.
async fn grace_over(guard: Option<&DrainGuard>) {
    let Some(guard) = guard else {
        return std::future::pending().await;
    };
    guard.triggered().await;
    match guard.deadline() {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

async fn going_away<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) -> Result<(), Error> {
    ws.close(CloseCode::GOING_AWAY, "server shutting down")
        .await
}

/// Takes a member out of its room however its task ends (cancelled included).
struct Leave<'a> {
    relay: &'a Relay,
    member: MemberId,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let _ = self.relay.leave(self.member);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is whole before anything that could panic.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // Once the shutdown is triggered, the rooms take nothing more, whoever calls first.
        if !state.rooms.is_stopped() && self.shutdown.as_ref().is_some_and(Shutdown::is_triggered) {
            state.rooms.stop();
            for waiters in state.waiters.values() {
                waiters.notify_waiters();
            }
        }
        state
    }
}

impl State {
    /// Keeps `message` in `room`'s history here, when the relay keeps one; its id.
    fn remember(&mut self, room: &str, message: &Message) -> Option<HistoryId> {
        let history = self.history.as_mut()?;
        Some(history.append(room, message, history::now_ms()))
    }

    /// The end of [`Relay::resume`]: `replay` read, the member gets it and what waited, in
    /// its outbox after what was queued already (presence notices).
    fn resumed(&mut self, member: MemberId, replay: Replay) {
        let Some(waiting) = self.ids.get_mut(&member).and_then(Option::take) else {
            return;
        };
        let closed = self
            .outboxes
            .get(&member)
            .is_none_or(|outbox| outbox.pending.as_ref().is_some_and(|b| b.close.is_some()));
        if closed {
            // Closed meanwhile: out of its room, its Close in its outbox.
            return;
        }
        let (room, room_bytes) = self.rooms.room_left(member);
        let plan = history::plan(replay, waiting, room, room_bytes);
        // The skipped ones were counted in its queue when they arrived.
        let skipped_bytes: usize = plan
            .skipped
            .iter()
            .map(|(_, (m, n))| m.payload().len() + n.payload().len())
            .sum();
        if self
            .rooms
            .sent(member, plan.skipped.len() * 2, skipped_bytes)
            && let Some(room) = self.rooms.room_name(member)
        {
            self.wake(&room);
        }
        let mut replayed = Vec::new();
        if plan.truncated
            && let Some(notice) = PreparedMessage::new(Message::text(history::truncated_notice()))
        {
            replayed.push(Arc::new(notice));
        }
        for (id, message) in plan.replay {
            let Some(message) = PreparedMessage::new(message) else {
                continue;
            };
            replayed.push(Arc::new(message));
            if let Some(notice) = id_message(id) {
                replayed.push(notice);
            }
        }
        let bytes = replayed.iter().map(|m| m.payload().len()).sum();
        self.rooms
            .queued(member, replayed.len(), bytes, Instant::now());
        let Some(outbox) = self.outboxes.get_mut(&member) else {
            return;
        };
        if replayed.is_empty() && plan.live.is_empty() {
            return;
        }
        let pending = outbox.pending.get_or_insert_with(Box::default);
        pending.messages.append(&mut replayed);
        // The live ones were counted when they arrived.
        for (_, (message, notice)) in plan.live {
            pending.messages.push(message);
            pending.messages.push(notice);
        }
        outbox.wake();
    }

    /// Wakes the senders waiting for room in `room`.
    fn wake(&self, room: &str) {
        if let Some(waiters) = self.waiters.get(room) {
            waiters.notify_waiters();
        }
    }

    /// Sends a presence message to the members of `room` here that `to` picks, through their
    /// queues (a notice counts against a member's limits like any message).
    fn notify(
        &mut self,
        room: &str,
        text: String,
        to: impl Fn(MemberId) -> bool,
        backplane: &dyn Backplane,
    ) {
        let Some(prepared) = PreparedMessage::new(Message::text(text)) else {
            return;
        };
        let prepared = Arc::new(prepared);
        let fanout = self
            .rooms
            .deliver_to(room, prepared.payload().len(), Instant::now(), to);
        self.carry_out(room, fanout, &prepared, backplane);
    }

    /// Hands `message` to the members of `room` the core chose and closes the ones it closed.
    fn carry_out(
        &mut self,
        room: &str,
        fanout: Fanout,
        message: &Arc<PreparedMessage>,
        backplane: &dyn Backplane,
    ) {
        self.carry_out_with_id(room, fanout, message, None, backplane);
    }

    /// As [`carry_out`](Self::carry_out), for a message with an id in its room's history:
    /// the members that asked for ids get it, then its id.
    fn carry_out_with_id(
        &mut self,
        room: &str,
        fanout: Fanout,
        message: &Arc<PreparedMessage>,
        id: Option<HistoryId>,
        backplane: &dyn Backplane,
    ) {
        let mut notice: Option<Option<Arc<PreparedMessage>>> = None;
        for member in fanout.deliver {
            let Some(outbox) = self.outboxes.get_mut(&member) else {
                continue;
            };
            self.stats.deliveries += 1;
            let waiting = match (id, self.ids.get_mut(&member)) {
                (Some(id), Some(waiting)) => notice
                    .get_or_insert_with(|| id_message(id))
                    .clone()
                    .map(|notice| (id, notice, waiting)),
                _ => None,
            };
            let Some((id, notice, waiting)) = waiting else {
                let pending = outbox.pending.get_or_insert_with(Box::default);
                pending.messages.push(Arc::clone(message));
                outbox.wake();
                continue;
            };
            // The notice counts in the member's queue too.
            self.rooms
                .queued(member, 1, notice.payload().len(), Instant::now());
            if let Some(waiting) = waiting {
                waiting.push((id, (Arc::clone(message), notice)));
            } else {
                let pending = outbox.pending.get_or_insert_with(Box::default);
                pending.messages.push(Arc::clone(message));
                pending.messages.push(notice);
                outbox.wake();
            }
        }
        if !fanout.close.is_empty() {
            for close in fanout.close {
                if close.code == CloseCode::POLICY_VIOLATION {
                    tracing::info!(
                        member = close.member.get(),
                        reason = close.reason,
                        "member too slow; closing it"
                    );
                    self.stats.closed_slow += 1;
                } else {
                    self.stats.closed_overloaded += 1;
                }
                // Kept apart from the queue: it goes out after what was queued, whatever that
                // holds. The member is out of its room: nothing more is queued for it.
                if let Some(outbox) = self.outboxes.get_mut(&close.member) {
                    let pending = outbox.pending.get_or_insert_with(Box::default);
                    pending.close.get_or_insert((close.code, close.reason));
                    outbox.wake();
                }
            }
            // Those closed may have been what the room's senders waited for.
            self.wake(room);
        }
        if let Some(room) = fanout.emptied {
            backplane.unsubscribe(&room);
            self.waiters.remove(room.as_str());
        }
    }
}

/// The way into a [`Relay`] for its [`Backplane`]: messages from other nodes, and the rooms in
/// use here (to subscribe to again after a reconnection).
#[derive(Clone)]
pub struct Inbound {
    shared: Weak<Shared>,
}

impl Inbound {
    /// Hands a message from another node to every member of `room` here. It does not wait: a
    /// member it would put over the hard bound of its queue, or that has held its room back
    /// for too long, is closed with 1008.
    pub fn deliver(&self, room: &str, message: Message) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let Some(prepared) = PreparedMessage::new(message) else {
            return;
        };
        let prepared = Arc::new(prepared);
        let mut state = shared.lock();
        let fanout = state
            .rooms
            .deliver(room, prepared.payload().len(), Instant::now());
        state.stats.prepared += 1;
        // With history in memory, this process numbers what other nodes send too.
        let id = state.remember(room, prepared.message());
        state.carry_out_with_id(room, fanout, &prepared, id, &*shared.backplane);
    }

    /// Hands a message of `room`'s history, numbered `id` by the backplane that keeps it
    /// ([`Backplane::keep_history`]), to every member of `room` here but `except` (its
    /// sender, when it was sent from here); the members that asked for ids get the id after
    /// it (`None`: the backplane could not keep it, and there is no id). It does not wait, as
    /// [`deliver`](Self::deliver).
    pub fn deliver_stored(
        &self,
        room: &str,
        message: Message,
        id: Option<HistoryId>,
        except: Option<MemberId>,
    ) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let Some(prepared) = PreparedMessage::new(message) else {
            return;
        };
        let prepared = Arc::new(prepared);
        let mut state = shared.lock();
        if let Some(sender) = except
            && state.rooms.came_back(sender)
        {
            state.wake(room);
        }
        let fanout = state
            .rooms
            .deliver_to(room, prepared.payload().len(), Instant::now(), |m| {
                Some(m) != except
            });
        state.stats.prepared += 1;
        state.carry_out_with_id(room, fanout, &prepared, id, &*shared.backplane);
    }

    /// Waits while a member of `room` here holds its room back (is at the pause threshold),
    /// until it has written its queue out or is due to be closed: a backplane that awaits this
    /// before each [`deliver`](Self::deliver) paces what it reads from other nodes by the
    /// members here, as a local sender is paced, instead of overflowing their queues. Returns
    /// at once when nobody holds the room back.
    pub async fn ready(&self, room: &str) {
        loop {
            let Some(shared) = self.shared.upgrade() else {
                return;
            };
            let (mut notified, until) = {
                let mut state = shared.lock();
                let Some(until) = state.rooms.held_back(room, Instant::now()) else {
                    return;
                };
                let Some(name) = state
                    .rooms
                    .members(room)
                    .first()
                    .and_then(|m| state.rooms.room_name(*m))
                else {
                    return;
                };
                let notify = Arc::clone(state.waiters.entry(name).or_default());
                let mut notified = Box::pin(notify.notified_owned());
                notified.as_mut().enable();
                (notified, until)
            };
            drop(shared);
            tokio::select! {
                () = notified.as_mut() => {}
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(until)) => return,
            }
        }
    }

    /// The rooms with members here.
    pub fn rooms(&self) -> Vec<String> {
        self.shared.upgrade().map_or_else(Vec::new, |shared| {
            shared.lock().rooms.names().map(str::to_owned).collect()
        })
    }

    /// Tells the named members of `room` here that a member of another node (`id`, as
    /// [`RemoteMember::id`](crate::backplane::RemoteMember)) joined or left, as a presence
    /// `"join"` or `"leave"` message.
    pub fn presence(&self, room: &str, joined: bool, id: &str, name: &str) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let event = if joined { "join" } else { "leave" };
        let text = serde_json::json!({
            "sockeye": "presence",
            "event": event,
            "member": { "id": id, "name": name },
        })
        .to_string();
        let mut state = shared.lock();
        let names = state
            .names
            .keys()
            .copied()
            .collect::<std::collections::HashSet<_>>();
        state.notify(room, text, |m| names.contains(&m), &*shared.backplane);
    }

    /// Whether `room` has members here.
    pub fn has(&self, room: &str) -> bool {
        self.shared
            .upgrade()
            .is_some_and(|shared| shared.lock().rooms.has(room))
    }
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound").finish_non_exhaustive()
    }
}

/// The presence messages: small JSON texts.
mod presence {
    use crate::backplane::RemoteMember;
    use crate::core::MemberId;

    /// The longest display name kept, in characters.
    const MAX_NAME: usize = 32;

    /// A display name as it is shown: control characters dropped, at most 32 characters,
    /// "guest" when nothing is left.
    pub(super) fn clean_name(name: &str) -> String {
        let name: String = name
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_NAME)
            .collect();
        let name = name.trim();
        if name.is_empty() {
            "guest".to_owned()
        } else {
            name.to_owned()
        }
    }

    fn member(id: MemberId, name: &str) -> serde_json::Value {
        serde_json::json!({ "id": id.get(), "name": name })
    }

    /// The list sent to a member that joins.
    pub(super) fn members(
        you: MemberId,
        name: &str,
        members: &[(MemberId, &str)],
        remote: &[RemoteMember],
    ) -> String {
        let remote = remote
            .iter()
            .map(|m| serde_json::json!({ "id": m.id, "name": m.name }));
        serde_json::json!({
            "sockeye": "presence",
            "event": "members",
            "you": member(you, name),
            "members": members.iter().map(|(id, name)| member(*id, name)).chain(remote).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// A join or a leave.
    pub(super) fn event(event: &str, id: MemberId, name: &str) -> String {
        serde_json::json!({ "sockeye": "presence", "event": event, "member": member(id, name) })
            .to_string()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn names_are_cleaned_and_messages_are_json() {
            assert_eq!(clean_name(" ann\u{7}\n "), "ann");
            assert_eq!(clean_name("\u{1b}"), "guest");
            assert_eq!(clean_name(&"x".repeat(40)).len(), MAX_NAME);
            let text = event("join", MemberId::for_tests(3), "a\"b");
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["member"]["name"], "a\"b");
            assert_eq!(value["member"]["id"], 3);
        }
    }
}

#[cfg(test)]
mod sizes {
    use super::*;

    /// What a room member's task holds for its whole life: the member's future, as large as
    /// its largest state (writing and draining are boxed, at their own sizes, while they run).
    /// Run with `--nocapture` to print them.
    #[tokio::test]
    async fn member_future_sizes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = WebSocket::from_raw(
            tcp,
            sockeye::Role::Server,
            &sockeye::WebSocketConfig::default(),
            bytes::BytesMut::new(),
        );
        let relay = Relay::builder().shutdown(&Shutdown::new()).build();
        let member = relay.join("r", None, false);
        let mut guard = Some(Shutdown::new().register());
        let write = size_of_val(&relay.write(&mut ws, member, None, guard.as_mut()));
        let drain = size_of_val(&relay.drain(&mut ws, member, guard.as_mut()));
        let websocket = size_of::<WebSocket<tokio::net::TcpStream>>();
        let serve = size_of_val(&relay.serve(ws, "r"));
        println!(
            "member future {serve} (the WebSocket {websocket}); boxed while they run: write {write}, drain {drain}; outbox {}, guard {}, held {}",
            size_of::<Outbox>(),
            size_of::<DrainGuard>(),
            size_of::<Option<Box<Held>>>(),
        );

        // The WebSocket once, and little more: not a second copy of it, nor the write's or
        // the drain's state.
        assert!(serve < websocket + 400, "member future {serve} bytes");
    }
}

//! The rooms on tokio: [`Relay`] runs the [`Rooms`] core behind a lock, one task per member.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use sockeye::{CloseCode, Error, Message, PreparedMessage, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::backplane::{Backplane, Local, Overloaded};
use crate::core::{Fanout, MemberId, QueueLimits, Rooms};

/// Messages a member writes in one go at most (then it reads again).
const MAX_BATCH: usize = 64;

/// Rooms for WebSocket connections: every message a member sends reaches every other member of
/// its room, here and (with a [`Backplane`]) on the other nodes. Cheap to clone; every clone is
/// the same rooms.
///
/// Each member's connection is run by [`serve`](Self::serve), in its own task. A message is
/// framed once ([`PreparedMessage`]) and the same bytes are written to every member. A member
/// that cannot keep up is closed with 1008 once its queue ([`QueueLimits`]) is full; a sender
/// whose message the backplane cannot take is closed with 1013.
#[derive(Clone)]
pub struct Relay {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    backplane: Box<dyn Backplane>,
    send_timeout: Duration,
}

struct State {
    rooms: Rooms,
    outboxes: HashMap<MemberId, mpsc::UnboundedSender<Outgoing>>,
    /// The members that joined with a name: they are listed, and told of joins and leaves.
    names: HashMap<MemberId, String>,
    stats: RelayStats,
}

/// What a member's task is told to do. The queue is unbounded as a channel; the core bounds
/// what is in it.
enum Outgoing {
    Message(Arc<PreparedMessage>),
    Close(CloseCode, &'static str),
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
}

/// Settings of a [`Relay`].
#[must_use]
pub struct RelayBuilder {
    limits: QueueLimits,
    send_timeout: Duration,
    backplane: Box<dyn Backplane>,
}

impl std::fmt::Debug for RelayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBuilder")
            .field("limits", &self.limits)
            .field("send_timeout", &self.send_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for RelayBuilder {
    fn default() -> Self {
        Self {
            limits: QueueLimits::default(),
            send_timeout: Duration::from_secs(10),
            backplane: Box::new(Local),
        }
    }
}

impl RelayBuilder {
    /// How much may wait for one member before it is closed with 1008. Default:
    /// [`QueueLimits::default`].
    pub fn queue_limits(mut self, limits: QueueLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How long writing to a member may wait for it to read; past it the connection is dropped
    /// without a close frame (which could not be delivered either). Default 10 s.
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

    /// The relay.
    pub fn build(self) -> Relay {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rooms: Rooms::new(self.limits),
                outboxes: HashMap::new(),
                names: HashMap::new(),
                stats: RelayStats::default(),
            }),
            backplane: self.backplane,
            send_timeout: self.send_timeout,
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
    /// members, what they send is written to it. Closes it with 1008 when it cannot keep up,
    /// 1013 when the backplane cannot take what it sends.
    ///
    /// # Errors
    /// How the connection ended, when that was not a clean close.
    pub async fn serve<S>(&self, ws: WebSocket<S>, room: &str) -> Result<(), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.serve_until(ws, room, std::future::pending()).await
    }

    /// As [`serve`](Self::serve), and closes the member with 1001 (going away) when `stop`
    /// completes: for a server shutting down.
    ///
    /// # Errors
    /// As [`serve`](Self::serve).
    pub async fn serve_until<S>(
        &self,
        ws: WebSocket<S>,
        room: &str,
        stop: impl Future<Output = ()>,
    ) -> Result<(), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.serve_named_until(ws, room, None, stop).await
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
    pub async fn serve_named_until<S>(
        &self,
        mut ws: WebSocket<S>,
        room: &str,
        name: Option<&str>,
        stop: impl Future<Output = ()>,
    ) -> Result<(), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut stop = std::pin::pin!(stop);
        // Accepted while shutting down: no room, just the 1001.
        let stopped = tokio::select! {
            biased;
            () = stop.as_mut() => true,
            () = std::future::ready(()) => false,
        };
        if stopped {
            return going_away(&mut ws).await;
        }
        let (member, mut outbox) = self.join(room, name);
        let _leave = Leave {
            relay: self,
            member,
        };
        loop {
            tokio::select! {
                message = ws.next() => match message {
                    Some(Ok(message)) if message.is_data() => self.publish_from(member, message),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                },
                first = outbox.recv() => {
                    if let Some(end) = self.write(&mut ws, member, first, &mut outbox).await {
                        return end;
                    }
                }
                () = &mut stop => return going_away(&mut ws).await,
            }
        }
    }

    /// Sends `message` to every member of `room`, here and on the other nodes.
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
        let fanout = state.rooms.deliver(room, message.payload().len());
        state.stats.prepared += 1;
        state.carry_out(fanout, &message, &*self.shared.backplane);
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

    fn join(
        &self,
        room: &str,
        name: Option<&str>,
    ) -> (MemberId, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.shared.lock();
        let joined = state.rooms.join(room);
        if joined.first {
            self.shared.backplane.subscribe(room);
        }
        let member = joined.member;
        state.outboxes.insert(member, tx);
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
        (member, rx)
    }

    fn leave(&self, member: MemberId) {
        let mut state = self.shared.lock();
        state.outboxes.remove(&member);
        let room = state.rooms.room_of(member).map(str::to_owned);
        if let Some(emptied) = state.rooms.leave(member) {
            self.shared.backplane.unsubscribe(&emptied);
        }
        // A named member's leaving (closed as too slow included) is news to the others.
        if let (Some(name), Some(room)) = (state.names.remove(&member), room) {
            self.shared.backplane.member_left(&room, member, &name);
            let news = presence::event("leave", member, &name);
            let names = state
                .names
                .keys()
                .copied()
                .collect::<std::collections::HashSet<_>>();
            state.notify(&room, news, |m| names.contains(&m), &*self.shared.backplane);
        }
    }

    fn publish_from(&self, member: MemberId, message: Message) {
        // Framed before the lock is taken: once, for every member.
        let Some(prepared) = PreparedMessage::new(message) else {
            return;
        };
        let prepared = Arc::new(prepared);
        let backplane = &*self.shared.backplane;
        let mut state = self.shared.lock();
        let fanout = state
            .rooms
            .publish(member, prepared.payload().len(), |room| {
                backplane.publish(room, prepared.message())
            });
        state.stats.prepared += 1;
        state.carry_out(fanout, &prepared, backplane);
    }

    /// Writes what the room queued for `member`, `first` and what else is queued already, in
    /// one batch; `Some` when the member's connection is done.
    async fn write<S>(
        &self,
        ws: &mut WebSocket<S>,
        member: MemberId,
        first: Option<Outgoing>,
        outbox: &mut mpsc::UnboundedReceiver<Outgoing>,
    ) -> Option<Result<(), Error>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut close = None;
        let mut next = first;
        loop {
            match next {
                Some(Outgoing::Message(message)) => {
                    bytes += message.payload().len();
                    batch.push(message);
                }
                Some(Outgoing::Close(code, reason)) => {
                    close = Some((code, reason));
                    break;
                }
                // The relay let go of this member without a word: only when it is dropped.
                None if batch.is_empty() => return Some(going_away(ws).await),
                None => break,
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            next = outbox.try_recv().ok();
            if next.is_none() {
                break;
            }
        }
        // Taken off the queue: the room may queue that much again.
        self.shared.lock().rooms.sent(member, batch.len(), bytes);
        let written = tokio::time::timeout(self.shared.send_timeout, async {
            for message in &batch {
                ws.feed_prepared(message).await?;
            }
            ws.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Some(Err(e)),
            // A member that does not read at all: give up on it without a close frame, which
            // could not be delivered either.
            Err(_) => {
                tracing::info!(member = member.get(), "member does not read; dropped");
                return Some(Ok(()));
            }
        }
        let (code, reason) = close?;
        Some(ws.close(code, reason).await)
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
        self.relay.leave(self.member);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is whole before anything that could panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
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
        let fanout = self.rooms.deliver_to(room, prepared.payload().len(), to);
        self.carry_out(fanout, &prepared, backplane);
    }

    /// Hands `message` to the members the core chose and closes the ones it closed.
    fn carry_out(
        &mut self,
        fanout: Fanout,
        message: &Arc<PreparedMessage>,
        backplane: &dyn Backplane,
    ) {
        for member in fanout.deliver {
            if let Some(outbox) = self.outboxes.get(&member) {
                let _ = outbox.send(Outgoing::Message(Arc::clone(message)));
                self.stats.deliveries += 1;
            }
        }
        for close in fanout.close {
            if close.code == CloseCode::POLICY_VIOLATION {
                tracing::info!(member = close.member.get(), "member too slow; closing it");
                self.stats.closed_slow += 1;
            } else {
                self.stats.closed_overloaded += 1;
            }
            if let Some(outbox) = self.outboxes.remove(&close.member) {
                let _ = outbox.send(Outgoing::Close(close.code, close.reason));
            }
        }
        if let Some(room) = fanout.emptied {
            backplane.unsubscribe(&room);
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
    /// Hands a message from another node to every member of `room` here.
    pub fn deliver(&self, room: &str, message: Message) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let Some(prepared) = PreparedMessage::new(message) else {
            return;
        };
        let prepared = Arc::new(prepared);
        let mut state = shared.lock();
        let fanout = state.rooms.deliver(room, prepared.payload().len());
        state.stats.prepared += 1;
        state.carry_out(fanout, &prepared, &*shared.backplane);
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

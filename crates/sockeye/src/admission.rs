//! The server's budget of opening handshakes in progress, and who makes room when it is full.
//!
//! Each handshake holds a [`Ticket`] from admission to its end. When the budget (or the share of
//! one address) is full, the newcomer takes the place of the worst stalled handshake: one still
//! reading its request after [`STALL_GRACE`] whose average rate of request bytes is below the
//! minimum, the slowest first and, among equals, the oldest. That one is closed at once. Only
//! when no handshake is stalled is the newcomer answered 503.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a handshake may go before its rate of request bytes is judged.
pub(crate) const STALL_GRACE: Duration = Duration::from_secs(1);

/// The budget and the policy.
pub(crate) struct Admission {
    max: usize,
    per_address: usize,
    /// Bytes per second below which a handshake past [`STALL_GRACE`] is stalled.
    min_rate: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    len: usize,
    per_address: HashMap<IpAddr, usize>,
}

struct Entry {
    address: Option<IpAddr>,
    started: Instant,
    progress: Arc<Progress>,
}

/// What a handshake in progress shares with the table: its bytes so far, and the signal that
/// it was evicted.
#[derive(Default)]
pub(crate) struct Progress {
    bytes: AtomicUsize,
    /// The request head is complete: nothing left to stall on.
    read: AtomicBool,
    evicted: Notify,
}

impl Progress {
    pub(crate) fn received(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn request_read(&self) {
        self.read.store(true, Ordering::Relaxed);
    }

    /// Completes when the handshake was evicted to make room for another.
    pub(crate) async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

/// A place in the budget, given back on drop.
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    index: usize,
    progress: Arc<Progress>,
}

impl Ticket {
    pub(crate) fn progress(&self) -> &Progress {
        &self.progress
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut table = self.admission.lock();
        let ours = table
            .entries
            .get(self.index)
            .and_then(Option::as_ref)
            .is_some_and(|e| Arc::ptr_eq(&e.progress, &self.progress));
        if ours {
            table.remove(self.index);
        }
    }
}

impl Admission {
    pub(crate) fn new(max: usize, per_address: usize, min_rate: usize) -> Self {
        Self {
            max: max.max(1),
            per_address: per_address.clamp(1, max.max(1)),
            min_rate,
            table: Mutex::new(Table::default()),
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    pub(crate) fn per_address(&self) -> usize {
        self.per_address
    }

    pub(crate) fn min_rate(&self) -> usize {
        self.min_rate
    }

    pub(crate) fn in_progress(&self) -> usize {
        self.lock().len
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a handshake from `address` (`None`: unknown, counted only in the whole
    /// budget), evicting the worst stalled handshake when the budget or the address's share is
    /// full; `None` when it is full and nothing is stalled.
    pub(crate) fn admit(self: &Arc<Self>, address: Option<IpAddr>) -> Option<Ticket> {
        self.admit_at(address, Instant::now())
    }

    fn admit_at(self: &Arc<Self>, address: Option<IpAddr>, now: Instant) -> Option<Ticket> {
        let address = address.map(group);
        let mut table = self.lock();
        let address_full = address
            .is_some_and(|a| table.per_address.get(&a).copied().unwrap_or(0) >= self.per_address);
        if address_full {
            // The address makes room within its own share.
            let victim = table.worst_stalled(now, self.min_rate, address)?;
            table.evict(victim);
        } else if table.len >= self.max {
            let victim = table.worst_stalled(now, self.min_rate, None)?;
            table.evict(victim);
        }
        let progress = Arc::new(Progress::default());
        let entry = Entry {
            address,
            started: now,
            progress: Arc::clone(&progress),
        };
        let index = table.insert(entry);
        drop(table);
        Some(Ticket {
            admission: Arc::clone(self),
            index,
            progress,
        })
    }
}

impl Table {
    fn insert(&mut self, entry: Entry) -> usize {
        self.len += 1;
        if let Some(address) = entry.address {
            *self.per_address.entry(address).or_insert(0) += 1;
        }
        if let Some(index) = self.free.pop()
            && let Some(slot) = self.entries.get_mut(index)
        {
            *slot = Some(entry);
            return index;
        }
        self.entries.push(Some(entry));
        self.entries.len() - 1
    }

    fn remove(&mut self, index: usize) -> Option<Entry> {
        let entry = self.entries.get_mut(index)?.take()?;
        self.free.push(index);
        self.len -= 1;
        if let Some(address) = entry.address
            && let Some(count) = self.per_address.get_mut(&address)
        {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&address);
            }
        }
        Some(entry)
    }

    fn evict(&mut self, index: usize) {
        if let Some(entry) = self.remove(index) {
            // Stored as a permit if its task is not waiting yet.
            entry.progress.evicted.notify_one();
        }
    }

    /// The stalled handshake (of `address`, if given) with the lowest rate, the oldest among
    /// equals.
    fn worst_stalled(
        &self,
        now: Instant,
        min_rate: usize,
        address: Option<IpAddr>,
    ) -> Option<usize> {
        let mut worst: Option<(usize, u128, Instant)> = None;
        for (index, entry) in self.entries.iter().enumerate() {
            let Some(entry) = entry else { continue };
            if address.is_some() && entry.address != address {
                continue;
            }
            if entry.progress.read.load(Ordering::Relaxed) {
                continue;
            }
            let age = now.saturating_duration_since(entry.started);
            if age < STALL_GRACE {
                continue;
            }
            // Bytes per second, in integers: bytes * 1000 / milliseconds.
            let bytes = entry.progress.bytes.load(Ordering::Relaxed) as u128;
            let rate = bytes * 1000 / age.as_millis().max(1);
            if rate >= min_rate as u128 {
                continue;
            }
            let replace = worst
                .is_none_or(|(_, r, started)| rate < r || (rate == r && entry.started < started));
            if replace {
                worst = Some((index, rate, entry.started));
            }
        }
        worst.map(|(index, ..)| index)
    }
}

/// The unit of per-address accounting: an IPv4 address, or an IPv6 /64 (one subscriber's
/// usual allocation).
fn group(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                IpAddr::V4(v4)
            } else {
                IpAddr::V6((u128::from(v6) & !((1_u128 << 64) - 1)).into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::future::Future as _;

    /// Whether the ticket's handshake was told to leave.
    fn evicted(ticket: &Ticket) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let evicted = ticket.progress().evicted();
        let mut evicted = std::pin::pin!(evicted);
        evicted.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn a_full_budget_evicts_the_slowest_stalled_handshake_and_only_after_the_grace() {
        let admission = Arc::new(Admission::new(3, 3, 128));
        let start = Instant::now();
        let later = start + Duration::from_secs(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let silent = admission.admit_at(Some(a), start).unwrap();
        let trickle = admission.admit_at(Some(a), start).unwrap();
        let fast = admission.admit_at(Some(a), start).unwrap();
        // Young handshakes are not judged yet: the newcomer is refused.
        assert!(admission.admit_at(Some(a), start).is_none());
        trickle.progress().received(2);
        fast.progress().received(400);
        // The silent one goes first, then the one at 1 byte a second; never the fast one.
        let first = admission.admit_at(Some(a), later).unwrap();
        assert!(evicted(&silent));
        let second = admission.admit_at(Some(a), later).unwrap();
        assert!(evicted(&trickle));
        assert!(!evicted(&fast));
        assert_eq!(admission.in_progress(), 3);
        assert!(
            admission.admit_at(Some(a), later).is_none(),
            "the rest are young or fast"
        );
        drop((first, second, fast, silent, trickle));
        assert_eq!(admission.in_progress(), 0);
    }

    #[test]
    fn one_address_makes_room_within_its_own_share() {
        let admission = Arc::new(Admission::new(4, 2, 128));
        let start = Instant::now();
        let later = start + Duration::from_secs(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b2: IpAddr = "2001:db8::2".parse().unwrap();
        let _a1 = admission.admit_at(Some(a), start).unwrap();
        let _a2 = admission.admit_at(Some(a), start).unwrap();
        let b1 = admission.admit_at(Some(b), start).unwrap();
        b1.progress().received(10_000);
        // `a` is at its share: its third evicts one of its own, not `b`'s.
        let _a3 = admission.admit_at(Some(a), later).unwrap();
        assert_eq!(admission.in_progress(), 3);
        // The same /64 is one address.
        let _b2 = admission.admit_at(Some(b2), later).unwrap();
        assert!(
            admission.admit_at(Some(b2), later).is_none(),
            "b's share is full of fast handshakes"
        );
        drop(b1);
        assert!(admission.admit_at(Some(b2), later).is_some());
    }
}

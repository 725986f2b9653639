//! The receiver's release rules (§III-B, "connection management"): a
//! message arrives once or more, on any path, in any order; the session
//! hands each to the application once, in sequence order when the
//! semantics is ordered. An ordered lossy session skips a missing message
//! as soon as a message it holds would otherwise be late: its deadline has
//! come (deadlines do not decrease along a stream, so the missing one's has
//! passed too), or, without a deadline, it has waited the session's bound.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use crate::Semantics;

/// Sequence numbers this far below the highest seen count as handled by an
/// unordered session (bounds its memory of what it delivered).
const UNORDERED_MEMORY: u64 = 1 << 16;
/// An ordered lossy receiver never holds a message longer than this, whatever its deadline.
const MAX_HOLD: Duration = Duration::from_secs(2);

/// A message released to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    /// Session sequence number.
    pub seq: u64,
    /// The message.
    pub payload: Vec<u8>,
    /// Time it spent in the reorder buffer.
    pub waited: Duration,
}

struct Held {
    payload: Vec<u8>,
    arrived: Instant,
    /// Local time by which it must be released.
    due: Option<Instant>,
}

/// The receive buffer of one session.
pub struct Reorder {
    semantics: Semantics,
    bound: Duration,
    /// Ordered: the next sequence number to release. Unordered: all below it are handled.
    next: u64,
    held: BTreeMap<u64, Held>,
    /// Unordered: delivered sequence numbers at or above `next`.
    delivered: BTreeSet<u64>,
    ready: std::collections::VecDeque<Released>,
    /// An ordered lossy session skips nothing at or above this (the
    /// sender's oldest unacknowledged non-droppable message).
    hold_from: u64,
    /// The sender may send nothing below this: a hole there never fills.
    floor: u64,
    /// Messages skipped (ordered lossy), counted once each.
    pub skipped: u64,
    /// Copies of messages already handled.
    pub duplicates: u64,
}

impl Reorder {
    /// A buffer for `semantics`; `bound` is how long an ordered lossy
    /// session waits for a missing message when the next one carries no
    /// deadline.
    pub fn new(semantics: Semantics, bound: Duration) -> Self {
        Self {
            semantics,
            bound,
            next: 0,
            held: BTreeMap::new(),
            delivered: BTreeSet::new(),
            ready: Default::default(),
            hold_from: u64::MAX,
            floor: 0,
            skipped: 0,
            duplicates: 0,
        }
    }

    /// The next sequence number an ordered session releases.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Messages waiting for an earlier one.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Takes message `seq` that arrived at `now`, to be released by `due`
    /// (its deadline in local time, if it has one), carrying the sender's
    /// hold mark `hold_from` (nothing at or above it is skipped: a
    /// non-droppable message there may still come; `u64::MAX`: no mark).
    /// Returns false for a copy of one already handled (dropped).
    pub fn accept(&mut self, seq: u64, payload: Vec<u8>, due: Option<Instant>, hold_from: u64, now: Instant) -> bool {
        // The sender's mark only grows; a reordered datagram carries an older one.
        self.hold_from = if self.hold_from == u64::MAX { hold_from } else { self.hold_from.max(hold_from) };
        if seq < self.next || self.held.contains_key(&seq) || self.delivered.contains(&seq) {
            self.duplicates += 1;
            self.release(now);
            return false;
        }
        if !self.semantics.ordered() {
            self.delivered.insert(seq);
            self.ready.push_back(Released { seq, payload, waited: Duration::ZERO });
            let highest = *self.delivered.last().expect("just inserted");
            let floor = highest.saturating_sub(UNORDERED_MEMORY);
            while self.delivered.first().is_some_and(|s| *s <= self.next || *s < floor) {
                let s = self.delivered.pop_first().expect("non-empty");
                self.next = self.next.max(s + 1);
            }
            return true;
        }
        self.held.insert(seq, Held { payload, arrived: now, due });
        self.release(now);
        true
    }

    /// Takes the sender's floor: it sends nothing below `floor` any more, so
    /// an ordered lossy session skips a hole there at once (lossless ones
    /// never skip). Call before [`Reorder::accept`] of the same datagram.
    pub fn note_floor(&mut self, floor: u64) {
        self.floor = self.floor.max(floor);
    }

    /// Releases what may go at `now` (after time passed with no arrival).
    pub fn release(&mut self, now: Instant) {
        if !self.semantics.ordered() {
            return;
        }
        loop {
            if let Some(h) = self.held.remove(&self.next) {
                self.ready.push_back(Released { seq: self.next, payload: h.payload, waited: now.saturating_duration_since(h.arrived) });
                self.next += 1;
                continue;
            }
            let first = self.held.keys().next().copied();
            if !self.semantics.lossless() && self.next < self.floor {
                // Given up by the sender (or never sent): it will not come.
                let to = first.unwrap_or(u64::MAX).min(self.floor);
                self.skipped += to - self.next;
                self.next = to;
                continue;
            }
            let Some(first) = first else { return };
            let target = first.min(self.hold_from);
            if self.semantics.lossless() || target <= self.next || self.skip_at().is_some_and(|t| now < t) {
                return;
            }
            self.skipped += target - self.next;
            self.next = target;
        }
    }

    /// When the hole before the held messages is skipped: as soon as one
    /// of them would otherwise be kept past its due time (its deadline, or
    /// its arrival plus the bound).
    fn skip_at(&self) -> Option<Instant> {
        self.held.values().map(|h| h.due.unwrap_or(h.arrived + self.bound).min(h.arrived + self.bound.max(MAX_HOLD))).min()
    }

    /// When [`Reorder::release`] next has something to do (an ordered
    /// lossy session skipping a hole); `None`: only an arrival helps.
    pub fn next_wake(&self) -> Option<Instant> {
        if !self.semantics.ordered() || self.semantics.lossless() {
            return None;
        }
        self.skip_at()
    }

    /// The next released message, if any.
    pub fn pop(&mut self) -> Option<Released> {
        self.ready.pop_front()
    }

    /// Ends an ordered lossy stream whose sender wrote `total` messages:
    /// whatever is still missing is skipped and the rest released.
    pub fn finish(&mut self, total: u64, now: Instant) {
        if self.semantics.lossless() {
            return;
        }
        while self.next < total {
            if let Some(h) = self.held.remove(&self.next) {
                self.ready.push_back(Released { seq: self.next, payload: h.payload, waited: now.saturating_duration_since(h.arrived) });
            } else if self.semantics.ordered() {
                self.skipped += 1;
            }
            self.next += 1;
        }
    }

    /// Whether every one of `total` messages was handled (released or skipped).
    pub fn complete(&self, total: u64) -> bool {
        if self.semantics.ordered() {
            self.next >= total && self.ready.is_empty()
        } else {
            (self.next >= total || self.semantics == Semantics::UnorderedLossy) && self.ready.is_empty()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arrivals() -> impl Strategy<Value = Vec<u64>> {
        // 0..40 in any order, each once or twice.
        (prop::collection::vec(1usize..3, 40), Just(())).prop_flat_map(|(copies, _)| {
            let v: Vec<u64> = copies.iter().enumerate().flat_map(|(i, c)| std::iter::repeat_n(i as u64, *c)).collect();
            Just(v).prop_shuffle()
        })
    }

    proptest! {
        /// Ordered lossless: every message, once, in sequence order, whatever the arrival order and copies.
        #[test]
        fn ordered_lossless_releases_everything_in_order(order in arrivals()) {
            let now = Instant::now();
            let mut r = Reorder::new(Semantics::OrderedLossless, Duration::from_millis(1));
            for s in &order {
                r.accept(*s, vec![*s as u8], None, u64::MAX, now + Duration::from_secs(9));
            }
            let out: Vec<u64> = std::iter::from_fn(|| r.pop()).map(|m| m.seq).collect();
            prop_assert_eq!(out, (0..40).collect::<Vec<_>>());
            prop_assert!(r.complete(40));
        }

        /// Unordered: each message once, nothing held back.
        #[test]
        fn unordered_releases_each_message_once(order in arrivals()) {
            let now = Instant::now();
            let mut r = Reorder::new(Semantics::UnorderedLossless, Duration::from_millis(1));
            let mut out = Vec::new();
            for s in &order {
                r.accept(*s, vec![], None, u64::MAX, now);
                out.extend(std::iter::from_fn(|| r.pop()).map(|m| m.seq));
            }
            out.sort();
            prop_assert_eq!(out, (0..40).collect::<Vec<_>>());
        }

        /// Ordered lossy: never an inversion, and a hole is skipped only once its time has come.
        #[test]
        fn ordered_lossy_never_inverts(order in arrivals(), lost in prop::collection::btree_set(0u64..40, 0..10), step_ms in 0u64..30) {
            let t0 = Instant::now();
            let bound = Duration::from_millis(50);
            let mut r = Reorder::new(Semantics::OrderedLossy, bound);
            let mut out = Vec::new();
            for (i, s) in order.iter().filter(|s| !lost.contains(s)).enumerate() {
                let now = t0 + Duration::from_millis(i as u64 * step_ms);
                r.accept(*s, vec![], None, u64::MAX, now);
                out.extend(std::iter::from_fn(|| r.pop()).map(|m| (m.seq, m.waited)));
            }
            r.finish(40, t0 + Duration::from_secs(60));
            out.extend(std::iter::from_fn(|| r.pop()).map(|m| (m.seq, m.waited)));
            prop_assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "{:?}", out);
            // Released before finishing: waited at most the bound.
            prop_assert!(out.iter().all(|(_, w)| *w <= bound + Duration::from_millis(step_ms) || *w >= Duration::from_secs(1)));
            prop_assert_eq!(out.len() as u64 + r.skipped, 40);
        }
    }

    #[test]
    fn a_hole_waits_for_the_next_messages_deadline() {
        let t0 = Instant::now();
        let mut r = Reorder::new(Semantics::OrderedLossy, Duration::from_secs(5));
        r.accept(1, vec![1], Some(t0 + Duration::from_millis(100)), u64::MAX, t0);
        r.release(t0 + Duration::from_millis(99));
        assert!(r.pop().is_none(), "0 may still come");
        assert_eq!(r.next_wake(), Some(t0 + Duration::from_millis(100)));
        r.release(t0 + Duration::from_millis(100));
        assert_eq!(r.pop().map(|m| m.seq), Some(1));
        assert_eq!(r.skipped, 1);
        // A mark at 3: 3 (maybe non-droppable) is never skipped, 2 is.
        r.accept(4, vec![4], Some(t0), 3, t0 + Duration::from_millis(200));
        assert!(r.pop().is_none(), "4 waits for 3 whatever its deadline");
        assert_eq!(r.next_seq(), 3);
        r.accept(3, vec![3], None, 5, t0 + Duration::from_millis(300));
        assert_eq!(std::iter::from_fn(|| r.pop()).map(|m| m.seq).collect::<Vec<_>>(), [3, 4]);
        assert!(!r.accept(0, vec![0], None, u64::MAX, t0), "too late: a copy of a handled message");
    }
}

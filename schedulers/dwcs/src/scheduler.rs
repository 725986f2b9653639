//! A DWCS packet scheduler over many streams: per-stream FIFOs, the window
//! rules of [`Stream`], and the precedence of [`precedence`], with the next
//! head found in O(log n) through a binary heap (West et al. 2004 keep two
//! heaps; one heap ordered by precedence suffices here because precedence
//! orders by deadline first). [`NaiveDwcs`] makes the same decisions by a
//! linear scan and serves as the reference model in tests.
use std::{
    cmp::{Ordering, Reverse},
    collections::{BinaryHeap, VecDeque},
};

use crate::{precedence, Head, Miss, Stream, WindowConstraint};

/// A queued packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Absolute deadline, ns.
    pub deadline_ns: u64,
    /// Enqueue order across all streams (first come, first served).
    pub seq: u64,
    /// This packet may not be dropped.
    pub non_droppable: bool,
    /// Already missed its deadline and kept (sent late).
    pub late: bool,
}

/// What a scheduling decision did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The head of `stream` was sent; `on_time`: before its deadline.
    Sent {
        /// Stream index.
        stream: usize,
        /// Sent before its deadline.
        on_time: bool,
    },
    /// The head of `stream` missed its deadline and was dropped.
    Dropped {
        /// Stream index.
        stream: usize,
    },
}

/// Operations both implementations offer.
pub trait Scheduler {
    /// Adds a stream with window constraint `c`; returns its index.
    fn add_stream(&mut self, c: WindowConstraint, non_droppable: bool) -> usize;
    /// Queues a packet of `stream` with `deadline_ns`.
    fn enqueue(&mut self, stream: usize, deadline_ns: u64, non_droppable: bool);
    /// One transmission opportunity at `now_ns`: first handles every head
    /// that can no longer make its deadline (deadline ≤ now), then sends the
    /// head that precedes all others. Events are appended to `out`.
    fn decide(&mut self, now_ns: u64, out: &mut Vec<Event>);
    /// Current window state of `stream`.
    fn stream(&self, stream: usize) -> &Stream;
}

/// State shared by both implementations.
#[derive(Default)]
struct Queues {
    streams: Vec<Stream>,
    fifos: Vec<VecDeque<Packet>>,
    seq: u64,
}

impl Queues {
    fn head(&self, i: usize) -> Option<Head> {
        self.fifos[i].front().map(|p| Head { deadline_ns: p.deadline_ns, x: self.streams[i].x, y: self.streams[i].y, arrival: p.seq })
    }

    /// Applies a miss to the head of `i`: drop it, or keep it as late.
    fn miss(&mut self, i: usize, out: &mut Vec<Event>) {
        let p = *self.fifos[i].front().expect("head exists");
        let outcome = self.streams[i].on_missed();
        if outcome == Miss::Dropped && !p.non_droppable {
            self.fifos[i].pop_front();
            out.push(Event::Dropped { stream: i });
        } else {
            self.fifos[i].front_mut().expect("head exists").late = true;
        }
    }

    /// Sends the head of `i`.
    fn send(&mut self, i: usize, out: &mut Vec<Event>) {
        let p = self.fifos[i].pop_front().expect("head exists");
        if !p.late {
            self.streams[i].on_sent_in_time();
        }
        out.push(Event::Sent { stream: i, on_time: !p.late });
    }

    fn needs_miss(&self, i: usize, now: u64) -> bool {
        self.fifos[i].front().is_some_and(|p| !p.late && p.deadline_ns <= now)
    }

    fn add(&mut self, c: WindowConstraint, non_droppable: bool) -> usize {
        self.streams.push(Stream::new(c, non_droppable));
        self.fifos.push(VecDeque::new());
        self.streams.len() - 1
    }

    fn push(&mut self, stream: usize, deadline_ns: u64, non_droppable: bool) {
        let nd = non_droppable || self.streams[stream].non_droppable;
        self.fifos[stream].push_back(Packet { deadline_ns, seq: self.seq, non_droppable: nd, late: false });
        self.seq += 1;
    }
}

/// Reference model: finds misses and the next head by scanning every stream.
#[derive(Default)]
pub struct NaiveDwcs {
    q: Queues,
}

impl Scheduler for NaiveDwcs {
    fn add_stream(&mut self, c: WindowConstraint, non_droppable: bool) -> usize {
        self.q.add(c, non_droppable)
    }

    fn enqueue(&mut self, stream: usize, deadline_ns: u64, non_droppable: bool) {
        self.q.push(stream, deadline_ns, non_droppable);
    }

    fn decide(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        // Misses in precedence order, until no head is due.
        while let Some(i) = (0..self.q.streams.len())
            .filter(|&i| self.q.needs_miss(i, now_ns))
            .min_by(|&a, &b| precedence(&self.q.head(a).expect("due"), &self.q.head(b).expect("due")))
        {
            self.q.miss(i, out);
        }
        let best = (0..self.q.streams.len()).filter_map(|i| self.q.head(i).map(|h| (i, h))).min_by(|a, b| precedence(&a.1, &b.1)).map(|(i, _)| i);
        if let Some(i) = best {
            self.q.send(i, out);
        }
    }

    fn stream(&self, stream: usize) -> &Stream {
        &self.q.streams[stream]
    }
}

/// Heap key: a stream's head as it was when pushed.
#[derive(Clone, Copy, Debug)]
struct Key {
    head: Head,
    stream: usize,
    version: u64,
}

impl PartialEq for Key {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Key {
    fn cmp(&self, o: &Self) -> Ordering {
        precedence(&self.head, &o.head)
    }
}

/// DWCS with a precedence heap: O(log n) per decision in the number of
/// streams. Heap entries go stale when a stream's head or window changes;
/// each stream's version number tells the current entry from stale ones.
#[derive(Default)]
pub struct Dwcs {
    q: Queues,
    heap: BinaryHeap<Reverse<Key>>,
    versions: Vec<u64>,
}

impl Dwcs {
    /// Re-keys stream `i` after its head or window changed.
    fn refresh(&mut self, i: usize) {
        self.versions[i] += 1;
        if let Some(head) = self.q.head(i) {
            self.heap.push(Reverse(Key { head, stream: i, version: self.versions[i] }));
        }
    }

    /// The current best entry, discarding stale ones.
    fn top(&mut self) -> Option<Key> {
        while let Some(Reverse(k)) = self.heap.peek() {
            if k.version == self.versions[k.stream] {
                return Some(*k);
            }
            self.heap.pop();
        }
        None
    }
}

impl Scheduler for Dwcs {
    fn add_stream(&mut self, c: WindowConstraint, non_droppable: bool) -> usize {
        self.versions.push(0);
        self.q.add(c, non_droppable)
    }

    fn enqueue(&mut self, stream: usize, deadline_ns: u64, non_droppable: bool) {
        let was_empty = self.q.fifos[stream].is_empty();
        self.q.push(stream, deadline_ns, non_droppable);
        if was_empty {
            self.refresh(stream);
        }
    }

    fn decide(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        // Precedence orders by deadline first, so due heads surface at the top.
        // Heads already kept late also sit there; set them aside meanwhile.
        let mut late = Vec::new();
        while let Some(k) = self.top() {
            if self.q.needs_miss(k.stream, now_ns) {
                self.q.miss(k.stream, out);
                self.refresh(k.stream);
            } else if self.q.fifos[k.stream].front().is_some_and(|p| p.late) {
                late.push(self.heap.pop().expect("top exists"));
            } else {
                break;
            }
        }
        self.heap.extend(late);
        if let Some(k) = self.top() {
            self.q.send(k.stream, out);
            self.refresh(k.stream);
        }
    }

    fn stream(&self, stream: usize) -> &Stream {
        &self.q.streams[stream]
    }
}

//! The managed sockets and the indexes every request needs at constant
//! cost: sockets per uid, rate each uid holds per device, sockets placed
//! per device, sockets per client connection, and a cursor that samples
//! a bounded number of sockets per tick.
use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    ops::Bound,
};

use qsock::{QosParams, Selection};
use qsock_sched::StreamClass;
use serde::{Deserialize, Serialize};

use qsock_sched::StreamPlan;

/// What a stream holds of a device's books.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Booking {
    /// Reserved rate, bit/s.
    pub rate_bps: u64,
    /// Booked burst, bytes.
    pub burst_bytes: u64,
}

impl Booking {
    /// What `plan` books.
    pub fn of(plan: &StreamPlan) -> Self {
        Self { rate_bps: plan.reserved_bps, burst_bytes: plan.booked_burst_bytes }
    }
}

/// Client connection number of a socket recovered after a restart and not
/// yet claimed again by its client (`Registry::reclaim`).
pub const UNCLAIMED: u64 = 0;

/// One managed socket: what qsockd booked for it and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Managed {
    /// Device its class lives on.
    pub device: String,
    /// HTB minor of its class (own or shared).
    pub minor: u32,
    /// The class is the socket's own (else a module's shared class).
    pub own_class: bool,
    /// What it holds of the device's books (rate, burst).
    pub booking: Booking,
    /// Its class's token bucket and ceiling as planned (own classes).
    pub class: StreamClass,
    /// Parameters in force.
    pub params: QosParams,
    /// `SO_TYPE` of the socket (datagram sockets carry message tags).
    pub sock_type: i32,
    /// uid of the client that attached it.
    pub owner_uid: u32,
    /// Primary gid of that client.
    pub owner_gid: u32,
    /// pid of that client.
    pub owner_pid: i32,
    /// Client connection that attached (or reclaimed) it; the socket is
    /// released when that connection closes. [`UNCLAIMED`] after a restart.
    pub conn: u64,
    /// How the policy chose the device (attached without one).
    pub selection: Option<Selection>,
    /// For a subflow of a managed MPTCP connection: the cookie of the
    /// application's MPTCP socket (the subflow lives and goes with it; a
    /// restart recovers it with the connection's own record).
    #[serde(default)]
    pub parent: Option<u64>,
    /// A sock_diag sweep has seen the socket held by a process: from then
    /// on its absence means it was closed.
    pub held_seen: bool,
    /// Consecutive sock_diag sweeps that did not list it.
    #[serde(skip)]
    pub missed: u8,
    /// When this daemon took it on (attach or recovery), ns of
    /// `CLOCK_MONOTONIC`: a sock_diag sweep begun earlier cannot have seen it.
    #[serde(skip)]
    pub since_ns: u64,
    /// Rate samples: (ns of `CLOCK_MONOTONIC`, bytes dequeued). Not kept
    /// across restarts.
    #[serde(skip)]
    pub samples: VecDeque<(u64, u64)>,
}

/// The managed sockets by cookie, with their indexes. Fields are private:
/// every change goes through a method that keeps the indexes true.
#[derive(Default)]
pub struct SocketTable {
    by_cookie: HashMap<u64, Managed>,
    /// Sockets per owner uid.
    per_uid: HashMap<u32, u32>,
    /// Rate booked per (owner uid, device), bit/s.
    held: HashMap<(u32, String), u64>,
    /// Sockets per device.
    per_device: HashMap<String, u32>,
    /// Cookies per client connection.
    by_conn: HashMap<u64, HashSet<u64>>,
    /// Cookies in order, for the sampling cursor.
    order: BTreeSet<u64>,
    /// Last cookie sampled.
    cursor: u64,
}

fn dec<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: K) {
    if let std::collections::hash_map::Entry::Occupied(mut e) = m.entry(k) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

impl SocketTable {
    /// Number of managed sockets.
    pub fn len(&self) -> usize {
        self.by_cookie.len()
    }

    /// Whether no socket is managed.
    pub fn is_empty(&self) -> bool {
        self.by_cookie.is_empty()
    }

    /// Whether `cookie` is managed.
    pub fn contains(&self, cookie: u64) -> bool {
        self.by_cookie.contains_key(&cookie)
    }

    /// The socket `cookie`, if managed.
    pub fn get(&self, cookie: u64) -> Option<&Managed> {
        self.by_cookie.get(&cookie)
    }

    /// Every managed socket, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Managed)> {
        self.by_cookie.iter().map(|(c, m)| (*c, m))
    }

    /// Adds `m` as `cookie` (replacing nothing: the caller checked).
    pub fn insert(&mut self, cookie: u64, m: Managed) {
        *self.per_uid.entry(m.owner_uid).or_default() += 1;
        *self.held.entry((m.owner_uid, m.device.clone())).or_default() += m.booking.rate_bps;
        *self.per_device.entry(m.device.clone()).or_default() += 1;
        self.by_conn.entry(m.conn).or_default().insert(cookie);
        self.order.insert(cookie);
        self.by_cookie.insert(cookie, m);
    }

    /// Removes and returns the socket `cookie`.
    pub fn remove(&mut self, cookie: u64) -> Option<Managed> {
        let m = self.by_cookie.remove(&cookie)?;
        dec(&mut self.per_uid, m.owner_uid);
        let key = (m.owner_uid, m.device.clone());
        if let Some(h) = self.held.get_mut(&key) {
            *h -= m.booking.rate_bps;
            if *h == 0 {
                self.held.remove(&key);
            }
        }
        dec(&mut self.per_device, m.device.clone());
        if let Some(s) = self.by_conn.get_mut(&m.conn) {
            s.remove(&cookie);
            if s.is_empty() {
                self.by_conn.remove(&m.conn);
            }
        }
        self.order.remove(&cookie);
        Some(m)
    }

    /// Applies `f` to the socket `cookie` and re-indexes it (its booking,
    /// device, owner or connection may change). Returns `None` if not managed.
    pub fn update<T>(&mut self, cookie: u64, f: impl FnOnce(&mut Managed) -> T) -> Option<T> {
        let mut m = self.remove(cookie)?;
        let r = f(&mut m);
        self.insert(cookie, m);
        Some(r)
    }

    /// Sockets owned by `uid`, all devices.
    pub fn count_of_uid(&self, uid: u32) -> u32 {
        self.per_uid.get(&uid).copied().unwrap_or(0)
    }

    /// Rate booked on `device` by the sockets of `uid`, bit/s.
    pub fn held_bps(&self, uid: u32, device: &str) -> u64 {
        self.held.get(&(uid, device.to_string())).copied().unwrap_or(0)
    }

    /// Sockets managed on `device`.
    pub fn count_on(&self, device: &str) -> u32 {
        self.per_device.get(device).copied().unwrap_or(0)
    }

    /// Cookies of the sockets attached over connection `conn`.
    pub fn of_conn(&self, conn: u64) -> Vec<u64> {
        self.by_conn.get(&conn).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// Cookies of the sockets on `device`.
    pub fn on_device(&self, device: &str) -> Vec<u64> {
        self.by_cookie.iter().filter(|(_, m)| m.device == device).map(|(c, _)| *c).collect()
    }

    /// The next `n` cookies after the sampling cursor, wrapping around; the
    /// cursor moves past them. Sampling a bounded batch per tick keeps the
    /// tick's cost flat however many sockets are managed.
    pub fn next_batch(&mut self, n: usize) -> Vec<u64> {
        let mut out: Vec<u64> = self.order.range((Bound::Excluded(self.cursor), Bound::Unbounded)).take(n).copied().collect();
        if out.len() < n {
            // Wrap around: the cookies up to the cursor, which were not taken above.
            let more = n - out.len();
            out.extend(self.order.range(..=self.cursor).take(more).copied());
        }
        if let Some(last) = out.last() {
            self.cursor = *last;
        }
        out
    }

    /// Mutable access to the rate samples of `cookie` (not indexed).
    pub fn samples_mut(&mut self, cookie: u64) -> Option<&mut VecDeque<(u64, u64)>> {
        self.by_cookie.get_mut(&cookie).map(|m| &mut m.samples)
    }

    /// Notes what a sock_diag sweep found of `cookie`: listed (`held`,
    /// then it counts as seen held) or not. Returns how many sweeps in a
    /// row have not listed it (not indexed).
    pub fn note_sweep(&mut self, cookie: u64, held: bool) -> u8 {
        let Some(m) = self.by_cookie.get_mut(&cookie) else { return 0 };
        if held {
            m.held_seen = true;
            m.missed = 0;
        } else {
            m.missed = m.missed.saturating_add(1);
        }
        m.missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn managed(uid: u32, device: &str, rate: u64, conn: u64) -> Managed {
        Managed {
            device: device.into(),
            minor: 0x10,
            own_class: true,
            booking: Booking { rate_bps: rate, burst_bytes: 0 },
            class: StreamClass::Shared { minor: 0x10 },
            params: QosParams::on(device, qsock::SchedulerParams::BestEffort),
            sock_type: libc::SOCK_DGRAM,
            owner_uid: uid,
            owner_gid: uid,
            owner_pid: 1,
            conn,
            selection: None,
            parent: None,
            held_seen: false,
            missed: 0,
            since_ns: 0,
            samples: VecDeque::new(),
        }
    }

    proptest! {
        /// After any sequence of inserts, updates and removes, the indexes
        /// equal what a full scan of the table gives.
        #[test]
        fn indexes_match_a_full_scan(ops in proptest::collection::vec((0u8..3, 1u64..40, 0u32..3, 0usize..2, 0u64..1000, 0u64..3), 0..200)) {
            let devs = ["a", "b"];
            let mut t = SocketTable::default();
            for (op, cookie, uid, dev, rate, conn) in ops {
                match op {
                    0 if !t.contains(cookie) => t.insert(cookie, managed(uid, devs[dev], rate, conn)),
                    1 => { t.update(cookie, |m| { m.booking.rate_bps = rate; m.conn = conn; }); }
                    _ => { t.remove(cookie); }
                }
            }
            for uid in 0..3 {
                prop_assert_eq!(t.count_of_uid(uid) as usize, t.iter().filter(|(_, m)| m.owner_uid == uid).count());
                for d in devs {
                    prop_assert_eq!(t.held_bps(uid, d), t.iter().filter(|(_, m)| m.owner_uid == uid && m.device == d).map(|(_, m)| m.booking.rate_bps).sum::<u64>());
                }
            }
            for d in devs {
                prop_assert_eq!(t.count_on(d) as usize, t.iter().filter(|(_, m)| m.device == d).count());
            }
            for conn in 0..3 {
                let mut a = t.of_conn(conn);
                a.sort();
                let mut b: Vec<u64> = t.iter().filter(|(_, m)| m.conn == conn).map(|(c, _)| c).collect();
                b.sort();
                prop_assert_eq!(a, b);
            }
            // The cursor visits every socket once per round.
            let n = t.len();
            let mut seen: Vec<u64> = (0..n.div_ceil(7)).flat_map(|_| t.next_batch(7)).collect();
            seen.sort();
            seen.dedup();
            prop_assert_eq!(seen.len(), n);
        }
    }
}

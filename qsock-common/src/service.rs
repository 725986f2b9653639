//! The service a managed socket's HTB class really gets, as the egress
//! program predicts it for each unit (a frame, or a message outside frames).
//!
//! A class with guaranteed rate `R`, bucket depth `b` and ceiling `C` is
//! served, whatever the rest of the link does, at least as an HTB token
//! bucket: it may send `b` bytes at once after idling, then `R`. When the
//! link has spare capacity it borrows up to `C`, and HTB does not charge its
//! own bucket for what it borrows. Two bounds follow, and the prediction is
//! the earlier of them:
//!
//! * **Guaranteed**: a virtual clock at `R` that models the bucket (tokens
//!   back to zero at `vclock`, never earlier than `now − b/R`), resynced to
//!   the bytes really queued (`enq − deq`): what HTB has already sent by
//!   borrowing no longer waits ([`resync_vclock`]).
//! * **Measured**: the backlog plus the unit drained at the rate the class
//!   was measured to drain at while it had a backlog ([`ServiceMeter`], in
//!   the dequeue probe), used only when it exceeds `R` (the class borrows),
//!   trusted up to `C`, and only while fresh. A class that may borrow and
//!   has no fresh sample is assumed to get `C`: a drop needs evidence that
//!   the class is served slower than a plain socket would be, so "never
//!   less than plain" holds from the first frame on.
//!
//! Neither is earlier than the backlog and the unit drained at `C`: the
//! ceiling's bucket paces even a burst.
//!
//! Every function is pure and `const`: the eBPF program calls them, the host
//! property-tests them against a simulation of an HTB class
//! (`qsock-common/tests/htb_model.rs`).

/// Busy time the meter accumulates before it takes a sample, ns (8 ms: two
/// ticks at HZ = 250, so HTB's timer granularity averages out).
pub const SERVICE_WINDOW_NS: u64 = 8_000_000;
/// How long a measured drain rate is trusted after its last sample, ns.
pub const SERVICE_FRESH_NS: u64 = 2_000_000_000;

/// Time to send `bytes` at `rate_bps`, ns (`rate_bps` 0: 0, i.e. no cost).
pub const fn tx_ns(bytes: u64, rate_bps: u64) -> u64 {
    match (crate::sat_mul(bytes, 8_000_000_000)).checked_div(rate_bps) {
        Some(ns) => ns,
        None => 0,
    }
}

/// Most a class can owe its rate bucket, bytes: HTB lets a packet go while
/// the class's tokens are ≥ 0, so they fall to at most one frame below zero.
pub const MAX_TOKEN_DEBT_BYTES: u64 = 1514;

/// The guaranteed clock after the kernel's evidence: bytes still queued in
/// the class (`backlog_bytes`, enqueued minus dequeued) take at most
/// `(backlog + one frame of debt)·8/R` under the guarantee, so a clock
/// further ahead (the class borrowed, and HTB did not charge its bucket for
/// that) is pulled back.
pub const fn resync_vclock(vclock_ns: u64, now_ns: u64, backlog_bytes: u64, rate_bps: u64) -> u64 {
    let bound = now_ns.saturating_add(tx_ns(backlog_bytes.saturating_add(MAX_TOKEN_DEBT_BYTES), rate_bps));
    if vclock_ns > bound {
        bound
    } else {
        vclock_ns
    }
}

/// The guaranteed clock after `bytes` more are charged at `now_ns`: the
/// bucket refills to at most `burst_ns` (the clock never lags `now − b/R`),
/// then the bytes cost their time at `rate_bps`.
pub const fn charge(vclock_ns: u64, now_ns: u64, burst_ns: u64, bytes: u64, rate_bps: u64) -> u64 {
    let floor = now_ns.saturating_sub(burst_ns);
    let start = if vclock_ns > floor { vclock_ns } else { floor };
    start.saturating_add(tx_ns(bytes, rate_bps))
}

/// A class as the prediction sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassModel {
    /// Guaranteed rate, bit/s (> 0).
    pub rate_bps: u64,
    /// Ceiling, bit/s (≥ `rate_bps`; equal for classes that never borrow).
    pub ceil_bps: u64,
    /// Bucket depth as time at `rate_bps`, ns.
    pub burst_ns: u64,
}

/// What [`predict`] says of one unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prediction {
    /// When the unit's last packet is predicted to leave the class, ns of
    /// `CLOCK_MONOTONIC`.
    pub finish_ns: u64,
    /// The guaranteed virtual clock once the unit is charged (store it only
    /// if the unit is kept).
    pub vclock_after_ns: u64,
}

/// Smallest packet the class can see, bytes: Ethernet, IPv4 and UDP headers
/// and one byte of payload (`skb->len` at clsact egress).
pub const MIN_PACKET_BYTES: u64 = 14 + 20 + 8 + 1;

/// Predicts when the last packet of a unit of `unit_bytes` arriving at
/// `now_ns` leaves, behind `backlog_bytes` already queued in the class;
/// `packet_bytes` is the unit's first packet, `measured_bps` the meter's
/// fresh drain rate ([`ServiceMeter::rate_at`], 0: none). HTB sends a
/// packet as soon as the class's tokens are back to zero and charges it
/// then, so a unit has left once all but its last packet are paid for: a
/// one-packet unit leaves at the clock's start; of a larger unit the last
/// packet may be as small as [`MIN_PACKET_BYTES`].
///
/// `measured_bps` 0 (no fresh sample) counts as the ceiling for a class
/// that may borrow; pass `class.rate_bps` for the guaranteed bound alone.
pub const fn predict(class: ClassModel, vclock_ns: u64, now_ns: u64, backlog_bytes: u64, unit_bytes: u64, packet_bytes: u64, measured_bps: u64) -> Prediction {
    let v = resync_vclock(vclock_ns, now_ns, backlog_bytes, class.rate_bps);
    let floor = now_ns.saturating_sub(class.burst_ns);
    let start = if v > floor { v } else { floor };
    let guaranteed = start.saturating_add(tx_ns(unit_bytes, class.rate_bps));
    let ahead = if unit_bytes <= packet_bytes { 0 } else { unit_bytes - MIN_PACKET_BYTES };
    let leaves = start.saturating_add(tx_ns(ahead, class.rate_bps));
    let mut finish = if leaves > now_ns { leaves } else { now_ns };
    // The meter counts only when the class was served faster than its
    // guarantee (it borrowed); at R the guaranteed clock is the better bound
    // (it knows the bucket's debt).
    // No sample yet (or a stale one): nothing shows that the class gets
    // less than its ceiling, and a drop needs evidence.
    let mut s = if measured_bps == 0 { class.ceil_bps } else { measured_bps };
    if s > class.ceil_bps && class.ceil_bps >= class.rate_bps {
        s = class.ceil_bps;
    }
    if s > class.rate_bps {
        let measured = now_ns.saturating_add(tx_ns(backlog_bytes.saturating_add(ahead), s));
        if measured < finish {
            finish = measured;
        }
    }
    // Never faster than the ceiling: HTB's ceil bucket paces even a burst.
    let fastest = now_ns.saturating_add(tx_ns(backlog_bytes.saturating_add(ahead), class.ceil_bps));
    if fastest > finish {
        finish = fastest;
    }
    Prediction { finish_ns: finish, vclock_after_ns: guaranteed }
}

/// Drain-rate meter of one class, kept by the dequeue probe: the bytes a
/// class sent while it had a backlog, over the time that took. The interval
/// between two dequeues counts only if the packet now leaving was already
/// queued when the previous one left (its enqueue stamp is not later), so
/// idle time never dilutes the rate; in a FIFO class that is exact and
/// needs no count of what is queued. Samples are taken over
/// [`SERVICE_WINDOW_NS`] of busy time and smoothed (weight 1/4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceMeter {
    /// Time of the last dequeue, ns of `CLOCK_MONOTONIC`.
    pub last_deq_ns: u64,
    /// Bytes dequeued in the current sample, bytes.
    pub acc_bytes: u64,
    /// Busy time of the current sample, ns.
    pub acc_ns: u64,
    /// Smoothed drain rate, bit/s (0: never measured).
    pub rate_bps: u64,
    /// When `rate_bps` was last updated, ns of `CLOCK_MONOTONIC`.
    pub updated_ns: u64,
}

impl ServiceMeter {
    /// The meter after a dequeue of `len_bytes` at `now_ns` of a packet
    /// enqueued at `enqueued_ns` (0: unknown, not counted).
    pub const fn on_dequeue(self, now_ns: u64, len_bytes: u64, enqueued_ns: u64) -> Self {
        let mut m = self;
        if enqueued_ns != 0 && enqueued_ns <= m.last_deq_ns && now_ns > m.last_deq_ns {
            m.acc_bytes = m.acc_bytes.saturating_add(len_bytes);
            m.acc_ns = m.acc_ns.saturating_add(now_ns - m.last_deq_ns);
            if m.acc_ns >= SERVICE_WINDOW_NS {
                let sample = match crate::sat_mul(m.acc_bytes, 8_000_000_000).checked_div(m.acc_ns) {
                    Some(r) => r,
                    None => 0,
                };
                let fresh = m.rate_bps != 0 && now_ns.saturating_sub(m.updated_ns) <= SERVICE_FRESH_NS;
                m.rate_bps = if fresh { (3 * (m.rate_bps / 4)).saturating_add(sample / 4) } else { sample };
                m.updated_ns = now_ns;
                m.acc_bytes = 0;
                m.acc_ns = 0;
            }
        }
        m.last_deq_ns = now_ns;
        m
    }

    /// The measured drain rate if it is fresh at `now_ns`, bit/s; else 0.
    pub const fn rate_at(&self, now_ns: u64) -> u64 {
        if self.rate_bps != 0 && now_ns.saturating_sub(self.updated_ns) <= SERVICE_FRESH_NS {
            self.rate_bps
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: ClassModel = ClassModel { rate_bps: 1_000_000, ceil_bps: 10_000_000, burst_ns: 12_000_000 };

    #[test]
    fn a_class_that_cannot_borrow_ignores_the_meter() {
        // ceil = rate: a burst measured above R says nothing about the future.
        let edf = ClassModel { rate_bps: 1_000_000, ceil_bps: 1_000_000, burst_ns: 12_000_000 };
        let now = 5_000_000_000;
        let with = predict(edf, now + 20_000_000, now, 2_000, 1000, 1000, 9_000_000);
        let without = predict(edf, now + 20_000_000, now, 2_000, 1000, 1000, 0);
        assert_eq!(with, without);
    }

    #[test]
    fn an_idle_class_sends_its_burst_at_once() {
        // 1500 bytes at 1 Mbit/s = 12 ms, all of it covered by the bucket.
        let p = predict(C, 0, 1_000_000_000, 0, 1500, 1500, C.rate_bps);
        assert_eq!(p.finish_ns, 1_000_000_000);
        assert_eq!(p.vclock_after_ns, 1_000_000_000);
        // A 3-packet frame right behind it: its last packet waits for all
        // but the smallest last packet at R.
        let p = predict(C, p.vclock_after_ns, 1_000_000_000, 1500, 4500, 1500, C.rate_bps);
        assert_eq!(p.finish_ns, 1_000_000_000 + tx_ns(4500 - MIN_PACKET_BYTES, 1_000_000));
        // Never measured: the class is assumed to borrow up to its ceiling.
        let p = predict(C, p.vclock_after_ns, 1_000_000_000, 1500, 4500, 1500, 0);
        assert_eq!(p.finish_ns, 1_000_000_000 + tx_ns(1500 + 4500 - MIN_PACKET_BYTES, 10_000_000));
    }

    #[test]
    fn borrowing_shows_through_the_backlog_and_the_meter() {
        // The clock says 500 ms of work at R, but only 10 kB are queued (80 ms
        // at R, plus 12.1 ms for the frame the class may owe).
        let now = 5_000_000_000;
        // A meter reading at R: the guaranteed bound alone.
        let p = predict(C, now + 500_000_000, now, 10_000, 1000, 1000, C.rate_bps);
        assert_eq!(p.finish_ns, now + 92_112_000);
        assert_eq!(p.vclock_after_ns, now + 100_112_000);
        // The class drained at 8 Mbit/s while busy: 10 kB ahead take 10 ms.
        let p = predict(C, now + 500_000_000, now, 10_000, 1000, 1000, 8_000_000);
        assert_eq!(p.finish_ns, now + 10_000_000);
        // A meter above the ceiling is trusted only up to it.
        let p = predict(C, now + 500_000_000, now, 10_000, 1000, 1000, 100_000_000);
        assert_eq!(p.finish_ns, now + 8_000_000);
    }

    #[test]
    fn the_meter_ignores_idle_time_and_goes_stale() {
        let mut m = ServiceMeter::default();
        m = m.on_dequeue(1_000_000, 1000, 900_000);
        // Idle for a second, then a packet that arrived to an empty class: no sample.
        m = m.on_dequeue(1_001_000_000, 1000, 1_000_999_000);
        assert_eq!((m.rate_bps, m.acc_ns), (0, 0));
        // Packets queued behind each other, one leaving per ms: 8 Mbit/s.
        let mut t = 1_001_000_000;
        for _ in 0..8 {
            t += 1_000_000;
            m = m.on_dequeue(t, 1000, 1_000_999_500);
        }
        assert_eq!(m.rate_bps, 8_000_000);
        assert_eq!(m.rate_at(t), 8_000_000);
        assert_eq!(m.rate_at(t + SERVICE_FRESH_NS + 1), 0);
    }
}

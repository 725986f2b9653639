//! What is booked on one device: the sum of the guaranteed rates and of the
//! token-bucket bursts its streams hold. Only this type changes the totals,
//! by whole bookings, so they stay the sum of what the streams hold
//! (property-tested below against a list of the bookings).
use crate::state::sockets::Booking;

/// The reservations of one device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reservations {
    rate_bps: u64,
    burst_bytes: u64,
}

impl Reservations {
    /// Guaranteed rate booked in all, bit/s (classes still draining included).
    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    /// Bursts booked in all, bytes.
    pub fn burst_bytes(&self) -> u64 {
        self.burst_bytes
    }

    /// Books `b` (a stream admitted, or recovered after a restart).
    pub fn book(&mut self, b: Booking) {
        self.rate_bps += b.rate_bps;
        self.burst_bytes += b.burst_bytes;
    }

    /// Gives back `b`, which must have been booked (a stream released, or a
    /// booking undone after a failed kernel step). Saturates rather than
    /// wrap: a daemon bug must not turn into a link that looks free.
    pub fn unbook(&mut self, b: Booking) {
        debug_assert!(b.rate_bps <= self.rate_bps && b.burst_bytes <= self.burst_bytes, "unbooking {b:?} from {self:?}");
        self.rate_bps = self.rate_bps.saturating_sub(b.rate_bps);
        self.burst_bytes = self.burst_bytes.saturating_sub(b.burst_bytes);
    }

    /// Replaces the booking `old` by `new` (a `qchange`).
    pub fn rebook(&mut self, old: Booking, new: Booking) {
        self.unbook(old);
        self.book(new);
    }

    /// The reservations as they would be with `own` given back: what a
    /// change of the stream that holds `own` may plan against.
    pub fn without(&self, own: Booking) -> Self {
        let mut r = *self;
        r.unbook(own);
        r
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Admit(u64, u64),
        Refuse,
        Change(usize, u64, u64),
        FailChange(usize, u64, u64),
        Release(usize),
        /// Released with an own class still draining: the burst goes now, the rate later.
        Drain(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let b = || (0u64..10_000_000, 0u64..100_000);
        prop_oneof![
            b().prop_map(|(r, x)| Op::Admit(r, x)),
            Just(Op::Refuse),
            (any::<usize>(), b()).prop_map(|(i, (r, x))| Op::Change(i, r, x)),
            (any::<usize>(), b()).prop_map(|(i, (r, x))| Op::FailChange(i, r, x)),
            any::<usize>().prop_map(Op::Release),
            any::<usize>().prop_map(Op::Drain),
        ]
    }

    proptest! {
        /// Whatever sequence of admitted, refused, changed, failed and
        /// released operations, the totals are the sums of what is held.
        #[test]
        fn totals_are_the_sum_of_what_streams_hold(ops in prop::collection::vec(op(), 0..200)) {
            let mut r = Reservations::default();
            let mut held: Vec<Booking> = Vec::new();
            let mut draining: Vec<u64> = Vec::new();
            for o in ops {
                match o {
                    Op::Admit(rate_bps, burst_bytes) => {
                        let b = Booking { rate_bps, burst_bytes };
                        r.book(b);
                        held.push(b);
                    }
                    // Admission refused before any booking: nothing to do.
                    Op::Refuse => {}
                    Op::Change(i, rate_bps, burst_bytes) if !held.is_empty() => {
                        let i = i % held.len();
                        let new = Booking { rate_bps, burst_bytes };
                        r.rebook(held[i], new);
                        held[i] = new;
                    }
                    Op::FailChange(i, rate_bps, burst_bytes) if !held.is_empty() => {
                        // Booked, a kernel step failed, undone.
                        let i = i % held.len();
                        let new = Booking { rate_bps, burst_bytes };
                        r.rebook(held[i], new);
                        r.rebook(new, held[i]);
                    }
                    Op::Release(i) if !held.is_empty() => {
                        r.unbook(held.swap_remove(i % held.len()));
                    }
                    Op::Drain(i) if !held.is_empty() => {
                        let b = held.swap_remove(i % held.len());
                        r.unbook(Booking { rate_bps: 0, burst_bytes: b.burst_bytes });
                        draining.push(b.rate_bps);
                    }
                    _ => {}
                }
                let rate: u64 = held.iter().map(|b| b.rate_bps).sum::<u64>() + draining.iter().sum::<u64>();
                let burst: u64 = held.iter().map(|b| b.burst_bytes).sum();
                prop_assert_eq!((r.rate_bps(), r.burst_bytes()), (rate, burst));
                prop_assert_eq!(r.without(Booking::default()), r);
            }
            for rate_bps in draining {
                r.unbook(Booking { rate_bps, burst_bytes: 0 });
            }
            for b in held {
                r.unbook(b);
            }
            prop_assert_eq!(r, Reservations::default());
        }
    }
}

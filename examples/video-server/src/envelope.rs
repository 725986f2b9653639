//! Sizes a stream's token-bucket reservation (rate, burst) from its own
//! frame sizes, so that every frame meets the playout budget when the class
//! gets exactly its reservation.
//!
//! Model (network calculus, as for an IntServ guaranteed-service TSpec,
//! RFC 2212): frame `i` of `s_i` bytes arrives whole at `i · T`; a class
//! served at exactly `R` holds the backlog `q_i = max(0, q_{i−1} − R·T) +
//! s_i` (Lindley's recursion) just after frame `i` arrives, and that frame's
//! last byte leaves `q_i / R` later. The smallest bucket a stream needs at
//! rate `R` is `b(R) = max_i q_i`, its empirical envelope; the frame delay
//! bound is `b(R)/R`. [`size_reservation`] finds the smallest `R` whose
//! bound fits the budget and asks for `(R, b(R))`.

/// A reservation sized from a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Reservation {
    /// Guaranteed rate, bit/s.
    pub rate_bps: u64,
    /// Burst (token-bucket depth), bytes: the envelope `b(R)`.
    pub burst_bytes: u64,
    /// Delay bound `b/R` of the stream's frames at that reservation, ns.
    pub delay_bound_ns: u64,
}

/// The largest backlog, bytes, of frames of `sizes` bytes arriving every
/// `period_ns` at a class that drains exactly `rate_bps`: the burst the
/// stream needs at that rate. `rate_bps` 0 gives the sum of all frames.
pub fn envelope_burst(sizes: &[u64], period_ns: u64, rate_bps: u64) -> u64 {
    let drained = (rate_bps as u128 * period_ns as u128 / 8_000_000_000) as u64;
    let mut q = 0u64;
    let mut worst = 0u64;
    for (i, &s) in sizes.iter().enumerate() {
        q = if i == 0 { s } else { q.saturating_sub(drained) + s };
        worst = worst.max(q);
    }
    worst
}

/// The smallest rate (to 1 kbit/s), with its envelope burst, at which every
/// frame of `sizes` (bytes, one every `period_ns`) leaves within
/// `budget_ns` of its arrival when the class gets exactly that rate.
/// Errors: an empty stream, or a period or budget of 0.
pub fn size_reservation(sizes: &[u64], period_ns: u64, budget_ns: u64) -> anyhow::Result<Reservation> {
    anyhow::ensure!(!sizes.is_empty(), "no frames to size a reservation from");
    anyhow::ensure!(period_ns > 0 && budget_ns > 0, "the frame period and the delay budget must be > 0 ns");
    let bound = |rate: u64| (envelope_burst(sizes, period_ns, rate) as u128 * 8_000_000_000 / rate as u128) as u64;
    // The largest frame alone within the budget is an upper bound on the rate.
    let max_frame = *sizes.iter().max().expect("not empty");
    let mut hi = ((max_frame as u128 * 8_000_000_000).div_ceil(budget_ns as u128) as u64).max(1_000);
    while bound(hi) > budget_ns {
        hi *= 2;
    }
    let mut lo = 0u64;
    // Invariant: hi fits the budget, lo does not (or is 0).
    while hi - lo > 1_000 {
        let mid = lo + (hi - lo) / 2;
        if bound(mid) <= budget_ns {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let rate_bps = hi.div_ceil(1_000) * 1_000;
    Ok(Reservation { rate_bps, burst_bytes: envelope_burst(sizes, period_ns, rate_bps), delay_bound_ns: bound(rate_bps) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_stream_needs_its_mean_rate_and_one_frame() {
        // 1250 bytes every 10 ms = 1 Mbit/s.
        let sizes = vec![1250u64; 100];
        assert_eq!(envelope_burst(&sizes, 10_000_000, 1_000_000), 1250);
        let r = size_reservation(&sizes, 10_000_000, 20_000_000).unwrap();
        assert!(r.rate_bps <= 1_000_000 && r.rate_bps >= 500_000, "{r:?}");
        assert!(r.delay_bound_ns <= 20_000_000);
    }

    #[test]
    fn a_scene_cut_needs_burst_and_the_bound_holds() {
        let mut sizes = vec![5_000u64; 200];
        sizes[100] = 80_000; // a 16x I-frame at a scene cut
        let r = size_reservation(&sizes, 50_000_000, 200_000_000).unwrap();
        assert!(r.burst_bytes >= 80_000, "{r:?}");
        assert!(r.delay_bound_ns <= 200_000_000);
        // Two kbit/s less would break the budget (the search stops within 1 kbit/s).
        let less = r.rate_bps - 2_000;
        let b = envelope_burst(&sizes, 50_000_000, less) as u128 * 8_000_000_000 / less as u128;
        assert!(b > 200_000_000, "{r:?} is not the smallest rate");
        assert!(size_reservation(&[], 1, 1).is_err());
    }
}

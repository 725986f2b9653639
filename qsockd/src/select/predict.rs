//! Completion time of a TCP download on a path, as the Socket Intents
//! earliest-arrival policy models it (Schmidt et al., CoNEXT 2013, §4;
//! MAM's `policy_earliest_arrival`): one RTT of handshake, slow start from
//! the initial window until the window covers the path's bandwidth-delay
//! product, then the rest at the path's bandwidth, the last byte one RTT
//! after the request that asked for it.

/// TCP initial window, segments (RFC 6928).
pub const INITIAL_WINDOW_SEGMENTS: u64 = 10;
/// Segment size assumed, bytes (Ethernet MTU minus IPv4/TCP headers with timestamps).
pub const MSS_BYTES: u64 = 1448;
/// Largest transfer the model is asked about, bytes (1 TiB): keeps every product in u128.
pub const MAX_MODEL_BYTES: u64 = 1 << 40;

/// Predicted time to download `bytes` over a path of round-trip time
/// `rtt_ns` (ns) and bandwidth `bw_bps` (bit/s, > 0), ns, on a new connection.
pub fn completion_ns(bytes: u64, rtt_ns: u64, bw_bps: u64) -> u64 {
    let bytes = bytes.min(MAX_MODEL_BYTES) as u128;
    let (rtt, bw) = (rtt_ns as u128, bw_bps.max(1) as u128);
    let bdp = bw * rtt / 8_000_000_000;
    let mut cwnd = (INITIAL_WINDOW_SEGMENTS * MSS_BYTES) as u128;
    let mut remaining = bytes;
    let mut t = rtt; // SYN, SYN-ACK
                     // Slow start: a window per round trip while the window is below the BDP.
    while remaining > cwnd && cwnd < bdp {
        remaining -= cwnd;
        t += rtt;
        cwnd *= 2;
    }
    // The last request's round trip, and the rest serialised at the bandwidth.
    t += rtt + remaining * 8_000_000_000 / bw;
    t.min(u64::MAX as u128) as u64
}

/// Smallest size, bytes, from which the `(rtt_ns, bw_bps)` path `far`
/// downloads no slower than the path `near` (`near` has the lower RTT,
/// `far` the higher bandwidth), found by bisection over 1 B..=1 TiB;
/// `None` when `far` never catches up (it is not faster). This is the
/// threshold of the file-size policy, derived rather than measured by hand
/// as in the paper's §5.2.
pub fn threshold_bytes(near: (u64, u64), far: (u64, u64)) -> Option<u64> {
    let far_wins = |s: u64| completion_ns(s, far.0, far.1) <= completion_ns(s, near.0, near.1);
    if !far_wins(MAX_MODEL_BYTES) {
        return None;
    }
    if far_wins(1) {
        return Some(1);
    }
    let (mut lo, mut hi) = (1u64, MAX_MODEL_BYTES); // !far_wins(lo), far_wins(hi)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if far_wins(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn small_objects_cost_two_round_trips() {
        // 1 KB on a 10 ms, 6 Mbit/s path: handshake + request, plus 1.3 ms on the wire.
        assert_eq!(completion_ns(1000, 10 * MS, 6_000_000), 20 * MS + 1_333_333);
    }

    #[test]
    fn paper_paths_have_a_threshold_in_the_hundreds_of_kilobytes() {
        // i1: DSL 10 ms, 6 Mbit/s; i2: LTE 70 ms, 12 Mbit/s (Socket Intents §5).
        let t = threshold_bytes((10 * MS, 6_000_000), (70 * MS, 12_000_000)).unwrap();
        assert!((200_000..1_500_000).contains(&t), "threshold {t} B");
        // Below it i1 is faster, at and above it i2.
        assert!(completion_ns(t - 1, 10 * MS, 6_000_000) < completion_ns(t - 1, 70 * MS, 12_000_000));
        assert!(completion_ns(t, 70 * MS, 12_000_000) <= completion_ns(t, 10 * MS, 6_000_000));
        // A slower near path moves the threshold down (the paper's i1' at 2 Mbit/s).
        let t2 = threshold_bytes((10 * MS, 2_000_000), (70 * MS, 12_000_000)).unwrap();
        assert!(t2 < t);
        // A far path that is not faster never wins.
        assert_eq!(threshold_bytes((10 * MS, 6_000_000), (70 * MS, 6_000_000)), None);
    }

    proptest! {
        #[test]
        fn more_bytes_never_finish_sooner(a in 0u64..50_000_000, b in 0u64..50_000_000, rtt in 0u64..1_000_000_000, bw in 1u64..10_000_000_000) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(completion_ns(lo, rtt, bw) <= completion_ns(hi, rtt, bw));
        }

        #[test]
        fn faster_and_nearer_paths_never_finish_later(s in 0u64..50_000_000, r1 in 0u64..500_000_000, r2 in 0u64..500_000_000, b1 in 1u64..1_000_000_000, b2 in 1u64..1_000_000_000) {
            let (rlo, rhi) = (r1.min(r2), r1.max(r2));
            let (blo, bhi) = (b1.min(b2), b1.max(b2));
            prop_assert!(completion_ns(s, rlo, blo) <= completion_ns(s, rhi, blo));
            prop_assert!(completion_ns(s, rlo, bhi) <= completion_ns(s, rlo, blo));
        }

        #[test]
        fn threshold_separates_the_paths(rn in 1u64..100, rf in 1u64..300, bn in 1u64..50, bf in 1u64..100) {
            let (near, far) = ((rn * MS, bn * 1_000_000), (rf * MS, bf * 1_000_000));
            if let Some(t) = threshold_bytes(near, far) {
                prop_assert!(completion_ns(t, far.0, far.1) <= completion_ns(t, near.0, near.1));
                if t > 1 {
                    prop_assert!(completion_ns(t - 1, far.0, far.1) > completion_ns(t - 1, near.0, near.1));
                }
            }
        }
    }
}

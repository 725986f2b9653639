//! How a managed MPTCP connection's reservation is divided over its
//! subflows, by multipath policy (TAPS `multipathPolicy`, RFC 9622 §6.2.9):
//!
//! - **Aggregate** with a guaranteed rate: the application asked for one
//!   rate over all its paths together, so the rate (and a given burst) is
//!   **split** over the subflows in proportion to the link rate of the
//!   interface each leaves by; the shares sum to the rate asked, and each
//!   interface's admission checks only its share. When a subflow comes or
//!   goes the shares are computed again (a grown share that its interface
//!   cannot admit stays as it was, and the refusal is logged).
//! - **Handover** and **Interactive**, intents that say nothing, and the
//!   deadline schedulers (EDF, DWCS: a message's deadline holds on whichever
//!   subflow carries it): **replicated**. The whole connection may move onto
//!   any one of its paths (a backup taking over, the scheduler preferring
//!   the lowest RTT), so each interface gives it the whole guarantee.
use qsock::{Multipath, MultipathPolicy, QosParams, SchedulerParams};

/// Whether `params` (a connection's) are split over its subflows: an
/// Aggregate connection (multipath Active or Passive) with a guaranteed rate.
pub(crate) fn is_split(params: &QosParams) -> bool {
    let (mode, policy) = params.intents.effective_multipath();
    mode != Multipath::Disabled && policy == MultipathPolicy::Aggregate && matches!(params.scheduler, SchedulerParams::Rate(_))
}

/// The guaranteed rate of `params`, bit/s (0 for the deadline schedulers
/// and best effort, which are never split).
pub(crate) fn total_bps(params: &QosParams) -> u64 {
    match &params.scheduler {
        SchedulerParams::Rate(r) => r.rate_bps,
        _ => 0,
    }
}

/// `total` divided in proportion to `weights` (e.g. link rates, bit/s),
/// by largest remainder: the parts sum to `total` exactly, and each differs
/// from its exact proportion by less than 1. Every part is at least 1 when
/// `total` ≥ the number of weights (a guaranteed rate must be positive:
/// parts that would round to zero take 1 each from the largest, so then a
/// part may differ by up to the number of weights); zero weights count as
/// 1. Empty `weights`: no parts.
pub(crate) fn proportional(total: u64, weights: &[u64]) -> Vec<u64> {
    if weights.is_empty() {
        return Vec::new();
    }
    let w: Vec<u128> = weights.iter().map(|&x| x.max(1) as u128).collect();
    let sum: u128 = w.iter().sum();
    let mut parts: Vec<u64> = w.iter().map(|&x| (total as u128 * x / sum) as u64).collect();
    let mut order: Vec<usize> = (0..w.len()).collect();
    // Largest remainder first; ties to the earlier weight.
    order.sort_by_key(|&i| std::cmp::Reverse(total as u128 * w[i] % sum));
    let short = total - parts.iter().sum::<u64>();
    for &i in order.iter().take(short as usize) {
        parts[i] += 1;
    }
    // A part rounded to zero takes 1 from the largest (total ≥ parts keeps that one ≥ 1).
    while let Some(z) = parts.iter().position(|&p| p == 0).filter(|_| total >= parts.len() as u64) {
        let big = (0..parts.len()).max_by_key(|&i| parts[i]).expect("not empty");
        parts[big] -= 1;
        parts[z] += 1;
    }
    parts
}

/// A subflow's parameters when the connection's `params` are split and
/// its share of the rate is `share_bps`: rate, a given burst and the
/// ceiling's floor scaled to that share; anything else as the connection's.
pub(crate) fn share_of(params: &QosParams, share_bps: u64) -> QosParams {
    let mut p = params.clone();
    if let SchedulerParams::Rate(r) = &mut p.scheduler {
        let total = r.rate_bps.max(1);
        r.burst_bytes = r.burst_bytes.map(|b| ((b as u128 * share_bps as u128).div_ceil(total as u128) as u64).max(1));
        r.ceil_bps = r.ceil_bps.map(|c| c.max(share_bps));
        r.rate_bps = share_bps;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn two_links_of_one_to_two_share_a_rate_one_to_two() {
        assert_eq!(proportional(6_000_000, &[8_000_000, 16_000_000]), [2_000_000, 4_000_000]);
        assert_eq!(proportional(10, &[1, 1, 1]), [4, 3, 3]);
        assert_eq!(proportional(3, &[1_000_000, 1, 1]), [1, 1, 1], "every part positive");
        assert!(proportional(5, &[]).is_empty());
    }

    #[test]
    fn only_aggregate_rate_connections_are_split() {
        let mut p = QosParams { device: None, ..QosParams::rate("any", 4_000_000) };
        assert!(!is_split(&p), "no multipath intent: replicated");
        p.intents.multipath = Some(Multipath::Active);
        p.intents.multipath_policy = Some(MultipathPolicy::Aggregate);
        assert!(is_split(&p));
        p.intents.multipath_policy = Some(MultipathPolicy::Handover);
        assert!(!is_split(&p), "handover: the whole guarantee on each path");
        let s = share_of(&QosParams::rate("any", 4_000_000), 1_000_000);
        assert!(matches!(s.scheduler, SchedulerParams::Rate(ref r) if r.rate_bps == 1_000_000));
    }

    proptest! {
        #[test]
        fn parts_sum_to_the_total_and_stay_within_one_of_their_proportion(
            total in 0u64..=100_000_000_000,
            weights in proptest::collection::vec(0u64..=100_000_000_000, 1..6),
        ) {
            let parts = proportional(total, &weights);
            prop_assert_eq!(parts.len(), weights.len());
            prop_assert_eq!(parts.iter().sum::<u64>(), total);
            let w: Vec<f64> = weights.iter().map(|&x| x.max(1) as f64).collect();
            let sum: f64 = w.iter().sum();
            let zeros_lifted = parts.len() as u64 <= total;
            for (p, x) in parts.iter().zip(&w) {
                let exact = total as f64 * x / sum;
                // The lift of parts rounded to zero moves at most one unit per part.
                let slack = if zeros_lifted { 1.0 + parts.len() as f64 } else { 1.0 };
                prop_assert!((*p as f64 - exact).abs() < slack + exact * 1e-12, "part {} of exact {}", p, exact);
                if zeros_lifted {
                    prop_assert!(*p >= 1);
                }
            }
        }
    }
}

//! Earliest deadline first (EDF) for per-message deadlines, as Q.Sockets
//! uses it for the sensor application (lossy and lossless EDF, §4.2.2).
//! The project's statement of the rules is `shared/notes/dwcs-edf.md`.
//!
//! The algorithms have no kernel dependency: lossy and lossless EDF
//! ([`scheduler`]) and the admission test ([`admissible`], Liu & Layland). [`module::EdfModule`] is the
//! qsockd scheduler module: it reserves an EDF stream's utilisation
//! ([`rate_bps`]) as the guaranteed rate of its class.
#![warn(missing_docs)]

pub mod module;
pub mod scheduler;

/// A periodic deadline stream: `bytes` per message, one message per
/// `period_ns`, deadline equal to the period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeriodicStream {
    /// Message size on the wire, bytes.
    pub bytes: u64,
    /// Period and relative deadline, ns (> 0).
    pub period_ns: u64,
}

/// Link utilisation of `streams` on a link of `link_bps` bit/s:
/// Σ (bytes·8 / R) / T. Liu & Layland: EDF meets every deadline iff this is ≤ 1.
pub fn utilisation(streams: &[PeriodicStream], link_bps: u64) -> f64 {
    streams.iter().map(|s| (s.bytes as f64 * 8.0 / link_bps as f64) / (s.period_ns as f64 / 1e9)).sum()
}

/// Bandwidth `s` needs to meet every deadline on its own: bytes·8 / T,
/// bit/s, rounded up (at least 1, at most `u64::MAX`).
pub fn rate_bps(s: PeriodicStream) -> u64 {
    // Saturate: an absurd request must be refused, not wrap to a small rate.
    ((s.bytes as u128 * 8 * 1_000_000_000).div_ceil(s.period_ns.max(1) as u128)).clamp(1, u64::MAX as u128) as u64
}

/// Whether adding `new` to `admitted` keeps the set schedulable by EDF on
/// `link_bps` bit/s. Errors on a zero period or link rate.
pub fn admissible(admitted: &[PeriodicStream], new: PeriodicStream, link_bps: u64) -> Result<bool, String> {
    if link_bps == 0 || new.period_ns == 0 || admitted.iter().any(|s| s.period_ns == 0) {
        return Err("link rate and periods must be > 0".into());
    }
    let mut all = admitted.to_vec();
    all.push(new);
    Ok(utilisation(&all, link_bps) <= 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_follows_utilisation() {
        // 1250 bytes every 10 ms on 10 Mbit/s: 1 ms per 10 ms = 0.1.
        let s = PeriodicStream { bytes: 1250, period_ns: 10_000_000 };
        assert!((utilisation(&[s], 10_000_000) - 0.1).abs() < 1e-9);
        let nine = vec![s; 9];
        assert_eq!(admissible(&nine, s, 10_000_000), Ok(true));
        assert_eq!(admissible(&[s; 10], s, 10_000_000), Ok(false));
        assert!(admissible(&[], PeriodicStream { bytes: 1, period_ns: 0 }, 1).is_err());
        assert_eq!(rate_bps(s), 1_000_000);
    }
}

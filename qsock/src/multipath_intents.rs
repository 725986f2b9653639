//! TAPS multipath properties (RFC 9622 §6.2.14 `multipath`, §8.1.7
//! `multipathPolicy`) and how Socket Intents readings imply them when the
//! application does not say (issue 16, item 4).
use serde::{Deserialize, Serialize};

use crate::params::{Category, Intents, Resilience};

/// `multipath` (RFC 9622 §6.2.14): whether the connection may use several paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Multipath {
    /// One path (plain TCP).
    Disabled,
    /// This end opens further subflows (MPTCP, qsockd as the path manager).
    Active,
    /// MPTCP, but only the peer opens further subflows.
    Passive,
}

/// `multipathPolicy` (RFC 9622 §8.1.7): how the paths are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultipathPolicy {
    /// One path carries the data; the others are backup subflows, used when
    /// it fails.
    Handover,
    /// Every allowed path is used, the scheduler picking the lowest delay.
    Interactive,
    /// Every allowed path carries data at once, for throughput.
    Aggregate,
}

/// Smallest expected transfer that Socket Intents' readings send over
/// several paths (bulk, `file_size_bytes`), bytes: below it the transfer
/// is mostly slow start, which a second subflow, joined an RTT or more
/// later, barely shortens.
pub const AGGREGATE_MIN_BYTES: u64 = 1_000_000;

impl Intents {
    /// The multipath the connection should use and how: the application's
    /// own `multipath` and `multipath_policy` when given, else Socket
    /// Intents' readings: a query stays on one path; resilience sensitive
    /// means Handover; bulk of at least [`AGGREGATE_MIN_BYTES`] means
    /// Aggregate. Anything else: `Disabled` (RFC 9622's default for a
    /// connection). A policy not given and not implied is `Handover`
    /// (RFC 9622's default).
    pub fn effective_multipath(&self) -> (Multipath, MultipathPolicy) {
        let category = self.effective_category();
        let implied = if category == Some(Category::Query) {
            None
        } else if self.resilience == Some(Resilience::Sensitive) {
            Some(MultipathPolicy::Handover)
        } else if category == Some(Category::BulkTransfer) && self.file_size_bytes.is_some_and(|n| n >= AGGREGATE_MIN_BYTES) {
            Some(MultipathPolicy::Aggregate)
        } else {
            None
        };
        let mode = self.multipath.unwrap_or(if implied.is_some() { Multipath::Active } else { Multipath::Disabled });
        (mode, self.multipath_policy.or(implied).unwrap_or(MultipathPolicy::Handover))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_intents_readings_imply_the_taps_properties() {
        let i = |f: fn(&mut Intents)| {
            let mut x = Intents::default();
            f(&mut x);
            x.effective_multipath()
        };
        assert_eq!(i(|_| {}), (Multipath::Disabled, MultipathPolicy::Handover));
        assert_eq!(i(|x| x.resilience = Some(Resilience::Sensitive)), (Multipath::Active, MultipathPolicy::Handover));
        let bulk = |x: &mut Intents| {
            x.category = Some(Category::BulkTransfer);
            x.file_size_bytes = Some(50_000_000);
        };
        assert_eq!(i(bulk), (Multipath::Active, MultipathPolicy::Aggregate));
        assert_eq!(
            i(|x| {
                x.category = Some(Category::BulkTransfer);
                x.file_size_bytes = Some(10_000);
            }),
            (Multipath::Disabled, MultipathPolicy::Handover)
        );
        assert_eq!(
            i(|x| {
                x.category = Some(Category::Query);
                x.resilience = Some(Resilience::Sensitive);
            }),
            (Multipath::Disabled, MultipathPolicy::Handover)
        );
        // What the application says wins.
        assert_eq!(
            i(|x| {
                x.multipath = Some(Multipath::Active);
                x.multipath_policy = Some(MultipathPolicy::Interactive);
                x.category = Some(Category::Query);
            }),
            (Multipath::Active, MultipathPolicy::Interactive)
        );
        assert_eq!(i(|x| x.multipath = Some(Multipath::Disabled)), (Multipath::Disabled, MultipathPolicy::Handover));
    }
}

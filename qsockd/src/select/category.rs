//! The category policy (Socket Intents' first policy, §5.1): bulk transfers
//! and streams go where the most capacity is, queries and control traffic
//! where the RTT is lowest, scavenger traffic where it costs least.
use qsock::{CapacityProfile, Category, Intents};

use super::{lowest_rtt, most_capacity, Candidate, Decision, SelectionPolicy};

/// See the module docs.
pub struct CategoryPolicy;

impl SelectionPolicy for CategoryPolicy {
    fn name(&self) -> &'static str {
        "category"
    }

    fn choose(&mut self, intents: &Intents, c: &[&Candidate]) -> Decision {
        by_category(intents, c)
    }
}

/// The category rule, for policies that need a file size and got none:
/// the decision says so.
pub fn without_size(intents: &Intents, c: &[&Candidate]) -> Decision {
    let d = by_category(intents, c);
    Decision { index: d.index, reason: format!("no file size; {}", d.reason) }
}

/// The category rule, shared with the policies that fall back to it.
pub fn by_category(intents: &Intents, c: &[&Candidate]) -> Decision {
    if intents.capacity_profile == Some(CapacityProfile::Scavenger) {
        let index = (0..c.len()).min_by_key(|&i| (c[i].metered, c[i].cost, i)).expect("candidates are never empty");
        return Decision { index, reason: format!("scavenger: least costly interface (cost {}, metered {})", c[index].cost, c[index].metered) };
    }
    match intents.effective_category() {
        Some(Category::BulkTransfer | Category::Stream) => {
            let index = most_capacity(c);
            Decision {
                index,
                reason: format!("{:?}: most capacity ({} bit/s available)", intents.effective_category().expect("matched"), c[index].available_bps()),
            }
        }
        Some(cat @ (Category::Query | Category::ControlTraffic | Category::KeepAlives)) => {
            let index = lowest_rtt(c);
            Decision { index, reason: format!("{cat:?}: lowest latency ({})", c[index].rtt_text()) }
        }
        None => Decision { index: 0, reason: "no category: the first managed interface in the config".into() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::testing::paper_pair;

    #[test]
    fn bulk_goes_to_capacity_and_queries_to_low_rtt() {
        let all = paper_pair();
        let c: Vec<&Candidate> = all.iter().collect();
        let mut p = CategoryPolicy;
        let bulk = Intents { category: Some(Category::BulkTransfer), ..Default::default() };
        assert_eq!(p.choose(&bulk, &c).index, 1);
        let query = Intents { category: Some(Category::Query), ..Default::default() };
        assert_eq!(p.choose(&query, &c).index, 0);
        let profile = Intents { capacity_profile: Some(CapacityProfile::CapacitySeeking), ..Default::default() };
        assert_eq!(p.choose(&profile, &c).index, 1);
        let scavenger = Intents { capacity_profile: Some(CapacityProfile::Scavenger), ..Default::default() };
        assert_eq!(p.choose(&scavenger, &c).index, 0, "the unmetered interface");
        assert!(p.choose(&query, &c).reason.contains("rtt 10.0 ms (measured)"));
    }
}

//! Earliest completion (MAM's earliest-arrival policy): predicts each
//! candidate's completion time for the transfer from its RTT, the bandwidth
//! a new connection would get there now (free capacity or a fair share
//! beside the open connections) and slow start ([`predict::completion_ns`]),
//! and picks the earliest. Without a file size it falls back to the
//! category rule.
use qsock::Intents;

use super::{category::without_size, predict, Candidate, Decision, SelectionPolicy};

/// See the module docs.
pub struct EarliestCompletion;

impl SelectionPolicy for EarliestCompletion {
    fn name(&self) -> &'static str {
        "earliest_completion"
    }

    fn choose(&mut self, intents: &Intents, c: &[&Candidate]) -> Decision {
        let Some(size) = intents.file_size_bytes else { return without_size(intents, c) };
        let t: Vec<u64> = c.iter().map(|x| predict::completion_ns(size, x.rtt_or_zero(), x.available_bps())).collect();
        let index = (0..c.len()).min_by_key(|&i| (t[i], i)).expect("candidates are never empty");
        let all: Vec<String> = c.iter().zip(&t).map(|(x, t)| format!("{} {:.1} ms", x.name, *t as f64 / 1e6)).collect();
        Decision { index, reason: format!("{size} B predicted to complete first on {}: {}", c[index].name, all.join(", ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::testing::paper_pair;

    #[test]
    fn picks_the_earliest_predicted_completion() {
        let mut all = paper_pair();
        let c: Vec<&Candidate> = all.iter().collect();
        let mut p = EarliestCompletion;
        assert_eq!(p.choose(&Intents { file_size_bytes: Some(20_000), ..Default::default() }, &c).index, 0);
        assert_eq!(p.choose(&Intents { file_size_bytes: Some(20_000_000), ..Default::default() }, &c).index, 1);
        // Six downloads already share i2: a large file is now better on the idle i1.
        all[1].rx_bps = 12_000_000;
        all[1].flows = 6;
        let c: Vec<&Candidate> = all.iter().collect();
        let d = p.choose(&Intents { file_size_bytes: Some(20_000_000), ..Default::default() }, &c);
        assert_eq!(d.index, 0, "{}", d.reason);
    }
}

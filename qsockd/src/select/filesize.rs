//! The file-size policy (Socket Intents §5.2): transfers smaller than a
//! threshold go to the lowest-RTT interface, larger ones to the one with
//! the most bandwidth. The threshold is derived each time from the
//! interfaces' RTT and available bandwidth ([`predict::threshold_bytes`]),
//! not configured. Without a file size it falls back to the category rule.
use qsock::Intents;

use super::{category::without_size, lowest_rtt, most_capacity, predict, Candidate, Decision, SelectionPolicy};

/// See the module docs.
pub struct FileSizePolicy;

impl SelectionPolicy for FileSizePolicy {
    fn name(&self) -> &'static str {
        "filesize"
    }

    fn choose(&mut self, intents: &Intents, c: &[&Candidate]) -> Decision {
        let Some(size) = intents.file_size_bytes else { return without_size(intents, c) };
        let (near, far) = (lowest_rtt(c), most_capacity(c));
        if near == far {
            return Decision { index: near, reason: format!("{} has both the lowest RTT and the most capacity", c[near].name) };
        }
        let path = |i: usize| (c[i].rtt_or_zero(), c[i].available_bps());
        match predict::threshold_bytes(path(near), path(far)) {
            Some(t) => {
                let (index, cmp) = if size >= t { (far, ">=") } else { (near, "<") };
                let reason = format!(
                    "file size {size} B {cmp} threshold {t} B ({} {}, {} bit/s vs {} {}, {} bit/s)",
                    c[near].name,
                    c[near].rtt_text(),
                    path(near).1,
                    c[far].name,
                    c[far].rtt_text(),
                    path(far).1
                );
                Decision { index, reason }
            }
            None => Decision { index: near, reason: format!("{} is never faster than {}: lowest RTT", c[far].name, c[near].name) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::testing::paper_pair;

    #[test]
    fn small_files_near_large_files_far() {
        let all = paper_pair();
        let c: Vec<&Candidate> = all.iter().collect();
        let mut p = FileSizePolicy;
        let small = Intents { file_size_bytes: Some(6_000), ..Default::default() };
        assert_eq!(p.choose(&small, &c).index, 0);
        let large = Intents { file_size_bytes: Some(50_000_000), ..Default::default() };
        let d = p.choose(&large, &c);
        assert_eq!(d.index, 1);
        assert!(d.reason.contains("threshold"), "{}", d.reason);
    }

    #[test]
    fn a_loaded_far_link_raises_the_threshold() {
        let mut all = paper_pair();
        let c: Vec<&Candidate> = all.iter().collect();
        let mut p = FileSizePolicy;
        let mid = Intents { file_size_bytes: Some(1_000_000), ..Default::default() };
        assert_eq!(p.choose(&mid, &c).index, 1);
        // Bulk traffic fills i2 with three flows: a new one gets a quarter.
        all[1].rx_bps = 12_000_000;
        all[1].flows = 3;
        let c: Vec<&Candidate> = all.iter().collect();
        assert_eq!(p.choose(&mid, &c).index, 0);
    }
}

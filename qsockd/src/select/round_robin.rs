//! Round robin: alternates over the candidates, socket by socket, whatever
//! the intents (the application-unaware baseline of Socket Intents §5.2).
use qsock::Intents;

use super::{Candidate, Decision, SelectionPolicy};

/// See the module docs.
#[derive(Default)]
pub struct RoundRobin {
    next: usize,
}

impl SelectionPolicy for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn choose(&mut self, _intents: &Intents, c: &[&Candidate]) -> Decision {
        let index = self.next % c.len();
        self.next = self.next.wrapping_add(1);
        Decision { index, reason: format!("round robin: turn {} of {}", index + 1, c.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::testing::paper_pair;

    #[test]
    fn alternates() {
        let all = paper_pair();
        let c: Vec<&Candidate> = all.iter().collect();
        let mut p = RoundRobin::default();
        let picks: Vec<usize> = (0..4).map(|_| p.choose(&Intents::default(), &c).index).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
    }
}

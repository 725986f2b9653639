//! What a session promises (Habib, Christin, Chuang, *Taking Advantage of
//! Multihoming with Session Layer Striping*, §III-A): its delivery
//! semantics, its performance objectives with their static precedence, and
//! the scheduler they choose.
use serde::{Deserialize, Serialize};

/// Delivery semantics of a session (the paper's four).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Semantics {
    /// No guarantee on losses or order (1).
    UnorderedLossy,
    /// Nothing written is lost while a path lives; any order (2: file transfer).
    UnorderedLossless,
    /// Released in order; a missing message is skipped once its deadline
    /// (or the session's reorder bound) has passed (3: media).
    OrderedLossy,
    /// In order and nothing lost (4: what TCP and MPTCP give).
    OrderedLossless,
}

impl Semantics {
    /// Every semantics, in the paper's order.
    pub const ALL: [Semantics; 4] = [Semantics::UnorderedLossy, Semantics::UnorderedLossless, Semantics::OrderedLossy, Semantics::OrderedLossless];

    /// Messages are released in sequence order.
    pub fn ordered(self) -> bool {
        matches!(self, Semantics::OrderedLossy | Semantics::OrderedLossless)
    }

    /// Lost messages are retransmitted, on any path, until acknowledged.
    pub fn lossless(self) -> bool {
        matches!(self, Semantics::UnorderedLossless | Semantics::OrderedLossless)
    }

    /// The name used on the wire and on command lines (`ordered-lossy`, …).
    pub fn name(self) -> &'static str {
        match self {
            Semantics::UnorderedLossy => "unordered-lossy",
            Semantics::UnorderedLossless => "unordered-lossless",
            Semantics::OrderedLossy => "ordered-lossy",
            Semantics::OrderedLossless => "ordered-lossless",
        }
    }
}

impl std::str::FromStr for Semantics {
    type Err = crate::SessionError;

    /// Parses [`Semantics::name`]. Errors: [`crate::ErrorKind::InvalidConfig`]
    /// naming the four that exist.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Semantics::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| {
            crate::SessionError::new(
                crate::ErrorKind::InvalidConfig,
                format!("unknown semantics {s:?} (one of unordered-lossy, unordered-lossless, ordered-lossy, ordered-lossless)"),
            )
        })
    }
}

/// A performance objective, averaged over the session (§III-A).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Fewest losses; applies only to lossy semantics (the paper's remark).
    Loss,
    /// Lowest end-to-end latency.
    Latency,
    /// Lowest latency variation.
    Jitter,
    /// Highest goodput.
    Throughput,
}

impl Objective {
    /// Objectives in their static precedence, highest first: the paper
    /// advocates a static order and gives loss precedence over throughput;
    /// latency comes before jitter because a path that is late on average
    /// misses deadlines however steady it is.
    pub const PRECEDENCE: [Objective; 4] = [Objective::Loss, Objective::Latency, Objective::Jitter, Objective::Throughput];

    /// Parses `loss`, `latency`, `jitter` or `throughput`.
    /// Errors: [`crate::ErrorKind::InvalidConfig`].
    pub fn parse(s: &str) -> Result<Self, crate::SessionError> {
        Objective::PRECEDENCE.into_iter().find(|o| o.name() == s).ok_or_else(|| {
            crate::SessionError::new(crate::ErrorKind::InvalidConfig, format!("unknown objective {s:?} (one of loss, latency, jitter, throughput)"))
        })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Objective::Loss => "loss",
            Objective::Latency => "latency",
            Objective::Jitter => "jitter",
            Objective::Throughput => "throughput",
        }
    }
}

/// The striping schedulers (`crate::sched`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerKind {
    /// Strict turns, one message a path: the head-of-line blocking the
    /// paper warns of (a baseline for experiments).
    RoundRobin,
    /// Weighted deficit round robin, quanta from each path's delivery rate
    /// (the paper's proposal, after Shreedhar and Varghese).
    Wdrr,
    /// The path with the earliest predicted arrival.
    EarliestArrival,
    /// Each message on a path predicted to deliver it by its deadline.
    Deadline,
    /// Every message on every usable path.
    Redundant,
}

/// The scheduler the objectives choose: the objective of highest
/// precedence ([`Objective::PRECEDENCE`]) that applies decides. Loss
/// applies only to lossy semantics (redundant copies); latency and jitter
/// give the deadline-aware scheduler to lossy sessions (media) and earliest
/// arrival to lossless ones; throughput gives WDRR when order does not
/// matter and earliest arrival when it does (so a slow path does not hold
/// up the reorder buffer). No objective: as throughput.
pub fn scheduler_for(semantics: Semantics, objectives: &[Objective]) -> SchedulerKind {
    let top = Objective::PRECEDENCE.into_iter().find(|o| objectives.contains(o) && !(*o == Objective::Loss && semantics.lossless()));
    match top {
        Some(Objective::Loss) => SchedulerKind::Redundant,
        Some(Objective::Latency | Objective::Jitter) if !semantics.lossless() => SchedulerKind::Deadline,
        Some(Objective::Latency | Objective::Jitter) => SchedulerKind::EarliestArrival,
        _ if semantics.ordered() => SchedulerKind::EarliestArrival,
        _ => SchedulerKind::Wdrr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_decides_and_loss_needs_a_lossy_session() {
        use Objective::*;
        assert_eq!(scheduler_for(Semantics::UnorderedLossy, &[Throughput, Loss]), SchedulerKind::Redundant);
        assert_eq!(scheduler_for(Semantics::OrderedLossless, &[Throughput, Loss]), SchedulerKind::EarliestArrival);
        assert_eq!(scheduler_for(Semantics::UnorderedLossless, &[Throughput]), SchedulerKind::Wdrr);
        assert_eq!(scheduler_for(Semantics::OrderedLossy, &[Jitter, Throughput]), SchedulerKind::Deadline);
        assert_eq!(scheduler_for(Semantics::OrderedLossless, &[]), SchedulerKind::EarliestArrival);
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for s in Semantics::ALL {
            assert_eq!(s.name().parse::<Semantics>().unwrap(), s);
        }
        assert!("ordered".parse::<Semantics>().is_err());
        assert!(Objective::parse("speed").is_err());
    }
}

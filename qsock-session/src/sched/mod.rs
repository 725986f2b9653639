//! Striping schedulers behind one trait (§III-B, "data delivery"): each
//! decides, for the message at the head of the session's queue, which
//! path or paths carry it, or that it waits, or (a droppable message no
//! path can deliver by its deadline) that it is dropped at the sender.
use crate::SchedulerKind;

mod deadline;
mod earliest;
mod redundant;
mod round_robin;
mod wdrr;

pub use deadline::Deadline;
pub use earliest::EarliestArrival;
pub use redundant::Redundant;
pub use round_robin::RoundRobin;
pub use wdrr::Wdrr;

/// What a scheduler sees of one path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathView {
    /// Carries traffic (joined, not suspect).
    pub usable: bool,
    /// Its window has room for the message now.
    pub has_room: bool,
    /// Predicted time until the message would arrive if sent now on it,
    /// µs ([`crate::path::PathEstimator::predicted_arrival_us`]).
    pub arrival_us: u64,
    /// Measured delivery rate, bit/s (0: not measured yet).
    pub delivery_bps: u64,
}

/// What a scheduler sees of the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageView {
    /// Its size, bytes.
    pub bytes: u64,
    /// Time left to its deadline, µs; `None`: it has none.
    pub deadline_in_us: Option<u64>,
    /// It may be dropped.
    pub droppable: bool,
}

/// A scheduler's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send on these paths (indices into the views; the first is the main copy).
    Send(Vec<usize>),
    /// Nothing now: a window must open first.
    Wait,
    /// Drop it at the sender (counted): no path can deliver it in time.
    Drop,
}

/// A striping scheduler.
pub trait Scheduler: Send {
    /// Its kind.
    fn kind(&self) -> SchedulerKind;
    /// The decision for `msg` over `paths` (the session's paths, by index).
    fn schedule(&mut self, msg: &MessageView, paths: &[PathView]) -> Decision;
}

/// A new scheduler of `kind`.
pub fn new(kind: SchedulerKind) -> Box<dyn Scheduler> {
    match kind {
        SchedulerKind::RoundRobin => Box::new(RoundRobin::default()),
        SchedulerKind::Wdrr => Box::new(Wdrr::default()),
        SchedulerKind::EarliestArrival => Box::new(EarliestArrival),
        SchedulerKind::Deadline => Box::new(Deadline),
        SchedulerKind::Redundant => Box::new(Redundant),
    }
}

/// The usable path with the earliest predicted arrival, if any.
pub(crate) fn earliest(paths: &[PathView]) -> Option<usize> {
    paths.iter().enumerate().filter(|(_, p)| p.usable).min_by_key(|(_, p)| p.arrival_us).map(|(i, _)| i)
}

#[cfg(test)]
pub(crate) fn path(arrival_us: u64, has_room: bool, delivery_bps: u64) -> PathView {
    PathView { usable: true, has_room, arrival_us, delivery_bps }
}

//! Earliest arrival: each message on the path predicted to deliver it
//! first (one-way delay plus what is queued ahead at the delivery rate),
//! waiting for that path's window rather than sending on a path that would
//! deliver it later: a slow path then gets only what it can deliver before
//! the fast one would, so it does not hold up an ordered session
//! (the idea of BLEST and ECF for MPTCP).
use super::{earliest, Decision, MessageView, PathView, Scheduler};
use crate::SchedulerKind;

/// See the module docs.
pub struct EarliestArrival;

impl Scheduler for EarliestArrival {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::EarliestArrival
    }

    fn schedule(&mut self, _msg: &MessageView, paths: &[PathView]) -> Decision {
        match earliest(paths) {
            Some(i) if paths[i].has_room => Decision::Send(vec![i]),
            _ => Decision::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::path;

    #[test]
    fn waits_for_the_fast_path_unless_the_slow_one_wins() {
        let m = MessageView { bytes: 1000, deadline_in_us: None, droppable: false };
        assert_eq!(EarliestArrival.schedule(&m, &[path(5_000, false, 0), path(35_000, true, 0)]), Decision::Wait);
        assert_eq!(EarliestArrival.schedule(&m, &[path(50_000, false, 0), path(35_000, true, 0)]), Decision::Send(vec![1]));
    }
}

//! Deadline-aware striping for media: a message goes on the path predicted
//! to deliver it first if that is before its deadline; a droppable message
//! no path can deliver in time is dropped at the sender (it would only
//! delay the ones behind it); a non-droppable one goes on the earliest
//! path and, when that is not safely in time ([`SAFETY`] of the time left)
//! or no path is, a copy goes on the next-earliest path too. Messages
//! without a deadline go by earliest arrival.
use super::{Decision, MessageView, PathView, Scheduler};
use crate::SchedulerKind;

/// A prediction within this fraction of the time left is safely in time.
pub const SAFETY: f64 = 0.7;

/// See the module docs.
pub struct Deadline;

impl Scheduler for Deadline {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Deadline
    }

    fn schedule(&mut self, msg: &MessageView, paths: &[PathView]) -> Decision {
        let mut order: Vec<usize> = (0..paths.len()).filter(|&i| paths[i].usable).collect();
        order.sort_by_key(|&i| paths[i].arrival_us);
        let Some(&first) = order.first() else {
            return if msg.droppable && msg.deadline_in_us == Some(0) { Decision::Drop } else { Decision::Wait };
        };
        let Some(left) = msg.deadline_in_us else {
            return if paths[first].has_room { Decision::Send(vec![first]) } else { Decision::Wait };
        };
        let in_time = |i: usize| paths[i].arrival_us <= left;
        if !in_time(first) && msg.droppable {
            return Decision::Drop;
        }
        if !paths[first].has_room {
            // Another path in time with room now beats waiting for the best one.
            return match order.iter().find(|&&i| paths[i].has_room && in_time(i)) {
                Some(&i) if msg.droppable || (paths[i].arrival_us as f64) <= SAFETY * left as f64 => Decision::Send(vec![i]),
                _ => Decision::Wait,
            };
        }
        let safe = (paths[first].arrival_us as f64) <= SAFETY * left as f64;
        match order.get(1) {
            Some(&second) if !msg.droppable && !safe && paths[second].has_room => Decision::Send(vec![first, second]),
            _ => Decision::Send(vec![first]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::path;

    fn msg(left_us: u64, droppable: bool) -> MessageView {
        MessageView { bytes: 1000, deadline_in_us: Some(left_us), droppable }
    }

    #[test]
    fn in_time_on_the_earliest_path_dropped_when_none_is_duplicated_when_unsafe() {
        let paths = [path(10_000, true, 0), path(40_000, true, 0)];
        assert_eq!(Deadline.schedule(&msg(100_000, true), &paths), Decision::Send(vec![0]));
        assert_eq!(Deadline.schedule(&msg(5_000, true), &paths), Decision::Drop);
        assert_eq!(Deadline.schedule(&msg(12_000, false), &paths), Decision::Send(vec![0, 1]));
        assert_eq!(Deadline.schedule(&msg(100_000, false), &paths), Decision::Send(vec![0]));
        // The best path is full: the other one if it is in time.
        let full = [path(10_000, false, 0), path(40_000, true, 0)];
        assert_eq!(Deadline.schedule(&msg(100_000, true), &full), Decision::Send(vec![1]));
        assert_eq!(Deadline.schedule(&msg(30_000, true), &full), Decision::Wait);
    }
}

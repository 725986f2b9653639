//! Strict round robin: path after path, one message each, waiting for the
//! next path's window even when another has room. The baseline whose
//! head-of-line blocking the paper warns of.
use super::{Decision, MessageView, PathView, Scheduler};
use crate::SchedulerKind;

/// See the module docs.
#[derive(Default)]
pub struct RoundRobin {
    next: usize,
}

impl Scheduler for RoundRobin {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::RoundRobin
    }

    fn schedule(&mut self, _msg: &MessageView, paths: &[PathView]) -> Decision {
        for step in 0..paths.len() {
            let i = (self.next + step) % paths.len();
            if paths[i].usable {
                if !paths[i].has_room {
                    return Decision::Wait;
                }
                self.next = i + 1;
                return Decision::Send(vec![i]);
            }
        }
        Decision::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::path;

    #[test]
    fn takes_turns_and_waits_for_the_turns_path() {
        let m = MessageView { bytes: 1000, deadline_in_us: None, droppable: false };
        let mut s = RoundRobin::default();
        let both = [path(5_000, true, 0), path(35_000, true, 0)];
        assert_eq!(s.schedule(&m, &both), Decision::Send(vec![0]));
        assert_eq!(s.schedule(&m, &[path(5_000, true, 0), path(35_000, false, 0)]), Decision::Wait);
        assert_eq!(s.schedule(&m, &both), Decision::Send(vec![1]));
    }
}

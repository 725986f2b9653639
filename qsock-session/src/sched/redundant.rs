//! Redundant: every message on every usable path whose window has room
//! (the loss objective of a lossy session; the receiver keeps the first copy).
use super::{Decision, MessageView, PathView, Scheduler};
use crate::SchedulerKind;

/// See the module docs.
pub struct Redundant;

impl Scheduler for Redundant {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Redundant
    }

    fn schedule(&mut self, _msg: &MessageView, paths: &[PathView]) -> Decision {
        let mut on: Vec<usize> = (0..paths.len()).filter(|&i| paths[i].usable && paths[i].has_room).collect();
        on.sort_by_key(|&i| paths[i].arrival_us);
        if on.is_empty() {
            Decision::Wait
        } else {
            Decision::Send(on)
        }
    }
}

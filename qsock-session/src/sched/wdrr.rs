//! Weighted deficit round robin (Shreedhar and Varghese, 1996) with quanta
//! from each path's measured delivery rate: the paper's proposal for the
//! throughput objective. Work-conserving: a path whose window is full
//! keeps its deficit and the turn passes on.
use super::{Decision, MessageView, PathView, Scheduler};
use crate::{path::MSS, SchedulerKind};

/// See the module docs.
#[derive(Default)]
pub struct Wdrr {
    current: usize,
    /// The current path has had its quantum for this visit.
    visited: bool,
    deficit: Vec<u64>,
}

/// The quantum of a path, bytes: [`MSS`] for the slowest path, in
/// proportion to delivery rate for the others (unmeasured paths count as
/// the slowest).
pub fn quantum(rate_bps: u64, slowest_bps: u64) -> u64 {
    if rate_bps == 0 || slowest_bps == 0 {
        return MSS;
    }
    (MSS as u128 * rate_bps as u128 / slowest_bps as u128).min(64 * MSS as u128) as u64
}

impl Scheduler for Wdrr {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Wdrr
    }

    fn schedule(&mut self, msg: &MessageView, paths: &[PathView]) -> Decision {
        self.deficit.resize(paths.len(), 0);
        if !paths.iter().any(|p| p.usable && p.has_room) {
            return Decision::Wait;
        }
        let slowest = paths.iter().filter(|p| p.usable && p.delivery_bps > 0).map(|p| p.delivery_bps).min().unwrap_or(0);
        // Each visit of a path adds its quantum once; it sends while its deficit lasts, then the turn passes.
        for _ in 0..2 * paths.len() + 1 {
            let i = self.current % paths.len();
            let p = &paths[i];
            if p.usable && p.has_room {
                let q = quantum(p.delivery_bps, slowest).max(msg.bytes);
                if !self.visited {
                    // A path that was full keeps at most two quanta: no burst after it drains.
                    self.deficit[i] = (self.deficit[i] + q).min(2 * q);
                    self.visited = true;
                }
                if self.deficit[i] >= msg.bytes {
                    self.deficit[i] -= msg.bytes;
                    return Decision::Send(vec![i]);
                }
            } else if !p.usable {
                self.deficit[i] = 0;
            }
            self.current = i + 1;
            self.visited = false;
        }
        Decision::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::path;

    #[test]
    fn shares_follow_the_delivery_rates() {
        let m = MessageView { bytes: MSS, deadline_in_us: None, droppable: false };
        let mut s = Wdrr::default();
        let paths = [path(5_000, true, 8_000_000), path(35_000, true, 4_000_000)];
        let mut count = [0; 2];
        for _ in 0..300 {
            let Decision::Send(p) = s.schedule(&m, &paths) else { panic!() };
            count[p[0]] += 1;
        }
        assert_eq!(count, [200, 100]);
        // A full window passes the turn on.
        let paths = [path(5_000, false, 8_000_000), path(35_000, true, 4_000_000)];
        assert_eq!(s.schedule(&m, &paths), Decision::Send(vec![1]));
    }
}

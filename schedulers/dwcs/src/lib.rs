//! Dynamic Window-Constrained Scheduling (DWCS), the pure algorithm.
//!
//! Sources: R. West, K. Schwan, *Dynamic Window-Constrained Scheduling for
//! Multimedia Applications*, IEEE ICMCS 1999; R. West, Y. Zhang, K. Schwan,
//! C. Poellabauer, *Dynamic Window-Constrained Scheduling of Real-Time
//! Streams in Media Servers*, IEEE Trans. Computers 53(6), 2004; Q.Sockets
//! §3 (`ipg`, `oln`/`old`, `DWCS_NON_DROPPABLE`). The project's statement of
//! the rules is `shared/notes/dwcs-edf.md`.
//!
//! This crate has no kernel dependency: [`Stream`] holds the window rules,
//! [`precedence`] orders head packets, [`scheduler::Dwcs`] schedules many
//! streams in O(log n) per decision, and [`module::DwcsModule`] is the
//! qsockd scheduler module that runs the same window rules per frame in the
//! kernel data path.
#![warn(missing_docs)]
use std::cmp::Ordering;

pub use qsock_common::Window;

pub mod module;
pub mod scheduler;

/// A window constraint x/y: at most `x` of any `y` consecutive deadlines may
/// be missed (Q.Sockets `oln`/`old`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowConstraint {
    /// Misses allowed per window (x, `oln`).
    pub x: u32,
    /// Window length in deadlines (y, `old`), > 0.
    pub y: u32,
}

impl WindowConstraint {
    /// `x/y`; errors unless `0 <= x <= y` and `y > 0`.
    pub fn new(x: u32, y: u32) -> Result<Self, String> {
        if y == 0 || x > y {
            return Err(format!("window constraint {x}/{y} needs y > 0 and x <= y"));
        }
        Ok(Self { x, y })
    }
}

/// Per-stream DWCS state: the original and the current window constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    /// Original constraint x/y.
    pub original: WindowConstraint,
    /// Current x'.
    pub x: u32,
    /// Current y'.
    pub y: u32,
    /// The window constraint was violated (a miss with x' = 0).
    pub violated: bool,
    /// Every packet is non-droppable (sent late rather than dropped).
    pub non_droppable: bool,
}

/// What happens to a head packet that missed its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// Dropped; the loss fits the window.
    Dropped,
    /// Sent late: non-droppable, or the window constraint is violated.
    SentLate,
}

impl Stream {
    /// A stream starting at its original constraint.
    pub fn new(c: WindowConstraint, non_droppable: bool) -> Self {
        Self { original: c, x: c.x, y: c.y, violated: false, non_droppable }
    }

    fn window(&self) -> Window {
        Window { x: self.x, y: self.y, violated: self.violated }
    }

    fn set(&mut self, w: Window) {
        (self.x, self.y, self.violated) = (w.x, w.y, w.violated);
    }

    /// Adjusts x'/y' after the head packet was sent by its deadline
    /// ([`Window::on_met`], the rules the kernel data path runs too).
    pub fn on_sent_in_time(&mut self) {
        self.set(self.window().on_met(self.original.x, self.original.y));
    }

    /// Adjusts x'/y' after the head packet missed its deadline
    /// ([`Window::on_missed`]) and says whether it is dropped or sent late.
    pub fn on_missed(&mut self) -> Miss {
        let (w, may_drop) = self.window().on_missed(self.original.x, self.original.y);
        self.set(w);
        if may_drop && !self.non_droppable {
            Miss::Dropped
        } else {
            Miss::SentLate
        }
    }
}

/// The head packet of a stream as the precedence rules see it.
#[derive(Clone, Copy, Debug)]
pub struct Head {
    /// Absolute deadline, ns.
    pub deadline_ns: u64,
    /// Current x'.
    pub x: u32,
    /// Current y'.
    pub y: u32,
    /// Arrival order, for first come first served.
    pub arrival: u64,
}

/// DWCS precedence: `Less` means `a` goes first. Rules, first that decides:
/// earlier deadline; lower x'/y'; both x'/y' zero: larger y'; equal non-zero
/// x'/y': smaller x'; else first come first served.
pub fn precedence(a: &Head, b: &Head) -> Ordering {
    a.deadline_ns
        .cmp(&b.deadline_ns)
        .then_with(|| {
            // Compare x_a/y_a with x_b/y_b without division (y > 0 always).
            (a.x as u64 * b.y as u64).cmp(&(b.x as u64 * a.y as u64))
        })
        .then_with(|| if a.x == 0 && b.x == 0 { b.y.cmp(&a.y) } else { a.x.cmp(&b.x) })
        .then_with(|| a.arrival.cmp(&b.arrival))
}

/// The worst window of a stream as a receiver sees it: the largest number
/// of misses (lost or late) among any `y` consecutive deadlines of `missed`
/// (one entry per deadline, in order). With fewer than `y` deadlines, the
/// misses among all of them. The window constraint x/y holds iff this is ≤ x.
pub fn worst_window(missed: &[bool], y: usize) -> usize {
    let y = y.max(1);
    let mut in_window = missed.iter().take(y).filter(|m| **m).count();
    let mut worst = in_window;
    for i in y..missed.len() {
        in_window += missed[i] as usize;
        in_window -= missed[i - y] as usize;
        worst = worst.max(in_window);
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(d: u64, x: u32, y: u32, arrival: u64) -> Head {
        Head { deadline_ns: d, x, y, arrival }
    }

    #[test]
    fn precedence_rules_in_order() {
        assert_eq!(precedence(&head(1, 5, 5, 9), &head(2, 0, 5, 0)), Ordering::Less, "earlier deadline first");
        assert_eq!(precedence(&head(1, 1, 4, 9), &head(1, 1, 2, 0)), Ordering::Less, "lower x'/y' first");
        assert_eq!(precedence(&head(1, 0, 7, 9), &head(1, 0, 3, 0)), Ordering::Less, "both zero: larger y' first");
        assert_eq!(precedence(&head(1, 1, 2, 9), &head(1, 2, 4, 0)), Ordering::Less, "equal non-zero: smaller x' first");
        assert_eq!(precedence(&head(1, 1, 2, 0), &head(1, 1, 2, 1)), Ordering::Less, "then FCFS");
    }

    #[test]
    fn window_adjustment_follows_the_rules() {
        let mut s = Stream::new(WindowConstraint::new(1, 3).unwrap(), false);
        s.on_sent_in_time(); // y' > x': y' 3 -> 2
        assert_eq!((s.x, s.y), (1, 2));
        assert_eq!(s.on_missed(), Miss::Dropped); // x' 1 -> 0, y' 2 -> 1
        assert_eq!((s.x, s.y), (0, 1));
        assert_eq!(s.on_missed(), Miss::SentLate); // violation: y' + 1
        assert_eq!((s.x, s.y, s.violated), (0, 2, true));
        s.on_sent_in_time(); // violated: reset
        assert_eq!((s.x, s.y, s.violated), (1, 3, false));
        let mut nd = Stream::new(WindowConstraint::new(2, 4).unwrap(), true);
        assert_eq!(nd.on_missed(), Miss::SentLate, "non-droppable is never dropped");
    }

    #[test]
    fn worst_window_slides() {
        let m = [true, false, false, true, true, false, false, false];
        assert_eq!(worst_window(&m, 2), 2);
        assert_eq!(worst_window(&m, 3), 2);
        assert_eq!(worst_window(&m, 1), 1);
        assert_eq!(worst_window(&m[..2], 4), 1);
        assert_eq!(worst_window(&[], 4), 0);
    }

    #[test]
    fn bad_constraints_are_refused() {
        assert!(WindowConstraint::new(3, 2).is_err());
        assert!(WindowConstraint::new(0, 0).is_err());
    }
}

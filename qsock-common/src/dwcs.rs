//! DWCS decisions per unit at enqueue into a device's shared DWCS class (one
//! HTB class, a FIFO drained at its rate), as the egress program makes them.
//!
//! DWCS serves, among units with equal deadlines, the stream with the lower
//! current window constraint x'/y' first (West & Schwan, ICMCS 1999). One
//! FIFO cannot reorder, so precedence becomes patience: a unit whose stream
//! may still miss gives up early enough that the units of streams that may
//! not miss (x' = 0, a full sliding window, or non-droppable) still find
//! their deadlines reachable behind it.
//!
//! Pure and `const`: the eBPF program calls [`judge`]; the host tests it
//! against a simulated FIFO with periodic, jittered streams
//! (`qsock-common/tests/dwcs_model.rs`).
use crate::{window_allows_miss, Window};

/// One stream's window state as the data path keeps it
/// (`SocketCounters::dwcs_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamState {
    /// DWCS's current constraint x'/y' and violation mark.
    pub window: Window,
    /// The stream's last 64 deadlines, bit 0 the latest, 1 = missed.
    pub history: u64,
}

impl StreamState {
    /// A fresh stream with constraint `x/y`.
    pub const fn new(x: u32, y: u32) -> Self {
        Self { window: Window::new(x, y), history: 0 }
    }

    /// Whether the stream's next unit, if `droppable`, may miss its deadline
    /// without breaking the constraint `x/y`: x' > 0 and every sliding window
    /// of `y` deadlines keeps room for it.
    pub const fn may_miss(&self, x: u32, y: u32, droppable: bool) -> bool {
        droppable && self.window.x > 0 && window_allows_miss(self.history, x, y)
    }
}

/// What [`judge`] decided for one unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judgement {
    /// Predicted to leave within its patience (and so by its deadline).
    pub met: bool,
    /// Dropped (missed and droppable); a missed non-droppable unit is sent late.
    pub drop: bool,
    /// The miss breaks a window of `y` deadlines (it had no room).
    pub violation: bool,
    /// The stream's state after this unit.
    pub state: StreamState,
}

/// How long a unit may wait, ns, given `slack` to its deadline: the whole
/// slack for a unit that may not miss (`may_miss` false); otherwise
/// slack · max(1 − x'/y', 1/4), and never more than the slack less two
/// units' transmission (`unit_tx_ns` each), so the next unit of a stream
/// that may not miss still finds its deadline reachable.
pub const fn patience(slack: u64, window: Window, may_miss: bool, unit_tx_ns: u64) -> u64 {
    if !may_miss {
        return slack;
    }
    let give = if window.x > window.y { slack } else { crate::scale_down(slack, window.x, window.y) };
    let quarter = slack / 4;
    let kept = slack.saturating_sub(give);
    let graded = if kept > quarter { kept } else { quarter };
    let reserve = slack.saturating_sub(crate::sat_mul(unit_tx_ns, 2));
    if graded < reserve {
        graded
    } else {
        reserve
    }
}

/// Judges one unit of a stream with constraint `x/y` in `state`: it would
/// leave `wait_ns` from now (its start in the FIFO plus its own
/// transmission), has `slack` ns to its deadline and takes `unit_tx_ns` to
/// send. Applies the window rules of [`Window`] (met: `on_met`; missed:
/// `on_missed`). Unlike DWCS proper a missed droppable unit is dropped even
/// without room (in one FIFO a late unit delays every stream behind it);
/// that miss counts as a violation.
pub const fn judge(x: u32, y: u32, state: StreamState, wait_ns: u64, slack: u64, unit_tx_ns: u64, droppable: bool) -> Judgement {
    let room = window_allows_miss(state.history, x, y);
    let met = wait_ns <= patience(slack, state.window, state.may_miss(x, y, droppable), unit_tx_ns);
    let history = (state.history << 1) | !met as u64;
    let window = if met { state.window.on_met(x, y) } else { state.window.on_missed(x, y).0 };
    Judgement { met, drop: !met && droppable, violation: !met && !room, state: StreamState { window, history } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patience_grades_and_reserves() {
        let w = |x, y| Window::new(x, y);
        assert_eq!(patience(1000, w(1, 2), true, 10), 500);
        assert_eq!(patience(1000, w(1, 2), false, 10), 1000, "may not miss: all slack");
        assert_eq!(patience(1000, w(3, 4), true, 10), 250, "at least a quarter");
        assert_eq!(patience(1000, w(1, 4), true, 300), 400, "two units in reserve");
    }

    #[test]
    fn a_stream_without_room_is_urgent_and_waits_its_slack() {
        // 1/4 with a miss in its last 3 deadlines: no room.
        let s = StreamState { window: Window::new(1, 4), history: 0b1 };
        assert!(!s.may_miss(1, 4, true));
        let j = judge(1, 4, s, 900, 1000, 100, true);
        assert!(j.met && !j.drop && !j.violation);
        let j = judge(1, 4, s, 1001, 1000, 100, true);
        assert!(!j.met && j.drop && j.violation);
        // After three met deadlines the miss leaves the window: room again.
        let s = StreamState { window: Window::new(1, 4), history: 0b1000 };
        assert!(s.may_miss(1, 4, true));
        let j = judge(1, 4, s, 10, 1000, 100, true);
        assert!(j.met && j.state.may_miss(1, 4, true), "the old miss left the window");
        let j = judge(1, 4, s, 999, 1000, 100, true);
        assert!(j.drop && !j.violation && !j.state.may_miss(1, 4, true), "a miss with room uses it up");
    }
}

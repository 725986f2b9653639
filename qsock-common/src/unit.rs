//! Decisions per unit: a frame (the messages from a frame-start mark to the
//! frame-end mark) or a message outside frames. A unit is judged once, at
//! its first message, and then sent whole or dropped whole; the egress
//! program keeps the verdict in `SocketCounters::frame_state`.
//!
//! Pure and `const`: the eBPF program calls these, the host tests them.
use crate::{DROP_PRIO_NON_DROPPABLE, TAG_FRAME_END, TAG_FRAME_START};

/// `frame_state` value: inside a frame that was kept.
pub const FRAME_OPEN: u64 = 1;
/// `frame_state` value: inside a frame that was dropped; drop the rest.
pub const FRAME_DROPPING: u64 = 2;

/// Whether a message with `tag` starts a unit, the socket's frame state
/// being `state`: a frame-start mark always does (an unterminated frame
/// ends there), and so does any message outside a frame.
pub const fn starts_unit(state: u64, tag: u64) -> bool {
    tag & TAG_FRAME_START != 0 || state == 0
}

/// The socket's frame state after a message with `tag`: 0 outside a frame,
/// else [`FRAME_OPEN`] or [`FRAME_DROPPING`] for the rest of it. At a unit
/// start `dropped` is the unit's verdict; inside a frame it is ignored and
/// the frame's verdict stays.
pub const fn frame_state_after(state: u64, tag: u64, dropped: bool) -> u64 {
    if tag & TAG_FRAME_END != 0 {
        return 0;
    }
    if tag & TAG_FRAME_START != 0 {
        return if dropped { FRAME_DROPPING } else { FRAME_OPEN };
    }
    state
}

/// The verdict on one unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No deadline: sent, counted neither met nor late.
    Untimed,
    /// Sent, predicted to leave by its deadline.
    Met,
    /// Sent although predicted late (non-droppable or lossless).
    LateKept,
    /// Dropped: predicted to leave later than its patience allows.
    Drop,
}

/// Judges a unit with `deadline_ns` (0: none) predicted to leave at
/// `finish_ns`, at `now_ns`. A droppable unit of drop priority `prio`
/// (0..=6) is dropped when it would spend more than (prio + 1)/7 of the
/// time left to its deadline (6: all of it): lower priorities give way
/// first, and only under real pressure, because the prediction is the
/// service the class really gets ([`crate::service::predict`]). A deadline
/// already past at `now_ns` is a policy matter like any other miss: a
/// droppable unit is dropped, anything else is sent late.
pub const fn judge(deadline_ns: u64, finish_ns: u64, now_ns: u64, prio: u8, droppable: bool) -> Verdict {
    if deadline_ns == 0 {
        return Verdict::Untimed;
    }
    let slack = deadline_ns.saturating_sub(now_ns);
    let need = finish_ns.saturating_sub(now_ns);
    let p = if prio >= DROP_PRIO_NON_DROPPABLE { DROP_PRIO_NON_DROPPABLE - 1 } else { prio };
    let allowed = crate::scale_down(slack, p as u32 + 1, DROP_PRIO_NON_DROPPABLE as u32);
    if droppable && (slack == 0 || need > allowed) {
        Verdict::Drop
    } else if slack == 0 || need > slack {
        Verdict::LateKept
    } else {
        Verdict::Met
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TAG_VALID;

    #[test]
    fn a_frame_keeps_its_first_verdict() {
        let (s, m, e) = (TAG_VALID | TAG_FRAME_START, TAG_VALID, TAG_VALID | TAG_FRAME_END);
        assert!(starts_unit(0, s));
        let st = frame_state_after(0, s, true);
        assert_eq!(st, FRAME_DROPPING);
        assert!(!starts_unit(st, m));
        assert_eq!(frame_state_after(st, m, false), FRAME_DROPPING);
        assert_eq!(frame_state_after(st, e, false), 0);
        assert!(starts_unit(0, m), "a message outside frames is a unit");
    }

    #[test]
    fn judging() {
        let now = 1_000;
        assert_eq!(judge(0, 5_000, now, 0, true), Verdict::Untimed);
        assert_eq!(judge(now + 700, now + 200, now, 0, true), Verdict::Drop, "prio 0 may use 1/7");
        assert_eq!(judge(now + 700, now + 100, now, 0, true), Verdict::Met);
        assert_eq!(judge(now + 700, now + 700, now, 6, true), Verdict::Met);
        assert_eq!(judge(now + 700, now + 701, now, 6, true), Verdict::Drop);
        assert_eq!(judge(now + 700, now + 701, now, 7, false), Verdict::LateKept);
        assert_eq!(judge(now - 1, now, now, 3, true), Verdict::Drop, "past deadline, droppable");
        assert_eq!(judge(now - 1, now, now, 7, false), Verdict::LateKept, "past deadline, kept");
    }
}

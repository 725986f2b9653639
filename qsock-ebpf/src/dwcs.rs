//! The clsact egress path of DWCS streams: one class per device shared by
//! every DWCS stream, one virtual clock for it (`SharedClock`), and the
//! window decisions of `qsock_common::dwcs`.
use aya_ebpf::bindings::TC_ACT_OK;
use qsock_common::{dwcs, service, unit, *};

use crate::{
    add,
    egress::{drop_packet, enqueue},
    skb::Skb,
    SHARED_CLOCKS,
};

/// DWCS per unit (a frame, or one packet outside frames), at enqueue into the
/// device's shared DWCS class (a FIFO drained at exactly its rate). The
/// unit's deadline is the previous one + ipg (or the message's own); its
/// departure is predicted from the class's shared virtual clock, so every
/// stream ahead of it counts, at the frame's declared size, or else as if
/// the unit were at least the stream's `dwcs_unit_bytes` (the rest of a
/// frame is not here yet).
///
/// The decision is `qsock_common::dwcs::judge` (West & Schwan's window
/// rules, precedence turned into patience): a missed unit is dropped whole
/// unless it is non-droppable (then it is sent late).
///
/// # Safety
/// `c` points into the live counters entry of the packet's socket.
#[inline(always)]
pub(crate) unsafe fn dwcs(skb: &mut Skb, policy: &SocketPolicy, c: *mut SocketCounters, tag: u64, droppable: bool, now: u64, len: u64) -> i32 {
    let clock = match SHARED_CLOCKS.get_ptr_mut(&policy.classid) {
        Some(k) => k,
        None => return TC_ACT_OK,
    };
    let state = (*c).frame_state;
    let k = *clock;
    // Streams of the class send from several CPUs at once: read the clock
    // atomically here and charge it with one compare-and-swap below, so no
    // CPU overwrites another's charge (a lost charge would put every later
    // prediction one packet early while the class stays backlogged).
    let seen = core::ptr::read_volatile(&(*clock).vclock_ns);
    let finish = service::charge(seen, now, k.burst_ns, len, k.rate_bps);

    if unit::starts_unit(state, tag) {
        let (x, y) = (policy.dwcs_x, policy.dwcs_y);
        let origin = dwcs_origin(x, y);
        if (*c).dwcs_origin != origin {
            // First unit, or qchange to another constraint: a fresh window.
            (*c).dwcs_origin = origin;
            (*c).dwcs_x_now = x;
            (*c).dwcs_y_now = y;
            (*c).dwcs_violated = 0;
        }
        let before =
            dwcs::StreamState { window: Window { x: (*c).dwcs_x_now, y: (*c).dwcs_y_now, violated: (*c).dwcs_violated != 0 }, history: (*c).dwcs_history };
        let previous = (*c).dwcs_deadline_ns;
        let deadline = if tag & TAG_HAS_DEADLINE != 0 {
            tag_deadline(tag, now)
        } else if previous != 0 && previous + policy.ipg_ns >= now {
            previous + policy.ipg_ns
        } else {
            now + policy.ipg_ns
        };
        if deadline <= now {
            add(&mut (*c).past_deadline_units, 1);
        }
        (*c).dwcs_deadline_ns = deadline;
        let declared = tag_frame_bytes(tag);
        let floor = if declared != 0 { declared } else { policy.dwcs_unit_bytes as u64 };
        let unit_len = if floor > len { floor } else { len };
        let start = finish - service::tx_ns(len, k.rate_bps);
        let unit_tx = service::tx_ns(unit_len, k.rate_bps);
        let wait = (start + unit_tx).saturating_sub(now);
        let j = dwcs::judge(x, y, before, wait, deadline.saturating_sub(now), unit_tx, droppable);
        if j.met {
            add(&mut (*c).deadline_met_packets, 1);
        } else {
            if j.violation {
                add(&mut (*c).dwcs_violations, 1);
            }
            if !j.drop {
                add(&mut (*c).late_kept_packets, 1);
            }
        }
        (*c).dwcs_history = j.state.history;
        (*c).dwcs_x_now = j.state.window.x;
        (*c).dwcs_y_now = j.state.window.y;
        (*c).dwcs_violated = j.state.window.violated as u32;
        let drop = j.drop;
        (*c).frame_state = unit::frame_state_after(state, tag, drop);
        if drop {
            return drop_packet(c, true, len);
        }
    } else {
        (*c).frame_state = unit::frame_state_after(state, tag, false);
        if state == FRAME_DROPPING && droppable {
            return drop_packet(c, false, len);
        }
    }
    charge_shared(&mut (*clock).vclock_ns, seen, finish, now, k.burst_ns, len, k.rate_bps);
    enqueue(skb, policy.classid, c, now, len)
}

/// Moves a shared virtual clock from `seen` to `finish` by compare-and-swap;
/// if another CPU charged it meanwhile, charges `len` on top of what it
/// left (a few tries; the verifier needs a bound, and more than a few CPUs
/// sending into one class within the same few instructions is not seen).
///
/// # Safety
/// `vclock` points into a live shared-clock entry.
#[inline(always)]
unsafe fn charge_shared(vclock: *mut u64, seen: u64, finish: u64, now: u64, burst_ns: u64, len: u64, rate_bps: u64) {
    let (mut expected, mut new) = (seen, finish);
    let mut i = 0;
    while i < 4 {
        let (was, done) = core::intrinsics::atomic_cxchg::<u64, { core::intrinsics::AtomicOrdering::Relaxed }, { core::intrinsics::AtomicOrdering::Relaxed }>(
            vclock, expected, new,
        );
        if done {
            return;
        }
        expected = was;
        new = service::charge(was, now, burst_ns, len, rate_bps);
        i += 1;
    }
}

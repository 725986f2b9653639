//! qsock's kernel data path.
//!
//! * `qsock_egress` (clsact egress, runs before the root qdisc's enqueue):
//!   looks up the packet's socket cookie, steers managed sockets into their
//!   HTB class through `skb->priority`, applies the per-message tag carried in
//!   `skb->tstamp` (deadline, drop priority, frame marks), drops what the
//!   policy allows, keeps per-socket counters and stamps the enqueue time.
//!   DWCS streams share one class and its virtual clock; their units go
//!   through the window rules (`dwcs`).
//! * `qsock_dequeue` (BTF tracepoint `qdisc_dequeue`, where a packet leaves
//!   the root qdisc): measures each managed packet's queuing delay as
//!   dequeue time minus the enqueue stamp.
//!
//! Types and the tag layout are defined in `qsock-common`.
#![no_std]
#![no_main]
// The BPF target lacks AtomicU64::fetch_add; the intrinsic lowers to BPF_ATOMIC add.
#![allow(internal_features)]
#![feature(core_intrinsics)]

use core::ffi::c_void;
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, gen::bpf_get_socket_cookie},
    macros::{btf_tracepoint, classifier, map},
    maps::{Array, HashMap},
    programs::{BtfTracePointContext, TcContext},
};
use qsock_common::*;

#[map(name = "QSOCK_POLICIES")]
static POLICIES: HashMap<u64, SocketPolicy> = HashMap::pinned(MAX_SOCKETS, 0);

#[map(name = "QSOCK_COUNTERS")]
static COUNTERS: HashMap<u64, SocketCounters> = HashMap::pinned(MAX_SOCKETS, 0);

#[map(name = "QSOCK_SHARED_CLOCKS")]
static SHARED_CLOCKS: HashMap<u32, SharedClock> = HashMap::pinned(MAX_SHARED_CLASSES, 0);

#[map(name = "QSOCK_OFFSETS")]
static OFFSETS: Array<KernelOffsets> = Array::pinned(1, 0);

/// Queuing delays above this are treated as stale stamps and ignored, ns.
const MAX_PLAUSIBLE_DELAY_NS: u64 = 10_000_000_000;

#[inline(always)]
fn add(field: *mut u64, v: u64) {
    // SAFETY: `field` points into a map value that lives as long as the entry.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, v) };
}

#[classifier]
pub fn qsock_egress(ctx: TcContext) -> i32 {
    // SAFETY: the skb pointer is valid for the duration of the program.
    unsafe { egress(&ctx) }
}

enum Verdict {
    Pass,
    DropDeadline,
    DropFrame,
}

unsafe fn egress(ctx: &TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let cookie = bpf_get_socket_cookie(skb as *mut c_void);
    if cookie == 0 {
        return TC_ACT_OK as i32;
    }
    // Unmanaged sockets are left untouched: the HTB default class takes them.
    let policy = match POLICIES.get(&cookie) {
        Some(p) => *p,
        None => return TC_ACT_OK as i32,
    };
    let counters = match COUNTERS.get_ptr_mut(&cookie) {
        Some(c) => c,
        None => return TC_ACT_OK as i32,
    };
    let now = bpf_ktime_get_ns();
    let len = (*skb).len as u64;

    let raw = (*skb).tstamp;
    let tag = if policy.flags & POLICY_MSG_TAGS != 0 && raw & TAG_VALID != 0 { raw } else { 0 };
    let mut prio = if tag != 0 { (tag & TAG_DROP_PRIO_MASK) as u8 } else { policy.default_drop_prio };
    if policy.flags & POLICY_NON_DROPPABLE != 0 {
        prio = DROP_PRIO_NON_DROPPABLE;
    }
    let deadline = if tag & TAG_HAS_DEADLINE != 0 {
        tag & TAG_DEADLINE_MASK
    } else if policy.delay_budget_ns != 0 {
        now + policy.delay_budget_ns
    } else {
        0
    };
    let droppable = prio < DROP_PRIO_NON_DROPPABLE && policy.flags & POLICY_LOSSLESS == 0;
    if policy.flags & POLICY_DWCS != 0 {
        return dwcs(skb, &policy, counters, tag, droppable, now, len);
    }

    let frame_state = &mut (*counters).frame_state;
    if tag & TAG_FRAME_START != 0 {
        *frame_state = FRAME_OPEN;
    }

    let mut verdict = Verdict::Pass;
    if droppable && *frame_state == FRAME_DROPPING {
        verdict = Verdict::DropFrame;
    } else {
        // HTB's token bucket as a virtual clock: `vclock` is when the class's
        // tokens are back to zero (now − tokens), never earlier than now − burst.
        // A packet leaves once that clock has reached now, then costs len/rate.
        let vclock = (*counters).vclock_ns;
        let floor = now.saturating_sub(policy.burst_ns);
        let start = if vclock > floor { vclock } else { floor };
        let rate = if policy.rate_bps == 0 { 1 } else { policy.rate_bps };
        let finish = start + len * 8 * 1_000_000_000 / rate;
        let wait = start.saturating_sub(now);
        if deadline != 0 {
            // Lower drop priorities give up earlier: a message of priority p
            // may spend (p + 1) / 7 of its slack waiting (p = 6: all of it).
            let slack = if deadline > now { deadline - now } else { 0 };
            let allowed = slack * (prio as u64 + 1) / (DROP_PRIO_NON_DROPPABLE as u64);
            if droppable && (slack == 0 || wait > allowed) {
                verdict = Verdict::DropDeadline;
            } else if wait > slack {
                add(&mut (*counters).late_kept_packets, 1);
            } else {
                add(&mut (*counters).deadline_met_packets, 1);
            }
        }
        if let Verdict::Pass = verdict {
            (*counters).vclock_ns = finish;
        }
    }

    match verdict {
        Verdict::Pass => {
            if tag & TAG_FRAME_END != 0 {
                *frame_state = 0;
            }
            (*skb).priority = policy.classid;
            // Replace the tag with the enqueue time; the dequeue probe reads it.
            (*skb).tstamp = now;
            add(&mut (*counters).enq_packets, 1);
            add(&mut (*counters).enq_bytes, len);
            TC_ACT_OK as i32
        }
        Verdict::DropDeadline | Verdict::DropFrame => {
            if let Verdict::DropFrame = verdict {
                add(&mut (*counters).drop_frame_packets, 1);
                add(&mut (*counters).drop_frame_bytes, len);
            } else {
                add(&mut (*counters).drop_deadline_packets, 1);
                add(&mut (*counters).drop_deadline_bytes, len);
            }
            *frame_state = if tag & TAG_FRAME_END != 0 {
                0
            } else if *frame_state != 0 {
                FRAME_DROPPING
            } else {
                0
            };
            TC_ACT_SHOT as i32
        }
    }
}

/// DWCS per unit (a frame, or one packet outside frames), at enqueue into the
/// device's shared DWCS class (a FIFO drained at exactly its rate). The
/// unit's deadline is the previous one + ipg (or the message's own); its
/// departure is predicted from the class's shared virtual clock, so every
/// stream ahead of it counts, and as if the unit were at least the declared
/// `dwcs_unit_bytes` (the rest of a frame is not here yet).
///
/// Met or missed, the window rules of `qsock_common::Window` (West & Schwan,
/// ICMCS 1999) adjust x'/y'. A missed unit is dropped whole unless it is
/// non-droppable (then it is sent late). Unlike DWCS proper, a unit that
/// would be late with x' = 0 is dropped too: in one FIFO a late unit delays
/// every stream behind it.
///
/// Precedence (lower x'/y' first) becomes graded patience: while x' > 0 and
/// the last y deadlines leave room for one more miss (`window_allows_miss`:
/// windows slide), a unit gives up once it would finish later than
/// slack · max(1 − x'/y', 1/4) or than slack minus two units' transmission.
/// The loosest current constraints thus lose first and keep the FIFO short
/// for the streams that may not miss.
#[inline(always)]
unsafe fn dwcs(
    skb: *mut aya_ebpf::bindings::__sk_buff,
    policy: &SocketPolicy,
    c: *mut SocketCounters,
    tag: u64,
    droppable: bool,
    now: u64,
    len: u64,
) -> i32 {
    let clock = match SHARED_CLOCKS.get_ptr_mut(&policy.classid) {
        Some(k) => k,
        None => return TC_ACT_OK as i32,
    };
    let state = (*c).frame_state;
    let unit_start = tag & TAG_FRAME_START != 0 || state == 0;
    let in_frame = tag & TAG_FRAME_START != 0 || state != 0;
    let unit_end = tag & TAG_FRAME_END != 0 || !in_frame;

    let k = *clock;
    let floor = now.saturating_sub(k.burst_ns);
    let start = if k.vclock_ns > floor { k.vclock_ns } else { floor };
    // checked_div: no panic path for the verifier to reject (rate 0: no cost).
    let finish = start + (len * 8 * 1_000_000_000).checked_div(k.rate_bps).unwrap_or(0);

    let drop;
    if unit_start {
        let (x, y) = (policy.dwcs_x, policy.dwcs_y);
        let origin = dwcs_origin(x, y);
        if (*c).dwcs_origin != origin {
            // First unit, or qchange to another constraint: a fresh window.
            (*c).dwcs_origin = origin;
            (*c).dwcs_x_now = x;
            (*c).dwcs_y_now = y;
            (*c).dwcs_violated = 0;
        }
        let mut w = Window { x: (*c).dwcs_x_now, y: (*c).dwcs_y_now, violated: (*c).dwcs_violated != 0 };
        let previous = (*c).dwcs_deadline_ns;
        let deadline = if tag & TAG_HAS_DEADLINE != 0 {
            tag & TAG_DEADLINE_MASK
        } else if previous != 0 && previous + policy.ipg_ns >= now {
            previous + policy.ipg_ns
        } else {
            now + policy.ipg_ns
        };
        (*c).dwcs_deadline_ns = deadline;
        let slack = deadline.saturating_sub(now);
        // The unit is judged at its first packet, as if it were at least as
        // large as the stream declared (the rest of a frame is not here yet).
        let unit_len = if (policy.dwcs_unit_bytes as u64) > len { policy.dwcs_unit_bytes as u64 } else { len };
        let unit_finish = start + (unit_len * 8 * 1_000_000_000).checked_div(k.rate_bps).unwrap_or(0);
        let history = (*c).dwcs_history;
        let room = window_allows_miss(history, x, y);
        let patience = if droppable && w.x > 0 && room {
            let give = (slack * w.x as u64).checked_div(w.y as u64).unwrap_or(0);
            let floor = slack / 4;
            let graded = if slack - give > floor { slack - give } else { floor };
            // Keep room for two more units, so a stream that may not miss
            // (no room in its window) still finds its deadline reachable.
            let reserve = slack.saturating_sub(2 * (unit_finish - start));
            if graded < reserve { graded } else { reserve }
        } else {
            slack
        };
        let met = unit_finish.saturating_sub(now) <= patience;
        (*c).dwcs_history = (history << 1) | !met as u64;
        if met {
            w = w.on_met(x, y);
            add(&mut (*c).deadline_met_packets, 1);
            drop = false;
        } else {
            // Past its patience the unit is given up while the window has room;
            // past its deadline it is dropped even without room (a late unit
            // is a miss anyway, and sent it would delay every stream behind it
            // in the FIFO); only non-droppable units are sent late.
            w = w.on_missed(x, y).0;
            drop = droppable;
            if !room {
                // This miss makes a window of y deadlines hold more than x.
                add(&mut (*c).dwcs_violations, 1);
            }
            if !drop {
                add(&mut (*c).late_kept_packets, 1);
            }
        }
        (*c).dwcs_x_now = w.x;
        (*c).dwcs_y_now = w.y;
        (*c).dwcs_violated = w.violated as u32;
        (*c).frame_state = if unit_end {
            0
        } else if drop {
            FRAME_DROPPING
        } else {
            FRAME_OPEN
        };
        if drop {
            add(&mut (*c).drop_deadline_packets, 1);
            add(&mut (*c).drop_deadline_bytes, len);
            return TC_ACT_SHOT as i32;
        }
    } else {
        drop = state == FRAME_DROPPING && droppable;
        if unit_end {
            (*c).frame_state = 0;
        }
        if drop {
            add(&mut (*c).drop_frame_packets, 1);
            add(&mut (*c).drop_frame_bytes, len);
            return TC_ACT_SHOT as i32;
        }
    }
    (*clock).vclock_ns = finish;
    (*skb).priority = policy.classid;
    (*skb).tstamp = now;
    add(&mut (*c).enq_packets, 1);
    add(&mut (*c).enq_bytes, len);
    TC_ACT_OK as i32
}

#[btf_tracepoint(function = "qdisc_dequeue")]
pub fn qsock_dequeue(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: reads go through bpf_probe_read_kernel.
    unsafe { dequeue(&ctx) };
    0
}

unsafe fn dequeue(ctx: &BtfTracePointContext) -> Option<()> {
    let off = OFFSETS.get(0)?;
    if off.valid == 0 {
        return None;
    }
    // TP_PROTO(struct Qdisc *, const struct netdev_queue *, int packets, struct sk_buff *)
    let skb: *const u8 = ctx.arg(3);
    if skb.is_null() {
        return None;
    }
    let sk: *const u8 = bpf_probe_read_kernel(skb.add(off.skb_sk as usize) as *const *const u8).ok()?;
    if sk.is_null() {
        return None;
    }
    let cookie: u64 = bpf_probe_read_kernel(sk.add(off.sk_cookie as usize) as *const u64).ok()?;
    if cookie == 0 {
        return None;
    }
    let c = COUNTERS.get_ptr_mut(&cookie)?;
    let stamp: u64 = bpf_probe_read_kernel(skb.add(off.skb_tstamp as usize) as *const u64).ok()?;
    let now = bpf_ktime_get_ns();
    if stamp == 0 || stamp > now || now - stamp > MAX_PLAUSIBLE_DELAY_NS {
        return None;
    }
    let delay = now - stamp;
    let len: u32 = bpf_probe_read_kernel(skb.add(off.skb_len as usize) as *const u32).ok()?;
    add(&mut (*c).deq_packets, 1);
    add(&mut (*c).deq_bytes, len as u64);
    add(&mut (*c).delay_sum_ns, delay);
    let b = delay_bucket(delay);
    if b < DELAY_BUCKETS {
        add(&mut (*c).delay_hist[b], 1);
    }
    if delay > (*c).delay_max_ns {
        (*c).delay_max_ns = delay;
    }
    Some(())
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

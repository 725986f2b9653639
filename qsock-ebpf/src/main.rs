//! qsock's kernel data path.
//!
//! * `qsock_egress` (clsact egress, runs before the root qdisc's enqueue):
//!   looks up the packet's socket cookie, steers managed sockets into their
//!   HTB class through `skb->priority`, applies the per-message tag carried in
//!   `skb->tstamp` (deadline, drop priority, frame marks), drops what the
//!   policy allows, keeps per-socket counters and stamps the enqueue time.
//!   A unit (a frame, or a message outside frames) is judged once, at its
//!   first message, against the service its class really gets
//!   (`qsock_common::service`), and then sent or dropped whole
//!   (`qsock_common::unit`). DWCS streams share one class and its virtual
//!   clock; their units go through the window rules (`dwcs`).
//! * `qsock_dequeue` (BTF tracepoint `qdisc_dequeue`, where a packet leaves
//!   the root qdisc): counts what left, measures each managed packet's
//!   queuing delay as dequeue time minus the enqueue stamp, and the class's
//!   drain rate while it had a backlog (`service::ServiceMeter`).
//!
//! Types and the tag layout are defined in `qsock-common`.
#![no_std]
#![no_main]
// The BPF target lacks AtomicU64::fetch_add; the intrinsic lowers to BPF_ATOMIC add.
#![allow(internal_features)]
#![feature(core_intrinsics)]

use core::ffi::c_void;
use core::intrinsics::{atomic_cxchg, atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, gen::bpf_get_socket_cookie},
    macros::{btf_tracepoint, classifier, map},
    maps::{Array, HashMap},
    programs::{BtfTracePointContext, TcContext},
};
use qsock_common::{dwcs, service, unit, *};

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
    let droppable = prio < DROP_PRIO_NON_DROPPABLE && policy.flags & POLICY_LOSSLESS == 0;
    if policy.flags & POLICY_DWCS != 0 {
        return dwcs(skb, &policy, counters, tag, droppable, now, len);
    }

    let state = (*counters).frame_state;
    if unit::starts_unit(state, tag) {
        // A unit (frame or message) is judged once, whole, at its first message.
        let deadline = if tag & TAG_HAS_DEADLINE != 0 {
            tag_deadline(tag, now)
        } else if policy.delay_budget_ns != 0 {
            now + policy.delay_budget_ns
        } else {
            0
        };
        if deadline != 0 && deadline <= now {
            add(&mut (*counters).past_deadline_units, 1);
        }
        let declared = tag_frame_bytes(tag);
        let unit_bytes = if declared > len { declared } else { len };
        let backlog = (*counters).backlog_bytes();
        let class = service::ClassModel { rate_bps: policy.rate_bps, ceil_bps: policy.ceil_bps, burst_ns: policy.burst_ns };
        let measured = (*counters).meter.rate_at(now);
        let p = service::predict(class, (*counters).vclock_ns, now, backlog, unit_bytes, len, measured);
        let verdict = unit::judge(deadline, p.finish_ns, now, prio, droppable);
        (*counters).frame_state = unit::frame_state_after(state, tag, verdict == unit::Verdict::Drop);
        match verdict {
            unit::Verdict::Drop => return drop_packet(counters, true, len),
            unit::Verdict::LateKept => add(&mut (*counters).late_kept_packets, 1),
            unit::Verdict::Met => add(&mut (*counters).deadline_met_packets, 1),
            unit::Verdict::Untimed => {}
        }
        (*counters).vclock_ns = p.vclock_after_ns;
        (*counters).frame_credit_bytes = unit_bytes - len;
    } else {
        (*counters).frame_state = unit::frame_state_after(state, tag, false);
        if state == FRAME_DROPPING && droppable {
            return drop_packet(counters, false, len);
        }
        // The rest of a kept frame: paid for when the frame was judged, up
        // to its declared size; beyond that it costs the clock now.
        let credit = (*counters).frame_credit_bytes;
        if credit >= len {
            (*counters).frame_credit_bytes = credit - len;
        } else {
            (*counters).frame_credit_bytes = 0;
            (*counters).vclock_ns = service::charge((*counters).vclock_ns, now, policy.burst_ns, len - credit, policy.rate_bps);
        }
    }
    enqueue(skb, policy.classid, counters, now, len)
}

/// Lets a packet of a managed socket into its class: steers it by
/// `skb->priority`, replaces the tag with the enqueue time (the dequeue
/// probe reads it) and counts it.
#[inline(always)]
unsafe fn enqueue(skb: *mut aya_ebpf::bindings::__sk_buff, classid: u32, c: *mut SocketCounters, now: u64, len: u64) -> i32 {
    (*skb).priority = classid;
    (*skb).tstamp = now;
    add(&mut (*c).enq_packets, 1);
    add(&mut (*c).enq_bytes, len);
    (*c).last_enq_ns = now;
    TC_ACT_OK as i32
}

/// Drops a packet: the first of a unit judged late, or the rest of a
/// dropped frame.
#[inline(always)]
unsafe fn drop_packet(c: *mut SocketCounters, first_of_unit: bool, len: u64) -> i32 {
    if first_of_unit {
        add(&mut (*c).drop_deadline_packets, 1);
        add(&mut (*c).drop_deadline_bytes, len);
    } else {
        add(&mut (*c).drop_frame_packets, 1);
        add(&mut (*c).drop_frame_bytes, len);
    }
    TC_ACT_SHOT as i32
}

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
        let before = dwcs::StreamState {
            window: Window { x: (*c).dwcs_x_now, y: (*c).dwcs_y_now, violated: (*c).dwcs_violated != 0 },
            history: (*c).dwcs_history,
        };
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
#[inline(always)]
unsafe fn charge_shared(vclock: *mut u64, seen: u64, finish: u64, now: u64, burst_ns: u64, len: u64, rate_bps: u64) {
    let (mut expected, mut new) = (seen, finish);
    let mut i = 0;
    while i < 4 {
        let (was, done) = atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(vclock, expected, new);
        if done {
            return;
        }
        expected = was;
        new = service::charge(was, now, burst_ns, len, rate_bps);
        i += 1;
    }
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
    // TP_PROTO(struct Qdisc *, const struct netdev_queue *, int packets, struct sk_buff *):
    // a bulk dequeue hands over `packets` skbs chained by skb->next.
    let packets: i32 = ctx.arg(2);
    let mut skb: *const u8 = ctx.arg(3);
    let now = bpf_ktime_get_ns();
    let mut i = 0;
    while i < MAX_BULK_DEQUEUE && (i as i32) < packets && !skb.is_null() {
        account_dequeue(off, skb, now);
        skb = bpf_probe_read_kernel(skb.add(off.skb_next as usize) as *const *const u8).ok()?;
        i += 1;
    }
    Some(())
}

/// Counts one dequeued skb of a managed socket: bytes, the drain-rate
/// meter, and its queuing delay.
#[inline(always)]
unsafe fn account_dequeue(off: &KernelOffsets, skb: *const u8, now: u64) -> Option<()> {
    let sk: *const u8 = bpf_probe_read_kernel(skb.add(off.skb_sk as usize) as *const *const u8).ok()?;
    if sk.is_null() {
        return None;
    }
    let cookie: u64 = bpf_probe_read_kernel(sk.add(off.sk_cookie as usize) as *const u64).ok()?;
    if cookie == 0 {
        return None;
    }
    let c = COUNTERS.get_ptr_mut(&cookie)?;
    let len: u32 = bpf_probe_read_kernel(skb.add(off.skb_len as usize) as *const u32).ok()?;
    add(&mut (*c).deq_packets, 1);
    add(&mut (*c).deq_bytes, len as u64);
    let stamp: u64 = bpf_probe_read_kernel(skb.add(off.skb_tstamp as usize) as *const u64).ok()?;
    if stamp == 0 || stamp > now || now - stamp > MAX_PLAUSIBLE_DELAY_NS {
        return None;
    }
    // Dequeues of one root qdisc are serialised by its lock: plain updates.
    (*c).meter = (*c).meter.on_dequeue(now, len as u64, stamp);
    if stamp >= (*c).last_enq_ns {
        // The newest packet left: the class holds nothing of this socket, so
        // whatever enq − deq still says left without the probe seeing it.
        (*c).unseen_bytes = (*c).enq_bytes.saturating_sub((*c).deq_bytes);
        (*c).unseen_packets = (*c).enq_packets.saturating_sub((*c).deq_packets);
    }
    let delay = now - stamp;
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

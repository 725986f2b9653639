//! The clsact egress path of sockets with their own class: a unit (a frame,
//! or a message outside frames) is judged once, at its first message,
//! against the service its class really gets (`qsock_common::service`),
//! then sent or dropped whole (`qsock_common::unit`).
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_ktime_get_ns,
    programs::TcContext,
};
use qsock_common::{service, unit, *};

use crate::{add, skb::Skb, COUNTERS, POLICIES};

/// Judges and steers one packet; `None` for a packet qsock does not manage.
#[inline(always)]
pub(crate) fn try_egress(ctx: &TcContext) -> Option<i32> {
    let mut skb = Skb::of(ctx);
    let cookie = skb.socket_cookie();
    if cookie == 0 {
        return None;
    }
    // SAFETY: a copy of the value is taken at once; qsockd replaces, never frees, it under us.
    let policy = unsafe { *POLICIES.get(&cookie)? };
    // A raw pointer, not a reference: other CPUs update the same entry.
    let counters = COUNTERS.get_ptr_mut(&cookie)?;
    // SAFETY: `counters` points into a live map entry for this run.
    Some(unsafe { egress(&mut skb, &policy, counters) })
}

/// # Safety
/// `counters` points into the live counters entry of the packet's socket.
#[inline(always)]
unsafe fn egress(skb: &mut Skb, policy: &SocketPolicy, counters: *mut SocketCounters) -> i32 {
    let now = bpf_ktime_get_ns();
    let len = skb.len();

    let raw = skb.tstamp();
    let tag = if policy.flags & POLICY_MSG_TAGS != 0 && raw & TAG_VALID != 0 { raw } else { 0 };
    let mut prio = if tag != 0 { (tag & TAG_DROP_PRIO_MASK) as u8 } else { policy.default_drop_prio };
    if policy.flags & POLICY_NON_DROPPABLE != 0 {
        prio = DROP_PRIO_NON_DROPPABLE;
    }
    let droppable = prio < DROP_PRIO_NON_DROPPABLE && policy.flags & POLICY_LOSSLESS == 0;
    if policy.flags & POLICY_DWCS != 0 {
        return crate::dwcs::dwcs(skb, policy, counters, tag, droppable, now, len);
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
///
/// # Safety
/// `c` points into a live counters entry.
#[inline(always)]
pub(crate) unsafe fn enqueue(skb: &mut Skb, classid: u32, c: *mut SocketCounters, now: u64, len: u64) -> i32 {
    skb.steer(classid, now);
    add(&mut (*c).enq_packets, 1);
    add(&mut (*c).enq_bytes, len);
    (*c).last_enq_ns = now;
    TC_ACT_OK
}

/// Drops a packet: the first of a unit judged late, or the rest of a
/// dropped frame.
///
/// # Safety
/// `c` points into a live counters entry.
#[inline(always)]
pub(crate) unsafe fn drop_packet(c: *mut SocketCounters, first_of_unit: bool, len: u64) -> i32 {
    if first_of_unit {
        add(&mut (*c).drop_deadline_packets, 1);
        add(&mut (*c).drop_deadline_bytes, len);
    } else {
        add(&mut (*c).drop_frame_packets, 1);
        add(&mut (*c).drop_frame_bytes, len);
    }
    TC_ACT_SHOT
}

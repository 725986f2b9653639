//! The dequeue probe (BTF tracepoint `qdisc_dequeue`, where a packet leaves
//! the root qdisc): counts what left, measures each managed packet's
//! queuing delay (dequeue time minus the enqueue stamp) and its class's
//! drain rate while it had a backlog (`service::ServiceMeter`).
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    programs::BtfTracePointContext,
};
use qsock_common::*;

use crate::{add, COUNTERS, OFFSETS};

/// Queuing delays above this are treated as stale stamps and ignored, ns.
const MAX_PLAUSIBLE_DELAY_NS: u64 = 10_000_000_000;

/// Accounts every skb of one dequeue; `None` where something cannot be read.
#[inline(always)]
pub(crate) fn try_dequeue(ctx: &BtfTracePointContext) -> Option<()> {
    // SAFETY: kernel memory is only read through bpf_probe_read_kernel.
    unsafe { dequeue(ctx) }
}

/// # Safety
/// Reads the tracepoint's arguments as `qdisc_dequeue`'s prototype has them.
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
///
/// # Safety
/// `skb` is a kernel `struct sk_buff *` (read only through the helper).
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

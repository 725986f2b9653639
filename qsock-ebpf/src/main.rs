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

use aya_ebpf::{
    bindings::TC_ACT_OK,
    macros::{btf_tracepoint, classifier, map},
    maps::{Array, HashMap},
    programs::{BtfTracePointContext, TcContext},
};
use qsock_common::*;

mod dequeue;
mod dwcs;
mod egress;
mod skb;

#[map(name = "QSOCK_POLICIES")]
static POLICIES: HashMap<u64, SocketPolicy> = HashMap::pinned(MAX_SOCKETS, 0);

#[map(name = "QSOCK_COUNTERS")]
static COUNTERS: HashMap<u64, SocketCounters> = HashMap::pinned(MAX_SOCKETS, 0);

#[map(name = "QSOCK_SHARED_CLOCKS")]
static SHARED_CLOCKS: HashMap<u32, SharedClock> = HashMap::pinned(MAX_SHARED_CLASSES, 0);

#[map(name = "QSOCK_OFFSETS")]
static OFFSETS: Array<KernelOffsets> = Array::pinned(1, 0);

/// Adds `v` to a counter that other CPUs update too (one BPF atomic add).
#[inline(always)]
pub(crate) fn add(field: *mut u64, v: u64) {
    // SAFETY: `field` points into a map value that lives as long as its entry
    // (an entry is only removed by qsockd, after the socket's last packet).
    unsafe { core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(field, v) };
}

#[classifier]
pub fn qsock_egress(ctx: TcContext) -> i32 {
    // A packet the program cannot judge (no cookie, an unmanaged socket, a
    // missing map entry) goes on untouched: the HTB default class takes it.
    egress::try_egress(&ctx).unwrap_or(TC_ACT_OK)
}

#[btf_tracepoint(function = "qdisc_dequeue")]
pub fn qsock_dequeue(ctx: BtfTracePointContext) -> i32 {
    // What cannot be read is not counted; the tracepoint's return is ignored.
    let _ = dequeue::try_dequeue(&ctx);
    0
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

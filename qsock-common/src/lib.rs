//! Types and constants shared by the eBPF data path (`qsock-ebpf`) and user
//! space (`qsock`, `qsockd`). This crate is the only place they are defined.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of padding surprises so the
//! same bytes mean the same thing on both sides of a BPF map.
#![warn(missing_docs)]
#![no_std]

pub mod dwcs;
pub mod service;
pub mod unit;

pub use unit::{FRAME_DROPPING, FRAME_OPEN};

/// HTB major number of the root qdisc qsock installs (`1:`).
pub const ROOT_MAJOR: u32 = 1;
/// Minor of the HTB root class that carries the link rate (`1:1`).
pub const ROOT_CLASS_MINOR: u32 = 0x1;
/// Minor of the best-effort class, the HTB default for unmanaged traffic (`1:fffe`).
pub const BEST_EFFORT_MINOR: u32 = 0xfffe;
/// First minor handed to a managed socket's class (`1:10`).
pub const FIRST_SOCKET_MINOR: u32 = 0x10;
/// Last minor handed to a managed socket's class (`1:fff0`).
pub const LAST_SOCKET_MINOR: u32 = 0xfff0;

/// Builds a tc classid (`major:minor`) as the kernel stores it: `major << 16 | minor`.
pub const fn classid(major: u32, minor: u32) -> u32 {
    (major << 16) | (minor & 0xffff)
}

/// Maximum number of sockets one device can manage (BPF hash map size).
pub const MAX_SOCKETS: u32 = 65_536;

/// Name of the pinned map of [`SocketPolicy`] keyed by socket cookie (u64).
pub const MAP_POLICIES: &str = "QSOCK_POLICIES";
/// Name of the pinned map of [`SocketCounters`] keyed by socket cookie (u64).
pub const MAP_COUNTERS: &str = "QSOCK_COUNTERS";
/// Name of the pinned map of [`SharedClock`] keyed by tc classid (u32): the
/// virtual clock of a class several sockets share (the DWCS class).
pub const MAP_SHARED_CLOCKS: &str = "QSOCK_SHARED_CLOCKS";
/// Most shared classes one device can have.
pub const MAX_SHARED_CLASSES: u32 = 64;
/// Minor of the class all DWCS streams of a device share (`1:fffd`).
pub const DWCS_CLASS_MINOR: u32 = 0xfffd;
/// Name of the array map of kernel struct offsets ([`KernelOffsets`], one entry).
pub const MAP_OFFSETS: &str = "QSOCK_OFFSETS";
/// Name of the clsact egress classifier program.
pub const PROG_EGRESS: &str = "qsock_egress";
/// Name of the BTF tracepoint program on `qdisc_dequeue` that measures queuing delay.
pub const PROG_DEQUEUE: &str = "qsock_dequeue";

// ---------------------------------------------------------------------------
// Per-message tag
// ---------------------------------------------------------------------------

/// Per-message flags travel in the 64-bit `SCM_TXTIME` value of `sendmsg()`,
/// which the kernel copies into `skb->tstamp` (after `SO_TXTIME` with
/// `CLOCK_MONOTONIC`, which needs no privilege). The clsact egress program
/// reads it, then overwrites `skb->tstamp`, so no qdisc ever sees the tag.
///
/// Layout of the u64:
///
/// | bits  | meaning |
/// |-------|---------|
/// | 63..8 | deadline, ns of `CLOCK_MONOTONIC`, rounded down to 256 ns |
/// | 7     | [`TAG_VALID`]: this value is a qsock tag |
/// | 6     | [`TAG_HAS_FRAME_BYTES`]: compact form, see below |
/// | 5     | [`TAG_HAS_DEADLINE`] |
/// | 4     | [`TAG_FRAME_END`]: last message of a frame |
/// | 3     | [`TAG_FRAME_START`]: first message of a frame |
/// | 2..0  | drop priority 0..=6, or [`DROP_PRIO_NON_DROPPABLE`] (7) |
///
/// The first message of a frame may declare the whole frame's size on the
/// wire, so the data path can judge the frame once, whole. It then uses the
/// compact form ([`encode_frame_tag`]): bits 63..40 carry the frame's bytes
/// and bits 39..8 the deadline modulo 2^40 ns, which the program unwraps
/// against its own clock ([`tag_deadline`]); deadlines within ±2^39 ns
/// (≈ 9 min) of the send time survive exactly.
///
/// One `sendmsg()` carries data and tag together: no extra system call.
pub const TAG_VALID: u64 = 1 << 7;
/// Compact form: bits 63..40 are the frame's size on the wire, bytes, and
/// bits 39..8 the deadline modulo 2^40 ns (see [`TAG_VALID`]).
pub const TAG_HAS_FRAME_BYTES: u64 = 1 << 6;
/// First bit of the frame size in the compact form.
pub const TAG_FRAME_BYTES_SHIFT: u32 = 40;
/// Largest frame size the compact form carries, bytes (2^24 − 1); larger
/// frames are declared as this (the prediction still says "large").
pub const MAX_TAG_FRAME_BYTES: u64 = (1 << 24) - 1;
/// Span of the compact form's deadline bits, ns (2^40).
pub const COMPACT_DEADLINE_SPAN_NS: u64 = 1 << 40;
/// Farthest a deadline may lie from the send time, ns, for the compact form
/// to be used (2^38: a quarter of the span, leaving margin either way).
pub const COMPACT_DEADLINE_REACH_NS: u64 = 1 << 38;
/// The tag carries a deadline in bits 63..8.
pub const TAG_HAS_DEADLINE: u64 = 1 << 5;
/// The message ends a frame (for video: the packet with the RTP marker bit).
pub const TAG_FRAME_END: u64 = 1 << 4;
/// The message starts a frame.
pub const TAG_FRAME_START: u64 = 1 << 3;
/// Mask of the drop priority bits.
pub const TAG_DROP_PRIO_MASK: u64 = 0x7;
/// Mask of the deadline bits (ns, 256 ns resolution).
pub const TAG_DEADLINE_MASK: u64 = !0xff;
/// Drop priority meaning "never drop" (Q.Sockets' `DWCS_NON_DROPPABLE`).
pub const DROP_PRIO_NON_DROPPABLE: u8 = 7;
/// Highest drop priority that may still be dropped.
pub const DROP_PRIO_MAX_DROPPABLE: u8 = 6;

/// Encodes a per-message tag; see [`TAG_VALID`] for the layout.
///
/// `deadline_ns` is an absolute `CLOCK_MONOTONIC` time in ns (rounded down to
/// 256 ns); `drop_prio` is clamped to 0..=7.
pub const fn encode_tag(deadline_ns: Option<u64>, drop_prio: u8, frame_start: bool, frame_end: bool) -> u64 {
    let mut tag = TAG_VALID;
    if let Some(d) = deadline_ns {
        tag |= (d & TAG_DEADLINE_MASK) | TAG_HAS_DEADLINE;
    }
    let prio = if drop_prio > DROP_PRIO_NON_DROPPABLE { DROP_PRIO_NON_DROPPABLE } else { drop_prio };
    tag |= prio as u64;
    if frame_start {
        tag |= TAG_FRAME_START;
    }
    if frame_end {
        tag |= TAG_FRAME_END;
    }
    tag
}

/// Encodes the tag of a frame's first message that declares the frame's
/// size on the wire (`frame_bytes`, clamped to [`MAX_TAG_FRAME_BYTES`]);
/// layout in [`TAG_VALID`]. `now_ns` is the send time (`CLOCK_MONOTONIC`).
/// Returns `None` when the deadline lies more than
/// [`COMPACT_DEADLINE_REACH_NS`] from `now_ns`: send [`encode_tag`] then.
pub const fn encode_frame_tag(deadline_ns: Option<u64>, now_ns: u64, drop_prio: u8, frame_end: bool, frame_bytes: u64) -> Option<u64> {
    let mut tag = encode_tag(None, drop_prio, true, frame_end) | TAG_HAS_FRAME_BYTES;
    if let Some(d) = deadline_ns {
        let dist = d.abs_diff(now_ns);
        if dist > COMPACT_DEADLINE_REACH_NS {
            return None;
        }
        tag |= (d & (COMPACT_DEADLINE_SPAN_NS - 1) & TAG_DEADLINE_MASK) | TAG_HAS_DEADLINE;
    }
    let b = if frame_bytes > MAX_TAG_FRAME_BYTES { MAX_TAG_FRAME_BYTES } else { frame_bytes };
    Some(tag | (b << TAG_FRAME_BYTES_SHIFT))
}

/// The deadline a tag carries, ns of `CLOCK_MONOTONIC`, or 0 for none.
/// The compact form is unwrapped to the value nearest `now_ns` (exact for
/// deadlines within ±2^39 ns of it).
pub const fn tag_deadline(tag: u64, now_ns: u64) -> u64 {
    if tag & TAG_HAS_DEADLINE == 0 {
        return 0;
    }
    if tag & TAG_HAS_FRAME_BYTES == 0 {
        return tag & TAG_DEADLINE_MASK;
    }
    let low = tag & (COMPACT_DEADLINE_SPAN_NS - 1) & TAG_DEADLINE_MASK;
    let ahead = low.wrapping_sub(now_ns) & (COMPACT_DEADLINE_SPAN_NS - 1);
    if ahead < COMPACT_DEADLINE_SPAN_NS / 2 {
        now_ns.wrapping_add(ahead)
    } else {
        now_ns.wrapping_sub(COMPACT_DEADLINE_SPAN_NS - ahead)
    }
}

/// The frame size on the wire a tag declares, bytes, or 0 for none.
pub const fn tag_frame_bytes(tag: u64) -> u64 {
    if tag & TAG_HAS_FRAME_BYTES == 0 {
        0
    } else {
        tag >> TAG_FRAME_BYTES_SHIFT
    }
}

// ---------------------------------------------------------------------------
// Per-socket policy (written by qsockd, read by the egress program)
// ---------------------------------------------------------------------------

/// Messages of this socket carry tags in `skb->tstamp` (datagram sockets with
/// `SO_TXTIME` set by qsock). Without it `skb->tstamp` is left alone (TCP uses
/// it for its own departure times).
pub const POLICY_MSG_TAGS: u32 = 1 << 0;
/// Every message of the socket is non-droppable (Q.Sockets stream flag).
pub const POLICY_NON_DROPPABLE: u32 = 1 << 1;
/// Lossless: never drop; a message predicted late is sent and counted late.
pub const POLICY_LOSSLESS: u32 = 1 << 2;
/// DWCS stream: deadlines every `ipg_ns`, window constraint `dwcs_x/dwcs_y`
/// applied per unit (a frame, or a packet outside frames), and the class's
/// departure predicted from the [`SharedClock`] of `classid`.
pub const POLICY_DWCS: u32 = 1 << 3;

/// Value of the policy map, keyed by socket cookie (u64). Written by qsockd
/// only; read by the egress program for every packet of the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketPolicy {
    /// tc classid the socket's packets are steered into (`skb->priority`).
    pub classid: u32,
    /// `POLICY_*` bits.
    pub flags: u32,
    /// Guaranteed rate of the socket's own class, bit/s (> 0). The egress
    /// program predicts each message's departure as if the class drained at
    /// this rate. 0 for DWCS streams: their shared class's rate is in its
    /// [`SharedClock`].
    pub rate_bps: u64,
    /// Deadline given to messages that carry none: now + this, ns. 0: none.
    pub delay_budget_ns: u64,
    /// Drop priority of messages that carry no tag (0..=7).
    pub default_drop_prio: u8,
    /// Padding, keep zero.
    pub _pad: [u8; 7],
    /// Burst the class may send at once after idling (HTB's bucket depth),
    /// as time at `rate_bps`, ns. The lateness prediction models the bucket.
    /// 0 for DWCS streams (see [`SharedClock::burst_ns`]).
    pub burst_ns: u64,
    /// DWCS request period (`ipg`): consecutive unit deadlines are this far
    /// apart, ns. 0 unless [`POLICY_DWCS`].
    pub ipg_ns: u64,
    /// DWCS window constraint numerator x (`oln`): misses allowed per window.
    pub dwcs_x: u32,
    /// DWCS window constraint denominator y (`old`), > 0 with [`POLICY_DWCS`].
    pub dwcs_y: u32,
    /// DWCS: declared size of a unit on the wire, bytes. A unit is judged at
    /// its first packet as if it were at least this large, unless the
    /// message declares its frame's size itself ([`TAG_HAS_FRAME_BYTES`]).
    pub dwcs_unit_bytes: u32,
    /// Padding, keep zero.
    pub _pad2: u32,
    /// Ceiling of the socket's own class, bit/s (≥ `rate_bps`): the most a
    /// measured drain rate is trusted to be ([`service::predict`]). 0 for
    /// DWCS streams (their class never borrows).
    pub ceil_bps: u64,
}

/// Virtual clock of a class shared by several sockets (keyed by classid):
/// like [`SocketCounters::vclock_ns`], but for the whole FIFO class, so the
/// predicted departure of a packet accounts for every stream ahead of it.
/// qsockd writes `rate_bps` and `burst_ns` whenever the class changes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedClock {
    /// Virtual finish time of the last packet kept in the class, ns of `CLOCK_MONOTONIC`.
    pub vclock_ns: u64,
    /// Rate the class drains at (its HTB rate = ceil), bit/s.
    pub rate_bps: u64,
    /// HTB bucket depth as time at `rate_bps`, ns.
    pub burst_ns: u64,
}

// ---------------------------------------------------------------------------
// Per-socket counters (written by the programs, read by qsockd)
// ---------------------------------------------------------------------------

/// Number of log2 buckets in [`SocketCounters::delay_hist`]: bucket `i` counts
/// queuing delays `d` with `2^(i-1) <= d/1024ns < 2^i` (bucket 0: d < 1.024 µs;
/// the last bucket is open-ended).
pub const DELAY_BUCKETS: usize = 24;

/// Counters of one managed socket, keyed by socket cookie (u64). Created by
/// qsockd with the policy, updated with atomic adds by the BPF programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketCounters {
    /// Packets passed to the root qdisc (enqueued).
    pub enq_packets: u64,
    /// Bytes passed to the root qdisc (`skb->len`).
    pub enq_bytes: u64,
    /// Packets dropped because they were predicted to miss their deadline.
    pub drop_deadline_packets: u64,
    /// Bytes of those.
    pub drop_deadline_bytes: u64,
    /// Packets dropped because an earlier packet of their frame was dropped.
    pub drop_frame_packets: u64,
    /// Bytes of those.
    pub drop_frame_bytes: u64,
    /// Packets predicted late but sent anyway (non-droppable or lossless).
    pub late_kept_packets: u64,
    /// Packets with a deadline predicted to meet it (and sent).
    pub deadline_met_packets: u64,
    /// Packets that left the root qdisc (dequeued towards the device).
    pub deq_packets: u64,
    /// Bytes of those.
    pub deq_bytes: u64,
    /// Sum of measured queuing delays of dequeued packets, ns.
    pub delay_sum_ns: u64,
    /// Largest measured queuing delay, ns.
    pub delay_max_ns: u64,
    /// Histogram of measured queuing delays, see [`DELAY_BUCKETS`].
    pub delay_hist: [u64; DELAY_BUCKETS],
    /// Egress program state: virtual finish time of the last kept packet at
    /// the guaranteed rate, ns of `CLOCK_MONOTONIC`.
    pub vclock_ns: u64,
    /// Egress program state: 1 while inside a frame, 2 while inside a frame
    /// whose earlier packet was dropped (the rest is dropped too), else 0.
    pub frame_state: u64,
    /// DWCS current window constraint x' (`0` with `dwcs_y_now == 0`: not
    /// started; the program starts it at the policy's x/y).
    pub dwcs_x_now: u32,
    /// DWCS current window constraint y'.
    pub dwcs_y_now: u32,
    /// DWCS: 1 while the window constraint is marked violated.
    pub dwcs_violated: u32,
    /// DWCS: the x/y the current state was started from, packed `x << 16 | y`;
    /// a `qchange` to another constraint restarts the window.
    pub dwcs_origin: u32,
    /// DWCS: deadline of the current (last) unit, ns of `CLOCK_MONOTONIC`.
    pub dwcs_deadline_ns: u64,
    /// DWCS: units that missed with x' = 0 (window constraint violations).
    pub dwcs_violations: u64,
    /// DWCS: outcome of the last 64 deadlines, bit 0 the latest, 1 = missed
    /// (see [`window_allows_miss`]).
    pub dwcs_history: u64,
    /// Units (frames, or messages outside frames) whose deadline had already
    /// passed when they were sent: dropped if droppable, else sent and
    /// counted in `late_kept_packets`.
    pub past_deadline_units: u64,
    /// Egress program state: bytes of the current frame already charged to
    /// the virtual clock when the frame was judged whole, not yet seen.
    pub frame_credit_bytes: u64,
    /// Dequeue probe state: the class's drain rate, measured while it had
    /// a backlog ([`service::ServiceMeter`]).
    pub meter: service::ServiceMeter,
    /// Egress program state: enqueue stamp of the newest packet let into
    /// the qdisc, ns of `CLOCK_MONOTONIC`.
    pub last_enq_ns: u64,
    /// Packets let into the qdisc that the dequeue probe never saw leave,
    /// found when the newest packet left (the class was then empty): the
    /// backlog is `enq − deq − unseen`.
    pub unseen_packets: u64,
    /// Bytes of those.
    pub unseen_bytes: u64,
}

impl SocketCounters {
    /// Bytes of the socket queued in its class now: enqueued, less dequeued,
    /// less what left unseen.
    pub const fn backlog_bytes(&self) -> u64 {
        self.enq_bytes.saturating_sub(self.deq_bytes).saturating_sub(self.unseen_bytes)
    }
}

/// DWCS current window constraint of one stream: x'/y' and the violation
/// mark. The rules below are the only implementation of West & Schwan's
/// window adjustment (ICMCS 1999, §3; West et al., IEEE TC 53(6) 2004):
/// the egress program runs them per unit, `qsock-dwcs` runs them in its
/// scheduler and tests them against a reference model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Current x'.
    pub x: u32,
    /// Current y'.
    pub y: u32,
    /// Violated: a deadline was missed with x' = 0.
    pub violated: bool,
}

impl Window {
    /// Starts at the original constraint `x/y`.
    pub const fn new(x: u32, y: u32) -> Self {
        Self { x, y, violated: false }
    }

    /// The unit was sent by its deadline: y' − 1 while y' > x', else (y' =
    /// x' > 0) both − 1; back to `x/y` once both reach 0 or if violated.
    pub const fn on_met(self, x: u32, y: u32) -> Self {
        let mut w = self;
        if w.y > w.x {
            w.y -= 1;
        } else if w.y == w.x && w.x > 0 {
            w.x -= 1;
            w.y -= 1;
        }
        if (w.x == 0 && w.y == 0) || w.violated {
            w = Self::new(x, y);
        }
        w
    }

    /// The unit missed its deadline. With x' > 0 the loss fits the window
    /// (x' − 1, y' − 1, back to `x/y` at 0/0) and the unit may be dropped:
    /// returns `true`. With x' = 0 the constraint is violated (y' + 1, mark)
    /// and the unit must be sent late: returns `false`.
    pub const fn on_missed(self, x: u32, y: u32) -> (Self, bool) {
        let mut w = self;
        if w.x > 0 {
            w.x -= 1;
            w.y -= 1;
            if w.x == 0 && w.y == 0 {
                w = Self::new(x, y);
            }
            (w, true)
        } else {
            w.y += 1;
            w.violated = true;
            (w, false)
        }
    }
}

/// Whether one more miss keeps every window of `y` consecutive deadlines
/// ending now at ≤ `x` misses, given `history` (bit 0 the latest deadline,
/// 1 = missed). DWCS's x'/y' rules restart their window when x' and y'
/// reach 0, so on their own they bound misses per window *from a reset*:
/// for 1/2 they allow met, miss, miss. The receiver checks sliding windows,
/// so the data path drops a unit only when this also allows it. Windows
/// longer than 64 deadlines are checked over the last 64.
pub const fn window_allows_miss(history: u64, x: u32, y: u32) -> bool {
    if x == 0 {
        return false;
    }
    let earlier = if y == 0 { 0 } else { y - 1 };
    let mask = if earlier >= 64 { u64::MAX } else { (1u64 << earlier) - 1 };
    // count_ones: LLVM expands it for BPF, which has no popcount instruction.
    ((history & mask).count_ones() as u64) < x as u64
}

/// `a · b`, or `u64::MAX` when that overflows. For constant `b` in the BPF
/// program: with a variable `b` LLVM turns the test into a 128-bit
/// multiply, which the BPF target lacks (so does `u64::saturating_mul`).
pub const fn sat_mul(a: u64, b: u64) -> u64 {
    if b != 0 && a > u64::MAX / b {
        u64::MAX
    } else {
        a * b
    }
}

/// `a · num / den` for `num ≤ den < 2^32`, rounded down, without overflow
/// and without the 128-bit multiply the BPF target lacks; `den` 0 gives 0.
pub const fn scale_down(a: u64, num: u32, den: u32) -> u64 {
    if den == 0 {
        return 0;
    }
    let (num, den) = (num as u64, den as u64);
    (a / den) * num + (a % den) * num / den
}

/// Packs a window constraint for [`SocketCounters::dwcs_origin`].
pub const fn dwcs_origin(x: u32, y: u32) -> u32 {
    ((x & 0xffff) << 16) | (y & 0xffff)
}

/// Index of the histogram bucket for a delay in ns (see [`DELAY_BUCKETS`]).
pub const fn delay_bucket(delay_ns: u64) -> usize {
    let units = delay_ns >> 10;
    let b = (64 - units.leading_zeros()) as usize;
    if b >= DELAY_BUCKETS {
        DELAY_BUCKETS - 1
    } else {
        b
    }
}

/// Upper bound, ns, of histogram bucket `i` (see [`DELAY_BUCKETS`]).
pub const fn delay_bucket_upper_ns(i: usize) -> u64 {
    1024u64 << i
}

// ---------------------------------------------------------------------------
// Kernel struct offsets for the dequeue probe
// ---------------------------------------------------------------------------

/// Byte offsets inside kernel structs, read by qsockd from the kernel's BTF
/// (`/sys/kernel/btf/vmlinux`) and handed to the dequeue probe, which reads
/// the dequeued skb with `bpf_probe_read_kernel`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `offsetof(struct sk_buff, sk)`.
    pub skb_sk: u32,
    /// `offsetof(struct sk_buff, tstamp)`.
    pub skb_tstamp: u32,
    /// `offsetof(struct sock, __sk_common.skc_cookie)`.
    pub sk_cookie: u32,
    /// `offsetof(struct sk_buff, len)`.
    pub skb_len: u32,
    /// 1 once qsockd filled the offsets; the probe does nothing before.
    pub valid: u32,
    /// `offsetof(struct sk_buff, next)`: a bulk dequeue hands the probe a
    /// list of skbs.
    pub skb_next: u32,
}

/// Most skbs of one bulk dequeue the probe accounts for (the rest of a
/// longer list would go uncounted; the kernel's bulk dequeue stops at its
/// byte-queue limit, far fewer packets on the links qsock shapes).
pub const MAX_BULK_DEQUEUE: u32 = 64;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] integers and arrays, no padding holes.
    unsafe impl aya::Pod for super::SocketPolicy {}
    unsafe impl aya::Pod for super::SocketCounters {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::SharedClock {}
    unsafe impl aya::Pod for super::service::ServiceMeter {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn tag_round_trip() {
        let t = encode_tag(Some(1_000_000_123_456), 3, true, false);
        assert_ne!(t & TAG_VALID, 0);
        assert_ne!(t & TAG_HAS_DEADLINE, 0);
        assert_eq!(t & TAG_DEADLINE_MASK, 1_000_000_123_456 & !0xff);
        assert_eq!(t & TAG_DROP_PRIO_MASK, 3);
        assert_ne!(t & TAG_FRAME_START, 0);
        assert_eq!(t & TAG_FRAME_END, 0);
        let n = encode_tag(None, 200, false, true);
        assert_eq!(n & TAG_HAS_DEADLINE, 0);
        assert_eq!(n & TAG_DROP_PRIO_MASK, DROP_PRIO_NON_DROPPABLE as u64);
    }

    #[test]
    fn window_rules() {
        let w = Window::new(1, 3).on_met(1, 3);
        assert_eq!((w.x, w.y), (1, 2));
        let (w, drop) = w.on_missed(1, 3);
        assert!(drop);
        assert_eq!((w.x, w.y), (0, 1));
        let (w, drop) = w.on_missed(1, 3);
        assert!(!drop);
        assert_eq!(w, Window { x: 0, y: 2, violated: true });
        assert_eq!(w.on_met(1, 3), Window::new(1, 3));
    }

    #[test]
    fn sliding_window_guard() {
        // 1/2: after a miss, the next deadline must be met.
        assert!(window_allows_miss(0b0, 1, 2));
        assert!(!window_allows_miss(0b1, 1, 2));
        assert!(window_allows_miss(0b10, 1, 2));
        // 2/5: at most one miss among the last four.
        assert!(window_allows_miss(0b1000, 2, 5));
        assert!(!window_allows_miss(0b1001, 2, 5));
        assert!(window_allows_miss(0b1_0001, 2, 5));
        assert!(!window_allows_miss(0, 0, 5));
        assert!(window_allows_miss(u64::MAX, 100, 100));
    }

    #[test]
    fn delay_buckets_are_monotonic_and_bounded() {
        assert_eq!(delay_bucket(0), 0);
        assert_eq!(delay_bucket(1023), 0);
        assert_eq!(delay_bucket(1024), 1);
        assert_eq!(delay_bucket(u64::MAX), DELAY_BUCKETS - 1);
        for d in [1u64, 5_000, 1_000_000, 50_000_000] {
            let b = delay_bucket(d);
            assert!(d < delay_bucket_upper_ns(b), "{d} in bucket {b}");
        }
    }
}

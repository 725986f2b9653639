//! What `qinfo` reports about a managed socket.
use serde::{Deserialize, Serialize};

use crate::params::{Intents, SchedulerParams};

/// Report on one managed socket (Q.Sockets `qinfo`): scheduler facts from
/// qsockd and the kernel data path, and stack facts from the socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QInfo {
    /// Socket cookie (`SO_COOKIE`), the key the data path classifies by.
    pub cookie: u64,
    /// Egress device.
    pub device: String,
    /// tc classid of the socket's HTB class, e.g. `"1:10"` (DWCS streams
    /// share `"1:fffd"`; backlog and qdisc drops are then the class's).
    pub classid: String,
    /// Scheduler and attributes in force.
    pub scheduler: SchedulerParams,
    /// The scheduler's per-stream state (DWCS: current x'/y', violations).
    pub scheduler_state: SchedulerState,
    /// Intents the application declared.
    pub intents: Intents,
    /// How the interface was chosen, when the policy chose it (the socket
    /// was attached without a device).
    pub selection: Option<Selection>,
    /// Guaranteed rate of the class, bit/s.
    pub guaranteed_rate_bps: u64,
    /// Bucket depth of the socket's own class (HTB `burst`), bytes: what it
    /// may send at once beyond its rate after idling. 0 for a shared class.
    pub guaranteed_burst_bytes: u64,
    /// Ceiling the class may borrow up to, bit/s.
    pub ceil_bps: u64,
    /// The class's drain rate measured in the kernel while it had a backlog
    /// (borrowing included), bit/s; 0 when not measured in the last 2 s.
    pub service_rate_bps: u64,
    /// Measured sending rate: bytes dequeued from the root qdisc over the last
    /// rate window (see `rate_window_ns`), bit/s.
    pub rate_bps: u64,
    /// Window the rate was measured over, ns (0 before the first sample pair).
    pub rate_window_ns: u64,
    /// Packets and bytes the socket handed to the root qdisc.
    pub enqueued_packets: u64,
    /// Bytes of `enqueued_packets`.
    pub enqueued_bytes: u64,
    /// Packets and bytes that left the root qdisc towards the device.
    pub sent_packets: u64,
    /// Bytes of `sent_packets`.
    pub sent_bytes: u64,
    /// Packets that entered the root qdisc but were never seen leaving it by
    /// the dequeue probe (found once the class emptied); not drops.
    pub unseen_packets: u64,
    /// Packets waiting in the socket's class queue now.
    pub backlog_packets: u64,
    /// Bytes waiting in the socket's class queue now.
    pub backlog_bytes: u64,
    /// Drops by reason.
    pub drops: Drops,
    /// Units (frames, or messages outside frames) predicted late but sent
    /// anyway (non-droppable or lossless).
    pub late_kept_packets: u64,
    /// Units whose deadline had already passed when they were sent (dropped
    /// if droppable, else sent late).
    pub past_deadline_units: u64,
    /// Units with a deadline predicted to meet it. Together with
    /// `late_kept_packets` and `drops.deadline_packets` this accounts for
    /// every unit that carried a deadline: a unit is a frame (judged once,
    /// whole) or a message outside frames.
    pub deadline_met_packets: u64,
    /// Queuing delay in the root qdisc, measured per packet.
    pub queuing_delay: DelayStats,
    /// Facts from the network stack.
    pub stack: StackInfo,
    /// For an MPTCP socket: the connection and the QoS of each subflow on
    /// its interface (the figures above are then its first subflow's with
    /// a class). `None` for other sockets.
    #[serde(default)]
    pub multipath: Option<MultipathQos>,
}

/// The QoS of an MPTCP connection, subflow by subflow: the data path sees
/// each subflow's cookie, so each has its own entry (and class) on the
/// interface it leaves by, with the connection's parameters (replicated:
/// every interface it uses gives it the whole guarantee).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MultipathQos {
    /// The connection's local token; 0 after a fallback to TCP.
    pub token: u32,
    /// The peer has no MPTCP: the connection runs as TCP on its one subflow.
    pub fallback: bool,
    /// Its subflows, in the order they were established.
    pub subflows: Vec<SubflowQos>,
}

/// One subflow of a managed MPTCP connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubflowQos {
    /// Local address and port.
    pub local: std::net::SocketAddr,
    /// Remote address and port.
    pub remote: std::net::SocketAddr,
    /// Interface it leaves by (holding the local address).
    pub interface: Option<String>,
    /// The subflow's socket cookie (what the data path classifies by), 0 if not found.
    pub cookie: u64,
    /// Its QoS on that interface (device, class, rate, drops, queuing
    /// delay), or why it has none (the interface is not managed by qsock,
    /// admission refused it there, ...).
    pub qos: Result<Box<QInfo>, String>,
}

/// Drops of one socket, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    /// Units dropped at enqueue because predicted to miss the deadline
    /// (lossy), counted at their first packet.
    pub deadline_packets: u64,
    /// Bytes of those.
    pub deadline_bytes: u64,
    /// The other packets of those units: a frame is dropped whole.
    pub frame_packets: u64,
    /// Bytes of those.
    pub frame_bytes: u64,
    /// Dropped by the class's leaf qdisc (queue overflow), from tc class stats.
    pub qdisc_packets: u64,
}

impl Drops {
    /// All dropped packets.
    pub fn total_packets(&self) -> u64 {
        self.deadline_packets + self.frame_packets + self.qdisc_packets
    }
}

/// Queuing delay in the root qdisc: for every dequeued packet, the time from
/// the egress program's enqueue stamp to the `qdisc_dequeue` tracepoint.
/// Percentiles come from a log2 histogram and are upper bucket bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelayStats {
    /// Packets measured.
    pub samples: u64,
    /// Mean delay, ns.
    pub mean_ns: u64,
    /// Median delay (bucket upper bound), ns.
    pub p50_ns: u64,
    /// 99th percentile delay (bucket upper bound), ns.
    pub p99_ns: u64,
    /// Largest delay, ns.
    pub max_ns: u64,
}

/// Facts the network stack keeps about the socket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StackInfo {
    /// `SO_TYPE`: 1 stream, 2 datagram, 5 seqpacket.
    pub socket_type: i32,
    /// `SO_SNDBUF`, bytes.
    pub sndbuf_bytes: u64,
    /// `SO_RCVBUF`, bytes.
    pub rcvbuf_bytes: u64,
    /// Bytes in the send queue not yet handed to the device (`SIOCOUTQ`).
    pub outq_bytes: u64,
    /// `TCP_INFO` for TCP sockets.
    pub tcp: Option<TcpInfo>,
}

/// Selected `TCP_INFO` fields (see `struct tcp_info` in `linux/tcp.h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpInfo {
    /// Smoothed RTT, µs.
    pub rtt_us: u32,
    /// RTT variance, µs.
    pub rttvar_us: u32,
    /// Congestion window, segments.
    pub snd_cwnd: u32,
    /// Sender MSS, bytes.
    pub snd_mss: u32,
    /// Retransmitted segments in total.
    pub total_retrans: u32,
    /// Pacing rate, bytes/s.
    pub pacing_rate_bytes_per_s: u64,
    /// Delivery rate estimate, bytes/s.
    pub delivery_rate_bytes_per_s: u64,
}

/// What `qattach`/`qsocket` tell the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachInfo {
    /// Socket cookie.
    pub cookie: u64,
    /// Device whose egress carries the socket.
    pub device: String,
    /// How the policy chose that device (when the caller gave none).
    #[serde(default)]
    pub selection: Option<Selection>,
    /// tc classid of the socket's class, e.g. `"1:10"`.
    pub classid: String,
    /// Set when qsockd's admission is configured to warn and let the socket
    /// in with less than it needs.
    #[serde(default)]
    pub warning: Option<String>,
}

/// An interface-selection policy's decision for one socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Policy that decided, by its config name.
    pub policy: String,
    /// Interface chosen.
    pub interface: String,
    /// Source address the socket was bound to (port chosen by the kernel).
    pub source: std::net::IpAddr,
    /// Why, in the policy's words, with the figures it used (e.g.
    /// "file size 2000000 B >= threshold 312000 B from measured RTT and bandwidth").
    pub reason: String,
}

/// One interface qsockd manages, as it knows it now (`qinterfaces`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterfaceInfo {
    /// Interface name.
    pub name: String,
    /// Interface index; 0 while the interface does not exist.
    pub ifindex: u32,
    /// The interface exists in qsockd's network namespace.
    pub present: bool,
    /// It is administratively up with carrier (`IFF_UP` and `IFF_LOWER_UP`).
    pub up: bool,
    /// Type from the config (`wired`, `wifi`, `cellular`).
    pub kind: crate::taps::InterfaceType,
    /// The config marks it metered.
    pub metered: bool,
    /// Cost per byte from the config, in the operator's unit (ranks only).
    pub cost: u32,
    /// Nominal downstream bandwidth from the config, bit/s.
    pub nominal_down_bps: u64,
    /// Nominal upstream bandwidth from the config, bit/s (the root HTB rate).
    pub nominal_up_bps: u64,
    /// Measured receive rate from the device counters, bit/s (moving average).
    pub rx_bps: u64,
    /// Measured transmit rate from the device counters, bit/s (moving average).
    pub tx_bps: u64,
    /// Smoothed RTT of TCP connections bound to its addresses (sock_diag,
    /// `tcpi_rtt`), µs; `None` before the first sample.
    pub srtt_us: Option<u64>,
    /// TCP connections seen on it in the last measurement.
    pub tcp_connections: u32,
    /// Mean queuing delay in its root qdisc over the managed sockets' packets, ns.
    pub queuing_delay_ns: u64,
    /// Sockets qsockd manages on it.
    pub managed_sockets: u32,
    /// Its addresses qsockd binds sockets to.
    pub addresses: Vec<std::net::IpAddr>,
    /// Routing table qsockd installed for it (policy routing), if any.
    pub table: Option<u32>,
}

/// One managed socket as `qsockctl list` shows it (the `List` request).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SocketSummary {
    /// Socket cookie.
    pub cookie: u64,
    /// uid of the process that attached it.
    pub uid: u32,
    /// pid of that process (`SO_PEERCRED` of its connection to qsockd).
    pub pid: i32,
    /// Its command name (`/proc/<pid>/comm`), empty if it is gone.
    pub command: String,
    /// Egress device.
    pub device: String,
    /// tc classid of its class.
    pub classid: String,
    /// Scheduler name (`rate`, `edf`, `dwcs`, `best_effort`).
    pub scheduler: String,
    /// Guaranteed rate, bit/s.
    pub guaranteed_rate_bps: u64,
    /// Measured sending rate over the rate window, bit/s.
    pub rate_bps: u64,
    /// Drops by reason (qdisc drops are its class's).
    pub drops: Drops,
    /// Queuing delay in the root qdisc.
    pub queuing_delay: DelayStats,
    /// Interface-selection policy's decision, if it chose the device.
    pub selection: Option<Selection>,
}

/// Per-stream scheduler state, as `qinfo` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum SchedulerState {
    /// A guaranteed rate; nothing beyond the counters.
    Rate,
    /// No guarantee: the device's best-effort class.
    #[serde(rename = "best_effort")]
    BestEffort,
    /// EDF: per-message deadlines in a class reserved at the stream's utilisation.
    Edf {
        /// Lossy (drops messages predicted late) or lossless.
        lossy: bool,
    },
    /// DWCS window state (West & Schwan 1999).
    Dwcs {
        /// Original window constraint x/y.
        x: u32,
        /// Original y.
        y: u32,
        /// Current x'.
        x_now: u32,
        /// Current y'.
        y_now: u32,
        /// The window constraint is marked violated.
        violated: bool,
        /// Units that missed a deadline when the last y deadlines already
        /// held x misses: predicted window-constraint violations.
        violations: u64,
        /// Deadline of the stream's last unit, ns of `CLOCK_MONOTONIC` (0: none yet).
        deadline_ns: u64,
    },
}

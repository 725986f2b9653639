//! QoS parameters of a socket (Q.Sockets' `struct qos_params`) and of
//! `qsockinit`, plus Socket-Intents-style intents.
use serde::{Deserialize, Serialize};

use crate::{
    error::{ErrorKind, QsockError, Result},
    taps::{CapacityProfile, InterfacePreference},
};

/// Parameters of `qsocket`/`qattach`/`qchange`: the device whose egress
/// carries the socket's traffic (or none, and qsockd's policy chooses one
/// from the intents), the scheduler and its attributes, and the
/// application's intents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QosParams {
    /// Egress network device, e.g. `"eth0"` (at most 15 bytes, IFNAMSIZ − 1):
    /// the application chose. `None`: qsockd's interface-selection policy
    /// chooses among the interfaces its config manages, binds the socket to
    /// that interface's source address and routes it out of it (the socket
    /// must be neither bound nor connected yet).
    #[serde(default)]
    pub device: Option<String>,
    /// Scheduler and its attributes.
    pub scheduler: SchedulerParams,
    /// What the application knows about its traffic (Socket Intents,
    /// Schmidt et al., CoNEXT 2013, and TAPS properties, RFC 9622).
    /// Advisory, except the Require/Prohibit interface preferences.
    #[serde(default)]
    pub intents: Intents,
    /// Interface-selection policy to ask, by name (one the daemon's config
    /// enables, e.g. `"category"`, `"filesize"`, `"earliest_completion"`,
    /// `"round_robin"`); `None`: the config's default. Used only when
    /// `device` is `None`.
    #[serde(default)]
    pub policy: Option<String>,
}

/// Scheduler name and attributes. Serialised with the scheduler's name as tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum SchedulerParams {
    /// A guaranteed rate in the root HTB, with per-message drop decisions.
    Rate(RateAttrs),
    /// Dynamic Window-Constrained Scheduling (West & Schwan, ICMCS 1999).
    Dwcs(DwcsAttrs),
    /// Earliest deadline first over per-message deadlines.
    Edf(EdfAttrs),
    /// No guarantee: the device's best-effort class, with counters and
    /// queuing delay measured. For sockets that want only an interface
    /// chosen from their intents.
    #[serde(rename = "best_effort")]
    BestEffort,
}

impl SchedulerParams {
    /// The scheduler's name as used on the wire and in `qinfo`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Rate(_) => "rate",
            Self::Dwcs(_) => "dwcs",
            Self::Edf(_) => "edf",
            Self::BestEffort => "best_effort",
        }
    }
}

/// Attributes of the `rate` scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateAttrs {
    /// Guaranteed rate, bit/s (> 0). Admission refuses it when the sum of
    /// guarantees on the device would leave less than the best-effort reserve.
    pub rate_bps: u64,
    /// Burst, bytes: the class may send this much at once after idling
    /// (the token bucket's depth, HTB's `burst`; `b` of an IntServ TSpec,
    /// RFC 2212). Admission books it against the link's burst horizon.
    /// `None`: one tick of data at the rate plus one frame, booked as nothing
    /// (`qsock_sched::default_burst_bytes`).
    #[serde(default)]
    pub burst_bytes: Option<u64>,
    /// Rate the class may borrow up to when the link is idle, bit/s
    /// (≥ `rate_bps`); `None`: the link rate.
    #[serde(default)]
    pub ceil_bps: Option<u64>,
    /// Deadline given to messages sent without one: send time + this, ns.
    /// `None`: such messages have no deadline and are never dropped for lateness.
    #[serde(default)]
    pub delay_budget_ns: Option<u64>,
    /// Every message is non-droppable (Q.Sockets stream flag `DWCS_NON_DROPPABLE`).
    #[serde(default)]
    pub non_droppable: bool,
    /// Lossless: never drop, send late messages late (Q.Sockets' lossless EDF).
    /// Default false: lossy, droppable messages predicted late are dropped.
    #[serde(default)]
    pub lossless: bool,
}

impl RateAttrs {
    /// A lossy guaranteed rate of `rate_bps` bit/s with defaults elsewhere.
    pub fn guaranteed(rate_bps: u64) -> Self {
        Self { rate_bps, burst_bytes: None, ceil_bps: None, delay_budget_ns: None, non_droppable: false, lossless: false }
    }

    /// A lossy token bucket: `rate_bps` bit/s with a burst of `burst_bytes`.
    pub fn token_bucket(rate_bps: u64, burst_bytes: u64) -> Self {
        Self { burst_bytes: Some(burst_bytes), ..Self::guaranteed(rate_bps) }
    }
}

/// DWCS attributes (Q.Sockets' `struct q_dwcs_attr`). The unit DWCS
/// schedules is a frame (messages between the frame-start and frame-end
/// flags of `qsendto`) or, outside frames, one message. Admission reserves
/// `(1 − oln/old) · unit_bytes · 8 / ipg` bit/s (all of `unit_bytes · 8 /
/// ipg` for a non-droppable stream): the share of the DWCS feasibility test
/// Σ (1 − x/y)·C/T ≤ 1 (West et al., IEEE TC 2004) the stream needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DwcsAttrs {
    /// Inter-packet gap (request period): consecutive unit deadlines are this
    /// far apart; a unit's deadline is the previous one + ipg, or send time +
    /// ipg after a pause, ns.
    pub ipg_ns: u64,
    /// Bytes of one unit on the wire (headers included), bytes (> 0).
    pub unit_bytes: u32,
    /// Loss numerator x: at most `oln` of any `old` consecutive deadlines may be missed.
    pub oln: u32,
    /// Loss denominator y (> 0, ≥ `oln`).
    pub old: u32,
    /// The stream is non-droppable (`DWCS_NON_DROPPABLE`).
    #[serde(default)]
    pub non_droppable: bool,
}

/// EDF attributes for a sporadic stream of deadline messages: at most one
/// message of `message_bytes` every `min_interval_ns`. Admission reserves
/// that utilisation (`message_bytes·8 / min_interval`, bit/s) and refuses a
/// stream that would make the device's deadline traffic unschedulable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdfAttrs {
    /// Lossy EDF drops messages that can no longer meet their deadline;
    /// lossless sends them late.
    pub lossy: bool,
    /// Largest message on the wire, bytes (> 0).
    pub message_bytes: u32,
    /// Shortest time between two messages, ns (> 0).
    pub min_interval_ns: u64,
}

/// Socket Intents (Schmidt, Enghardt, Khalili, Feldmann, CoNEXT 2013, §3).
/// Every field is optional: an application states what it knows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Intents {
    /// Traffic category.
    pub category: Option<Category>,
    /// Bytes the application expects to transfer on this socket (the
    /// policies, like the paper's, model it as a download to this host).
    pub file_size_bytes: Option<u64>,
    /// Expected lifetime of the socket, ns.
    pub duration_ns: Option<u64>,
    /// Expected average bitrate, bit/s.
    pub bitrate_bps: Option<u64>,
    /// How bursty the traffic is.
    pub burstiness: Option<Burstiness>,
    /// How much the application cares about delay.
    pub timeliness: Option<Timeliness>,
    /// How well the application tolerates loss or a broken connection.
    pub resilience: Option<Resilience>,
    /// TAPS capacity profile (RFC 9622 §8.1.6); stands for a category when
    /// none is given ([`CapacityProfile::category`]).
    #[serde(default)]
    pub capacity_profile: Option<CapacityProfile>,
    /// TAPS interface preferences (RFC 9622 §6.2), applied in order:
    /// Require and Prohibit filter (hard), then Prefer and Avoid narrow
    /// what is left when they leave something.
    #[serde(default)]
    pub interfaces: Vec<InterfacePreference>,
    /// TAPS `multipath` (RFC 9622 §6.2.14); `None`: implied by the other
    /// intents ([`Intents::effective_multipath`]).
    #[serde(default)]
    pub multipath: Option<crate::multipath_intents::Multipath>,
    /// TAPS `multipathPolicy` (RFC 9622 §8.1.7); `None`: implied.
    #[serde(default)]
    pub multipath_policy: Option<crate::multipath_intents::MultipathPolicy>,
}

impl Intents {
    /// The category the policies act on: the declared one, else the
    /// capacity profile's.
    pub fn effective_category(&self) -> Option<Category> {
        self.category.or_else(|| self.capacity_profile.and_then(CapacityProfile::category))
    }
}

/// Socket Intents traffic category.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Short request/response exchanges.
    Query,
    /// Bulk transfer of a known size.
    BulkTransfer,
    /// Control traffic.
    ControlTraffic,
    /// Keep-alives.
    KeepAlives,
    /// Continuous media stream.
    Stream,
}

/// Socket Intents burstiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Burstiness {
    /// Random bursts.
    RandomBursts,
    /// Regular bursts (e.g. video frames).
    RegularBursts,
    /// Smooth.
    NoBursts,
    /// Everything at once.
    Bulk,
}

/// Socket Intents timeliness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timeliness {
    /// Playout deadline per message.
    Stream,
    /// A human waits for the answer.
    Interactive,
    /// Completion time matters, not per-message delay.
    Transfer,
    /// No one waits.
    BackgroundTraffic,
}

/// Socket Intents resilience.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resilience {
    /// Loss breaks the application.
    Sensitive,
    /// Loss degrades it.
    Tolerant,
    /// Loss is fine.
    Resilient,
}

/// Parameters of `qsockinit` (and `qsockd init`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitParams {
    /// Device to take over, e.g. `"eth0"`.
    pub device: String,
    /// Link rate the root HTB shapes to, bit/s (> 0). Set it at or just below
    /// the real bottleneck so the queue forms here, where qsock controls it.
    pub link_rate_bps: u64,
    /// Share of the link kept for best effort and never guaranteed to
    /// sockets, per mille (1..=999). Default 50 (5 %).
    #[serde(default = "default_best_effort_permille")]
    pub best_effort_permille: u32,
    /// Replace a root qdisc qsock did not install (it is restored by teardown).
    #[serde(default)]
    pub replace: bool,
}

fn default_best_effort_permille() -> u32 {
    50
}

/// Longest DWCS ipg or delay budget accepted, ns (1 h): deadlines are
/// computed in 64-bit ns of `CLOCK_MONOTONIC` in the data path.
pub const MAX_INTERVAL_NS: u64 = 3_600_000_000_000;

/// Largest burst a stream may declare, bytes (64 MiB).
pub const MAX_BURST_BYTES: u64 = 64 << 20;
/// Longest a declared burst may take to drain at the stream's rate, ns
/// (60 s; HTB keeps it in 32 bits of 64 ns ticks, at most 275 s).
pub const MAX_BURST_DRAIN_NS: u64 = 60_000_000_000;

/// Longest interface name Linux accepts, bytes (IFNAMSIZ − 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Checks an interface name: 1..=15 bytes, no `/`, NUL or space.
/// Errors: [`ErrorKind::InvalidParams`].
pub fn check_device(device: &str) -> Result<()> {
    if device.is_empty() || device.len() > MAX_IFNAME_LEN || device.contains(['/', '\0', ' ']) {
        return Err(QsockError::new(ErrorKind::InvalidParams, format!("invalid device name {device:?}")));
    }
    Ok(())
}

impl InitParams {
    /// Checks ranges locally; errors: [`ErrorKind::InvalidParams`].
    pub fn validate(&self) -> Result<()> {
        check_device(&self.device)?;
        if self.link_rate_bps == 0 {
            return Err(QsockError::new(ErrorKind::InvalidParams, "link rate must be > 0 bit/s"));
        }
        if !(1..=999).contains(&self.best_effort_permille) {
            return Err(QsockError::new(ErrorKind::InvalidParams, "best-effort share must be 1..=999 per mille"));
        }
        Ok(())
    }
}

impl QosParams {
    /// Parameters for a guaranteed rate of `rate_bps` bit/s on `device`.
    pub fn rate(device: impl Into<String>, rate_bps: u64) -> Self {
        Self::on(device, SchedulerParams::Rate(RateAttrs::guaranteed(rate_bps)))
    }

    /// `scheduler` on `device`, no intents.
    pub fn on(device: impl Into<String>, scheduler: SchedulerParams) -> Self {
        Self { device: Some(device.into()), scheduler, intents: Intents::default(), policy: None }
    }

    /// Best effort on the interface qsockd's policy chooses from `intents`.
    pub fn intents(intents: Intents) -> Self {
        Self { device: None, scheduler: SchedulerParams::BestEffort, intents, policy: None }
    }

    /// Checks ranges that need no kernel; errors: [`ErrorKind::InvalidParams`].
    pub fn validate(&self) -> Result<()> {
        if let Some(d) = &self.device {
            check_device(d)?;
        }
        let bad = |m: String| Err(QsockError::new(ErrorKind::InvalidParams, m));
        if let Some(p) = &self.policy {
            if p.is_empty() || p.len() > 64 || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return bad(format!("policy name {p:?} must be 1..=64 letters, digits or '_'"));
            }
        }
        for pref in &self.intents.interfaces {
            if let crate::taps::InterfaceSelector::Name(n) = &pref.interface {
                check_device(n)?;
            }
        }
        match &self.scheduler {
            SchedulerParams::BestEffort => {}
            SchedulerParams::Rate(r) => {
                if r.rate_bps == 0 {
                    return bad("guaranteed rate must be > 0 bit/s".into());
                }
                if let Some(c) = r.ceil_bps {
                    if c < r.rate_bps {
                        return bad(format!("ceil {c} bit/s is below the guaranteed rate {} bit/s", r.rate_bps));
                    }
                }
                if let Some(b) = r.burst_bytes {
                    // HTB keeps the bucket as time at the rate in a u32 of 64 ns ticks.
                    let drain_ns = b as u128 * 8 * 1_000_000_000 / r.rate_bps as u128;
                    if b == 0 || b > MAX_BURST_BYTES || drain_ns > MAX_BURST_DRAIN_NS as u128 {
                        return bad(format!(
                            "burst must be > 0 bytes, at most {MAX_BURST_BYTES} bytes and drain within {} s at the rate (got {b} bytes at {} bit/s)",
                            MAX_BURST_DRAIN_NS / 1_000_000_000,
                            r.rate_bps
                        ));
                    }
                }
                if r.delay_budget_ns.is_some_and(|b| b == 0 || b > MAX_INTERVAL_NS) {
                    return bad("delay budget must be > 0 ns and at most 1 h (or unset)".into());
                }
            }
            SchedulerParams::Dwcs(d) => {
                if d.old == 0 || d.oln > d.old || d.ipg_ns == 0 || d.ipg_ns > MAX_INTERVAL_NS || d.unit_bytes == 0 || d.old > 0xffff {
                    return bad(format!(
                        "DWCS needs 0 < ipg <= 1 h, unit_bytes > 0 and 0 <= oln <= old, 0 < old <= 65535 (got ipg={} ns, unit_bytes={} oln={} old={})",
                        d.ipg_ns, d.unit_bytes, d.oln, d.old
                    ));
                }
            }
            SchedulerParams::Edf(e) => {
                if e.message_bytes == 0 || e.min_interval_ns == 0 {
                    return bad(format!("EDF needs message_bytes > 0 and min_interval_ns > 0 (got {} and {})", e.message_bytes, e.min_interval_ns));
                }
            }
        }
        Ok(())
    }
}

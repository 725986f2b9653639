//! qsock-sched: the scheduler-module interface qsockd hosts its schedulers
//! through, and the plan types modules answer with. A crate of its own so
//! the daemon and the scheduler crates share it without the application
//! library carrying it.
//!
//! As in Q.Sockets (§3, "scheduler modules"), a scheduler is a module with
//! one interface: initialise on a device, add, change and remove a stream,
//! report a stream's state. Unlike Q.Sockets, several modules serve one
//! device at once: each stream's class gets a guaranteed rate in the root
//! HTB, so link capacity is shared by guarantees, and best effort takes what
//! is left. A module decides the class layout and the data-path policy of its
//! streams; qsockd applies them to the kernel and checks the link's capacity.
//!
//! Implementations: the `rate` module in qsockd, `qsock_edf::EdfModule`,
//! `qsock_dwcs::module::DwcsModule`.
#![warn(missing_docs)]
pub use qsock::SchedulerState;
use qsock::{ErrorKind, QsockError, Result, SchedulerParams};
use qsock_common::{SocketCounters, SocketPolicy};
use serde::{Deserialize, Serialize};

/// What admission does with a stream that does not fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Admission {
    /// Refuse it with [`ErrorKind::CapacityExceeded`] (the default).
    #[default]
    Refuse,
    /// Admit it with what is left (possibly nothing) and a warning.
    Warn,
}

/// What a module plans against when it admits a stream.
#[derive(Clone, Debug)]
pub struct LinkFacts {
    /// Device name, for messages.
    pub device: String,
    /// Link rate the root HTB shapes to, bit/s.
    pub link_rate_bps: u64,
    /// Rate still free to guarantee on the device (best-effort floor kept),
    /// counting the stream's own current reservation as free on a change, bit/s.
    pub room_bps: u64,
    /// The socket is a datagram socket whose messages carry qsock tags.
    pub msg_tags: bool,
    /// Burst still free to book on the device, bytes: what the link drains
    /// within the configured burst horizon, less the bursts already booked,
    /// counting the stream's own booking as free on a change.
    pub burst_room_bytes: u64,
    /// Refuse or warn when a stream does not fit.
    pub admission: Admission,
}

/// Largest Ethernet frame on the wire, bytes.
pub const MAX_FRAME_BYTES: u64 = 1514;
/// Kernel HZ qsock assumes when it sizes default buckets.
pub const BUCKET_HZ: u64 = 250;

/// The bucket every class gets without asking, bytes: one tick (1/250 s)
/// of data at `rate_bps` plus one full frame, what HTB needs to keep a
/// class at its rate with a timer of that granularity. It is not booked
/// against the link's burst horizon.
pub const fn default_burst_bytes(rate_bps: u64) -> u64 {
    rate_bps / 8 / BUCKET_HZ + MAX_FRAME_BYTES
}

/// Admission of a burst of `burst_bytes` (IntServ TSpec `b`, RFC 2212) on
/// top of a rate: all of it when it fits `link.burst_room_bytes`; otherwise
/// [`ErrorKind::CapacityExceeded`], or with [`Admission::Warn`] what is left
/// and a warning. Returns (granted bytes, warning).
pub fn admit_burst(burst_bytes: u64, link: &LinkFacts) -> Result<(u64, Option<String>)> {
    admit_within(burst_bytes, link.burst_room_bytes, link.admission, "bytes of burst", || {
        format!(
            "a burst of {burst_bytes} bytes does not fit: {} bytes of burst are left on {} (all booked bursts must drain within the link's burst horizon)",
            link.burst_room_bytes, link.device
        )
    })
}

/// Admission of a stream that needs `need_bps` bit/s: all of it when it
/// fits in `link.room_bps`; otherwise [`ErrorKind::CapacityExceeded`] with
/// `refusal`, or, with [`Admission::Warn`], what is left and a warning.
/// Returns (granted bit/s, warning).
pub fn admit(need_bps: u64, link: &LinkFacts, refusal: impl FnOnce() -> String) -> Result<(u64, Option<String>)> {
    admit_within(need_bps, link.room_bps, link.admission, "bit/s", refusal)
}

fn admit_within(need: u64, room: u64, admission: Admission, unit: &str, refusal: impl FnOnce() -> String) -> Result<(u64, Option<String>)> {
    if need <= room {
        return Ok((need, None));
    }
    match admission {
        Admission::Refuse => Err(QsockError::new(ErrorKind::CapacityExceeded, refusal())),
        Admission::Warn => Ok((room, Some(format!("{}; admitted anyway with {room} {unit} because admission is \"warn\"", refusal())))),
    }
}

/// An HTB class a module owns on a device, shared by several of its streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedClass {
    /// Minor of the classid under the root (`1:minor`).
    pub minor: u32,
    /// Guaranteed rate, bit/s (> 0).
    pub rate_bps: u64,
    /// Ceiling, bit/s (≥ `rate_bps`).
    pub ceil_bps: u64,
}

/// Where a stream's packets are queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamClass {
    /// A class of its own, created by qsockd: a token bucket (rate, burst)
    /// and a ceiling it may borrow up to.
    Own {
        /// Guaranteed rate, bit/s (> 0).
        rate_bps: u64,
        /// Ceiling, bit/s (≥ `rate_bps`).
        ceil_bps: u64,
        /// Bucket depth (HTB `burst`), bytes (≥ [`default_burst_bytes`] of the rate).
        burst_bytes: u64,
    },
    /// A [`SharedClass`] of the module, by minor.
    Shared {
        /// Minor of the shared class.
        minor: u32,
    },
}

/// How qsockd installs one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamPlan {
    /// The stream's class.
    pub class: StreamClass,
    /// Data-path policy; qsockd fills `classid` (and, for own classes,
    /// `rate_bps`/`burst_ns` from the class).
    pub policy: SocketPolicy,
    /// Rate reserved for the stream out of the link, bit/s.
    pub reserved_bps: u64,
    /// Burst booked for the stream against the link's burst horizon, bytes
    /// (0 for the default bucket).
    pub booked_burst_bytes: u64,
    /// Set when admission let the stream in with less than it needs.
    pub warning: Option<String>,
}

/// A scheduler module (Q.Sockets §3). Every method checks its input first
/// and changes nothing when it fails; errors carry
/// [`qsock::ErrorKind::InvalidParams`], [`qsock::ErrorKind::CapacityExceeded`]
/// (admission refused) or [`qsock::ErrorKind::Unsupported`].
pub trait SchedulerModule: Send + Sync {
    /// Name as in [`SchedulerParams::name`].
    fn name(&self) -> &'static str;
    /// Initialises the module on a device: the classes it owns under the
    /// root, which qsockd creates. Default: its [`SchedulerModule::shared_classes`].
    fn init(&mut self, _link: &LinkFacts) -> Vec<SharedClass> {
        self.shared_classes()
    }
    /// Admits stream `cookie` with `params` and plans its class and policy.
    fn add(&mut self, cookie: u64, params: &SchedulerParams, link: &LinkFacts) -> Result<StreamPlan>;
    /// New parameters for an admitted stream (`link.room_bps` already counts
    /// its current reservation as free). Default: admit it anew with [`SchedulerModule::add`].
    fn change(&mut self, cookie: u64, params: &SchedulerParams, link: &LinkFacts) -> Result<StreamPlan> {
        self.add(cookie, params, link)
    }
    /// Forgets the stream (no-op for an unknown cookie).
    fn remove(&mut self, cookie: u64);
    /// The module's shared classes as its streams now need them. Default: none
    /// (every stream has a class of its own).
    fn shared_classes(&self) -> Vec<SharedClass> {
        Vec::new()
    }
    /// The stream's state, from the data path's counters.
    fn report(&self, cookie: u64, counters: &SocketCounters) -> SchedulerState;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_refuses_or_warns() {
        let mut link = LinkFacts { device: "d".into(), link_rate_bps: 10, room_bps: 4, burst_room_bytes: 100, msg_tags: false, admission: Admission::Refuse };
        assert_eq!(admit(4, &link, || "no".into()).unwrap(), (4, None));
        assert_eq!(admit(5, &link, || "no".into()).unwrap_err().kind, ErrorKind::CapacityExceeded);
        link.admission = Admission::Warn;
        let (granted, warning) = admit(5, &link, || "no".into()).unwrap();
        assert_eq!(granted, 4);
        assert!(warning.unwrap().starts_with("no; admitted anyway with 4 bit/s"));
        assert_eq!(admit_burst(100, &link).unwrap(), (100, None));
        let (granted, warning) = admit_burst(150, &link).unwrap();
        assert_eq!(granted, 100);
        assert!(warning.unwrap().contains("admitted anyway with 100 bytes of burst"));
        link.admission = Admission::Refuse;
        assert_eq!(admit_burst(101, &link).unwrap_err().kind, ErrorKind::CapacityExceeded);
    }
}

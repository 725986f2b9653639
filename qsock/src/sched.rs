//! The scheduler-module interface qsockd hosts its schedulers through.
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
use qsock_common::{SocketCounters, SocketPolicy};
use serde::{Deserialize, Serialize};

use crate::{
    error::{ErrorKind, QsockError, Result},
    params::SchedulerParams,
};

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
    /// Refuse or warn when a stream does not fit.
    pub admission: Admission,
}

/// Admission of a stream that needs `need_bps` bit/s: all of it when it
/// fits in `link.room_bps`; otherwise [`ErrorKind::CapacityExceeded`] with
/// `refusal`, or, with [`Admission::Warn`], what is left and a warning.
/// Returns (granted bit/s, warning).
pub fn admit(need_bps: u64, link: &LinkFacts, refusal: impl FnOnce() -> String) -> Result<(u64, Option<String>)> {
    if need_bps <= link.room_bps {
        return Ok((need_bps, None));
    }
    match link.admission {
        Admission::Refuse => Err(QsockError::new(ErrorKind::CapacityExceeded, refusal())),
        Admission::Warn => Ok((
            link.room_bps,
            Some(format!("{}; admitted anyway with {} bit/s because admission is \"warn\"", refusal(), link.room_bps)),
        )),
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamClass {
    /// A class of its own, created by qsockd: guaranteed rate and ceiling, bit/s.
    Own {
        /// Guaranteed rate, bit/s (> 0).
        rate_bps: u64,
        /// Ceiling, bit/s (≥ `rate_bps`).
        ceil_bps: u64,
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
    /// Set when admission let the stream in with less than it needs.
    pub warning: Option<String>,
}

/// Per-stream scheduler state, as `qinfo` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum SchedulerState {
    /// A guaranteed rate; nothing beyond the counters.
    Rate,
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

/// A scheduler module (Q.Sockets §3). Every method checks its input first
/// and changes nothing when it fails; errors carry
/// [`crate::ErrorKind::InvalidParams`], [`crate::ErrorKind::CapacityExceeded`]
/// (admission refused) or [`crate::ErrorKind::Unsupported`].
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
        let mut link = LinkFacts { device: "d".into(), link_rate_bps: 10, room_bps: 4, msg_tags: false, admission: Admission::Refuse };
        assert_eq!(admit(4, &link, || "no".into()).unwrap(), (4, None));
        assert_eq!(admit(5, &link, || "no".into()).unwrap_err().kind, ErrorKind::CapacityExceeded);
        link.admission = Admission::Warn;
        let (granted, warning) = admit(5, &link, || "no".into()).unwrap();
        assert_eq!(granted, 4);
        assert!(warning.unwrap().starts_with("no; admitted anyway with 4 bit/s"));
    }
}

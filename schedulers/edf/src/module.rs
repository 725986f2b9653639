//! EDF as a qsockd scheduler module: each EDF stream gets a class of its own
//! whose guaranteed rate and ceiling are its utilisation (`message_bytes · 8
//! / min_interval`), so the egress program's departure prediction is exact:
//! lossy EDF drops a message predicted to miss its deadline, lossless sends
//! it late. Admission keeps the device's deadline traffic schedulable.
use qsock::{ErrorKind, QsockError, SchedulerParams};
use qsock_common::{SocketCounters, SocketPolicy, DROP_PRIO_MAX_DROPPABLE, POLICY_LOSSLESS};
use qsock_sched::{admit, default_burst_bytes, LinkFacts, SchedulerModule, SchedulerState, StreamClass, StreamPlan};
use std::collections::HashMap;

use crate::{rate_bps, PeriodicStream};

/// The EDF module of one device.
#[derive(Default)]
pub struct EdfModule {
    lossy: HashMap<u64, bool>,
}

impl SchedulerModule for EdfModule {
    fn name(&self) -> &'static str {
        "edf"
    }

    fn add(&mut self, cookie: u64, params: &SchedulerParams, link: &LinkFacts) -> Result<StreamPlan, QsockError> {
        let SchedulerParams::Edf(e) = params else {
            return Err(QsockError::new(ErrorKind::InvalidParams, format!("the edf module cannot serve scheduler {:?}", params.name())));
        };
        if e.message_bytes == 0 || e.min_interval_ns == 0 {
            return Err(QsockError::new(ErrorKind::InvalidParams, "EDF needs message_bytes > 0 and min_interval_ns > 0"));
        }
        let rate = rate_bps(PeriodicStream { bytes: e.message_bytes as u64, period_ns: e.min_interval_ns });
        let (rate, warning) = admit(rate, link, || {
            format!(
                "EDF stream refused: the deadline traffic would be unschedulable (it needs {rate} bit/s of utilisation, {} bit/s is left on {})",
                link.room_bps, link.device
            )
        })?;
        self.lossy.insert(cookie, e.lossy);
        let policy = SocketPolicy { flags: if e.lossy { 0 } else { POLICY_LOSSLESS }, default_drop_prio: DROP_PRIO_MAX_DROPPABLE, ..SocketPolicy::default() };
        // No borrowing: the class drains at exactly its reservation. The
        // sporadic stream is the token bucket (C·8/T, C); one message fits
        // the default bucket, so no burst is booked.
        let burst_bytes = default_burst_bytes(rate).max(e.message_bytes as u64);
        Ok(StreamPlan { class: StreamClass::Own { rate_bps: rate, ceil_bps: rate, burst_bytes }, policy, reserved_bps: rate, booked_burst_bytes: 0, warning })
    }

    fn remove(&mut self, cookie: u64) {
        self.lossy.remove(&cookie);
    }

    fn report(&self, cookie: u64, _c: &SocketCounters) -> SchedulerState {
        SchedulerState::Edf { lossy: self.lossy.get(&cookie).copied().unwrap_or(true) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qsock::EdfAttrs;

    #[test]
    fn admission_refuses_an_unschedulable_stream() {
        let mut m = EdfModule::default();
        let link = LinkFacts {
            device: "veth0".into(),
            link_rate_bps: 10_000_000,
            room_bps: 1_000_000,
            burst_room_bytes: 0,
            msg_tags: true,
            admission: Default::default(),
        };
        let ok = SchedulerParams::Edf(EdfAttrs { lossy: true, message_bytes: 1250, min_interval_ns: 10_000_000 });
        let p = m.add(1, &ok, &link).unwrap();
        assert_eq!(p.class, StreamClass::Own { rate_bps: 1_000_000, ceil_bps: 1_000_000, burst_bytes: 1_000_000 / 8 / 250 + 1514 });
        assert_eq!(p.policy.flags & POLICY_LOSSLESS, 0);
        let big = SchedulerParams::Edf(EdfAttrs { lossy: false, message_bytes: 1251, min_interval_ns: 10_000_000 });
        assert_eq!(m.add(2, &big, &link).unwrap_err().kind, ErrorKind::CapacityExceeded);
        assert_eq!(m.report(2, &SocketCounters::default()), SchedulerState::Edf { lossy: true });
    }
}

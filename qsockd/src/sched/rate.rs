//! The `rate` scheduler module: a token bucket (guaranteed rate and burst,
//! as an IntServ TSpec, RFC 2212) in a class of the socket's own, borrowing
//! up to its ceiling, with per-unit drop decisions (deadline, drop
//! priority, whole frames) in the egress program.
use std::collections::HashSet;

use qsock::{ErrorKind, QsockError, SchedulerParams};
use qsock_common::*;
use qsock_sched::{admit, admit_burst, default_burst_bytes, LinkFacts, SchedulerModule, SchedulerState, StreamClass, StreamPlan};

/// The rate module of one device.
#[derive(Default)]
pub struct RateModule {
    streams: HashSet<u64>,
}

impl SchedulerModule for RateModule {
    fn name(&self) -> &'static str {
        "rate"
    }

    fn add(&mut self, cookie: u64, params: &SchedulerParams, link: &LinkFacts) -> Result<StreamPlan, QsockError> {
        let SchedulerParams::Rate(r) = params else {
            return Err(QsockError::new(ErrorKind::InvalidParams, format!("the rate module cannot serve scheduler {:?}", params.name())));
        };
        if r.rate_bps == 0 {
            return Err(QsockError::new(ErrorKind::InvalidParams, "guaranteed rate must be > 0 bit/s"));
        }
        if r.rate_bps > link.link_rate_bps {
            return Err(QsockError::new(
                ErrorKind::CapacityExceeded,
                format!("guaranteed rate {} bit/s exceeds the link rate {} bit/s of {}", r.rate_bps, link.link_rate_bps, link.device),
            ));
        }
        let (rate, warning) =
            admit(r.rate_bps, link, || format!("{} bit/s requested but only {} bit/s of {} is left to guarantee", r.rate_bps, link.room_bps, link.device))?;
        let ceil = r.ceil_bps.unwrap_or(link.link_rate_bps).min(link.link_rate_bps).max(rate);
        // A declared burst is booked; the default bucket is not (see default_burst_bytes).
        let (booked_burst, burst_warning) = match r.burst_bytes {
            Some(b) => admit_burst(b, link)?,
            None => (0, None),
        };
        let warning = match (warning, burst_warning) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        let burst = booked_burst.max(default_burst_bytes(rate));
        let mut flags = 0;
        if r.non_droppable {
            flags |= POLICY_NON_DROPPABLE;
        }
        if r.lossless {
            flags |= POLICY_LOSSLESS;
        }
        let policy = SocketPolicy {
            flags,
            delay_budget_ns: r.delay_budget_ns.unwrap_or(0),
            default_drop_prio: if r.non_droppable { DROP_PRIO_NON_DROPPABLE } else { DROP_PRIO_MAX_DROPPABLE },
            ..SocketPolicy::default()
        };
        self.streams.insert(cookie);
        Ok(StreamPlan {
            class: StreamClass::Own { rate_bps: rate, ceil_bps: ceil, burst_bytes: burst },
            policy,
            reserved_bps: rate,
            booked_burst_bytes: booked_burst,
            warning,
        })
    }

    fn remove(&mut self, cookie: u64) {
        self.streams.remove(&cookie);
    }

    fn report(&self, _cookie: u64, _c: &SocketCounters) -> SchedulerState {
        SchedulerState::Rate
    }
}

//! The `best_effort` scheduler module: no guarantee. The socket's packets
//! go to the device's best-effort class (`1:fffe`), counted and with their
//! queuing delay measured, never dropped by the egress program. For
//! sockets that want only an interface chosen from their intents.
use qsock::{ErrorKind, QsockError, SchedulerParams};
use qsock_common::*;
use qsock_sched::{LinkFacts, SchedulerModule, SchedulerState, StreamClass, StreamPlan};

/// The best-effort module of one device (stateless).
#[derive(Default)]
pub struct BestEffortModule;

impl SchedulerModule for BestEffortModule {
    fn name(&self) -> &'static str {
        "best_effort"
    }

    fn add(&mut self, _cookie: u64, params: &SchedulerParams, _link: &LinkFacts) -> Result<StreamPlan, QsockError> {
        if !matches!(params, SchedulerParams::BestEffort) {
            return Err(QsockError::new(ErrorKind::InvalidParams, format!("the best_effort module cannot serve scheduler {:?}", params.name())));
        }
        Ok(StreamPlan {
            class: StreamClass::Shared { minor: BEST_EFFORT_MINOR },
            // Rate 0: no prediction costs anything, so nothing is judged late.
            policy: SocketPolicy { flags: POLICY_NON_DROPPABLE | POLICY_LOSSLESS, default_drop_prio: DROP_PRIO_NON_DROPPABLE, ..SocketPolicy::default() },
            reserved_bps: 0,
            booked_burst_bytes: 0,
            warning: None,
        })
    }

    fn remove(&mut self, _cookie: u64) {}

    fn report(&self, _cookie: u64, _c: &SocketCounters) -> SchedulerState {
        SchedulerState::BestEffort
    }
}

//! DWCS as a qsockd scheduler module: all DWCS streams of a device share one
//! FIFO class (`1:fffd`) whose guaranteed rate (and ceiling) is the sum of
//! the streams' reservations; the egress program runs the window rules per
//! unit against the class's shared virtual clock (see `qsock-ebpf`).
use std::collections::HashMap;

use qsock::{DwcsAttrs, ErrorKind, QsockError, SchedulerParams};
use qsock_common::{
    dwcs_origin, SocketCounters, SocketPolicy, DROP_PRIO_MAX_DROPPABLE, DROP_PRIO_NON_DROPPABLE, DWCS_CLASS_MINOR, POLICY_DWCS, POLICY_NON_DROPPABLE,
};
use qsock_sched::{admit, LinkFacts, SchedulerModule, SchedulerState, SharedClass, StreamClass, StreamPlan};

use crate::WindowConstraint;

/// Rate of the shared class while no stream reserves anything, bit/s (HTB
/// needs a rate > 0; nothing is queued there without a DWCS stream).
pub const IDLE_CLASS_RATE_BPS: u64 = 8_000;

/// Default headroom on top of the DWCS feasibility share, per mille
/// (qsockd's `dwcs_headroom_permille`). The data path
/// approximates DWCS with drop decisions at enqueue into one FIFO; with the
/// class at exactly Σ (1 − x/y)·C/T its backlog is a critically loaded queue
/// and a few windows break (measured: README, DWCS window test).
pub const DEFAULT_HEADROOM_PERMILLE: u32 = 100;

/// Rate a DWCS stream reserves, bit/s, rounded up: `(1 − x/y) · unit_bytes ·
/// 8 / ipg`, or `unit_bytes · 8 / ipg` when non-droppable, plus
/// `headroom_permille` (default [`DEFAULT_HEADROOM_PERMILLE`]). The sum over a device's streams is the DWCS
/// feasibility test Σ (1 − x_i/y_i)·C_i/T_i ≤ 1 (West et al., IEEE TC 53(6),
/// 2004) scaled to the class's rate.
pub fn reservation_bps(d: &DwcsAttrs, headroom_permille: u32) -> u64 {
    let kept = if d.non_droppable { d.old } else { d.old - d.oln } as u128;
    let num = d.unit_bytes as u128 * 8 * 1_000_000_000 * kept * (1000 + headroom_permille as u128);
    let den = d.ipg_ns.max(1) as u128 * d.old.max(1) as u128 * 1000;
    // Saturate: an absurd request must be refused, not wrap to a small rate.
    num.div_ceil(den).min(u64::MAX as u128) as u64
}

/// The DWCS module of one device.
pub struct DwcsModule {
    streams: HashMap<u64, (DwcsAttrs, u64)>,
    headroom_permille: u32,
}

impl Default for DwcsModule {
    fn default() -> Self {
        Self::new(DEFAULT_HEADROOM_PERMILLE)
    }
}

impl DwcsModule {
    /// A module that reserves `headroom_permille` on top of each stream's
    /// feasibility share (see [`reservation_bps`]).
    pub fn new(headroom_permille: u32) -> Self {
        Self { streams: HashMap::new(), headroom_permille }
    }

    fn class_rate(&self) -> u64 {
        self.streams.values().map(|(_, r)| r).sum::<u64>().max(IDLE_CLASS_RATE_BPS)
    }

    fn plan(&self, params: &SchedulerParams, link: &LinkFacts) -> Result<(DwcsAttrs, StreamPlan), QsockError> {
        let SchedulerParams::Dwcs(d) = params else {
            return Err(QsockError::new(ErrorKind::InvalidParams, format!("the dwcs module cannot serve scheduler {:?}", params.name())));
        };
        let c = WindowConstraint::new(d.oln, d.old).map_err(|m| QsockError::new(ErrorKind::InvalidParams, m))?;
        let need = reservation_bps(d, self.headroom_permille);
        let (reserved, warning) = admit(need, link, || {
            format!(
                "DWCS stream refused: with it the DWCS set on {} is infeasible (it needs (1 - {}/{}) x {} bytes per {} ns + {} per mille = {need} bit/s, {} bit/s is left)",
                link.device, d.oln, d.old, d.unit_bytes, d.ipg_ns, self.headroom_permille, link.room_bps
            )
        })?;
        let mut flags = POLICY_DWCS;
        if d.non_droppable {
            flags |= POLICY_NON_DROPPABLE;
        }
        let policy = SocketPolicy {
            flags,
            default_drop_prio: if d.non_droppable { DROP_PRIO_NON_DROPPABLE } else { DROP_PRIO_MAX_DROPPABLE },
            ipg_ns: d.ipg_ns,
            dwcs_x: c.x,
            dwcs_y: c.y,
            dwcs_unit_bytes: d.unit_bytes,
            ..SocketPolicy::default()
        };
        // No burst is booked: DWCS spreads each unit over its ipg, and a unit
        // above its declared size shows in the prediction as a window miss.
        Ok((d.clone(), StreamPlan { class: StreamClass::Shared { minor: DWCS_CLASS_MINOR }, policy, reserved_bps: reserved, booked_burst_bytes: 0, warning }))
    }
}

impl SchedulerModule for DwcsModule {
    fn name(&self) -> &'static str {
        "dwcs"
    }

    fn add(&mut self, cookie: u64, params: &SchedulerParams, link: &LinkFacts) -> Result<StreamPlan, QsockError> {
        let (d, plan) = self.plan(params, link)?;
        self.streams.insert(cookie, (d, plan.reserved_bps));
        Ok(plan)
    }

    fn remove(&mut self, cookie: u64) {
        self.streams.remove(&cookie);
    }

    fn shared_classes(&self) -> Vec<SharedClass> {
        let rate = self.class_rate();
        // ceil = rate: the class never borrows, so the shared virtual clock
        // predicts departures exactly.
        vec![SharedClass { minor: DWCS_CLASS_MINOR, rate_bps: rate, ceil_bps: rate }]
    }

    fn report(&self, cookie: u64, c: &SocketCounters) -> SchedulerState {
        let (x, y) = self.streams.get(&cookie).map_or((0, 0), |(d, _)| (d.oln, d.old));
        // Before the first unit (or right after a change) the data path has
        // not started the window yet: it starts at x/y.
        let started = c.dwcs_origin == dwcs_origin(x, y);
        SchedulerState::Dwcs {
            x,
            y,
            x_now: if started { c.dwcs_x_now } else { x },
            y_now: if started { c.dwcs_y_now } else { y },
            violated: started && c.dwcs_violated != 0,
            violations: c.dwcs_violations,
            deadline_ns: c.dwcs_deadline_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(x: u32, y: u32, nd: bool) -> DwcsAttrs {
        DwcsAttrs { ipg_ns: 10_000_000, unit_bytes: 1250, oln: x, old: y, non_droppable: nd }
    }

    fn link(room: u64) -> LinkFacts {
        LinkFacts { device: "veth0".into(), link_rate_bps: 10_000_000, room_bps: room, burst_room_bytes: 0, msg_tags: true, admission: Default::default() }
    }

    #[test]
    fn reservation_is_the_feasible_share() {
        // 1250 bytes per 10 ms = 1 Mbit/s; 1/4 may be lost: 750 kbit/s, + 10 %.
        assert_eq!(reservation_bps(&attrs(1, 4, false), DEFAULT_HEADROOM_PERMILLE), 825_000);
        assert_eq!(reservation_bps(&attrs(1, 4, true), DEFAULT_HEADROOM_PERMILLE), 1_100_000, "non-droppable reserves everything");
        assert_eq!(reservation_bps(&attrs(0, 1, false), DEFAULT_HEADROOM_PERMILLE), 1_100_000);
    }

    #[test]
    fn headroom_is_configurable() {
        assert_eq!(reservation_bps(&attrs(1, 4, false), 0), 750_000);
        let p = DwcsModule::new(50).add(1, &SchedulerParams::Dwcs(attrs(1, 4, false)), &link(5_000_000)).unwrap();
        assert_eq!(p.reserved_bps, 787_500);
    }

    #[test]
    fn an_absurd_request_saturates_and_is_refused() {
        let huge = DwcsAttrs { ipg_ns: 1, unit_bytes: u32::MAX, oln: 0, old: 1, non_droppable: false };
        assert_eq!(reservation_bps(&huge, DEFAULT_HEADROOM_PERMILLE), u64::MAX);
        let e = DwcsModule::default().add(1, &SchedulerParams::Dwcs(huge), &link(9_000_000)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::CapacityExceeded);
    }

    #[test]
    fn class_grows_and_shrinks_with_streams_and_refuses_infeasible_sets() {
        let mut m = DwcsModule::default();
        assert_eq!(m.shared_classes()[0].rate_bps, IDLE_CLASS_RATE_BPS);
        let p = m.add(1, &SchedulerParams::Dwcs(attrs(1, 4, false)), &link(5_000_000)).unwrap();
        assert_eq!(p.reserved_bps, 825_000);
        assert_eq!(p.class, StreamClass::Shared { minor: DWCS_CLASS_MINOR });
        assert_eq!((p.policy.dwcs_x, p.policy.dwcs_y, p.policy.ipg_ns), (1, 4, 10_000_000));
        m.add(2, &SchedulerParams::Dwcs(attrs(0, 1, false)), &link(4_175_000)).unwrap();
        assert_eq!(m.shared_classes()[0].rate_bps, 1_925_000);
        let e = m.add(3, &SchedulerParams::Dwcs(attrs(0, 1, false)), &link(1_099_999)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::CapacityExceeded);
        assert_eq!(m.shared_classes()[0].rate_bps, 1_925_000, "a refusal changes nothing");
        m.remove(1);
        assert_eq!(m.shared_classes()[0].rate_bps, 1_100_000);
    }
}

//! The figures qsockd reports about a managed socket (`qinfo`, `qsockctl
//! list`, the metrics endpoint), computed from its books, the data path's
//! counters and its class's statistics.
use std::{collections::VecDeque, os::fd::BorrowedFd};

use qsock::{DelayStats, Drops, QInfo, SchedulerState, SocketSummary};
use qsock_common::{delay_bucket_upper_ns, SocketCounters};
use qsock_sched::StreamClass;

use crate::{
    device::runtime::{htb_class, DeviceRt},
    kernel::tc::{fmt_classid, ClassStats},
    state::sockets::Managed,
    state::sockinfo,
};

/// Rate over the sample window: (bit/s, window ns); (0, 0) with fewer
/// than two samples.
pub fn rate_from(samples: &VecDeque<(u64, u64)>) -> (u64, u64) {
    match (samples.front(), samples.back()) {
        (Some(&(t0, b0)), Some(&(t1, b1))) if t1 > t0 => {
            let dt = t1 - t0;
            ((b1.saturating_sub(b0) as u128 * 8 * 1_000_000_000 / dt as u128) as u64, dt)
        }
        _ => (0, 0),
    }
}

/// Delay statistics from the data path's counters and log2 histogram (ns).
pub fn delay_stats(c: &SocketCounters) -> DelayStats {
    let n: u64 = c.delay_hist.iter().sum();
    if n == 0 {
        return DelayStats::default();
    }
    let pct = |q: f64| {
        let target = (q * n as f64).ceil() as u64;
        let mut acc = 0;
        for (i, &k) in c.delay_hist.iter().enumerate() {
            acc += k;
            if acc >= target {
                return delay_bucket_upper_ns(i).min(c.delay_max_ns.max(1));
            }
        }
        c.delay_max_ns
    };
    DelayStats { samples: n, mean_ns: c.delay_sum_ns / n, p50_ns: pct(0.5), p99_ns: pct(0.99), max_ns: c.delay_max_ns }
}

/// Drops by reason: the data path's (deadline, frame) and the class's
/// leaf qdisc's (`qdisc_packets`).
pub fn drops(c: &SocketCounters, qdisc_packets: u64) -> Drops {
    Drops {
        deadline_packets: c.drop_deadline_packets,
        deadline_bytes: c.drop_deadline_bytes,
        frame_packets: c.drop_frame_packets,
        frame_bytes: c.drop_frame_bytes,
        qdisc_packets,
    }
}

/// `qinfo` of socket `cookie` booked as `m` on `dev`; `cls` are its
/// class's statistics, `sock` the socket itself (for stack facts).
pub fn qinfo(cookie: u64, m: &Managed, dev: &DeviceRt, cls: ClassStats, sock: BorrowedFd<'_>) -> QInfo {
    let c = dev.counters(cookie).unwrap_or_default();
    let cid = DeviceRt::classid(m.minor);
    let (rate_bps, rate_window_ns) = rate_from(&m.samples);
    let (sent_packets, sent_bytes) = if dev.delay_probe { (c.deq_packets, c.deq_bytes) } else { (cls.packets, cls.bytes) };
    let (burst_bytes, ceil_bps) = match m.class {
        StreamClass::Own { rate_bps, ceil_bps, burst_bytes } => {
            let h = htb_class(rate_bps, ceil_bps, burst_bytes);
            (h.burst_bytes, h.ceil_bps)
        }
        StreamClass::Shared { .. } => (0, m.booking.rate_bps),
    };
    QInfo {
        cookie,
        device: m.device.clone(),
        classid: fmt_classid(cid),
        scheduler: m.params.scheduler.clone(),
        scheduler_state: dev.modules.iter().find(|x| x.name() == m.params.scheduler.name()).map(|x| x.report(cookie, &c)).unwrap_or(SchedulerState::Rate),
        intents: m.params.intents.clone(),
        selection: m.selection.clone(),
        guaranteed_rate_bps: m.booking.rate_bps,
        guaranteed_burst_bytes: burst_bytes,
        ceil_bps,
        service_rate_bps: c.meter.rate_at(qsock::monotonic_now_ns()),
        rate_bps,
        rate_window_ns,
        enqueued_packets: c.enq_packets,
        enqueued_bytes: c.enq_bytes,
        sent_packets,
        sent_bytes,
        unseen_packets: c.unseen_packets,
        backlog_packets: cls.qlen,
        backlog_bytes: cls.backlog,
        drops: drops(&c, cls.drops),
        late_kept_packets: c.late_kept_packets,
        past_deadline_units: c.past_deadline_units,
        deadline_met_packets: c.deadline_met_packets,
        queuing_delay: delay_stats(&c),
        stack: sockinfo::stack_info(sock),
        multipath: None,
    }
}

/// One row of `qsockctl list`: socket `cookie` booked as `m` on `dev`,
/// whose class's leaf qdisc dropped `qdisc_drops` packets.
pub fn summary(cookie: u64, m: &Managed, dev: &DeviceRt, qdisc_drops: u64) -> SocketSummary {
    let c = dev.counters(cookie).unwrap_or_default();
    SocketSummary {
        cookie,
        uid: m.owner_uid,
        pid: m.owner_pid,
        command: std::fs::read_to_string(format!("/proc/{}/comm", m.owner_pid)).map(|s| s.trim().to_string()).unwrap_or_default(),
        device: m.device.clone(),
        classid: fmt_classid(DeviceRt::classid(m.minor)),
        scheduler: m.params.scheduler.name().to_string(),
        guaranteed_rate_bps: m.booking.rate_bps,
        rate_bps: rate_from(&m.samples).0,
        drops: drops(&c, qdisc_drops),
        queuing_delay: delay_stats(&c),
        selection: m.selection.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_bytes_over_window() {
        let s: VecDeque<_> = [(0u64, 0u64), (500_000_000, 62_500), (1_000_000_000, 125_000)].into();
        assert_eq!(rate_from(&s), (1_000_000, 1_000_000_000));
        assert_eq!(rate_from(&VecDeque::new()), (0, 0));
    }

    #[test]
    fn delay_percentiles_come_from_buckets() {
        let mut c = SocketCounters::default();
        c.delay_hist[3] = 99; // < 8.192 µs
        c.delay_hist[10] = 1; // < 1.048 ms
        c.delay_sum_ns = 99 * 5_000 + 900_000;
        c.delay_max_ns = 900_000;
        let d = delay_stats(&c);
        assert_eq!(d.samples, 100);
        assert_eq!(d.p50_ns, delay_bucket_upper_ns(3));
        assert_eq!(d.p99_ns, delay_bucket_upper_ns(3));
        assert_eq!(d.max_ns, 900_000);
        assert_eq!(d.mean_ns, (99 * 5_000 + 900_000) / 100);
    }
}

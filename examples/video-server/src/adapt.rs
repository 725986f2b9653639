//! qinfo-driven adaptation (Q.Sockets' adaptive applications): the sender
//! reads `qinfo` while it streams and sheds load in the order that hurts
//! the picture least when its class is under pressure, and recovers when
//! the pressure goes.
//!
//! Levels: 0 sends everything; 1 sheds non-reference B-frames (nothing
//! depends on them); 2 sheds every B-frame; 3 also sheds, from the first
//! P-frame it sheds, every frame up to the next I-frame (they would only
//! decode against a missing reference). Pressure (new drops, or a recent mean
//! queuing delay above a threshold) raises the level one step at a time;
//! calm for a hold time lowers it one step.
use crate::h264::FrameKind;

/// What one `qinfo` poll says about pressure since the previous one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Packets dropped by the data path or the qdisc since the last poll.
    pub new_drops: u64,
    /// Mean queuing delay of the packets dequeued since the last poll, ns
    /// (0 when none left).
    pub recent_delay_ns: u64,
}

impl Sample {
    /// The pressure between two `qinfo` reports of the same socket.
    pub fn between(before: &qsock::QInfo, now: &qsock::QInfo) -> Self {
        let drops = |i: &qsock::QInfo| i.drops.total_packets();
        let (n0, n1) = (before.queuing_delay.samples, now.queuing_delay.samples);
        let sum = |i: &qsock::QInfo| i.queuing_delay.mean_ns as u128 * i.queuing_delay.samples as u128;
        let recent_delay_ns = if n1 > n0 { (sum(now).saturating_sub(sum(before)) / (n1 - n0) as u128) as u64 } else { 0 };
        Self { new_drops: drops(now).saturating_sub(drops(before)), recent_delay_ns }
    }
}

/// Highest shedding level.
pub const MAX_LEVEL: u8 = 3;

/// The shedding state of one stream.
#[derive(Clone, Debug)]
pub struct Shedder {
    /// Current level, 0..=[`MAX_LEVEL`].
    pub level: u8,
    delay_threshold_ns: u64,
    hold_ns: u64,
    step_gap_ns: u64,
    last_change_ns: u64,
    calm_since_ns: Option<u64>,
    skip_to_i: bool,
}

impl Shedder {
    /// Raises the level when the recent queuing delay exceeds
    /// `delay_threshold_ns` or anything was dropped, at most once per
    /// `step_gap_ns`; lowers it after `hold_ns` without pressure.
    pub fn new(delay_threshold_ns: u64, step_gap_ns: u64, hold_ns: u64) -> Self {
        Self { level: 0, delay_threshold_ns, hold_ns, step_gap_ns, last_change_ns: 0, calm_since_ns: None, skip_to_i: false }
    }

    /// Takes a poll's sample at `now_ns`; returns the new level if it changed.
    /// From level 2 on only new drops raise the level: every B-frame is shed
    /// then, so a drop is a P-frame and its GOP is broken (skip to the next
    /// I-frame), while delay alone comes from I-frames, which no shedding
    /// removes. Any drop or delay counts against stepping down.
    pub fn observe(&mut self, s: Sample, now_ns: u64) -> Option<u8> {
        let delayed = s.recent_delay_ns > self.delay_threshold_ns;
        let calm = s.new_drops == 0 && !delayed;
        let pressed = s.new_drops > 0 || (delayed && self.level < 2);
        if pressed {
            self.calm_since_ns = None;
            if self.level < MAX_LEVEL && now_ns.saturating_sub(self.last_change_ns) >= self.step_gap_ns {
                self.level += 1;
                self.last_change_ns = now_ns;
                return Some(self.level);
            }
            return None;
        }
        if !calm {
            self.calm_since_ns = None;
            return None;
        }
        let since = *self.calm_since_ns.get_or_insert(now_ns);
        if self.level > 0 && now_ns - since >= self.hold_ns {
            self.level -= 1;
            self.last_change_ns = now_ns;
            self.calm_since_ns = Some(now_ns);
            return Some(self.level);
        }
        None
    }

    /// Whether to send a frame of `kind` (`reference`: other frames predict
    /// from it) at the current level.
    pub fn send(&mut self, kind: FrameKind, reference: bool) -> bool {
        match kind {
            FrameKind::I => {
                self.skip_to_i = false;
                true
            }
            _ if self.skip_to_i => false,
            FrameKind::B if self.level >= 2 || (self.level >= 1 && !reference) => false,
            FrameKind::P if self.level >= 3 => {
                self.skip_to_i = true;
                false
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn sheds_in_order_and_recovers() {
        let mut s = Shedder::new(50 * MS, 500 * MS, 2_000 * MS);
        let calm = Sample::default();
        let hot = Sample { new_drops: 0, recent_delay_ns: 80 * MS };
        assert!(s.send(FrameKind::B, false));
        assert_eq!(s.observe(hot, 1_000 * MS), Some(1));
        assert!(!s.send(FrameKind::B, false), "non-reference B shed first");
        assert!(s.send(FrameKind::B, true), "reference B kept at level 1");
        assert!(s.send(FrameKind::P, true));
        assert_eq!(s.observe(hot, 1_200 * MS), None, "one step per gap");
        assert_eq!(s.observe(Sample { new_drops: 3, recent_delay_ns: 0 }, 1_600 * MS), Some(2));
        assert!(!s.send(FrameKind::B, true), "every B at level 2");
        assert!(s.send(FrameKind::P, true), "P kept at level 2");
        assert_eq!(s.observe(hot, 2_200 * MS), None, "delay alone does not raise level 2");
        assert_eq!(s.observe(Sample { new_drops: 1, recent_delay_ns: 0 }, 2_200 * MS), Some(3), "a P-frame dropped does");
        assert!(!s.send(FrameKind::P, true));
        assert_eq!(s.observe(calm, 2_400 * MS), None);
        assert_eq!(s.observe(hot, 3_400 * MS), None, "delay is not calm");
        assert_eq!(s.observe(calm, 3_500 * MS), None);
        assert_eq!(s.observe(calm, 5_500 * MS), Some(2), "calm for the hold time");
        assert!(!s.send(FrameKind::P, true), "still skipping to the next I-frame");
        assert!(s.send(FrameKind::I, true));
        assert!(s.send(FrameKind::P, true));
        assert_eq!(s.observe(calm, 7_500 * MS), Some(1));
        assert_eq!(s.observe(calm, 9_500 * MS), Some(0));
        assert!(s.send(FrameKind::B, false));
    }

    #[test]
    fn pressure_is_measured_between_polls() {
        let mut a = sample_info();
        a.queuing_delay = qsock::DelayStats { samples: 10, mean_ns: 1_000, ..Default::default() };
        let mut b = a.clone();
        b.queuing_delay = qsock::DelayStats { samples: 20, mean_ns: 2_000, ..Default::default() };
        b.drops.deadline_packets = 2;
        let s = Sample::between(&a, &b);
        assert_eq!(s, Sample { new_drops: 2, recent_delay_ns: 3_000 });
    }

    fn sample_info() -> qsock::QInfo {
        qsock::QInfo {
            cookie: 1,
            device: "d".into(),
            classid: "1:10".into(),
            scheduler: qsock::SchedulerParams::Rate(qsock::RateAttrs::guaranteed(1)),
            scheduler_state: qsock::SchedulerState::Rate,
            intents: Default::default(),
            selection: None,
            guaranteed_rate_bps: 1,
            guaranteed_burst_bytes: 0,
            ceil_bps: 1,
            service_rate_bps: 0,
            rate_bps: 0,
            rate_window_ns: 0,
            enqueued_packets: 0,
            enqueued_bytes: 0,
            sent_packets: 0,
            sent_bytes: 0,
            unseen_packets: 0,
            backlog_packets: 0,
            backlog_bytes: 0,
            drops: Default::default(),
            late_kept_packets: 0,
            past_deadline_units: 0,
            deadline_met_packets: 0,
            queuing_delay: Default::default(),
            stack: Default::default(),
            multipath: None,
        }
    }
}

//! Per-frame records the receiver writes, and the per-second table and
//! summary the demo prints from them.
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::h264::FrameKind;

/// What the receiver saw of one frame. Times are `CLOCK_MONOTONIC` ns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FrameRecord {
    /// Decode-order index.
    pub index: usize,
    /// Frame type (from the reference file).
    pub kind: FrameKind,
    /// RTP packets the frame was sent as.
    pub expected_packets: u32,
    /// RTP packets that arrived.
    pub received_packets: u32,
    /// Arrival of the frame's last arriving packet, if any arrived.
    pub last_arrival_ns: Option<u64>,
}

impl FrameRecord {
    /// Every packet of the frame arrived.
    pub fn complete(&self) -> bool {
        self.received_packets == self.expected_packets
    }
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SecondRow {
    /// Second since the first frame's nominal send time.
    pub second: u32,
    /// Frames completed whose last packet arrived in this second.
    pub fps: u32,
    /// Of those, frames within the playout budget.
    pub on_time_fps: u32,
    /// Frames of this second's send schedule lost (incomplete), by type.
    pub lost_i: u32,
    /// P-frames lost.
    pub lost_p: u32,
    /// B-frames lost.
    pub lost_b: u32,
    /// Completed frames of this second's schedule later than the playout budget.
    pub late: u32,
    /// 99th percentile of |inter-frame arrival jitter| among frames completed in this second, ms.
    pub jitter_p99_ms: f64,
}

/// The whole run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Frames in the stream.
    pub frames: usize,
    /// Frames completed.
    pub completed: usize,
    /// Completed frames per second of the stream's nominal duration.
    pub mean_fps: f64,
    /// Frames lost by type.
    pub lost_i: usize,
    /// P-frames lost.
    pub lost_p: usize,
    /// B-frames lost.
    pub lost_b: usize,
    /// Completed frames later than the playout budget.
    pub late: usize,
    /// Frames of which some but not all packets arrived.
    pub partial: usize,
    /// Frames of which no packet arrived (never sent, or lost).
    pub missing: usize,
    /// Median |jitter|, ms.
    pub jitter_p50_ms: f64,
    /// 99th percentile |jitter|, ms.
    pub jitter_p99_ms: f64,
    /// Per frame, in index order: lost or late (a missed deadline).
    #[serde(skip)]
    pub missed: Vec<bool>,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// Builds the per-second table and the summary.
///
/// Jitter follows RFC 3550 §6.4.1's D(j,k) = (R_k − R_j) − (S_k − S_j) for
/// consecutive completed frames j < k, with S the nominal send times
/// (index / fps); reported as |D|. A frame is late when its arrival, measured
/// against frame 0's, trails its schedule by more than `playout_ms`.
pub fn analyse(records: &[FrameRecord], fps: u32, playout_ms: u64) -> (Vec<SecondRow>, Summary) {
    let period_ns = 1_000_000_000 / fps as u64;
    let t0 = records.iter().find(|r| r.complete()).and_then(|r| r.last_arrival_ns.map(|t| t - r.index as u64 * period_ns));
    let seconds = records.len().div_ceil(fps as usize) + 1;
    let mut rows: Vec<SecondRow> = (0..seconds).map(|s| SecondRow { second: s as u32, ..Default::default() }).collect();
    let mut row_hist: Vec<Histogram<u64>> = (0..seconds).map(|_| hist()).collect();
    let mut all = hist();
    let mut sum = Summary { frames: records.len(), missed: vec![false; records.len()], ..Default::default() };
    let mut prev: Option<(usize, u64)> = None;
    for r in records {
        let sched_sec = (r.index / fps as usize).min(seconds - 1);
        if !r.complete() {
            if let Some(m) = sum.missed.get_mut(r.index) {
                *m = true;
            }
            if r.received_packets == 0 {
                sum.missing += 1;
            } else {
                sum.partial += 1;
            }
            match r.kind {
                FrameKind::I => (rows[sched_sec].lost_i += 1, sum.lost_i += 1),
                FrameKind::P => (rows[sched_sec].lost_p += 1, sum.lost_p += 1),
                FrameKind::B => (rows[sched_sec].lost_b += 1, sum.lost_b += 1),
            };
            continue;
        }
        sum.completed += 1;
        let (Some(t0), Some(arr)) = (t0, r.last_arrival_ns) else { continue };
        let rel = arr.saturating_sub(t0);
        let arr_sec = ((rel / 1_000_000_000) as usize).min(seconds - 1);
        rows[arr_sec].fps += 1;
        if rel.saturating_sub(r.index as u64 * period_ns) > playout_ms * 1_000_000 {
            rows[sched_sec].late += 1;
            sum.late += 1;
            if let Some(m) = sum.missed.get_mut(r.index) {
                *m = true;
            }
        } else {
            rows[arr_sec].on_time_fps += 1;
        }
        if let Some((j, rj)) = prev {
            let d = (arr as i128 - rj as i128) - ((r.index - j) as i128 * period_ns as i128);
            let us = (d.unsigned_abs() / 1000).max(1) as u64;
            let _ = row_hist[arr_sec].record(us.min(600_000_000));
            let _ = all.record(us.min(600_000_000));
        }
        prev = Some((r.index, arr));
    }
    for (row, h) in rows.iter_mut().zip(&row_hist) {
        row.jitter_p99_ms = if h.is_empty() { 0.0 } else { h.value_at_quantile(0.99) as f64 / 1000.0 };
    }
    sum.mean_fps = sum.completed as f64 / (records.len() as f64 / fps as f64);
    if !all.is_empty() {
        sum.jitter_p50_ms = all.value_at_quantile(0.5) as f64 / 1000.0;
        sum.jitter_p99_ms = all.value_at_quantile(0.99) as f64 / 1000.0;
    }
    (rows, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(index: usize, kind: FrameKind, got: u32, t: Option<u64>) -> FrameRecord {
        FrameRecord { index, kind, expected_packets: 2, received_packets: got, last_arrival_ns: t }
    }

    #[test]
    fn steady_stream_has_no_jitter_and_full_rate() {
        let recs: Vec<_> = (0..40).map(|i| rec(i, FrameKind::P, 2, Some(1_000_000_000 + i as u64 * 50_000_000))).collect();
        let (rows, s) = analyse(&recs, 20, 200);
        assert_eq!(s.completed, 40);
        assert_eq!(s.mean_fps, 20.0);
        assert!(s.jitter_p99_ms <= 0.001);
        assert_eq!(rows[0].fps + rows[1].fps, 40);
        assert_eq!(rows[0].on_time_fps + rows[1].on_time_fps, 40);
        assert_eq!(s.late, 0);
    }

    #[test]
    fn losses_are_counted_by_type_and_delay_as_jitter_and_lateness() {
        let mut recs: Vec<_> = (0..20).map(|i| rec(i, FrameKind::B, 2, Some(i as u64 * 50_000_000))).collect();
        recs[3] = rec(3, FrameKind::I, 1, Some(150_000_000));
        recs[5] = rec(5, FrameKind::P, 0, None);
        recs[10].last_arrival_ns = Some(10 * 50_000_000 + 300_000_000);
        let (_, s) = analyse(&recs, 20, 200);
        assert_eq!((s.lost_i, s.lost_p, s.lost_b), (1, 1, 0));
        assert_eq!((s.partial, s.missing), (1, 1));
        assert_eq!(s.completed, 18);
        assert_eq!(s.late, 1);
        assert!(s.jitter_p99_ms >= 290.0, "{}", s.jitter_p99_ms);
        let missed: Vec<usize> = s.missed.iter().enumerate().filter(|(_, m)| **m).map(|(i, _)| i).collect();
        assert_eq!(missed, vec![3, 5, 10]);
    }
}

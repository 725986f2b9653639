//! qsock sensor example (Q.Sockets §4.2.2): a data-acquisition sender emits
//! readings aperiodically, each with its own deadline; a receiver counts, per
//! 5-second interval, readings that arrived on time, late, or not at all.
#![warn(missing_docs)]
pub mod plot;

use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// One reading as sent: JSON, padded with spaces to the message size.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Reading {
    /// Sequence number, from 0.
    pub seq: u32,
    /// When it was sent, ns of `CLOCK_MONOTONIC`.
    pub sent_ns: u64,
    /// Absolute deadline, ns of `CLOCK_MONOTONIC`.
    pub deadline_ns: u64,
    /// The measured value.
    pub value: f64,
}

impl Reading {
    /// Encodes into exactly `size` bytes. Errors if it does not fit.
    pub fn encode(&self, size: usize) -> Result<Vec<u8>> {
        let mut b = serde_json::to_vec(self)?;
        if b.len() > size {
            bail!("reading needs {} bytes, message size is {size}", b.len());
        }
        b.resize(size, b' ');
        Ok(b)
    }

    /// Decodes a received message.
    pub fn decode(b: &[u8]) -> Result<Self> {
        Ok(serde_json::from_slice(b.trim_ascii_end())?)
    }
}

/// When to send each reading: offset from the start and relative deadline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Planned {
    /// Send time after the start, ns.
    pub at_ns: u64,
    /// Deadline after the send time, ns.
    pub deadline_in_ns: u64,
    /// The value.
    pub value: f64,
}

/// Random aperiodic readings, as in the paper: inter-arrival uniform in
/// `gap_ms` and relative deadline uniform in `deadline_ms`, for
/// `duration_s`, reproducible from `seed`.
pub fn random_trace(seed: u64, duration_s: u64, gap_ms: (u64, u64), deadline_ms: (u64, u64)) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut t = 0u64;
    let mut out = Vec::new();
    while t < duration_s * 1_000_000_000 {
        out.push(Planned { at_ns: t, deadline_in_ns: rng.gen_range(deadline_ms.0..=deadline_ms.1) * 1_000_000, value: rng.gen_range(-40.0..85.0) });
        t += rng.gen_range(gap_ms.0..=gap_ms.1) * 1_000_000;
    }
    out
}

/// Readings from a CSV file with columns `offset_ms,value,deadline_ms`
/// (header row required): real input instead of the random trace.
pub fn csv_trace(path: &Path) -> Result<Vec<Planned>> {
    #[derive(Deserialize)]
    struct Row {
        offset_ms: f64,
        value: f64,
        deadline_ms: f64,
    }
    let mut r = csv::Reader::from_path(path).with_context(|| format!("open {}", path.display()))?;
    let mut out = Vec::new();
    for row in r.deserialize::<Row>() {
        let row = row?;
        if row.offset_ms < 0.0 || row.deadline_ms <= 0.0 {
            bail!("{}: offsets must be >= 0 and deadlines > 0 ms", path.display());
        }
        out.push(Planned { at_ns: (row.offset_ms * 1e6) as u64, deadline_in_ns: (row.deadline_ms * 1e6) as u64, value: row.value });
    }
    out.sort_by_key(|p| p.at_ns);
    Ok(out)
}

/// What the receiver saw of one reading.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Arrival {
    /// Sequence number.
    pub seq: u32,
    /// Send time, ns.
    pub sent_ns: u64,
    /// Deadline, ns.
    pub deadline_ns: u64,
    /// Arrival, ns.
    pub arrival_ns: u64,
}

/// Counts of one 5-second interval (by send time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Interval {
    /// Interval index (0 = first 5 s).
    pub index: u32,
    /// Arrived by the deadline.
    pub on_time: u32,
    /// Arrived after the deadline.
    pub late: u32,
    /// Never arrived.
    pub lost: u32,
}

/// Length of a report interval, ns.
pub const INTERVAL_NS: u64 = 5_000_000_000;

/// Per-interval counts for readings sent at `sent_offsets_ns` (from the
/// start, indexed by sequence number), of which `arrivals` arrived.
pub fn intervals(sent_offsets_ns: &[u64], arrivals: &[Arrival]) -> Vec<Interval> {
    let n = sent_offsets_ns.iter().map(|t| (t / INTERVAL_NS) as usize + 1).max().unwrap_or(0);
    let mut out: Vec<Interval> = (0..n).map(|i| Interval { index: i as u32, ..Default::default() }).collect();
    let mut arrived = vec![None; sent_offsets_ns.len()];
    for a in arrivals {
        if let Some(slot) = arrived.get_mut(a.seq as usize) {
            *slot = Some(a.arrival_ns <= a.deadline_ns);
        }
    }
    for (seq, at) in sent_offsets_ns.iter().enumerate() {
        let iv = &mut out[(at / INTERVAL_NS) as usize];
        match arrived[seq] {
            Some(true) => iv.on_time += 1,
            Some(false) => iv.late += 1,
            None => iv.lost += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_round_trip_at_a_fixed_size() {
        let r = Reading { seq: 7, sent_ns: 1, deadline_ns: 2, value: 21.5 };
        let b = r.encode(200).unwrap();
        assert_eq!(b.len(), 200);
        assert_eq!(Reading::decode(&b).unwrap(), r);
        assert!(r.encode(10).is_err());
    }

    #[test]
    fn random_trace_is_reproducible_and_in_bounds() {
        let a = random_trace(1, 2, (5, 15), (20, 60));
        assert_eq!(a, random_trace(1, 2, (5, 15), (20, 60)));
        assert!(a.windows(2).all(|w| (5_000_000..=15_000_000).contains(&(w[1].at_ns - w[0].at_ns))));
        assert!(a.iter().all(|p| (20_000_000..=60_000_000).contains(&p.deadline_in_ns)));
    }

    #[test]
    fn intervals_count_on_time_late_and_lost() {
        let sent = [0, 1_000_000_000, 6_000_000_000];
        let arr = [Arrival { seq: 0, sent_ns: 0, deadline_ns: 10, arrival_ns: 5 }, Arrival { seq: 2, sent_ns: 0, deadline_ns: 10, arrival_ns: 50 }];
        let iv = intervals(&sent, &arr);
        assert_eq!(iv[0], Interval { index: 0, on_time: 1, late: 0, lost: 1 });
        assert_eq!(iv[1], Interval { index: 1, on_time: 0, late: 1, lost: 0 });
    }
}

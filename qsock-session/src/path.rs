//! One path's figures, from the session's own acknowledgements (§III-B,
//! "path evaluation"): RTT (RFC 6298 smoothing), delivery rate, loss,
//! jitter; its congestion window (Reno, or coupled across the session's
//! paths as MPTCP's LIA, RFC 6356, when the session is fair); and its
//! state: active, suspect (silent for a few RTTs: no traffic but probes),
//! re-admitted only after probes have succeeded for a while.
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Bytes a window grows by per RTT in congestion avoidance, and the
/// datagram size the window arithmetic assumes.
pub const MSS: u64 = 1400;
/// Initial window, bytes (RFC 6928's ten segments).
pub const INITIAL_WINDOW: u64 = 10 * MSS;
/// Smallest window, bytes.
pub const MIN_WINDOW: u64 = 2 * MSS;
/// A path is silent (suspect) after this many smoothed RTTs without an
/// ack while data is in flight…
pub const SUSPECT_RTTS: u32 = 3;
/// …and never sooner than this (a busy host delays acks by a few ms).
pub const SUSPECT_FLOOR: Duration = Duration::from_millis(60);
/// A datagram unacknowledged for srtt + 4 rttvar plus the larger of a
/// quarter srtt (RACK's reordering window, RFC 8985 §6.2) and this, while
/// a later one on another path was acknowledged, makes its path suspect…
pub const OVERDUE_SLACK: Duration = Duration::from_millis(10);
/// …and never sooner than this.
pub const OVERDUE_FLOOR: Duration = Duration::from_millis(30);
/// Probes must succeed this long, without a loss, before a suspect path
/// carries traffic again (SRTLA users' complaint: links that flap).
pub const READMIT_AFTER: Duration = Duration::from_millis(1000);

/// Where a path stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathState {
    /// Joining: the peer has not acknowledged its join yet.
    Joining,
    /// Carries traffic.
    Active,
    /// Went silent: only probes until they have succeeded [`READMIT_AFTER`].
    Suspect,
}

/// A path's measured figures, as [`crate::SessionInfo`] reports them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathFigures {
    /// Smoothed RTT, µs.
    pub srtt_us: u64,
    /// RTT variation, µs.
    pub rttvar_us: u64,
    /// Smallest RTT seen, µs.
    pub min_rtt_us: u64,
    /// Delivery rate, bit/s (smoothed samples of acked bytes over time).
    pub delivery_bps: u64,
    /// What the path can carry, bit/s: the delivery rate, except that a
    /// sample taken while the path had room in its window only raises it.
    /// Arrival predictions use it.
    pub capacity_bps: u64,
    /// Fraction of datagrams lost (smoothed, 0..1).
    pub loss: f64,
    /// Mean deviation of successive RTT samples, µs (RFC 3550's estimator).
    pub jitter_us: u64,
    /// Congestion window, bytes.
    pub cwnd_bytes: u64,
    /// Bytes sent and not yet acknowledged or declared lost.
    pub in_flight_bytes: u64,
}

/// The estimator and window of one path.
#[derive(Clone, Debug)]
pub struct PathEstimator {
    /// Figures so far.
    pub figures: PathFigures,
    /// State.
    pub state: PathState,
    /// When the last ack arrived.
    pub last_ack: Option<Instant>,
    /// Since when probes of a suspect path have all succeeded.
    pub probes_ok_since: Option<Instant>,
    have_rtt: bool,
    ssthresh: u64,
    /// Losses after this path sequence number start a new reduction.
    recovery_until: Option<u32>,
    last_rtt_us: u64,
    /// Window and threshold before the path became suspect (for an undo).
    before_suspect: Option<(u64, u64)>,
}

impl PathEstimator {
    /// A path whose first figures are `rtt_us` and `rate_bps` (from qsockd
    /// or the scoreboard; 0 when unknown).
    pub fn new(rtt_us: u64, rate_bps: u64) -> Self {
        Self {
            figures: PathFigures {
                srtt_us: if rtt_us > 0 { rtt_us } else { 100_000 },
                rttvar_us: if rtt_us > 0 { rtt_us / 2 } else { 50_000 },
                min_rtt_us: rtt_us,
                delivery_bps: rate_bps,
                capacity_bps: rate_bps,
                loss: 0.0,
                jitter_us: 0,
                cwnd_bytes: INITIAL_WINDOW,
                in_flight_bytes: 0,
            },
            state: PathState::Joining,
            last_ack: None,
            probes_ok_since: None,
            have_rtt: rtt_us > 0,
            ssthresh: u64::MAX,
            recovery_until: None,
            last_rtt_us: 0,
            before_suspect: None,
        }
    }

    /// An RTT sample, µs (RFC 6298: α = 1/8, β = 1/4).
    pub fn on_rtt(&mut self, rtt_us: u64) {
        let f = &mut self.figures;
        if !self.have_rtt || f.min_rtt_us == 0 {
            f.srtt_us = rtt_us;
            f.rttvar_us = rtt_us / 2;
            f.min_rtt_us = rtt_us;
            self.have_rtt = true;
        } else {
            f.rttvar_us = (3 * f.rttvar_us + f.srtt_us.abs_diff(rtt_us)) / 4;
            f.srtt_us = (7 * f.srtt_us + rtt_us) / 8;
            f.min_rtt_us = f.min_rtt_us.min(rtt_us);
        }
        if self.last_rtt_us > 0 {
            // RFC 3550 §6.4.1: J += (|D| - J) / 16.
            let d = self.last_rtt_us.abs_diff(rtt_us) as i64;
            f.jitter_us = (f.jitter_us as i64 + (d - f.jitter_us as i64) / 16).max(0) as u64;
        }
        self.last_rtt_us = rtt_us;
    }

    /// A delivery-rate sample: `bytes` acknowledged over `interval`.
    /// `app_limited`: the datagram left with room in the path's window (it
    /// got less than it could take), so the sample shows the offered load,
    /// not the path: it may raise the capacity estimate, never lower it (the
    /// rule of BBR's delivery-rate estimation,
    /// draft-cheng-iccrg-delivery-rate-estimation §3.3). Without it a path
    /// that carried little looks slow, and a deadline-aware scheduler would
    /// drop what that path could deliver in time. The delivery rate (the
    /// window cap's and WDRR's) takes every sample.
    pub fn on_rate_sample(&mut self, bytes: u64, interval: Duration, app_limited: bool) {
        if interval.is_zero() || bytes == 0 {
            return;
        }
        let sample = (bytes as u128 * 8 * 1_000_000 / interval.as_micros().max(1)) as u64;
        let f = &mut self.figures;
        if !app_limited || sample > f.capacity_bps {
            f.capacity_bps = if f.capacity_bps == 0 { sample } else { (7 * f.capacity_bps + sample) / 8 };
        }
        f.delivery_bps = if f.delivery_bps == 0 { sample } else { (7 * f.delivery_bps + sample) / 8 };
    }

    /// `bytes` acknowledged: the window grows (slow start, then Reno's
    /// `MSS²/cwnd` per acked MSS, or the coupled increase `lia`).
    pub fn on_acked(&mut self, bytes: u64, lia: Option<Coupling>) {
        let f = &mut self.figures;
        f.in_flight_bytes = f.in_flight_bytes.saturating_sub(bytes);
        f.loss *= 0.999f64.powf(bytes as f64 / MSS as f64);
        if f.cwnd_bytes < self.ssthresh {
            f.cwnd_bytes += bytes;
        } else {
            f.cwnd_bytes += match lia {
                Some(c) => lia_increase(bytes, f.cwnd_bytes, c),
                None => (bytes * MSS / f.cwnd_bytes).max(1),
            };
        }
        let cap = self.window_cap();
        self.figures.cwnd_bytes = self.figures.cwnd_bytes.min(cap);
    }

    /// A datagram of `bytes` with path sequence number `path_seq` was lost,
    /// found when the path had sent up to `highest_sent`: the window halves
    /// once per round trip of losses (Reno's fast recovery).
    pub fn on_lost(&mut self, bytes: u64, path_seq: u32, highest_sent: u32) {
        let f = &mut self.figures;
        f.in_flight_bytes = f.in_flight_bytes.saturating_sub(bytes);
        f.loss = f.loss * 0.99 + 0.01;
        if self.recovery_until.is_some_and(|r| path_seq <= r) {
            return;
        }
        self.recovery_until = Some(highest_sent);
        f.cwnd_bytes = (f.cwnd_bytes / 2).max(MIN_WINDOW);
        self.ssthresh = f.cwnd_bytes;
    }

    /// The largest useful window: twice the measured bandwidth-delay
    /// product (BBR's cwnd gain), at least the initial window. Above it
    /// the window only builds a standing queue (in the host's own qdisc
    /// first, where no loss tells), which inflates every path's RTT and
    /// the predictions the schedulers make from it.
    pub fn window_cap(&self) -> u64 {
        let f = &self.figures;
        if f.delivery_bps == 0 || f.min_rtt_us == 0 {
            return u64::MAX;
        }
        ((2 * f.delivery_bps as u128 * f.min_rtt_us as u128 / 8_000_000) as u64).max(INITIAL_WINDOW)
    }

    /// Whether `bytes` more fit in the window.
    pub fn has_room(&self, bytes: u64) -> bool {
        self.figures.in_flight_bytes + bytes <= self.figures.cwnd_bytes.max(MSS)
    }

    /// How long silence makes the path suspect: [`SUSPECT_RTTS`] smoothed
    /// RTTs plus four variations, at least [`SUSPECT_FLOOR`].
    pub fn suspect_after(&self) -> Duration {
        let f = &self.figures;
        Duration::from_micros(SUSPECT_RTTS as u64 * f.srtt_us + 4 * f.rttvar_us).max(SUSPECT_FLOOR)
    }

    /// How long a datagram may stay unacknowledged, while another path
    /// acknowledged a later one, before its path is suspect: the sum of
    /// srtt, 4 rttvar and max(srtt / 4, [`OVERDUE_SLACK`]), at least
    /// [`OVERDUE_FLOOR`]. Other paths' acks show the peer is alive, so this
    /// is an RTO's estimate, not [`PathEstimator::suspect_after`]'s several RTTs.
    pub fn overdue_after(&self) -> Duration {
        let f = &self.figures;
        let reorder = Duration::from_micros(f.srtt_us / 4).max(OVERDUE_SLACK);
        (Duration::from_micros(f.srtt_us + 4 * f.rttvar_us) + reorder).max(OVERDUE_FLOOR)
    }

    /// The path went silent: suspect, nothing in flight counts any more,
    /// the window starts again.
    pub fn make_suspect(&mut self) {
        self.before_suspect = Some((self.figures.cwnd_bytes, self.ssthresh));
        self.state = PathState::Suspect;
        self.probes_ok_since = None;
        self.figures.in_flight_bytes = 0;
        self.figures.cwnd_bytes = INITIAL_WINDOW;
        self.ssthresh = u64::MAX;
        self.recovery_until = None;
    }

    /// A probe of a suspect path was answered at `now`; true once probes
    /// have succeeded [`READMIT_AFTER`] and the path is active again.
    pub fn on_probe_ok(&mut self, now: Instant) -> bool {
        if self.state != PathState::Suspect {
            return false;
        }
        let since = *self.probes_ok_since.get_or_insert(now);
        if now.duration_since(since) >= READMIT_AFTER {
            self.state = PathState::Active;
            return true;
        }
        false
    }

    /// The suspicion was spurious (a datagram in flight when it began was
    /// acknowledged after all): active again with the window it had, as
    /// TCP undoes a spurious timeout (Eifel, RFC 3522). True if it was suspect.
    pub fn undo_suspect(&mut self) -> bool {
        if self.state != PathState::Suspect {
            return false;
        }
        self.state = PathState::Active;
        self.probes_ok_since = None;
        if let Some((cwnd, ssthresh)) = self.before_suspect.take() {
            self.figures.cwnd_bytes = cwnd;
            self.ssthresh = ssthresh;
        }
        true
    }

    /// A probe of a suspect path was lost: the count starts again.
    pub fn on_probe_lost(&mut self) {
        self.probes_ok_since = None;
    }

    /// Predicted time until a message of `bytes` sent now arrives, µs: half
    /// the smallest RTT (one-way delay) plus what is in flight ahead of it
    /// and itself at the delivery rate.
    pub fn predicted_arrival_us(&self, bytes: u64) -> u64 {
        let f = &self.figures;
        let owd = if f.min_rtt_us > 0 { f.min_rtt_us } else { f.srtt_us } / 2;
        let queued = ((f.in_flight_bytes + bytes) * 8 * 1_000_000).checked_div(f.capacity_bps.max(f.delivery_bps)).unwrap_or(0);
        // In flight includes a window's worth that is in the pipe, not queued: count the part above one BDP.
        let bdp_us = f.min_rtt_us.max(1);
        owd + queued.saturating_sub(bdp_us)
    }
}

/// The session-wide figures LIA's increase needs (RFC 6356 §3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coupling {
    /// α.
    pub alpha: f64,
    /// Sum of the windows of the session's paths, bytes.
    pub total_cwnd: u64,
}

/// α of RFC 6356 over paths given as (cwnd bytes, srtt µs):
/// `cwnd_total · max(cwnd_i / rtt_i²) / (Σ cwnd_i / rtt_i)²`.
pub fn lia_coupling(paths: &[(u64, u64)]) -> Coupling {
    let total: u64 = paths.iter().map(|p| p.0).sum();
    let best = paths.iter().map(|&(c, r)| c as f64 / (r.max(1) as f64).powi(2)).fold(0.0, f64::max);
    let sum: f64 = paths.iter().map(|&(c, r)| c as f64 / r.max(1) as f64).sum();
    let alpha = if sum > 0.0 { total as f64 * best / (sum * sum) } else { 1.0 };
    Coupling { alpha, total_cwnd: total }
}

/// Bytes path `i`'s window grows by when `acked` bytes are acknowledged
/// under LIA: `min(α · acked · MSS / cwnd_total, acked · MSS / cwnd_i)`.
pub fn lia_increase(acked: u64, cwnd: u64, c: Coupling) -> u64 {
    let coupled = c.alpha * acked as f64 * MSS as f64 / c.total_cwnd.max(1) as f64;
    let uncoupled = (acked * MSS / cwnd.max(1)) as f64;
    coupled.min(uncoupled).max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn two_equal_paths_each_grow_a_quarter_of_reno() {
        // A window in equilibrium grows as √(increase per RTT): a quarter of
        // Reno's increase gives each path half a Reno window, one flow's worth together.
        let c = lia_coupling(&[(20 * MSS, 10_000), (20 * MSS, 10_000)]);
        let grown = lia_increase(20 * MSS, 20 * MSS, c);
        assert!((MSS / 4 - 2..=MSS / 4 + 2).contains(&grown), "{grown}");
    }

    proptest! {
        /// Never more aggressive than Reno on the path alone (RFC 6356's goal 2 bound).
        #[test]
        fn lia_never_exceeds_reno(paths in prop::collection::vec((MSS..100 * MSS, 1_000u64..500_000), 1..4), acked in 1u64..10 * MSS) {
            let c = lia_coupling(&paths);
            for &(cwnd, _) in &paths {
                prop_assert!(lia_increase(acked, cwnd, c) <= (acked * MSS / cwnd).max(1));
            }
        }

        /// Losses never shrink a window below two segments, and one round trip of losses halves it once.
        #[test]
        fn losses_halve_once_per_round_trip(n in 1u32..50) {
            let mut p = PathEstimator::new(10_000, 0);
            p.figures.cwnd_bytes = 100 * MSS;
            p.figures.in_flight_bytes = 100 * MSS;
            for s in 0..n {
                p.on_lost(MSS, s, 100);
            }
            prop_assert_eq!(p.figures.cwnd_bytes, 50 * MSS);
            for s in 0..n {
                p.on_lost(MSS, 101 + s * 200, 101 + s * 200);
            }
            prop_assert!(p.figures.cwnd_bytes >= MIN_WINDOW);
        }
    }

    #[test]
    fn a_suspect_path_returns_only_after_probes_succeeded_for_a_while() {
        let t0 = Instant::now();
        let mut p = PathEstimator::new(10_000, 0);
        p.state = PathState::Active;
        p.make_suspect();
        assert!(!p.on_probe_ok(t0));
        p.on_probe_lost();
        assert!(!p.on_probe_ok(t0 + READMIT_AFTER));
        assert!(p.on_probe_ok(t0 + 2 * READMIT_AFTER));
        assert_eq!(p.state, PathState::Active);
    }
}

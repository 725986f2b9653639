//! When a subflow's path is dead without a link event (a blackhole): the
//! rule qsockd applies to what sock_diag reports of a connection and its
//! subflows (issue 16, item 5). Pure, so it is property-tested here.
//!
//! A quiet subflow alone proves nothing (the peer's scheduler may simply
//! not use it, or the application sends nothing). The rule asks for three
//! things together, for one direction:
//! 1. the connection is held up: its in-order progress (`rcv_nxt` for data
//!    from the peer, `snd_una` for data to it, with data outstanding) has
//!    not moved for the subflow's silence threshold;
//! 2. the subflow heard nothing from the peer that long: neither data nor
//!    an ACK (for the send direction, with segments of its own unacknowledged);
//! 3. a sibling subflow, itself not silent, carried the same direction
//!    during the second half of the hold-up: the peer is sending (resp.
//!    acknowledging), so the window is open and what holds the connection
//!    up is on the silent path.
//!
//! A reader that stops reading closes the window: the sibling's evidence
//! counts only while the window it advertises is open (with MPTCP the
//! peer may still push segments at a closed connection-level window, which
//! arrive on a subflow and are not taken in order); a path that is only
//! slow keeps receiving, so 2 fails.

/// Shortest silence that can condemn a subflow, ms: longer than a
/// delayed ACK (40 ms) and a few queued frames on a slow link.
pub const MIN_SILENCE_MS: u32 = 150;
/// Silence that condemns a subflow, in its own RTTs (its estimate, with
/// queueing: data in flight on a slow path arrives within about one RTT).
pub const SILENCE_RTTS: u32 = 2;
/// Longest silence threshold, ms (an RTT estimate inflated by a long queue
/// must not disable the rule).
pub const MAX_SILENCE_MS: u32 = 1_000;
/// Smallest receive window a sibling must advertise for its data to show
/// a hole rather than a reader that stopped, bytes.
pub const OPEN_WINDOW_BYTES: u32 = 32 * 1024;

/// One subflow as the rule sees it (from its `tcp_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubflowView {
    /// Time since it last received data, ms (`tcpi_last_data_recv`).
    pub since_data_ms: u32,
    /// Time since it last received an ACK, ms (`tcpi_last_ack_recv`).
    pub since_ack_ms: u32,
    /// Its segments sent and not yet acknowledged (`tcpi_unacked`).
    pub unacked: u32,
    /// Its RTT estimate, µs: the larger of `tcpi_rtt` (from what it sent)
    /// and `tcpi_rcv_rtt` (from what it received).
    pub rtt_us: u32,
    /// The receive window it last advertised, bytes (`tcpi_rcv_wnd`).
    pub rcv_wnd: u32,
}

/// The connection's hold-up, per direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holdup {
    /// Time since `rcv_nxt` last advanced, ms.
    pub receive_ms: u32,
    /// Time since `snd_una` last advanced while data was outstanding, ms;
    /// 0 when nothing is outstanding.
    pub send_ms: u32,
}

/// Silence threshold of subflow `s`, ms: [`SILENCE_RTTS`] of its RTT,
/// clamped to [`MIN_SILENCE_MS`]..=[`MAX_SILENCE_MS`].
pub fn threshold_ms(s: &SubflowView) -> u32 {
    (s.rtt_us / 1000).saturating_mul(SILENCE_RTTS).clamp(MIN_SILENCE_MS, MAX_SILENCE_MS)
}

/// Indexes into `subflows` of the subflows whose path the rule finds dead
/// (see the module docs). Never all of them: at least one sibling is alive
/// by condition 3.
pub fn silent_paths(holdup: Holdup, subflows: &[SubflowView]) -> Vec<usize> {
    let mut dead = Vec::new();
    for (i, s) in subflows.iter().enumerate() {
        let t = threshold_ms(s);
        // Heard nothing from the peer at all: a path that still carries ACKs
        // (or data) the other way is not dead.
        if s.since_data_ms < t || s.since_ack_ms < t {
            continue;
        }
        let others = || subflows.iter().enumerate().filter(move |(j, _)| *j != i).map(|(_, o)| o);
        let receive =
            holdup.receive_ms >= t && others().any(|o| o.rcv_wnd >= OPEN_WINDOW_BYTES && o.since_data_ms < (holdup.receive_ms / 2).min(threshold_ms(o)));
        let send = holdup.send_ms >= t && s.unacked > 0 && others().any(|o| o.since_ack_ms < (holdup.send_ms / 2).min(threshold_ms(o)));
        if receive || send {
            dead.push(i);
        }
    }
    dead
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn quiet(ms: u32) -> SubflowView {
        SubflowView { since_data_ms: ms, since_ack_ms: ms, unacked: 0, rtt_us: 10_000, rcv_wnd: 1 << 20 }
    }

    #[test]
    fn a_blackholed_path_of_a_download_is_found() {
        // dsl silent 300 ms, lte delivering, in-order progress stopped 290 ms ago.
        let dsl = quiet(300);
        let lte = SubflowView { since_data_ms: 2, since_ack_ms: 5_000, unacked: 0, rtt_us: 70_000, rcv_wnd: 1 << 20 };
        assert_eq!(silent_paths(Holdup { receive_ms: 290, send_ms: 0 }, &[dsl, lte]), vec![0]);
    }

    #[test]
    fn a_blackholed_path_of_an_upload_is_found() {
        let dsl = SubflowView { since_data_ms: 9_000, since_ack_ms: 400, unacked: 20, rtt_us: 10_000, rcv_wnd: 1 << 20 };
        let lte = SubflowView { since_data_ms: 9_000, since_ack_ms: 10, unacked: 30, rtt_us: 70_000, rcv_wnd: 1 << 20 };
        assert_eq!(silent_paths(Holdup { receive_ms: 9_000, send_ms: 390 }, &[dsl, lte]), vec![0]);
    }

    #[test]
    fn a_reader_that_stopped_condemns_nobody() {
        // Nothing arrives on any subflow...
        assert!(silent_paths(Holdup { receive_ms: 5_000, send_ms: 0 }, &[quiet(5_000), quiet(4_990)]).is_empty());
        // ...or the peer pushes at the closed window over one (seen here: 2.5 s held up).
        let pushed = SubflowView { since_data_ms: 20, since_ack_ms: 9_000, unacked: 0, rtt_us: 10_000, rcv_wnd: 1_000 };
        assert!(silent_paths(Holdup { receive_ms: 2_500, send_ms: 0 }, &[pushed, quiet(2_456)]).is_empty());
    }

    #[test]
    fn an_unused_path_of_a_flowing_connection_is_left_alone() {
        // The peer's scheduler uses only lte; the connection progresses.
        let lte = SubflowView { since_data_ms: 1, since_ack_ms: 9_000, unacked: 0, rtt_us: 70_000, rcv_wnd: 1 << 20 };
        assert!(silent_paths(Holdup { receive_ms: 1, send_ms: 0 }, &[quiet(9_000), lte]).is_empty());
    }

    proptest! {
        /// Whatever the figures, at least one subflow is left (condition 3).
        #[test]
        fn never_every_subflow(views in prop::collection::vec((0u32..5_000, 0u32..5_000, 0u32..50, 0u32..2_000_000, 0u32..1 << 20), 1..6),
                               receive_ms in 0u32..5_000, send_ms in 0u32..5_000) {
            let v: Vec<_> = views.iter().map(|&(d, a, u, r, w)| SubflowView { since_data_ms: d, since_ack_ms: a, unacked: u, rtt_us: r, rcv_wnd: w }).collect();
            let dead = silent_paths(Holdup { receive_ms, send_ms }, &v);
            prop_assert!(dead.len() < v.len());
        }

        /// A connection held up for less than the shortest threshold, or a
        /// subflow that heard from its peer within it, is never condemned.
        #[test]
        fn recent_life_or_progress_protects(views in prop::collection::vec((0u32..5_000, 0u32..5_000, 0u32..50, 0u32..2_000_000, 0u32..1 << 20), 2..6),
                                            holdup in 0u32..MIN_SILENCE_MS, later in 0u32..5_000) {
            let v: Vec<_> = views.iter().map(|&(d, a, u, r, w)| SubflowView { since_data_ms: d, since_ack_ms: a, unacked: u, rtt_us: r, rcv_wnd: w }).collect();
            let early = silent_paths(Holdup { receive_ms: holdup, send_ms: holdup }, &v);
            prop_assert!(early.is_empty());
            let dead = silent_paths(Holdup { receive_ms: later, send_ms: later }, &v);
            for i in dead {
                let t = threshold_ms(&v[i]);
                prop_assert!(v[i].since_data_ms >= t || v[i].since_ack_ms >= t);
            }
        }
    }
}

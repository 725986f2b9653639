//! When a subflow's path is dead without a link event (a blackhole): the
//! rule qsockd applies to what sock_diag reports of a connection and its
//! subflows (issue 16, item 5). Pure, so it is property-tested here.
//!
//! A quiet subflow alone proves nothing (the peer's scheduler may simply
//! not use it, or the application sends nothing). A subflow is
//! *implicated* when three things hold together, for one direction, for at
//! least [`MIN_SILENCE_MS`]; it is dead once it was implicated during its
//! current silence and that silence reached its threshold:
//! 1. the connection is held up: its in-order progress (`rcv_nxt` for data
//!    from the peer, `snd_una` for data to it, with data outstanding) has
//!    not moved;
//! 2. the subflow heard nothing from the peer that long: neither data nor
//!    an ACK (for the send direction, with segments of its own unacknowledged);
//! 3. a sibling subflow, itself not silent, carried the same direction
//!    during the second half of the hold-up: the peer is sending (resp.
//!    acknowledging), so the window is open and what holds the connection
//!    up is on the silent path.
//!
//! A reader that stops reading fills the connection's receive queue: the
//! sibling's evidence counts only while the application keeps that queue
//! under half its buffer (with MPTCP the peer keeps pushing segments at a
//! full connection, which arrive on a subflow and are dropped, so data on
//! the sibling alone proves nothing, nor does its advertised window, nor
//! the queue's growth: behind a hole the out-of-order data fills the
//! window too); a path that is only slow keeps receiving, so 2 fails.
//!
//! A connection protected by a backup subflow gives other evidence: the
//! peer sends on a subflow this host asked to be a backup only when no
//! active one is usable to it (RFC 8684 §3.3.8; Linux's scheduler: when
//! every active subflow is stale). An active subflow silent for its
//! threshold while a backup delivers data is *deserted*: the peer has given
//! up on its path (seen on a blackhole: the peer's retransmission timer
//! moves to the backup and then backs off on the dead path for seconds,
//! so without this the connection would come back to the healed path only
//! at the peer's next retry).

/// Shortest silence that can condemn a subflow, ms: longer than a
/// delayed ACK (40 ms) and a few queued frames on a slow link.
pub const MIN_SILENCE_MS: u32 = 150;
/// Silence that condemns a subflow, in its own RTTs (its estimate, with
/// queueing: data in flight on a slow path arrives within about one RTT).
pub const SILENCE_RTTS: u32 = 2;
/// Longest silence threshold, ms (an RTT estimate inflated by a long queue
/// must not disable the rule).
pub const MAX_SILENCE_MS: u32 = 1_000;

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
    /// This host asked the peer to treat it as a backup (`MP_JOIN` or
    /// `MP_PRIO` with the B bit sent: `MPTCP_SUBFLOW_FLAG_BKUP_LOC`).
    pub backup: bool,
}

/// A backup subflow that received data within this long, ms, is carrying
/// the peer's data now (a bulk flow delivers a segment every few ms; the
/// watch looks every 50 ms).
pub const DELIVERING_MS: u32 = 50;

/// The connection's hold-up, per direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holdup {
    /// Time since `rcv_nxt` last advanced, ms.
    pub receive_ms: u32,
    /// Time since `snd_una` last advanced while data was outstanding, ms;
    /// 0 when nothing is outstanding.
    pub send_ms: u32,
    /// The application keeps the connection's receive queue drained (less
    /// than half the receive buffer holds data it has not read): a hold-up
    /// is then a hole, not a reader that stopped.
    pub reader_keeps_up: bool,
}

/// Silence threshold of subflow `s`, ms: [`SILENCE_RTTS`] of its RTT,
/// clamped to [`MIN_SILENCE_MS`]..=[`MAX_SILENCE_MS`].
pub fn threshold_ms(s: &SubflowView) -> u32 {
    (s.rtt_us / 1000).saturating_mul(SILENCE_RTTS).clamp(MIN_SILENCE_MS, MAX_SILENCE_MS)
}

/// Whether this snapshot implicates each subflow of `subflows` (same
/// order): the connection is held up at least [`MIN_SILENCE_MS`] in a
/// direction, the subflow heard nothing (data or ACK) that long (for the
/// send direction with segments of its own unacknowledged), and a sibling
/// that is not silent carried that direction in the second half of the
/// hold-up (for the receive direction, while the reader keeps up).
pub fn implicated(holdup: Holdup, subflows: &[SubflowView]) -> Vec<bool> {
    let m = MIN_SILENCE_MS;
    subflows
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if s.since_data_ms < m || s.since_ack_ms < m {
                return false;
            }
            let others = || subflows.iter().enumerate().filter(move |(j, _)| *j != i).map(|(_, o)| o);
            let receive = holdup.receive_ms >= m && holdup.reader_keeps_up && others().any(|o| o.since_data_ms < (holdup.receive_ms / 2).min(threshold_ms(o)));
            let send = holdup.send_ms >= m && s.unacked > 0 && others().any(|o| o.since_ack_ms < (holdup.send_ms / 2).min(threshold_ms(o)));
            receive || send
        })
        .collect()
}

/// Whether each subflow of `subflows` (same order) is deserted: active
/// (not a backup), silent, data and ACK, for its threshold
/// ([`threshold_ms`]), while a backup sibling received data within
/// [`DELIVERING_MS`] and the reader keeps up (`reader_keeps_up`: a reader
/// that stopped leaves the peer pushing at a closed window over any subflow).
pub fn deserted(reader_keeps_up: bool, subflows: &[SubflowView]) -> Vec<bool> {
    let backup_delivers = |i: usize| subflows.iter().enumerate().any(|(j, o)| j != i && o.backup && o.since_data_ms < DELIVERING_MS);
    subflows
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let t = threshold_ms(s);
            reader_keeps_up && !s.backup && s.since_data_ms >= t && s.since_ack_ms >= t && backup_delivers(i)
        })
        .collect()
}

/// Whether subflow `s` is dead: implicated ([`implicated`]) at some
/// snapshot of its current silence (`implicated_in_silence`, which the
/// caller remembers and clears when the subflow hears from its peer), and
/// silent, data and ACK, for its threshold ([`threshold_ms`]). The memory
/// matters: the peer's own retransmission timeout may end the hold-up
/// (reinjecting on the other path) before the silence reaches the
/// threshold, and then the dead path holds nothing up any more.
pub fn is_dead(s: &SubflowView, implicated_in_silence: bool) -> bool {
    let t = threshold_ms(s);
    implicated_in_silence && s.since_data_ms >= t && s.since_ack_ms >= t
}

/// Indexes into `subflows` of the subflows one snapshot alone finds dead
/// (implicated now and silent for their threshold). Never all of them: an
/// implicated subflow needs a sibling that is not silent.
pub fn silent_paths(holdup: Holdup, subflows: &[SubflowView]) -> Vec<usize> {
    let now = implicated(holdup, subflows);
    (0..subflows.len()).filter(|&i| is_dead(&subflows[i], now[i])).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn quiet(ms: u32) -> SubflowView {
        SubflowView { since_data_ms: ms, since_ack_ms: ms, unacked: 0, rtt_us: 10_000, backup: false }
    }

    #[test]
    fn a_blackholed_path_of_a_download_is_found() {
        // dsl silent 300 ms, lte delivering, in-order progress stopped 290 ms ago.
        let dsl = quiet(300);
        let lte = SubflowView { since_data_ms: 2, since_ack_ms: 5_000, unacked: 0, rtt_us: 70_000, backup: false };
        assert_eq!(silent_paths(Holdup { receive_ms: 290, send_ms: 0, reader_keeps_up: true }, &[dsl, lte]), vec![0]);
    }

    #[test]
    fn a_blackholed_path_of_an_upload_is_found() {
        let dsl = SubflowView { since_data_ms: 9_000, since_ack_ms: 400, unacked: 20, rtt_us: 10_000, backup: false };
        let lte = SubflowView { since_data_ms: 9_000, since_ack_ms: 10, unacked: 30, rtt_us: 70_000, backup: false };
        assert_eq!(silent_paths(Holdup { receive_ms: 9_000, send_ms: 390, reader_keeps_up: false }, &[dsl, lte]), vec![0]);
    }

    #[test]
    fn a_reader_that_stopped_condemns_nobody() {
        // Nothing arrives on any subflow...
        assert!(silent_paths(Holdup { receive_ms: 5_000, send_ms: 0, reader_keeps_up: false }, &[quiet(5_000), quiet(4_990)]).is_empty());
        // ...or the peer pushes at the closed window over one (seen here: 2.5 s held up).
        let pushed = SubflowView { since_data_ms: 20, since_ack_ms: 9_000, unacked: 0, rtt_us: 10_000, backup: false };
        assert!(silent_paths(Holdup { receive_ms: 2_500, send_ms: 0, reader_keeps_up: false }, &[pushed, quiet(2_456)]).is_empty());
    }

    #[test]
    fn a_path_whose_holdup_the_peer_ended_is_still_found() {
        // Seen beside a busy CPU: dsl's RTT estimate is 200 ms (threshold
        // 400 ms); the peer's RTO reinjects on lte 250 ms in, which ends the hold-up.
        let lte = SubflowView { since_data_ms: 2, since_ack_ms: 5_000, unacked: 0, rtt_us: 70_000, backup: false };
        let dsl = |ms| SubflowView { rtt_us: 200_000, ..quiet(ms) };
        let first = implicated(Holdup { receive_ms: 200, send_ms: 0, reader_keeps_up: true }, &[dsl(210), lte]);
        assert_eq!(first, [true, false]);
        assert!(!is_dead(&dsl(210), first[0]), "not silent for its threshold yet");
        // Later: the connection flows (over lte), dsl still silent.
        let later = implicated(Holdup { receive_ms: 5, send_ms: 0, reader_keeps_up: true }, &[dsl(450), lte]);
        assert_eq!(later, [false, false]);
        assert!(is_dead(&dsl(450), first[0] || later[0]), "implicated during this silence, now silent past 400 ms");
        assert!(silent_paths(Holdup { receive_ms: 5, send_ms: 0, reader_keeps_up: true }, &[dsl(450), lte]).is_empty(), "one snapshot alone would miss it");
    }

    #[test]
    fn an_unused_path_of_a_flowing_connection_is_left_alone() {
        // The peer's scheduler uses only lte; the connection progresses.
        let lte = SubflowView { since_data_ms: 1, since_ack_ms: 9_000, unacked: 0, rtt_us: 70_000, backup: false };
        assert!(silent_paths(Holdup { receive_ms: 1, send_ms: 0, reader_keeps_up: true }, &[quiet(9_000), lte]).is_empty());
    }

    #[test]
    fn an_active_path_the_peer_deserted_for_the_backup_is_found() {
        // dsl active, silent 300 ms; lte backup, delivering: the peer gave up on dsl.
        let lte = SubflowView { since_data_ms: 3, since_ack_ms: 5_000, unacked: 0, rtt_us: 70_000, backup: true };
        assert_eq!(deserted(true, &[quiet(300), lte]), [true, false]);
        // Not before dsl's threshold, not while the backup is idle, not when the reader stopped.
        assert_eq!(deserted(true, &[quiet(100), lte]), [false, false]);
        assert_eq!(deserted(true, &[quiet(300), SubflowView { since_data_ms: 900, ..lte }]), [false, false]);
        assert_eq!(deserted(false, &[quiet(300), lte]), [false, false]);
        // A backup that is itself silent is never deserted, and two active subflows are the other rule's.
        assert_eq!(deserted(true, &[SubflowView { backup: true, ..quiet(300) }, lte]), [false, false]);
        assert_eq!(deserted(true, &[quiet(300), SubflowView { backup: false, ..lte }]), [false, false]);
    }

    proptest! {
        /// A deserted subflow leaves a delivering backup: never every subflow.
        #[test]
        fn deserting_leaves_a_delivering_backup(views in prop::collection::vec((0u32..5_000, 0u32..5_000, 0u32..2_000_000, any::<bool>()), 1..6), keeps_up: bool) {
            let v: Vec<_> = views.iter().map(|&(d, a, r, b)| SubflowView { since_data_ms: d, since_ack_ms: a, unacked: 0, rtt_us: r, backup: b }).collect();
            let left = deserted(keeps_up, &v);
            prop_assert!(left.iter().filter(|x| **x).count() < v.len());
            if left.iter().any(|x| *x) {
                prop_assert!(v.iter().zip(&left).any(|(s, l)| !l && s.backup && s.since_data_ms < DELIVERING_MS));
            }
        }

        /// Whatever the figures, at least one subflow is left (condition 3).
        #[test]
        fn never_every_subflow(views in prop::collection::vec((0u32..5_000, 0u32..5_000, 0u32..50, 0u32..2_000_000), 1..6),
                               receive_ms in 0u32..5_000, send_ms in 0u32..5_000, reader_keeps_up: bool) {
            let v: Vec<_> = views.iter().map(|&(d, a, u, r)| SubflowView { since_data_ms: d, since_ack_ms: a, unacked: u, rtt_us: r, backup: false }).collect();
            let dead = silent_paths(Holdup { receive_ms, send_ms, reader_keeps_up }, &v);
            prop_assert!(dead.len() < v.len());
        }

        /// A connection held up for less than the shortest threshold, or a
        /// subflow that heard from its peer within it, is never condemned.
        #[test]
        fn recent_life_or_progress_protects(views in prop::collection::vec((0u32..5_000, 0u32..5_000, 0u32..50, 0u32..2_000_000), 2..6),
                                            holdup in 0u32..MIN_SILENCE_MS, later in 0u32..5_000) {
            let v: Vec<_> = views.iter().map(|&(d, a, u, r)| SubflowView { since_data_ms: d, since_ack_ms: a, unacked: u, rtt_us: r, backup: false }).collect();
            let early = silent_paths(Holdup { receive_ms: holdup, send_ms: holdup, reader_keeps_up: true }, &v);
            prop_assert!(early.is_empty());
            let dead = silent_paths(Holdup { receive_ms: later, send_ms: later, reader_keeps_up: true }, &v);
            for i in dead {
                let t = threshold_ms(&v[i]);
                prop_assert!(v[i].since_data_ms >= t || v[i].since_ack_ms >= t);
            }
        }
    }
}

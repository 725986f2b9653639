//! Handover when a path dies without a link event (issue 16, item 5): every
//! `blackhole_check_ms` the subflows of the connections this host opened
//! are read with sock_diag (`tcp_info` of each, the connection's
//! `mptcp_info`) and judged by [`silence::implicated`] and
//! [`silence::is_dead`], remembering per subflow whether it was implicated
//! during its current silence, or by [`silence::deserted`] (the peer sends
//! on a backup instead of it); a subflow found
//! dead has its address withdrawn (`REMOVE`: `RM_ADDR` to the peer over a
//! living subflow, so it reinjects what it had in flight on the dead path
//! instead of waiting for its retransmission timer) and is destroyed. Then the
//! path is probed: after [`HOLD_DOWN`], a join on the same interface every
//! second (`PROBE_EVERY`); a join that completes is the proof that the path
//! carries packets again, and the connection keeps that subflow.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::time::Instant;

use super::{
    handover::HOLD_DOWN,
    silence::{self, Holdup, SubflowView},
    Multipath,
};
use crate::kernel::diag::{self, MptcpProgress};

/// How long one probing join may take before it is given up and the next
/// is started (a path that works completes a join within about one RTT).
const PROBE_WAIT: Duration = Duration::from_millis(800);
/// Time between the starts of two probing joins.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// When each direction of a connection last made in-order progress.
struct Progress {
    seen: MptcpProgress,
    received_at: Instant,
    acked_at: Instant,
}

/// What the watch remembers of a subflow between checks: its last
/// silences (to see it hear from its peer) and whether it was implicated
/// during the current silence.
struct Memory {
    since_data_ms: u32,
    since_ack_ms: u32,
    implicated: bool,
}

/// One subflow the watch judges: connection token, local and remote end,
/// local address id.
type Watched = (u32, SocketAddr, SocketAddr, u8);

impl Multipath {
    /// Follows the connections' subflows for silent paths until the
    /// service is dropped (see the module docs); `every` is the check interval.
    pub(super) async fn watch_silence(me: Weak<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut progress: HashMap<u32, Progress> = HashMap::new();
        let mut memory: HashMap<SocketAddr, Memory> = HashMap::new();
        loop {
            tick.tick().await;
            let Some(mp) = me.upgrade() else { return };
            let watched = mp.watched();
            if watched.is_empty() {
                progress.clear();
                memory.clear();
                continue;
            }
            memory.retain(|local, _| watched.iter().any(|w| w.1 == *local));
            let ends: HashSet<_> = watched.iter().map(|&(_, l, r, _)| (l, r)).collect();
            let read = tokio::task::spawn_blocking(move || Ok::<_, std::io::Error>((diag::tcp_infos(&ends)?, diag::mptcp_progress()?))).await;
            let (infos, conns) = match read {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    log::warn!("multipath: reading subflows for the blackhole check: {e}");
                    continue;
                }
                Err(e) => {
                    log::error!("multipath: blackhole check: {e}");
                    continue;
                }
            };
            log::trace!("multipath: blackhole check: {} subflows watched, {} found, {} MPTCP connections", watched.len(), infos.len(), conns.len());
            let now = Instant::now();
            progress.retain(|token, _| conns.contains_key(token));
            let mut by_conn: HashMap<u32, Vec<(Watched, SubflowView)>> = HashMap::new();
            // A subflow that is a backup because it yields (`yielding`) is no
            // handover backup: what it still carries says nothing of the
            // active path (the peer drains what it queued there before it
            // heard, and sends there when its own window or scheduler stalls
            // the other), so it is not evidence of desertion.
            let yielded = mp.state.lock().expect("multipath state poisoned").yielded.clone();
            for w in &watched {
                if let Some((t, flags)) = infos.get(&(w.1, w.2)) {
                    let view = SubflowView {
                        since_data_ms: t.tcpi_last_data_recv,
                        since_ack_ms: t.tcpi_last_ack_recv,
                        unacked: t.tcpi_unacked,
                        rtt_us: t.tcpi_rtt.max(t.tcpi_rcv_rtt),
                        backup: flags.is_some_and(|f| f & qsock::subflow_diag::FLAG_BACKUP_LOCAL != 0) && !yielded.contains(&(w.0, w.1)),
                    };
                    by_conn.entry(w.0).or_default().push((*w, view));
                }
            }
            for (token, subflows) in by_conn {
                let Some(&seen) = conns.get(&token) else { continue };
                let p = progress.entry(token).or_insert(Progress { seen, received_at: now, acked_at: now });
                // A reader that has not read what it has is not held up by
                // the network: the hold-up counts from when it keeps up again.
                let reader_keeps_up = seen.rcvbuf == 0 || seen.rqueue < seen.rcvbuf / 2;
                if seen.rcv_nxt != p.seen.rcv_nxt || !reader_keeps_up {
                    p.received_at = now;
                }
                if seen.snd_una != p.seen.snd_una || seen.write_seq == seen.snd_una {
                    p.acked_at = now;
                }
                p.seen = seen;
                if subflows.len() < 2 {
                    continue;
                }
                let ms = |since: Instant| u32::try_from((now - since).as_millis()).unwrap_or(u32::MAX);
                let holdup = Holdup { receive_ms: ms(p.received_at), send_ms: ms(p.acked_at), reader_keeps_up };
                if holdup.receive_ms >= silence::MIN_SILENCE_MS {
                    log::trace!("multipath: connection {token:08x} held up {holdup:?}, receive queue {} of {} B", seen.rqueue, seen.rcvbuf);
                }
                let views: Vec<SubflowView> = subflows.iter().map(|(_, v)| *v).collect();
                let now_implicated = silence::implicated(holdup, &views);
                let deserted = silence::deserted(reader_keeps_up, &views);
                let mut dead = Vec::new();
                for (i, (((w, v), hit), left)) in subflows.iter().zip(now_implicated).zip(deserted).enumerate() {
                    // Remembered per silence: a subflow that heard from its peer starts afresh.
                    let m = memory.entry(w.1).or_insert(Memory { since_data_ms: v.since_data_ms, since_ack_ms: v.since_ack_ms, implicated: false });
                    if v.since_data_ms < m.since_data_ms || v.since_ack_ms < m.since_ack_ms {
                        m.implicated = false;
                    }
                    (m.since_data_ms, m.since_ack_ms) = (v.since_data_ms, v.since_ack_ms);
                    m.implicated |= hit;
                    if silence::is_dead(v, m.implicated) || left {
                        dead.push(i);
                    }
                }
                // Never the last subflow: someone must carry the connection.
                if dead.len() >= subflows.len() {
                    dead.clear();
                }
                for i in dead {
                    let (w, v) = subflows[i];
                    log::info!("multipath: connection {token:08x}: subflow {} -> {} is silent ({v:?}; connection held up {holdup:?}; all its subflows {views:?}); withdrawing it", w.1, w.2);
                    mp.state.lock().expect("multipath state poisoned").withdrawn.insert(w.1);
                    tokio::spawn(mp.clone().withdraw_silent(w));
                }
            }
        }
    }

    /// The subflows to judge: those of connections this host opened, on
    /// interfaces that are up, not already being withdrawn.
    fn watched(&self) -> Vec<Watched> {
        let st = self.state.lock().expect("multipath state poisoned");
        let down: HashSet<IpAddr> =
            st.down.iter().flat_map(|name| qsock::subflows::interface_addresses().into_iter().filter(move |(n, _)| n == name).map(|(_, ip)| ip)).collect();
        st.tracked
            .iter()
            .filter(|(_, t)| !t.server_side)
            .flat_map(|(token, t)| t.subflows.iter().map(move |&(l, r, id)| (*token, l, r, id)))
            .filter(|(_, l, _, _)| !st.withdrawn.contains(l) && !down.contains(&l.ip()))
            .collect()
    }

    /// Destroys the silent subflow and withdraws its address from the
    /// connection, then probes the path until it carries a join again.
    async fn withdraw_silent(self: Arc<Self>, (token, local, remote, id): Watched) {
        self.publish(token, qsock::SubflowEvent::Silent { local, remote, interface: qsock::subflows::interface_holding(local.ip()) });
        {
            let mut pm = self.pm.lock().await;
            // The address first: the path manager forgets an id once its
            // last subflow is gone, and then can no longer tell the peer.
            match pm.remove_address(token, id).await {
                Ok(()) => log::info!("multipath: connection {token:08x} withdrew address id {id} ({})", local.ip()),
                Err(e) => log::warn!("multipath: connection {token:08x}, address id {id}: {e}"),
            }
            // Closed by the REMOVE already (non-zero ids) answers ESRCH: fine.
            if let Err(e) = pm.destroy_subflow(token, local, remote).await {
                log::debug!("multipath: connection {token:08x}: subflow {local}: {e}");
            }
        }
        let key = (token, local.ip());
        if !self.state.lock().expect("multipath state poisoned").probing.insert(key) {
            return; // another subflow of the same path is probing it already
        }
        self.probe_path(token, local.ip(), remote).await;
        self.state.lock().expect("multipath state poisoned").probing.remove(&key);
    }

    /// Joins connection `token` from `ip` to `remote` every [`PROBE_EVERY`]
    /// (after [`HOLD_DOWN`]) until a join completes, the connection ends,
    /// the interface is gone or down (its link events take over), or the
    /// connection has a subflow from `ip` again.
    async fn probe_path(&self, token: u32, ip: IpAddr, remote: SocketAddr) {
        tokio::time::sleep(HOLD_DOWN).await;
        loop {
            let Some(name) = qsock::subflows::interface_holding(ip) else { return };
            {
                let st = self.state.lock().expect("multipath state poisoned");
                let Some(t) = st.tracked.get(&token) else { return };
                if st.down.contains(&name) || t.subflows.iter().any(|(l, _, _)| l.ip() == ip) {
                    return;
                }
            }
            let Ok((ip, name, if_idx)) = self.local_endpoint(&qsock::SubflowLocal::Address(ip), remote.ip()) else { return };
            let backup = self.state.lock().expect("multipath state poisoned").role(token, &name) == super::SubflowRole::Backup;
            let started = Instant::now();
            match self.join(token, Vec::new(), (ip, &name, if_idx), backup, remote, PROBE_WAIT).await {
                Ok(local) => {
                    log::info!("multipath: connection {token:08x}: the path from {name} carries packets again (subflow {local})");
                    return;
                }
                Err(e) => {
                    log::debug!("multipath: connection {token:08x}: probe on {name}: {}", e.message);
                    // Cancel the join still trying (its SYN retransmissions back off to seconds).
                    if let Ok(pending) =
                        tokio::task::spawn_blocking(move || diag::tcp_connecting_from(ip, remote)).await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
                    {
                        let mut pm = self.pm.lock().await;
                        for l in pending {
                            let _ = pm.destroy_subflow(token, l, remote).await;
                        }
                    }
                }
            }
            tokio::time::sleep(PROBE_EVERY.saturating_sub(started.elapsed())).await;
        }
    }
}

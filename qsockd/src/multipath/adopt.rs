//! A restarted qsockd takes on the connections its predecessor was path
//! manager of: the kernel keeps them (each keeps the userspace path manager
//! it was created with), and sock_diag's `INET_DIAG_ULP_INFO` of every
//! subflow gives back what the events told the predecessor: the token, each
//! subflow's ends and local address id, and which side opened it.
use std::net::SocketAddr;

use qsock::subflow_diag::SubflowUlpInfo;

use super::{Multipath, State, SubflowNotice, Tracked};

impl State {
    /// Tracks the connections `subflows` (one dump of established subflows)
    /// belong to, as their events would have: ends, local address ids
    /// (non-zero ones reserved, so a new join does not reuse one), and
    /// whether this host accepted the connection (no subflow opened here).
    pub(super) fn adopt(&mut self, subflows: &[(SocketAddr, SocketAddr, SubflowUlpInfo)]) {
        for &(local, remote, u) in subflows {
            let t = self.tracked.entry(u.token).or_insert_with(|| Tracked { remote, server_side: true, subflows: Vec::new() });
            if u.opened_here() {
                t.server_side = false;
            }
            if u.local_id == 0 {
                // Address id 0 is the initial subflow's: its remote end is the connection's.
                t.remote = remote;
            }
            t.subflows.retain(|(l, _, _)| *l != local);
            t.subflows.push((local, remote, u.local_id));
            if u.local_id != 0 {
                self.local_ids.entry(u.token).or_default().insert(local.ip(), u.local_id);
            }
        }
    }
}

impl Multipath {
    /// Adopts the namespace's existing MPTCP connections ([`State::adopt`])
    /// and tells the socket registry of each established subflow, so a
    /// recovered connection's streams catch up with subflows that came or
    /// went while no qsockd ran. A failed dump is logged: those connections
    /// are then followed from their next event only.
    pub(super) async fn adopt_existing(&self) {
        let Some(found) = crate::kernel::diag::off_thread("multipath: listing existing subflows", log::Level::Warn, crate::kernel::diag::mptcp_subflows).await
        else {
            return;
        };
        if found.is_empty() {
            return;
        }
        self.state.lock().expect("multipath state poisoned").adopt(&found);
        let connections: std::collections::HashSet<u32> = found.iter().map(|(_, _, u)| u.token).collect();
        log::info!("multipath: adopted {} existing connections ({} subflows)", connections.len(), found.len());
        for (local, remote, u) in found {
            let _ = self.notices.send(SubflowNotice::Established { token: u.token, local, remote });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qsock::subflow_diag::{FLAG_JOIN_LOCAL, FLAG_MP_CAPABLE_LOCAL};

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn adopting_rebuilds_ends_ids_and_the_side_that_connected() {
        let mut st = State::default();
        let remote = at("10.9.0.1:80");
        st.adopt(&[
            (at("10.0.1.2:4000"), at("10.9.0.1:80"), SubflowUlpInfo { token: 7, local_id: 2, flags: FLAG_JOIN_LOCAL }),
            (at("10.0.0.2:3000"), remote, SubflowUlpInfo { token: 7, local_id: 0, flags: FLAG_MP_CAPABLE_LOCAL }),
            (at("10.9.0.1:80"), at("10.0.0.2:5000"), SubflowUlpInfo { token: 9, local_id: 0, flags: 0 }),
        ]);
        let t = &st.tracked[&7];
        assert_eq!((t.remote, t.server_side, t.subflows.len()), (remote, false, 2));
        assert!(st.tracked[&9].server_side, "no subflow opened here: the peer connected");
        // Id 2 stays taken; a new address gets the lowest free one, not 2.
        assert_eq!(st.local_ids[&7].get(&at("10.0.1.2:1").ip()), Some(&2));
        assert_eq!(st.local_id(7, "10.0.2.2".parse().unwrap()).unwrap(), 1);
        assert_eq!(st.local_id(7, "10.0.3.2".parse().unwrap()).unwrap(), 3);
        assert!(!st.local_ids.contains_key(&9), "id 0 is never handed out");
    }
}

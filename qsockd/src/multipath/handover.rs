//! Handover when a managed interface goes down (issue 16, item 5): its
//! address is withdrawn with `REMOVE`, which tells the peer (`RM_ADDR`,
//! over a living subflow) to stop sending on it, and its subflows here are
//! destroyed (for address id 0, the initial subflow's, `REMOVE` only
//! signals), so neither side waits for a retransmission timeout; a connection left with
//! no subflow gets one on another interface. When the interface comes back
//! and stays up for [`HOLD_DOWN`], connections get a subflow there again.
use std::{collections::HashSet, net::IpAddr, sync::Arc, time::Duration};

use super::Multipath;
use crate::config::OpenSubflows;

/// How long an interface that came back must stay up before subflows use
/// it again (no flapping between a dying link and the others).
pub const HOLD_DOWN: Duration = Duration::from_secs(1);

/// The addresses interface `name` holds.
fn addresses_of(name: &str) -> HashSet<IpAddr> {
    qsock::subflows::interface_addresses().into_iter().filter(|(n, _)| n == name).map(|(_, ip)| ip).collect()
}

impl Multipath {
    /// Managed interface `name` went down (link event): withdraw its
    /// subflows from every connection, and give a connection that has no
    /// other subflow one on an interface that is up.
    pub async fn interface_down(self: Arc<Self>, name: String) {
        if !self.is_on() {
            return;
        }
        let gone = addresses_of(&name);
        let (withdraw, reopen) = {
            let mut st = self.state.lock().expect("multipath state poisoned");
            st.down.insert(name.clone());
            let mut withdraw = Vec::new();
            let mut reopen = Vec::new();
            for (token, t) in &st.tracked {
                let dead: Vec<_> = t.subflows.iter().filter(|(l, _, _)| gone.contains(&l.ip())).copied().collect();
                if dead.is_empty() {
                    continue;
                }
                let mut ids: Vec<u8> = dead.iter().map(|(_, _, id)| *id).collect();
                ids.sort_unstable();
                ids.dedup();
                withdraw.push((*token, ids, dead));
                let left: Vec<IpAddr> = t.subflows.iter().map(|(l, _, _)| l.ip()).filter(|ip| !gone.contains(ip)).collect();
                if left.is_empty() && !t.server_side {
                    reopen.push((*token, t.remote));
                }
            }
            (withdraw, reopen)
        };
        // A replacement first, so the connection is never without a subflow for long.
        for (token, remote) in reopen {
            tokio::spawn(self.clone().open_on_every_interface(token, gone.iter().copied().collect(), remote));
        }
        for (token, ids, dead) in withdraw {
            self.publish(token, qsock::SubflowEvent::InterfaceDown { interface: name.clone() });
            let mut pm = self.pm.lock().await;
            for id in ids {
                match pm.remove_address(token, id).await {
                    Ok(()) => log::info!("multipath: {name} is down; connection {token:08x} withdrew address id {id}"),
                    Err(e) => log::warn!("multipath: {name} is down; connection {token:08x}, address id {id}: {e}"),
                }
            }
            for (local, remote, _) in dead {
                // Already closed by the REMOVE (non-zero ids) answers ESRCH: fine.
                if let Err(e) = pm.destroy_subflow(token, local, remote).await {
                    log::debug!("multipath: connection {token:08x}: subflow {local}: {e}");
                }
            }
        }
    }

    /// Managed interface `name` came up: once it has stayed up for
    /// [`HOLD_DOWN`], connections this host opened get a subflow there again
    /// (with `open_subflows = "every_interface"`).
    pub async fn interface_up(self: Arc<Self>, name: String) {
        if !self.is_on() {
            return;
        }
        let was_down = self.state.lock().expect("multipath state poisoned").down.remove(&name);
        if !was_down || self.open != OpenSubflows::EveryInterface {
            return;
        }
        tokio::time::sleep(HOLD_DOWN).await;
        let back = {
            let st = self.state.lock().expect("multipath state poisoned");
            if st.down.contains(&name) {
                return; // down again meanwhile
            }
            let here = addresses_of(&name);
            st.tracked
                .iter()
                .filter(|(_, t)| !t.server_side && !t.subflows.iter().any(|(l, _, _)| here.contains(&l.ip())))
                .map(|(tok, t)| (*tok, t.remote, t.subflows.iter().map(|(l, _, _)| l.ip()).collect::<Vec<_>>()))
                .collect::<Vec<_>>()
        };
        for (token, remote, have) in back {
            tokio::spawn(self.clone().open_on_every_interface(token, have, remote));
        }
    }
}

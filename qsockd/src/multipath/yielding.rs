//! Capacity-seeking connections yield an interface to latency-bound ones
//! (`select::multipath::yielded`): while a query's connection has its
//! initial subflow on an interface, a bulk connection's extra subflow there
//! is a backup (`MP_PRIO`, so the peer stops scheduling data on it), and is
//! made active again once the last such connection closes.
use std::{net::SocketAddr, sync::Arc};

use super::{Multipath, State};
use crate::select::multipath::{SubflowRole, Urgency};

/// A backup flag to set on one subflow: (token, local end, remote end, backup).
pub(super) type Change = (u32, SocketAddr, SocketAddr, bool);

impl State {
    /// Whether a connection other than `token`, latency-bound and live, has
    /// its initial subflow on interface `name`.
    pub(super) fn latency_bound_on(&self, token: u32, name: &str) -> bool {
        self.plans.iter().any(|(t, p)| *t != token && p.urgency == Urgency::Latency && p.initial == name && self.tracked.contains_key(t))
    }

    /// A subflow that joined as a backup because it yields: remembered, so
    /// it is made active again when the interface is free.
    pub(super) fn note_yielded_join(&mut self, token: u32, local: SocketAddr) {
        let Some(name) = qsock::subflows::interface_holding(local.ip()) else { return };
        if self.planned_role(token, &name) == SubflowRole::Active && self.role(token, &name) == SubflowRole::Backup {
            self.yielded.insert((token, local));
        }
    }

    /// The backup flags to change so every capacity-seeking connection's
    /// subflows yield exactly where a latency-bound connection is now;
    /// [`State::yielded`] is updated as if they were applied.
    pub(super) fn reyield(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        for (token, t) in &self.tracked {
            if self.plans.get(token).map(|p| p.urgency) != Some(Urgency::Capacity) {
                continue;
            }
            for (local, remote, _) in &t.subflows {
                let Some(name) = qsock::subflows::interface_holding(local.ip()) else { continue };
                let should = self.planned_role(*token, &name) == SubflowRole::Active && self.role(*token, &name) == SubflowRole::Backup;
                if should != self.yielded.contains(&(*token, *local)) {
                    changes.push((*token, *local, *remote, should));
                }
            }
        }
        for (token, local, _, backup) in &changes {
            if *backup {
                self.yielded.insert((*token, *local));
            } else {
                self.yielded.remove(&(*token, *local));
            }
        }
        changes
    }
}

impl Multipath {
    /// Applies `changes` ([`State::reyield`]) and tells subscribers;
    /// failures are logged (a subflow that closed meanwhile).
    pub(super) async fn apply_yields(self: Arc<Self>, changes: Vec<Change>) {
        let mut pm = self.pm.lock().await;
        for (token, local, remote, backup) in changes {
            let what = if backup { "yields to a latency-bound connection: backup" } else { "no longer yields: active" };
            match pm.set_backup(token, local, remote, backup).await {
                Ok(()) => {
                    log::info!("multipath: connection {token:08x}: subflow {local} {what}");
                    self.publish(token, qsock::SubflowEvent::BackupChanged { local, remote, backup });
                }
                Err(e) => log::info!("multipath: connection {token:08x}: subflow {local} {what}: {}", e.message),
            }
        }
    }
}

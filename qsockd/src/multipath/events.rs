//! Subflow events for applications (issue 16, item 3; the paper's "further
//! work"): what the path manager hears of a connection, as
//! [`qsock::SubflowEvent`]s on a broadcast channel that each subscriber
//! filters by its connection's token.
use std::os::fd::BorrowedFd;

use qsock::{QsockError, SubflowEvent};
use tokio::sync::broadcast;

use super::Multipath;
use crate::kernel::mptcp_events::{EventKind, MptcpEvent};

/// Events held for a subscriber that reads slowly before it misses some
/// (it is then told how many, [`SubflowEvent::Missed`]).
pub const BACKLOG: usize = 256;

/// One subscriber's view: the connection's token and the channel.
pub struct Subscription {
    /// The watched connection's token.
    pub token: u32,
    /// Every connection's events, `(token, event)`.
    pub rx: broadcast::Receiver<(u32, SubflowEvent)>,
}

/// The application-facing event for a path-manager event, if it has one.
pub fn from_kernel(ev: &MptcpEvent) -> Option<SubflowEvent> {
    let interface = || ev.local.and_then(|l| qsock::subflows::interface_holding(l.ip()));
    Some(match (ev.kind, ev.local, ev.remote) {
        (EventKind::Established, Some(local), Some(remote)) => SubflowEvent::ConnectionEstablished { local, remote, interface: interface() },
        (EventKind::SubEstablished, Some(local), Some(remote)) => {
            SubflowEvent::Established { local, remote, interface: interface(), backup: ev.backup.unwrap_or(false) }
        }
        (EventKind::SubClosed, Some(local), Some(remote)) => SubflowEvent::Closed { local, remote, interface: interface(), error: ev.error.map(i32::from) },
        (EventKind::SubPriority, Some(local), Some(remote)) => SubflowEvent::BackupChanged { local, remote, backup: ev.backup.unwrap_or(false) },
        (EventKind::Closed, _, _) => SubflowEvent::ConnectionClosed,
        _ => return None,
    })
}

impl Multipath {
    /// Sends `ev` of connection `token` to every subscriber (none: dropped).
    pub(super) fn publish(&self, token: u32, ev: SubflowEvent) {
        let _ = self.events.send((token, ev));
    }

    /// Subscribes to the events of the MPTCP connection `sock` (the caller
    /// holds it: it sent it). Errors: [`qsock::ErrorKind::Unsupported`]
    /// (multipath is off), [`qsock::ErrorKind::NotMultipath`].
    pub fn subscribe(&self, sock: BorrowedFd<'_>) -> Result<Subscription, QsockError> {
        self.check_on()?;
        let token = qsock::mptcp_token(sock)?;
        Ok(Subscription { token, rx: self.events.subscribe() })
    }
}

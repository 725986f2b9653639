//! Wire protocol between the qsock library and qsockd.
//!
//! One request and one response per `SOCK_SEQPACKET` message, JSON encoded.
//! Per-socket requests carry the socket itself as `SCM_RIGHTS`: qsockd reads
//! the cookie from the received descriptor, so a client can only name
//! sockets it holds.
use serde::{Deserialize, Serialize};

use crate::{
    error::QsockError,
    info::{AttachInfo, InterfaceInfo, QInfo, SocketSummary},
    params::{InitParams, QosParams},
    subflow_events::SubflowEvent,
    subflows::{Subflow, SubflowLocal},
};

/// Default path of qsockd's Unix socket; `QSOCK_SOCKET` overrides it.
pub const DEFAULT_SOCKET_PATH: &str = "/run/qsock/qsockd.sock";
/// Largest request or response, bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A request to qsockd.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// Liveness check; no descriptor.
    Ping,
    /// `qsockinit`: install the root qdisc and data path. Root only.
    Init(InitParams),
    /// Undo `Init` on a device. Root only.
    Teardown {
        /// Device to restore.
        device: String,
    },
    /// `qattach`: manage the attached socket.
    Attach(QosParams),
    /// `qchange`: new parameters for the attached socket.
    Change(QosParams),
    /// `qinfo` on the attached socket.
    Info,
    /// `qclose`: stop managing the attached socket.
    Close,
    /// Re-register the attached socket with this connection after qsockd
    /// restarted (the library sends it for every socket it manages when it
    /// reconnects). Only the socket's owner may.
    Reclaim,
    /// The interfaces qsockd manages, with what it measured; no descriptor.
    Interfaces,
    /// Every managed socket (root), or the caller's own; no descriptor.
    List,
    /// Open a subflow of the attached MPTCP connection (the paper's
    /// `MPTCP_OPEN_SUB_TUPLE`); answered once it is established, or after
    /// `wait_ms`.
    SubflowOpen {
        /// Where the subflow starts.
        local: SubflowLocal,
        /// Remote address and port; `None`: the initial subflow's.
        remote: Option<std::net::SocketAddr>,
        /// Longest wait for the join to complete, ms.
        wait_ms: u64,
    },
    /// Close subflow `id` of the attached MPTCP connection (`MPTCP_CLOSE_SUB_ID`).
    SubflowClose {
        /// The subflow's id ([`crate::Subflow::id`]).
        id: u32,
    },
    /// Set or clear the backup flag of subflow `id` (the peer is told with `MP_PRIO`).
    SubflowBackup {
        /// The subflow's id.
        id: u32,
        /// Backup (used only when no other subflow can send) or not.
        backup: bool,
    },
    /// Subscribe to the subflow events of the attached MPTCP connection:
    /// answered `Ok`, then one [`Response::SubflowEvent`] per event on this
    /// connection, which serves nothing else from then on.
    SubflowEvents,
}

impl Request {
    /// Whether the request changes qsockd's state (else it only reports).
    pub fn changes_state(&self) -> bool {
        !matches!(self, Self::Ping | Self::Info | Self::Interfaces | Self::List)
    }

    /// Whether the request must carry a socket descriptor.
    pub fn needs_socket(&self) -> bool {
        matches!(
            self,
            Self::Attach(_)
                | Self::Change(_)
                | Self::Info
                | Self::Close
                | Self::Reclaim
                | Self::SubflowOpen { .. }
                | Self::SubflowClose { .. }
                | Self::SubflowBackup { .. }
                | Self::SubflowEvents
        )
    }

    /// Whether the request is a subflow operation (served by the path
    /// manager, outside the socket registry's lock).
    pub fn is_subflow_op(&self) -> bool {
        matches!(self, Self::SubflowOpen { .. } | Self::SubflowClose { .. } | Self::SubflowBackup { .. })
    }
}

/// qsockd's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    /// Done, nothing to report.
    Ok,
    /// Answer to `Ping`: the daemon's version.
    Pong(String),
    /// Answer to `Attach`/`Change`/`Reclaim`.
    Attached(AttachInfo),
    /// Answer to `Info`.
    Info(Box<QInfo>),
    /// Answer to `Interfaces`.
    Interfaces(Vec<InterfaceInfo>),
    /// Answer to `List`.
    Sockets(Vec<SocketSummary>),
    /// Answer to `SubflowOpen`: the new subflow.
    Subflow(Box<Subflow>),
    /// One event of a `SubflowEvents` subscription.
    SubflowEvent(SubflowEvent),
    /// The request failed; nothing was changed.
    Error(QsockError),
}

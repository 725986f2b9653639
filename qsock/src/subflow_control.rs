//! Changing an MPTCP connection's subflows: open one on a chosen local
//! interface or address, close one, set one's backup flag (Hesmans and
//! Bonaventure 2016: `MPTCP_OPEN_SUB_TUPLE`, `MPTCP_CLOSE_SUB_ID`, the
//! `MPTCP_SUB_SETSOCKOPT` of the backup priority). These go through qsockd,
//! the namespace's path manager; the socket travels with the request, so a
//! caller can only change connections it holds. Listing needs no daemon:
//! [`crate::qsubflows`].
use std::{
    net::SocketAddr,
    os::fd::{AsFd, BorrowedFd},
    time::Duration,
};

use crate::{
    client::unexpected,
    error::Result,
    proto::{Request, Response},
    subflows::{Subflow, SubflowLocal},
    with_default, Client,
};

/// How long [`qsubflow_open`] waits for the join by default: a few RTTs of
/// a slow path and a retransmitted SYN (the first retransmission comes after 1 s).
pub const SUBFLOW_OPEN_WAIT: Duration = Duration::from_secs(3);

impl Client {
    /// Opens a subflow of the MPTCP connection `fd` from `local` to
    /// `remote` (`None`: the initial subflow's remote) and returns it once
    /// established, waiting at most `wait` for the join (the call itself
    /// allows the client's wait on top). See [`qsubflow_open`].
    pub fn open_subflow(&self, fd: BorrowedFd<'_>, local: &SubflowLocal, remote: Option<SocketAddr>, wait: Duration) -> Result<Subflow> {
        let req = Request::SubflowOpen { local: local.clone(), remote, wait_ms: wait.as_millis() as u64 };
        match self.call_within(&req, Some(fd), wait + self.wait())? {
            Response::Subflow(s) => Ok(*s),
            r => Err(unexpected(r)),
        }
    }

    /// Closes subflow `id` of the MPTCP connection `fd`. See [`qsubflow_close`].
    pub fn close_subflow(&self, fd: BorrowedFd<'_>, id: u32) -> Result<()> {
        match self.call(&Request::SubflowClose { id }, Some(fd))? {
            Response::Ok => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    /// Sets or clears the backup flag of subflow `id`. See [`qsubflow_set_backup`].
    pub fn set_subflow_backup(&self, fd: BorrowedFd<'_>, id: u32, backup: bool) -> Result<()> {
        match self.call(&Request::SubflowBackup { id, backup }, Some(fd))? {
            Response::Ok => Ok(()),
            r => Err(unexpected(r)),
        }
    }
}

/// Opens a subflow of the MPTCP connection `fd` from `local` (a managed
/// interface, or an address of one) to `remote` (`None`: the address and
/// port of the initial subflow's remote end) and returns it once the join
/// completed, waiting at most [`SUBFLOW_OPEN_WAIT`]. MPTCP allows joins once
/// the connection is fully established, after its first data exchange: a
/// call before that waits for it within the same bound.
///
/// Errors: [`crate::ErrorKind::NotMultipath`] (not MPTCP, or fallen back to
/// TCP), [`crate::ErrorKind::NoInterface`] (the interface or address is not
/// a managed interface's, or has no address of the remote's family),
/// [`crate::ErrorKind::Kernel`] (the join failed or did not complete in
/// time: the message says which, with the subflow's error),
/// [`crate::ErrorKind::Unsupported`] (qsockd runs without multipath),
/// [`crate::ErrorKind::DaemonUnavailable`].
pub fn qsubflow_open(fd: impl AsFd, local: &SubflowLocal, remote: Option<SocketAddr>) -> Result<Subflow> {
    with_default(|c| c.open_subflow(fd.as_fd(), local, remote, SUBFLOW_OPEN_WAIT))
}

/// Closes subflow `id` (as [`crate::Subflow::id`] lists it) of the MPTCP
/// connection `fd`; the connection goes on over its other subflows.
///
/// Errors: [`crate::ErrorKind::InvalidParams`] (no subflow `id`: the
/// message lists the ids there are), [`crate::ErrorKind::NotMultipath`],
/// [`crate::ErrorKind::Unsupported`], [`crate::ErrorKind::DaemonUnavailable`].
pub fn qsubflow_close(fd: impl AsFd, id: u32) -> Result<()> {
    with_default(|c| c.close_subflow(fd.as_fd(), id))
}

/// Makes subflow `id` a backup (used only when no other subflow can send)
/// or a regular subflow again; the peer is told (`MP_PRIO`), so both
/// directions follow. Errors: as [`qsubflow_close`].
pub fn qsubflow_set_backup(fd: impl AsFd, id: u32, backup: bool) -> Result<()> {
    with_default(|c| c.set_subflow_backup(fd.as_fd(), id, backup))
}

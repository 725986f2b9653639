//! The MPTCP userspace path manager's commands over generic netlink
//! (family `mptcp_pm`, `include/uapi/linux/mptcp_pm.h`): subflow create,
//! destroy and backup flag, and the namespace's limits. Messages are
//! encoded and decoded by `netlink-bindings` (generated from the kernel's
//! YAML spec); write commands need CAP_NET_ADMIN in the namespace.
use std::net::{IpAddr, SocketAddr};

use netlink_bindings::mptcp_pm::{self, PushAddress};
use netlink_bindings::traits::Pusher;
use netlink_socket2::{NetlinkSocket, ReplyError};
use qsock::{ErrorKind, QsockError};

/// `MPTCP_PM_ADDR_FLAG_BACKUP`.
const ADDR_FLAG_BACKUP: u32 = 1 << 2;
/// Largest value the kernel accepts for either limit (`MPTCP_PM_ADDR_MAX`).
pub const LIMIT_MAX: u32 = 8;

/// The namespace's MPTCP limits (`ip mptcp limits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Most additional subflows a connection may have (beyond the initial one).
    pub subflows: u32,
    /// Most addresses a peer may announce (`ADD_ADDR`) that are accepted.
    pub add_addr_accepted: u32,
}

/// The local end of a subflow to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// Source address (of the interface `if_idx`).
    pub addr: IpAddr,
    /// Address id within the connection: non-zero and unique per address
    /// (id 0 is the initial subflow's; a `REMOVE 0` would close them all).
    pub id: u8,
    /// Interface the subflow is bound to, so it leaves by that link.
    pub if_idx: u32,
    /// Open it as a backup subflow (the join's `MP_JOIN` carries the
    /// backup bit: both ends use it only when no other subflow can send).
    pub backup: bool,
}

/// A failed path-manager command: the kernel's errno and extack text.
fn pm_error(what: &str, e: ReplyError) -> QsockError {
    let code = e.as_io_error().raw_os_error();
    let kind = match code {
        Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) => ErrorKind::Unsupported,
        Some(libc::EPERM) | Some(libc::EACCES) => ErrorKind::PermissionDenied,
        Some(libc::EINVAL) | Some(libc::ESRCH) => ErrorKind::InvalidParams,
        _ => ErrorKind::Kernel,
    };
    let msg = if code == Some(libc::ENOENT) && what == "resolve" {
        "this kernel has no mptcp_pm netlink family (MPTCP not built in)".to_string()
    } else {
        format!("mptcp_pm {what}: {e}")
    };
    QsockError::new(kind, msg)
}

fn push_addr<P: Pusher>(p: PushAddress<P>, addr: IpAddr) -> PushAddress<P> {
    match addr {
        IpAddr::V4(a) => p.push_family(libc::AF_INET as u16).push_addr4(u32::from(a)),
        IpAddr::V6(a) => p.push_family(libc::AF_INET6 as u16).push_addr6(&a.octets()),
    }
}

/// Why a subflow could not be created.
#[derive(Debug)]
pub enum CreateError {
    /// The connection is not fully established yet (ENOTCONN): MPTCP
    /// allows joins once the first data was exchanged; the `ESTABLISHED`
    /// event says when.
    NotYetEstablished,
    /// Any other failure.
    Failed(QsockError),
}

/// A connection to the kernel's `mptcp_pm` family in qsockd's namespace.
pub struct PmClient {
    sock: NetlinkSocket,
}

impl Default for PmClient {
    fn default() -> Self {
        Self::new()
    }
}

impl PmClient {
    /// A client; the socket opens on the first command, in the namespace
    /// of the thread that sends it.
    pub fn new() -> Self {
        Self { sock: NetlinkSocket::new() }
    }

    /// The namespace's limits. Errors: [`ErrorKind::Unsupported`] (no MPTCP), [`ErrorKind::Kernel`].
    pub async fn limits(&mut self) -> Result<Limits, QsockError> {
        let req = mptcp_pm::Request::new().op_get_limits_do();
        let mut reply = self.sock.request(&req).await.map_err(|e| pm_error("get-limits", e.into()))?;
        let attrs = reply.recv_one().await.map_err(|e| pm_error("get-limits", e))?;
        Ok(Limits { subflows: attrs.get_subflows().unwrap_or(0), add_addr_accepted: attrs.get_rcv_add_addrs().unwrap_or(0) })
    }

    /// Sets the namespace's limits (each at most [`LIMIT_MAX`]).
    /// Errors: [`ErrorKind::InvalidParams`], [`ErrorKind::PermissionDenied`], [`ErrorKind::Kernel`].
    pub async fn set_limits(&mut self, l: Limits) -> Result<(), QsockError> {
        let mut req = mptcp_pm::Request::new().op_set_limits_do();
        req.encode().push_subflows(l.subflows).push_rcv_add_addrs(l.add_addr_accepted);
        let mut reply = self.sock.request(&req).await.map_err(|e| pm_error("set-limits", e.into()))?;
        reply.recv_ack().await.map_err(|e| pm_error("set-limits", e))
    }

    /// Starts a subflow of connection `token` from `local` to `remote`
    /// (`SUBFLOW_CREATE`). Success means the join started: the subflow is
    /// there once a `SUB_ESTABLISHED` event names it.
    ///
    /// Errors: [`CreateError::NotYetEstablished`]; else
    /// [`ErrorKind::InvalidParams`] (unknown token, an address and id that
    /// do not match the connection's, with the kernel's text),
    /// [`ErrorKind::PermissionDenied`], [`ErrorKind::Kernel`].
    pub async fn create_subflow(&mut self, token: u32, local: LocalEndpoint, remote: SocketAddr) -> Result<(), CreateError> {
        let mut req = mptcp_pm::Request::new().op_subflow_create_do();
        let enc = req.encode().push_token(token);
        let flags = if local.backup { ADDR_FLAG_BACKUP } else { 0 };
        let enc = push_addr(enc.nested_addr(), local.addr).push_id(local.id).push_if_idx(local.if_idx as i32).push_flags(flags).end_nested();
        push_addr(enc.nested_addr_remote(), remote.ip()).push_port(remote.port()).end_nested();
        let mut reply = self.sock.request(&req).await.map_err(|e| CreateError::Failed(pm_error("subflow-create", e.into())))?;
        reply.recv_ack().await.map_err(|e| match e.as_io_error().raw_os_error() {
            Some(libc::ENOTCONN) => CreateError::NotYetEstablished,
            _ => CreateError::Failed(pm_error("subflow-create", e)),
        })
    }

    /// Closes the subflow of `token` with these two ends (`SUBFLOW_DESTROY`).
    ///
    /// Errors: [`ErrorKind::InvalidParams`] (no such subflow: ESRCH),
    /// [`ErrorKind::PermissionDenied`], [`ErrorKind::Kernel`].
    pub async fn destroy_subflow(&mut self, token: u32, local: SocketAddr, remote: SocketAddr) -> Result<(), QsockError> {
        let mut req = mptcp_pm::Request::new().op_subflow_destroy_do();
        let enc = req.encode().push_token(token);
        let enc = push_addr(enc.nested_addr(), local.ip()).push_port(local.port()).end_nested();
        push_addr(enc.nested_addr_remote(), remote.ip()).push_port(remote.port()).end_nested();
        let mut reply = self.sock.request(&req).await.map_err(|e| pm_error("subflow-destroy", e.into()))?;
        reply.recv_ack().await.map_err(|e| pm_error("subflow-destroy", e))
    }

    /// Withdraws local address id `loc_id` from connection `token`
    /// (`REMOVE`): the kernel closes this side's subflows with that id and
    /// sends `RM_ADDR` over a living subflow, so the peer stops using the
    /// address at once instead of waiting for its retransmission timer.
    ///
    /// Errors: [`ErrorKind::InvalidParams`] (unknown token or id), [`ErrorKind::PermissionDenied`], [`ErrorKind::Kernel`].
    pub async fn remove_address(&mut self, token: u32, loc_id: u8) -> Result<(), QsockError> {
        let mut req = mptcp_pm::Request::new().op_remove_do();
        req.encode().push_token(token).push_loc_id(loc_id);
        let mut reply = self.sock.request(&req).await.map_err(|e| pm_error("remove", e.into()))?;
        reply.recv_ack().await.map_err(|e| pm_error("remove", e))
    }

    /// Sets or clears the backup flag of the subflow of `token` with these
    /// two ends (`SET_FLAGS`); the peer is told with `MP_PRIO`, so it stops
    /// (or starts) sending on it too.
    ///
    /// Errors: as [`PmClient::destroy_subflow`].
    pub async fn set_backup(&mut self, token: u32, local: SocketAddr, remote: SocketAddr, backup: bool) -> Result<(), QsockError> {
        let mut req = mptcp_pm::Request::new().op_set_flags_do();
        let enc = req.encode().push_token(token);
        let flags = if backup { ADDR_FLAG_BACKUP } else { 0 };
        let enc = push_addr(enc.nested_addr(), local.ip()).push_port(local.port()).push_flags(flags).end_nested();
        push_addr(enc.nested_addr_remote(), remote.ip()).push_port(remote.port()).end_nested();
        let mut reply = self.sock.request(&req).await.map_err(|e| pm_error("set-flags", e.into()))?;
        reply.recv_ack().await.map_err(|e| pm_error("set-flags", e))
    }
}

//! MPTCP path-manager events (multicast group `mptcp_pm_events` of the
//! generic netlink family `mptcp_pm`): connections and subflows as they
//! are created, established, prioritised and closed. Decoded by
//! `netlink-bindings`; the group id is resolved through `nlctrl`.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_bindings::{builtin::BuiltinNfgenmsg, mptcp_pm, nlctrl};
use netlink_socket2::{MulticastSocketRaw, NetlinkSocket};
use qsock::{ErrorKind, QsockError};

/// Name of the events group in the `mptcp_pm` family.
const EVENTS_GROUP: &str = "mptcp_pm_events";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A connection was created (its initial subflow's handshake started or arrived).
    Created,
    /// A connection is established: subflows may be added.
    Established,
    /// A connection is gone.
    Closed,
    /// The peer announced an address.
    Announced,
    /// The peer withdrew an address.
    Removed,
    /// A subflow is established.
    SubEstablished,
    /// A subflow closed (`error` may say why).
    SubClosed,
    /// A subflow's backup flag changed (by us or the peer).
    SubPriority,
}

/// One event with the attributes the kernel sent (absent ones `None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MptcpEvent {
    /// What happened.
    pub kind: EventKind,
    /// Local token of the connection.
    pub token: Option<u32>,
    /// Local address and port (connection or subflow).
    pub local: Option<SocketAddr>,
    /// Remote address and port.
    pub remote: Option<SocketAddr>,
    /// Local address id.
    pub local_id: Option<u8>,
    /// Remote address id.
    pub remote_id: Option<u8>,
    /// Backup flag of a subflow.
    pub backup: Option<bool>,
    /// Interface the subflow is bound to (only when bound to a device).
    pub if_idx: Option<u32>,
    /// The subflow's socket error (`sk_err`, an errno) on close.
    pub error: Option<u8>,
    /// The connection is the server side of its handshake.
    pub server_side: bool,
}

fn decode(cmd: u8, attrs: mptcp_pm::IterableEventAttr<'_>) -> Option<MptcpEvent> {
    let kind = match cmd {
        1 => EventKind::Created,
        2 => EventKind::Established,
        3 => EventKind::Closed,
        6 => EventKind::Announced,
        7 => EventKind::Removed,
        10 => EventKind::SubEstablished,
        11 => EventKind::SubClosed,
        13 => EventKind::SubPriority,
        _ => return None,
    };
    let ip = |v4: Option<u32>, v6: Option<&[u8]>| -> Option<IpAddr> {
        match (v4, v6) {
            (Some(a), _) => Some(IpAddr::V4(Ipv4Addr::from(a))),
            (_, Some(b)) => <[u8; 16]>::try_from(b).ok().map(|o| IpAddr::V6(Ipv6Addr::from(o))),
            _ => None,
        }
    };
    let local = ip(attrs.get_saddr4().ok(), attrs.get_saddr6().ok()).map(|a| SocketAddr::new(a, attrs.get_sport().unwrap_or(0)));
    let remote = ip(attrs.get_daddr4().ok(), attrs.get_daddr6().ok()).map(|a| SocketAddr::new(a, attrs.get_dport().unwrap_or(0)));
    Some(MptcpEvent {
        kind,
        token: attrs.get_token().ok(),
        local,
        remote,
        local_id: attrs.get_loc_id().ok(),
        remote_id: attrs.get_rem_id().ok(),
        backup: attrs.get_backup().ok().map(|b| b != 0),
        if_idx: attrs.get_if_idx().ok().and_then(|i| u32::try_from(i).ok()).filter(|&i| i > 0),
        error: attrs.get_error().ok().filter(|&e| e != 0),
        server_side: attrs.get_server_side().ok().is_some_and(|s| s != 0) || attrs.get_flags().ok().is_some_and(|f| f & 1 != 0),
    })
}

/// A subscription to the events of qsockd's namespace.
pub struct MptcpEvents {
    sock: MulticastSocketRaw,
}

impl MptcpEvents {
    /// Joins the events group. Errors: [`ErrorKind::Unsupported`] when the
    /// kernel has no `mptcp_pm` family, [`ErrorKind::Kernel`].
    pub async fn subscribe() -> Result<Self, QsockError> {
        let mut ctl = NetlinkSocket::new();
        let mut req = nlctrl::Request::new().op_getfamily_do();
        req.encode().push_family_name_bytes(mptcp_pm::PROTONAME.as_bytes());
        let no_family =
            |e: &dyn std::fmt::Display| QsockError::new(ErrorKind::Unsupported, format!("MPTCP path-manager events: no mptcp_pm netlink family ({e})"));
        let mut reply = ctl.request(&req).await.map_err(|e| no_family(&e))?;
        let family = reply.recv_one().await.map_err(|e| no_family(&e))?;
        let mut group = None;
        for g in family.get_mcast_groups().map_err(|e| no_family(&e))? {
            if g.get_name().ok().is_some_and(|n| n.to_bytes() == EVENTS_GROUP.as_bytes()) {
                group = g.get_id().ok();
            }
        }
        let group = group.ok_or_else(|| QsockError::new(ErrorKind::Unsupported, format!("the mptcp_pm family has no {EVENTS_GROUP} group")))?;
        let mut sock = MulticastSocketRaw::new(libc::NETLINK_GENERIC as u16).map_err(|e| QsockError::new(ErrorKind::Kernel, format!("netlink socket: {e}")))?;
        sock.listen(group).map_err(|e| QsockError::new(ErrorKind::Kernel, format!("join {EVENTS_GROUP}: {e}")))?;
        Ok(Self { sock })
    }

    /// The next event (others of the family, and ones this build does not
    /// know, are skipped). Errors: [`ErrorKind::Kernel`] (the socket failed,
    /// e.g. ENOBUFS when events were lost: the caller resynchronises).
    pub async fn next(&mut self) -> Result<MptcpEvent, QsockError> {
        loop {
            let (_, buf) = self.sock.recv().await.map_err(|e| QsockError::new(ErrorKind::Kernel, format!("{EVENTS_GROUP}: {e}")))?;
            let header = BuiltinNfgenmsg::new_from_zeroed(buf);
            let attrs = mptcp_pm::EventAttr::new(buf.get(BuiltinNfgenmsg::len()..).unwrap_or_default());
            if let Some(ev) = decode(header.cmd, attrs) {
                return Ok(ev);
            }
        }
    }
}

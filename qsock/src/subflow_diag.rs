//! What `MPTCP_FULL_INFO` does not say of a subflow: its backup flags, from
//! sock_diag's `INET_DIAG_ULP_INFO` of the subflow's TCP socket (one exact
//! lookup by 4-tuple per subflow; unprivileged users get these flags too),
//! and the parser of that attribute qsockd's dumps share.
use std::net::SocketAddr;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NlasIterator, NLM_F_REQUEST};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{nlas::Nla as DiagNla, ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

/// `INET_DIAG_ULP_INFO` (linux/inet_diag.h).
pub const INET_DIAG_ULP_INFO: u16 = 19;
/// `INET_ULP_INFO_MPTCP`, nested in [`INET_DIAG_ULP_INFO`].
const INET_ULP_INFO_MPTCP: u16 = 3;
/// `MPTCP_SUBFLOW_ATTR_TOKEN_LOC` (linux/mptcp.h), u32.
const MPTCP_SUBFLOW_ATTR_TOKEN_LOC: u16 = 2;
/// `MPTCP_SUBFLOW_ATTR_FLAGS` (linux/mptcp.h), u32.
const MPTCP_SUBFLOW_ATTR_FLAGS: u16 = 8;
/// `MPTCP_SUBFLOW_ATTR_ID_LOC` (linux/mptcp.h), u8.
const MPTCP_SUBFLOW_ATTR_ID_LOC: u16 = 10;
/// This end sent `MP_CAPABLE` in its SYN: the initial subflow of a
/// connection this host opened (`MPTCP_SUBFLOW_FLAG_MCAP_LOC`).
pub const FLAG_MP_CAPABLE_LOCAL: u32 = 1 << 1;
/// This end sent the `MP_JOIN` SYN: a join this host opened
/// (`MPTCP_SUBFLOW_FLAG_JOIN_LOC`).
pub const FLAG_JOIN_LOCAL: u32 = 1 << 3;
/// The peer asked that this subflow be a backup (`MP_JOIN` or `MP_PRIO`
/// with the B bit received).
pub const FLAG_BACKUP_REMOTE: u32 = 1 << 4;
/// This end asked the peer that this subflow be a backup (B bit sent).
pub const FLAG_BACKUP_LOCAL: u32 = 1 << 5;

/// What `INET_DIAG_ULP_INFO` says of an MPTCP subflow (the TCP socket's
/// `mptcp_subflow_context`, linux/mptcp.h `MPTCP_SUBFLOW_ATTR_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubflowUlpInfo {
    /// The connection's local token (as in the path manager's events).
    pub token: u32,
    /// The local address id this subflow was opened or accepted with.
    pub local_id: u8,
    /// `MPTCP_SUBFLOW_FLAG_*` bits ([`FLAG_BACKUP_LOCAL`], [`FLAG_JOIN_LOCAL`], ...).
    pub flags: u32,
}

impl SubflowUlpInfo {
    /// Reads the payload of an `INET_DIAG_ULP_INFO` attribute (`nla_type`
    /// [`INET_DIAG_ULP_INFO`]); `None` when it is not MPTCP's or lacks the
    /// token or the flags.
    pub fn parse(ulp_info: &[u8]) -> Option<Self> {
        let mptcp = NlasIterator::new(ulp_info).filter_map(Result::ok).find(|a| a.kind() == INET_ULP_INFO_MPTCP)?;
        let attr = |kind: u16| NlasIterator::new(mptcp.value()).filter_map(Result::ok).find(|a| a.kind() == kind).map(|a| a.value().to_vec());
        let u32_of = |v: Vec<u8>| v.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
        Some(Self {
            token: attr(MPTCP_SUBFLOW_ATTR_TOKEN_LOC).and_then(u32_of)?,
            local_id: attr(MPTCP_SUBFLOW_ATTR_ID_LOC).and_then(|v| v.first().copied()).unwrap_or(0),
            flags: attr(MPTCP_SUBFLOW_ATTR_FLAGS).and_then(u32_of)?,
        })
    }

    /// This host opened the subflow (the connection's initial SYN, or a join).
    pub fn opened_here(&self) -> bool {
        self.flags & (FLAG_MP_CAPABLE_LOCAL | FLAG_JOIN_LOCAL) != 0
    }
}

/// The MPTCP subflow state in a sock_diag answer's attributes (`None` for
/// a TCP socket that is no subflow).
pub fn ulp_info(nlas: &[DiagNla]) -> Option<SubflowUlpInfo> {
    nlas.iter().find_map(|a| match a {
        DiagNla::Other(ulp) if ulp.kind() == INET_DIAG_ULP_INFO => {
            let mut value = vec![0u8; ulp.value_len()];
            ulp.emit_value(&mut value);
            SubflowUlpInfo::parse(&value)
        }
        _ => None,
    })
}

/// A sock_diag socket for exact lookups of TCP sockets.
pub(crate) struct SubflowDiag {
    socket: Socket,
}

impl SubflowDiag {
    /// Opens the sock_diag socket in the calling thread's namespace.
    /// Errors: the netlink socket cannot be opened.
    pub(crate) fn open() -> std::io::Result<Self> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(Self { socket })
    }

    /// The `MPTCP_SUBFLOW_FLAG_*` bits of the TCP socket `local`–`remote`,
    /// bound to the device `interface` holds or to none (the kernel matches
    /// a bound socket only with its device's index); `None` when no such
    /// socket is in this namespace, it carries no MPTCP state, or the
    /// answer cannot be read.
    pub(crate) fn flags(&mut self, local: SocketAddr, remote: SocketAddr, interface: Option<&str>) -> Option<u32> {
        let index = interface.and_then(|name| nix::net::if_::if_nametoindex(name).ok()).filter(|&i| i > 0);
        index.and_then(|i| self.lookup(local, remote, i)).or_else(|| self.lookup(local, remote, 0))
    }

    /// One exact lookup with `idiag_if` = `if_index` (0: not bound).
    fn lookup(&mut self, local: SocketAddr, remote: SocketAddr, if_index: u32) -> Option<u32> {
        let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
        let socket_id = SocketId {
            source_port: local.port(),
            destination_port: remote.port(),
            source_address: local.ip(),
            destination_address: remote.ip(),
            interface_id: if_index,
            // INET_DIAG_NOCOOKIE: match by the 4-tuple alone.
            cookie: [0xff; 8],
        };
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST;
        let request = InetRequest { family, protocol: IPPROTO_TCP, extensions: ExtensionFlags::INFO, states: StateFlags::all(), socket_id };
        let mut msg = NetlinkMessage::new(hdr, SockDiagMessage::InetRequest(request).into());
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket.send(&buf, 0).ok()?;
        let mut rx = vec![0u8; 16 * 1024];
        let n = self.socket.recv(&mut &mut rx[..], 0).ok()?;
        let answer = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[..n]).ok()?;
        let NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) = answer.payload else { return None };
        ulp_info(&r.nlas).map(|u| u.flags)
    }
}

//! The subflows of an MPTCP connection as its application sees them: the
//! "list subflows" and "subflow info" calls of Hesmans and Bonaventure, *An
//! enhanced socket API for Multipath TCP* (2016), on the upstream kernel's
//! `MPTCP_FULL_INFO` (one getsockopt on the application's own socket, no
//! privilege, no daemon round trip).
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use serde::{Deserialize, Serialize};

use crate::{
    error::{ErrorKind, QsockError, Result},
    mptcp_uapi::{FullInfo, MptcpInfo, SubflowInfo, MPTCP_FULL_INFO, MPTCP_INFO, SOL_MPTCP},
    subflow_diag::{SubflowDiag, FLAG_BACKUP_LOCAL, FLAG_BACKUP_REMOTE},
};

/// Most subflows one listing returns (the kernel's limit per connection is 8).
const MAX_LISTED: usize = 64;

/// TCP state of a subflow (`tcpi_state`, `include/net/tcp_states.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TcpState {
    /// Carrying data.
    Established,
    /// Handshake (the `MP_JOIN` of a new subflow) in progress.
    SynSent,
    /// Handshake received, not yet complete.
    SynRecv,
    /// Closing (FIN sent or received, `TIME_WAIT`, `LAST_ACK`, ...).
    Closing,
    /// Closed: `MPTCP_FULL_INFO` keeps listing a closed initial subflow
    /// (its counters frozen) until the connection ends.
    Closed,
}

impl TcpState {
    fn from_kernel(state: u8) -> Self {
        match state {
            1 => Self::Established,
            2 => Self::SynSent,
            3 => Self::SynRecv,
            7 => Self::Closed,
            _ => Self::Closing,
        }
    }
}

/// One subflow of an MPTCP connection, with its `tcp_info` figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subflow {
    /// The kernel's subflow id within the connection: 1 for the initial
    /// subflow, then counting up, never reused while the connection lives.
    pub id: u32,
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
    /// The interface that holds the local address in the calling thread's
    /// network namespace (`None` when none has it: the address was removed,
    /// or the caller is in another namespace than the socket).
    pub interface: Option<String>,
    /// TCP state.
    pub state: TcpState,
    /// Smoothed RTT, µs (`tcpi_rtt`).
    pub rtt_us: u32,
    /// RTT variation, µs (`tcpi_rttvar`).
    pub rtt_var_us: u32,
    /// Congestion window, segments (`tcpi_snd_cwnd`).
    pub cwnd_segments: u32,
    /// Sender MSS, bytes.
    pub mss_bytes: u32,
    /// Latest delivery-rate sample, bit/s (`tcpi_delivery_rate` × 8).
    pub delivery_rate_bps: u64,
    /// Bytes the peer acknowledged on this subflow.
    pub bytes_acked: u64,
    /// Bytes sent on this subflow, retransmissions included.
    pub bytes_sent: u64,
    /// Bytes received on this subflow.
    pub bytes_received: u64,
    /// Segments retransmitted on this subflow since it opened (`tcpi_total_retrans`).
    pub retransmitted_segments: u32,
    /// Consecutive retransmission timeouts of the segment at the head, now
    /// (`tcpi_retransmits`): above 0, the path has stopped answering.
    pub timeouts_in_a_row: u8,
    /// Time since the last ACK arrived on this subflow, ms.
    pub since_last_ack_ms: u32,
    /// This end asked the peer to send on this subflow only when no other
    /// subflow can (backup: the B bit of its `MP_JOIN` or of a later
    /// `MP_PRIO`, RFC 8684 §3.3.8). From sock_diag (`MPTCP_SUBFLOW_FLAG_BKUP_LOC`);
    /// `None` when sock_diag did not find the subflow (the caller is in
    /// another network namespace than the socket).
    pub backup: Option<bool>,
    /// The peer asked this end the same (`MPTCP_SUBFLOW_FLAG_BKUP_REM`);
    /// `None` as for [`Subflow::backup`].
    pub peer_backup: Option<bool>,
}

/// Where a new subflow starts: an interface (its address of the remote's
/// family is the source) or a local address (the interface holding it
/// carries the subflow).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubflowLocal {
    /// An interface by name, e.g. `"wan1"`.
    Interface(String),
    /// A local address.
    Address(IpAddr),
}

/// An MPTCP connection and its subflows, from one consistent read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// The connection's local token (the key of the `mptcp_pm` netlink
    /// events and commands).
    pub token: u32,
    /// Bytes sent at the connection level (retransmissions excluded).
    pub bytes_sent: u64,
    /// Bytes acknowledged at the connection level.
    pub bytes_acked: u64,
    /// Bytes received at the connection level.
    pub bytes_received: u64,
    /// Bytes the connection retransmitted (reinjected on another subflow or resent).
    pub bytes_retransmitted: u64,
    /// The subflows, in the kernel's order (initial first).
    pub subflows: Vec<Subflow>,
}

fn sockopt_err(call: &str, fd: BorrowedFd<'_>, err: nix::Error) -> QsockError {
    match err {
        nix::Error::EOPNOTSUPP => QsockError::new(
            ErrorKind::NotMultipath,
            format!(
                "socket {} is not multipath: an MPTCP socket whose peer has no MPTCP (the connection fell back to TCP), or not yet connected",
                fd.as_raw_fd()
            ),
        ),
        nix::Error::ENOPROTOOPT => QsockError::new(ErrorKind::NotMultipath, format!("socket {} is not an MPTCP socket (IPPROTO_MPTCP)", fd.as_raw_fd())),
        e => QsockError::sys(call, e),
    }
}

/// The connection's token, or [`ErrorKind::NotMultipath`]: a cheap test of
/// "is this socket a live multipath connection".
///
/// Errors: [`ErrorKind::NotMultipath`] (not MPTCP, or fallen back to TCP),
/// [`ErrorKind::BadSocket`], [`ErrorKind::Kernel`].
pub fn mptcp_token(fd: impl AsFd) -> Result<u32> {
    let fd = fd.as_fd();
    let mut info = MptcpInfo::default();
    let mut len = std::mem::size_of::<MptcpInfo>() as libc::socklen_t;
    // SAFETY: info is a plain struct of `len` bytes the kernel writes into.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), SOL_MPTCP, MPTCP_INFO, (&mut info as *mut MptcpInfo).cast(), &mut len) };
    if r < 0 {
        return Err(sockopt_err("getsockopt(MPTCP_INFO)", fd, nix::Error::last()));
    }
    Ok(info.token)
}

fn socket_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)), u16::from_be(sin6.sin6_port)))
        }
        _ => None,
    }
}

/// Every (interface name, IP address) pair of the calling thread's network
/// namespace (`getifaddrs`); empty if it cannot be read.
pub fn interface_addresses() -> Vec<(String, IpAddr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter_map(|ifa| {
            let a = ifa.address?;
            let ip = a.as_sockaddr_in().map(|v| IpAddr::V4(v.ip())).or_else(|| a.as_sockaddr_in6().map(|v| IpAddr::V6(v.ip())))?;
            Some((ifa.interface_name, ip))
        })
        .collect()
}

/// Whether `ip` is link-local (169.254/16, fe80::/10): such an address
/// reaches only its own link, so no path or subflow starts from it.
pub fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The interface holding `addr` in the calling thread's network namespace,
/// if any.
pub fn interface_holding(addr: IpAddr) -> Option<String> {
    interface_addresses().into_iter().find(|(_, ip)| *ip == addr).map(|(name, _)| name)
}

/// Lists the subflows of the MPTCP connection `fd` with each one's
/// addresses, interface, state and `tcp_info` figures (the paper's
/// `MPTCP_GET_SUB_IDS` + `MPTCP_GET_SUB_TUPLE` + per-subflow `TCP_INFO`,
/// read in one consistent step), and each subflow's backup flags from one
/// sock_diag lookup. Needs no privilege and no daemon.
///
/// Errors: [`ErrorKind::NotMultipath`] (not an MPTCP socket, not connected,
/// or fallen back to TCP), [`ErrorKind::BadSocket`], [`ErrorKind::Kernel`]
/// (also when the kernel's structs are smaller than this build reads).
pub fn qsubflows(fd: impl AsFd) -> Result<Connection> {
    let fd = fd.as_fd();
    // SAFETY (both): plain C structs; all-zero is a valid value.
    let mut sf: Vec<SubflowInfo> = vec![unsafe { std::mem::zeroed() }; MAX_LISTED];
    let mut tcp: Vec<libc::tcp_info> = vec![unsafe { std::mem::zeroed() }; MAX_LISTED];
    let mut full = FullInfo {
        size_tcpinfo_user: std::mem::size_of::<libc::tcp_info>() as u32,
        size_sfinfo_user: std::mem::size_of::<SubflowInfo>() as u32,
        size_arrays_user: MAX_LISTED as u32,
        subflow_info: sf.as_mut_ptr() as u64,
        tcp_info: tcp.as_mut_ptr() as u64,
        ..Default::default()
    };
    let mut len = std::mem::size_of::<FullInfo>() as libc::socklen_t;
    // SAFETY: full is `len` bytes; its pointers name the two arrays above,
    // each MAX_LISTED elements of the sizes it declares.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), SOL_MPTCP, MPTCP_FULL_INFO, (&mut full as *mut FullInfo).cast(), &mut len) };
    if r < 0 {
        return Err(sockopt_err("getsockopt(MPTCP_FULL_INFO)", fd, nix::Error::last()));
    }
    // The kernel copies min(ours, its own) of each element.
    if (full.size_sfinfo_user as usize) < std::mem::size_of::<SubflowInfo>() {
        return Err(QsockError::new(
            ErrorKind::Kernel,
            format!("the kernel's mptcp_subflow_info is {} bytes, this build reads {}", full.size_sfinfo_kernel, std::mem::size_of::<SubflowInfo>()),
        ));
    }
    let short_tcp_info = (full.size_tcpinfo_user as usize) < std::mem::offset_of!(libc::tcp_info, tcpi_delivery_rate) + 8;
    if short_tcp_info {
        return Err(QsockError::new(ErrorKind::Kernel, format!("the kernel's tcp_info is {} bytes: too old for subflow figures", full.size_tcpinfo_kernel)));
    }
    let n = (full.num_subflows as usize).min(MAX_LISTED);
    let mut diag = SubflowDiag::open().ok();
    let subflows = sf[..n]
        .iter()
        .zip(&tcp[..n])
        .filter_map(|(s, t)| {
            let (local, remote) = (socket_addr(&s.addrs.local)?, socket_addr(&s.addrs.remote)?);
            let interface = interface_holding(local.ip());
            let flags = diag.as_mut().and_then(|d| d.flags(local, remote, interface.as_deref()));
            Some(Subflow {
                id: s.id,
                local,
                remote,
                interface,
                state: TcpState::from_kernel(t.tcpi_state),
                rtt_us: t.tcpi_rtt,
                rtt_var_us: t.tcpi_rttvar,
                cwnd_segments: t.tcpi_snd_cwnd,
                mss_bytes: t.tcpi_snd_mss,
                delivery_rate_bps: t.tcpi_delivery_rate.saturating_mul(8),
                bytes_acked: t.tcpi_bytes_acked,
                bytes_sent: t.tcpi_bytes_sent,
                bytes_received: t.tcpi_bytes_received,
                retransmitted_segments: t.tcpi_total_retrans,
                timeouts_in_a_row: t.tcpi_retransmits,
                since_last_ack_ms: t.tcpi_last_ack_recv,
                backup: flags.map(|f| f & FLAG_BACKUP_LOCAL != 0),
                peer_backup: flags.map(|f| f & FLAG_BACKUP_REMOTE != 0),
            })
        })
        .collect();
    let m = full.mptcp_info;
    Ok(Connection {
        token: m.token,
        bytes_sent: m.bytes_sent,
        bytes_acked: m.bytes_acked,
        bytes_received: m.bytes_received,
        bytes_retransmitted: m.bytes_retrans,
        subflows,
    })
}

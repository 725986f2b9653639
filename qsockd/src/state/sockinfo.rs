//! Facts qsockd reads from a socket a client handed over: its cookie (the
//! data path's key, never taken from the client's word), its type, and the
//! stack facts `qinfo` reports; and binding one to the source address of
//! the interface chosen for it.
use std::{
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, BorrowedFd},
};

use nix::sys::socket::{bind, getpeername, getsockname, SockaddrStorage};

use qsock::{ErrorKind, QsockError, StackInfo, TcpInfo};

/// Facts read from a socket a client handed over.
pub struct SocketFacts {
    /// `SO_COOKIE`.
    pub cookie: u64,
    /// `SO_DOMAIN`: `AF_INET` or `AF_INET6`.
    pub domain: i32,
    /// `SO_TYPE`.
    pub sock_type: i32,
    /// `SO_PROTOCOL` (`IPPROTO_TCP`, `IPPROTO_UDP`, [`IPPROTO_MPTCP`], ...).
    pub protocol: i32,
}

pub use qsock::IPPROTO_MPTCP;

impl SocketFacts {
    /// Whether qsockd can manage the socket. Errors: [`ErrorKind::Unsupported`]
    /// for an MPTCP socket: the data path sees the cookies of its subflows,
    /// never the socket's own, so a class for it would never see a packet
    /// (and the release sweep, which lists TCP sockets, would drop it).
    pub fn check_manageable(&self) -> Result<(), QsockError> {
        if self.protocol == IPPROTO_MPTCP {
            return Err(QsockError::new(
                ErrorKind::Unsupported,
                "MPTCP sockets (IPPROTO_MPTCP) are managed through their subflows, which needs qsockd as the path manager ([multipath] enabled = true in its config); this qsockd runs without it",
            ));
        }
        Ok(())
    }
}

/// `getsockopt` of a plain value; `None` on error.
fn getsockopt<T: Default>(fd: BorrowedFd<'_>, level: i32, name: i32) -> Option<T> {
    let mut v = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is a valid buffer of `len` bytes; the fd is borrowed for the call.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, &mut v as *mut T as *mut libc::c_void, &mut len) };
    (r == 0).then_some(v)
}

/// Cookie and type of a handed-over descriptor. Errors:
/// [`ErrorKind::BadSocket`] if it is not an IPv4/IPv6 socket.
pub fn facts(fd: BorrowedFd<'_>) -> Result<SocketFacts, QsockError> {
    let domain: i32 =
        getsockopt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).ok_or_else(|| QsockError::new(ErrorKind::BadSocket, "the descriptor handed over is not a socket"))?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(QsockError::new(ErrorKind::BadSocket, format!("only IPv4/IPv6 sockets leave through a device (domain {domain})")));
    }
    let sock_type: i32 = getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE).unwrap_or(0);
    let protocol: i32 = getsockopt(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).unwrap_or(0);
    let cookie: u64 =
        getsockopt(fd, libc::SOL_SOCKET, libc::SO_COOKIE).ok_or_else(|| QsockError::new(ErrorKind::Unsupported, "kernel does not report SO_COOKIE"))?;
    Ok(SocketFacts { cookie, domain, sock_type, protocol })
}

/// Buffer sizes, unsent bytes and, for TCP, `TCP_INFO`.
pub fn stack_info(fd: BorrowedFd<'_>) -> StackInfo {
    let socket_type: i32 = getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE).unwrap_or(0);
    let mut outq: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int.
    let outq_ok = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut outq) } == 0;
    let tcp = if socket_type == libc::SOCK_STREAM { getsockopt::<TcpInfoRaw>(fd, libc::IPPROTO_TCP, libc::TCP_INFO).map(|t| t.summary()) } else { None };
    StackInfo {
        socket_type,
        sndbuf_bytes: getsockopt::<i32>(fd, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap_or(0) as u64,
        rcvbuf_bytes: getsockopt::<i32>(fd, libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap_or(0) as u64,
        outq_bytes: if outq_ok { outq.max(0) as u64 } else { 0 },
        tcp,
    }
}

/// Prefix of `struct tcp_info` (linux/tcp.h) up to `tcpi_delivery_rate`.
#[repr(C)]
#[derive(Default)]
struct TcpInfoRaw {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    flags: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last_data_sent: u32,
    last_ack_sent: u32,
    last_data_recv: u32,
    last_ack_recv: u32,
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    notsent_bytes: u32,
    min_rtt: u32,
    data_segs_in: u32,
    data_segs_out: u32,
    delivery_rate: u64,
}

impl TcpInfoRaw {
    fn summary(&self) -> TcpInfo {
        TcpInfo {
            rtt_us: self.rtt,
            rttvar_us: self.rttvar,
            snd_cwnd: self.snd_cwnd,
            snd_mss: self.snd_mss,
            total_retrans: self.total_retrans,
            pacing_rate_bytes_per_s: self.pacing_rate,
            delivery_rate_bytes_per_s: self.delivery_rate,
        }
    }
}

/// Whether the socket has a local port (bound or connected): such a socket
/// is in the kernel's tables, where a sock_diag dump finds it.
pub fn is_bound(fd: BorrowedFd<'_>) -> bool {
    use nix::sys::socket::{getsockname, SockaddrStorage};
    getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .is_ok_and(|a| a.as_sockaddr_in().map(|v| v.port()).or_else(|| a.as_sockaddr_in6().map(|v| v.port())).unwrap_or(0) != 0)
}

/// Fails with [`ErrorKind::SocketInUse`] unless the socket is neither
/// connected nor bound: only such a socket can still be placed.
pub fn check_unplaced(sock: BorrowedFd<'_>) -> Result<(), QsockError> {
    if getpeername::<SockaddrStorage>(sock.as_raw_fd()).is_ok() {
        return Err(QsockError::new(
            ErrorKind::SocketInUse,
            "the socket is already connected; qsock does not move a connected socket (attach before connect, or use qconnect)",
        ));
    }
    if let Ok(local) = getsockname::<SockaddrStorage>(sock.as_raw_fd()) {
        let bound = match (local.as_sockaddr_in(), local.as_sockaddr_in6()) {
            (Some(a), _) => a.port() != 0 || !a.ip().is_unspecified(),
            (_, Some(a)) => a.port() != 0 || !a.ip().is_unspecified(),
            _ => false,
        };
        if bound {
            return Err(QsockError::new(ErrorKind::SocketInUse, format!("the socket is already bound to {local}; give a device, or attach before bind")));
        }
    }
    Ok(())
}

/// Binds `sock` to `source` with a port the kernel picks.
pub fn bind_source(sock: BorrowedFd<'_>, source: IpAddr) -> Result<(), QsockError> {
    let addr = SockaddrStorage::from(SocketAddr::new(source, 0));
    bind(sock.as_raw_fd(), &addr).map_err(|e| QsockError::new(ErrorKind::Kernel, format!("bind to {source}: {e}")))
}

//! sock_diag dumps of the namespace's IPv4/IPv6 sockets: the RTT of
//! established TCP connections (`tcp_info.tcpi_rtt`, as Socket Intents' MAM
//! measures it) and the cookies of sockets some process still holds (for
//! releasing sockets closed without `qclose`).
use std::{collections::HashSet, net::IpAddr};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    inet::{nlas::Nla, ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

/// Offset of `tcpi_rtt` in `struct tcp_info` (linux/tcp.h), bytes.
const TCPI_RTT_OFFSET: usize = 68;

/// Every socket of `protocol` in `states` (a `1 << TCP_*` mask), IPv4 and IPv6.
fn dump(protocol: u8, states: StateFlags, extensions: ExtensionFlags) -> std::io::Result<Vec<InetResponse>> {
    dump_request(protocol, None, states, extensions)
}

/// [`dump`] for a protocol number beyond u8 (MPTCP), given as the
/// `INET_DIAG_REQ_PROTOCOL` attribute.
fn dump_with_protocol(protocol: u32, states: StateFlags, extensions: ExtensionFlags) -> std::io::Result<Vec<InetResponse>> {
    dump_request(IPPROTO_TCP, Some(protocol), states, extensions)
}

fn dump_request(protocol: u8, protocol_attr: Option<u32>, states: StateFlags, extensions: ExtensionFlags) -> std::io::Result<Vec<InetResponse>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut out = Vec::new();
    for (family, id) in [(AF_INET, SocketId::new_v4()), (AF_INET6, SocketId::new_v6())] {
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut req = NetlinkMessage::new(
            hdr,
            SockDiagMessage::InetRequest(InetRequest { family, protocol, extensions: extensions.clone(), states: states.clone(), socket_id: id }).into(),
        );
        req.finalize();
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        if let Some(p) = protocol_attr {
            // struct nlattr { u16 len; u16 type; } + u32, then the header's length.
            buf.extend_from_slice(&8u16.to_ne_bytes());
            buf.extend_from_slice(&INET_DIAG_REQ_PROTOCOL.to_ne_bytes());
            buf.extend_from_slice(&p.to_ne_bytes());
            let len = buf.len() as u32;
            buf[..4].copy_from_slice(&len.to_ne_bytes());
        }
        socket.send(&buf, 0)?;
        let mut rx = vec![0u8; 64 * 1024];
        'dump: loop {
            let n = socket.recv(&mut &mut rx[..], 0)?;
            let mut off = 0;
            while off < n {
                let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[off..n]).map_err(|e| std::io::Error::other(format!("sock_diag: {e}")))?;
                let len = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => out.push(*r),
                    NetlinkPayload::Done(_) => break 'dump,
                    NetlinkPayload::Error(e) => return Err(std::io::Error::other(format!("sock_diag: {e:?}"))),
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }
    Ok(out)
}

/// Runs the blocking sock_diag call `f` on tokio's blocking pool, so the
/// caller's task (and any lock it holds) is not held up by the dump; a
/// failure is logged at `level` as `what` and gives `None` (the callers
/// try again at their next tick, or go without).
pub async fn off_thread<T: Send + 'static>(what: &str, level: log::Level, f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            log::log!(level, "{what}: {e}");
            None
        }
        Err(e) => {
            log::error!("{what}: {e}");
            None
        }
    }
}

/// The cookie of the TCP socket `local`–`remote` ([`tcp_cookies`] of one
/// pair, off the caller's task); `None` when it is not listed or the dump failed (logged).
pub async fn tcp_cookie(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Option<u64> {
    off_thread("sock_diag", log::Level::Warn, move || tcp_cookies(&[(local, remote)])).await.and_then(|m| m.get(&(local, remote)).copied())
}

/// (source address, smoothed RTT µs) of every established TCP connection
/// in the current network namespace. Errors: the sock_diag socket or dump failed.
pub fn tcp_rtts() -> std::io::Result<Vec<(IpAddr, u32)>> {
    Ok(dump(IPPROTO_TCP, StateFlags::ESTABLISHED, ExtensionFlags::INFO)?
        .into_iter()
        .filter_map(|r| {
            let rtt = r.nlas.iter().find_map(|n| match n {
                Nla::TcpInfo(b) if b.len() >= TCPI_RTT_OFFSET + 4 => {
                    Some(u32::from_ne_bytes(b[TCPI_RTT_OFFSET..TCPI_RTT_OFFSET + 4].try_into().expect("4 bytes")))
                }
                _ => None,
            })?;
            Some((r.header.socket_id.source_address, rtt))
        })
        .collect())
}

/// The socket cookie of a sock_diag answer (`idiag_cookie`: two u32, low first).
fn cookie_of(id: &SocketId) -> u64 {
    let c = id.cookie;
    u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) as u64 | (u32::from_ne_bytes([c[4], c[5], c[6], c[7]]) as u64) << 32
}

/// Cookies of the namespace's TCP and UDP sockets that a process still
/// holds: in any state, with an inode (a socket whose last descriptor was
/// closed is orphaned, inode 0, while TCP finishes with it). Sockets in no
/// hash table (never bound or connected) are not listed.
/// Errors: the sock_diag socket or dump failed.
pub fn held_cookies() -> std::io::Result<HashSet<u64>> {
    let all = StateFlags::from_bits_retain(u32::MAX);
    let mut held = HashSet::new();
    for proto in [IPPROTO_TCP, IPPROTO_UDP] {
        for r in dump(proto, all.clone(), ExtensionFlags::empty())? {
            if r.header.inode != 0 {
                held.insert(cookie_of(&r.header.socket_id));
            }
        }
    }
    Ok(held)
}

/// The cookies of the TCP sockets with these (local, remote) ends, e.g.
/// the subflows of an MPTCP connection (kernel sockets the data path sees,
/// which no descriptor names). One dump of the namespace's TCP sockets;
/// ends not found are missing from the answer.
/// Errors: the sock_diag socket or dump failed.
pub fn tcp_cookies(
    ends: &[(std::net::SocketAddr, std::net::SocketAddr)],
) -> std::io::Result<std::collections::HashMap<(std::net::SocketAddr, std::net::SocketAddr), u64>> {
    let all = StateFlags::from_bits_retain(u32::MAX);
    let wanted: HashSet<_> = ends.iter().copied().collect();
    let mut out = std::collections::HashMap::new();
    for r in dump(IPPROTO_TCP, all, ExtensionFlags::empty())? {
        let id = &r.header.socket_id;
        let key = (std::net::SocketAddr::new(id.source_address, id.source_port), std::net::SocketAddr::new(id.destination_address, id.destination_port));
        if wanted.contains(&key) {
            out.insert(key, cookie_of(id));
        }
    }
    Ok(out)
}

/// A TCP socket's (local, remote) ends.
pub type Ends = (std::net::SocketAddr, std::net::SocketAddr);

/// `tcp_info` of each established TCP socket with these (local, remote)
/// ends (e.g. the subflows of the connections qsockd watches), with its
/// MPTCP subflow flags when it is a subflow (`INET_DIAG_ULP_INFO`,
/// `MPTCP_SUBFLOW_FLAG_*`), from one dump of the namespace's established
/// TCP sockets. A kernel with a shorter `tcp_info` leaves the tail zero.
/// Errors: the sock_diag socket or dump failed.
pub fn tcp_infos(ends: &HashSet<Ends>) -> std::io::Result<std::collections::HashMap<Ends, (libc::tcp_info, Option<u32>)>> {
    let mut out = std::collections::HashMap::new();
    for r in dump(IPPROTO_TCP, StateFlags::ESTABLISHED, ExtensionFlags::INFO)? {
        let id = &r.header.socket_id;
        let key = (std::net::SocketAddr::new(id.source_address, id.source_port), std::net::SocketAddr::new(id.destination_address, id.destination_port));
        if !ends.contains(&key) {
            continue;
        }
        if let Some(info) = r.nlas.iter().find_map(|n| match n {
            Nla::TcpInfo(b) => Some(plain_struct::<libc::tcp_info>(b)),
            _ => None,
        }) {
            out.insert(key, (info, qsock::subflow_diag::ulp_info(&r.nlas).map(|u| u.flags)));
        }
    }
    Ok(out)
}

/// A C struct of plain integers read from the kernel's bytes: a shorter
/// copy leaves the tail zero, a longer one is cut.
fn plain_struct<T: Copy>(bytes: &[u8]) -> T {
    // SAFETY: T is a C struct of integers (tcp_info, MPTCP's counters), for
    // which every bit pattern is valid; at most size_of::<T>() bytes are copied.
    unsafe {
        let mut v: T = std::mem::zeroed();
        let n = bytes.len().min(std::mem::size_of::<T>());
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), &mut v as *mut T as *mut u8, n);
        v
    }
}

/// `INET_DIAG_REQ_PROTOCOL` (linux/inet_diag.h): a request attribute with
/// the protocol as u32, for protocols beyond the request's u8 (MPTCP, 262).
const INET_DIAG_REQ_PROTOCOL: u16 = 3;
/// `IPPROTO_MPTCP`.
const IPPROTO_MPTCP: u32 = 262;

/// Connection-level sequence state of an MPTCP socket (`struct
/// mptcp_info`, linux/mptcp.h), what the blackhole watch needs of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MptcpProgress {
    /// The MPTCP socket's cookie (the application's socket, `SO_COOKIE`).
    pub cookie: u64,
    /// Next data sequence number the application will write (`write_seq`).
    pub write_seq: u64,
    /// Oldest data sequence number the peer has not acknowledged (`snd_una`).
    pub snd_una: u64,
    /// Next data sequence number expected in order from the peer (`rcv_nxt`).
    pub rcv_nxt: u64,
    /// Memory of its receive queue, bytes (`sk_rmem_alloc`: data in order
    /// not yet read by the application).
    pub rqueue: u32,
    /// Its receive buffer, bytes (`sk_rcvbuf`).
    pub rcvbuf: u32,
}

/// `struct mptcp_info` up to `rcv_nxt` (kernel 5.9+ layout).
#[repr(C)]
#[derive(Clone, Copy)]
struct MptcpInfoHead {
    counts: [u8; 6],
    flags: u32,
    token: u32,
    write_seq: u64,
    snd_una: u64,
    rcv_nxt: u64,
}

/// The cookie and sequence state of every MPTCP socket of the namespace, by
/// connection token: one mptcp_diag dump (IPv4 and IPv6). Listeners and
/// sockets without a token are left out.
/// Errors: the sock_diag socket or dump failed (a kernel without mptcp_diag
/// answers ENOENT).
pub fn mptcp_progress() -> std::io::Result<std::collections::HashMap<u32, MptcpProgress>> {
    let mut out = std::collections::HashMap::new();
    for r in dump_with_protocol(IPPROTO_MPTCP, StateFlags::ESTABLISHED, ExtensionFlags::INFO | ExtensionFlags::SKMEMINFO)? {
        let (rqueue, rcvbuf) = r
            .nlas
            .iter()
            .find_map(|n| match n {
                Nla::MemInfo(m) => Some((m.receive_queue, m.receive_queue_max)),
                _ => None,
            })
            .unwrap_or((r.header.recv_queue, 0));
        let Some(head) = r.nlas.iter().find_map(|n| match n {
            Nla::TcpInfo(b) if b.len() >= std::mem::size_of::<MptcpInfoHead>() => Some(plain_struct::<MptcpInfoHead>(b)),
            _ => None,
        }) else {
            continue;
        };
        if head.token != 0 {
            out.insert(
                head.token,
                MptcpProgress {
                    cookie: cookie_of(&r.header.socket_id),
                    write_seq: head.write_seq,
                    snd_una: head.snd_una,
                    rcv_nxt: head.rcv_nxt,
                    rqueue,
                    rcvbuf,
                },
            );
        }
    }
    Ok(out)
}

/// `MPTCP_INFO_FLAG_FALLBACK` (linux/mptcp.h): the connection is plain TCP.
const MPTCP_INFO_FLAG_FALLBACK: u32 = 1;

/// The established MPTCP sockets of the namespace that fell back to TCP
/// (the peer has no MPTCP), by cookie, with their (local, remote) ends,
/// which are their one TCP subflow's: one mptcp_diag dump.
/// Errors: the sock_diag socket or dump failed.
pub fn mptcp_fallbacks() -> std::io::Result<std::collections::HashMap<u64, (std::net::SocketAddr, std::net::SocketAddr)>> {
    let mut out = std::collections::HashMap::new();
    for r in dump_with_protocol(IPPROTO_MPTCP, StateFlags::ESTABLISHED, ExtensionFlags::INFO)? {
        let fell_back = r.nlas.iter().any(|n| match n {
            Nla::TcpInfo(b) if b.len() >= std::mem::size_of::<MptcpInfoHead>() => plain_struct::<MptcpInfoHead>(b).flags & MPTCP_INFO_FLAG_FALLBACK != 0,
            _ => false,
        });
        if fell_back {
            let id = &r.header.socket_id;
            out.insert(
                cookie_of(id),
                (std::net::SocketAddr::new(id.source_address, id.source_port), std::net::SocketAddr::new(id.destination_address, id.destination_port)),
            );
        }
    }
    Ok(out)
}

/// Every established MPTCP subflow of the namespace: (local end, remote
/// end, its `INET_DIAG_ULP_INFO`: connection token, local address id,
/// flags), from one dump of the established TCP sockets. A restarted qsockd
/// learns from it the connections it was path manager of.
/// Errors: the sock_diag socket or dump failed.
pub fn mptcp_subflows() -> std::io::Result<Vec<(std::net::SocketAddr, std::net::SocketAddr, qsock::subflow_diag::SubflowUlpInfo)>> {
    Ok(dump(IPPROTO_TCP, StateFlags::ESTABLISHED, ExtensionFlags::INFO)?
        .into_iter()
        .filter_map(|r| {
            let id = &r.header.socket_id;
            let ends = (std::net::SocketAddr::new(id.source_address, id.source_port), std::net::SocketAddr::new(id.destination_address, id.destination_port));
            qsock::subflow_diag::ulp_info(&r.nlas).map(|u| (ends.0, ends.1, u))
        })
        .collect())
}

/// Local ends of the TCP sockets connecting (`SYN_SENT`) from `ip` to
/// `remote`: e.g. a subflow join that has not completed.
/// Errors: the sock_diag socket or dump failed.
pub fn tcp_connecting_from(ip: IpAddr, remote: std::net::SocketAddr) -> std::io::Result<Vec<std::net::SocketAddr>> {
    Ok(dump(IPPROTO_TCP, StateFlags::SYN_SENT, ExtensionFlags::empty())?
        .into_iter()
        .map(|r| r.header.socket_id)
        .filter(|id| id.source_address == ip && std::net::SocketAddr::new(id.destination_address, id.destination_port) == remote)
        .map(|id| std::net::SocketAddr::new(id.source_address, id.source_port))
        .collect())
}

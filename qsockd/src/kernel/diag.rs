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

//! RTT of the namespace's established TCP connections, from a sock_diag
//! dump (`tcp_info.tcpi_rtt`, the kernel's smoothed RTT), as Socket
//! Intents' MAM measures it.
use std::net::IpAddr;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{nlas::Nla, ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

/// Offset of `tcpi_rtt` in `struct tcp_info` (linux/tcp.h), bytes.
const TCPI_RTT_OFFSET: usize = 68;

/// (source address, smoothed RTT µs) of every established TCP connection
/// in the current network namespace. Errors: the sock_diag socket or dump failed.
pub fn tcp_rtts() -> std::io::Result<Vec<(IpAddr, u32)>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut out = Vec::new();
    for (family, id) in [(AF_INET, SocketId::new_v4()), (AF_INET6, SocketId::new_v6())] {
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut req = NetlinkMessage::new(
            hdr,
            SockDiagMessage::InetRequest(InetRequest { family, protocol: IPPROTO_TCP, extensions: ExtensionFlags::INFO, states: StateFlags::ESTABLISHED, socket_id: id })
                .into(),
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
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        let rtt = r.nlas.iter().find_map(|n| match n {
                            Nla::TcpInfo(b) if b.len() >= TCPI_RTT_OFFSET + 4 => {
                                Some(u32::from_ne_bytes(b[TCPI_RTT_OFFSET..TCPI_RTT_OFFSET + 4].try_into().expect("4 bytes")))
                            }
                            _ => None,
                        });
                        if let Some(rtt) = rtt {
                            out.push((r.header.socket_id.source_address, rtt));
                        }
                    }
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

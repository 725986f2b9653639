//! Receiver of the DWCS window test: records every datagram of every stream
//! with its kernel receive time (`SO_TIMESTAMPNS`, so a busy receiver does
//! not make datagrams look late) until every stream's end marker arrived or
//! `--timeout-s` passed; writes the arrivals and the datagrams its full
//! receive buffer dropped (`SO_RXQ_OVFL`) as JSON ([`Reception`]). Its buffer
//! is `--rcvbuf-bytes` (set with `SO_RCVBUFFORCE` where allowed), so a
//! receiver thread that waits for a CPU does not lose what arrived meanwhile.
//! Prints "ready" once bound.
use std::{
    collections::HashSet,
    io::{IoSliceMut, Write},
    net::UdpSocket,
    os::fd::AsRawFd,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Parser;
use nix::{
    sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags},
    time::{clock_gettime, ClockId},
};
use video_server::streams::{decode, Arrival, Reception, END_SEQ};

#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    bind: std::net::SocketAddr,
    /// Number of streams (end markers to wait for).
    #[arg(long)]
    streams: usize,
    /// Where to write the arrivals (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Give up waiting for the end markers after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Receive buffer, bytes (the kernel doubles it for its bookkeeping).
    /// The default holds several seconds of the window test's streams.
    #[arg(long, default_value_t = 8 << 20)]
    rcvbuf_bytes: usize,
}

fn ns(ts: nix::sys::time::TimeSpec) -> i128 {
    ts.tv_sec() as i128 * 1_000_000_000 + ts.tv_nsec() as i128
}

fn main() -> Result<()> {
    let a = Args::parse();
    let sock = UdpSocket::bind(a.bind)?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    setsockopt(&sock, sockopt::ReceiveTimestampns, &true)?;
    setsockopt(&sock, sockopt::RxqOvfl, &1)?;
    // Beyond net.core.rmem_max only with CAP_NET_ADMIN; without it the
    // kernel caps the buffer, and the overflow count still tells.
    if setsockopt(&sock, sockopt::RcvBufForce, &a.rcvbuf_bytes).is_err() {
        setsockopt(&sock, sockopt::RcvBuf, &a.rcvbuf_bytes)?;
    }
    // SO_TIMESTAMPNS is CLOCK_REALTIME; deadlines are CLOCK_MONOTONIC.
    let offset = ns(clock_gettime(ClockId::CLOCK_REALTIME)?) - ns(clock_gettime(ClockId::CLOCK_MONOTONIC)?);
    println!("ready");
    std::io::stdout().flush()?;
    let give_up = Instant::now() + Duration::from_secs(a.timeout_s);
    let (mut arrivals, mut ended) = (Vec::new(), HashSet::new());
    let mut buf = [0u8; 65536];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec, u32);
    let mut overflow = 0u32;
    while ended.len() < a.streams {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty()) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {
                if Instant::now() > give_up {
                    eprintln!("stream-receiver: {} of {} end markers within {} s", ended.len(), a.streams, a.timeout_s);
                    break;
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut stamp = None;
        for c in msg.cmsgs()? {
            match c {
                ControlMessageOwned::ScmTimestampns(ts) => stamp = Some(ns(ts) - offset),
                // The socket's drop count so far, carried on each datagram.
                ControlMessageOwned::RxqOvfl(n) => overflow = overflow.max(n),
                _ => {}
            }
        }
        let n = msg.bytes;
        let arrival_ns = stamp.map(|t| t as u64).unwrap_or_else(qsock::monotonic_now_ns);
        let Some((stream, seq, deadline_ns)) = decode(&buf[..n]) else { continue };
        if seq == END_SEQ {
            ended.insert(stream);
            continue;
        }
        arrivals.push(Arrival { stream, seq, deadline_ns, arrival_ns });
    }
    if overflow > 0 {
        eprintln!("stream-receiver: the receive buffer overflowed; {overflow} datagrams dropped by the receiver's kernel");
    }
    std::fs::write(&a.out, serde_json::to_vec(&Reception { arrivals, receive_buffer_drops: overflow as u64 })?)?;
    Ok(())
}

//! `qsend`/`qsendto`: one `sendmsg()` carrying data and the per-message tag
//! as `SCM_TXTIME` ancillary data.
use std::{
    io::IoSlice,
    net::SocketAddr,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use nix::sys::socket::{getsockopt, sendmsg, setsockopt, sockopt, ControlMessage, MsgFlags, SockaddrStorage};

use crate::{
    error::{ErrorKind, QsockError, Result},
    flags::PacketFlags,
};

/// Now on `CLOCK_MONOTONIC`, ns: the clock deadlines are given in.
pub fn monotonic_now_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

pub(crate) fn socket_type(fd: BorrowedFd<'_>) -> Result<i32> {
    match getsockopt(&fd, sockopt::SockType) {
        Ok(t) => Ok(t as i32),
        Err(nix::Error::ENOTSOCK) => Err(QsockError::new(ErrorKind::BadSocket, format!("descriptor {} is not a socket", fd.as_raw_fd()))),
        Err(nix::Error::EBADF) => Err(QsockError::new(ErrorKind::BadSocket, format!("descriptor {} is closed", fd.as_raw_fd()))),
        Err(e) => Err(QsockError::sys("getsockopt(SO_TYPE)", e)),
    }
}

pub(crate) fn enable_txtime(fd: BorrowedFd<'_>) -> Result<()> {
    let cfg = libc::sock_txtime { clockid: libc::CLOCK_MONOTONIC, flags: libc::SOF_TXTIME_DEADLINE_MODE };
    setsockopt(&fd, sockopt::TxTime, &cfg).map_err(|e| QsockError::sys("setsockopt(SO_TXTIME)", e))
}

fn check_flags(flags: &PacketFlags) -> Result<u64> {
    if let Some(d) = flags.deadline_ns {
        let now = monotonic_now_ns();
        if d <= now {
            return Err(QsockError::new(ErrorKind::DeadlineInPast, format!("deadline {d} ns is {} ns in the past (CLOCK_MONOTONIC)", now - d)));
        }
    }
    Ok(flags.tag())
}

fn send_tagged(fd: BorrowedFd<'_>, buf: &[u8], addr: Option<&SockaddrStorage>, flags: &PacketFlags) -> Result<usize> {
    let tag = check_flags(flags)?;
    let iov = [IoSlice::new(buf)];
    let cmsg = [ControlMessage::TxTime(&tag)];
    sendmsg(fd.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, addr).map_err(|e| match e {
        nix::Error::EINVAL => QsockError::new(
            ErrorKind::InvalidParams,
            "per-message flags need a datagram socket attached with qattach/qsocket (SO_TXTIME is not enabled)",
        ),
        e => QsockError::sys("sendmsg", e),
    })
}

/// Sends `buf` on a connected socket with per-message `flags` (Q.Sockets
/// `qsend`). Returns the bytes sent. One `sendmsg()`; the flags travel as
/// `SCM_TXTIME` and reach the egress classifier in `skb->tstamp`.
///
/// Errors: [`ErrorKind::DeadlineInPast`], [`ErrorKind::InvalidParams`]
/// (socket not attached, or not a datagram socket), [`ErrorKind::BadSocket`],
/// [`ErrorKind::Kernel`] (other `sendmsg` errors, e.g. `EAGAIN` on a
/// non-blocking socket, in the message).
pub fn qsend(fd: impl AsFd, buf: &[u8], flags: &PacketFlags) -> Result<usize> {
    send_tagged(fd.as_fd(), buf, None, flags)
}

/// Sends `buf` to `addr` with per-message `flags` (Q.Sockets `qsendto`).
/// Returns the bytes sent. Errors: as [`qsend`].
pub fn qsendto(fd: impl AsFd, buf: &[u8], addr: &SocketAddr, flags: &PacketFlags) -> Result<usize> {
    let sa = SockaddrStorage::from(*addr);
    send_tagged(fd.as_fd(), buf, Some(&sa), flags)
}

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
    params::MAX_INTERVAL_NS,
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

/// Checks what no kernel needs to see: a deadline must be a
/// `CLOCK_MONOTONIC` time within [`MAX_INTERVAL_NS`] of now (a past one is
/// fine: the data path treats it as a miss), and a frame size belongs on a
/// frame's first message.
fn check_flags(flags: &PacketFlags) -> Result<u64> {
    let now = monotonic_now_ns();
    if let Some(d) = flags.deadline_ns {
        if d.abs_diff(now) > MAX_INTERVAL_NS {
            return Err(QsockError::new(
                ErrorKind::InvalidParams,
                format!("deadline {d} ns is more than 1 h from now ({now} ns): not a CLOCK_MONOTONIC time (use qsock::monotonic_now_ns)"),
            ));
        }
    }
    if flags.frame_bytes.is_some() && !flags.frame_start {
        return Err(QsockError::new(ErrorKind::InvalidParams, "frame_bytes belongs on the frame's first message (frame_start)"));
    }
    Ok(flags.tag_at(now))
}

fn send_tagged(fd: BorrowedFd<'_>, buf: &[u8], addr: Option<&SockaddrStorage>, flags: &PacketFlags) -> Result<usize> {
    let tag = check_flags(flags)?;
    let iov = [IoSlice::new(buf)];
    let cmsg = [ControlMessage::TxTime(&tag)];
    sendmsg(fd.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, addr).map_err(|e| match e {
        nix::Error::EINVAL => {
            QsockError::new(ErrorKind::InvalidParams, "per-message flags need a datagram socket attached with qattach/qsocket (SO_TXTIME is not enabled)")
        }
        e => QsockError::sys("sendmsg", e),
    })
}

/// Sends `buf` on a connected socket with per-message `flags` (Q.Sockets
/// `qsend`). Returns the bytes sent. One `sendmsg()`; the flags travel as
/// `SCM_TXTIME` and reach the egress classifier in `skb->tstamp`.
///
/// A deadline already past is not an error (the data path drops or sends
/// the message late, by its policy, and `qinfo` counts it).
///
/// Errors: [`ErrorKind::InvalidParams`] (socket not attached, not a
/// datagram socket, a deadline that is no `CLOCK_MONOTONIC` time, a frame
/// size off a frame's first message), [`ErrorKind::BadSocket`],
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

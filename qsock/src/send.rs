//! `qsend`/`qsendto`: one `sendmsg()` carrying data and the per-message tag
//! as `SCM_TXTIME` ancillary data.
use std::{
    net::SocketAddr,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use nix::sys::socket::{getsockopt, setsockopt, sockopt, SockaddrLike, SockaddrStorage};

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
/// frame's first message. Returns the tag. The clock is read only when the
/// flags need it (a deadline, or a frame size judged against one).
fn check_flags(flags: &PacketFlags) -> Result<u64> {
    if flags.frame_bytes.is_some() && !flags.frame_start {
        return Err(QsockError::new(ErrorKind::InvalidParams, "frame_bytes belongs on the frame's first message (frame_start)"));
    }
    let Some(d) = flags.deadline_ns else {
        // Without a deadline the tag does not depend on the time.
        return Ok(flags.tag_at(0));
    };
    let now = monotonic_now_ns();
    if d.abs_diff(now) > MAX_INTERVAL_NS {
        return Err(QsockError::new(
            ErrorKind::InvalidParams,
            format!("deadline {d} ns is more than 1 h from now ({now} ns): not a CLOCK_MONOTONIC time (use qsock::monotonic_now_ns)"),
        ));
    }
    Ok(flags.tag_at(now))
}

/// One `SCM_TXTIME` control message laid out as `CMSG_SPACE(8)` bytes: the
/// header, then the 64-bit tag at `CMSG_DATA` (checked against libc's macros
/// in the tests). Built on the stack: a send allocates nothing.
#[repr(C)]
struct TxTimeControl {
    header: libc::cmsghdr,
    tag: u64,
}

fn send_tagged(fd: BorrowedFd<'_>, buf: &[u8], addr: Option<&SockaddrStorage>, flags: &PacketFlags) -> Result<usize> {
    let tag = check_flags(flags)?;
    // SAFETY: cmsghdr and msghdr are plain C structs; all-zero is a valid value.
    let mut control: TxTimeControl = unsafe { std::mem::zeroed() };
    control.header.cmsg_len = std::mem::size_of::<TxTimeControl>() as _;
    control.header.cmsg_level = libc::SOL_SOCKET;
    control.header.cmsg_type = libc::SCM_TXTIME;
    control.tag = tag;
    let mut iov = libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some(a) = addr {
        msg.msg_name = a.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = a.len();
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&mut control as *mut TxTimeControl).cast();
    msg.msg_controllen = std::mem::size_of::<TxTimeControl>() as _;
    // SAFETY: msg points at iov, control and the address, which outlive the
    // call; the kernel only reads them.
    let sent = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if sent >= 0 {
        return Ok(sent as usize);
    }
    Err(match nix::Error::last() {
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

#[cfg(test)]
mod tests {
    use super::TxTimeControl;

    #[test]
    fn the_control_message_has_the_layout_of_cmsg_space_8() {
        let len = std::mem::size_of::<u64>() as libc::c_uint;
        // SAFETY: the CMSG_* macros are pure arithmetic here.
        let (space, cmsg_len) = unsafe { (libc::CMSG_SPACE(len) as usize, libc::CMSG_LEN(len) as usize) };
        assert_eq!(std::mem::size_of::<TxTimeControl>(), space);
        assert_eq!(std::mem::size_of::<TxTimeControl>(), cmsg_len);
        let mut c: TxTimeControl = unsafe { std::mem::zeroed() };
        let base = &mut c as *mut TxTimeControl as *mut libc::cmsghdr;
        // SAFETY: base points at a cmsghdr at the start of c.
        let data = unsafe { libc::CMSG_DATA(base) } as usize;
        assert_eq!(data - base as usize, std::mem::offset_of!(TxTimeControl, tag));
    }
}

//! Connection to qsockd over its Unix `SOCK_SEQPACKET` socket.
use std::{
    io::{IoSlice, IoSliceMut},
    os::fd::{AsRawFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
    time::Duration,
};

use nix::sys::{
    socket::{connect, recvmsg, sendmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr},
    time::TimeVal,
};

use crate::{
    error::{ErrorKind, QsockError, Result},
    info::{AttachInfo, QInfo},
    params::{check_device, InitParams, QosParams},
    proto::{Request, Response, DEFAULT_SOCKET_PATH, MAX_MESSAGE_BYTES},
    send,
};

fn unexpected(r: Response) -> QsockError {
    QsockError::new(ErrorKind::Daemon, format!("unexpected answer from qsockd: {r:?}"))
}

/// How long a call waits for qsockd's answer before failing with
/// [`ErrorKind::Daemon`].
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Path of qsockd's socket: `$QSOCK_SOCKET` if set, else
/// [`DEFAULT_SOCKET_PATH`].
pub fn socket_path() -> PathBuf {
    std::env::var_os("QSOCK_SOCKET").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH))
}

/// One connection to qsockd. Requests are answered in order; a `Client` is
/// not shared between threads without a lock.
#[derive(Debug)]
pub struct Client {
    fd: OwnedFd,
}

fn daemon_err(what: &str, path: &Path, e: impl std::fmt::Display) -> QsockError {
    QsockError::new(ErrorKind::Daemon, format!("{what} qsockd at {}: {e}", path.display()))
}

impl Client {
    /// Connects to qsockd at `path`. Errors: [`ErrorKind::Daemon`] when
    /// nothing listens there.
    pub fn connect(path: &Path) -> Result<Self> {
        let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)
            .map_err(|e| QsockError::sys("socket(AF_UNIX, SOCK_SEQPACKET)", e))?;
        let addr = UnixAddr::new(path).map_err(|e| daemon_err("bad path for", path, e))?;
        connect(fd.as_raw_fd(), &addr).map_err(|e| daemon_err("cannot connect to", path, e))?;
        let tv = TimeVal::new(REPLY_TIMEOUT.as_secs() as i64, 0);
        setsockopt(&fd, sockopt::ReceiveTimeout, &tv).map_err(|e| QsockError::sys("SO_RCVTIMEO", e))?;
        Ok(Self { fd })
    }

    /// Connects to [`socket_path()`].
    pub fn connect_default() -> Result<Self> {
        Self::connect(&socket_path())
    }

    /// Sends `req`, with `sock` attached as `SCM_RIGHTS` when given, and
    /// returns the answer; a [`Response::Error`] becomes `Err`.
    pub fn call(&self, req: &Request, sock: Option<BorrowedFd<'_>>) -> Result<Response> {
        let body = serde_json::to_vec(req).map_err(|e| QsockError::new(ErrorKind::Malformed, e.to_string()))?;
        let iov = [IoSlice::new(&body)];
        let raw;
        let cmsgs: Vec<ControlMessage<'_>> = match sock {
            Some(fd) => {
                raw = [fd.as_raw_fd()];
                vec![ControlMessage::ScmRights(&raw)]
            }
            None => vec![],
        };
        sendmsg::<()>(self.fd.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None).map_err(|e| match e {
            nix::Error::EBADF if sock.is_some() => QsockError::new(ErrorKind::BadSocket, "the socket descriptor is closed"),
            e => QsockError::new(ErrorKind::Daemon, format!("send to qsockd: {e}")),
        })?;
        let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
        let n = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<()>(self.fd.as_raw_fd(), &mut iov, None, MsgFlags::MSG_CMSG_CLOEXEC)
                .map_err(|e| QsockError::new(ErrorKind::Daemon, format!("no answer from qsockd: {e}")))?;
            msg.bytes
        };
        if n == 0 {
            return Err(QsockError::new(ErrorKind::Daemon, "qsockd closed the connection"));
        }
        match serde_json::from_slice::<Response>(&buf[..n]) {
            Ok(Response::Error(e)) => Err(e),
            Ok(r) => Ok(r),
            Err(e) => Err(QsockError::new(ErrorKind::Daemon, format!("unreadable answer from qsockd: {e}"))),
        }
    }

    /// `qsockinit` through this connection; see [`crate::qsockinit`].
    pub fn init(&self, params: &InitParams) -> Result<()> {
        params.validate()?;
        match self.call(&Request::Init(params.clone()), None)? {
            Response::Ok => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    /// Teardown through this connection; see [`crate::qsockteardown`].
    pub fn teardown(&self, device: &str) -> Result<()> {
        check_device(device)?;
        match self.call(&Request::Teardown { device: device.to_string() }, None)? {
            Response::Ok => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    /// `qattach` through this connection; see [`crate::qattach`].
    pub fn attach(&self, fd: BorrowedFd<'_>, params: &QosParams) -> Result<AttachInfo> {
        params.validate()?;
        let datagram = send::socket_type(fd)? == libc::SOCK_DGRAM;
        let info = match self.call(&Request::Attach(params.clone()), Some(fd))? {
            Response::Attached(a) => a,
            r => return Err(unexpected(r)),
        };
        // Only once qsockd accepted: SO_TXTIME cannot be switched off again,
        // and a refused attach must leave the socket as it was.
        if datagram {
            if let Err(e) = send::enable_txtime(fd) {
                let _ = self.detach(fd);
                return Err(e);
            }
        }
        Ok(info)
    }

    /// `qchange` through this connection; see [`crate::qchange`].
    pub fn change(&self, fd: BorrowedFd<'_>, params: &QosParams) -> Result<AttachInfo> {
        params.validate()?;
        match self.call(&Request::Change(params.clone()), Some(fd))? {
            Response::Attached(a) => Ok(a),
            r => Err(unexpected(r)),
        }
    }

    /// `qinfo` through this connection; see [`crate::qinfo`].
    pub fn info(&self, fd: BorrowedFd<'_>) -> Result<QInfo> {
        match self.call(&Request::Info, Some(fd))? {
            Response::Info(i) => Ok(*i),
            r => Err(unexpected(r)),
        }
    }

    /// Stops managing the socket without closing it (the daemon half of
    /// [`crate::qclose`]). Errors: [`ErrorKind::NotManaged`], [`ErrorKind::Daemon`].
    pub fn detach(&self, fd: BorrowedFd<'_>) -> Result<()> {
        match self.call(&Request::Close, Some(fd))? {
            Response::Ok => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    /// The interfaces qsockd manages; see [`crate::qinterfaces`].
    pub fn interfaces(&self) -> Result<Vec<crate::InterfaceInfo>> {
        match self.call(&Request::Interfaces, None)? {
            Response::Interfaces(v) => Ok(v),
            r => Err(unexpected(r)),
        }
    }

    /// Every managed socket (as root) or the caller's own, as `qsockctl list`
    /// shows them. Errors: [`ErrorKind::Daemon`].
    pub fn list(&self) -> Result<Vec<crate::SocketSummary>> {
        match self.call(&Request::List, None)? {
            Response::Sockets(v) => Ok(v),
            r => Err(unexpected(r)),
        }
    }

    /// Liveness check; returns the daemon's version.
    pub fn ping(&self) -> Result<String> {
        match self.call(&Request::Ping, None)? {
            Response::Pong(v) => Ok(v),
            r => Err(unexpected(r)),
        }
    }
}

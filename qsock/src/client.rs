//! Connection to qsockd over its Unix `SOCK_SEQPACKET` socket, re-established
//! (with the sockets it manages re-registered) when qsockd restarts.
use std::{
    collections::HashMap,
    io::{IoSlice, IoSliceMut},
    os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    sync::Mutex,
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

/// How long a call waits for a restarted qsockd to accept connections
/// again before failing with [`ErrorKind::Daemon`].
pub const RECONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to qsockd that survives the daemon's restart: when the
/// connection breaks (qsockd was restarted, upgraded or crashed), the next
/// call reconnects (waiting up to [`RECONNECT_TIMEOUT`]), re-registers every
/// socket attached through this `Client` that is still open
/// ([`Request::Reclaim`]; the restarted qsockd kept their classes), and is
/// retried once. Requests are answered in order; a `Client` may be shared
/// between threads (calls take turns).
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    conn: Mutex<Conn>,
}

#[derive(Debug)]
struct Conn {
    /// `None` after the connection broke and reconnecting failed.
    fd: Option<OwnedFd>,
    /// Sockets attached through this client: cookie → descriptor number.
    /// Only numbers are kept (no reference), so closing the socket is not
    /// held up; a number is checked against its cookie before it is used.
    managed: HashMap<u64, RawFd>,
}

fn daemon_err(what: &str, path: &Path, e: impl std::fmt::Display) -> QsockError {
    QsockError::new(ErrorKind::Daemon, format!("{what} qsockd at {}: {e}", path.display()))
}

/// Why an exchange with qsockd failed.
enum Failure {
    /// The connection is gone (qsockd exited): reconnecting may help.
    Broken(QsockError),
    /// The request failed for another reason.
    Failed(QsockError),
}

fn open_connection(path: &Path) -> Result<OwnedFd> {
    let fd =
        socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).map_err(|e| QsockError::sys("socket(AF_UNIX, SOCK_SEQPACKET)", e))?;
    let addr = UnixAddr::new(path).map_err(|e| daemon_err("bad path for", path, e))?;
    connect(fd.as_raw_fd(), &addr).map_err(|e| daemon_err("cannot connect to", path, e))?;
    let tv = TimeVal::new(REPLY_TIMEOUT.as_secs() as i64, 0);
    setsockopt(&fd, sockopt::ReceiveTimeout, &tv).map_err(|e| QsockError::sys("SO_RCVTIMEO", e))?;
    Ok(fd)
}

/// `SO_COOKIE` of a descriptor; `None` if it is not an open socket.
pub(crate) fn socket_cookie(fd: RawFd) -> Option<u64> {
    let mut v: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `v` is a valid 8-byte buffer; an invalid fd only makes the call fail.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_COOKIE, &mut v as *mut u64 as *mut libc::c_void, &mut len) };
    (r == 0).then_some(v)
}

/// One request and its answer on connection `fd`.
fn exchange(fd: &OwnedFd, req: &Request, sock: Option<BorrowedFd<'_>>) -> std::result::Result<Response, Failure> {
    let body = serde_json::to_vec(req).map_err(|e| Failure::Failed(QsockError::new(ErrorKind::Malformed, e.to_string())))?;
    let iov = [IoSlice::new(&body)];
    let raw;
    let cmsgs: Vec<ControlMessage<'_>> = match sock {
        Some(fd) => {
            raw = [fd.as_raw_fd()];
            vec![ControlMessage::ScmRights(&raw)]
        }
        None => vec![],
    };
    sendmsg::<()>(fd.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None).map_err(|e| match e {
        nix::Error::EBADF if sock.is_some() => Failure::Failed(QsockError::new(ErrorKind::BadSocket, "the socket descriptor is closed")),
        nix::Error::EPIPE | nix::Error::ECONNRESET | nix::Error::ENOTCONN | nix::Error::ECONNREFUSED => {
            Failure::Broken(QsockError::new(ErrorKind::Daemon, format!("send to qsockd: {e}")))
        }
        e => Failure::Failed(QsockError::new(ErrorKind::Daemon, format!("send to qsockd: {e}"))),
    })?;
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
    let n = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(fd.as_raw_fd(), &mut iov, None, MsgFlags::MSG_CMSG_CLOEXEC).map_err(|e| match e {
            nix::Error::ECONNRESET => Failure::Broken(QsockError::new(ErrorKind::Daemon, format!("no answer from qsockd: {e}"))),
            e => Failure::Failed(QsockError::new(ErrorKind::Daemon, format!("no answer from qsockd: {e}"))),
        })?;
        msg.bytes
    };
    if n == 0 {
        return Err(Failure::Broken(QsockError::new(ErrorKind::Daemon, "qsockd closed the connection")));
    }
    match serde_json::from_slice::<Response>(&buf[..n]) {
        Ok(Response::Error(e)) => Err(Failure::Failed(e)),
        Ok(r) => Ok(r),
        Err(e) => Err(Failure::Failed(QsockError::new(ErrorKind::Daemon, format!("unreadable answer from qsockd: {e}")))),
    }
}

impl Conn {
    /// Connects anew (waiting up to [`RECONNECT_TIMEOUT`] for qsockd to
    /// listen again) and re-registers the sockets still open.
    fn reconnect(&mut self, path: &Path) -> Result<()> {
        self.fd = None;
        let deadline = std::time::Instant::now() + RECONNECT_TIMEOUT;
        let fd = loop {
            match open_connection(path) {
                Ok(fd) => break fd,
                Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let mut kept = HashMap::new();
        for (cookie, raw) in std::mem::take(&mut self.managed) {
            if socket_cookie(raw) != Some(cookie) {
                continue; // closed (or the number now names another socket)
            }
            // SAFETY: `raw` is open (SO_COOKIE just answered) and only borrowed for the call.
            let sock = unsafe { BorrowedFd::borrow_raw(raw) };
            match exchange(&fd, &Request::Reclaim, Some(sock)) {
                Ok(_) => {
                    kept.insert(cookie, raw);
                }
                Err(Failure::Failed(e)) if e.kind == ErrorKind::NotManaged => {}
                Err(Failure::Failed(_)) => {
                    kept.insert(cookie, raw);
                }
                Err(Failure::Broken(e)) => {
                    self.managed = kept;
                    return Err(e);
                }
            }
        }
        self.managed = kept;
        self.fd = Some(fd);
        Ok(())
    }
}

impl Client {
    /// Connects to qsockd at `path`. Errors: [`ErrorKind::Daemon`] when
    /// nothing listens there.
    pub fn connect(path: &Path) -> Result<Self> {
        let fd = open_connection(path)?;
        Ok(Self { path: path.to_path_buf(), conn: Mutex::new(Conn { fd: Some(fd), managed: HashMap::new() }) })
    }

    /// Connects to [`socket_path()`].
    pub fn connect_default() -> Result<Self> {
        Self::connect(&socket_path())
    }

    /// Sends `req`, with `sock` attached as `SCM_RIGHTS` when given, and
    /// returns the answer; a [`Response::Error`] becomes `Err`. A broken
    /// connection is re-established (see [`Client`]) and the request sent
    /// once more.
    pub fn call(&self, req: &Request, sock: Option<BorrowedFd<'_>>) -> Result<Response> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut retried = false;
        loop {
            if conn.fd.is_none() {
                conn.reconnect(&self.path)?;
                retried = true;
            }
            let r = exchange(conn.fd.as_ref().expect("connected above"), req, sock);
            match r {
                Ok(resp) => {
                    if let (Some(fd), Response::Attached(a)) = (sock, &resp) {
                        conn.managed.insert(a.cookie, fd.as_raw_fd());
                    }
                    if let (Some(fd), Request::Close, Response::Ok) = (sock, req, &resp) {
                        if let Some(c) = socket_cookie(fd.as_raw_fd()) {
                            conn.managed.remove(&c);
                        }
                    }
                    return Ok(resp);
                }
                Err(Failure::Failed(e)) => {
                    if let (Some(fd), ErrorKind::NotManaged) = (sock, e.kind) {
                        if let Some(c) = socket_cookie(fd.as_raw_fd()) {
                            conn.managed.remove(&c);
                        }
                    }
                    return Err(e);
                }
                Err(Failure::Broken(e)) if retried => {
                    conn.fd = None;
                    return Err(e);
                }
                Err(Failure::Broken(_)) => conn.fd = None,
            }
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

//! Connection to qsockd over its Unix `SOCK_SEQPACKET` socket. Every call
//! waits at most as long as it allows; a daemon that is away makes a call
//! fail at once with [`ErrorKind::DaemonUnavailable`] while a background
//! thread reconnects and re-registers the sockets it manages.
use std::{
    collections::HashMap,
    io::{IoSlice, IoSliceMut},
    os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard, Weak,
    },
    time::{Duration, Instant},
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

pub(crate) fn unexpected(r: Response) -> QsockError {
    QsockError::new(ErrorKind::Daemon, format!("unexpected answer from qsockd: {r:?}"))
}

/// How long a call waits for qsockd's answer unless the [`Client`] or the
/// call says otherwise ([`Client::with_wait`], [`Client::info_within`]).
/// Generous, for control calls (attach, change, close) that may make the
/// daemon change kernel classes; a call from a send loop should pass its
/// own, shorter wait.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// The wait [`crate::qinfo`] uses: well below one frame interval of a
/// 30 fps stream (33 ms), so a send loop that asks for figures never stalls
/// on a daemon that is busy or restarting. qsockd answers a `qinfo` in
/// about 0.1 ms (README, scale benchmark).
pub const INFO_WAIT: Duration = Duration::from_millis(20);

/// How often the background reconnector tries again while qsockd is away:
/// first after this, doubling up to [`RECONNECT_MAX_INTERVAL`].
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(10);
/// Longest pause between two reconnect attempts.
pub const RECONNECT_MAX_INTERVAL: Duration = Duration::from_millis(200);

/// Path of qsockd's socket: `$QSOCK_SOCKET` if set, else
/// [`DEFAULT_SOCKET_PATH`].
pub fn socket_path() -> PathBuf {
    std::env::var_os("QSOCK_SOCKET").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH))
}

/// A connection to qsockd that survives the daemon's restart without ever
/// holding a caller up for longer than the caller's wait.
///
/// When the connection breaks (qsockd was restarted, upgraded or crashed),
/// the call that notices tries one immediate reconnect (a daemon already
/// listening again is taken at once, and the call retried once); if qsockd
/// does not listen, the call fails with [`ErrorKind::DaemonUnavailable`] and
/// a background thread keeps reconnecting (every [`RECONNECT_INTERVAL`],
/// backing off to [`RECONNECT_MAX_INTERVAL`]). Once connected it
/// re-registers every socket attached through this `Client` that is still
/// open ([`Request::Reclaim`]; the restarted qsockd kept their classes). A
/// call whose answer does not come within its wait fails with
/// [`ErrorKind::DaemonUnavailable`]; the late answer is read and dropped
/// before the next call. Requests are answered in order; a `Client` may be
/// shared between threads (calls take turns).
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    shared: Arc<Shared>,
    wait: Duration,
}

#[derive(Debug)]
struct Shared {
    conn: Mutex<Conn>,
    /// A background reconnector runs.
    reconnecting: AtomicBool,
}

#[derive(Debug)]
struct Conn {
    /// `None` while the connection is broken.
    fd: Option<OwnedFd>,
    /// Sockets attached through this client: cookie → descriptor number.
    /// Only numbers are kept (no reference), so closing the socket is not
    /// held up; a number is checked against its cookie before it is used.
    managed: HashMap<u64, RawFd>,
    /// Sockets still to re-register on the current connection.
    unclaimed: Vec<u64>,
    /// Answers owed to calls that stopped waiting; read and dropped first.
    owed: usize,
}

fn daemon_err(what: &str, path: &Path, e: impl std::fmt::Display) -> QsockError {
    QsockError::new(ErrorKind::DaemonUnavailable, format!("{what} qsockd at {}: {e}", path.display()))
}

fn unavailable(why: impl std::fmt::Display) -> QsockError {
    QsockError::new(ErrorKind::DaemonUnavailable, format!("{why} (the library reconnects in the background)"))
}

/// Why an exchange with qsockd failed.
enum Failure {
    /// The connection is gone (qsockd exited): reconnecting may help.
    Broken(QsockError),
    /// No answer within the wait: it is owed on this connection.
    TimedOut,
    /// The request failed for another reason.
    Failed(QsockError),
}

fn open_connection(path: &Path) -> Result<OwnedFd> {
    let fd =
        socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).map_err(|e| QsockError::sys("socket(AF_UNIX, SOCK_SEQPACKET)", e))?;
    let addr = UnixAddr::new(path).map_err(|e| QsockError::new(ErrorKind::InvalidParams, format!("bad path for qsockd {}: {e}", path.display())))?;
    connect(fd.as_raw_fd(), &addr).map_err(|e| daemon_err("cannot connect to", path, e))?;
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

/// Time left until `deadline` as a socket timeout (at least 1 ms: a zero
/// `SO_RCVTIMEO` would mean "wait forever").
fn timeout_until(deadline: Instant) -> TimeVal {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    TimeVal::new(left.as_secs() as i64, left.subsec_micros() as i64)
}

/// Receives one answer on `fd` by `deadline`.
fn receive(fd: &OwnedFd, deadline: Instant) -> std::result::Result<Response, Failure> {
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
    let n = loop {
        setsockopt(fd, sockopt::ReceiveTimeout, &timeout_until(deadline)).map_err(|e| Failure::Failed(QsockError::sys("SO_RCVTIMEO", e)))?;
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(fd.as_raw_fd(), &mut iov, None, MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => break msg.bytes,
            // A signal, or the caller stopped and continued (Ctrl-Z, a frozen
            // cgroup): a timed receive fails with EINTR then; the answer may still come.
            Err(nix::Error::EINTR) if Instant::now() < deadline => continue,
            Err(nix::Error::EAGAIN | nix::Error::EINTR) => return Err(Failure::TimedOut),
            Err(e @ nix::Error::ECONNRESET) => return Err(Failure::Broken(unavailable(format!("qsockd dropped the connection: {e}")))),
            Err(e) => return Err(Failure::Failed(QsockError::new(ErrorKind::Daemon, format!("no answer from qsockd: {e}")))),
        }
    };
    if n == 0 {
        return Err(Failure::Broken(unavailable("qsockd closed the connection")));
    }
    match serde_json::from_slice::<Response>(&buf[..n]) {
        Ok(Response::Error(e)) => Err(Failure::Failed(e)),
        Ok(r) => Ok(r),
        Err(e) => Err(Failure::Failed(QsockError::new(ErrorKind::Daemon, format!("unreadable answer from qsockd: {e}")))),
    }
}

/// One request and its answer on connection `fd`, waiting until `deadline`.
fn exchange(fd: &OwnedFd, req: &Request, sock: Option<BorrowedFd<'_>>, deadline: Instant) -> std::result::Result<Response, Failure> {
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
    let sent = loop {
        setsockopt(fd, sockopt::SendTimeout, &timeout_until(deadline)).map_err(|e| Failure::Failed(QsockError::sys("SO_SNDTIMEO", e)))?;
        match sendmsg::<()>(fd.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            // A seqpacket send is whole or not at all: after EINTR nothing went.
            Err(nix::Error::EINTR) if Instant::now() < deadline => continue,
            r => break r,
        }
    };
    sent.map_err(|e| match e {
        nix::Error::EBADF if sock.is_some() => Failure::Failed(QsockError::new(ErrorKind::BadSocket, "the socket descriptor is closed")),
        nix::Error::EPIPE | nix::Error::ECONNRESET | nix::Error::ENOTCONN | nix::Error::ECONNREFUSED => {
            Failure::Broken(unavailable(format!("send to qsockd: {e}")))
        }
        // Nothing was sent: nothing is owed.
        nix::Error::EAGAIN => Failure::Failed(unavailable("qsockd does not take requests (its queue is full)")),
        e => Failure::Failed(QsockError::new(ErrorKind::Daemon, format!("send to qsockd: {e}"))),
    })?;
    receive(fd, deadline)
}

/// A connection of its own to qsockd at `path` for a stream of answers
/// (subflow events), and the first answer to `req` on it within `wait`.
/// Errors: [`ErrorKind::DaemonUnavailable`] (qsockd is not there or did not
/// answer in time), the error qsockd answered.
pub(crate) fn open_stream(path: &Path, req: &Request, sock: Option<BorrowedFd<'_>>, wait: Duration) -> Result<(OwnedFd, Response)> {
    let fd = open_connection(path)?;
    match exchange(&fd, req, sock, Instant::now() + wait) {
        Ok(r) => Ok((fd, r)),
        Err(Failure::Broken(e) | Failure::Failed(e)) => Err(e),
        Err(Failure::TimedOut) => Err(unavailable("qsockd did not answer the subscription in time")),
    }
}

/// The next message of a stream opened by [`open_stream`] by `deadline`;
/// `Ok(None)` when none came. Errors: [`ErrorKind::DaemonUnavailable`] (the
/// stream ended: qsockd stopped), the error qsockd sent.
pub(crate) fn next_on_stream(fd: &OwnedFd, deadline: Instant) -> Result<Option<Response>> {
    match receive(fd, deadline) {
        Ok(r) => Ok(Some(r)),
        Err(Failure::TimedOut) => Ok(None),
        Err(Failure::Broken(e) | Failure::Failed(e)) => Err(e),
    }
}

impl Conn {
    /// Connects anew once; on success every socket still open is to be
    /// re-registered ([`Conn::catch_up`]).
    fn connect(&mut self, path: &Path) -> Result<()> {
        let fd = open_connection(path)?;
        self.managed.retain(|cookie, raw| socket_cookie(*raw) == Some(*cookie));
        self.unclaimed = self.managed.keys().copied().collect();
        self.owed = 0;
        self.fd = Some(fd);
        Ok(())
    }

    /// Reads the answers owed to calls that gave up, then re-registers the
    /// sockets not yet claimed on this connection, all by `deadline`.
    fn catch_up(&mut self, deadline: Instant) -> std::result::Result<(), Failure> {
        let fd = self.fd.as_ref().ok_or_else(|| Failure::Broken(unavailable("not connected to qsockd")))?;
        while self.owed > 0 {
            match receive(fd, deadline) {
                Ok(_) | Err(Failure::Failed(_)) => self.owed -= 1,
                Err(f) => return Err(f),
            }
        }
        while let Some(&cookie) = self.unclaimed.last() {
            let Some(&raw) = self.managed.get(&cookie).filter(|raw| socket_cookie(**raw) == Some(cookie)) else {
                self.unclaimed.pop();
                self.managed.remove(&cookie);
                continue;
            };
            // SAFETY: `raw` is open (SO_COOKIE just answered) and only borrowed for the call.
            let sock = unsafe { BorrowedFd::borrow_raw(raw) };
            match exchange(fd, &Request::Reclaim, Some(sock), deadline) {
                Ok(_) => {}
                Err(Failure::Failed(e)) if e.kind == ErrorKind::NotManaged => {
                    self.managed.remove(&cookie);
                }
                Err(Failure::Failed(_)) => {}
                Err(Failure::TimedOut) => {
                    // Its answer comes later; the claim itself was sent.
                    self.unclaimed.pop();
                    self.owed += 1;
                    return Err(Failure::TimedOut);
                }
                Err(f) => return Err(f),
            }
            self.unclaimed.pop();
        }
        Ok(())
    }

    /// Whether nothing is left for the background reconnector to do.
    fn settled(&self) -> bool {
        self.fd.is_some() && self.unclaimed.is_empty() && self.owed == 0
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts the background reconnector of `shared` unless one runs. It ends
/// once connected with every socket re-registered, or when the `Client` is gone.
fn spawn_reconnector(shared: &Arc<Shared>, path: &Path) {
    if shared.reconnecting.swap(true, Ordering::AcqRel) {
        return;
    }
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let path = path.to_path_buf();
    let started = std::thread::Builder::new().name("qsock-reconnect".into()).spawn(move || {
        let mut pause = RECONNECT_INTERVAL;
        loop {
            std::thread::sleep(pause);
            let Some(shared) = weak.upgrade() else { return };
            let mut conn = shared.lock();
            if conn.fd.is_none() && conn.connect(&path).is_err() {
                drop(conn);
                pause = (pause * 2).min(RECONNECT_MAX_INTERVAL);
                continue;
            }
            if let Err(Failure::Broken(_)) = conn.catch_up(Instant::now() + Duration::from_secs(1)) {
                conn.fd = None;
            }
            if conn.settled() {
                shared.reconnecting.store(false, Ordering::Release);
                return;
            }
            pause = RECONNECT_INTERVAL;
        }
    });
    if started.is_err() {
        shared.reconnecting.store(false, Ordering::Release);
    }
}

impl Client {
    /// Connects to qsockd at `path`. Errors: [`ErrorKind::DaemonUnavailable`]
    /// when nothing listens there, [`ErrorKind::InvalidParams`] for a path
    /// that cannot be a Unix socket address.
    pub fn connect(path: &Path) -> Result<Self> {
        let fd = open_connection(path)?;
        let conn = Conn { fd: Some(fd), managed: HashMap::new(), unclaimed: Vec::new(), owed: 0 };
        Ok(Self { path: path.to_path_buf(), shared: Arc::new(Shared { conn: Mutex::new(conn), reconnecting: AtomicBool::new(false) }), wait: DEFAULT_WAIT })
    }

    /// Connects to [`socket_path()`].
    pub fn connect_default() -> Result<Self> {
        Self::connect(&socket_path())
    }

    /// The same client with `wait` as the longest any of its calls waits
    /// for qsockd (default [`DEFAULT_WAIT`]).
    pub fn with_wait(self, wait: Duration) -> Self {
        Self { wait, ..self }
    }

    /// The longest wait of this client's calls ([`DEFAULT_WAIT`] unless
    /// [`Client::with_wait`] set another).
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Path of qsockd's socket this client connects to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the connection to qsockd is up and every socket re-registered
    /// after a restart (no call needed to find out).
    pub fn is_connected(&self) -> bool {
        self.shared.lock().settled()
    }

    /// Sends `req` (with `sock` as `SCM_RIGHTS` when given) and returns the
    /// answer, waiting at most the client's wait; see [`Client::call_within`].
    pub fn call(&self, req: &Request, sock: Option<BorrowedFd<'_>>) -> Result<Response> {
        self.call_within(req, sock, self.wait)
    }

    /// Sends `req`, with `sock` attached as `SCM_RIGHTS` when given, and
    /// returns the answer, waiting at most `wait` in all; a
    /// [`Response::Error`] becomes `Err`. A broken connection is
    /// re-established at once if qsockd listens (and the request sent once
    /// more); otherwise, or when no answer comes within `wait`, the call
    /// fails with [`ErrorKind::DaemonUnavailable`] (see [`Client`]).
    pub fn call_within(&self, req: &Request, sock: Option<BorrowedFd<'_>>, wait: Duration) -> Result<Response> {
        let deadline = Instant::now() + wait;
        let mut conn = self.shared.lock();
        let mut retried = false;
        loop {
            if conn.fd.is_none() {
                if let Err(e) = conn.connect(&self.path) {
                    drop(conn);
                    spawn_reconnector(&self.shared, &self.path);
                    return Err(e);
                }
                retried = true;
            }
            let r = match conn.catch_up(deadline) {
                Ok(()) => exchange(conn.fd.as_ref().expect("connected above"), req, sock, deadline),
                Err(Failure::TimedOut) => {
                    drop(conn);
                    spawn_reconnector(&self.shared, &self.path);
                    return Err(unavailable(format!("qsockd did not answer earlier requests within {wait:?}")));
                }
                Err(f) => Err(f),
            };
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
                Err(Failure::TimedOut) => {
                    conn.owed += 1;
                    return Err(unavailable(format!("no answer from qsockd within {wait:?}")));
                }
                Err(Failure::Broken(e)) if retried => {
                    conn.fd = None;
                    drop(conn);
                    spawn_reconnector(&self.shared, &self.path);
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

    /// `qinfo` through this connection, waiting at most the client's wait;
    /// see [`crate::qinfo`].
    pub fn info(&self, fd: BorrowedFd<'_>) -> Result<QInfo> {
        self.info_within(fd, self.wait)
    }

    /// `qinfo` waiting at most `wait` for qsockd (for a send loop: less
    /// than its frame interval). Errors: as [`crate::qinfo`].
    pub fn info_within(&self, fd: BorrowedFd<'_>, wait: Duration) -> Result<QInfo> {
        match self.call_within(&Request::Info, Some(fd), wait)? {
            Response::Info(i) => Ok(*i),
            r => Err(unexpected(r)),
        }
    }

    /// Stops managing the socket without closing it (the daemon half of
    /// [`crate::qclose`]). Errors: [`ErrorKind::NotManaged`],
    /// [`ErrorKind::DaemonUnavailable`], [`ErrorKind::Daemon`].
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
    /// shows them. Errors: [`ErrorKind::DaemonUnavailable`], [`ErrorKind::Daemon`].
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

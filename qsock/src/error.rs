//! Typed errors of the qsock API.
use serde::{Deserialize, Serialize};

/// What went wrong, as the daemon or the library classifies it. Travels over
/// the daemon protocol, so clients can match on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The named network device does not exist (in the daemon's namespace).
    NoSuchDevice,
    /// The device exists but `qsockinit` has not been run on it.
    NotInitialized,
    /// `qsockinit` already ran on the device.
    AlreadyInitialized,
    /// The device has a root qdisc qsock did not install (init without replace).
    ForeignQdisc,
    /// A parameter is out of range or inconsistent (rate 0, unknown scheduler, ...).
    InvalidParams,
    /// Admission control: the requested guarantee does not fit the link.
    CapacityExceeded,
    /// The socket is not managed by qsock (qchange/qinfo/qclose before qattach).
    NotManaged,
    /// The socket is already managed (second qattach).
    AlreadyManaged,
    /// The file descriptor is closed or is not a socket.
    BadSocket,
    /// No managed interface can carry the socket: none is up, or none meets
    /// its Require/Prohibit interface preferences.
    NoInterface,
    /// The policy cannot place the socket on an interface because it is
    /// already connected or bound to an address; it is not moved.
    SocketInUse,
    /// A privileged operation requested by an unprivileged client.
    PermissionDenied,
    /// The kernel or this build lacks what the request needs.
    Unsupported,
    /// A subflow call on a socket that is not a multipath connection: not
    /// an `IPPROTO_MPTCP` socket, or one whose peer has no MPTCP, so the
    /// connection fell back to plain TCP (it works, with one path).
    NotMultipath,
    /// The request could not be parsed.
    Malformed,
    /// The daemon answered out of protocol, or a request to it failed for
    /// a reason other than its absence.
    Daemon,
    /// qsockd is away (restarting, or not running) or did not answer within
    /// the wait the call allowed. Nothing was changed by this call; the
    /// library reconnects in the background, so a later call may succeed.
    /// Managed sockets keep their QoS meanwhile (it lives in the kernel).
    DaemonUnavailable,
    /// A system call or netlink request failed.
    Kernel,
}

/// Error returned by every qsock call: a kind to match on and a message that
/// says what was wrong in the caller's terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct QsockError {
    /// Classification of the failure.
    pub kind: ErrorKind,
    /// Human-readable detail (names the device, value or call at fault).
    pub message: String,
}

impl QsockError {
    /// Builds an error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// Wraps an errno from a system call made on the caller's behalf.
    pub fn sys(call: &str, err: nix::Error) -> Self {
        let kind = match err {
            nix::Error::EBADF | nix::Error::ENOTSOCK => ErrorKind::BadSocket,
            nix::Error::EPERM | nix::Error::EACCES => ErrorKind::PermissionDenied,
            _ => ErrorKind::Kernel,
        };
        Self::new(kind, format!("{call}: {err}"))
    }
}

/// Result type of the qsock API.
pub type Result<T> = std::result::Result<T, QsockError>;

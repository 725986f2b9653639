//! qsock: a QoS socket API in the style of Q.Sockets (Abbasi, Poellabauer,
//! Schwan, Losik, West, 2002) on top of Linux tc and eBPF.
//!
//! Applications create or attach sockets with QoS parameters
//! ([`qsocket`], [`qattach`]), change them ([`qchange`]), send messages with
//! per-message flags ([`qsend`], [`qsendto`]), read what the host measured
//! ([`qinfo`]) and release them ([`qclose`]). A privileged caller runs
//! [`qsockinit`] once per device. All calls talk to `qsockd` over a Unix
//! socket (`$QSOCK_SOCKET`, default [`proto::DEFAULT_SOCKET_PATH`]); per
//! message nothing but the one `sendmsg()` is made.
#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod flags;
pub mod info;
mod mptcp_uapi;
pub mod multipath_intents;
pub mod params;
pub mod proto;
mod send;
pub mod subflow_control;
pub mod subflow_diag;
pub mod subflow_events;
pub mod subflows;
pub mod taps;

use std::{
    os::fd::{AsFd, FromRawFd, OwnedFd},
    sync::Mutex,
};

pub use client::Client;
pub use error::{ErrorKind, QsockError, Result};
pub use flags::{datagram_wire_bytes, DropPriority, PacketFlags};
pub use info::{AttachInfo, DelayStats, Drops, InterfaceInfo, MultipathQos, QInfo, SchedulerState, Selection, SocketSummary, StackInfo, SubflowQos, TcpInfo};
pub use mptcp_uapi::IPPROTO_MPTCP;
pub use multipath_intents::{Multipath, MultipathPolicy};
pub use params::{Burstiness, Category, DwcsAttrs, EdfAttrs, InitParams, Intents, QosParams, RateAttrs, Resilience, SchedulerParams, Timeliness};
pub use send::{monotonic_now_ns, qsend, qsendto};
pub use subflow_control::{qsubflow_close, qsubflow_open, qsubflow_set_backup, SUBFLOW_OPEN_WAIT};
pub use subflow_events::{qsubflow_events, SubflowEvent, SubflowEvents};
pub use subflows::{mptcp_token, qsubflows, Connection, Subflow, SubflowLocal, TcpState};
pub use taps::{CapacityProfile, InterfacePreference, InterfaceSelector, InterfaceType, Preference};

/// Environment variable the `LD_PRELOAD` library (`qsock-run`) reads the
/// socket parameters from: JSON of [`QosParams`].
pub const PARAMS_ENV: &str = "QSOCK_PARAMS";

/// Environment variable that makes the `LD_PRELOAD` library create the
/// program's TCP sockets as MPTCP sockets (`"1"`; `qsock-run --multipath`).
pub const MULTIPATH_ENV: &str = "QSOCK_MULTIPATH";

/// The process-wide connection the free functions use, opened on first use;
/// it reconnects on its own when qsockd restarts ([`Client`]). Held only
/// while a call takes its turn on the connection.
static DEFAULT_CLIENT: Mutex<Option<Client>> = Mutex::new(None);

fn with_default<T>(f: impl Fn(&Client) -> Result<T>) -> Result<T> {
    let mut guard = DEFAULT_CLIENT.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        *guard = Some(Client::connect_default()?);
    }
    f(guard.as_ref().expect("connected"))
}

/// Installs qsock on a device: root HTB at `link_rate_bps`, best-effort
/// default class, clsact egress classifier (Q.Sockets `qsockinit`).
/// Privileged: qsockd refuses it from a non-root peer.
///
/// Errors: [`ErrorKind::InvalidParams`], [`ErrorKind::NoSuchDevice`],
/// [`ErrorKind::AlreadyInitialized`], [`ErrorKind::ForeignQdisc`],
/// [`ErrorKind::PermissionDenied`], [`ErrorKind::Unsupported`] (kernel lacks
/// HTB or clsact), [`ErrorKind::DaemonUnavailable`], [`ErrorKind::Daemon`].
pub fn qsockinit(params: &InitParams) -> Result<()> {
    with_default(|c| c.init(params))
}

/// Creates a socket (`socket(2)` arguments, e.g. `libc::AF_INET`,
/// `libc::SOCK_DGRAM`, 0) and attaches it with `params`, as [`qattach`].
/// A TCP stream socket whose intents ask for multipath
/// ([`Intents::effective_multipath`] not `Disabled`) is created as an
/// MPTCP socket (`IPPROTO_MPTCP`), or as TCP where the kernel has no MPTCP
/// (it then works on one path). On error the socket is closed.
/// Errors: those of [`qattach`].
pub fn qsocket(domain: i32, ty: i32, protocol: i32, params: &QosParams) -> Result<OwnedFd> {
    params.validate()?;
    let fd = match multipath_protocol(domain, ty, protocol, &params.intents) {
        Some(mptcp) => stream_socket(domain, ty, mptcp).or_else(|_| stream_socket(domain, ty, protocol))?,
        None => stream_socket(domain, ty, protocol)?,
    };
    qattach(&fd, params)?;
    Ok(fd)
}

/// `IPPROTO_MPTCP` when a socket of these `socket(2)` arguments is TCP and
/// `intents` ask for multipath; `None` otherwise.
pub fn multipath_protocol(domain: i32, ty: i32, protocol: i32, intents: &Intents) -> Option<i32> {
    let tcp = matches!(domain, libc::AF_INET | libc::AF_INET6) && ty & 0xf == libc::SOCK_STREAM && matches!(protocol, 0 | libc::IPPROTO_TCP);
    (tcp && intents.effective_multipath().0 != Multipath::Disabled).then_some(IPPROTO_MPTCP)
}

fn stream_socket(domain: i32, ty: i32, protocol: i32) -> Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let raw = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if raw < 0 {
        return Err(QsockError::sys("socket", nix::Error::last()));
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Puts an existing socket under qsock management with `params` (Q.Sockets
/// `qattach`). The socket is handed to qsockd as `SCM_RIGHTS`; qsockd keeps
/// no reference to it. Once qsockd accepted, datagram sockets get `SO_TXTIME`
/// (`CLOCK_MONOTONIC`, deadline mode) so [`qsend`]/[`qsendto`] can carry
/// flags; a refused attach leaves the socket untouched. Management lasts
/// until [`qclose`], or until the process's connection to qsockd closes
/// (the process exits).
///
/// With `params.device` `None`, qsockd's interface-selection policy
/// (`params.policy`, else its default) chooses among the interfaces it
/// manages from the intents, and the socket is bound to the chosen
/// interface's address; `AttachInfo::selection` says what and why.
///
/// Errors: [`ErrorKind::BadSocket`] (closed or not a socket),
/// [`ErrorKind::InvalidParams`] (also: unknown policy, unmanaged interface
/// in a preference), [`ErrorKind::NotInitialized`],
/// [`ErrorKind::NoSuchDevice`], [`ErrorKind::CapacityExceeded`],
/// [`ErrorKind::AlreadyManaged`], [`ErrorKind::NoInterface`] (no usable
/// interface meets Require/Prohibit), [`ErrorKind::SocketInUse`] (no
/// device given and the socket is already bound or connected),
/// [`ErrorKind::Unsupported`] (also: an MPTCP socket while qsockd is not
/// the path manager: its packets leave by its subflows, which only the path
/// manager follows), [`ErrorKind::DaemonUnavailable`], [`ErrorKind::Daemon`].
///
/// An MPTCP socket (qsockd as path manager) is managed through its
/// subflows, each on the interface it leaves by with these parameters; one
/// not yet connected is placed first (as a TCP socket, and its intents
/// choose its subflows: `Intents::effective_multipath`), and its subflows
/// are managed once the connection is established.
pub fn qattach(fd: impl AsFd, params: &QosParams) -> Result<AttachInfo> {
    let fd = fd.as_fd();
    with_default(|c| c.attach(fd, params))
}

/// Intent-aware connect (Socket Intents intercept `connect`): attaches the
/// socket with `params` (with `device: None` qsockd's policy chooses the
/// interface from the intents and binds the socket to its source address),
/// then connects it to `dest`. A non-blocking socket may return with the
/// connect in progress (`EINPROGRESS` is not an error). The socket stays
/// managed when the connect itself fails (`qclose` it).
///
/// Errors: those of [`qattach`], [`ErrorKind::NoInterface`] (no interface
/// meets a Require/Prohibit), [`ErrorKind::SocketInUse`] (already bound or
/// connected), and [`ErrorKind::Kernel`] from `connect(2)`.
pub fn qconnect(fd: impl AsFd, dest: &std::net::SocketAddr, params: &QosParams) -> Result<AttachInfo> {
    let fd = fd.as_fd();
    let info = qattach(fd, params)?;
    let addr = nix::sys::socket::SockaddrStorage::from(*dest);
    match nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
        Ok(()) | Err(nix::Error::EINPROGRESS) => Ok(info),
        Err(e) => Err(QsockError::sys("connect", e)),
    }
}

/// The interfaces qsockd manages, with what it measures on each (rates,
/// RTT, queuing delay, state). Errors: [`ErrorKind::DaemonUnavailable`], [`ErrorKind::Daemon`].
pub fn qinterfaces() -> Result<Vec<InterfaceInfo>> {
    with_default(|c| c.interfaces())
}

/// Changes the parameters of a managed socket (Q.Sockets `qchange`); packets
/// already queued stay queued and are sent. For an MPTCP connection every
/// managed subflow changes on its own interface, all or nothing.
/// Errors: as [`qattach`], plus [`ErrorKind::NotManaged`].
pub fn qchange(fd: impl AsFd, params: &QosParams) -> Result<AttachInfo> {
    let fd = fd.as_fd();
    with_default(|c| c.change(fd, params))
}

/// Reports rate, drops, queuing delay and stack facts of a managed socket
/// (Q.Sockets `qinfo`), waiting up to [`client::DEFAULT_WAIT`] for qsockd.
/// Errors: [`ErrorKind::BadSocket`], [`ErrorKind::NotManaged`],
/// [`ErrorKind::DaemonUnavailable`] (at once when qsockd is away),
/// [`ErrorKind::Daemon`].
pub fn qinfo(fd: impl AsFd) -> Result<QInfo> {
    let fd = fd.as_fd();
    with_default(|c| c.info(fd))
}

/// [`qinfo`] that waits at most `wait` for qsockd: for a send loop, which
/// must not stall on a busy or restarting daemon ([`client::INFO_WAIT`],
/// 20 ms, is well below a frame interval). When the daemon is away or does
/// not answer in time it fails with [`ErrorKind::DaemonUnavailable`]; the
/// socket's QoS is unaffected (it lives in the kernel). Errors: as [`qinfo`].
pub fn qinfo_within(fd: impl AsFd, wait: std::time::Duration) -> Result<QInfo> {
    let fd = fd.as_fd();
    with_default(|c| c.info_within(fd, wait))
}

/// Stops managing the socket and closes it (Q.Sockets `qclose`). The socket
/// is closed even when qsockd reports an error, which is then returned.
/// Errors: [`ErrorKind::NotManaged`], [`ErrorKind::DaemonUnavailable`], [`ErrorKind::Daemon`].
pub fn qclose(fd: OwnedFd) -> Result<()> {
    let r = with_default(|c| c.detach(fd.as_fd()));
    drop(fd);
    r
}

/// Undoes [`qsockinit`] on `device`: removes qsock's classifier, root qdisc
/// and pinned maps and restores the previous root qdisc. Privileged.
/// Errors: [`ErrorKind::NotInitialized`], [`ErrorKind::PermissionDenied`],
/// [`ErrorKind::DaemonUnavailable`], [`ErrorKind::Daemon`].
pub fn qsockteardown(device: &str) -> Result<()> {
    with_default(|c| c.teardown(device))
}

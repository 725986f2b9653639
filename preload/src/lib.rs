//! `libqsock_preload.so`: loaded with `LD_PRELOAD` (by `qsock-run`), it
//! intercepts `connect(2)` of an unmodified program, as Socket Intents
//! intercepts `connect` and `mptcpize` intercepts `socket`: before an
//! IPv4/IPv6 stream or datagram socket connects to a non-loopback address,
//! it is `qattach`ed with the [`qsock::QosParams`] in `QSOCK_PARAMS`
//! (JSON). With no device in them, qsockd's policy chooses the interface
//! from the intents and binds the socket to its address.
//!
//! A socket no interface can carry (Require/Prohibit unmet) fails to
//! connect with `ENETUNREACH`; an invalid `QSOCK_PARAMS` fails every such
//! connect with `EINVAL`. If qsockd cannot be reached the program runs
//! unmanaged, and says so once on stderr.
//!
//! With `QSOCK_MULTIPATH=1` (`qsock-run --multipath`, or intents that imply
//! multipath) it also intercepts `socket(2)`, as `mptcpize` does: every
//! IPv4/IPv6 TCP socket is created as an MPTCP socket (`IPPROTO_MPTCP`),
//! client and server side; where the kernel refuses MPTCP, as TCP. (This
//! kernel refuses the BPF way, `update_socket_protocol` needs fmod_ret.)
use std::{
    cell::Cell,
    os::fd::BorrowedFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        OnceLock,
    },
};

use libc::{c_int, sockaddr, socklen_t};
use qsock::{ErrorKind, QosParams};

use qsock::PARAMS_ENV;

type ConnectFn = unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int;
type SocketFn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;

thread_local! {
    /// Set while this thread is inside qsock (its own connect to qsockd passes straight through).
    static IN_QSOCK: Cell<bool> = const { Cell::new(false) };
}
static WARNED: AtomicBool = AtomicBool::new(false);

/// Address of libc's own `name` (the next definition after ours).
fn next_symbol(name: &std::ffi::CStr, cache: &OnceLock<usize>) -> usize {
    let p = *cache.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds libc's definition.
        unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) as usize }
    });
    assert!(p != 0, "qsock preload: libc {name:?} not found");
    p
}

fn real_connect() -> ConnectFn {
    static REAL: OnceLock<usize> = OnceLock::new();
    // SAFETY: the symbol is libc's connect, of this signature.
    unsafe { std::mem::transmute::<usize, ConnectFn>(next_symbol(c"connect", &REAL)) }
}

fn real_socket() -> SocketFn {
    static REAL: OnceLock<usize> = OnceLock::new();
    // SAFETY: the symbol is libc's socket, of this signature.
    unsafe { std::mem::transmute::<usize, SocketFn>(next_symbol(c"socket", &REAL)) }
}

fn multipath_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var(qsock::MULTIPATH_ENV).is_ok_and(|v| v == "1"))
}

/// `socket(2)`; with [`qsock::MULTIPATH_ENV`] set, a TCP socket is created as an
/// MPTCP one (see the crate docs).
///
/// # Safety
/// As `socket(2)`.
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    let real = real_socket();
    let tcp = matches!(domain, libc::AF_INET | libc::AF_INET6) && ty & 0xf == libc::SOCK_STREAM && matches!(protocol, 0 | libc::IPPROTO_TCP);
    if tcp && multipath_on() && !IN_QSOCK.with(|f| f.get()) {
        let fd = real(domain, ty, qsock::IPPROTO_MPTCP);
        if fd >= 0 {
            return fd;
        }
        // No MPTCP here (EPROTONOSUPPORT, or disabled: ENOPROTOOPT/EINVAL): plain TCP.
    }
    real(domain, ty, protocol)
}

/// The parameters from the environment: `None` when unset, `Err` when malformed.
fn params() -> &'static Option<Result<QosParams, String>> {
    static PARAMS: OnceLock<Option<Result<QosParams, String>>> = OnceLock::new();
    PARAMS.get_or_init(|| {
        let raw = std::env::var(PARAMS_ENV).ok()?;
        Some(serde_json::from_str::<QosParams>(&raw).map_err(|e| e.to_string()).and_then(|p| p.validate().map(|_| p).map_err(|e| e.to_string())))
    })
}

/// Whether `addr` is an IPv4/IPv6 destination off this host.
///
/// # Safety
/// `addr` points to `len` readable bytes (or is null).
unsafe fn is_remote_inet(addr: *const sockaddr, len: socklen_t) -> bool {
    if addr.is_null() {
        return false;
    }
    match (*addr).sa_family as c_int {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            let a = &*(addr as *const libc::sockaddr_in);
            !std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).is_loopback()
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            let a = &*(addr as *const libc::sockaddr_in6);
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            !ip.is_loopback() && !ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        _ => false,
    }
}

fn set_errno(e: c_int) {
    // SAFETY: errno is thread-local and always writable.
    unsafe { *libc::__errno_location() = e };
}

/// `connect(2)`, with the socket attached to qsock first. See the crate docs.
///
/// # Safety
/// As `connect(2)`: `addr` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let real = real_connect();
    if IN_QSOCK.with(|f| f.get()) || !is_remote_inet(addr, len) {
        return real(fd, addr, len);
    }
    let Some(p) = params() else { return real(fd, addr, len) };
    let params = match p {
        Ok(p) => p,
        Err(e) => {
            eprintln!("qsock: {PARAMS_ENV} is not valid: {e}");
            set_errno(libc::EINVAL);
            return -1;
        }
    };
    IN_QSOCK.with(|f| f.set(true));
    // SAFETY: the caller's descriptor, borrowed for the call only.
    let r = qsock::qattach(BorrowedFd::borrow_raw(fd), params);
    IN_QSOCK.with(|f| f.set(false));
    match r {
        Ok(_) => {}
        Err(e) if matches!(e.kind, ErrorKind::NoInterface | ErrorKind::InvalidParams | ErrorKind::CapacityExceeded) => {
            eprintln!("qsock: {e}");
            set_errno(if e.kind == ErrorKind::InvalidParams { libc::EINVAL } else { libc::ENETUNREACH });
            return -1;
        }
        // Already managed (a second connect of a UDP socket) or bound by the program: leave it as it is.
        Err(e) if matches!(e.kind, ErrorKind::AlreadyManaged | ErrorKind::SocketInUse | ErrorKind::BadSocket) => {}
        Err(e) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                eprintln!("qsock: sockets run unmanaged: {e}");
            }
        }
    }
    real(fd, addr, len)
}

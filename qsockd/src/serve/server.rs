//! The Unix `SOCK_SEQPACKET` server applications talk to. One JSON request
//! per message, the socket being managed attached as `SCM_RIGHTS`. A bad
//! request gets an error answer and the connection stays usable.
use std::{
    io::{IoSlice, IoSliceMut},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use nix::sys::socket::{
    accept4, bind, getsockopt, listen, recvmsg, sendmsg, socket, sockopt, AddressFamily, Backlog, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};
use qsock::{
    proto::{Request, Response, MAX_MESSAGE_BYTES},
    ErrorKind, QsockError,
};
use tokio::{io::unix::AsyncFd, sync::RwLock};

use crate::{
    config::Config,
    kernel::diag,
    multipath::Multipath,
    ops::{Peer, Registry},
    state::sockinfo,
};

/// Numbers client connections.
static NEXT_CONN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Binds the listening socket at `cfg.socket` with `cfg.socket_mode`,
/// replacing a stale socket file.
pub fn bind_listener(cfg: &Config) -> Result<OwnedFd> {
    let path = &cfg.socket;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if path.exists() {
        if qsock::Client::connect(path).is_ok() {
            anyhow::bail!("another qsockd already serves {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("remove stale {}", path.display()))?;
    }
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)?;
    bind(fd.as_raw_fd(), &UnixAddr::new(path.as_path())?).with_context(|| format!("bind {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let mut mode = cfg.socket_mode_bits()?;
    if let Some(g) = &cfg.socket_group {
        let gid = nix::unistd::Group::from_name(g)?.with_context(|| format!("no group {g:?}"))?.gid;
        nix::unistd::chown(path.as_path(), None, Some(gid)).with_context(|| format!("chown {} to group {g}", path.display()))?;
        mode |= 0o060;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    listen(&fd, Backlog::new(128)?)?;
    Ok(fd)
}

/// Accepts clients forever; each gets its own task. Socket requests go to
/// `registry`, subflow requests to `multipath`.
pub async fn serve(listener: OwnedFd, registry: Arc<RwLock<Registry>>, multipath: Arc<Multipath>) -> Result<()> {
    // SAFETY: OwnedFd keeps the same open descriptor for the AsyncFd's lifetime.
    let listener = unsafe { AsyncFd::register(listener) }.map_err(|e| anyhow::anyhow!("register listener: {e}"))?;
    loop {
        let mut guard = listener.readable().await?;
        let accepted = guard.try_io(|fd| accept4(fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK).map_err(Into::into));
        match accepted {
            Ok(Ok(raw)) => {
                // SAFETY: accept4 returned a fresh descriptor we now own.
                let conn = unsafe { OwnedFd::from_raw_fd(raw) };
                let (reg, mp) = (registry.clone(), multipath.clone());
                let id = NEXT_CONN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(async move {
                    if let Err(e) = client_loop(conn, id, reg.clone(), mp).await {
                        log::debug!("client connection {id} ended: {e:#}");
                    }
                    // Sockets attached over this connection are released with it.
                    reg.write().await.release_connection(id).await;
                });
            }
            Ok(Err(e)) => log::warn!("accept: {e}"),
            Err(_would_block) => continue,
        }
    }
}

/// One received message: its bytes, whether it was cut, and the descriptors it carried.
pub(super) struct Incoming {
    body: Vec<u8>,
    truncated: bool,
    fds: Vec<OwnedFd>,
}

pub(super) fn recv_one(fd: RawFd) -> std::io::Result<Option<Incoming>> {
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(v) = c {
            // SAFETY: the kernel installed these descriptors for us.
            fds.extend(v.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    let (n, truncated) = (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC) || msg.flags.contains(MsgFlags::MSG_CTRUNC));
    if n == 0 && fds.is_empty() {
        return Ok(None); // peer closed
    }
    buf.truncate(n);
    Ok(Some(Incoming { body: buf, truncated, fds }))
}

async fn client_loop(conn: OwnedFd, id: u64, registry: Arc<RwLock<Registry>>, multipath: Arc<Multipath>) -> Result<()> {
    let (uid, gid, pid) = getsockopt(&conn, sockopt::PeerCredentials).map(|c| (c.uid(), c.gid(), c.pid())).unwrap_or((u32::MAX, u32::MAX, 0));
    let peer = Peer { uid, gid, pid, conn: id };
    // SAFETY: OwnedFd keeps the same open descriptor for the AsyncFd's lifetime.
    let conn = unsafe { AsyncFd::register(conn) }.map_err(|e| anyhow::anyhow!("register connection: {e}"))?;
    loop {
        let incoming = loop {
            let mut guard = conn.readable().await?;
            match guard.try_io(|fd| recv_one(fd.as_raw_fd())) {
                Ok(r) => break r?,
                Err(_would_block) => continue,
            }
        };
        let Some(msg) = incoming else { return Ok(()) };
        let resp = match parse(&msg) {
            // The connection becomes the subscription's.
            Ok(Request::SubflowEvents) => match super::events::subscribe(&multipath, msg.fds) {
                Ok(sub) => {
                    send_response(&conn, &Response::Ok).await?;
                    return super::events::pump(&conn, sub).await;
                }
                Err(e) => Response::Error(e),
            },
            Ok(req) => handle(&registry, &multipath, peer, req, msg.fds).await,
            Err(e) => Response::Error(e),
        };
        send_response(&conn, &resp).await?;
    }
}

/// Sends `resp` as one message on `conn`, waiting while its queue is full.
/// Errors: the client is gone.
pub(super) async fn send_response(conn: &AsyncFd<OwnedFd>, resp: &Response) -> Result<()> {
    let body = serde_json::to_vec(resp)?;
    loop {
        let mut guard = conn.writable().await?;
        let sent = guard
            .try_io(|fd| sendmsg::<()>(fd.as_raw_fd(), &[IoSlice::new(&body)], &[], MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT, None).map_err(Into::into));
        match sent {
            Ok(r) => {
                r?;
                return Ok(());
            }
            Err(_would_block) => continue,
        }
    }
}

fn parse(msg: &Incoming) -> Result<Request, QsockError> {
    if msg.truncated {
        return Err(QsockError::new(ErrorKind::Malformed, format!("request larger than {MAX_MESSAGE_BYTES} bytes or with too many descriptors")));
    }
    serde_json::from_slice(&msg.body).map_err(|e| QsockError::new(ErrorKind::Malformed, format!("unreadable request: {e}")))
}

async fn handle(registry: &RwLock<Registry>, multipath: &Multipath, peer: Peer, req: Request, mut fds: Vec<OwnedFd>) -> Response {
    match handle_inner(registry, multipath, peer, req, &mut fds).await {
        Ok(r) => r,
        Err(e) => {
            log::debug!("request from uid {} refused: {e}", peer.uid);
            Response::Error(e)
        }
    }
    // `fds` drops here: qsockd keeps no reference to client sockets.
}

async fn handle_inner(registry: &RwLock<Registry>, multipath: &Multipath, peer: Peer, req: Request, fds: &mut Vec<OwnedFd>) -> Result<Response, QsockError> {
    let uid = peer.uid;
    let root_only = |what: &str| {
        if uid != 0 {
            Err(QsockError::new(ErrorKind::PermissionDenied, format!("{what} needs root (peer uid {uid})")))
        } else {
            Ok(())
        }
    };
    let sock = if req.needs_socket() {
        if fds.len() != 1 {
            return Err(QsockError::new(ErrorKind::Malformed, format!("request needs exactly one socket as SCM_RIGHTS, got {}", fds.len())));
        }
        Some(fds.remove(0))
    } else {
        None
    };
    let facts = match &sock {
        Some(fd) => Some(sockinfo::facts(fd.as_fd())?),
        None => None,
    };
    // Subflows: the caller holds the connection (it sent it); the path
    // manager serves them without the registry's lock.
    if req.is_subflow_op() {
        let fd = sock.as_ref().expect("checked").as_fd();
        return Ok(match req {
            Request::SubflowOpen { local, remote, wait_ms } => {
                Response::Subflow(Box::new(multipath.open_subflow(fd, &local, remote, Duration::from_millis(wait_ms.min(60_000))).await?))
            }
            Request::SubflowClose { id } => {
                multipath.close_subflow(fd, id).await?;
                Response::Ok
            }
            Request::SubflowBackup { id, backup } => {
                multipath.set_backup(fd, id, backup).await?;
                Response::Ok
            }
            _ => unreachable!("is_subflow_op"),
        });
    }
    // Reports share the registry; requests that change it have it alone.
    if !req.changes_state() {
        let reg = registry.read().await;
        return Ok(match req {
            Request::Interfaces => Response::Interfaces(reg.interfaces_info()),
            Request::List => Response::Sockets(reg.list(uid).await?),
            Request::Info => Response::Info(Box::new(reg.info(facts.as_ref().expect("checked"), sock.as_ref().expect("checked").as_fd()).await?)),
            _ => Response::Pong(env!("CARGO_PKG_VERSION").to_string()),
        });
    }
    let mut reg = registry.write().await;
    Ok(match req {
        Request::Init(p) => {
            root_only("qsockinit")?;
            reg.init(&p).await?;
            Response::Ok
        }
        Request::Teardown { device } => {
            root_only("teardown")?;
            reg.teardown(&device).await?;
            Response::Ok
        }
        Request::Attach(p) => Response::Attached(reg.attach(facts.as_ref().expect("checked"), sock.as_ref().expect("checked").as_fd(), peer, p).await?),
        Request::Change(p) => Response::Attached(reg.change(facts.as_ref().expect("checked"), p).await?),
        Request::Reclaim => Response::Attached(reg.reclaim(facts.as_ref().expect("checked"), peer)?),
        Request::Close => {
            reg.close(facts.as_ref().expect("checked").cookie).await?;
            Response::Ok
        }
        Request::Ping | Request::Interfaces | Request::List | Request::Info => unreachable!("reports are answered above"),
        Request::SubflowOpen { .. } | Request::SubflowClose { .. } | Request::SubflowBackup { .. } => unreachable!("subflow requests are answered above"),
        Request::SubflowEvents => unreachable!("subscriptions are taken in client_loop"),
    })
}

/// Each `interval`: samples managed sockets' counters for the rate,
/// refreshes the managed interfaces and removes drained classes; every
/// `release_every` (none: never) releases sockets closed without `qclose`
/// (the sock_diag sweep runs without the registry's lock); while an MPTCP
/// connection is pending, looks for it among those that fell back to TCP.
pub async fn housekeeping_loop(registry: Arc<RwLock<Registry>>, interval: Duration, release_every: Option<Duration>) {
    let mut tick = tokio::time::interval(interval);
    let mut last_release = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let held = if release_every.is_some_and(|p| last_release.elapsed() >= p) && !registry.read().await.sockets.is_empty() {
            last_release = tokio::time::Instant::now();
            let taken_ns = qsock::monotonic_now_ns();
            diag::off_thread("sock_diag sweep", log::Level::Debug, diag::held_cookies).await.map(|h| (h, taken_ns))
        } else {
            None
        };
        // Connections placed before they connected whose peer fell back to TCP (no event tells).
        let fallbacks = if registry.read().await.has_pending() { diag::off_thread("mptcp_diag", log::Level::Debug, diag::mptcp_fallbacks).await } else { None };
        let mut reg = registry.write().await;
        if let Some(f) = fallbacks.filter(|f| !f.is_empty()) {
            reg.settle_fallbacks(&f).await;
        }
        let now = qsock::monotonic_now_ns();
        reg.sample(now);
        reg.refresh_interfaces(now).await;
        reg.sample_rtt(now);
        if let Some((held, taken_ns)) = held {
            reg.release_closed(&held, taken_ns).await;
        }
        reg.sweep().await;
    }
}

/// Removes the socket file (on shutdown).
pub fn remove_socket(path: &Path) {
    let _ = std::fs::remove_file(path);
}

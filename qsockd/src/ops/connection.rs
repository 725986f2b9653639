//! QoS that follows an MPTCP connection onto every interface it uses (issue
//! 16, item 2). The data path sees each subflow's cookie, never the
//! application's socket, so each subflow is managed as a stream of its own
//! on the interface it leaves by, with the connection's parameters: the
//! reservation is replicated (each interface gives the connection its
//! whole guarantee, and admission checks it there). Subflows join and leave
//! as the path manager reports them ([`Registry::on_subflow`]); the
//! connection goes with the application's `qclose`, its client connection,
//! or the kernel's `CLOSED` event.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    os::fd::{AsRawFd, BorrowedFd},
};

use nix::sys::socket::{getpeername, getsockname, SockaddrStorage};
use qsock::{AttachInfo, ErrorKind, MultipathQos, QInfo, QosParams, QsockError, SubflowQos};

use super::{Peer, Registry};
use crate::{multipath::SubflowNotice, state::sockinfo::SocketFacts};

/// A managed MPTCP connection.
pub struct MptcpConnection {
    /// Local token (0 after a fallback to TCP).
    pub token: u32,
    /// The peer has no MPTCP: one subflow, plain TCP.
    pub fallback: bool,
    /// Parameters every subflow gets (with its own device).
    pub params: QosParams,
    /// Who attached it.
    pub owner: Peer,
    /// Subflows, keyed by the order they came.
    pub subflows: BTreeMap<u64, SubflowEntry>,
    next: u64,
}

/// One subflow of a managed connection.
pub struct SubflowEntry {
    /// Local end.
    pub local: SocketAddr,
    /// Remote end.
    pub remote: SocketAddr,
    /// Interface holding the local address.
    pub interface: Option<String>,
    /// Its cookie, when sock_diag found it.
    pub cookie: u64,
    /// Managed on its interface (the cookie is in the socket table), or why not.
    pub managed: Result<(), String>,
}

fn socket_addr(s: SockaddrStorage) -> Option<SocketAddr> {
    s.as_sockaddr_in().map(|v| SocketAddr::from((v.ip(), v.port()))).or_else(|| s.as_sockaddr_in6().map(|v| SocketAddr::from((v.ip(), v.port()))))
}

/// A subflow's (local, remote) ends.
type Ends = (SocketAddr, SocketAddr);

/// The subflows' ends, with the token: from `MPTCP_FULL_INFO`, or after a
/// fallback the socket's own ends (its one subflow). Established ones only.
fn subflow_ends(sock: BorrowedFd<'_>) -> Result<(u32, bool, Vec<Ends>), QsockError> {
    match qsock::qsubflows(sock) {
        Ok(c) => Ok((c.token, false, c.subflows.into_iter().filter(|s| s.state == qsock::TcpState::Established).map(|s| (s.local, s.remote)).collect())),
        Err(e) if e.kind == ErrorKind::NotMultipath => {
            let local = getsockname::<SockaddrStorage>(sock.as_raw_fd()).ok().and_then(socket_addr);
            let remote = getpeername::<SockaddrStorage>(sock.as_raw_fd()).ok().and_then(socket_addr);
            match (local, remote) {
                (Some(l), Some(r)) => Ok((0, true, vec![(l, r)])),
                _ => Err(QsockError::new(
                    ErrorKind::InvalidParams,
                    "attach an MPTCP socket once it is connected (its subflows carry the QoS, and it has none before)",
                )),
            }
        }
        Err(e) => Err(e),
    }
}

impl Registry {
    /// `qattach` of an MPTCP socket: the connection is recorded and each
    /// established subflow managed on its interface with `params` (a
    /// `device` in `params` limits the guarantee to that interface; without
    /// one, every interface qsock manages that a subflow uses gives it).
    /// Subflows opened later join as they are established.
    ///
    /// Errors: [`ErrorKind::AlreadyManaged`], [`ErrorKind::InvalidParams`]
    /// (not connected yet), and when no subflow could be managed, the first
    /// subflow's refusal (e.g. [`ErrorKind::CapacityExceeded`],
    /// [`ErrorKind::NotInitialized`]): nothing is then booked. Subflows
    /// refused while another was admitted are named in the answer's warning.
    pub(crate) async fn attach_connection(
        &mut self,
        facts: &SocketFacts,
        sock: BorrowedFd<'_>,
        peer: Peer,
        params: QosParams,
    ) -> Result<AttachInfo, QsockError> {
        if self.connections.contains_key(&facts.cookie) {
            return Err(QsockError::new(ErrorKind::AlreadyManaged, "the connection is already managed; use qchange"));
        }
        let (token, fallback, ends) = subflow_ends(sock)?;
        let cookies = tokio::task::spawn_blocking({
            let ends = ends.clone();
            move || crate::kernel::diag::tcp_cookies(&ends)
        })
        .await
        .map_err(|e| QsockError::new(ErrorKind::Kernel, format!("sock_diag: {e}")))?
        .map_err(|e| QsockError::new(ErrorKind::Kernel, format!("sock_diag: {e}")))?;
        self.connections.insert(facts.cookie, MptcpConnection { token, fallback, params, owner: peer, subflows: BTreeMap::new(), next: 0 });
        let mut first_ok: Option<AttachInfo> = None;
        let mut first_err: Option<QsockError> = None;
        let mut refused = Vec::new();
        for (local, remote) in ends {
            match self.add_subflow(facts.cookie, local, remote, cookies.get(&(local, remote)).copied()).await {
                Ok(info) => {
                    first_ok.get_or_insert(info);
                }
                Err(e) => {
                    refused.push(format!("{local} -> {remote}: {}", e.message));
                    first_err.get_or_insert(e);
                }
            }
        }
        match (first_ok, first_err) {
            (Some(mut info), _) => {
                info.cookie = facts.cookie;
                if !refused.is_empty() {
                    info.warning = Some(format!("subflows without QoS: {}", refused.join("; ")));
                }
                log::info!("MPTCP connection {token:08x} (socket {}) managed{}", facts.cookie, if fallback { " (fallen back to TCP)" } else { "" });
                Ok(info)
            }
            (None, e) => {
                self.release_mptcp(facts.cookie).await;
                Err(e.unwrap_or_else(|| QsockError::new(ErrorKind::InvalidParams, "the connection has no established subflow")))
            }
        }
    }

    /// Manages subflow (`local`, `remote`, `cookie`) of connection `app` on
    /// its interface and records it (with its refusal, if any).
    async fn add_subflow(&mut self, app: u64, local: SocketAddr, remote: SocketAddr, cookie: Option<u64>) -> Result<AttachInfo, QsockError> {
        let interface = qsock::subflows::interface_holding(local.ip());
        let Some(conn) = self.connections.get(&app) else { return Err(QsockError::new(ErrorKind::NotManaged, "the connection is no longer managed")) };
        let (owner, mut params) = (conn.owner, conn.params.clone());
        let result = match (cookie, &interface) {
            (None, _) => Err(QsockError::new(ErrorKind::Kernel, format!("sock_diag did not list the subflow {local} -> {remote}"))),
            (_, None) => Err(QsockError::new(ErrorKind::NoInterface, format!("no interface holds {}", local.ip()))),
            (Some(_), Some(i)) if params.device.as_ref().is_some_and(|d| d != i) => Err(QsockError::new(
                ErrorKind::NoInterface,
                format!("on {i}, not on {} the connection was attached to", params.device.as_deref().unwrap_or("")),
            )),
            (Some(c), Some(i)) => {
                params.device = Some(i.clone());
                let facts = SocketFacts {
                    cookie: c,
                    domain: if local.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 },
                    sock_type: libc::SOCK_STREAM,
                    protocol: libc::IPPROTO_TCP,
                };
                self.attach_stream(&facts, None, owner, params, Some(app)).await
            }
        };
        if let Some(conn) = self.connections.get_mut(&app) {
            let key = conn.next;
            conn.next += 1;
            let managed = result.as_ref().map(|_| ()).map_err(|e| e.message.clone());
            conn.subflows.insert(key, SubflowEntry { local, remote, interface, cookie: cookie.unwrap_or(0), managed });
        }
        result
    }

    /// Follows the path manager: a subflow of a managed connection that
    /// was established is managed on its interface; one that closed is
    /// released; a connection that closed is released whole.
    pub async fn on_subflow(&mut self, n: SubflowNotice) {
        let find = |token: u32| self.connections.iter().find(|(_, c)| c.token == token && !c.fallback).map(|(a, _)| *a);
        match n {
            SubflowNotice::Established { token, local, remote } => {
                let Some(app) = find(token) else { return };
                if self.connections[&app].subflows.values().any(|s| s.local == local && s.remote == remote) {
                    return;
                }
                let cookie = tokio::task::spawn_blocking(move || crate::kernel::diag::tcp_cookies(&[(local, remote)]))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .and_then(|m| m.get(&(local, remote)).copied());
                if let Err(e) = self.add_subflow(app, local, remote, cookie).await {
                    log::info!("MPTCP connection {token:08x}: subflow {local} -> {remote} without QoS: {}", e.message);
                }
            }
            SubflowNotice::Closed { token, local, remote } => {
                let Some(app) = find(token) else { return };
                let conn = self.connections.get_mut(&app).expect("found above");
                let Some(key) = conn.subflows.iter().find(|(_, s)| s.local == local && s.remote == remote).map(|(k, _)| *k) else { return };
                let sf = conn.subflows.remove(&key).expect("found above");
                if sf.managed.is_ok() {
                    let _ = self.close_stream(sf.cookie).await;
                }
            }
            SubflowNotice::ConnectionClosed { token } => {
                if let Some(app) = find(token) {
                    log::info!("MPTCP connection {token:08x} closed; released");
                    self.release_mptcp(app).await;
                }
            }
        }
    }

    /// Releases connection `app` and every subflow it manages; false if it
    /// is not a managed connection.
    pub(crate) async fn release_mptcp(&mut self, app: u64) -> bool {
        let Some(conn) = self.connections.remove(&app) else { return false };
        for sf in conn.subflows.into_values().filter(|s| s.managed.is_ok()) {
            let _ = self.close_stream(sf.cookie).await;
        }
        true
    }

    /// `qinfo` of a managed connection: its subflows' figures; the top
    /// level is the first managed subflow's (with the application's cookie).
    pub(crate) async fn connection_info(&self, app: u64, sock: BorrowedFd<'_>) -> Result<QInfo, QsockError> {
        let conn = self.connections.get(&app).expect("caller checked");
        let mut subflows = Vec::new();
        for sf in conn.subflows.values() {
            let qos = match &sf.managed {
                Ok(()) => {
                    let facts = SocketFacts { cookie: sf.cookie, domain: 0, sock_type: libc::SOCK_STREAM, protocol: libc::IPPROTO_TCP };
                    self.stream_info(&facts, sock).await.map(Box::new).map_err(|e| e.message)
                }
                Err(why) => Err(why.clone()),
            };
            subflows.push(SubflowQos { local: sf.local, remote: sf.remote, interface: sf.interface.clone(), cookie: sf.cookie, qos });
        }
        let mut top = subflows
            .iter()
            .find_map(|s| s.qos.as_ref().ok().map(|q| (**q).clone()))
            .ok_or_else(|| QsockError::new(ErrorKind::NotManaged, "no subflow of the connection is managed now"))?;
        top.cookie = app;
        top.multipath = Some(MultipathQos { token: conn.token, fallback: conn.fallback, subflows });
        Ok(top)
    }
}

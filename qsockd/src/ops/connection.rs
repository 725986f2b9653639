//! QoS that follows an MPTCP connection onto every interface it uses (issue
//! 16, item 2). The data path sees each subflow's cookie, never the
//! application's socket, so each subflow is managed as a stream of its own
//! on the interface it leaves by, with the connection's parameters: the
//! reservation is replicated (each interface gives the connection its
//! whole guarantee, and admission checks it there), or for an Aggregate
//! connection split over its interfaces (`split`). Subflows join and leave
//! as the path manager reports them ([`Registry::on_subflow`]); the
//! connection goes with the application's `qclose`, its client connection,
//! or the kernel's `CLOSED` event. Its books ([`ConnectionRecord`]) let a
//! restarted qsockd take it on again with every subflow's class.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    os::fd::{AsRawFd, BorrowedFd},
};

use nix::sys::socket::{getpeername, getsockname, SockaddrStorage};
use qsock::{AttachInfo, ErrorKind, MultipathQos, QInfo, QosParams, QsockError, SubflowQos};
use serde::{Deserialize, Serialize};

use super::{split, Peer, Registry};
use crate::{
    multipath::SubflowNotice,
    state::{sockets::UNCLAIMED, sockinfo::SocketFacts},
};

/// A managed MPTCP connection.
pub struct MptcpConnection {
    /// Local token (0 after a fallback to TCP).
    pub token: u32,
    /// The peer has no MPTCP: one subflow, plain TCP.
    pub fallback: bool,
    /// Attached before it connected: placed (bound to the chosen
    /// interface), waiting for its `ESTABLISHED` event to learn its token.
    pub pending: bool,
    /// The local end a pending connection was bound to, when its subflow
    /// roles were handed to the path manager ahead ([`crate::multipath::Multipath::expect_plan`]).
    pub planned_at: Option<SocketAddr>,
    /// Parameters every subflow gets (with its own device).
    pub params: QosParams,
    /// Who attached it.
    pub owner: Peer,
    /// Subflows, keyed by the order they came.
    pub subflows: BTreeMap<u64, SubflowEntry>,
    /// Interfaces it has had a subflow on (a split rate counts a planned
    /// interface before its first subflow there, not after its last).
    pub seen_on: BTreeSet<String>,
    next: u64,
}

/// What the books keep of a managed connection (not a pending one: it has
/// no class yet) for a restart.
#[derive(Serialize, Deserialize)]
pub struct ConnectionRecord {
    /// Local token (0 after a fallback to TCP).
    pub token: u32,
    /// The peer has no MPTCP.
    pub fallback: bool,
    /// Parameters every subflow gets.
    pub params: QosParams,
    /// uid, gid and pid of the client that attached it.
    pub owner: (u32, u32, i32),
    /// Its subflows, in the order they came.
    pub subflows: Vec<SubflowEntry>,
    /// Interfaces it has had a subflow on.
    #[serde(default)]
    pub seen_on: BTreeSet<String>,
}

/// One subflow of a managed connection.
#[derive(Clone, Serialize, Deserialize)]
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

/// What the registry knows of a subflow as a socket: a TCP stream.
fn subflow_facts(cookie: u64, local: SocketAddr) -> SocketFacts {
    SocketFacts { cookie, domain: if local.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 }, sock_type: libc::SOCK_STREAM, protocol: libc::IPPROTO_TCP }
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
    /// one, every interface qsock manages that a subflow uses gives it, or
    /// for an Aggregate rate its share: `split`).
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
        if matches!(getpeername::<SockaddrStorage>(sock.as_raw_fd()), Err(nix::Error::ENOTCONN)) {
            return self.place_connection(facts, sock, peer, params);
        }
        let (token, fallback, ends) = subflow_ends(sock)?;
        let cookies = tokio::task::spawn_blocking({
            let ends = ends.clone();
            move || crate::kernel::diag::tcp_cookies(&ends)
        })
        .await
        .map_err(|e| QsockError::new(ErrorKind::Kernel, format!("sock_diag: {e}")))?
        .map_err(|e| QsockError::new(ErrorKind::Kernel, format!("sock_diag: {e}")))?;
        if let (false, Some(&(initial, _))) = (fallback, ends.first()) {
            self.plan_subflows(token, &params.intents, initial);
        }
        self.connections.insert(
            facts.cookie,
            MptcpConnection {
                token,
                fallback,
                pending: false,
                planned_at: None,
                params,
                owner: peer,
                subflows: BTreeMap::new(),
                seen_on: BTreeSet::new(),
                next: 0,
            },
        );
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

    /// `qattach` of an MPTCP socket that is not connected yet (an
    /// intent-aware connect, `qsock-run --multipath`): without a device the
    /// policy chooses the interface of its initial subflow from the intents
    /// and the socket is bound to its address, as a TCP socket would be;
    /// the connection is recorded as pending, and once the kernel reports
    /// it established ([`SubflowNotice::ConnectionEstablished`]) its
    /// subflows get their classes. Until then it has no class (`classid`
    /// empty, said in the answer's warning).
    ///
    /// Errors: those of [`Registry::choose_interface`], and of the bind.
    fn place_connection(&mut self, facts: &SocketFacts, sock: BorrowedFd<'_>, peer: Peer, params: QosParams) -> Result<AttachInfo, QsockError> {
        let selection = match &params.device {
            Some(_) => None,
            None => Some(self.choose_interface(facts, sock, &params)?),
        };
        let mut planned_at = None;
        if let Some(s) = &selection {
            crate::state::sockinfo::bind_source(sock, s.source)?;
            log::info!("MPTCP socket {} placed on {} ({}: {})", facts.cookie, s.interface, s.policy, s.reason);
            // Bound: its port is known, so its subflow roles can wait for it.
            let local = getsockname::<SockaddrStorage>(sock.as_raw_fd()).ok().and_then(socket_addr);
            let domain = if s.source.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
            if let (Some(local), Some(mp)) = (local, &self.multipath) {
                if let Some((plan, why)) = crate::select::multipath::plan(&params.intents, &self.ifaces.candidates(domain), &s.interface) {
                    log::info!("MPTCP socket {} ({local}): subflow roles {why:?}, {:?}", facts.cookie, plan.urgency);
                    mp.expect_plan(local, plan);
                    planned_at = Some(local);
                }
            }
        }
        let device = selection.as_ref().map(|s| s.interface.clone()).or_else(|| params.device.clone()).unwrap_or_default();
        self.connections.insert(
            facts.cookie,
            MptcpConnection {
                token: 0,
                fallback: false,
                pending: true,
                planned_at,
                params,
                owner: peer,
                subflows: BTreeMap::new(),
                seen_on: BTreeSet::new(),
                next: 0,
            },
        );
        Ok(AttachInfo {
            cookie: facts.cookie,
            device,
            classid: String::new(),
            warning: Some("an MPTCP socket not yet connected: each subflow gets its class once the connection is established".into()),
            selection,
        })
    }

    /// A pending connection's `ESTABLISHED` event: the MPTCP socket with
    /// that token (found by mptcp_diag) is the pending connection; its
    /// initial subflow is managed now. A peer without MPTCP sends no such
    /// event: [`Registry::settle_fallbacks`] finds such a connection.
    async fn on_connection_established(&mut self, token: u32, local: SocketAddr, remote: SocketAddr) {
        if !self.connections.values().any(|c| c.pending) {
            return;
        }
        let found = tokio::task::spawn_blocking(move || {
            let app = crate::kernel::diag::mptcp_progress()?.get(&token).map(|p| p.cookie);
            Ok::<_, std::io::Error>((app, crate::kernel::diag::tcp_cookies(&[(local, remote)])?.get(&(local, remote)).copied()))
        })
        .await;
        let (Some(app), cookie) = (match found {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return log::warn!("MPTCP connection {token:08x}: sock_diag: {e}"),
            Err(e) => return log::error!("MPTCP connection {token:08x}: {e}"),
        }) else {
            return;
        };
        let Some(conn) = self.connections.get_mut(&app).filter(|c| c.pending) else { return };
        conn.pending = false;
        conn.token = token;
        if conn.planned_at.is_none() {
            let intents = conn.params.intents.clone();
            self.plan_subflows(token, &intents, local);
        }
        match self.add_subflow(app, local, remote, cookie).await {
            Ok(info) => {
                log::info!("MPTCP connection {token:08x} (socket {app}) established; its initial subflow has class {} on {}", info.classid, info.device)
            }
            Err(e) => log::info!("MPTCP connection {token:08x}: initial subflow {local} -> {remote} without QoS: {}", e.message),
        }
    }

    /// Whether a connection is placed and waiting to be established.
    pub fn has_pending(&self) -> bool {
        self.connections.values().any(|c| c.pending)
    }

    /// Pending connections whose peer had no MPTCP: they never get an
    /// `ESTABLISHED` event, so the housekeeping tick looks for them in
    /// `fallbacks` (cookie → ends, [`crate::kernel::diag::mptcp_fallbacks`])
    /// while any is pending; each is then managed as TCP through its one
    /// subflow, as a fallen-back connection attached after it connected.
    pub async fn settle_fallbacks(&mut self, fallbacks: &std::collections::HashMap<u64, (SocketAddr, SocketAddr)>) {
        let settled: Vec<(u64, SocketAddr, SocketAddr)> =
            self.connections.iter().filter(|(_, c)| c.pending).filter_map(|(app, _)| fallbacks.get(app).map(|&(l, r)| (*app, l, r))).collect();
        for (app, local, remote) in settled {
            let Some(conn) = self.connections.get_mut(&app) else { continue };
            conn.pending = false;
            conn.fallback = true;
            if let (Some(at), Some(mp)) = (conn.planned_at.take(), &self.multipath) {
                mp.forget_expected_plan(at);
            }
            let cookie = crate::kernel::diag::tcp_cookie(local, remote).await;
            match self.add_subflow(app, local, remote, cookie).await {
                Ok(info) => {
                    log::info!("MPTCP socket {app} fell back to TCP (the peer has no MPTCP); managed as TCP, class {} on {}", info.classid, info.device)
                }
                Err(e) => log::info!("MPTCP socket {app} fell back to TCP; its subflow {local} -> {remote} has no QoS: {}", e.message),
            }
        }
    }

    /// Hands the path manager the subflow roles connection `token`'s
    /// intents ask for (`select::multipath`), the initial subflow leaving
    /// from `initial`; nothing when the intents say nothing of multipath.
    fn plan_subflows(&self, token: u32, intents: &qsock::Intents, initial: SocketAddr) {
        let (Some(mp), Some(name)) = (self.multipath.clone(), qsock::subflows::interface_holding(initial.ip())) else { return };
        let domain = if initial.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        let Some((plan, why)) = crate::select::multipath::plan(intents, &self.ifaces.candidates(domain), &name) else { return };
        log::info!("MPTCP connection {token:08x}: subflow roles {why:?}, {:?}", plan.urgency);
        tokio::spawn(mp.set_plan(token, plan));
    }

    /// `qchange` of managed connection `app`: every managed subflow gets
    /// `params` on its own interface (each is a stream: same-device change,
    /// queued packets kept), and later subflows get them too. All or
    /// nothing: when one subflow's change is refused (e.g. admission on its
    /// interface), those already changed are changed back, and the refusal
    /// is returned.
    ///
    /// Errors: [`ErrorKind::NotManaged`] (not established yet, or no subflow
    /// managed), [`ErrorKind::InvalidParams`] (another `device` than the
    /// connection was attached with: subflows stay on their interfaces),
    /// and those of `qchange` for a subflow.
    pub(crate) async fn change_connection(&mut self, app: u64, mut params: QosParams) -> Result<AttachInfo, QsockError> {
        let conn = self.connections.get(&app).expect("caller checked");
        if conn.pending {
            return Err(QsockError::new(ErrorKind::NotManaged, "the MPTCP connection is not established yet: change it once it is"));
        }
        match (&params.device, &conn.params.device) {
            (None, d) => params.device = d.clone(),
            (Some(d), Some(c)) if d == c => {}
            (Some(d), _) => {
                return Err(QsockError::new(
                    ErrorKind::InvalidParams,
                    format!("an MPTCP connection's subflows stay on their interfaces; give no device (or the one it was attached with), not {d}"),
                ))
            }
        }
        let targets: Vec<(SocketFacts, String)> =
            conn.subflows.values().filter(|s| s.managed.is_ok()).filter_map(|s| s.interface.clone().map(|i| (subflow_facts(s.cookie, s.local), i))).collect();
        if targets.is_empty() {
            return Err(QsockError::new(ErrorKind::NotManaged, "no subflow of the connection is managed now"));
        }
        // Each subflow's new parameters: the whole set, or its share of a split rate.
        let on: Vec<String> = targets.iter().map(|(_, d)| d.clone()).collect();
        let shares = split::is_split(&params).then(|| self.shares(&params, &on, &conn.seen_on));
        let mut changed: Vec<(SocketFacts, String, QosParams)> = Vec::new();
        let mut first: Option<AttachInfo> = None;
        for (k, (facts, dev)) in targets.into_iter().enumerate() {
            let was = self.sockets.get(facts.cookie).map(|m| m.params.clone()).expect("managed subflow");
            let new = match &shares {
                Some(s) => split::share_of(&params, s[k]),
                None => params.clone(),
            };
            match Box::pin(self.change(&facts, QosParams { device: Some(dev.clone()), ..new })).await {
                Ok(info) => {
                    first.get_or_insert(info);
                    changed.push((facts, dev, was));
                }
                Err(e) => {
                    for (f, d, was) in changed {
                        if let Err(e2) = Box::pin(self.change(&f, QosParams { device: Some(d.clone()), ..was })).await {
                            log::error!("MPTCP connection (socket {app}): restoring subflow {} on {d}: {e2}", f.cookie);
                        }
                    }
                    return Err(QsockError::new(e.kind, format!("subflow on {dev}: {}", e.message)));
                }
            }
        }
        self.connections.get_mut(&app).expect("still here").params = params;
        self.record_connection(app);
        let mut info = first.expect("at least one target");
        info.cookie = app;
        Ok(info)
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
                if split::is_split(&params) {
                    let mut on: Vec<String> = self.managed_subflows(app).into_iter().map(|(_, i)| i).collect();
                    on.push(i.clone());
                    let seen = self.connections.get(&app).map(|c| c.seen_on.clone()).unwrap_or_default();
                    let share = *self.shares(&params, &on, &seen).last().expect("one pushed");
                    params = split::share_of(&params, share);
                }
                params.device = Some(i.clone());
                self.attach_stream(&subflow_facts(c, local), None, owner, params, Some(app)).await
            }
        };
        if result.is_ok() {
            Box::pin(self.reshare(app)).await;
        }
        if let Some(conn) = self.connections.get_mut(&app) {
            let key = conn.next;
            conn.next += 1;
            let managed = result.as_ref().map(|_| ()).map_err(|e| e.message.clone());
            conn.seen_on.extend(interface.clone());
            conn.subflows.insert(key, SubflowEntry { local, remote, interface, cookie: cookie.unwrap_or(0), managed });
        }
        self.record_connection(app);
        result
    }

    /// (cookie, interface) of each managed subflow of connection `app`.
    fn managed_subflows(&self, app: u64) -> Vec<(u64, String)> {
        let Some(c) = self.connections.get(&app) else { return Vec::new() };
        c.subflows.values().filter(|s| s.managed.is_ok()).filter_map(|s| s.interface.clone().map(|i| (s.cookie, i))).collect()
    }

    /// Each subflow's share of split connection `params`' rate when it
    /// leaves by `on[k]` (the first is the initial subflow's interface):
    /// the interfaces its plan gives active subflows (`select::multipath`:
    /// usable managed interfaces its Require/Prohibit allow), and any
    /// other it has a subflow on, in proportion to their link rate; the
    /// subflows of one interface evenly ([`split::proportional`]). So the
    /// first subflow holds only its interface's share until the others join;
    /// a planned interface whose last subflow closed (`seen_on`) no longer
    /// counts, its share going to the others.
    fn shares(&self, params: &QosParams, on: &[String], seen_on: &BTreeSet<String>) -> Vec<u64> {
        let total_bps = split::total_bps(params);
        let Some(first) = on.first() else { return Vec::new() };
        let candidates: Vec<_> =
            self.ifaces.candidates(libc::AF_INET).into_iter().chain(self.ifaces.candidates(libc::AF_INET6)).filter(|c| c.unusable.is_none()).collect();
        let planned = crate::select::multipath::roles(&params.intents, &candidates, first).unwrap_or_default();
        let mut distinct: Vec<&String> = on
            .iter()
            .chain(
                planned
                    .iter()
                    .filter(|(n, r, _)| *r == crate::select::multipath::SubflowRole::Active && !seen_on.contains(n) && self.devices.contains_key(n))
                    .map(|(n, _, _)| n),
            )
            .collect();
        distinct.sort();
        distinct.dedup();
        let rates: Vec<u64> = distinct.iter().map(|d| self.devices.get(d.as_str()).map_or(1, |x| x.state.link_rate_bps)).collect();
        let per_interface = split::proportional(total_bps, &rates);
        let mut out = vec![0; on.len()];
        for (d, share) in distinct.iter().zip(per_interface) {
            let mine: Vec<usize> = (0..on.len()).filter(|&k| on[k] == **d).collect();
            for (k, part) in mine.iter().zip(split::proportional(share, &vec![1; mine.len()])) {
                out[*k] = part;
            }
        }
        out
    }

    /// Divides a split connection's rate again over the subflows it has
    /// now (one came or went): shrinking shares first, so no interface is
    /// oversubscribed on the way; a grown share its interface refuses keeps
    /// its old one, logged. Nothing for a replicated connection.
    async fn reshare(&mut self, app: u64) {
        let Some(params) = self.connections.get(&app).map(|c| c.params.clone()).filter(split::is_split) else { return };
        let subflows = self.managed_subflows(app);
        let on: Vec<String> = subflows.iter().map(|(_, i)| i.clone()).collect();
        let seen = self.connections.get(&app).map(|c| c.seen_on.clone()).unwrap_or_default();
        let shares = self.shares(&params, &on, &seen);
        let mut steps: Vec<(i128, u64, String, u64)> = Vec::new();
        for ((cookie, dev), share) in subflows.into_iter().zip(shares) {
            let now = self.sockets.get(cookie).map_or(0, |m| split::total_bps(&m.params));
            if now != share {
                steps.push((share as i128 - now as i128, cookie, dev, share));
            }
        }
        steps.sort_by_key(|s| s.0);
        for (_, cookie, dev, share) in steps {
            let local = self.connections[&app].subflows.values().find(|s| s.cookie == cookie).map(|s| s.local).expect("managed");
            let p = QosParams { device: Some(dev.clone()), ..split::share_of(&params, share) };
            match Box::pin(self.change(&subflow_facts(cookie, local), p)).await {
                Ok(_) => log::info!("MPTCP connection (socket {app}): subflow on {dev} now holds {share} bit/s of the split rate"),
                Err(e) => log::warn!("MPTCP connection (socket {app}): subflow on {dev} keeps its share, {share} bit/s refused: {}", e.message),
            }
        }
    }

    /// Records connection `app` for a restart (a pending one has nothing
    /// to recover); a failure is logged (the connection is served, it would
    /// only not survive a restart).
    pub(crate) fn record_connection(&self, app: u64) {
        let Some(c) = self.connections.get(&app).filter(|c| !c.pending) else { return };
        let record = ConnectionRecord {
            token: c.token,
            fallback: c.fallback,
            params: c.params.clone(),
            owner: (c.owner.uid, c.owner.gid, c.owner.pid),
            subflows: c.subflows.values().cloned().collect(),
            seen_on: c.seen_on.clone(),
        };
        if let Err(e) = self.books.save_connection(app, &record) {
            log::error!("MPTCP connection {:08x} (socket {app}): cannot record it for a restart: {e}", c.token);
        }
    }

    /// Takes on again the connections a previous qsockd managed (after
    /// [`Registry::open`] recovered their subflow streams): a connection
    /// the kernel still has keeps every subflow stream that was recovered,
    /// waiting for its client to claim it ([`Registry::reclaim`]); one that
    /// closed meanwhile is released, and so are subflow streams whose
    /// connection has no record. Subflows opened or closed while no qsockd
    /// ran are caught up by the path manager's notices at its start.
    pub(crate) async fn recover_connections(&mut self) {
        let records: Vec<(u64, ConnectionRecord)> = self.books.load_connections();
        // Without the dump (logged), every record is kept.
        let live = crate::kernel::diag::off_thread("recovering MPTCP connections: mptcp_diag", log::Level::Warn, crate::kernel::diag::mptcp_progress).await;
        for (app, rec) in records {
            let kept: Vec<SubflowEntry> =
                rec.subflows.into_iter().filter(|sf| sf.managed.is_err() || self.sockets.get(sf.cookie).is_some_and(|m| m.parent == Some(app))).collect();
            let open = match &live {
                _ if rec.fallback => kept.iter().any(|sf| sf.managed.is_ok()),
                Some(live) => live.get(&rec.token).is_some_and(|p| p.cookie == app),
                None => true,
            };
            if !open {
                log::info!("MPTCP connection {:08x} (socket {app}) closed while qsockd was down; released", rec.token);
                for sf in kept.iter().filter(|sf| sf.managed.is_ok()) {
                    let _ = self.close_stream(sf.cookie).await;
                }
                self.books.remove_connection(app);
                continue;
            }
            let (uid, gid, pid) = rec.owner;
            log::info!(
                "MPTCP connection {:08x} (socket {app}) recovered with {} subflow streams",
                rec.token,
                kept.iter().filter(|sf| sf.managed.is_ok()).count()
            );
            let next = kept.len() as u64;
            self.connections.insert(
                app,
                MptcpConnection {
                    token: rec.token,
                    fallback: rec.fallback,
                    pending: false,
                    planned_at: None,
                    params: rec.params,
                    owner: Peer { uid, gid, pid, conn: UNCLAIMED },
                    subflows: (0..).zip(kept).collect(),
                    seen_on: rec.seen_on,
                    next,
                },
            );
            self.record_connection(app);
        }
        let orphans: Vec<u64> = self.sockets.iter().filter(|(_, m)| m.parent.is_some_and(|a| !self.connections.contains_key(&a))).map(|(c, _)| c).collect();
        for c in orphans {
            log::info!("subflow stream {c} has no connection record; released");
            let _ = self.close_stream(c).await;
        }
    }

    /// A recovered connection's subflow roles, given to the path manager
    /// again once it runs (its plans did not survive the restart).
    pub(crate) fn replan_recovered(&self) {
        for c in self.connections.values().filter(|c| !c.pending && !c.fallback) {
            if let Some(first) = c.subflows.values().next() {
                self.plan_subflows(c.token, &c.params.intents, first.local);
            }
        }
    }

    /// Follows the path manager: a subflow of a managed connection that
    /// was established is managed on its interface; one that closed is
    /// released; a connection that closed is released whole.
    pub async fn on_subflow(&mut self, n: SubflowNotice) {
        let find = |token: u32| self.connections.iter().find(|(_, c)| c.token == token && !c.fallback && !c.pending).map(|(a, _)| *a);
        match n {
            SubflowNotice::ConnectionEstablished { token, local, remote } => self.on_connection_established(token, local, remote).await,
            SubflowNotice::Established { token, local, remote } => {
                let Some(app) = find(token) else { return };
                if self.connections[&app].subflows.values().any(|s| s.local == local && s.remote == remote) {
                    return;
                }
                let cookie = crate::kernel::diag::tcp_cookie(local, remote).await;
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
                    self.reshare(app).await;
                }
                self.record_connection(app);
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
        self.books.remove_connection(app);
        if let (true, Some(local), Some(mp)) = (conn.pending, conn.planned_at, &self.multipath) {
            mp.forget_expected_plan(local);
        }
        for sf in conn.subflows.into_values().filter(|s| s.managed.is_ok()) {
            let _ = self.close_stream(sf.cookie).await;
        }
        true
    }

    /// `qinfo` of a managed connection: its subflows' figures; the top
    /// level is the first managed subflow's (with the application's cookie).
    pub(crate) async fn connection_info(&self, app: u64, sock: BorrowedFd<'_>) -> Result<QInfo, QsockError> {
        let conn = self.connections.get(&app).expect("caller checked");
        if conn.pending {
            return Err(QsockError::new(ErrorKind::NotManaged, "the MPTCP socket is placed but its connection is not established yet: no subflow has a class"));
        }
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
        if split::is_split(&conn.params) {
            // The application's guarantee is the sum of its subflows' shares.
            top.guaranteed_rate_bps = subflows.iter().filter_map(|s| s.qos.as_ref().ok()).map(|q| q.guaranteed_rate_bps).sum();
        }
        top.multipath = Some(MultipathQos { token: conn.token, fallback: conn.fallback, subflows });
        Ok(top)
    }
}

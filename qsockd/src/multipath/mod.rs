//! qsockd as the MPTCP path manager of its namespace (issue 16; Hesmans and
//! Bonaventure, *An enhanced socket API for Multipath TCP*, 2016, on the
//! upstream kernel's userspace path manager): it takes the namespace over
//! while it runs ([`pm_setting`]), follows the `mptcp_pm` events, and opens,
//! closes and prioritises subflows for the applications that hold the
//! connections. Its state is its own (not the socket registry's), so a join
//! that takes a few RTTs holds up nobody else's request.
mod adopt;
pub mod blackhole;
pub mod events;
pub mod handover;
pub mod pm_setting;
pub mod silence;
mod yielding;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    os::fd::BorrowedFd,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use qsock::{ErrorKind, QsockError, Subflow, SubflowLocal};
use tokio::sync::oneshot;

use crate::{
    config::{MultipathConfig, OpenSubflows},
    kernel::{
        mptcp_events::{EventKind, MptcpEvent, MptcpEvents},
        mptcp_pm::{CreateError, Limits, LocalEndpoint, PmClient},
    },
    select::multipath::{Plan, SubflowRole},
};

/// What the socket registry hears of the path manager's events: the
/// subflows QoS follows onto their interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubflowNotice {
    /// Connection `token` is established (its initial subflow).
    ConnectionEstablished {
        /// The connection's token.
        token: u32,
        /// The initial subflow's local end.
        local: SocketAddr,
        /// Its remote end.
        remote: SocketAddr,
    },
    /// A subflow of connection `token` is established.
    Established {
        /// The connection's token.
        token: u32,
        /// Local end.
        local: SocketAddr,
        /// Remote end.
        remote: SocketAddr,
    },
    /// A subflow of connection `token` closed.
    Closed {
        /// The connection's token.
        token: u32,
        /// Local end.
        local: SocketAddr,
        /// Remote end.
        remote: SocketAddr,
    },
    /// Connection `token` is gone.
    ConnectionClosed {
        /// The connection's token.
        token: u32,
    },
}

/// How long an automatic join may take before it is given up (logged).
const AUTO_JOIN_WAIT: Duration = Duration::from_secs(5);

/// A request waiting for the join it started.
struct Waiter {
    token: u32,
    local_ip: IpAddr,
    /// Local ports of the connection's subflows from that address before
    /// the join: the new subflow is the one with another port.
    known_ports: Vec<u16>,
    reply: oneshot::Sender<MptcpEvent>,
}

#[derive(Default)]
struct State {
    /// Per connection (token): the id given to each local address.
    local_ids: HashMap<u32, HashMap<IpAddr, u8>>,
    waiters: Vec<Waiter>,
    /// Requests waiting for their connection's `ESTABLISHED` event.
    established_waiters: Vec<(u32, oneshot::Sender<()>)>,
    /// The connections of the namespace and their subflows, from the events.
    tracked: HashMap<u32, Tracked>,
    /// Managed interfaces that are down now (no subflow is opened there).
    down: std::collections::HashSet<String>,
    /// Local ends of subflows found silent and being withdrawn.
    withdrawn: std::collections::HashSet<SocketAddr>,
    /// (connection, local address) of paths being probed after a blackhole.
    probing: std::collections::HashSet<(u32, IpAddr)>,
    /// Per connection whose intents speak of multipath: each interface's
    /// role (`select::multipath`); connections without one get a subflow
    /// on every interface (`open_subflows`).
    plans: HashMap<u32, Plan>,
    /// Plans of connections placed before they connected, by the local end
    /// they were bound to: taken up by their `ESTABLISHED` event, before
    /// any subflow is joined.
    expected_plans: HashMap<SocketAddr, Plan>,
    /// Subflows made backups because a latency-bound connection uses their
    /// interface ([`crate::select::multipath::yielded`]): (token, local end).
    yielded: std::collections::HashSet<(u32, SocketAddr)>,
}

/// A connection as the events describe it.
#[derive(Clone, Debug)]
pub(crate) struct Tracked {
    /// The initial subflow's remote end.
    remote: SocketAddr,
    /// This host accepted it (the peer opens the subflows).
    server_side: bool,
    /// Its subflows: local end, remote end, local address id.
    subflows: Vec<(SocketAddr, SocketAddr, u8)>,
}

impl State {
    /// Keeps [`State::tracked`] as the events describe the connections.
    fn track(&mut self, ev: &MptcpEvent) {
        let Some(token) = ev.token else { return };
        match (ev.kind, ev.local) {
            (EventKind::Established, Some(local)) => {
                if let Some(plan) = self.expected_plans.remove(&local) {
                    self.plans.insert(token, plan);
                }
                let Some(remote) = ev.remote else { return };
                self.tracked.insert(token, Tracked { remote, server_side: ev.server_side, subflows: vec![(local, remote, ev.local_id.unwrap_or(0))] });
            }
            (EventKind::SubEstablished, Some(local)) => {
                if let (Some(t), Some(remote)) = (self.tracked.get_mut(&token), ev.remote) {
                    t.subflows.retain(|(l, _, _)| *l != local);
                    t.subflows.push((local, remote, ev.local_id.unwrap_or(0)));
                }
            }
            (EventKind::SubClosed, Some(local)) => {
                self.withdrawn.remove(&local);
                self.yielded.remove(&(token, local));
                if let Some(t) = self.tracked.get_mut(&token) {
                    t.subflows.retain(|(l, _, _)| *l != local);
                }
            }
            (EventKind::Closed, _) => {
                self.tracked.remove(&token);
                self.plans.remove(&token);
                self.yielded.retain(|(t, _)| *t != token);
            }
            _ => {}
        }
    }

    /// The role its own plan gives interface `name` for connection
    /// `token`, Active when it has none.
    fn planned_role(&self, token: u32, name: &str) -> SubflowRole {
        self.plans.get(&token).and_then(|p| p.roles.get(name)).copied().unwrap_or(SubflowRole::Active)
    }

    /// The role of interface `name` for connection `token`: its plan's,
    /// made a backup where it yields to a latency-bound connection.
    fn role(&self, token: u32, name: &str) -> SubflowRole {
        let planned = self.planned_role(token, name);
        match self.plans.get(&token) {
            Some(p) => crate::select::multipath::yielded(planned, p.urgency, name, &p.initial, self.latency_bound_on(token, name)),
            None => planned,
        }
    }

    /// The id of `addr` in connection `token`: the one it has, or the
    /// lowest free non-zero one (0 belongs to the initial subflow's address).
    fn local_id(&mut self, token: u32, addr: IpAddr) -> Result<u8, QsockError> {
        let ids = self.local_ids.entry(token).or_default();
        if let Some(&id) = ids.get(&addr) {
            return Ok(id);
        }
        let id = (1..=u8::MAX)
            .find(|i| !ids.values().any(|v| v == i))
            .ok_or_else(|| QsockError::new(ErrorKind::CapacityExceeded, "the connection has used every local address id"))?;
        ids.insert(addr, id);
        Ok(id)
    }
}

/// The path manager. Subflow operations answer [`ErrorKind::Unsupported`]
/// with the reason when multipath is off (not enabled, or the kernel lacks it).
pub struct Multipath {
    pm: tokio::sync::Mutex<PmClient>,
    state: Mutex<State>,
    /// Why subflow operations are refused, if they are.
    off: Option<String>,
    /// Interfaces subflows may use (the managed ones; empty: any).
    interfaces: Vec<String>,
    /// Which subflows qsockd opens on its own.
    open: OpenSubflows,
    /// Where subflow events go (the socket registry).
    notices: tokio::sync::mpsc::UnboundedSender<SubflowNotice>,
    /// Subflow events for applications (`(token, event)`, [`events`]).
    events: tokio::sync::broadcast::Sender<(u32, qsock::SubflowEvent)>,
    state_dir: PathBuf,
}

impl Multipath {
    /// Takes the namespace's path manager over (when `cfg.enabled`) and
    /// starts following its events. Never fails: a kernel without MPTCP,
    /// or a refused switch, leaves multipath off with the reason logged
    /// and given to every subflow request.
    pub async fn start(
        cfg: &MultipathConfig,
        interfaces: Vec<String>,
        state_dir: PathBuf,
        notices: tokio::sync::mpsc::UnboundedSender<SubflowNotice>,
    ) -> Arc<Self> {
        let mut pm = PmClient::new();
        let off = if !cfg.enabled {
            Some("qsockd runs without multipath ([multipath] enabled = false in its config)".to_string())
        } else {
            match Self::take_over(cfg, &state_dir, &mut pm).await {
                Ok(events) => {
                    let mp = Arc::new(Self {
                        pm: tokio::sync::Mutex::new(pm),
                        state: Mutex::default(),
                        off: None,
                        interfaces,
                        open: cfg.open_subflows,
                        notices: notices.clone(),
                        events: tokio::sync::broadcast::channel(events::BACKLOG).0,
                        state_dir,
                    });
                    mp.adopt_existing().await;
                    tokio::spawn(Self::follow(Arc::downgrade(&mp), events));
                    if cfg.blackhole_check_ms > 0 {
                        tokio::spawn(Self::watch_silence(Arc::downgrade(&mp), Duration::from_millis(cfg.blackhole_check_ms)));
                    }
                    return mp;
                }
                Err(e) => {
                    log::error!("multipath: {e}; subflow requests will be refused");
                    Some(format!("multipath is off: {}", e.message))
                }
            }
        };
        Arc::new(Self {
            pm: tokio::sync::Mutex::new(pm),
            state: Mutex::default(),
            off,
            interfaces,
            open: cfg.open_subflows,
            notices,
            events: tokio::sync::broadcast::channel(events::BACKLOG).0,
            state_dir,
        })
    }

    async fn take_over(cfg: &MultipathConfig, state_dir: &std::path::Path, pm: &mut PmClient) -> Result<MptcpEvents, QsockError> {
        // Subscribe first: the kernel accepts a peer's joins under the
        // userspace path manager only while someone listens to its events.
        let events = MptcpEvents::subscribe().await?;
        let limits = Limits { subflows: cfg.subflows_max, add_addr_accepted: cfg.add_addr_accepted_max };
        let original = pm_setting::take_over(state_dir, pm, limits).await?;
        log::info!("multipath: qsockd is the path manager (was {}, limits {:?}; now {limits:?})", original.path_manager, original.limits);
        Ok(events)
    }

    /// Gives the path manager back (on shutdown). Errors are logged; the
    /// saved setting stays for the next start to restore.
    pub async fn stop(&self) {
        if self.off.is_some() {
            return;
        }
        match pm_setting::restore(&self.state_dir, &mut *self.pm.lock().await).await {
            Ok(()) => log::info!("multipath: the previous path manager is restored"),
            Err(e) => log::error!("multipath: restoring the path manager: {e}"),
        }
    }

    /// Dispatches events to the requests waiting for them; ends when the
    /// service is dropped.
    async fn follow(me: std::sync::Weak<Self>, mut events: MptcpEvents) {
        loop {
            let ev = match events.next().await {
                Ok(ev) => ev,
                Err(e) => {
                    // ENOBUFS: events were lost; waiters time out and report it.
                    log::warn!("multipath: {e}");
                    continue;
                }
            };
            let Some(mp) = me.upgrade() else { return };
            log::debug!("multipath event {ev:?}");
            let notice = match (ev.kind, ev.token, ev.local, ev.remote) {
                (EventKind::Established, Some(token), Some(local), Some(remote)) => Some(SubflowNotice::ConnectionEstablished { token, local, remote }),
                (EventKind::SubEstablished, Some(token), Some(local), Some(remote)) => Some(SubflowNotice::Established { token, local, remote }),
                (EventKind::SubClosed, Some(token), Some(local), Some(remote)) => Some(SubflowNotice::Closed { token, local, remote }),
                (EventKind::Closed, Some(token), _, _) => Some(SubflowNotice::ConnectionClosed { token }),
                _ => None,
            };
            if let Some(n) = notice {
                let _ = mp.notices.send(n);
            }
            if let (Some(token), Some(app)) = (ev.token, events::from_kernel(&ev)) {
                mp.publish(token, app);
            }
            let mut st = mp.state.lock().expect("multipath state poisoned");
            st.track(&ev);
            if let (EventKind::SubEstablished, Some(token), Some(local), Some(remote)) = (ev.kind, ev.token, ev.local, ev.remote) {
                // A join that started before the connection's plan arrived.
                let role = qsock::subflows::interface_holding(local.ip()).map(|name| st.planned_role(token, &name));
                if matches!(role, Some(SubflowRole::None)) || (role == Some(SubflowRole::Backup) && ev.backup != Some(true)) {
                    tokio::spawn(Self::apply_role(mp.clone(), token, local, remote, role.expect("matched")));
                }
                if ev.backup == Some(true) {
                    st.note_yielded_join(token, local);
                }
            }
            if matches!(ev.kind, EventKind::Established | EventKind::SubEstablished | EventKind::Closed) {
                let changes = st.reyield();
                if !changes.is_empty() {
                    tokio::spawn(Self::apply_yields(mp.clone(), changes));
                }
            }
            match ev.kind {
                EventKind::SubEstablished | EventKind::SubClosed => {
                    let Some((token, local)) = ev.token.zip(ev.local) else { continue };
                    let matches = |w: &Waiter| w.token == token && w.local_ip == local.ip() && !w.known_ports.contains(&local.port());
                    if let Some(i) = st.waiters.iter().position(matches) {
                        let _ = st.waiters.swap_remove(i).reply.send(ev);
                    }
                }
                EventKind::Established => {
                    let Some(t) = ev.token else { continue };
                    for (_, tx) in st.established_waiters.extract_if(.., |(tok, _)| *tok == t) {
                        let _ = tx.send(());
                    }
                    // The side that connected opens the others (a server's peer does it for its side).
                    if let (OpenSubflows::EveryInterface, false, Some(local), Some(remote)) = (mp.open, ev.server_side, ev.local, ev.remote) {
                        tokio::spawn(Self::open_on_every_interface(mp.clone(), t, vec![local.ip()], remote));
                    }
                }
                EventKind::Closed => {
                    if let Some(t) = ev.token {
                        st.local_ids.remove(&t);
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether qsockd is the path manager (subflow operations work).
    pub fn is_on(&self) -> bool {
        self.off.is_none()
    }

    fn check_on(&self) -> Result<(), QsockError> {
        match &self.off {
            Some(why) => Err(QsockError::new(ErrorKind::Unsupported, why.clone())),
            None => Ok(()),
        }
    }

    /// Resolves `local` to an address of the remote's family, its interface
    /// and index, refusing interfaces qsockd does not manage.
    fn local_endpoint(&self, local: &SubflowLocal, remote: IpAddr) -> Result<(IpAddr, String, u32), QsockError> {
        let found = qsock::subflows::interface_addresses().into_iter().find_map(|(iface, ip)| {
            let hit = match local {
                SubflowLocal::Interface(name) => *name == iface && ip.is_ipv4() == remote.is_ipv4() && !qsock::subflows::is_link_local(ip),
                SubflowLocal::Address(a) => *a == ip,
            };
            hit.then_some((ip, iface))
        });
        let (ip, name) = found.ok_or_else(|| {
            QsockError::new(
                ErrorKind::NoInterface,
                match local {
                    SubflowLocal::Interface(n) => {
                        format!("interface {n} does not exist here or has no {} address", if remote.is_ipv4() { "IPv4" } else { "IPv6" })
                    }
                    SubflowLocal::Address(a) => format!("no interface holds {a}"),
                },
            )
        })?;
        if !self.interfaces.is_empty() && !self.interfaces.contains(&name) {
            return Err(QsockError::new(ErrorKind::NoInterface, format!("{name} is not a managed interface (managed: {})", self.interfaces.join(", "))));
        }
        let idx = nix::net::if_::if_nametoindex(name.as_str()).map_err(|e| QsockError::sys("if_nametoindex", e))?;
        Ok((ip, name, idx))
    }

    /// Opens a subflow of the MPTCP connection `sock` from `local` to
    /// `remote` (`None`: the initial subflow's remote) and returns it once
    /// the kernel reports it established, waiting at most `wait`.
    ///
    /// Errors: [`ErrorKind::Unsupported`] (multipath off),
    /// [`ErrorKind::NotMultipath`], [`ErrorKind::NoInterface`],
    /// [`ErrorKind::Kernel`] (the join failed, with the subflow's error, or
    /// did not complete within `wait`), [`ErrorKind::InvalidParams`].
    pub async fn open_subflow(&self, sock: BorrowedFd<'_>, local: &SubflowLocal, remote: Option<SocketAddr>, wait: Duration) -> Result<Subflow, QsockError> {
        self.check_on()?;
        let conn = qsock::qsubflows(sock)?;
        let remote = match remote {
            Some(r) => r,
            None => conn
                .subflows
                .first()
                .map(|s| s.remote)
                .ok_or_else(|| QsockError::new(ErrorKind::NotMultipath, "the connection has no subflow to take the remote address from"))?,
        };
        let (ip, name, if_idx) = self.local_endpoint(local, remote.ip())?;
        let known_ports = conn.subflows.iter().filter(|s| s.local.ip() == ip).map(|s| s.local.port()).collect();
        let local_addr = self.join(conn.token, known_ports, (ip, &name, if_idx), false, remote, wait).await?;
        qsock::qsubflows(sock)?
            .subflows
            .into_iter()
            .find(|s| s.local == local_addr)
            .ok_or_else(|| QsockError::new(ErrorKind::Kernel, format!("the subflow from {local_addr} was established and closed again at once")))
    }

    /// Opens a subflow of the connection `token` to `remote` on every
    /// managed interface that is up and holds none of `have` (the local
    /// addresses its subflows use); failures are logged (a link without a
    /// route to the peer is not an error of the connection).
    async fn open_on_every_interface(self: Arc<Self>, token: u32, have: Vec<IpAddr>, remote: SocketAddr) {
        for name in self.interfaces.clone() {
            let role = {
                let st = self.state.lock().expect("multipath state poisoned");
                if st.down.contains(&name) {
                    continue;
                }
                st.role(token, &name)
            };
            if role == SubflowRole::None {
                continue;
            }
            let Ok((ip, name, if_idx)) = self.local_endpoint(&SubflowLocal::Interface(name), remote.ip()) else { continue };
            if have.contains(&ip) {
                continue;
            }
            match self.join(token, Vec::new(), (ip, &name, if_idx), role == SubflowRole::Backup, remote, AUTO_JOIN_WAIT).await {
                Ok(local) => log::debug!("multipath: connection {token:08x}: subflow {local} -> {remote} on {name}"),
                Err(e) => log::info!("multipath: connection {token:08x}: no subflow on {name}: {}", e.message),
            }
        }
    }

    /// Starts a join of connection `token` from `ip` on interface
    /// `(name, if_idx)` to `remote` (a backup subflow with `backup`) and
    /// waits (at most `wait`) until the kernel reports the new subflow (one
    /// whose local port is not in `known_ports`) established; returns its
    /// local address.
    async fn join(
        &self,
        token: u32,
        known_ports: Vec<u16>,
        (ip, name, if_idx): (IpAddr, &str, u32),
        backup: bool,
        remote: SocketAddr,
        wait: Duration,
    ) -> Result<SocketAddr, QsockError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = self.state.lock().expect("multipath state poisoned");
            let id = st.local_id(token, ip)?;
            st.waiters.push(Waiter { token, local_ip: ip, known_ports, reply: tx });
            id
        };
        let forget = || self.state.lock().expect("multipath state poisoned").waiters.retain(|w| !(w.token == token && w.local_ip == ip && w.reply.is_closed()));
        let started = tokio::time::Instant::now();
        let endpoint = LocalEndpoint { addr: ip, id, if_idx, backup };
        let (est_tx, est_rx) = oneshot::channel();
        self.state.lock().expect("multipath state poisoned").established_waiters.push((token, est_tx));
        let mut est_rx = Some(est_rx);
        let mut created = self.pm.lock().await.create_subflow(token, endpoint, remote).await;
        if let Err(CreateError::NotYetEstablished) = created {
            // Joins are allowed once the connection is fully established (its first data exchanged).
            if tokio::time::timeout(wait, est_rx.take().expect("first use")).await.is_err() {
                drop(rx);
                forget();
                return Err(QsockError::new(
                    ErrorKind::Kernel,
                    format!(
                        "the connection did not become fully established within {wait:?} (MPTCP allows a second subflow once the first data was exchanged)"
                    ),
                ));
            }
            created = self.pm.lock().await.create_subflow(token, endpoint, remote).await;
        }
        drop(est_rx);
        self.state.lock().expect("multipath state poisoned").established_waiters.retain(|(_, tx)| !tx.is_closed());
        if let Err(e) = created {
            drop(rx);
            forget();
            return Err(match e {
                CreateError::Failed(e) => e,
                CreateError::NotYetEstablished => QsockError::new(ErrorKind::Kernel, "the connection is not fully established"),
            });
        }
        let wait = wait.saturating_sub(started.elapsed());
        let ev = match tokio::time::timeout(wait, rx).await {
            Ok(Ok(ev)) => ev,
            _ => {
                forget();
                return Err(QsockError::new(
                    ErrorKind::Kernel,
                    format!("the subflow from {ip} ({name}) to {remote} did not complete its join within {wait:?} (the path may be down, or the peer refuses joins)"),
                ));
            }
        };
        if ev.kind == EventKind::SubClosed {
            let why =
                ev.error.map(|e| std::io::Error::from_raw_os_error(e as i32).to_string()).unwrap_or_else(|| "closed by the peer (its subflow limit?)".into());
            return Err(QsockError::new(ErrorKind::Kernel, format!("the subflow from {ip} ({name}) to {remote} failed: {why}")));
        }
        Ok(ev.local.expect("matched on it"))
    }

    /// Records the subflow roles of a connection that is not connected yet
    /// and is bound to `local`: its `ESTABLISHED` event makes them its plan
    /// before qsockd joins any subflow (no race with the joins).
    pub fn expect_plan(&self, local: SocketAddr, plan: Plan) {
        self.state.lock().expect("multipath state poisoned").expected_plans.insert(local, plan);
    }

    /// Forgets the plan [`Multipath::expect_plan`] recorded for `local`
    /// (the connection was released before it connected).
    pub fn forget_expected_plan(&self, local: SocketAddr) {
        self.state.lock().expect("multipath state poisoned").expected_plans.remove(&local);
    }

    /// Gives connection `token` the subflow roles its intents ask for
    /// (`select::multipath::roles`): subflows it has on an interface with no
    /// role are closed, those on a backup interface are made backup, and
    /// later subflows (qsockd's own, and after a handover) follow the plan;
    /// other connections' subflows yield to it, or stop yielding, as its
    /// urgency asks (`yielding`). Failures are logged.
    pub async fn set_plan(self: Arc<Self>, token: u32, plan: Plan) {
        if self.off.is_some() {
            return;
        }
        let (subflows, yields) = {
            let mut st = self.state.lock().expect("multipath state poisoned");
            st.plans.insert(token, plan.clone());
            (st.tracked.get(&token).map(|t| t.subflows.clone()).unwrap_or_default(), st.reyield())
        };
        if !yields.is_empty() {
            tokio::spawn(self.clone().apply_yields(yields));
        }
        let mut pm = self.pm.lock().await;
        for (local, remote, _) in subflows {
            let Some(name) = qsock::subflows::interface_holding(local.ip()) else { continue };
            let r = match plan.roles.get(&name) {
                Some(SubflowRole::None) => pm.destroy_subflow(token, local, remote).await,
                Some(SubflowRole::Backup) => pm.set_backup(token, local, remote, true).await,
                _ => Ok(()),
            };
            if let Err(e) = r {
                log::info!("multipath: connection {token:08x}: subflow {local} on {name}, applying its plan: {}", e.message);
            }
        }
    }

    /// Makes subflow (`local`, `remote`) of connection `token` what its
    /// interface's `role` asks: closed (None) or backup.
    async fn apply_role(self: Arc<Self>, token: u32, local: SocketAddr, remote: SocketAddr, role: SubflowRole) {
        let mut pm = self.pm.lock().await;
        let r = match role {
            SubflowRole::None => pm.destroy_subflow(token, local, remote).await,
            SubflowRole::Backup => pm.set_backup(token, local, remote, true).await,
            SubflowRole::Active => Ok(()),
        };
        if let Err(e) = r {
            log::info!("multipath: connection {token:08x}: subflow {local}, applying its plan: {}", e.message);
        }
    }

    /// The subflow `id` of `sock`'s connection, with the connection's token.
    fn subflow(sock: BorrowedFd<'_>, id: u32) -> Result<(u32, Subflow), QsockError> {
        let conn = qsock::qsubflows(sock)?;
        let ids: Vec<u32> = conn.subflows.iter().map(|s| s.id).collect();
        let sf = conn.subflows.into_iter().find(|s| s.id == id);
        sf.map(|s| (conn.token, s))
            .ok_or_else(|| QsockError::new(ErrorKind::InvalidParams, format!("the connection has no subflow {id} (its subflows: {ids:?})")))
    }

    /// Closes subflow `id` of `sock`'s connection.
    /// Errors: [`ErrorKind::InvalidParams`] (no such subflow), [`ErrorKind::NotMultipath`], [`ErrorKind::Unsupported`], [`ErrorKind::Kernel`].
    ///
    /// When it is the connection's last subflow from its local address, the
    /// address is withdrawn too (`REMOVE`: `RM_ADDR` to the peer), so the
    /// peer closes its end instead of keeping it half-closed: a stock peer
    /// counts such ends against its subflow limit and, in the refresh test,
    /// refused joins after about a dozen closes and then reset the
    /// connection's last subflow.
    pub async fn close_subflow(&self, sock: BorrowedFd<'_>, id: u32) -> Result<(), QsockError> {
        self.check_on()?;
        let conn = qsock::qsubflows(sock)?;
        let (token, sf) = Self::subflow(sock, id)?;
        let last_of_address = !conn.subflows.iter().any(|o| o.id != id && o.local.ip() == sf.local.ip() && o.state == qsock::TcpState::Established);
        let address_id = {
            let st = self.state.lock().expect("multipath state poisoned");
            st.tracked.get(&token).and_then(|t| t.subflows.iter().find(|(l, _, _)| *l == sf.local).map(|(_, _, i)| *i))
        };
        let mut pm = self.pm.lock().await;
        if let (true, Some(address_id)) = (last_of_address, address_id) {
            if let Err(e) = pm.remove_address(token, address_id).await {
                log::info!("multipath: connection {token:08x}: withdrawing address id {address_id} of subflow {}: {}", sf.local, e.message);
            }
            // A non-zero id's REMOVE closed the subflow already: ESRCH then.
            return match pm.destroy_subflow(token, sf.local, sf.remote).await {
                Err(e) if e.kind == ErrorKind::InvalidParams => Ok(()),
                r => r,
            };
        }
        pm.destroy_subflow(token, sf.local, sf.remote).await
    }

    /// Sets or clears the backup flag of subflow `id` of `sock`'s connection.
    /// Errors: as [`Multipath::close_subflow`].
    pub async fn set_backup(&self, sock: BorrowedFd<'_>, id: u32, backup: bool) -> Result<(), QsockError> {
        self.check_on()?;
        let (token, sf) = Self::subflow(sock, id)?;
        self.pm.lock().await.set_backup(token, sf.local, sf.remote, backup).await?;
        // The kernel reports only the peer's changes (SUB_PRIORITY); ours are told here.
        self.publish(token, qsock::SubflowEvent::BackupChanged { local: sf.local, remote: sf.remote, backup });
        Ok(())
    }
}

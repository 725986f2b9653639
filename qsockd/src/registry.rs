//! The daemon's state: the devices it serves ([`DeviceRt`]) and the managed
//! sockets, and the requests on them (attach, change, close, info). Every
//! operation checks its input first and changes nothing when it fails.
use std::{
    collections::HashMap,
    os::fd::BorrowedFd,
    time::{Duration, Instant},
};

use qsock::{AttachInfo, ErrorKind, InitParams, QInfo, QosParams, QsockError};
use qsock_sched::StreamClass;

use crate::{
    books::Books,
    config::{Config, Paths},
    device::{self, DeviceState},
    devrt::{drain, install, open_device, place, policy_of, rebalance, DeviceRt, ModuleSettings},
    error::DaemonError,
    ifaces::Interfaces,
    report,
    routing::Routing,
    select::SelectionPolicy,
    sockets::{Booking, Managed, SocketTable, UNCLAIMED},
    sockinfo::{self, SocketFacts},
    tc::{fmt_classid, Tc},
};

/// Sockets sampled for their rate per housekeeping tick: bounds the tick's
/// cost (with more sockets, each is sampled less often; the rate is still
/// taken over the samples in its window).
pub const SAMPLE_BATCH: usize = 512;

/// Consecutive sock_diag sweeps that must miss a socket before it counts as
/// closed: a netlink dump walks the socket tables in chunks, and sockets
/// closed between chunks can make it skip one that is open.
pub const MISSED_SWEEPS: u8 = 2;

/// How long a socket recovered after a restart, never seen held by a
/// process, waits for its client to claim it before it is released.
pub const RECLAIM_GRACE: Duration = Duration::from_secs(30);

/// The daemon's state.
pub struct Registry {
    pub(crate) paths: Paths,
    pub(crate) tc: Tc,
    pub(crate) devices: HashMap<String, DeviceRt>,
    pub(crate) sockets: SocketTable,
    /// Where each socket's books are kept for a restart.
    pub(crate) books: Books,
    rate_window_ns: u64,
    pub(crate) settings: ModuleSettings,
    /// The managed interfaces and what is measured on them.
    pub(crate) ifaces: Interfaces,
    /// Policy routing of the managed interfaces.
    pub(crate) routing: Routing,
    /// Enabled interface-selection policies, by name.
    pub(crate) policies: HashMap<String, Box<dyn SelectionPolicy>>,
    /// Policy for sockets that name none.
    pub(crate) default_policy: String,
    /// When the RTTs were last sampled, ns of `CLOCK_MONOTONIC`.
    pub(crate) last_rtt_ns: u64,
    /// Per-user limits.
    limits: crate::limits::Limits,
    /// Book records of devices not opened yet (recovered when they are).
    pending_books: HashMap<String, Vec<(u64, Managed)>>,
    /// When this daemon started (for [`RECLAIM_GRACE`]).
    started: Instant,
}

/// Who sent a request: the peer's uid (`SO_PEERCRED`) and its connection.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// uid of the connected process.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its pid.
    pub pid: i32,
    /// Connection number, unique while qsockd runs (never [`UNCLAIMED`]).
    pub conn: u64,
}

impl Registry {
    /// A registry for the namespace described by `paths`; opens every device
    /// already initialised there and recovers the sockets a previous qsockd
    /// managed on it. `settings` say how the scheduler modules admit
    /// streams; `cfg` lists the managed interfaces and policies (started by
    /// [`Registry::start_interfaces`]).
    pub async fn new(paths: Paths, tc: Tc, settings: ModuleSettings, cfg: &Config) -> Self {
        let routing = Routing::new(tc.handle().clone(), cfg.rule_priority);
        let books = Books::new(&paths.state_dir());
        let mut r = Self {
            paths,
            tc,
            devices: HashMap::new(),
            sockets: SocketTable::default(),
            pending_books: books.load_all(),
            books,
            rate_window_ns: cfg.rate_window_ms * 1_000_000,
            settings,
            ifaces: Interfaces::new(cfg),
            routing,
            policies: crate::select::build_all(&cfg.policies),
            default_policy: cfg.default_policy.clone(),
            last_rtt_ns: 0,
            limits: cfg.limits.clone(),
            started: Instant::now(),
        };
        for st in DeviceState::load_all(&r.paths) {
            let name = st.device.clone();
            match r.open(st).await {
                Ok(()) => log::info!("serving {name}"),
                Err(e) => log::error!("cannot open {name}: {e}"),
            }
        }
        // Records of devices no longer initialised: nothing to recover.
        for (dev, recs) in std::mem::take(&mut r.pending_books) {
            log::warn!("{} socket records of {dev}, which is not initialised, dropped", recs.len());
            r.books.remove_all(recs.into_iter().map(|(c, _)| c));
        }
        r
    }

    /// Opens device `st` and recovers the sockets booked on it.
    pub(crate) async fn open(&mut self, st: DeviceState) -> Result<(), QsockError> {
        let name = st.device.clone();
        let books = self.pending_books.remove(&name).unwrap_or_default();
        let booked: Vec<u64> = books.iter().map(|(c, _)| *c).collect();
        let (dev, recovered) = match open_device(&self.tc, st, self.settings, books).await {
            Ok(x) => x,
            Err(e) => {
                self.books.remove_all(booked);
                return Err(e.into());
            }
        };
        let kept: std::collections::HashSet<u64> = recovered.iter().map(|(c, _)| *c).collect();
        self.books.remove_all(booked.into_iter().filter(|c| !kept.contains(c)));
        for (cookie, m) in recovered {
            self.sockets.insert(cookie, m);
        }
        self.devices.insert(name, dev);
        Ok(())
    }

    async fn device(&mut self, name: &str) -> Result<&mut DeviceRt, QsockError> {
        if !self.devices.contains_key(name) {
            device::ifindex(name)?;
            let st = DeviceState::load(&self.paths, name)?
                .ok_or_else(|| QsockError::new(ErrorKind::NotInitialized, format!("qsock is not initialised on {name}; run qsockd init")))?;
            self.open(st).await?;
        }
        Ok(self.devices.get_mut(name).expect("inserted above"))
    }

    /// `qsockinit` on behalf of a root client.
    pub async fn init(&mut self, params: &InitParams) -> Result<(), QsockError> {
        let st = device::init(&self.paths, params).await?;
        self.open(st).await
    }

    /// Teardown on behalf of a root client; forgets the device's sockets.
    pub async fn teardown(&mut self, device_name: &str) -> Result<(), QsockError> {
        self.devices.remove(device_name);
        for c in self.sockets.on_device(device_name) {
            self.sockets.remove(c);
            self.books.remove(c);
        }
        device::teardown(&self.paths, device_name).await
    }

    /// Records socket `cookie` for a restart; a failure is logged (the
    /// socket is served, it would only not survive a restart).
    fn record(&self, cookie: u64) {
        if let Some(m) = self.sockets.get(cookie) {
            if let Err(e) = self.books.save(cookie, m) {
                log::error!("socket {cookie}: cannot record it for a restart: {e}");
            }
        }
    }

    /// `qattach`: manage the socket `facts` describes with `params`. Without
    /// a device, the policy chooses one and the socket `sock` is bound to
    /// its source address once the attach succeeded.
    pub async fn attach(&mut self, facts: &SocketFacts, sock: BorrowedFd<'_>, peer: Peer, mut params: QosParams) -> Result<AttachInfo, QsockError> {
        params.validate()?;
        if self.sockets.contains(facts.cookie) {
            return Err(QsockError::new(ErrorKind::AlreadyManaged, "the socket is already managed; use qchange"));
        }
        let limit = self.limits.for_peer(peer.uid, peer.gid);
        limit.check_sockets(peer.uid, self.sockets.count_of_uid(peer.uid))?;
        let selection = match &params.device {
            Some(_) => None,
            None => {
                let s = self.choose_interface(facts, sock, &params)?;
                params.device = Some(s.interface.clone());
                Some(s)
            }
        };
        let device_name = params.device.clone().expect("set above");
        let held_bps = self.sockets.held_bps(peer.uid, &device_name);
        let tc = self.tc.clone();
        let dev = self.device(&device_name).await?;
        let link = dev.link(facts.sock_type, Booking::default());
        let name = params.scheduler.name();
        let plan = dev.module(name)?.add(facts.cookie, &params.scheduler, &link)?;
        if let Err(e) = limit.check_rate(peer.uid, &device_name, held_bps, plan.reserved_bps, dev.state.guaranteeable_bps()) {
            dev.module(name)?.remove(facts.cookie);
            return Err(e);
        }
        let minor = match install(&tc, dev, facts.cookie, &plan, link.msg_tags).await {
            Ok(minor) => minor,
            Err(e) => {
                dev.module(name)?.remove(facts.cookie);
                if let Err(e2) = rebalance(&tc, dev, false).await {
                    log::error!("{}: restoring classes after a failed attach: {e2}", dev.state.device);
                }
                return Err(e.into());
            }
        };
        self.sockets.insert(
            facts.cookie,
            Managed {
                device: device_name.clone(),
                minor,
                own_class: matches!(plan.class, StreamClass::Own { .. }),
                booking: Booking::of(&plan),
                class: plan.class,
                params,
                sock_type: facts.sock_type,
                owner_uid: peer.uid,
                owner_gid: peer.gid,
                owner_pid: peer.pid,
                conn: peer.conn,
                samples: Default::default(),
                since_ns: qsock::monotonic_now_ns(),
                missed: 0,
                selection: selection.clone(),
                // A bound or connected socket is in the kernel's tables: the next sweep sees it.
                held_seen: selection.is_some() || sockinfo::is_bound(sock),
            },
        );
        if let Some(s) = &selection {
            // Bound only now: a refused attach leaves the socket as it was.
            if let Err(e) = sockinfo::bind_source(sock, s.source) {
                let _ = self.close(facts.cookie).await;
                return Err(e);
            }
            log::info!("socket {} on {} ({}: {})", facts.cookie, s.interface, s.policy, s.reason);
        }
        self.record(facts.cookie);
        if let Some(w) = &plan.warning {
            log::warn!("socket {}: {w}", facts.cookie);
        }
        Ok(AttachInfo { cookie: facts.cookie, device: device_name, classid: fmt_classid(DeviceRt::classid(minor)), warning: plan.warning, selection })
    }

    fn managed(&self, cookie: u64) -> Result<&Managed, QsockError> {
        self.sockets.get(cookie).ok_or_else(|| QsockError::new(ErrorKind::NotManaged, "the socket is not managed by qsock; qattach it first"))
    }

    /// Re-registers a socket with the client connection `peer` after a
    /// restart (the library does it when it reconnects): from now on the
    /// socket is released when that connection closes. Only its owner (or
    /// root) may claim it. Errors: [`ErrorKind::NotManaged`],
    /// [`ErrorKind::PermissionDenied`].
    pub fn reclaim(&mut self, facts: &SocketFacts, peer: Peer) -> Result<AttachInfo, QsockError> {
        let m = self.managed(facts.cookie)?;
        if m.owner_uid != peer.uid && peer.uid != 0 {
            return Err(QsockError::new(ErrorKind::PermissionDenied, format!("the socket belongs to uid {}", m.owner_uid)));
        }
        self.sockets.update(facts.cookie, |m| {
            m.conn = peer.conn;
            m.owner_pid = peer.pid;
        });
        let m = self.managed(facts.cookie)?;
        Ok(AttachInfo {
            cookie: facts.cookie,
            device: m.device.clone(),
            classid: fmt_classid(DeviceRt::classid(m.minor)),
            warning: None,
            selection: m.selection.clone(),
        })
    }

    /// `qchange`: new parameters or another scheduler. On the same device the
    /// packets already queued stay: an own class is changed in place, or
    /// left to drain when the stream moves to another class. Without a
    /// device the socket keeps the one it has (a socket is not moved to
    /// another interface once placed: its source address is bound).
    pub async fn change(&mut self, facts: &SocketFacts, sock: BorrowedFd<'_>, mut params: QosParams) -> Result<AttachInfo, QsockError> {
        params.validate()?;
        let m = self.managed(facts.cookie)?;
        let selection = m.selection.clone();
        match (&params.device, &selection) {
            (None, _) => params.device = Some(m.device.clone()),
            (Some(d), Some(s)) if *d != s.interface => {
                return Err(QsockError::new(
                    ErrorKind::SocketInUse,
                    format!("the socket was placed on {} and bound to {}; it cannot move to {d}", s.interface, s.source),
                ))
            }
            _ => {}
        }
        let old_params = m.params.clone();
        let (owner, minor, own_class, old) = (Peer { uid: m.owner_uid, gid: m.owner_gid, pid: m.owner_pid, conn: m.conn }, m.minor, m.own_class, m.booking);
        let (old_name, new_name) = (old_params.scheduler.name(), params.scheduler.name());
        if params.device.as_deref() != Some(m.device.as_str()) {
            return self.move_to_device(facts, sock, owner, old_params, params).await;
        }
        let tc = self.tc.clone();
        let device_name = params.device.clone().expect("set above");
        let limit = self.limits.for_peer(owner.uid, owner.gid);
        let held_others = self.sockets.held_bps(owner.uid, &device_name) - old.rate_bps;
        let dev = self.devices.get_mut(&device_name).expect("managed sockets have open devices");
        let link = dev.link(facts.sock_type, old);
        let plan = if old_name == new_name {
            dev.module(new_name)?.change(facts.cookie, &params.scheduler, &link)?
        } else {
            let plan = dev.module(new_name)?.add(facts.cookie, &params.scheduler, &link)?;
            dev.module(old_name)?.remove(facts.cookie);
            plan
        };
        let new = Booking::of(&plan);
        dev.guaranteed_bps = dev.guaranteed_bps - old.rate_bps + new.rate_bps;
        dev.booked_burst_bytes = dev.booked_burst_bytes - old.burst_bytes + new.burst_bytes;
        let grew = new.rate_bps > old.rate_bps;
        let reuse = if own_class && matches!(plan.class, StreamClass::Own { .. }) { Some(minor) } else { None };
        let applied = async {
            if grew {
                limit.check_rate(owner.uid, &device_name, held_others, new.rate_bps, dev.state.guaranteeable_bps())?;
            }
            if grew {
                rebalance(&tc, dev, true).await?;
            }
            let new_minor = place(&tc, dev, &plan, reuse).await?;
            dev.policies.insert(facts.cookie, policy_of(&plan, new_minor, link.msg_tags), 0).map_err(DaemonError::from)?;
            if own_class && new_minor != minor {
                // Its reservation moved with the stream; the old class drains what it holds.
                dev.draining.push((minor, 0));
            }
            if !grew {
                rebalance(&tc, dev, false).await?;
            }
            Ok::<u32, QsockError>(new_minor)
        }
        .await;
        match applied {
            Ok(new_minor) => {
                let _ = drain(&tc, dev).await;
                let own = reuse.is_some() || matches!(plan.class, StreamClass::Own { .. });
                self.sockets.update(facts.cookie, |m| (m.params, m.minor, m.own_class, m.booking, m.class) = (params, new_minor, own, new, plan.class));
                self.record(facts.cookie);
                if let Some(w) = &plan.warning {
                    log::warn!("socket {}: {w}", facts.cookie);
                }
                Ok(AttachInfo {
                    cookie: facts.cookie,
                    device: device_name,
                    classid: fmt_classid(DeviceRt::classid(new_minor)),
                    warning: plan.warning,
                    selection,
                })
            }
            Err(e) => {
                // Put the modules and reservations back as they were.
                let old_link = dev.link(facts.sock_type, new);
                if old_name != new_name {
                    dev.module(new_name)?.remove(facts.cookie);
                }
                if let Err(e2) = dev.module(old_name)?.change(facts.cookie, &old_params.scheduler, &old_link) {
                    log::error!("{}: restoring socket {} after a failed change: {e2}", dev.state.device, facts.cookie);
                }
                dev.guaranteed_bps = dev.guaranteed_bps - new.rate_bps + old.rate_bps;
                dev.booked_burst_bytes = dev.booked_burst_bytes - new.burst_bytes + old.burst_bytes;
                let _ = rebalance(&tc, dev, true).await;
                Err(e)
            }
        }
    }

    /// `qchange` to another device. Admission first, with no kernel call:
    /// the target's scheduler module plans the stream (and forgets it
    /// again) and the owner's per-user limit on the target is checked, so
    /// a refusal leaves the socket exactly as it was (class, policy,
    /// counters, reservation). Then the socket is released on its device
    /// and attached on the target; if a kernel step of that attach fails,
    /// the socket is attached again with its old parameters on its old
    /// device (its counters start anew there) and the error returned.
    async fn move_to_device(
        &mut self,
        facts: &SocketFacts,
        sock: BorrowedFd<'_>,
        owner: Peer,
        old: QosParams,
        params: QosParams,
    ) -> Result<AttachInfo, QsockError> {
        let target_name = params.device.clone().expect("a move names its device");
        let limit = self.limits.for_peer(owner.uid, owner.gid);
        let held_target = self.sockets.held_bps(owner.uid, &target_name);
        let new_name = params.scheduler.name();
        let target = self.device(&target_name).await?;
        let link = target.link(facts.sock_type, Booking::default());
        let plan = target.module(new_name)?.add(facts.cookie, &params.scheduler, &link)?;
        target.module(new_name)?.remove(facts.cookie);
        limit.check_rate(owner.uid, &target_name, held_target, plan.reserved_bps, target.state.guaranteeable_bps())?;
        self.close(facts.cookie).await?;
        match self.attach(facts, sock, owner, params).await {
            Ok(a) => Ok(a),
            Err(e) => {
                if let Err(e2) = self.attach(facts, sock, owner, old).await {
                    log::error!("socket {}: the move to {target_name} failed ({e}) and restoring it failed too ({e2}); it is no longer managed", facts.cookie);
                }
                Err(e)
            }
        }
    }

    /// `qclose` (or cleanup of a closed socket): classification stops at
    /// once; an own class goes now if it is empty, else once what it holds
    /// has been sent ([`Registry::sweep`]), and only then is its rate
    /// released. A shared class shrinks at once.
    pub async fn close(&mut self, cookie: u64) -> Result<(), QsockError> {
        let m = self.sockets.remove(cookie).ok_or_else(|| QsockError::new(ErrorKind::NotManaged, "the socket is not managed by qsock"))?;
        self.books.remove(cookie);
        let dev = self.devices.get_mut(&m.device).expect("managed sockets have open devices");
        let _ = dev.policies.remove(&cookie);
        let _ = dev.counters.remove(&cookie);
        dev.module(m.params.scheduler.name())?.remove(cookie);
        dev.booked_burst_bytes -= m.booking.burst_bytes;
        if m.own_class {
            dev.draining.push((m.minor, m.booking.rate_bps));
            Ok(drain(&self.tc, dev).await?)
        } else {
            dev.guaranteed_bps -= m.booking.rate_bps;
            Ok(rebalance(&self.tc, dev, false).await?)
        }
    }

    /// Releases every socket attached over connection `conn` (it closed:
    /// the client exited or dropped its `Client`).
    pub async fn release_connection(&mut self, conn: u64) {
        for c in self.sockets.of_conn(conn) {
            log::info!("client connection {conn} closed; releasing socket {c}");
            let _ = self.close(c).await;
        }
    }

    /// Releases the sockets their processes closed without `qclose`: a
    /// managed socket a sock_diag sweep saw held before and no longer sees
    /// (closed: gone, or orphaned while TCP finishes). `held` is that sweep
    /// (taken without the registry's lock: its cost grows with the sockets
    /// of the namespace), begun at `taken_ns`; sockets taken on later are
    /// left to the next sweep. A socket never seen (not yet bound or connected)
    /// is left alone; it is released with its client connection, or, if
    /// recovered after a restart and not claimed within [`RECLAIM_GRACE`],
    /// then. Returns the released cookies.
    pub async fn release_closed(&mut self, held: &std::collections::HashSet<u64>, taken_ns: u64) -> Vec<u64> {
        let grace_over = self.started.elapsed() >= RECLAIM_GRACE;
        let mut closed = Vec::new();
        let mut newly_seen = Vec::new();
        let swept: Vec<(u64, bool, bool)> = self
            .sockets
            .iter()
            .filter(|(_, m)| m.since_ns < taken_ns)
            .map(|(c, m)| (c, held.contains(&c), m.held_seen || (grace_over && m.conn == UNCLAIMED)))
            .collect();
        for (cookie, is_held, releasable) in swept {
            let was_seen = self.sockets.get(cookie).is_some_and(|m| m.held_seen);
            let missed = self.sockets.note_sweep(cookie, is_held);
            if is_held && !was_seen {
                newly_seen.push(cookie);
            }
            // A dump is not a snapshot: sockets closing meanwhile can make it skip an open one. Twice in a row is not chance.
            if !is_held && releasable && missed >= MISSED_SWEEPS {
                closed.push(cookie);
            }
        }
        for c in newly_seen {
            self.record(c);
        }
        for c in &closed {
            log::info!("socket {c} was closed without qclose; released");
            let _ = self.close(*c).await;
        }
        closed
    }

    /// Removes classes that finished draining. Called periodically.
    pub async fn sweep(&mut self) {
        let tc = self.tc.clone();
        for dev in self.devices.values_mut() {
            if !dev.draining.is_empty() {
                if let Err(e) = drain(&tc, dev).await {
                    log::warn!("{}: {e}", dev.state.device);
                }
            }
        }
    }

    /// `qinfo` on a managed socket; `sock` is the socket itself (for stack
    /// facts). One class lookup: its cost does not grow with the sockets.
    pub async fn info(&self, facts: &SocketFacts, sock: BorrowedFd<'_>) -> Result<QInfo, QsockError> {
        let m = self.managed(facts.cookie)?;
        let dev = self.devices.get(&m.device).expect("managed sockets have open devices");
        let cls = self.tc.class_stats_of(dev.state.ifindex, DeviceRt::classid(m.minor)).await.map_err(DaemonError::from)?.unwrap_or_default();
        Ok(report::qinfo(facts.cookie, m, dev, cls, sock))
    }

    /// `List`: every managed socket for root, else the caller's own. One
    /// class dump per device, one map lookup per socket.
    pub async fn list(&self, uid: u32) -> Result<Vec<qsock::SocketSummary>, QsockError> {
        let mut stats = HashMap::new();
        for (name, dev) in &self.devices {
            stats.insert(name.clone(), self.tc.class_stats(dev.state.ifindex).await.map_err(DaemonError::from)?);
        }
        let mut out: Vec<qsock::SocketSummary> = self
            .sockets
            .iter()
            .filter(|(_, m)| uid == 0 || m.owner_uid == uid)
            .map(|(cookie, m)| {
                let dev = self.devices.get(&m.device).expect("managed sockets have open devices");
                let qdisc = stats.get(&m.device).and_then(|s| s.get(&DeviceRt::classid(m.minor))).map(|s| s.drops).unwrap_or(0);
                report::summary(cookie, m, dev, qdisc)
            })
            .collect();
        out.sort_by_key(|s| s.cookie);
        Ok(out)
    }

    /// Takes one rate sample of up to [`SAMPLE_BATCH`] managed sockets
    /// (the next ones in turn; called periodically).
    pub fn sample(&mut self, now_ns: u64) {
        let window = self.rate_window_ns;
        for cookie in self.sockets.next_batch(SAMPLE_BATCH) {
            let Some(m) = self.sockets.get(cookie) else { continue };
            let Some(dev) = self.devices.get(&m.device) else { continue };
            let Some(c) = dev.counters(cookie) else { continue };
            let bytes = if dev.delay_probe { c.deq_bytes } else { c.enq_bytes };
            let samples = self.sockets.samples_mut(cookie).expect("present above");
            samples.push_back((now_ns, bytes));
            while samples.len() > 2 && samples.front().is_some_and(|(t, _)| now_ns - t > window) {
                samples.pop_front();
            }
        }
    }
}

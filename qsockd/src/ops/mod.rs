//! The control operations: the [`Registry`] (the devices qsockd serves and
//! the managed sockets) and one file per request on it: `attach`, `change`,
//! `close` (and the releases qsockd makes itself), `reclaim`, `place`
//! (interface selection for sockets without a device), `split` (an MPTCP
//! connection's reservation over its subflows) and `figures`
//! (`qinfo`, `list`). Every operation admits first, with no kernel call
//! (modules, limits, burst horizon, socket counts), then applies the kernel
//! and map steps in an order that never oversubscribes the link, undoing
//! them if one fails: a refusal leaves the socket exactly as it was.
mod attach;
mod change;
mod close;
mod connection;
mod figures;
mod place;
mod reclaim;
mod split;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use qsock::{ErrorKind, InitParams, QsockError};

use crate::{
    config::{Config, Paths},
    device::runtime::{open_device, DeviceRt, ModuleSettings},
    device::{self, DeviceState},
    kernel::routing::Routing,
    kernel::tc::Tc,
    select::ifaces::Interfaces,
    select::SelectionPolicy,
    state::books::Books,
    state::sockets::{Managed, SocketTable},
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
    limits: crate::state::limits::Limits,
    /// Book records of devices not opened yet (recovered when they are).
    pending_books: HashMap<String, Vec<(u64, Managed)>>,
    /// When this daemon started (for [`RECLAIM_GRACE`]).
    started: Instant,
    /// Managed MPTCP connections, by the cookie of the application's socket.
    pub(crate) connections: HashMap<u64, connection::MptcpConnection>,
    /// qsockd is the path manager: MPTCP sockets may be attached.
    pub(crate) multipath_on: bool,
    /// The path manager, told of interfaces going down and up (handover).
    pub(crate) multipath: Option<std::sync::Arc<crate::multipath::Multipath>>,
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
    /// Connection number, unique while qsockd runs (never [`crate::state::sockets::UNCLAIMED`]).
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
            connections: HashMap::new(),
            multipath_on: false,
            multipath: None,
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
        r.recover_connections().await;
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

    /// Hands the registry the path manager: MPTCP sockets may be attached
    /// when it is on, and it hears of managed interfaces going down and up.
    pub fn set_multipath(&mut self, mp: std::sync::Arc<crate::multipath::Multipath>) {
        self.multipath_on = mp.is_on();
        self.multipath = Some(mp);
        if self.multipath_on {
            self.replan_recovered();
        }
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

    fn managed(&self, cookie: u64) -> Result<&Managed, QsockError> {
        self.sockets.get(cookie).ok_or_else(|| QsockError::new(ErrorKind::NotManaged, "the socket is not managed by qsock; qattach it first"))
    }
}

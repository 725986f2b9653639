//! The daemon's state: the devices it serves ([`DeviceRt`]) and the managed
//! sockets, and the requests on them (attach, change, close, info). Every
//! operation checks its input first and changes nothing when it fails.
use std::{
    collections::{HashMap, VecDeque},
    os::fd::{AsFd, BorrowedFd},
};

use qsock::{
    sched::StreamClass,
    AttachInfo, DelayStats, Drops, ErrorKind, InitParams, QInfo, QosParams, QsockError, Selection,
};
use qsock_common::*;

use crate::{
    config::{Config, Paths},
    ifaces::Interfaces,
    routing::Routing,
    select::SelectionPolicy,
    device::{self, DeviceState},
    devrt::{drain, install, kernel_err, open_device, place, policy_of, rebalance, Booking, DeviceRt, ModuleSettings},
    sockinfo,
    tc::{fmt_classid, Tc},
};


/// One managed socket.
pub struct Managed {
    /// Device its class lives on.
    pub device: String,
    /// HTB minor of its class (own or shared).
    pub minor: u32,
    /// The class is the socket's own (else a module's shared class).
    own_class: bool,
    /// What it holds of the device's books (rate, burst).
    booking: Booking,
    /// Its class's token bucket and ceiling as planned (own classes).
    class: StreamClass,
    /// Parameters in force.
    pub params: QosParams,
    /// uid of the client that attached it.
    pub owner_uid: u32,
    /// Primary gid of that client.
    pub owner_gid: u32,
    /// pid of that client.
    pub owner_pid: i32,
    /// Client connection that attached it; the socket is released when
    /// that connection closes.
    pub conn: u64,
    /// Rate samples: (ns of CLOCK_MONOTONIC, bytes dequeued).
    samples: VecDeque<(u64, u64)>,
    /// How the policy chose the device (attached without one).
    pub selection: Option<Selection>,
    /// A sock_diag sweep has seen the socket held by a process: from then
    /// on its absence means it was closed ([`Registry::release_closed`]).
    held_seen: bool,
}

/// The daemon's state.
pub struct Registry {
    pub(crate) paths: Paths,
    pub(crate) tc: Tc,
    pub(crate) devices: HashMap<String, DeviceRt>,
    pub(crate) sockets: HashMap<u64, Managed>,
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
    /// Connection number, unique while qsockd runs.
    pub conn: u64,
}

/// Facts read from a socket a client handed over.
pub struct SocketFacts {
    /// `SO_COOKIE`.
    pub cookie: u64,
    /// `SO_DOMAIN`: `AF_INET` or `AF_INET6`.
    pub domain: i32,
    /// `SO_TYPE`.
    pub sock_type: i32,
}

impl Registry {
    /// A registry for the namespace described by `paths`; opens every device
    /// already initialised there. `settings` say how the scheduler modules
    /// admit streams; `cfg` lists the managed interfaces and policies
    /// (started by [`Registry::start_interfaces`]).
    pub async fn new(paths: Paths, tc: Tc, settings: ModuleSettings, cfg: &Config) -> Self {
        let routing = Routing::new(tc.handle().clone(), cfg.rule_priority);
        let mut r = Self {
            paths,
            tc,
            devices: HashMap::new(),
            sockets: HashMap::new(),
            rate_window_ns: cfg.rate_window_ms * 1_000_000,
            settings,
            ifaces: Interfaces::new(cfg),
            routing,
            policies: crate::select::build_all(&cfg.policies),
            default_policy: cfg.default_policy.clone(),
            last_rtt_ns: 0,
            limits: cfg.limits.clone(),
        };
        for st in DeviceState::load_all(&r.paths) {
            let name = st.device.clone();
            match open_device(&r.tc, st, r.settings).await {
                Ok(d) => {
                    log::info!("serving {name}");
                    r.devices.insert(name, d);
                }
                Err(e) => log::error!("cannot open {name}: {e}"),
            }
        }
        r
    }


    async fn device(&mut self, name: &str) -> Result<&mut DeviceRt, QsockError> {
        if !self.devices.contains_key(name) {
            device::ifindex(name)?;
            let st = DeviceState::load(&self.paths, name)?
                .ok_or_else(|| QsockError::new(ErrorKind::NotInitialized, format!("qsock is not initialised on {name}; run qsockd init")))?;
            let d = open_device(&self.tc, st, self.settings).await?;
            self.devices.insert(name.to_string(), d);
        }
        Ok(self.devices.get_mut(name).expect("inserted above"))
    }

    /// `qsockinit` on behalf of a root client.
    pub async fn init(&mut self, params: &InitParams) -> Result<(), QsockError> {
        let st = device::init(&self.paths, params).await?;
        let d = open_device(&self.tc, st, self.settings).await?;
        self.devices.insert(params.device.clone(), d);
        Ok(())
    }

    /// Teardown on behalf of a root client; forgets the device's sockets.
    pub async fn teardown(&mut self, device_name: &str) -> Result<(), QsockError> {
        self.devices.remove(device_name);
        self.sockets.retain(|_, m| m.device != device_name);
        device::teardown(&self.paths, device_name).await
    }

    /// `qattach`: manage the socket `facts` describes with `params`. Without
    /// a device, the policy chooses one and the socket `sock` is bound to
    /// its source address once the attach succeeded.
    pub async fn attach(&mut self, facts: &SocketFacts, sock: BorrowedFd<'_>, peer: Peer, mut params: QosParams) -> Result<AttachInfo, QsockError> {
        params.validate()?;
        if self.sockets.contains_key(&facts.cookie) {
            return Err(QsockError::new(ErrorKind::AlreadyManaged, "the socket is already managed; use qchange"));
        }
        let limit = self.limits.for_peer(peer.uid, peer.gid);
        limit.check_sockets(peer.uid, self.sockets.values().filter(|m| m.owner_uid == peer.uid).count() as u32)?;
        let selection = match &params.device {
            Some(_) => None,
            None => {
                let s = self.choose_interface(facts, sock, &params)?;
                params.device = Some(s.interface.clone());
                Some(s)
            }
        };
        let device_name = params.device.clone().expect("set above");
        let held_bps = self.held_bps(peer.uid, &device_name, None);
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
                return Err(e);
            }
        };
        let own_class = matches!(plan.class, StreamClass::Own { .. });
        self.sockets.insert(
            facts.cookie,
            Managed {
                device: device_name.clone(),
                minor,
                own_class,
                booking: Booking::of(&plan),
                class: plan.class,
                params,
                owner_uid: peer.uid,
                owner_gid: peer.gid,
                owner_pid: peer.pid,
                conn: peer.conn,
                samples: VecDeque::new(),
                selection: selection.clone(),
                // A bound or connected socket is in the kernel's tables: the next sweep sees it.
                held_seen: selection.is_some() || sockinfo::is_bound(sock),
            },
        );
        if let Some(s) = &selection {
            // Bound only now: a refused attach leaves the socket as it was.
            if let Err(e) = crate::selection::bind_source(sock, s.source) {
                let _ = self.close(facts.cookie).await;
                return Err(e);
            }
            log::info!("socket {} on {} ({}: {})", facts.cookie, s.interface, s.policy, s.reason);
        }
        if let Some(w) = &plan.warning {
            log::warn!("socket {}: {w}", facts.cookie);
        }
        Ok(AttachInfo { cookie: facts.cookie, device: device_name, classid: fmt_classid(DeviceRt::classid(minor)), warning: plan.warning, selection })
    }

    /// Rate reserved on `device` by the sockets `uid` attached, bit/s (but `except`'s).
    fn held_bps(&self, uid: u32, device: &str, except: Option<u64>) -> u64 {
        self.sockets.iter().filter(|(c, m)| m.owner_uid == uid && m.device == device && Some(**c) != except).map(|(_, m)| m.booking.rate_bps).sum()
    }

    fn managed(&self, cookie: u64) -> Result<&Managed, QsockError> {
        self.sockets.get(&cookie).ok_or_else(|| QsockError::new(ErrorKind::NotManaged, "the socket is not managed by qsock; qattach it first"))
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
            // Another device: a dry run on the target first, so a refusal changes nothing.
            let target = self.device(params.device.as_deref().expect("set above")).await?;
            let link = target.link(facts.sock_type, Booking::default());
            target.module(new_name)?.add(facts.cookie, &params.scheduler, &link)?;
            target.module(new_name)?.remove(facts.cookie);
            self.close(facts.cookie).await?;
            return self.attach(facts, sock, owner, params).await;
        }
        let tc = self.tc.clone();
        let device_name = params.device.clone().expect("set above");
        let limit = self.limits.for_peer(owner.uid, owner.gid);
        let held_others = self.held_bps(owner.uid, &device_name, Some(facts.cookie));
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
            dev.policies.insert(facts.cookie, policy_of(&plan, new_minor, link.msg_tags), 0).map_err(kernel_err)?;
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
                let m = self.sockets.get_mut(&facts.cookie).expect("managed");
                (m.params, m.minor, m.own_class, m.booking, m.class) =
                    (params, new_minor, reuse.is_some() || matches!(plan.class, StreamClass::Own { .. }), new, plan.class);
                if let Some(w) = &plan.warning {
                    log::warn!("socket {}: {w}", facts.cookie);
                }
                Ok(AttachInfo { cookie: facts.cookie, device: device_name, classid: fmt_classid(DeviceRt::classid(new_minor)), warning: plan.warning, selection })
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

    /// `qclose` (or cleanup of a closed socket): classification stops at
    /// once; an own class goes now if it is empty, else once what it holds
    /// has been sent ([`Registry::sweep`]), and only then is its rate
    /// released. A shared class shrinks at once.
    pub async fn close(&mut self, cookie: u64) -> Result<(), QsockError> {
        let m = self.sockets.remove(&cookie).ok_or_else(|| QsockError::new(ErrorKind::NotManaged, "the socket is not managed by qsock"))?;
        let dev = self.devices.get_mut(&m.device).expect("managed sockets have open devices");
        let _ = dev.policies.remove(&cookie);
        let _ = dev.counters.remove(&cookie);
        dev.module(m.params.scheduler.name())?.remove(cookie);
        dev.booked_burst_bytes -= m.booking.burst_bytes;
        if m.own_class {
            dev.draining.push((m.minor, m.booking.rate_bps));
            drain(&self.tc, dev).await
        } else {
            dev.guaranteed_bps -= m.booking.rate_bps;
            rebalance(&self.tc, dev, false).await
        }
    }

    /// Releases every socket attached over connection `conn` (it closed:
    /// the client exited or dropped its `Client`).
    pub async fn release_connection(&mut self, conn: u64) {
        let orphans: Vec<u64> = self.sockets.iter().filter(|(_, m)| m.conn == conn).map(|(c, _)| *c).collect();
        for c in orphans {
            log::info!("client connection {conn} closed; releasing socket {c}");
            let _ = self.close(c).await;
        }
    }

    /// Releases the sockets their processes closed without `qclose`: a
    /// managed socket a sock_diag sweep saw held before and no longer sees
    /// (closed: gone, or orphaned while TCP finishes). A socket never seen
    /// (not yet bound or connected) is left alone; it is released with its
    /// client connection. Called about once a second. Returns the released cookies.
    pub async fn release_closed(&mut self) -> Vec<u64> {
        if self.sockets.is_empty() {
            return Vec::new();
        }
        let held = match crate::diag::held_cookies() {
            Ok(h) => h,
            Err(e) => {
                log::debug!("sock_diag: {e}");
                return Vec::new();
            }
        };
        log::debug!("sweep: {} sockets held in the namespace, {} managed", held.len(), self.sockets.len());
        let mut closed = Vec::new();
        for (cookie, m) in self.sockets.iter_mut() {
            if held.contains(cookie) {
                m.held_seen = true;
            } else if m.held_seen {
                closed.push(*cookie);
            }
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

    /// `qinfo` on a managed socket; `sock` is the socket itself (for stack facts).
    pub async fn info(&self, facts: &SocketFacts, sock: BorrowedFd<'_>) -> Result<QInfo, QsockError> {
        let m = self.managed(facts.cookie)?;
        let dev = self.devices.get(&m.device).expect("managed sockets have open devices");
        let c = dev.counters(facts.cookie).unwrap_or_default();
        let cid = DeviceRt::classid(m.minor);
        let cls = self.tc.class_stats(dev.state.ifindex).await.map_err(kernel_err)?.get(&cid).copied().unwrap_or_default();
        let (rate_bps, rate_window_ns) = rate_from(&m.samples);
        let (sent_packets, sent_bytes) = if dev.delay_probe { (c.deq_packets, c.deq_bytes) } else { (cls.packets, cls.bytes) };
        Ok(QInfo {
            cookie: facts.cookie,
            device: m.device.clone(),
            classid: fmt_classid(cid),
            scheduler: m.params.scheduler.clone(),
            scheduler_state: dev
                .modules
                .iter()
                .find(|x| x.name() == m.params.scheduler.name())
                .map(|x| x.report(facts.cookie, &c))
                .unwrap_or(qsock::sched::SchedulerState::Rate),
            intents: m.params.intents.clone(),
            selection: m.selection.clone(),
            guaranteed_rate_bps: m.booking.rate_bps,
            guaranteed_burst_bytes: match m.class {
                StreamClass::Own { rate_bps, ceil_bps, burst_bytes } => crate::devrt::htb_class(rate_bps, ceil_bps, burst_bytes).burst_bytes,
                StreamClass::Shared { .. } => 0,
            },
            ceil_bps: match m.class {
                StreamClass::Own { rate_bps, ceil_bps, burst_bytes } => crate::devrt::htb_class(rate_bps, ceil_bps, burst_bytes).ceil_bps,
                StreamClass::Shared { .. } => m.booking.rate_bps,
            },
            service_rate_bps: c.meter.rate_at(qsock::monotonic_now_ns()),
            rate_bps,
            rate_window_ns,
            enqueued_packets: c.enq_packets,
            enqueued_bytes: c.enq_bytes,
            sent_packets,
            sent_bytes,
            unseen_packets: c.unseen_packets,
            backlog_packets: cls.qlen,
            backlog_bytes: cls.backlog,
            drops: Drops {
                deadline_packets: c.drop_deadline_packets,
                deadline_bytes: c.drop_deadline_bytes,
                frame_packets: c.drop_frame_packets,
                frame_bytes: c.drop_frame_bytes,
                qdisc_packets: cls.drops,
            },
            late_kept_packets: c.late_kept_packets,
            past_deadline_units: c.past_deadline_units,
            deadline_met_packets: c.deadline_met_packets,
            queuing_delay: delay_stats(&c),
            stack: sockinfo::stack_info(sock.as_fd()),
        })
    }

    /// `List`: every managed socket for root, else the caller's own. One
    /// class dump per device, one map lookup per socket.
    pub async fn list(&self, uid: u32) -> Result<Vec<qsock::SocketSummary>, QsockError> {
        let mut stats = HashMap::new();
        for (name, dev) in &self.devices {
            stats.insert(name.clone(), self.tc.class_stats(dev.state.ifindex).await.map_err(kernel_err)?);
        }
        let mut out: Vec<qsock::SocketSummary> = self
            .sockets
            .iter()
            .filter(|(_, m)| uid == 0 || m.owner_uid == uid)
            .map(|(cookie, m)| {
                let dev = self.devices.get(&m.device).expect("managed sockets have open devices");
                let c = dev.counters(*cookie).unwrap_or_default();
                let cid = DeviceRt::classid(m.minor);
                let qdisc = stats.get(&m.device).and_then(|s| s.get(&cid)).map(|s| s.drops).unwrap_or(0);
                qsock::SocketSummary {
                    cookie: *cookie,
                    uid: m.owner_uid,
                    pid: m.owner_pid,
                    command: std::fs::read_to_string(format!("/proc/{}/comm", m.owner_pid)).map(|s| s.trim().to_string()).unwrap_or_default(),
                    device: m.device.clone(),
                    classid: fmt_classid(cid),
                    scheduler: m.params.scheduler.name().to_string(),
                    guaranteed_rate_bps: m.booking.rate_bps,
                    rate_bps: rate_from(&m.samples).0,
                    drops: Drops {
                        deadline_packets: c.drop_deadline_packets,
                        deadline_bytes: c.drop_deadline_bytes,
                        frame_packets: c.drop_frame_packets,
                        frame_bytes: c.drop_frame_bytes,
                        qdisc_packets: qdisc,
                    },
                    queuing_delay: delay_stats(&c),
                    selection: m.selection.clone(),
                }
            })
            .collect();
        out.sort_by_key(|s| s.cookie);
        Ok(out)
    }

    /// Takes one rate sample of every managed socket (called periodically).
    pub fn sample(&mut self, now_ns: u64) {
        let window = self.rate_window_ns;
        for (cookie, m) in self.sockets.iter_mut() {
            let Some(dev) = self.devices.get(&m.device) else { continue };
            let Some(c) = dev.counters(*cookie) else { continue };
            let bytes = if dev.delay_probe { c.deq_bytes } else { c.enq_bytes };
            m.samples.push_back((now_ns, bytes));
            while m.samples.len() > 2 && m.samples.front().is_some_and(|(t, _)| now_ns - t > window) {
                m.samples.pop_front();
            }
        }
    }

}


/// Rate over the sample window: (bit/s, window ns).
fn rate_from(samples: &VecDeque<(u64, u64)>) -> (u64, u64) {
    match (samples.front(), samples.back()) {
        (Some(&(t0, b0)), Some(&(t1, b1))) if t1 > t0 => {
            let dt = t1 - t0;
            (((b1 - b0) as u128 * 8 * 1_000_000_000 / dt as u128) as u64, dt)
        }
        _ => (0, 0),
    }
}

/// Delay statistics from the data path's counters and log2 histogram.
pub fn delay_stats(c: &SocketCounters) -> DelayStats {
    let n: u64 = c.delay_hist.iter().sum();
    if n == 0 {
        return DelayStats::default();
    }
    let pct = |q: f64| {
        let target = (q * n as f64).ceil() as u64;
        let mut acc = 0;
        for (i, &k) in c.delay_hist.iter().enumerate() {
            acc += k;
            if acc >= target {
                return delay_bucket_upper_ns(i).min(c.delay_max_ns.max(1));
            }
        }
        c.delay_max_ns
    };
    DelayStats { samples: n, mean_ns: c.delay_sum_ns / n, p50_ns: pct(0.5), p99_ns: pct(0.99), max_ns: c.delay_max_ns }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_bytes_over_window() {
        let s: VecDeque<_> = [(0u64, 0u64), (500_000_000, 62_500), (1_000_000_000, 125_000)].into();
        assert_eq!(rate_from(&s), (1_000_000, 1_000_000_000));
        assert_eq!(rate_from(&VecDeque::new()), (0, 0));
    }

    #[test]
    fn delay_percentiles_come_from_buckets() {
        let mut c = SocketCounters::default();
        c.delay_hist[3] = 99; // < 8.192 µs
        c.delay_hist[10] = 1; // < 1.048 ms
        c.delay_sum_ns = 99 * 5_000 + 900_000;
        c.delay_max_ns = 900_000;
        let d = delay_stats(&c);
        assert_eq!(d.samples, 100);
        assert_eq!(d.p50_ns, delay_bucket_upper_ns(3));
        assert_eq!(d.p99_ns, delay_bucket_upper_ns(3));
        assert_eq!(d.max_ns, 900_000);
        assert_eq!(d.mean_ns, (99 * 5_000 + 900_000) / 100);
    }
}

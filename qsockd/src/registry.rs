//! The daemon's state: initialised devices with their maps and classes, and
//! the managed sockets. Every operation checks its input first and changes
//! nothing when it fails.
use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    os::fd::{AsFd, BorrowedFd},
};

use aya::{
    maps::{HashMap as BpfHashMap, MapData},
    programs::BtfTracePoint,
    Btf, Ebpf, EbpfLoader,
};
use qsock::{
    AttachInfo, DelayStats, Drops, ErrorKind, InitParams, QInfo, QosParams, QsockError, RateAttrs, SchedulerParams,
};
use qsock_common::*;

use crate::{
    config::Paths,
    device::{self, DeviceState, MANAGED_PRIO},
    sockinfo,
    tc::{fmt_classid, HtbClass, Tc},
    EBPF_OBJECT,
};

fn kernel_err(e: impl std::fmt::Display) -> QsockError {
    QsockError::new(ErrorKind::Kernel, e.to_string())
}

/// An initialised device opened by this daemon.
pub struct DeviceRt {
    /// What init recorded.
    pub state: DeviceState,
    policies: BpfHashMap<MapData, u64, SocketPolicy>,
    counters: BpfHashMap<MapData, u64, SocketCounters>,
    /// Keeps the dequeue probe attached while the daemon runs.
    _ebpf: Ebpf,
    /// Whether queuing delay is measured (the dequeue probe attached).
    pub delay_probe: bool,
    free_minors: BTreeSet<u32>,
    guaranteed_bps: u64,
    /// Classes of released sockets still holding packets: (minor, rate bit/s).
    draining: Vec<(u32, u64)>,
}

impl DeviceRt {
    /// Opens the pinned maps of an initialised device and attaches the
    /// dequeue probe. Stale entries (from a previous daemon) are removed.
    fn open(state: DeviceState) -> Result<Self, QsockError> {
        let btf = Btf::from_sys_fs().ok();
        let mut ebpf = EbpfLoader::new()
            .map_pin_path(&state.pin_dir)
            .btf(btf.as_ref())
            .load(EBPF_OBJECT)
            .map_err(|e| kernel_err(format!("open data path of {}: {e}", state.device)))?;
        let delay_probe = attach_probe(&mut ebpf, btf.as_ref())
            .map_err(|e| log::warn!("{}: queuing delay not measured: {e}", state.device))
            .is_ok();
        let mut policies: BpfHashMap<MapData, u64, SocketPolicy> =
            BpfHashMap::try_from(ebpf.take_map(MAP_POLICIES).ok_or_else(|| kernel_err("policy map missing"))?).map_err(kernel_err)?;
        let mut counters: BpfHashMap<MapData, u64, SocketCounters> =
            BpfHashMap::try_from(ebpf.take_map(MAP_COUNTERS).ok_or_else(|| kernel_err("counter map missing"))?).map_err(kernel_err)?;
        let stale: Vec<u64> = policies.keys().filter_map(|k| k.ok()).collect();
        for k in stale {
            let _ = policies.remove(&k);
        }
        let stale: Vec<u64> = counters.keys().filter_map(|k| k.ok()).collect();
        for k in stale {
            let _ = counters.remove(&k);
        }
        Ok(Self {
            state,
            policies,
            counters,
            _ebpf: ebpf,
            delay_probe,
            free_minors: (FIRST_SOCKET_MINOR..=LAST_SOCKET_MINOR).collect(),
            guaranteed_bps: 0,
            draining: Vec::new(),
        })
    }

    fn classid(minor: u32) -> u32 {
        classid(ROOT_MAJOR, minor)
    }

    /// Counters of `cookie` as the data path has them now.
    pub fn counters(&self, cookie: u64) -> Option<SocketCounters> {
        self.counters.get(&cookie, 0).ok()
    }
}

fn attach_probe(ebpf: &mut Ebpf, btf: Option<&Btf>) -> anyhow::Result<()> {
    let btf = btf.ok_or_else(|| anyhow::anyhow!("kernel has no BTF"))?;
    let prog: &mut BtfTracePoint = ebpf.program_mut(PROG_DEQUEUE).ok_or_else(|| anyhow::anyhow!("probe missing"))?.try_into()?;
    prog.load("qdisc_dequeue", btf)?;
    prog.attach()?;
    Ok(())
}

/// One managed socket.
pub struct Managed {
    /// Device its class lives on.
    pub device: String,
    /// HTB minor of its class.
    pub minor: u32,
    /// Parameters in force.
    pub params: QosParams,
    /// uid of the client that attached it.
    pub owner_uid: u32,
    /// Client connection that attached it; the socket is released when
    /// that connection closes.
    pub conn: u64,
    /// Rate samples: (ns of CLOCK_MONOTONIC, bytes dequeued).
    samples: VecDeque<(u64, u64)>,
}

/// The daemon's state.
pub struct Registry {
    paths: Paths,
    tc: Tc,
    devices: HashMap<String, DeviceRt>,
    sockets: HashMap<u64, Managed>,
    rate_window_ns: u64,
}

/// What the rate scheduler needs to set up a socket's class and policy.
struct Plan {
    class: HtbClass,
    policy_flags: u32,
    rate_bps: u64,
    delay_budget_ns: u64,
    default_drop_prio: u8,
}

/// Rate attributes that serve `params`: the rate scheduler's own, or an EDF
/// stream's utilisation as a guaranteed rate (and ceiling) at priority 0,
/// lossy or lossless.
fn rate_attrs(params: &SchedulerParams) -> Result<RateAttrs, QsockError> {
    match params {
        SchedulerParams::Rate(r) => Ok(r.clone()),
        SchedulerParams::Edf(e) => {
            let rate = qsock_edf::rate_bps(qsock_edf::PeriodicStream { bytes: e.message_bytes as u64, period_ns: e.min_interval_ns });
            // No borrowing: the class drains at exactly its reservation, so the
            // data path's lateness prediction is exact for lossy EDF.
            Ok(RateAttrs { lossless: !e.lossy, ceil_bps: Some(rate), ..RateAttrs::guaranteed(rate) })
        }
        other => Err(QsockError::new(ErrorKind::Unsupported, format!("scheduler {:?} is not available yet; use \"rate\" or \"edf\"", other.name()))),
    }
}

fn plan(params: &QosParams, sock_type: i32, dev: &DeviceState) -> Result<Plan, QsockError> {
    let r = &rate_attrs(&params.scheduler)?;
    let link = dev.link_rate_bps;
    let ceil = r.ceil_bps.unwrap_or(link).min(link);
    if r.rate_bps > link {
        return Err(QsockError::new(
            ErrorKind::CapacityExceeded,
            format!("guaranteed rate {} bit/s exceeds the link rate {} bit/s of {}", r.rate_bps, link, dev.device),
        ));
    }
    let mut flags = 0;
    if sock_type == libc::SOCK_DGRAM {
        flags |= POLICY_MSG_TAGS;
    }
    if r.non_droppable {
        flags |= POLICY_NON_DROPPABLE;
    }
    if r.lossless {
        flags |= POLICY_LOSSLESS;
    }
    Ok(Plan {
        class: HtbClass { rate_bps: r.rate_bps, ceil_bps: ceil.max(r.rate_bps), prio: MANAGED_PRIO },
        policy_flags: flags,
        rate_bps: r.rate_bps,
        delay_budget_ns: r.delay_budget_ns.unwrap_or(0),
        default_drop_prio: if r.non_droppable { DROP_PRIO_NON_DROPPABLE } else { DROP_PRIO_MAX_DROPPABLE },
    })
}

fn policy_of(cid: u32, p: &Plan) -> SocketPolicy {
    SocketPolicy {
        classid: cid,
        flags: p.policy_flags,
        rate_bps: p.rate_bps,
        delay_budget_ns: p.delay_budget_ns,
        default_drop_prio: p.default_drop_prio,
        _pad: [0; 7],
        burst_ns: (crate::tc::burst_bytes(p.rate_bps) as u128 * 8 * 1_000_000_000 / p.rate_bps.max(1) as u128) as u64,
    }
}

/// Opens a device and removes the socket classes a previous qsockd left
/// (their sockets are no longer managed: the maps were cleared too).
async fn open_device(tc: &Tc, st: DeviceState) -> Result<DeviceRt, QsockError> {
    let dev = DeviceRt::open(st)?;
    let stats = tc.class_stats(dev.state.ifindex).await.map_err(kernel_err)?;
    let stale: Vec<u32> = stats
        .keys()
        .copied()
        .filter(|c| c >> 16 == ROOT_MAJOR && (FIRST_SOCKET_MINOR..=LAST_SOCKET_MINOR).contains(&(c & 0xffff)))
        .collect();
    for cid in &stale {
        tc.delete_class(dev.state.ifindex, *cid).await.map_err(kernel_err)?;
    }
    if !stale.is_empty() {
        log::info!("{}: removed {} classes left by a previous qsockd", dev.state.device, stale.len());
        resize_best_effort(tc, &dev).await?;
    }
    Ok(dev)
}

/// Deletes the draining classes of `dev` that hold no packets, then gives
/// their rate back to best effort.
async fn drain(tc: &Tc, dev: &mut DeviceRt) -> Result<(), QsockError> {
    let stats = tc.class_stats(dev.state.ifindex).await.map_err(kernel_err)?;
    let mut freed = false;
    let mut result = Ok(());
    let mut keep = Vec::new();
    for (minor, rate) in std::mem::take(&mut dev.draining) {
        let cid = DeviceRt::classid(minor);
        if stats.get(&cid).is_some_and(|c| c.qlen > 0) {
            keep.push((minor, rate));
            continue;
        }
        if let Err(e) = tc.delete_class(dev.state.ifindex, cid).await {
            if e.errno() != Some(libc::ENOENT) {
                result = Err(kernel_err(e));
                keep.push((minor, rate));
                continue;
            }
        }
        dev.free_minors.insert(minor);
        dev.guaranteed_bps -= rate;
        freed = true;
    }
    dev.draining = keep;
    if freed {
        resize_best_effort(tc, dev).await?;
    }
    result
}

/// Best effort shrinks, then the class and the map entries appear; on error
/// what was added is removed again (the caller restores best effort).
async fn install_socket(tc: &Tc, dev: &mut DeviceRt, cookie: u64, cid: u32, p: &Plan) -> Result<(), QsockError> {
    resize_best_effort(tc, dev).await?;
    tc.set_htb_class(dev.state.ifindex, cid, classid(ROOT_MAJOR, ROOT_CLASS_MINOR), &p.class, true).await.map_err(kernel_err)?;
    // Counters before policy: the program only acts on sockets that have both.
    let installed = dev.counters.insert(cookie, SocketCounters::default(), 0).and_then(|_| dev.policies.insert(cookie, policy_of(cid, p), 0));
    if let Err(e) = installed {
        let _ = dev.counters.remove(&cookie);
        let _ = tc.delete_class(dev.state.ifindex, cid).await;
        return Err(kernel_err(format!("install policy: {e}")));
    }
    Ok(())
}

/// Who sent a request: the peer's uid (`SO_PEERCRED`) and its connection.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// uid of the connected process.
    pub uid: u32,
    /// Connection number, unique while qsockd runs.
    pub conn: u64,
}

/// Facts read from a socket a client handed over.
pub struct SocketFacts {
    /// `SO_COOKIE`.
    pub cookie: u64,
    /// `SO_TYPE`.
    pub sock_type: i32,
}

impl Registry {
    /// A registry for the namespace described by `paths`; opens every device
    /// already initialised there.
    pub async fn new(paths: Paths, tc: Tc, rate_window_ns: u64) -> Self {
        let mut r = Self { paths, tc, devices: HashMap::new(), sockets: HashMap::new(), rate_window_ns };
        for st in DeviceState::load_all(&r.paths) {
            let name = st.device.clone();
            match open_device(&r.tc, st).await {
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
            let d = open_device(&self.tc, st).await?;
            self.devices.insert(name.to_string(), d);
        }
        Ok(self.devices.get_mut(name).expect("inserted above"))
    }

    /// `qsockinit` on behalf of a root client.
    pub async fn init(&mut self, params: &InitParams) -> Result<(), QsockError> {
        let st = device::init(&self.paths, params).await?;
        let d = open_device(&self.tc, st).await?;
        self.devices.insert(params.device.clone(), d);
        Ok(())
    }

    /// Teardown on behalf of a root client; forgets the device's sockets.
    pub async fn teardown(&mut self, device_name: &str) -> Result<(), QsockError> {
        self.devices.remove(device_name);
        self.sockets.retain(|_, m| m.device != device_name);
        device::teardown(&self.paths, device_name).await
    }

    /// `qattach`: manage the socket `facts` describes with `params`.
    pub async fn attach(&mut self, facts: &SocketFacts, peer: Peer, params: QosParams) -> Result<AttachInfo, QsockError> {
        params.validate()?;
        if self.sockets.contains_key(&facts.cookie) {
            return Err(QsockError::new(ErrorKind::AlreadyManaged, "the socket is already managed; use qchange"));
        }
        let tc = self.tc.clone();
        let dev = self.device(&params.device).await?;
        let p = plan(&params, facts.sock_type, &dev.state)?;
        let room = dev.state.guaranteeable_bps().saturating_sub(dev.guaranteed_bps);
        if p.rate_bps > room {
            let what = match &params.scheduler {
                SchedulerParams::Edf(_) => format!(
                    "EDF stream refused: the deadline traffic would be unschedulable (it needs {} bit/s of utilisation, {room} bit/s is left on {})",
                    p.rate_bps, dev.state.device
                ),
                _ => format!("{} bit/s requested but only {room} bit/s of {} is left to guarantee", p.rate_bps, dev.state.device),
            };
            return Err(QsockError::new(ErrorKind::CapacityExceeded, what));
        }
        let minor = *dev.free_minors.iter().next().ok_or_else(|| QsockError::new(ErrorKind::CapacityExceeded, "no free class ids"))?;
        let cid = DeviceRt::classid(minor);
        // Shrink best effort first so the sum of assured rates never exceeds the link.
        dev.guaranteed_bps += p.rate_bps;
        let result = install_socket(&tc, dev, facts.cookie, cid, &p).await;
        if let Err(e) = result {
            dev.guaranteed_bps -= p.rate_bps;
            let _ = resize_best_effort(&tc, dev).await;
            return Err(e);
        }
        dev.free_minors.remove(&minor);
        self.sockets.insert(facts.cookie, Managed { device: params.device.clone(), minor, params, owner_uid: peer.uid, conn: peer.conn, samples: VecDeque::new() });
        Ok(AttachInfo { cookie: facts.cookie, classid: fmt_classid(cid) })
    }

    fn managed(&self, cookie: u64) -> Result<&Managed, QsockError> {
        self.sockets.get(&cookie).ok_or_else(|| QsockError::new(ErrorKind::NotManaged, "the socket is not managed by qsock; qattach it first"))
    }

    /// `qchange`: new parameters; the class (and the packets queued in it)
    /// stays when the device is unchanged.
    pub async fn change(&mut self, facts: &SocketFacts, params: QosParams) -> Result<AttachInfo, QsockError> {
        params.validate()?;
        let m = self.managed(facts.cookie)?;
        let (device, owner, minor, old_rate) = (m.device.clone(), Peer { uid: m.owner_uid, conn: m.conn }, m.minor, rate_of(&m.params));
        if device != params.device {
            // Another device: check the target first so a refusal changes nothing.
            let target = self.device(&params.device).await?;
            let p = plan(&params, facts.sock_type, &target.state)?;
            let room = target.state.guaranteeable_bps().saturating_sub(target.guaranteed_bps);
            if p.rate_bps > room {
                return Err(QsockError::new(ErrorKind::CapacityExceeded, format!("only {room} bit/s left to guarantee on {}", params.device)));
            }
            self.close(facts.cookie).await?;
            return self.attach(facts, owner, params).await;
        }
        let tc = self.tc.clone();
        let dev = self.devices.get_mut(&params.device).expect("managed sockets have open devices");
        let p = plan(&params, facts.sock_type, &dev.state)?;
        let room = dev.state.guaranteeable_bps().saturating_sub(dev.guaranteed_bps - old_rate);
        if p.rate_bps > room {
            return Err(QsockError::new(ErrorKind::CapacityExceeded, format!("only {room} bit/s left to guarantee on {}", params.device)));
        }
        let cid = DeviceRt::classid(minor);
        let grows = p.rate_bps > old_rate;
        dev.guaranteed_bps = dev.guaranteed_bps - old_rate + p.rate_bps;
        // Order the two class changes so assured rates never exceed the link.
        if grows {
            resize_best_effort(&tc, dev).await?;
        }
        tc.set_htb_class(dev.state.ifindex, cid, classid(ROOT_MAJOR, ROOT_CLASS_MINOR), &p.class, false).await.map_err(kernel_err)?;
        dev.policies.insert(facts.cookie, policy_of(cid, &p), 0).map_err(kernel_err)?;
        if !grows {
            resize_best_effort(&tc, dev).await?;
        }
        self.sockets.get_mut(&facts.cookie).expect("managed").params = params;
        Ok(AttachInfo { cookie: facts.cookie, classid: fmt_classid(cid) })
    }

    /// `qclose` (or cleanup of a closed socket): classification stops at
    /// once; the class goes now if it is empty, else once what it holds has
    /// been sent ([`Registry::sweep`]), and only then is its rate released.
    pub async fn close(&mut self, cookie: u64) -> Result<(), QsockError> {
        let m = self.sockets.remove(&cookie).ok_or_else(|| QsockError::new(ErrorKind::NotManaged, "the socket is not managed by qsock"))?;
        let dev = self.devices.get_mut(&m.device).expect("managed sockets have open devices");
        let _ = dev.policies.remove(&cookie);
        let _ = dev.counters.remove(&cookie);
        dev.draining.push((m.minor, rate_of(&m.params)));
        drain(&self.tc, dev).await
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
            intents: m.params.intents.clone(),
            guaranteed_rate_bps: rate_of(&m.params),
            rate_bps,
            rate_window_ns,
            enqueued_packets: c.enq_packets,
            enqueued_bytes: c.enq_bytes,
            sent_packets,
            sent_bytes,
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
            deadline_met_packets: c.deadline_met_packets,
            queuing_delay: delay_stats(&c),
            stack: sockinfo::stack_info(sock.as_fd()),
        })
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

/// Resizes the best-effort class to what guarantees leave on `dev`, so the
/// assured rates of all classes never add up to more than the link.
async fn resize_best_effort(tc: &Tc, dev: &DeviceRt) -> Result<(), QsockError> {
    let link = dev.state.link_rate_bps;
    let be = HtbClass { rate_bps: (link - dev.guaranteed_bps).max(1), ceil_bps: link, prio: device::BEST_EFFORT_PRIO };
    tc.set_htb_class(dev.state.ifindex, classid(ROOT_MAJOR, BEST_EFFORT_MINOR), classid(ROOT_MAJOR, ROOT_CLASS_MINOR), &be, false)
        .await
        .map_err(kernel_err)
}

fn rate_of(p: &QosParams) -> u64 {
    rate_attrs(&p.scheduler).map(|r| r.rate_bps).unwrap_or(0)
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

//! A device qsockd serves: its pinned maps, dequeue probe and scheduler
//! modules, and the steps that put a stream's plan into its HTB classes and
//! maps (and take it out again) in an order that never oversubscribes the link.
use std::collections::BTreeSet;

use aya::{
    maps::{HashMap as BpfHashMap, MapData},
    programs::BtfTracePoint,
    Btf, Ebpf, EbpfLoader,
};
use qsock::{
    sched::{Admission, LinkFacts, SchedulerModule, SharedClass, StreamClass, StreamPlan},
    ErrorKind, QsockError,
};
use qsock_common::*;

use crate::{
    device::{self, DeviceState, MANAGED_PRIO},
    rate::RateModule,
    tc::{HtbClass, Tc},
    EBPF_OBJECT,
};

/// What a stream holds of a device's books.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Booking {
    /// Reserved rate, bit/s.
    pub rate_bps: u64,
    /// Booked burst, bytes.
    pub burst_bytes: u64,
}

impl Booking {
    /// What `plan` books.
    pub fn of(plan: &StreamPlan) -> Self {
        Self { rate_bps: plan.reserved_bps, burst_bytes: plan.booked_burst_bytes }
    }
}

pub(crate) fn kernel_err(e: impl std::fmt::Display) -> QsockError {
    QsockError::new(ErrorKind::Kernel, e.to_string())
}

/// How the scheduler modules admit streams, the same on every device.
#[derive(Clone, Copy, Debug)]
pub struct ModuleSettings {
    /// Refuse or warn when a stream does not fit.
    pub admission: Admission,
    /// DWCS headroom on top of the feasibility share, per mille.
    pub dwcs_headroom_permille: u32,
    /// Booked bursts must drain within this at the link rate, ns.
    pub burst_horizon_ns: u64,
}

impl Default for ModuleSettings {
    fn default() -> Self {
        Self { admission: Admission::Refuse, dwcs_headroom_permille: qsock_dwcs::module::DEFAULT_HEADROOM_PERMILLE, burst_horizon_ns: 200_000_000 }
    }
}

/// An initialised device opened by this daemon.
pub struct DeviceRt {
    /// What init recorded.
    pub state: DeviceState,
    pub(crate) policies: BpfHashMap<MapData, u64, SocketPolicy>,
    pub(crate) counters: BpfHashMap<MapData, u64, SocketCounters>,
    pub(crate) clocks: BpfHashMap<MapData, u32, SharedClock>,
    /// Keeps the dequeue probe attached while the daemon runs.
    pub(crate) _ebpf: Ebpf,
    /// Whether queuing delay is measured (the dequeue probe attached).
    pub delay_probe: bool,
    pub(crate) free_minors: BTreeSet<u32>,
    pub(crate) guaranteed_bps: u64,
    /// Bursts booked by the device's streams, bytes.
    pub(crate) booked_burst_bytes: u64,
    /// Booked bursts must drain within this at the link rate, ns.
    pub(crate) burst_horizon_ns: u64,
    /// Classes of released sockets still holding packets: (minor, rate bit/s).
    pub(crate) draining: Vec<(u32, u64)>,
    /// Scheduler modules serving the device, all at once.
    pub(crate) modules: Vec<Box<dyn SchedulerModule>>,
    /// What admission does with a stream that does not fit.
    pub(crate) admission: Admission,
}

pub(crate) fn clear<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(m: &mut BpfHashMap<MapData, K, V>) {
    let stale: Vec<K> = m.keys().filter_map(|k| k.ok()).collect();
    for k in stale {
        let _ = m.remove(&k);
    }
}

impl DeviceRt {
    /// Opens the pinned maps of an initialised device and attaches the
    /// dequeue probe. Stale entries (from a previous daemon) are removed.
    fn open(state: DeviceState, settings: ModuleSettings) -> Result<Self, QsockError> {
        let btf = Btf::from_sys_fs().ok();
        let mut ebpf = EbpfLoader::new()
            .map_pin_path(&state.pin_dir)
            .btf(btf.as_ref())
            .load(EBPF_OBJECT)
            .map_err(|e| kernel_err(format!("open data path of {}: {e}", state.device)))?;
        let delay_probe = attach_probe(&mut ebpf, btf.as_ref())
            .map_err(|e| log::warn!("{}: queuing delay not measured: {e}", state.device))
            .is_ok();
        let mut take = |name: &str| ebpf.take_map(name).ok_or_else(|| kernel_err(format!("map {name} missing")));
        let mut policies: BpfHashMap<MapData, u64, SocketPolicy> = BpfHashMap::try_from(take(MAP_POLICIES)?).map_err(kernel_err)?;
        let mut counters: BpfHashMap<MapData, u64, SocketCounters> = BpfHashMap::try_from(take(MAP_COUNTERS)?).map_err(kernel_err)?;
        let mut clocks: BpfHashMap<MapData, u32, SharedClock> = BpfHashMap::try_from(take(MAP_SHARED_CLOCKS)?).map_err(kernel_err)?;
        clear(&mut policies);
        clear(&mut counters);
        clear(&mut clocks);
        Ok(Self {
            state,
            policies,
            counters,
            clocks,
            _ebpf: ebpf,
            delay_probe,
            free_minors: (FIRST_SOCKET_MINOR..=LAST_SOCKET_MINOR).collect(),
            guaranteed_bps: 0,
            booked_burst_bytes: 0,
            burst_horizon_ns: settings.burst_horizon_ns,
            draining: Vec::new(),
            modules: vec![Box::new(RateModule::default()), Box::new(crate::best_effort::BestEffortModule), Box::new(qsock_edf::module::EdfModule::default()), Box::new(qsock_dwcs::module::DwcsModule::new(settings.dwcs_headroom_permille))],
            admission: settings.admission,
        })
    }

    pub(crate) fn classid(minor: u32) -> u32 {
        classid(ROOT_MAJOR, minor)
    }

    /// Counters of `cookie` as the data path has them now.
    pub fn counters(&self, cookie: u64) -> Option<SocketCounters> {
        self.counters.get(&cookie, 0).ok()
    }

    /// What modules plan against; `own` (the stream's current reservation
    /// and booked burst, on a change) counts as free.
    pub(crate) fn link(&self, sock_type: i32, own: Booking) -> LinkFacts {
        let burst_capacity = (self.state.link_rate_bps as u128 * self.burst_horizon_ns as u128 / 8_000_000_000) as u64;
        LinkFacts {
            device: self.state.device.clone(),
            link_rate_bps: self.state.link_rate_bps,
            room_bps: self.state.guaranteeable_bps().saturating_sub(self.guaranteed_bps - own.rate_bps),
            burst_room_bytes: burst_capacity.saturating_sub(self.booked_burst_bytes - own.burst_bytes),
            msg_tags: sock_type == libc::SOCK_DGRAM,
            admission: self.admission,
        }
    }

    pub(crate) fn module(&mut self, name: &str) -> Result<&mut Box<dyn SchedulerModule>, QsockError> {
        self.modules
            .iter_mut()
            .find(|m| m.name() == name)
            .ok_or_else(|| QsockError::new(ErrorKind::Unsupported, format!("no scheduler module {name:?} on this daemon")))
    }

    fn shared_classes(&self) -> Vec<SharedClass> {
        self.modules.iter().flat_map(|m| m.shared_classes()).collect()
    }
}

pub(crate) fn attach_probe(ebpf: &mut Ebpf, btf: Option<&Btf>) -> anyhow::Result<()> {
    let btf = btf.ok_or_else(|| anyhow::anyhow!("kernel has no BTF"))?;
    let prog: &mut BtfTracePoint = ebpf.program_mut(PROG_DEQUEUE).ok_or_else(|| anyhow::anyhow!("probe missing"))?.try_into()?;
    prog.load("qdisc_dequeue", btf)?;
    prog.attach()?;
    Ok(())
}

pub(crate) fn htb_class(rate_bps: u64, ceil_bps: u64, burst_bytes: u64) -> HtbClass {
    let rate = rate_bps.max(1);
    HtbClass { rate_bps: rate, ceil_bps: ceil_bps.max(rate), burst_bytes: burst_bytes.max(qsock::sched::default_burst_bytes(rate)), prio: MANAGED_PRIO }
}

/// A bucket of `burst_bytes` as time at `rate_bps`, ns.
pub(crate) fn burst_ns(burst_bytes: u64, rate_bps: u64) -> u64 {
    (burst_bytes as u128 * 8 * 1_000_000_000 / rate_bps.max(1) as u128) as u64
}

/// The data-path policy of a planned stream in class `minor`.
pub(crate) fn policy_of(plan: &StreamPlan, minor: u32, msg_tags: bool) -> SocketPolicy {
    let mut p = plan.policy;
    p.classid = DeviceRt::classid(minor);
    if msg_tags {
        p.flags |= POLICY_MSG_TAGS;
    }
    if let StreamClass::Own { rate_bps, ceil_bps, burst_bytes } = plan.class {
        let class = htb_class(rate_bps, ceil_bps, burst_bytes);
        p.rate_bps = class.rate_bps;
        p.ceil_bps = class.ceil_bps;
        p.burst_ns = burst_ns(class.burst_bytes, class.rate_bps);
    }
    p
}

/// The shared clock's backlog (vclock − now, ns) holds bytes queued at
/// `old_bps`; at `new_bps` the same bytes take `backlog · old / new`.
pub(crate) fn rescale_vclock(vclock_ns: u64, now_ns: u64, old_bps: u64, new_bps: u64) -> u64 {
    if vclock_ns <= now_ns || old_bps == 0 || new_bps == 0 || old_bps == new_bps {
        return vclock_ns;
    }
    let backlog = (vclock_ns - now_ns) as u128 * old_bps as u128 / new_bps as u128;
    now_ns.saturating_add(backlog.min(u64::MAX as u128) as u64)
}

/// Sets every shared class of `dev` to what its module needs now and hands
/// the new rate to the data path's shared clock, its backlog rescaled to
/// the new rate.
pub(crate) async fn sync_shared(tc: &Tc, dev: &mut DeviceRt, create: bool) -> Result<(), QsockError> {
    for c in dev.shared_classes() {
        let cid = DeviceRt::classid(c.minor);
        let class = htb_class(c.rate_bps, c.ceil_bps, 0);
        tc.set_htb_class(dev.state.ifindex, cid, classid(ROOT_MAJOR, ROOT_CLASS_MINOR), &class, create)
            .await
            .map_err(kernel_err)?;
        let old = dev.clocks.get(&cid, 0).unwrap_or_default();
        let vclock_ns = rescale_vclock(old.vclock_ns, qsock::monotonic_now_ns(), old.rate_bps, c.rate_bps);
        dev.clocks.insert(cid, SharedClock { vclock_ns, rate_bps: c.rate_bps, burst_ns: burst_ns(class.burst_bytes, class.rate_bps) }, 0).map_err(kernel_err)?;
    }
    Ok(())
}

/// After the reservations on `dev` changed by `grew` (true: grew): resize
/// best effort and the shared classes in the order that keeps the assured
/// rates within the link.
pub(crate) async fn rebalance(tc: &Tc, dev: &mut DeviceRt, grew: bool) -> Result<(), QsockError> {
    if grew {
        resize_best_effort(tc, dev).await?;
        sync_shared(tc, dev, false).await
    } else {
        sync_shared(tc, dev, false).await?;
        resize_best_effort(tc, dev).await
    }
}

/// Opens a device, removes the classes a previous qsockd left (their
/// sockets are no longer managed: the maps were cleared too) and
/// initialises every scheduler module on it.
pub(crate) async fn open_device(tc: &Tc, st: DeviceState, settings: ModuleSettings) -> Result<DeviceRt, QsockError> {
    let mut dev = DeviceRt::open(st, settings)?;
    let stats = tc.class_stats(dev.state.ifindex).await.map_err(kernel_err)?;
    let stale: Vec<u32> = stats
        .keys()
        .copied()
        .filter(|c| c >> 16 == ROOT_MAJOR && ![0, ROOT_CLASS_MINOR, BEST_EFFORT_MINOR].contains(&(c & 0xffff)))
        .collect();
    for cid in &stale {
        tc.delete_class(dev.state.ifindex, *cid).await.map_err(kernel_err)?;
    }
    if !stale.is_empty() {
        log::info!("{}: removed {} classes left by a previous qsockd", dev.state.device, stale.len());
    }
    resize_best_effort(tc, &dev).await?;
    let link = dev.link(libc::SOCK_DGRAM, Booking::default());
    for m in dev.modules.iter_mut() {
        let classes = m.init(&link);
        log::debug!("{}: module {} owns {} shared classes", dev.state.device, m.name(), classes.len());
    }
    sync_shared(tc, &mut dev, true).await?;
    Ok(dev)
}

/// Deletes the draining classes of `dev` that hold no packets, then gives
/// their rate back to best effort.
pub(crate) async fn drain(tc: &Tc, dev: &mut DeviceRt) -> Result<(), QsockError> {
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

/// Puts a planned stream's class in place: a new own class (best effort
/// shrinks first), or the module's shared class resized. Returns the minor.
/// `reuse`: an own class the stream already has, changed in place.
pub(crate) async fn place(tc: &Tc, dev: &mut DeviceRt, plan: &StreamPlan, reuse: Option<u32>) -> Result<u32, QsockError> {
    match plan.class {
        StreamClass::Own { rate_bps, ceil_bps, burst_bytes } => {
            let class = htb_class(rate_bps, ceil_bps, burst_bytes);
            let parent = classid(ROOT_MAJOR, ROOT_CLASS_MINOR);
            if let Some(minor) = reuse {
                tc.set_htb_class(dev.state.ifindex, DeviceRt::classid(minor), parent, &class, false).await.map_err(kernel_err)?;
                return Ok(minor);
            }
            let minor = *dev.free_minors.iter().next().ok_or_else(|| QsockError::new(ErrorKind::CapacityExceeded, "no free class ids"))?;
            tc.set_htb_class(dev.state.ifindex, DeviceRt::classid(minor), parent, &class, true).await.map_err(kernel_err)?;
            dev.free_minors.remove(&minor);
            Ok(minor)
        }
        StreamClass::Shared { minor } => Ok(minor),
    }
}

/// Installs a planned new stream: reservation, class, then counters and
/// policy (the program only acts on sockets that have both). On error the
/// reservation and an own class are undone; the caller rebalances.
pub(crate) async fn install(tc: &Tc, dev: &mut DeviceRt, cookie: u64, plan: &StreamPlan, msg_tags: bool) -> Result<u32, QsockError> {
    dev.guaranteed_bps += plan.reserved_bps;
    dev.booked_burst_bytes += plan.booked_burst_bytes;
    let unbook = |dev: &mut DeviceRt| {
        dev.guaranteed_bps -= plan.reserved_bps;
        dev.booked_burst_bytes -= plan.booked_burst_bytes;
    };
    if let Err(e) = rebalance(tc, dev, true).await {
        unbook(dev);
        return Err(e);
    }
    let minor = match place(tc, dev, plan, None).await {
        Ok(m) => m,
        Err(e) => {
            unbook(dev);
            return Err(e);
        }
    };
    let installed = dev.counters.insert(cookie, SocketCounters::default(), 0).and_then(|_| dev.policies.insert(cookie, policy_of(plan, minor, msg_tags), 0));
    if let Err(e) = installed {
        let _ = dev.counters.remove(&cookie);
        if let StreamClass::Own { .. } = plan.class {
            let _ = tc.delete_class(dev.state.ifindex, DeviceRt::classid(minor)).await;
            dev.free_minors.insert(minor);
        }
        unbook(dev);
        return Err(kernel_err(format!("install policy: {e}")));
    }
    Ok(minor)
}

/// Resizes the best-effort class to what guarantees leave on `dev`, so the
/// assured rates of all classes never add up to more than the link.
pub(crate) async fn resize_best_effort(tc: &Tc, dev: &DeviceRt) -> Result<(), QsockError> {
    let link = dev.state.link_rate_bps;
    let be = HtbClass::new((link - dev.guaranteed_bps).max(1), link, device::BEST_EFFORT_PRIO);
    tc.set_htb_class(dev.state.ifindex, classid(ROOT_MAJOR, BEST_EFFORT_MINOR), classid(ROOT_MAJOR, ROOT_CLASS_MINOR), &be, false)
        .await
        .map_err(kernel_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_clock_backlog_rescales_with_the_rate() {
        // 10 ms of backlog at 2 Mbit/s is 20 ms at 1 Mbit/s.
        assert_eq!(rescale_vclock(1_010_000_000, 1_000_000_000, 2_000_000, 1_000_000), 1_020_000_000);
        assert_eq!(rescale_vclock(900, 1_000, 2, 1), 900, "no backlog, nothing to rescale");
        assert_eq!(rescale_vclock(2_000, 1_000, 0, 1), 2_000);
    }
}

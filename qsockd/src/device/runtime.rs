//! A device qsockd serves: its pinned maps, dequeue probe and scheduler
//! modules, and the steps that put a stream's plan into its HTB classes and
//! maps (and take it out again) in an order that never oversubscribes the link.
use std::{
    collections::{BTreeSet, HashMap},
    path::Path,
};

use aya::{
    maps::HashMap as BpfHashMap,
    programs::{
        links::{FdLink, PinnedLink},
        BtfTracePoint,
    },
    Btf, Ebpf, EbpfLoader,
};
use qsock::{ErrorKind, QsockError};
use qsock_common::*;
use qsock_sched::{Admission, LinkFacts, SchedulerModule, SharedClass, StreamClass, StreamPlan};

use crate::{
    device::{
        self,
        kernel::{DeviceKernel, KernelDevice},
        ClassPool, DeviceState, Reservations, MANAGED_PRIO,
    },
    error::DaemonError,
    kernel::htb::HtbClass,
    kernel::tc::{Tc, TcError},
    sched::rate::RateModule,
    state::sockets::{Booking, Managed},
    EBPF_OBJECT,
};

/// How the scheduler modules admit streams, the same on every device.
#[derive(Clone, Copy, Debug)]
pub struct ModuleSettings {
    /// Refuse or warn when a stream does not fit.
    pub admission: Admission,
    /// DWCS headroom on top of the feasibility share, per mille.
    pub dwcs_headroom_permille: u32,
    /// Booked bursts must drain within this at the link rate, ns.
    pub burst_horizon_ns: u64,
    /// Parked classes created ahead when a device is opened (config `class_pool`).
    pub class_pool: u32,
    /// Most parked classes kept; a released class beyond is deleted (config `class_pool_max`).
    pub class_pool_max: u32,
}

impl Default for ModuleSettings {
    fn default() -> Self {
        Self {
            admission: Admission::Refuse,
            dwcs_headroom_permille: qsock_dwcs::module::DEFAULT_HEADROOM_PERMILLE,
            burst_horizon_ns: 200_000_000,
            class_pool: 0,
            class_pool_max: 16_384,
        }
    }
}

/// Rate of a parked class, bit/s: the smallest HTB takes (1 byte/s is
/// 8 bit/s; this is 1 kB/s, what `tc` prints as `8Kbit`).
pub const PARKED_RATE_BPS: u64 = 8_000;

/// An initialised device opened by this daemon.
pub struct DeviceRt {
    /// What init recorded.
    pub state: DeviceState,
    /// Its HTB classes and the data path's maps.
    pub(crate) kernel: Box<dyn DeviceKernel>,
    /// Keeps the dequeue probe attached while the daemon runs (none in the
    /// operations' property tests).
    pub(crate) _ebpf: Option<Ebpf>,
    /// Whether queuing delay is measured (the dequeue probe attached).
    pub delay_probe: bool,
    /// Class ids: free, parked, taken.
    pub(crate) classes: ClassPool,
    /// Guaranteed rates and bursts booked on the device.
    pub(crate) reservations: Reservations,
    /// Booked bursts must drain within this at the link rate, ns.
    pub(crate) burst_horizon_ns: u64,
    /// Classes of released sockets still holding packets: (minor, rate bit/s).
    pub(crate) draining: Vec<(u32, u64)>,
    /// Scheduler modules serving the device, all at once.
    pub(crate) modules: Vec<Box<dyn SchedulerModule>>,
    /// What admission does with a stream that does not fit.
    pub(crate) admission: Admission,
    /// Shared classes as last set in the kernel: minor → (rate, ceil) bit/s.
    /// A class whose module needs what it has is not touched again.
    pub(crate) applied_shared: HashMap<u32, (u64, u64)>,
}

impl DeviceRt {
    /// Opens the pinned maps of an initialised device and makes sure the
    /// dequeue probe is attached (its link is pinned beside the maps, so it
    /// outlives this daemon like the tc filter does). Map entries are kept:
    /// [`open_device`] recovers the sockets they belong to.
    fn open(tc: &Tc, state: DeviceState, settings: ModuleSettings) -> Result<Self, DaemonError> {
        let btf = Btf::from_sys_fs().ok();
        let mut ebpf = EbpfLoader::new()
            .map_pin_path(&state.pin_dir)
            .btf(btf.as_ref())
            .load(EBPF_OBJECT)
            .map_err(|e| DaemonError::Kernel(format!("open data path of {}: {e}", state.device)))?;
        let delay_probe = ensure_probe(&mut ebpf, btf.as_ref(), &state.pin_dir.join(PROBE_LINK_PIN))
            .map_err(|e| log::warn!("{}: queuing delay not measured: {e}", state.device))
            .is_ok();
        let mut take = |name: &str| ebpf.take_map(name).ok_or_else(|| DaemonError::Kernel(format!("map {name} missing")));
        let kernel = KernelDevice {
            tc: tc.clone(),
            ifindex: state.ifindex,
            policies: BpfHashMap::try_from(take(MAP_POLICIES)?)?,
            counters: BpfHashMap::try_from(take(MAP_COUNTERS)?)?,
            clocks: BpfHashMap::try_from(take(MAP_SHARED_CLOCKS)?)?,
        };
        let mut dev = Self::with_kernel(state, settings, Box::new(kernel));
        dev._ebpf = Some(ebpf);
        dev.delay_probe = delay_probe;
        Ok(dev)
    }

    /// A device whose kernel steps go to `kernel`; no data-path object is
    /// loaded and queuing delay is not measured.
    pub(crate) fn with_kernel(state: DeviceState, settings: ModuleSettings, kernel: Box<dyn DeviceKernel>) -> Self {
        Self {
            state,
            kernel,
            _ebpf: None,
            delay_probe: false,
            classes: ClassPool::new(settings.class_pool_max),
            reservations: Reservations::default(),
            burst_horizon_ns: settings.burst_horizon_ns,
            draining: Vec::new(),
            modules: vec![
                Box::new(RateModule::default()),
                Box::new(crate::sched::best_effort::BestEffortModule),
                Box::new(qsock_edf::module::EdfModule::default()),
                Box::new(qsock_dwcs::module::DwcsModule::new(settings.dwcs_headroom_permille)),
            ],
            admission: settings.admission,
            applied_shared: HashMap::new(),
        }
    }

    pub(crate) fn classid(minor: u32) -> u32 {
        classid(ROOT_MAJOR, minor)
    }

    /// Counters of `cookie` as the data path has them now.
    pub fn counters(&self, cookie: u64) -> Option<SocketCounters> {
        self.kernel.counters(cookie)
    }

    /// What modules plan against; `own` (the stream's current reservation
    /// and booked burst, on a change) counts as free.
    pub(crate) fn link(&self, sock_type: i32, own: Booking) -> LinkFacts {
        let burst_capacity = (self.state.link_rate_bps as u128 * self.burst_horizon_ns as u128 / 8_000_000_000) as u64;
        LinkFacts {
            device: self.state.device.clone(),
            link_rate_bps: self.state.link_rate_bps,
            room_bps: self.state.guaranteeable_bps().saturating_sub(self.reservations.without(own).rate_bps()),
            burst_room_bytes: burst_capacity.saturating_sub(self.reservations.without(own).burst_bytes()),
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

/// File name of the dequeue probe's pinned link in a device's pin directory.
pub const PROBE_LINK_PIN: &str = "qsock_dequeue_link";

/// Attaches the dequeue probe and pins its link at `pin`, unless a link is
/// pinned there already (a previous qsockd attached it; it kept counting
/// while no daemon ran).
pub(crate) fn ensure_probe(ebpf: &mut Ebpf, btf: Option<&Btf>, pin: &Path) -> anyhow::Result<()> {
    if PinnedLink::from_pin(pin).is_ok() {
        return Ok(());
    }
    let btf = btf.ok_or_else(|| anyhow::anyhow!("kernel has no BTF"))?;
    let prog: &mut BtfTracePoint = ebpf.program_mut(PROG_DEQUEUE).ok_or_else(|| anyhow::anyhow!("probe missing"))?.try_into()?;
    prog.load("qdisc_dequeue", btf)?;
    let id = prog.attach()?;
    let link = FdLink::from(prog.take_link(id)?);
    link.pin(pin).map_err(|e| anyhow::anyhow!("pin the probe's link at {}: {e}", pin.display()))?;
    Ok(())
}

pub(crate) fn htb_class(rate_bps: u64, ceil_bps: u64, burst_bytes: u64) -> HtbClass {
    let rate = rate_bps.max(1);
    HtbClass { rate_bps: rate, ceil_bps: ceil_bps.max(rate), burst_bytes: burst_bytes.max(qsock_sched::default_burst_bytes(rate)), prio: MANAGED_PRIO }
}

/// A parked class: [`PARKED_RATE_BPS`], lowest priority, and the link as
/// ceiling so anything still queued in it drains.
pub(crate) fn parked_class(link_rate_bps: u64) -> HtbClass {
    HtbClass::new(PARKED_RATE_BPS, link_rate_bps.max(PARKED_RATE_BPS), device::BEST_EFFORT_PRIO)
}

/// Parks class `minor` of `dev` (or deletes it when the pool is full).
pub(crate) async fn park(dev: &mut DeviceRt, minor: u32) -> Result<(), TcError> {
    let cid = DeviceRt::classid(minor);
    if dev.classes.may_park() {
        let parent = classid(ROOT_MAJOR, ROOT_CLASS_MINOR);
        match dev.kernel.set_htb_class(cid, parent, parked_class(dev.state.link_rate_bps), false).await {
            Ok(()) => {
                dev.classes.park(minor);
                return Ok(());
            }
            Err(e) if e.errno() == Some(libc::ENOENT) => {
                dev.classes.release(minor);
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    match dev.kernel.delete_class(cid).await {
        Err(e) if e.errno() != Some(libc::ENOENT) => Err(e),
        _ => {
            dev.classes.release(minor);
            Ok(())
        }
    }
}

/// Creates parked classes until `dev` has `want` of them (or no minor is free).
pub(crate) async fn fill_pool(dev: &mut DeviceRt, want: u32) -> Result<(), DaemonError> {
    let parent = classid(ROOT_MAJOR, ROOT_CLASS_MINOR);
    let class = parked_class(dev.state.link_rate_bps);
    while dev.classes.parked_len() < want as usize {
        let Some(minor) = dev.classes.take_free() else { break };
        if let Err(e) = dev.kernel.set_htb_class(DeviceRt::classid(minor), parent, class, true).await {
            dev.classes.release(minor);
            return Err(e.into());
        }
        dev.classes.park(minor);
    }
    Ok(())
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
/// the new rate; the classes that shrink go before those that grow. A class
/// already at what its module needs is not touched (`create`: every class
/// is created, none assumed).
pub(crate) async fn sync_shared(dev: &mut DeviceRt, create: bool) -> Result<(), DaemonError> {
    sync_shared_where(dev, create, |_| true).await
}

/// [`sync_shared`] for the shared classes that shrink only (their module
/// needs less than the kernel has): the first half of a change that moves
/// a stream between classes.
pub(crate) async fn shrink_shared(dev: &mut DeviceRt) -> Result<(), DaemonError> {
    sync_shared_where(dev, false, |shrinks| shrinks).await
}

async fn sync_shared_where(dev: &mut DeviceRt, create: bool, pick: impl Fn(bool) -> bool) -> Result<(), DaemonError> {
    let shrinks = |dev: &DeviceRt, c: &SharedClass| dev.applied_shared.get(&c.minor).is_some_and(|(rate, _)| c.rate_bps < *rate);
    let mut classes: Vec<(bool, SharedClass)> = dev.shared_classes().into_iter().map(|c| (shrinks(dev, &c), c)).filter(|(s, _)| pick(*s)).collect();
    // Those that shrink first: a stream moving between two shared classes never counts twice.
    classes.sort_by_key(|(s, _)| !s);
    for (_, c) in classes {
        if !create && dev.applied_shared.get(&c.minor) == Some(&(c.rate_bps, c.ceil_bps)) {
            continue;
        }
        let cid = DeviceRt::classid(c.minor);
        let class = htb_class(c.rate_bps, c.ceil_bps, 0);
        dev.kernel.set_htb_class(cid, classid(ROOT_MAJOR, ROOT_CLASS_MINOR), class, create).await?;
        dev.applied_shared.insert(c.minor, (c.rate_bps, c.ceil_bps));
        let old = dev.kernel.shared_clock(cid).unwrap_or_default();
        let vclock_ns = rescale_vclock(old.vclock_ns, qsock::monotonic_now_ns(), old.rate_bps, c.rate_bps);
        dev.kernel.set_shared_clock(cid, SharedClock { vclock_ns, rate_bps: c.rate_bps, burst_ns: burst_ns(class.burst_bytes, class.rate_bps) })?;
    }
    Ok(())
}

/// After the reservations on `dev` changed by `grew` (true: grew): resize
/// best effort and the shared classes in the order that keeps the assured
/// rates within the link.
pub(crate) async fn rebalance(dev: &mut DeviceRt, grew: bool) -> Result<(), DaemonError> {
    if grew {
        resize_best_effort(dev).await?;
        sync_shared(dev, false).await
    } else {
        sync_shared(dev, false).await?;
        resize_best_effort(dev).await
    }
}

/// Opens a device and takes over what a previous qsockd left on it: the
/// sockets in `books` whose map entries and class are still in the kernel
/// are re-admitted to their modules on the same class, with their counters
/// and queued packets untouched; classes and map entries nobody books are
/// removed. Returns the device and the sockets recovered.
pub(crate) async fn open_device(
    tc: &Tc,
    st: DeviceState,
    settings: ModuleSettings,
    books: Vec<(u64, Managed)>,
) -> Result<(DeviceRt, Vec<(u64, Managed)>), DaemonError> {
    take_over(DeviceRt::open(tc, st, settings)?, settings, books).await
}

/// [`open_device`] once the device's kernel handle is open: the modules
/// make their shared classes, booked sockets are recovered, and what nobody
/// books is parked or removed.
pub(crate) async fn take_over(mut dev: DeviceRt, settings: ModuleSettings, books: Vec<(u64, Managed)>) -> Result<(DeviceRt, Vec<(u64, Managed)>), DaemonError> {
    let stats = dev.kernel.class_stats().await?;
    let link = dev.link(libc::SOCK_DGRAM, Booking::default());
    let mut shared_minors: BTreeSet<u32> = BTreeSet::new();
    for m in dev.modules.iter_mut() {
        let classes = m.init(&link);
        log::debug!("{}: module {} owns {} shared classes", dev.state.device, m.name(), classes.len());
        shared_minors.extend(classes.iter().map(|c| c.minor));
    }
    let mut recovered = Vec::new();
    for (cookie, m) in books {
        match recover(&mut dev, &stats, &shared_minors, cookie, &m) {
            Ok(booking) => recovered.push((cookie, Managed { booking, ..m })),
            Err(why) => log::warn!("{}: socket {cookie} not recovered: {why}", dev.state.device),
        }
    }
    let own: BTreeSet<u32> = recovered.iter().filter(|(_, m)| m.own_class).map(|(_, m)| m.minor).collect();
    let stale: Vec<u32> = stats
        .keys()
        .copied()
        .filter(|c| c >> 16 == ROOT_MAJOR)
        .filter(|c| {
            let minor = c & 0xffff;
            ![0, ROOT_CLASS_MINOR, BEST_EFFORT_MINOR].contains(&minor) && !shared_minors.contains(&minor) && !own.contains(&minor)
        })
        .collect();
    for cid in &stale {
        let minor = cid & 0xffff;
        if (FIRST_SOCKET_MINOR..=LAST_SOCKET_MINOR).contains(&minor) && dev.classes.claim(minor) {
            park(&mut dev, minor).await?;
        } else {
            dev.kernel.delete_class(*cid).await?;
        }
    }
    let cookies: std::collections::HashSet<u64> = recovered.iter().map(|(c, _)| *c).collect();
    let stale_entries = dev.kernel.retain(&cookies, &shared_minors);
    if !stale.is_empty() || stale_entries > 0 || !recovered.is_empty() {
        log::info!(
            "{}: {} sockets recovered; parked or removed {} classes and {} map entries nobody books",
            dev.state.device,
            recovered.len(),
            stale.len(),
            stale_entries
        );
    }
    resize_best_effort(&dev).await?;
    // Shared classes that survived are changed in place (their queues stay); missing ones are created.
    for c in dev.shared_classes() {
        let exists = stats.contains_key(&DeviceRt::classid(c.minor));
        let class = htb_class(c.rate_bps, c.ceil_bps, 0);
        dev.kernel.set_htb_class(DeviceRt::classid(c.minor), classid(ROOT_MAJOR, ROOT_CLASS_MINOR), class, !exists).await?;
    }
    sync_shared(&mut dev, false).await?;
    let want = settings.class_pool.min(settings.class_pool_max);
    if dev.classes.parked_len() < want as usize {
        let t = std::time::Instant::now();
        fill_pool(&mut dev, want).await?;
        log::info!("{}: {} parked classes ready ({:.1} s)", dev.state.device, dev.classes.parked_len(), t.elapsed().as_secs_f64());
    }
    Ok((dev, recovered))
}

/// Re-admits one booked socket on a device being opened: its policy must
/// still be in the map and its own class in the kernel; its module must
/// plan it on the same class. Returns its booking.
fn recover(
    dev: &mut DeviceRt,
    stats: &std::collections::HashMap<u32, crate::kernel::tc::ClassStats>,
    shared: &BTreeSet<u32>,
    cookie: u64,
    m: &Managed,
) -> Result<Booking, String> {
    if dev.kernel.policy(cookie).is_none() {
        return Err("its policy is no longer in the data path's map".into());
    }
    if m.own_class && (!stats.contains_key(&DeviceRt::classid(m.minor)) || !dev.classes.is_free(m.minor)) {
        return Err(format!("its class {} is gone or taken", crate::kernel::tc::fmt_classid(DeviceRt::classid(m.minor))));
    }
    let link = dev.link(m.sock_type, Booking::default());
    let name = m.params.scheduler.name();
    let module = dev.module(name).map_err(|e| e.to_string())?;
    let plan = module.add(cookie, &m.params.scheduler, &link).map_err(|e| e.to_string())?;
    let same = match (plan.class, m.own_class) {
        (StreamClass::Own { .. }, true) => true,
        (StreamClass::Shared { minor }, false) => minor == m.minor && shared.contains(&minor),
        _ => false,
    };
    if !same {
        dev.module(name).map_err(|e| e.to_string())?.remove(cookie);
        return Err("its module now plans it on another class".into());
    }
    let booking = Booking::of(&plan);
    dev.reservations.book(booking);
    if m.own_class {
        dev.classes.claim(m.minor);
    }
    Ok(booking)
}

/// Parks (or deletes, past the pool's size) the draining classes of `dev`
/// that hold no packets, then gives their rate back to best effort.
pub(crate) async fn drain(dev: &mut DeviceRt) -> Result<(), DaemonError> {
    let mut freed = false;
    let mut result = Ok(());
    let mut keep = Vec::new();
    for (minor, rate) in std::mem::take(&mut dev.draining) {
        let cid = DeviceRt::classid(minor);
        match dev.kernel.class_stats_of(cid).await {
            Ok(Some(c)) if c.qlen > 0 => {
                keep.push((minor, rate));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                result = Err(e.into());
                keep.push((minor, rate));
                continue;
            }
        }
        if let Err(e) = park(dev, minor).await {
            result = Err(e.into());
            keep.push((minor, rate));
            continue;
        }
        dev.reservations.unbook(Booking { rate_bps: rate, burst_bytes: 0 });
        freed = true;
    }
    dev.draining = keep;
    if freed {
        resize_best_effort(dev).await?;
    }
    result
}

/// Puts a planned stream's class in place: a new own class (best effort
/// shrinks first), or the module's shared class resized. Returns the minor.
/// `reuse`: an own class the stream already has, changed in place.
pub(crate) async fn place(dev: &mut DeviceRt, plan: &StreamPlan, reuse: Option<u32>) -> Result<u32, DaemonError> {
    match plan.class {
        StreamClass::Own { rate_bps, ceil_bps, burst_bytes } => {
            let class = htb_class(rate_bps, ceil_bps, burst_bytes);
            let parent = classid(ROOT_MAJOR, ROOT_CLASS_MINOR);
            if let Some(minor) = reuse {
                dev.kernel.set_htb_class(DeviceRt::classid(minor), parent, class, false).await?;
                return Ok(minor);
            }
            // A parked class first: one change instead of an add.
            while let Some(minor) = dev.classes.take_parked() {
                match dev.kernel.set_htb_class(DeviceRt::classid(minor), parent, class, false).await {
                    Ok(()) => return Ok(minor),
                    Err(e) if e.errno() == Some(libc::ENOENT) => dev.classes.release(minor),
                    Err(e) => {
                        dev.classes.park(minor);
                        return Err(e.into());
                    }
                }
            }
            let minor = dev.classes.take_free().ok_or_else(|| QsockError::new(ErrorKind::CapacityExceeded, "no free class ids"))?;
            if let Err(e) = dev.kernel.set_htb_class(DeviceRt::classid(minor), parent, class, true).await {
                if e.errno() == Some(libc::EEXIST) {
                    // Someone else's class has this id: leave it, and the id, alone.
                    log::warn!(
                        "{}: class {} exists but is not qsockd's; its id is not used",
                        dev.state.device,
                        crate::kernel::tc::fmt_classid(DeviceRt::classid(minor))
                    );
                } else {
                    dev.classes.release(minor);
                }
                return Err(e.into());
            }
            Ok(minor)
        }
        StreamClass::Shared { minor } => Ok(minor),
    }
}

/// Installs a planned new stream: reservation, class, then counters and
/// policy (the program only acts on sockets that have both). On error the
/// reservation and an own class are undone; the caller rebalances.
pub(crate) async fn install(dev: &mut DeviceRt, cookie: u64, plan: &StreamPlan, msg_tags: bool) -> Result<u32, DaemonError> {
    let booking = Booking::of(plan);
    dev.reservations.book(booking);
    let unbook = |dev: &mut DeviceRt| dev.reservations.unbook(booking);
    if let Err(e) = rebalance(dev, true).await {
        unbook(dev);
        return Err(e);
    }
    let minor = match place(dev, plan, None).await {
        Ok(m) => m,
        Err(e) => {
            unbook(dev);
            return Err(e);
        }
    };
    let installed = dev.kernel.reset_counters(cookie).and_then(|_| dev.kernel.set_policy(cookie, policy_of(plan, minor, msg_tags)));
    if let Err(e) = installed {
        dev.kernel.remove_counters(cookie);
        if let StreamClass::Own { .. } = plan.class {
            if park(dev, minor).await.is_err() {
                log::error!("{}: class {} left after a failed install", dev.state.device, crate::kernel::tc::fmt_classid(DeviceRt::classid(minor)));
            }
        }
        unbook(dev);
        return Err(e);
    }
    Ok(minor)
}

/// Resizes the best-effort class to what guarantees leave on `dev` (and
/// what shared classes a failed step left larger than their module needs
/// still hold), so the assured rates of all classes never add up to more
/// than the link.
pub(crate) async fn resize_best_effort(dev: &DeviceRt) -> Result<(), DaemonError> {
    let link = dev.state.link_rate_bps;
    // A shared class whose shrink failed still assures its old rate in the kernel.
    let stale: u64 = dev.shared_classes().iter().map(|c| dev.applied_shared.get(&c.minor).map_or(0, |(rate, _)| rate.saturating_sub(c.rate_bps.max(1)))).sum();
    let be = HtbClass::new(link.saturating_sub(dev.reservations.rate_bps() + stale).max(1), link, device::BEST_EFFORT_PRIO);
    dev.kernel.set_htb_class(classid(ROOT_MAJOR, BEST_EFFORT_MINOR), classid(ROOT_MAJOR, ROOT_CLASS_MINOR), be, false).await?;
    Ok(())
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

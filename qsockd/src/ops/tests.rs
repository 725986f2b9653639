//! Property tests of the control operations without root: the registry
//! runs on a model of each device's kernel (HTB classes and the data
//! path's maps) that can refuse any step, and random sequences of
//! attach, change (on the device and to another), close and drain,
//! admitted, refused or failing half-way, must keep the books right.
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::UdpSocket,
    os::fd::AsFd,
    sync::{Arc, Mutex},
};

use proptest::prelude::*;
use qsock::{DwcsAttrs, EdfAttrs, QosParams, RateAttrs, SchedulerParams};
use qsock_common::{classid, SharedClock, SocketCounters, SocketPolicy, BEST_EFFORT_MINOR, ROOT_CLASS_MINOR, ROOT_MAJOR};

use super::{Peer, Registry};
use crate::{
    config::{Config, Paths},
    device::{
        kernel::{DeviceKernel, TcFuture},
        runtime::{take_over, DeviceRt, ModuleSettings, PARKED_RATE_BPS},
        DeviceState,
    },
    error::DaemonError,
    kernel::{
        htb::HtbClass,
        tc::{ClassStats, Tc, TcError},
    },
    state::sockinfo::SocketFacts,
};

/// What the model kernel of one device holds, and what went wrong in it.
#[derive(Default)]
struct Model {
    link_rate_bps: u64,
    classes: HashMap<u32, HtbClass>,
    policies: HashMap<u64, SocketPolicy>,
    counters: HashMap<u64, SocketCounters>,
    clocks: HashMap<u32, SharedClock>,
    /// Classes that report queued packets (a draining class keeps its rate).
    backlogged: bool,
    /// The first moment the assured rates added up to more than the link.
    oversubscribed: Option<String>,
}

/// Steps left before the injected failure (shared by every device, so a
/// move fails on whichever device takes the step); `None`: no failure.
type Fuse = Arc<Mutex<Option<u32>>>;

/// One device's kernel as the operations see it.
struct ModelKernel {
    model: Arc<Mutex<Model>>,
    fuse: Fuse,
}

fn eio(op: &str) -> TcError {
    TcError { op: op.into(), source: std::io::Error::from_raw_os_error(libc::EIO) }
}

impl ModelKernel {
    /// Whether this step is the one that fails.
    fn blows(&self) -> bool {
        let mut f = self.fuse.lock().unwrap();
        match *f {
            Some(0) => {
                *f = None;
                true
            }
            Some(n) => {
                *f = Some(n - 1);
                false
            }
            None => false,
        }
    }

    fn tc_step<T: Send + 'static>(&self, op: &str, f: impl FnOnce(&mut Model) -> Result<T, TcError>) -> TcFuture<'_, T> {
        let r = if self.blows() { Err(eio(op)) } else { f(&mut self.model.lock().unwrap()) };
        Box::pin(async move { r })
    }
}

/// Sum of the assured rates under the root class, less a parked class's
/// rate ([`PARKED_RATE_BPS`], 8 kbit/s) for each class but best effort:
/// idle classes (parked, or a module's shared class with no stream) keep
/// that floor outside the books, as HTB assures nothing to a class without
/// packets.
fn assured_bps(m: &Model) -> u64 {
    m.classes
        .iter()
        .filter(|(cid, _)| **cid != classid(ROOT_MAJOR, ROOT_CLASS_MINOR))
        .map(|(cid, c)| if *cid == classid(ROOT_MAJOR, BEST_EFFORT_MINOR) { c.rate_bps } else { c.rate_bps.saturating_sub(PARKED_RATE_BPS) })
        .sum()
}

impl DeviceKernel for ModelKernel {
    fn set_htb_class(&self, cid: u32, _parent: u32, class: HtbClass, create: bool) -> TcFuture<'_, ()> {
        self.tc_step("set class", move |m| {
            match (create, m.classes.contains_key(&cid)) {
                (true, true) => return Err(TcError { op: "add".into(), source: std::io::Error::from_raw_os_error(libc::EEXIST) }),
                (false, false) => return Err(TcError { op: "change".into(), source: std::io::Error::from_raw_os_error(libc::ENOENT) }),
                _ => {}
            }
            m.classes.insert(cid, class);
            let assured = assured_bps(m);
            if assured > m.link_rate_bps && m.oversubscribed.is_none() {
                let mut classes: Vec<(u32, u64)> = m.classes.iter().map(|(c, h)| (*c, h.rate_bps)).collect();
                classes.sort();
                m.oversubscribed =
                    Some(format!("{assured} bit/s assured on a {} bit/s link after setting {cid:#x} to {class:?}; classes {classes:x?}", m.link_rate_bps));
            }
            Ok(())
        })
    }

    fn delete_class(&self, cid: u32) -> TcFuture<'_, ()> {
        self.tc_step("delete class", move |m| {
            m.classes.remove(&cid).map(|_| ()).ok_or_else(|| TcError { op: "delete".into(), source: std::io::Error::from_raw_os_error(libc::ENOENT) })
        })
    }

    fn class_stats_of(&self, cid: u32) -> TcFuture<'_, Option<ClassStats>> {
        self.tc_step("class stats", move |m| Ok(m.classes.get(&cid).map(|_| ClassStats { qlen: m.backlogged as u64, ..Default::default() })))
    }

    fn class_stats(&self) -> TcFuture<'_, HashMap<u32, ClassStats>> {
        self.tc_step("class dump", |m| Ok(m.classes.keys().map(|c| (*c, ClassStats::default())).collect()))
    }

    fn policy(&self, cookie: u64) -> Option<SocketPolicy> {
        self.model.lock().unwrap().policies.get(&cookie).copied()
    }

    fn set_policy(&mut self, cookie: u64, policy: SocketPolicy) -> Result<(), DaemonError> {
        if self.blows() {
            return Err(DaemonError::Kernel("policy map full".into()));
        }
        self.model.lock().unwrap().policies.insert(cookie, policy);
        Ok(())
    }

    fn remove_policy(&mut self, cookie: u64) {
        self.model.lock().unwrap().policies.remove(&cookie);
    }

    fn counters(&self, cookie: u64) -> Option<SocketCounters> {
        self.model.lock().unwrap().counters.get(&cookie).copied()
    }

    fn reset_counters(&mut self, cookie: u64) -> Result<(), DaemonError> {
        if self.blows() {
            return Err(DaemonError::Kernel("counter map full".into()));
        }
        self.model.lock().unwrap().counters.insert(cookie, SocketCounters::default());
        Ok(())
    }

    fn remove_counters(&mut self, cookie: u64) {
        self.model.lock().unwrap().counters.remove(&cookie);
    }

    fn shared_clock(&self, cid: u32) -> Option<SharedClock> {
        self.model.lock().unwrap().clocks.get(&cid).copied()
    }

    fn set_shared_clock(&mut self, cid: u32, clock: SharedClock) -> Result<(), DaemonError> {
        self.model.lock().unwrap().clocks.insert(cid, clock);
        Ok(())
    }

    fn retain(&mut self, cookies: &HashSet<u64>, shared_minors: &BTreeSet<u32>) -> usize {
        let mut m = self.model.lock().unwrap();
        let before = m.policies.len() + m.counters.len();
        m.policies.retain(|c, _| cookies.contains(c));
        m.counters.retain(|c, _| cookies.contains(c));
        m.clocks.retain(|cid, _| shared_minors.contains(&(cid & 0xffff)));
        before - m.policies.len() - m.counters.len()
    }
}

const DEVICES: [(&str, u64); 2] = [("big0", 100_000_000), ("small0", 10_000_000)];
const SOCKETS: usize = 5;

/// One step of a sequence.
#[derive(Clone, Debug)]
enum Op {
    Attach {
        sock: usize,
        dev: usize,
        uid: u32,
        sched: Sched,
    },
    Change {
        sock: usize,
        dev: usize,
        sched: Sched,
    },
    Close {
        sock: usize,
    },
    /// Classes report queued packets (or not), then the periodic drain runs.
    Drain {
        backlogged: bool,
    },
}

#[derive(Clone, Debug)]
enum Sched {
    Rate(u64),
    Bucket(u64, u64),
    Edf(u64),
    Dwcs(u32),
    BestEffort,
}

impl Sched {
    fn params(&self, dev: &str) -> QosParams {
        let scheduler = match *self {
            Sched::Rate(r) => SchedulerParams::Rate(RateAttrs::guaranteed(r)),
            Sched::Bucket(r, b) => SchedulerParams::Rate(RateAttrs::token_bucket(r, b)),
            Sched::Edf(interval_ms) => SchedulerParams::Edf(EdfAttrs { lossy: true, message_bytes: 1_200, min_interval_ns: interval_ms * 1_000_000 }),
            Sched::Dwcs(ipg_ms) => {
                SchedulerParams::Dwcs(DwcsAttrs { ipg_ns: ipg_ms as u64 * 1_000_000, unit_bytes: 1_200, oln: 1, old: 4, non_droppable: false })
            }
            Sched::BestEffort => SchedulerParams::BestEffort,
        };
        QosParams { scheduler, ..QosParams::rate(dev, 1) }
    }
}

fn sched() -> impl Strategy<Value = Sched> {
    prop_oneof![
        4 => prop::sample::select(vec![300_000u64, 2_000_000, 4_000_000, 6_000_000, 9_000_000, 40_000_000]).prop_map(Sched::Rate),
        1 => (prop::sample::select(vec![1_000_000u64, 5_000_000]), prop::sample::select(vec![20_000u64, 200_000])).prop_map(|(r, b)| Sched::Bucket(r, b)),
        1 => prop::sample::select(vec![2u64, 10]).prop_map(Sched::Edf),
        1 => prop::sample::select(vec![2u32, 20]).prop_map(Sched::Dwcs),
        1 => Just(Sched::BestEffort),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..SOCKETS, 0..DEVICES.len(), prop::sample::select(vec![0u32, 1000]), sched()).prop_map(|(sock, dev, uid, sched)| Op::Attach { sock, dev, uid, sched }),
        3 => (0..SOCKETS, 0..DEVICES.len(), sched()).prop_map(|(sock, dev, sched)| Op::Change { sock, dev, sched }),
        1 => (0..SOCKETS).prop_map(|sock| Op::Close { sock }),
        1 => any::<bool>().prop_map(|backlogged| Op::Drain { backlogged }),
    ]
}

/// What a refusal must leave exactly as it was.
#[derive(Debug, PartialEq)]
struct Held {
    device: String,
    minor: u32,
    booking: crate::state::sockets::Booking,
    params: QosParams,
    policy: Option<SocketPolicy>,
}

struct Bench {
    registry: Registry,
    models: Vec<Arc<Mutex<Model>>>,
    fuse: Fuse,
    sockets: Vec<UdpSocket>,
    /// Books and pins of this case, removed when it ends (passed or not).
    state_dir: std::path::PathBuf,
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

fn cookie(sock: usize) -> u64 {
    1_000 + sock as u64
}

fn facts(sock: usize) -> SocketFacts {
    SocketFacts { cookie: cookie(sock), domain: libc::AF_INET, sock_type: libc::SOCK_DGRAM, protocol: libc::IPPROTO_UDP }
}

impl Bench {
    async fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let state = std::env::temp_dir().join(format!("qsockd-ops-{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let cfg = Config { state_root: state.clone(), pin_root: state.join("pins"), ..Config::default() };
        let paths = Paths { pin_root: cfg.pin_root.clone(), state_root: cfg.state_root.clone(), netns_id: 1 };
        let settings = ModuleSettings::default();
        let mut registry = Registry::new(paths, Tc::new().expect("an rtnetlink socket needs no privilege"), settings, &cfg).await;
        let fuse: Fuse = Arc::default();
        let mut models = Vec::new();
        for (i, (name, rate)) in DEVICES.iter().enumerate() {
            let root = HtbClass::new(*rate, *rate, 0);
            let be = HtbClass::new(*rate, *rate, crate::device::BEST_EFFORT_PRIO);
            let model = Arc::new(Mutex::new(Model {
                link_rate_bps: *rate,
                classes: HashMap::from([(classid(ROOT_MAJOR, ROOT_CLASS_MINOR), root), (classid(ROOT_MAJOR, BEST_EFFORT_MINOR), be)]),
                ..Default::default()
            }));
            let st = DeviceState {
                device: name.to_string(),
                ifindex: 10 + i as u32,
                link_rate_bps: *rate,
                best_effort_permille: 50,
                previous_root: None,
                clsact_preexisting: false,
                pin_dir: state.join(name),
            };
            let dev = DeviceRt::with_kernel(st, settings, Box::new(ModelKernel { model: model.clone(), fuse: fuse.clone() }));
            let (dev, _) = take_over(dev, settings, Vec::new()).await.expect("the model opens");
            registry.devices.insert(name.to_string(), dev);
            models.push(model);
        }
        let sockets = (0..SOCKETS).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        Self { registry, models, fuse, sockets, state_dir: state }
    }

    fn held(&self, sock: usize) -> Option<Held> {
        let m = self.registry.sockets.get(cookie(sock))?;
        let policy = self.registry.devices[&m.device].kernel.policy(cookie(sock));
        Some(Held { device: m.device.clone(), minor: m.minor, booking: m.booking, params: m.params.clone(), policy })
    }

    /// Runs `op` with the fuse set to `fail_at`; returns whether it succeeded.
    async fn run(&mut self, op: &Op, fail_at: Option<u32>) -> Result<(), String> {
        *self.fuse.lock().unwrap() = fail_at;
        let r = match op {
            Op::Attach { sock, dev, uid, sched } => {
                let peer = Peer { uid: *uid, gid: *uid, pid: 1, conn: 1 };
                self.registry.attach(&facts(*sock), self.sockets[*sock].as_fd(), peer, sched.params(DEVICES[*dev].0)).await.map(|_| ())
            }
            Op::Change { sock, dev, sched } => self.registry.change(&facts(*sock), sched.params(DEVICES[*dev].0)).await.map(|_| ()),
            Op::Close { sock } => self.registry.close(cookie(*sock)).await,
            Op::Drain { backlogged } => {
                for m in &self.models {
                    m.lock().unwrap().backlogged = *backlogged;
                }
                self.registry.sweep().await;
                Ok(())
            }
        };
        *self.fuse.lock().unwrap() = None;
        r.map_err(|e| e.to_string())
    }

    /// The books of every device against its sockets and its kernel.
    fn check(&self) -> Result<(), String> {
        for (i, (name, _)) in DEVICES.iter().enumerate() {
            let dev = &self.registry.devices[*name];
            let model = self.models[i].lock().unwrap();
            if let Some(o) = &model.oversubscribed {
                return Err(format!("{name}: {o}"));
            }
            let mine: Vec<(u64, &crate::state::sockets::Managed)> = self.registry.sockets.iter().filter(|(_, m)| m.device == *name).collect();
            let rate: u64 = mine.iter().map(|(_, m)| m.booking.rate_bps).sum::<u64>() + dev.draining.iter().map(|(_, r)| r).sum::<u64>();
            let burst: u64 = mine.iter().map(|(_, m)| m.booking.burst_bytes).sum();
            if dev.reservations.rate_bps() != rate || dev.reservations.burst_bytes() != burst {
                return Err(format!(
                    "{name}: booked {} bit/s and {} bytes, the sockets and draining classes hold {rate} bit/s and {burst} bytes",
                    dev.reservations.rate_bps(),
                    dev.reservations.burst_bytes()
                ));
            }
            if dev.reservations.rate_bps() > dev.state.guaranteeable_bps() {
                return Err(format!("{name}: {} bit/s booked, {} may be guaranteed", dev.reservations.rate_bps(), dev.state.guaranteeable_bps()));
            }
            let cookies: HashSet<u64> = mine.iter().map(|(c, _)| *c).collect();
            let in_map: HashSet<u64> = model.policies.keys().copied().collect();
            if in_map != cookies || model.counters.keys().copied().collect::<HashSet<u64>>() != cookies {
                return Err(format!("{name}: policies for {in_map:?}, counters for {:?}, managed {cookies:?}", model.counters.keys().collect::<Vec<_>>()));
            }
            let mut own = HashSet::new();
            for (c, m) in &mine {
                let cid = DeviceRt::classid(m.minor);
                if model.policies[c].classid != cid {
                    return Err(format!("{name}: socket {c} managed in {cid:#x}, its policy says {:#x}", model.policies[c].classid));
                }
                if m.own_class {
                    let Some(class) = model.classes.get(&cid) else { return Err(format!("{name}: socket {c}'s class {cid:#x} is missing")) };
                    if class.rate_bps != m.booking.rate_bps.max(1) {
                        return Err(format!("{name}: socket {c} books {} bit/s, its class has {}", m.booking.rate_bps, class.rate_bps));
                    }
                    if !own.insert(m.minor) || dev.classes.is_free(m.minor) {
                        return Err(format!("{name}: socket {c}'s class {cid:#x} is shared or free in the pool"));
                    }
                }
            }
        }
        Ok(())
    }
}

fn run_sequence(ops: &[(Op, Option<u32>)]) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut b = Bench::new().await;
        b.check().map_err(|e| TestCaseError::fail(format!("after opening: {e}")))?;
        for (step, (op, fail_at)) in ops.iter().enumerate() {
            let sock = match op {
                Op::Attach { sock, .. } | Op::Change { sock, .. } | Op::Close { sock } => Some(*sock),
                Op::Drain { .. } => None,
            };
            let before = sock.and_then(|s| b.held(s));
            let result = b.run(op, *fail_at).await;
            b.check().map_err(|e| TestCaseError::fail(format!("step {step} {op:?} (fuse {fail_at:?}) gave {result:?}, then {e}")))?;
            if let (Err(e), Some(s)) = (&result, sock) {
                let after = b.held(s);
                if after != before {
                    return Err(TestCaseError::fail(format!(
                        "step {step} {op:?} (fuse {fail_at:?}) failed ({e}) and changed the socket: {before:?} -> {after:?}"
                    )));
                }
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any sequence of admitted, refused and half-failed operations keeps
    /// each device's booked totals equal to what its sockets and draining
    /// classes hold, never assures more than the link at any kernel step,
    /// keeps the data path's maps and classes matching the sockets, and a
    /// failed operation leaves its socket exactly as it was.
    #[test]
    fn any_sequence_of_operations_keeps_the_books(ops in prop::collection::vec((op(), prop::option::weighted(0.3, 0u32..8)), 1..40)) {
        run_sequence(&ops)?;
    }
}

//! `qsockinit` and teardown of one device: root HTB, best-effort class,
//! clsact with the egress classifier, pinned maps, and the record of what
//! was there before.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context;
use aya::{
    maps::Array,
    programs::{
        links::Link,
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions},
        SchedClassifier, TcAttachType,
    },
    EbpfLoader,
};
use qsock::{ErrorKind, InitParams, QsockError};
use qsock_common::{classid, KernelOffsets, BEST_EFFORT_MINOR, MAP_OFFSETS, PROG_EGRESS, ROOT_CLASS_MINOR, ROOT_MAJOR};
use serde::{Deserialize, Serialize};

use crate::{
    config::Paths,
    error::kernel_err,
    kernel::htb::HtbClass,
    kernel::tc::{SavedQdisc, Tc, TcError},
    EBPF_OBJECT,
};

/// tc filter priority of the egress classifier on clsact (fixed so teardown
/// finds it when clsact belongs to someone else).
pub const FILTER_PRIORITY: u16 = 0xc051;
/// tc filter handle of the egress classifier.
pub const FILTER_HANDLE: u32 = 1;
/// HTB priority of managed classes (served first when borrowing).
pub const MANAGED_PRIO: u32 = 0;
/// HTB priority of the best-effort class.
pub const BEST_EFFORT_PRIO: u32 = 7;
/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// What `init` did on a device, saved as JSON so `run` and `teardown`
/// (other processes) find it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceState {
    /// Device name.
    pub device: String,
    /// Interface index at init time.
    pub ifindex: u32,
    /// Link rate of the root HTB, bit/s.
    pub link_rate_bps: u64,
    /// Best-effort reserve, per mille of the link.
    pub best_effort_permille: u32,
    /// Root qdisc replaced by init (`--replace`), restored by teardown.
    pub previous_root: Option<SavedQdisc>,
    /// clsact was present before init (then teardown removes only our filter).
    pub clsact_preexisting: bool,
    /// Directory of the pinned maps.
    pub pin_dir: PathBuf,
}

impl DeviceState {
    /// Capacity available to guarantees, bit/s: the link rate minus the
    /// best-effort reserve.
    pub fn guaranteeable_bps(&self) -> u64 {
        self.link_rate_bps - self.best_effort_floor_bps()
    }

    /// Rate reserved for best effort, bit/s.
    pub fn best_effort_floor_bps(&self) -> u64 {
        (self.link_rate_bps as u128 * self.best_effort_permille as u128 / 1000).max(8_000) as u64
    }

    /// Reads the state of `device` under `paths`; `None` if not initialised.
    pub fn load(paths: &Paths, device: &str) -> Result<Option<Self>, QsockError> {
        let f = paths.state_file(device);
        match fs::read(&f) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| QsockError::new(ErrorKind::Kernel, format!("corrupt state file {}: {e}", f.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(QsockError::new(ErrorKind::Kernel, format!("read {}: {e}", f.display()))),
        }
    }

    /// Every device initialised in this network namespace.
    pub fn load_all(paths: &Paths) -> Vec<Self> {
        let Ok(rd) = fs::read_dir(paths.state_dir()) else { return vec![] };
        rd.filter_map(|e| e.ok()).filter_map(|e| fs::read(e.path()).ok()).filter_map(|b| serde_json::from_slice(&b).ok()).collect()
    }

    fn save(&self, paths: &Paths) -> anyhow::Result<()> {
        fs::create_dir_all(paths.state_dir())?;
        let f = paths.state_file(&self.device);
        let tmp = f.with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        fs::rename(&tmp, &f)?;
        Ok(())
    }
}

fn tc_err(e: TcError) -> QsockError {
    match e.errno() {
        // The kernel answers ENOENT for an unknown qdisc kind and EOPNOTSUPP where a feature is compiled out.
        Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) => {
            QsockError::new(ErrorKind::Unsupported, format!("{e} (does this kernel have sch_htb and sch_ingress/clsact?)"))
        }
        _ => kernel_err(e),
    }
}

/// Interface index of `device` in the current namespace.
pub fn ifindex(device: &str) -> Result<u32, QsockError> {
    nix::net::if_::if_nametoindex(device).map_err(|_| QsockError::new(ErrorKind::NoSuchDevice, format!("no network device named {device:?} in this namespace")))
}

/// Mounts bpffs at `/sys/fs/bpf` if nothing is mounted there and `pin_root` lives under it.
fn ensure_bpffs(pin_root: &Path) -> anyhow::Result<()> {
    let base = Path::new("/sys/fs/bpf");
    if !pin_root.starts_with(base) {
        return Ok(());
    }
    let st = nix::sys::statfs::statfs(base).context("statfs /sys/fs/bpf")?;
    if st.filesystem_type().0 as i64 != BPF_FS_MAGIC {
        nix::mount::mount(Some("bpf"), base, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>).context("mount bpffs on /sys/fs/bpf")?;
    }
    Ok(())
}

/// Installs qsock on `params.device` (see [`qsock::qsockinit`]). On any
/// failure the device is put back as it was.
pub async fn init(paths: &Paths, params: &InitParams) -> Result<DeviceState, QsockError> {
    params.validate()?;
    let ifindex = ifindex(&params.device)?;
    if DeviceState::load(paths, &params.device)?.is_some() {
        return Err(QsockError::new(ErrorKind::AlreadyInitialized, format!("qsock is already initialised on {}", params.device)));
    }
    let tc = Tc::new().map_err(kernel_err)?;
    let prev = tc.root_qdisc(ifindex).await.map_err(tc_err)?;
    let previous_root = match prev {
        Some(q) if !q.is_default() => {
            if !params.replace {
                return Err(QsockError::new(
                    ErrorKind::ForeignQdisc,
                    format!(
                        "{} has a root qdisc qsock did not install ({} {}); pass replace to take it over (teardown restores it)",
                        params.device,
                        q.kind,
                        crate::kernel::tc::fmt_classid(q.handle)
                    ),
                ));
            }
            tc.delete_root(ifindex).await.map_err(tc_err)?;
            Some(q)
        }
        _ => None,
    };
    let clsact_preexisting = tc.has_clsact(ifindex).await.map_err(tc_err)?;
    let state = DeviceState {
        device: params.device.clone(),
        ifindex,
        link_rate_bps: params.link_rate_bps,
        best_effort_permille: params.best_effort_permille,
        previous_root,
        clsact_preexisting,
        pin_dir: paths.pin_dir(&params.device),
    };
    match install(paths, &tc, &state).await {
        Ok(()) => Ok(state),
        Err(e) => {
            let _ = uninstall(&tc, &state).await;
            Err(e)
        }
    }
}

async fn install(paths: &Paths, tc: &Tc, s: &DeviceState) -> Result<(), QsockError> {
    let link = s.link_rate_bps;
    tc.add_htb_root(s.ifindex, ROOT_MAJOR, BEST_EFFORT_MINOR).await.map_err(tc_err)?;
    let root = HtbClass::new(link, link, 0);
    tc.set_htb_class(s.ifindex, classid(ROOT_MAJOR, ROOT_CLASS_MINOR), classid(ROOT_MAJOR, 0), &root, true).await.map_err(tc_err)?;
    let be = HtbClass::new(link, link, BEST_EFFORT_PRIO);
    tc.set_htb_class(s.ifindex, classid(ROOT_MAJOR, BEST_EFFORT_MINOR), classid(ROOT_MAJOR, ROOT_CLASS_MINOR), &be, true).await.map_err(tc_err)?;
    if !s.clsact_preexisting {
        tc::qdisc_add_clsact(&s.device).map_err(|e| tc_err(TcError { op: format!("add clsact on {}", s.device), source: e }))?;
    }
    ensure_bpffs(&paths.pin_root).map_err(kernel_err)?;
    fs::create_dir_all(&s.pin_dir).map_err(|e| kernel_err(format!("create {}: {e}", s.pin_dir.display())))?;
    let offsets = crate::kernel::btf::kernel_offsets().unwrap_or_else(|e| {
        log::warn!("queuing delay will not be measured: {e:#}");
        KernelOffsets::default()
    });
    let mut ebpf = EbpfLoader::new().map_pin_path(&s.pin_dir).load(EBPF_OBJECT).map_err(|e| kernel_err(format!("load eBPF object: {e}")))?;
    {
        let mut arr: Array<_, KernelOffsets> =
            Array::try_from(ebpf.map_mut(MAP_OFFSETS).ok_or_else(|| kernel_err("offsets map missing"))?).map_err(kernel_err)?;
        arr.set(0, offsets, 0).map_err(kernel_err)?;
    }
    let prog: &mut SchedClassifier =
        ebpf.program_mut(PROG_EGRESS).ok_or_else(|| kernel_err("egress program missing from object"))?.try_into().map_err(kernel_err)?;
    prog.load().map_err(|e| kernel_err(format!("load egress program: {e}")))?;
    let opts = TcAttachOptions::Netlink(NlOptions { priority: FILTER_PRIORITY, handle: FILTER_HANDLE });
    let id = prog.attach_with_options(&s.device, TcAttachType::Egress, opts).map_err(|e| kernel_err(format!("attach egress classifier: {e}")))?;
    // The tc filter keeps the program alive after we exit; dropping the link would detach it.
    std::mem::forget(prog.take_link(id).map_err(kernel_err)?);
    s.save(paths).map_err(kernel_err)?;
    Ok(())
}

/// Removes what `install` added, in reverse; errors are collected, not fatal.
async fn uninstall(tc: &Tc, s: &DeviceState) -> Vec<String> {
    let mut errs = Vec::new();
    if s.clsact_preexisting {
        match SchedClassifierLink::attached(&s.device, TcAttachType::Egress, FILTER_PRIORITY, FILTER_HANDLE) {
            Ok(l) => {
                if let Err(e) = l.detach() {
                    errs.push(format!("detach egress classifier: {e}"));
                }
            }
            Err(e) => errs.push(format!("find egress classifier: {e}")),
        }
    } else if let Err(e) = tc.delete_clsact(s.ifindex).await {
        if e.errno() != Some(libc::ENOENT) && e.errno() != Some(libc::EINVAL) {
            errs.push(e.to_string());
        }
    }
    if let Err(e) = tc.delete_root(s.ifindex).await {
        if e.errno() != Some(libc::ENOENT) {
            errs.push(e.to_string());
        }
    }
    if let Some(prev) = &s.previous_root {
        if let Err(e) = tc.restore_root(s.ifindex, prev).await {
            errs.push(e.to_string());
        }
    }
    if let Ok(rd) = fs::read_dir(&s.pin_dir) {
        for e in rd.flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
    let _ = fs::remove_dir(&s.pin_dir);
    if let Some(parent) = s.pin_dir.parent() {
        let _ = fs::remove_dir(parent); // only if empty
    }
    errs
}

/// Undoes `init` on `device`: classifier, root qdisc and pinned maps go,
/// the previous root qdisc comes back, the state file is removed.
/// Errors: [`ErrorKind::NotInitialized`]; [`ErrorKind::Kernel`] listing
/// every step that failed (the others are still done).
pub async fn teardown(paths: &Paths, device: &str) -> Result<(), QsockError> {
    let s = DeviceState::load(paths, device)?.ok_or_else(|| QsockError::new(ErrorKind::NotInitialized, format!("qsock is not initialised on {device}")))?;
    let tc = Tc::new().map_err(kernel_err)?;
    let errs = if ifindex(device).is_ok() { uninstall(&tc, &s).await } else { vec![] };
    let _ = fs::remove_file(paths.state_file(device));
    let _ = fs::remove_dir(paths.state_dir()); // only if no other device is left
    if errs.is_empty() {
        Ok(())
    } else {
        Err(QsockError::new(ErrorKind::Kernel, format!("teardown of {device} incomplete: {}", errs.join("; "))))
    }
}

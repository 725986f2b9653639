//! The kernel steps of one device's control operations, behind one trait:
//! its HTB classes (tc over rtnetlink) and the data path's pinned maps.
//! qsockd runs them on [`KernelDevice`]; the property tests of the
//! operations run them on a model that can refuse any step
//! (`ops/tests.rs`), so every undo path is exercised without root.
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    future::Future,
    pin::Pin,
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use qsock_common::{SharedClock, SocketCounters, SocketPolicy};

use crate::{
    error::DaemonError,
    kernel::htb::HtbClass,
    kernel::tc::{ClassStats, Tc, TcError},
};

/// A tc step in flight; it borrows the device's kernel handle.
pub type TcFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, TcError>> + Send + 'a>>;

/// What the control operations ask of the kernel for one device.
///
/// Class ids are full tc handles (`major << 16 | minor`). tc steps fail
/// with the kernel's errno in [`TcError`]; map steps with
/// [`DaemonError::Kernel`].
pub trait DeviceKernel: Send + Sync {
    /// Creates (`create`: fails with EEXIST if it exists) or changes
    /// (ENOENT if missing) HTB class `classid` under `parent`.
    fn set_htb_class(&self, classid: u32, parent: u32, class: HtbClass, create: bool) -> TcFuture<'_, ()>;
    /// Deletes class `classid` (ENOENT if missing).
    fn delete_class(&self, classid: u32) -> TcFuture<'_, ()>;
    /// Counters of one class; `None` if there is no such class.
    fn class_stats_of(&self, classid: u32) -> TcFuture<'_, Option<ClassStats>>;
    /// Counters of every class of the device, by class id.
    fn class_stats(&self) -> TcFuture<'_, HashMap<u32, ClassStats>>;
    /// The data path's policy of socket `cookie`, if it has one.
    fn policy(&self, cookie: u64) -> Option<SocketPolicy>;
    /// Sets the policy of socket `cookie` (the program acts on it at once).
    fn set_policy(&mut self, cookie: u64, policy: SocketPolicy) -> Result<(), DaemonError>;
    /// Removes the policy of `cookie`; missing is not an error.
    fn remove_policy(&mut self, cookie: u64);
    /// The counters of socket `cookie`, if it has any.
    fn counters(&self, cookie: u64) -> Option<SocketCounters>;
    /// Gives socket `cookie` zeroed counters.
    fn reset_counters(&mut self, cookie: u64) -> Result<(), DaemonError>;
    /// Removes the counters of `cookie`; missing is not an error.
    fn remove_counters(&mut self, cookie: u64);
    /// The shared clock of class `classid`, if the data path has one.
    fn shared_clock(&self, classid: u32) -> Option<SharedClock>;
    /// Sets the shared clock of class `classid`.
    fn set_shared_clock(&mut self, classid: u32, clock: SharedClock) -> Result<(), DaemonError>;
    /// Removes policies and counters of sockets not in `cookies` and clocks
    /// of classes whose minor is not in `shared_minors`; returns how many
    /// policy and counter entries went.
    fn retain(&mut self, cookies: &HashSet<u64>, shared_minors: &BTreeSet<u32>) -> usize;
}

/// The real kernel: tc on the device's ifindex and its pinned maps.
pub struct KernelDevice {
    pub(crate) tc: Tc,
    pub(crate) ifindex: u32,
    pub(crate) policies: BpfHashMap<MapData, u64, SocketPolicy>,
    pub(crate) counters: BpfHashMap<MapData, u64, SocketCounters>,
    pub(crate) clocks: BpfHashMap<MapData, u32, SharedClock>,
}

/// Removes the entries of `m` whose key `keep` rejects; returns how many.
fn retain_keys<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(m: &mut BpfHashMap<MapData, K, V>, keep: impl Fn(&K) -> bool) -> usize {
    let stale: Vec<K> = m.keys().filter_map(|k| k.ok()).filter(|k| !keep(k)).collect();
    for k in &stale {
        let _ = m.remove(k);
    }
    stale.len()
}

impl DeviceKernel for KernelDevice {
    fn set_htb_class(&self, classid: u32, parent: u32, class: HtbClass, create: bool) -> TcFuture<'_, ()> {
        Box::pin(async move { self.tc.set_htb_class(self.ifindex, classid, parent, &class, create).await })
    }

    fn delete_class(&self, classid: u32) -> TcFuture<'_, ()> {
        Box::pin(self.tc.delete_class(self.ifindex, classid))
    }

    fn class_stats_of(&self, classid: u32) -> TcFuture<'_, Option<ClassStats>> {
        Box::pin(self.tc.class_stats_of(self.ifindex, classid))
    }

    fn class_stats(&self) -> TcFuture<'_, HashMap<u32, ClassStats>> {
        Box::pin(self.tc.class_stats(self.ifindex))
    }

    fn policy(&self, cookie: u64) -> Option<SocketPolicy> {
        self.policies.get(&cookie, 0).ok()
    }

    fn set_policy(&mut self, cookie: u64, policy: SocketPolicy) -> Result<(), DaemonError> {
        Ok(self.policies.insert(cookie, policy, 0)?)
    }

    fn remove_policy(&mut self, cookie: u64) {
        let _ = self.policies.remove(&cookie);
    }

    fn counters(&self, cookie: u64) -> Option<SocketCounters> {
        self.counters.get(&cookie, 0).ok()
    }

    fn reset_counters(&mut self, cookie: u64) -> Result<(), DaemonError> {
        Ok(self.counters.insert(cookie, SocketCounters::default(), 0)?)
    }

    fn remove_counters(&mut self, cookie: u64) {
        let _ = self.counters.remove(&cookie);
    }

    fn shared_clock(&self, classid: u32) -> Option<SharedClock> {
        self.clocks.get(&classid, 0).ok()
    }

    fn set_shared_clock(&mut self, classid: u32, clock: SharedClock) -> Result<(), DaemonError> {
        Ok(self.clocks.insert(classid, clock, 0)?)
    }

    fn retain(&mut self, cookies: &HashSet<u64>, shared_minors: &BTreeSet<u32>) -> usize {
        let n = retain_keys(&mut self.policies, |c| cookies.contains(c)) + retain_keys(&mut self.counters, |c| cookies.contains(c));
        retain_keys(&mut self.clocks, |cid| shared_minors.contains(&(cid & 0xffff)));
        n
    }
}

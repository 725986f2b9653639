//! Interface selection in the daemon: the managed interfaces' lifecycle
//! (qdisc and policy routing when they appear, come up or change
//! addresses; forgotten when they vanish), the policy asked for a socket
//! attached without a device, and binding the socket to the chosen
//! interface's source address.
use std::os::fd::BorrowedFd;

use qsock::{ErrorKind, InitParams, InterfaceInfo, QosParams, QsockError, Selection};

use crate::{
    device::{self, DeviceState},
    ops::Registry,
    select::ifaces::{self, Change},
    select::{prefs, Candidate},
    state::sockinfo::{check_unplaced, SocketFacts},
};

impl Registry {
    /// Asks the socket's policy (or the default) for an interface among the
    /// usable ones its interface preferences allow. Nothing is changed.
    ///
    /// Errors: [`ErrorKind::InvalidParams`] (unknown policy, unmanaged
    /// interface in a preference), [`ErrorKind::NoInterface`],
    /// [`ErrorKind::SocketInUse`].
    pub(crate) fn choose_interface(&mut self, facts: &SocketFacts, sock: BorrowedFd<'_>, params: &QosParams) -> Result<Selection, QsockError> {
        let name = params.policy.clone().unwrap_or_else(|| self.default_policy.clone());
        let enabled: Vec<String> = {
            let mut v: Vec<String> = self.policies.keys().cloned().collect();
            v.sort();
            v
        };
        let Some(policy) = self.policies.get_mut(&name) else {
            return Err(QsockError::new(
                ErrorKind::InvalidParams,
                format!("policy {name:?} is not enabled in qsockd's config (enabled: {})", enabled.join(", ")),
            ));
        };
        if self.ifaces.list.is_empty() {
            return Err(QsockError::new(ErrorKind::InvalidParams, "no device given and qsockd manages no interfaces (config [[interfaces]])"));
        }
        check_unplaced(sock)?;
        let mut all = self.ifaces.candidates(facts.domain);
        // Sockets placed and still open count at once; sock_diag sees
        // connections only at its next tick, and short ones not at all.
        for c in &mut all {
            let placed = self.sockets.count_on(&c.name);
            c.flows = c.flows.max(placed);
        }
        let (set, notes) = prefs::apply(&params.intents.interfaces, &all)?;
        let subset: Vec<&Candidate> = set.iter().map(|&i| &all[i]).collect();
        let d = policy.choose(&params.intents, &subset);
        let chosen = &all[set[d.index]];
        let entry = self.ifaces.get(&chosen.name).expect("candidates come from the table");
        let source = ifaces::source_of(&entry.addrs, facts.domain).expect("usable candidates have an address");
        let mut reason = d.reason;
        if !notes.is_empty() {
            reason = format!("{reason}; {}", notes.join("; "));
        }
        Ok(Selection { policy: name, interface: chosen.name.clone(), source, reason })
    }

    /// Starts managing the configured interfaces: removes rules and routes a
    /// previous qsockd left in qsockd's tables, then takes the first snapshot
    /// (which installs qdiscs and routing on every interface present).
    pub async fn start_interfaces(&mut self) {
        if self.ifaces.list.is_empty() {
            return;
        }
        let tables = self.tables();
        if let Err(e) = self.routing.remove_all(&tables).await {
            log::warn!("removing stale policy routing: {e}");
        }
        self.refresh_interfaces(qsock::monotonic_now_ns()).await;
    }

    /// Removes qsockd's rules and routes (on shutdown). The qdiscs stay, as
    /// after `qsockd init`.
    pub async fn stop_interfaces(&mut self) {
        if self.ifaces.list.is_empty() {
            return;
        }
        let tables = self.tables();
        match self.routing.remove_all(&tables).await {
            Ok(()) => log::info!("policy routing removed (tables {tables:?})"),
            Err(e) => log::error!("removing policy routing: {e}"),
        }
    }

    fn tables(&self) -> Vec<u32> {
        self.ifaces.list.iter().map(|m| m.table).collect()
    }

    /// Re-reads links and addresses (rtnetlink) and acts on what changed:
    /// qdisc and routing for interfaces that appeared or came up, rules for
    /// added and removed addresses, and forgets interfaces that vanished.
    pub async fn refresh_interfaces(&mut self, now_ns: u64) {
        if self.ifaces.list.is_empty() {
            return;
        }
        let snap = match ifaces::snapshot(self.tc.handle()).await {
            Ok(s) => s,
            Err(e) => return log::warn!("reading links: {e}"),
        };
        for change in self.ifaces.apply(&snap, now_ns) {
            log::info!("interface change: {change:?}");
            if let Err(e) = self.act_on(&change).await {
                log::error!("{change:?}: {e}");
            }
        }
        // Routes of an interface that is up: set now, or retried every
        // refresh until the kernel takes them (its gateway may not be
        // reachable yet the moment the link comes up).
        for i in 0..self.ifaces.list.len() {
            let m = &self.ifaces.list[i];
            if !m.up || m.routed {
                continue;
            }
            let (table, ifindex, gateway, addrs) = (m.table, m.ifindex, m.cfg.gateway, m.addrs.clone());
            let set = async {
                self.routing.set_table(table, ifindex, gateway).await?;
                for a in &addrs {
                    self.routing.add_rule(*a, table).await?;
                }
                Ok::<(), rtnetlink::Error>(())
            }
            .await;
            match set {
                Ok(()) => self.ifaces.list[i].routed = true,
                Err(e) => log::warn!("{}: routing table {table}: {e} (retrying)", self.ifaces.list[i].cfg.name),
            }
        }
    }

    async fn act_on(&mut self, change: &Change) -> Result<(), QsockError> {
        let kernel = |e: rtnetlink::Error| QsockError::new(ErrorKind::Kernel, e.to_string());
        match change {
            Change::Appeared(name) => self.ensure_initialised(name).await,
            // Routes through a device go when it goes down; refresh_interfaces sets them again.
            Change::Up(name) => {
                if let Some(mp) = &self.multipath {
                    tokio::spawn(mp.clone().interface_up(name.clone()));
                }
                Ok(())
            }
            Change::Addresses(name, added, removed) => {
                let m = self.ifaces.get(name).expect("managed").clone();
                for a in removed {
                    self.routing.del_rules(Some(*a), &[m.table]).await.map_err(kernel)?;
                }
                for a in added {
                    self.routing.add_rule(*a, m.table).await.map_err(kernel)?;
                }
                Ok(())
            }
            Change::Down(name) => {
                // Subflows leave the dead link now, not at the retransmission timeout.
                if let Some(mp) = &self.multipath {
                    tokio::spawn(mp.clone().interface_down(name.clone()));
                }
                Ok(())
            }
            Change::Vanished(name) => {
                // Its qdisc and classes went with it; so do its sockets' places.
                self.devices.remove(name);
                let gone = self.sockets.on_device(name);
                for c in &gone {
                    self.sockets.remove(*c);
                    self.books.remove(*c);
                }
                if !gone.is_empty() {
                    log::warn!("{name} vanished: {} sockets on it are no longer managed", gone.len());
                }
                let table = self.ifaces.get(name).expect("managed").table;
                self.routing.del_rules(None, &[table]).await.map_err(kernel)?;
                let _ = device::teardown(&self.paths, name).await;
                Ok(())
            }
        }
    }

    /// Installs qsock's root qdisc on a managed interface (its nominal
    /// upstream rate) unless it has it already, and opens it.
    async fn ensure_initialised(&mut self, name: &str) -> Result<(), QsockError> {
        let m = self.ifaces.get(name).expect("managed").clone();
        if let Some(st) = DeviceState::load(&self.paths, name)? {
            if st.ifindex == m.ifindex {
                if !self.devices.contains_key(name) {
                    self.open(st).await?;
                }
                return Ok(());
            }
            // A device of that name that is gone: forget its state.
            self.devices.remove(name);
            let _ = device::teardown(&self.paths, name).await;
        }
        let params =
            InitParams { device: name.to_string(), link_rate_bps: m.cfg.nominal_up_bps, best_effort_permille: m.cfg.best_effort_permille, replace: true };
        let st = device::init(&self.paths, &params).await?;
        self.open(st).await?;
        log::info!("{name}: root htb at {} bit/s, routing table {}", m.cfg.nominal_up_bps, m.table);
        Ok(())
    }

    /// Samples the RTT of the namespace's TCP connections (sock_diag).
    pub fn sample_rtt(&mut self, now_ns: u64) {
        if self.ifaces.list.is_empty() {
            return;
        }
        match crate::kernel::diag::tcp_rtts() {
            Ok(samples) => self.ifaces.apply_rtt(&samples, now_ns.saturating_sub(self.last_rtt_ns).max(1)),
            Err(e) => log::debug!("sock_diag: {e}"),
        }
        self.last_rtt_ns = now_ns;
    }

    /// `qinterfaces`: the managed interfaces with what is measured on them.
    pub fn interfaces_info(&self) -> Vec<InterfaceInfo> {
        self.ifaces.info(|name| {
            let (mut n, mut sum, mut samples) = (0u32, 0u64, 0u64);
            if let Some(dev) = self.devices.get(name) {
                for cookie in self.sockets.on_device(name) {
                    n += 1;
                    if let Some(c) = dev.counters(cookie) {
                        sum = sum.saturating_add(c.delay_sum_ns);
                        samples += c.delay_hist.iter().sum::<u64>();
                    }
                }
            }
            (n, sum.checked_div(samples).unwrap_or(0))
        })
    }
}

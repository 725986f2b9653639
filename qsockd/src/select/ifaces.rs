//! The interfaces qsockd manages (config `[[interfaces]]`) and what it
//! knows of each now: present or not, up or down, its addresses (from
//! rtnetlink, on link and address events and every sampling tick), its
//! receive and transmit rates (device counters), and the RTT of the TCP
//! connections bound to it (sock_diag, [`crate::kernel::diag`]).
use std::net::IpAddr;

use futures::TryStreamExt;
use qsock::InterfaceInfo;
use rtnetlink::{
    packet_route::{
        address::{AddressAttribute, AddressScope},
        link::{LinkAttribute, LinkFlags},
    },
    Handle,
};

use crate::{
    config::{Config, InterfaceConfig},
    select::Candidate,
};

/// Time constant of the rate and RTT moving averages, ns.
pub const AVERAGE_TAU_NS: f64 = 500e6;

/// An exponentially weighted rate from a byte counter sampled at uneven times.
#[derive(Clone, Debug, Default)]
pub struct RateMeter {
    last: Option<(u64, u64)>,
    bps: f64,
}

impl RateMeter {
    /// Feeds the counter's value `bytes` read at `now_ns`; a counter that
    /// went backwards (device re-created) restarts the meter.
    pub fn update(&mut self, now_ns: u64, bytes: u64) {
        if let Some((t0, b0)) = self.last {
            if now_ns > t0 && bytes >= b0 {
                let dt = (now_ns - t0) as f64;
                let sample = (bytes - b0) as f64 * 8e9 / dt;
                let w = 1.0 - (-dt / AVERAGE_TAU_NS).exp();
                self.bps += w * (sample - self.bps);
            } else if bytes < b0 {
                self.bps = 0.0;
            }
        }
        self.last = Some((now_ns, bytes));
    }

    /// The averaged rate, bit/s.
    pub fn bps(&self) -> u64 {
        self.bps.max(0.0) as u64
    }
}

/// One link as rtnetlink reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkFact {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// `IFF_UP` and `IFF_LOWER_UP`.
    pub up: bool,
    /// Bytes received, transmitted (`IFLA_STATS64`).
    pub rx_bytes: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
}

/// All links and global-scope addresses of the namespace at one moment.
#[derive(Clone, Debug, Default)]
pub struct LinkSnapshot {
    /// Links.
    pub links: Vec<LinkFact>,
    /// (ifindex, address) of every global-scope address.
    pub addrs: Vec<(u32, IpAddr)>,
}

/// Dumps links and addresses over rtnetlink. Errors: the netlink request failed.
pub async fn snapshot(handle: &Handle) -> Result<LinkSnapshot, rtnetlink::Error> {
    let mut snap = LinkSnapshot::default();
    let mut links = handle.link().get().execute();
    while let Some(m) = links.try_next().await? {
        let mut fact = LinkFact {
            name: String::new(),
            ifindex: m.header.index,
            up: m.header.flags.contains(LinkFlags::Up) && m.header.flags.contains(LinkFlags::LowerUp),
            rx_bytes: 0,
            tx_bytes: 0,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => fact.name = n.clone(),
                LinkAttribute::Stats64(s) => (fact.rx_bytes, fact.tx_bytes) = (s.rx_bytes, s.tx_bytes),
                _ => {}
            }
        }
        snap.links.push(fact);
    }
    let mut addrs = handle.address().get().execute();
    while let Some(m) = addrs.try_next().await? {
        if m.header.scope != AddressScope::Universe {
            continue;
        }
        // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS elsewhere.
        let local = m.attributes.iter().find_map(|a| if let AddressAttribute::Local(ip) = a { Some(*ip) } else { None });
        let addr = local.or_else(|| m.attributes.iter().find_map(|a| if let AddressAttribute::Address(ip) = a { Some(*ip) } else { None }));
        if let Some(ip) = addr {
            snap.addrs.push((m.header.index, ip));
        }
    }
    Ok(snap)
}

/// What changed on a managed interface between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// It exists now (again), with this ifindex.
    Appeared(String),
    /// It no longer exists.
    Vanished(String),
    /// Up with carrier now.
    Up(String),
    /// Down or without carrier now.
    Down(String),
    /// Its addresses changed: (added, removed).
    Addresses(String, Vec<IpAddr>, Vec<IpAddr>),
}

/// One managed interface.
#[derive(Clone, Debug)]
pub struct ManagedInterface {
    /// Its config entry.
    pub cfg: InterfaceConfig,
    /// Its routing table.
    pub table: u32,
    /// Interface index; 0 while absent.
    pub ifindex: u32,
    /// Up with carrier.
    pub up: bool,
    /// Global-scope addresses.
    pub addrs: Vec<IpAddr>,
    rx: RateMeter,
    tx: RateMeter,
    /// Smoothed RTT of its TCP connections, µs.
    pub srtt_us: Option<f64>,
    /// TCP connections in the last sock_diag dump.
    pub tcp_connections: u32,
    /// Its routing table's default route and its rules are in place (false
    /// while down: the kernel drops routes through a device that goes down).
    pub routed: bool,
}

/// The managed interfaces, in config order.
#[derive(Clone, Debug, Default)]
pub struct Interfaces {
    /// Entries, in config order.
    pub list: Vec<ManagedInterface>,
}

impl Interfaces {
    /// The interfaces `cfg` lists, none seen yet.
    pub fn new(cfg: &Config) -> Self {
        let list = cfg
            .interfaces
            .iter()
            .enumerate()
            .map(|(i, c)| ManagedInterface {
                cfg: c.clone(),
                table: cfg.table_of(i),
                ifindex: 0,
                up: false,
                addrs: Vec::new(),
                rx: RateMeter::default(),
                tx: RateMeter::default(),
                srtt_us: None,
                tcp_connections: 0,
                routed: false,
            })
            .collect();
        Self { list }
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&ManagedInterface> {
        self.list.iter().find(|m| m.cfg.name == name)
    }

    /// Takes in a snapshot taken at `now_ns`; returns what changed.
    pub fn apply(&mut self, snap: &LinkSnapshot, now_ns: u64) -> Vec<Change> {
        let mut changes = Vec::new();
        for m in &mut self.list {
            let name = m.cfg.name.clone();
            match snap.links.iter().find(|l| l.name == name) {
                None => {
                    if m.ifindex != 0 {
                        changes.push(Change::Vanished(name.clone()));
                    }
                    (m.ifindex, m.up, m.rx, m.tx, m.srtt_us, m.routed) = (0, false, RateMeter::default(), RateMeter::default(), None, false);
                    m.addrs.clear();
                }
                Some(l) => {
                    if m.ifindex != l.ifindex {
                        if m.ifindex != 0 {
                            changes.push(Change::Vanished(name.clone()));
                        }
                        changes.push(Change::Appeared(name.clone()));
                        (m.rx, m.tx) = (RateMeter::default(), RateMeter::default());
                        m.ifindex = l.ifindex;
                        m.up = false;
                    }
                    if l.up != m.up {
                        changes.push(if l.up { Change::Up(name.clone()) } else { Change::Down(name.clone()) });
                        m.up = l.up;
                        m.routed = false;
                    }
                    m.rx.update(now_ns, l.rx_bytes);
                    m.tx.update(now_ns, l.tx_bytes);
                    let now: Vec<IpAddr> = snap.addrs.iter().filter(|(i, _)| *i == l.ifindex).map(|(_, a)| *a).collect();
                    let added: Vec<IpAddr> = now.iter().filter(|a| !m.addrs.contains(a)).copied().collect();
                    let removed: Vec<IpAddr> = m.addrs.iter().filter(|a| !now.contains(a)).copied().collect();
                    if !added.is_empty() || !removed.is_empty() {
                        changes.push(Change::Addresses(name.clone(), added, removed));
                        m.addrs = now;
                    }
                }
            }
        }
        changes
    }

    /// Takes in the RTTs of the namespace's established TCP connections:
    /// (source address, smoothed RTT µs). Each interface averages those
    /// from its addresses and folds the mean into its moving average.
    pub fn apply_rtt(&mut self, samples: &[(IpAddr, u32)], dt_ns: u64) {
        let w = 1.0 - (-(dt_ns as f64) / AVERAGE_TAU_NS).exp();
        for m in &mut self.list {
            let mine: Vec<f64> = samples.iter().filter(|(a, r)| *r > 0 && m.addrs.contains(a)).map(|(_, r)| *r as f64).collect();
            m.tcp_connections = mine.len() as u32;
            if mine.is_empty() {
                continue;
            }
            let mean = mine.iter().sum::<f64>() / mine.len() as f64;
            m.srtt_us = Some(match m.srtt_us {
                Some(s) => s + w * (mean - s),
                None => mean,
            });
        }
    }

    /// What the policies see of every managed interface, for a socket of
    /// address family `family` (`AF_INET`/`AF_INET6`).
    pub fn candidates(&self, family: i32) -> Vec<Candidate> {
        self.list
            .iter()
            .map(|m| {
                let unusable = if m.ifindex == 0 {
                    Some("absent".to_string())
                } else if !m.up {
                    Some("down".to_string())
                } else if source_of(&m.addrs, family).is_none() {
                    Some(format!("no {} address", if family == libc::AF_INET6 { "IPv6" } else { "IPv4" }))
                } else {
                    None
                };
                let measured = m.srtt_us.map(|us| (us * 1000.0) as u64);
                Candidate {
                    name: m.cfg.name.clone(),
                    kind: m.cfg.kind,
                    metered: m.cfg.metered,
                    cost: m.cfg.cost,
                    nominal_down_bps: m.cfg.nominal_down_bps,
                    rx_bps: m.rx.bps(),
                    rtt_ns: measured.or(m.cfg.expected_rtt_ms.map(|ms| ms * 1_000_000)),
                    rtt_measured: measured.is_some(),
                    flows: m.tcp_connections,
                    unusable,
                }
            })
            .collect()
    }

    /// The report of `qinterfaces`; `per_device(name)` gives (managed
    /// sockets, mean queuing delay ns) from the data path.
    pub fn info(&self, per_device: impl Fn(&str) -> (u32, u64)) -> Vec<InterfaceInfo> {
        self.list
            .iter()
            .map(|m| {
                let (managed_sockets, queuing_delay_ns) = per_device(&m.cfg.name);
                InterfaceInfo {
                    name: m.cfg.name.clone(),
                    ifindex: m.ifindex,
                    present: m.ifindex != 0,
                    up: m.up,
                    kind: m.cfg.kind,
                    metered: m.cfg.metered,
                    cost: m.cfg.cost,
                    nominal_down_bps: m.cfg.nominal_down_bps,
                    nominal_up_bps: m.cfg.nominal_up_bps,
                    rx_bps: m.rx.bps(),
                    tx_bps: m.tx.bps(),
                    srtt_us: m.srtt_us.map(|v| v as u64),
                    tcp_connections: m.tcp_connections,
                    queuing_delay_ns,
                    managed_sockets,
                    addresses: m.addrs.clone(),
                    table: (m.ifindex != 0).then_some(m.table),
                }
            })
            .collect()
    }
}

/// The first address of `family` among `addrs`.
pub fn source_of(addrs: &[IpAddr], family: i32) -> Option<IpAddr> {
    addrs.iter().copied().find(|a| a.is_ipv6() == (family == libc::AF_INET6))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let mut c = Config::default();
        for (n, down) in [("wa", 6_000_000), ("wb", 12_000_000)] {
            c.interfaces.push(InterfaceConfig {
                name: n.into(),
                nominal_down_bps: down,
                nominal_up_bps: down,
                kind: qsock::InterfaceType::Wired,
                metered: false,
                cost: 0,
                gateway: None,
                table: None,
                expected_rtt_ms: None,
                best_effort_permille: 50,
            });
        }
        c
    }

    fn link(name: &str, ifindex: u32, up: bool, rx: u64) -> LinkFact {
        LinkFact { name: name.into(), ifindex, up, rx_bytes: rx, tx_bytes: 0 }
    }

    #[test]
    fn snapshots_report_appearance_state_and_addresses() {
        let mut ifs = Interfaces::new(&cfg());
        let a: IpAddr = "10.1.0.2".parse().unwrap();
        let snap = LinkSnapshot { links: vec![link("wa", 7, true, 0)], addrs: vec![(7, a)] };
        let ch = ifs.apply(&snap, 0);
        assert_eq!(ch, [Change::Appeared("wa".into()), Change::Up("wa".into()), Change::Addresses("wa".into(), vec![a], vec![])]);
        let c = ifs.candidates(libc::AF_INET);
        assert_eq!(c[0].unusable, None);
        assert_eq!(c[1].unusable.as_deref(), Some("absent"));
        assert_eq!(c[0].unusable, None);
        assert_eq!(ifs.candidates(libc::AF_INET6)[0].unusable.as_deref(), Some("no IPv6 address"));
        let snap = LinkSnapshot { links: vec![link("wa", 7, false, 750_000)], addrs: vec![(7, a)] };
        assert_eq!(ifs.apply(&snap, 1_000_000_000), [Change::Down("wa".into())]);
        assert!(ifs.list[0].rx.bps() > 0);
        assert_eq!(ifs.apply(&LinkSnapshot::default(), 2_000_000_000), [Change::Vanished("wa".into())]);
        // Re-created under another index: a new device.
        let snap = LinkSnapshot { links: vec![link("wa", 9, true, 0)], addrs: vec![] };
        assert_eq!(ifs.apply(&snap, 3_000_000_000), [Change::Appeared("wa".into()), Change::Up("wa".into())]);
    }

    #[test]
    fn rtt_averages_connections_per_interface() {
        let mut ifs = Interfaces::new(&cfg());
        let (a, b): (IpAddr, IpAddr) = ("10.1.0.2".parse().unwrap(), "10.2.0.2".parse().unwrap());
        ifs.list[0].addrs = vec![a];
        ifs.list[1].addrs = vec![b];
        ifs.apply_rtt(&[(a, 10_000), (a, 12_000), (b, 70_000)], 100_000_000);
        assert_eq!(ifs.list[0].srtt_us, Some(11_000.0));
        assert_eq!((ifs.list[0].tcp_connections, ifs.list[1].tcp_connections), (2, 1));
        ifs.apply_rtt(&[], 100_000_000);
        assert_eq!(ifs.list[1].srtt_us, Some(70_000.0), "no connection: the last estimate stays");
    }

    #[test]
    fn rate_meter_converges_to_the_counter_rate() {
        let mut m = RateMeter::default();
        for i in 0..50u64 {
            m.update(i * 100_000_000, i * 125_000); // 10 Mbit/s
        }
        assert!((9_900_000..=10_000_001).contains(&m.bps()), "{}", m.bps());
    }
}

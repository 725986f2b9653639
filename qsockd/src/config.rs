//! qsockd configuration: a TOML file, with command-line flags overriding it.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// Settings of qsockd. Every field has a default; a TOML file may set any
/// of them (same names), and flags override the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Unix socket applications connect to.
    pub socket: PathBuf,
    /// Permission bits of that socket (octal in TOML as a string, e.g. "0666").
    /// Anyone who can connect may manage only sockets it holds; `qsockinit`
    /// and teardown additionally need uid 0.
    pub socket_mode: String,
    /// Directory for per-device state files (one subdirectory per network namespace).
    pub state_root: PathBuf,
    /// bpffs directory for pinned maps (one subdirectory per network namespace).
    pub pin_root: PathBuf,
    /// Period of rate sampling, ms.
    pub sample_interval_ms: u64,
    /// Window the reported rate is averaged over, ms.
    pub rate_window_ms: u64,
    /// What admission does with a stream that does not fit: "refuse"
    /// (default) or "warn" (admit it with what is left, and say so).
    pub admission: qsock_sched::Admission,
    /// DWCS reservation headroom on top of Σ (1 − x/y)·C/T, per mille
    /// (default 100 = 10 %; see `qsock_dwcs::module`).
    pub dwcs_headroom_permille: u32,
    /// Burst horizon, ms (> 0): the bursts booked on a device (IntServ `b`
    /// of its token-bucket streams) must all drain within this time at the
    /// link rate, which bounds how long one stream's burst can hold up
    /// another's guaranteed service. Default 200.
    pub burst_horizon_ms: u64,
    /// How often sockets closed without `qclose` are looked for and
    /// released (a sock_diag sweep by cookie), ms; 0: never (they are then
    /// released when their client's connection to qsockd closes). Default
    /// 500: a socket is released after two sweeps miss it, within about a second.
    pub release_check_ms: u64,
    /// Parked HTB classes qsockd creates on each device when it opens it,
    /// so the first attaches take an existing class (one change) instead of
    /// adding one: adding a class costs the kernel a walk over all classes
    /// of the qdisc. Default 0 (classes are created on demand).
    pub class_pool: u32,
    /// Most parked classes kept per device: a released class is parked for
    /// the next socket up to this many, deleted beyond. Default 16384.
    pub class_pool_max: u32,
    /// Address of the OpenMetrics endpoint (`GET /metrics`: every managed
    /// socket's guarantee, rate, drops by reason and queuing delay), e.g.
    /// "127.0.0.1:9464". `None` (the default): no endpoint. It answers
    /// anyone who can reach the address: bind it to loopback or a
    /// management network.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Per-user limits on guaranteed rate and managed sockets (`[limits]`).
    pub limits: crate::state::limits::Limits,
    /// Group that may use qsock: the Unix socket is given to it and made
    /// group read-write (`socket_mode` still applies to others). `None`:
    /// the socket keeps root's group.
    pub socket_group: Option<String>,
    /// Interfaces qsockd manages and chooses among for sockets attached
    /// without a device (Socket Intents). Each gets qsock's root qdisc at
    /// its `nominal_up_bps` when `run` starts, a routing table and a rule
    /// per source address. Empty: no interface selection.
    pub interfaces: Vec<InterfaceConfig>,
    /// Interface-selection policies clients may name (`QosParams.policy`):
    /// any of `category`, `filesize`, `earliest_completion`, `round_robin`.
    pub policies: Vec<String>,
    /// Policy used when a client names none (one of `policies`).
    pub default_policy: String,
    /// Priority of the source-address rules qsockd installs (`ip rule pref`);
    /// below the main table's 32766 so they are consulted first.
    pub rule_priority: u32,
    /// First routing table id qsockd uses: the n-th managed interface gets
    /// `table_base + n` unless its entry names a table.
    pub table_base: u32,
    /// Multipath TCP (`[multipath]`): qsockd as the namespace's path manager.
    pub multipath: MultipathConfig,
}

/// `[multipath]`: with `enabled`, qsockd switches its namespace to the
/// userspace MPTCP path manager while it runs (and restores the previous
/// one when it stops, or when it starts after a predecessor was killed),
/// and applications open, close and prioritise subflows through it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MultipathConfig {
    /// Take over the path manager. Default false: MPTCP sockets are left
    /// to the kernel's path manager and subflow calls answer Unsupported.
    pub enabled: bool,
    /// Most additional subflows per connection the namespace allows, 0..=8
    /// (the kernel's limit; default 8).
    pub subflows_max: u32,
    /// Most peer-announced addresses accepted per connection, 0..=8 (default 8).
    pub add_addr_accepted_max: u32,
    /// Which subflows qsockd opens without being asked (default
    /// `every_interface`).
    pub open_subflows: OpenSubflows,
    /// How often the subflows of the connections this host opened are
    /// checked for a silent path (a blackhole: no link event), ms; 0 turns
    /// the check off (default 50). Each check is one sock_diag dump of the
    /// namespace's established TCP sockets and one of its MPTCP sockets.
    pub blackhole_check_ms: u64,
}

/// Subflows qsockd opens on its own for the connections of its namespace.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OpenSubflows {
    /// When a connection this host opened is established: one subflow on
    /// each other managed interface with an address of the peer's family
    /// (the in-kernel path manager's `subflow` endpoints, for every link).
    EveryInterface,
    /// Only what applications ask for (`qsubflow_open`).
    OnRequest,
}

impl Default for MultipathConfig {
    fn default() -> Self {
        Self { enabled: false, subflows_max: 8, add_addr_accepted_max: 8, open_subflows: OpenSubflows::EveryInterface, blackhole_check_ms: 50 }
    }
}

/// One managed interface: what qsockd cannot measure about it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Interface name.
    pub name: String,
    /// Nominal downstream bandwidth, bit/s (> 0): what the access link
    /// delivers to this host (e.g. a DSL line's sync rate).
    pub nominal_down_bps: u64,
    /// Nominal upstream bandwidth, bit/s (> 0): the rate of the root HTB
    /// qsockd installs on the interface's egress.
    pub nominal_up_bps: u64,
    /// Type, for TAPS preferences by type (`wired`, `wifi`, `cellular`).
    #[serde(default = "default_kind")]
    pub kind: qsock::InterfaceType,
    /// Traffic on it costs money per byte (matched by `type:metered`).
    #[serde(default)]
    pub metered: bool,
    /// Relative cost per byte (ranks interfaces for scavenger traffic).
    #[serde(default)]
    pub cost: u32,
    /// Next hop for the interface's routing table; `None`: the table's
    /// default route is on-link through the interface.
    #[serde(default)]
    pub gateway: Option<std::net::IpAddr>,
    /// Routing table id (default `table_base` + position in the list).
    #[serde(default)]
    pub table: Option<u32>,
    /// RTT to assume until the first measurement, ms (policies say when
    /// they used it). `None`: unknown until measured.
    #[serde(default)]
    pub expected_rtt_ms: Option<u64>,
    /// Best-effort share of the root HTB, per mille (1..=999, default 50).
    #[serde(default = "default_be_permille")]
    pub best_effort_permille: u32,
}

fn default_kind() -> qsock::InterfaceType {
    qsock::InterfaceType::Wired
}

fn default_be_permille() -> u32 {
    50
}

/// Names of the interface-selection policies this build ships.
pub const KNOWN_POLICIES: [&str; 4] = ["category", "filesize", "earliest_completion", "round_robin"];

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(qsock::proto::DEFAULT_SOCKET_PATH),
            socket_mode: "0666".into(),
            state_root: PathBuf::from("/run/qsock/state"),
            pin_root: PathBuf::from("/sys/fs/bpf/qsock"),
            sample_interval_ms: 100,
            rate_window_ms: 1000,
            admission: qsock_sched::Admission::Refuse,
            dwcs_headroom_permille: qsock_dwcs::module::DEFAULT_HEADROOM_PERMILLE,
            burst_horizon_ms: 200,
            release_check_ms: 500,
            class_pool: 0,
            class_pool_max: 16_384,
            metrics_listen: None,
            limits: crate::state::limits::Limits::default(),
            socket_group: None,
            interfaces: Vec::new(),
            policies: KNOWN_POLICIES.iter().map(|s| s.to_string()).collect(),
            default_policy: "category".into(),
            rule_priority: 1000,
            table_base: 1000,
            multipath: MultipathConfig::default(),
        }
    }
}

impl Config {
    /// Reads `path` if given, else the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let Some(p) = path else { return Ok(Self::default()) };
        let text = std::fs::read_to_string(p).with_context(|| format!("read config {}", p.display()))?;
        toml::from_str(&text).with_context(|| format!("parse config {}", p.display()))
    }

    /// Checks ranges a file or flag may get wrong. Errors name the key.
    pub fn validate(&self) -> Result<()> {
        let minors = qsock_common::LAST_SOCKET_MINOR - qsock_common::FIRST_SOCKET_MINOR + 1;
        if self.class_pool > self.class_pool_max || self.class_pool_max > minors {
            anyhow::bail!("class_pool ({}) must be at most class_pool_max ({}), and that at most {minors}", self.class_pool, self.class_pool_max);
        }
        if self.burst_horizon_ms == 0 || self.burst_horizon_ms > 60_000 {
            anyhow::bail!("burst_horizon_ms must be 1..=60000 (got {})", self.burst_horizon_ms);
        }
        self.socket_mode_bits()?;
        self.limits.validate()?;
        if let Some(g) = &self.socket_group {
            if nix::unistd::Group::from_name(g).ok().flatten().is_none() {
                anyhow::bail!("socket_group {g:?} is not a group on this host");
            }
        }
        if self.release_check_ms > 60_000 {
            anyhow::bail!("release_check_ms must be 0 (off) or at most 60000 (got {})", self.release_check_ms);
        }
        for p in &self.policies {
            if !KNOWN_POLICIES.contains(&p.as_str()) {
                anyhow::bail!("policies: unknown policy {p:?} (known: {})", KNOWN_POLICIES.join(", "));
            }
        }
        if !self.policies.contains(&self.default_policy) {
            anyhow::bail!("default_policy {:?} is not among policies {:?}", self.default_policy, self.policies);
        }
        if self.rule_priority == 0 || self.rule_priority >= 32766 {
            anyhow::bail!("rule_priority must be 1..=32765 (before the main table's rule; got {})", self.rule_priority);
        }
        let max = crate::kernel::mptcp_pm::LIMIT_MAX;
        if self.multipath.subflows_max > max || self.multipath.add_addr_accepted_max > max {
            anyhow::bail!("multipath: subflows_max and add_addr_accepted_max must be 0..={max} (the kernel's limit)");
        }
        if self.multipath.blackhole_check_ms > 10_000 {
            anyhow::bail!("multipath: blackhole_check_ms must be 0 (off) or at most 10000 (got {})", self.multipath.blackhole_check_ms);
        }
        let mut tables = std::collections::HashSet::new();
        for (i, ifc) in self.interfaces.iter().enumerate() {
            qsock::params::check_device(&ifc.name).map_err(|e| anyhow::anyhow!("interfaces[{i}]: {}", e.message))?;
            if self.interfaces[..i].iter().any(|o| o.name == ifc.name) {
                anyhow::bail!("interfaces[{i}]: {} is listed twice", ifc.name);
            }
            if ifc.nominal_down_bps == 0 || ifc.nominal_up_bps == 0 {
                anyhow::bail!("interfaces[{i}] ({}): nominal_down_bps and nominal_up_bps must be > 0", ifc.name);
            }
            if !(1..=999).contains(&ifc.best_effort_permille) {
                anyhow::bail!("interfaces[{i}] ({}): best_effort_permille must be 1..=999", ifc.name);
            }
            let t = self.table_of(i);
            if matches!(t, 0 | 253..=255) || !tables.insert(t) {
                anyhow::bail!("interfaces[{i}] ({}): routing table {t} is reserved or used twice", ifc.name);
            }
        }
        Ok(())
    }

    /// Routing table of the `i`-th managed interface.
    pub fn table_of(&self, i: usize) -> u32 {
        self.interfaces[i].table.unwrap_or(self.table_base + i as u32)
    }

    /// `socket_mode` as permission bits. Errors on a malformed octal string.
    pub fn socket_mode_bits(&self) -> Result<u32> {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8).with_context(|| format!("socket_mode {:?} is not octal", self.socket_mode))
    }
}

/// Filesystem locations for one network namespace.
#[derive(Clone, Debug)]
pub struct Paths {
    /// bpffs root ([`Config::pin_root`]).
    pub pin_root: PathBuf,
    /// State root ([`Config::state_root`]).
    pub state_root: PathBuf,
    /// Inode of the network namespace qsockd works in.
    pub netns_id: u64,
}

impl Paths {
    /// Paths for the current network namespace.
    pub fn new(cfg: &Config) -> Result<Self> {
        Ok(Self { pin_root: cfg.pin_root.clone(), state_root: cfg.state_root.clone(), netns_id: crate::kernel::netns::current_id()? })
    }

    /// Directory of this namespace's device state files.
    pub fn state_dir(&self) -> PathBuf {
        self.state_root.join(format!("net{}", self.netns_id))
    }

    /// State file of `device`.
    pub fn state_file(&self, device: &str) -> PathBuf {
        self.state_dir().join(format!("{device}.json"))
    }

    /// bpffs directory of `device`'s pinned maps.
    pub fn pin_dir(&self, device: &str) -> PathBuf {
        self.pin_root.join(format!("net{}", self.netns_id)).join(device)
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("qsockd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("qsockd.toml");
        std::fs::write(&f, "socket = \"/tmp/x.sock\"\nsocket_mode = \"0660\"\nrate_window_ms = 500\nadmission = \"warn\"\n").unwrap();
        let c = Config::load(Some(&f)).unwrap();
        assert_eq!(c.socket, std::path::PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.socket_mode_bits().unwrap(), 0o660);
        assert_eq!(c.rate_window_ms, 500);
        assert_eq!(c.admission, qsock_sched::Admission::Warn);
        assert_eq!(c.sample_interval_ms, Config::default().sample_interval_ms);
        std::fs::write(&f, "sokcet = \"/tmp/x.sock\"\n").unwrap();
        assert!(Config::load(Some(&f)).is_err(), "a misspelt key is an error, not ignored");
        std::fs::write(
            &f,
            "default_policy = \"filesize\"\n[[interfaces]]\nname = \"wa\"\nnominal_down_bps = 6000000\nnominal_up_bps = 768000\n\
             [[interfaces]]\nname = \"wb\"\nnominal_down_bps = 12000000\nnominal_up_bps = 6000000\nkind = \"cellular\"\nmetered = true\ngateway = \"10.2.0.1\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&f)).unwrap();
        c.validate().unwrap();
        assert_eq!(c.interfaces[1].kind, qsock::InterfaceType::Cellular);
        assert_eq!((c.table_of(0), c.table_of(1)), (1000, 1001));
        let mut bad = c.clone();
        bad.default_policy = "fastest".into();
        assert!(bad.validate().unwrap_err().to_string().contains("default_policy"));
        let mut bad = c.clone();
        bad.policies.push("magic".into());
        assert!(bad.validate().unwrap_err().to_string().contains("unknown policy"));
        let mut bad = c;
        bad.interfaces[1].name = "wa".into();
        assert!(bad.validate().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

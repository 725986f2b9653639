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
    pub admission: qsock::sched::Admission,
    /// DWCS reservation headroom on top of Σ (1 − x/y)·C/T, per mille
    /// (default 100 = 10 %; see `qsock_dwcs::module`).
    pub dwcs_headroom_permille: u32,
    /// Burst horizon, ms (> 0): the bursts booked on a device (IntServ `b`
    /// of its token-bucket streams) must all drain within this time at the
    /// link rate, which bounds how long one stream's burst can hold up
    /// another's guaranteed service. Default 200.
    pub burst_horizon_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(qsock::proto::DEFAULT_SOCKET_PATH),
            socket_mode: "0666".into(),
            state_root: PathBuf::from("/run/qsock/state"),
            pin_root: PathBuf::from("/sys/fs/bpf/qsock"),
            sample_interval_ms: 100,
            rate_window_ms: 1000,
            admission: qsock::sched::Admission::Refuse,
            dwcs_headroom_permille: qsock_dwcs::module::DEFAULT_HEADROOM_PERMILLE,
            burst_horizon_ms: 200,
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
        if self.burst_horizon_ms == 0 || self.burst_horizon_ms > 60_000 {
            anyhow::bail!("burst_horizon_ms must be 1..=60000 (got {})", self.burst_horizon_ms);
        }
        self.socket_mode_bits()?;
        Ok(())
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
        Ok(Self { pin_root: cfg.pin_root.clone(), state_root: cfg.state_root.clone(), netns_id: crate::netns::current_id()? })
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
        assert_eq!(c.admission, qsock::sched::Admission::Warn);
        assert_eq!(c.sample_interval_ms, Config::default().sample_interval_ms);
        std::fs::write(&f, "sokcet = \"/tmp/x.sock\"\n").unwrap();
        assert!(Config::load(Some(&f)).is_err(), "a misspelt key is an error, not ignored");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

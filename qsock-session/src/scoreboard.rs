//! The host's scoreboard of recent path figures (§III-B: "a scoreboard of
//! recently used paths across all sessions"), so a short session starts
//! from what the last one learned instead of from nothing. One JSON file
//! per host (`$QSOCK_SESSION_SCOREBOARD`, else
//! `/run/qsock/session-scoreboard.json`), keyed by local and remote
//! address; entries older than [`MAX_AGE`] are ignored.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

/// Entries older than this are not trusted.
pub const MAX_AGE: Duration = Duration::from_secs(600);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Entry {
    srtt_us: u64,
    delivery_bps: u64,
    /// Seconds since the Unix epoch.
    at: u64,
}

fn file() -> PathBuf {
    std::env::var_os("QSOCK_SESSION_SCOREBOARD").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/run/qsock/session-scoreboard.json"))
}

fn key(local: &IpAddr, remote: &IpAddr) -> String {
    format!("{local}>{remote}")
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn load() -> BTreeMap<String, Entry> {
    std::fs::read(file()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// The last figures of the path `local` → `remote`: (srtt µs, delivery bit/s).
pub fn recall(local: &IpAddr, remote: &IpAddr) -> Option<(u64, u64)> {
    let e = load().remove(&key(local, remote))?;
    (now_s().saturating_sub(e.at) <= MAX_AGE.as_secs() && e.srtt_us > 0).then_some((e.srtt_us, e.delivery_bps))
}

/// Records the figures of the path `local` → `remote`. Best effort: a
/// scoreboard that cannot be written only means the next session starts cold.
pub fn record(local: &IpAddr, remote: &IpAddr, srtt_us: u64, delivery_bps: u64) {
    let mut all = load();
    all.insert(key(local, remote), Entry { srtt_us, delivery_bps, at: now_s() });
    let path = file();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // Written aside and renamed: a reader never sees half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if serde_json::to_vec(&all).ok().is_some_and(|b| std::fs::write(&tmp, b).is_ok()) {
        let _ = std::fs::rename(&tmp, &path);
    }
}

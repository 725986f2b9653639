//! Network namespace handling. qsockd enters a named namespace for the
//! network only (keeping the host's mount namespace, hence its bpffs), so
//! `init` and `run` see the same pinned maps.
use std::{fs::File, os::unix::fs::MetadataExt, path::PathBuf};

use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Moves the calling thread into network namespace `name` (a file under
/// [`NETNS_DIR`]). Call before any other thread starts.
pub fn enter(name: &str) -> Result<()> {
    let path = PathBuf::from(NETNS_DIR).join(name);
    let f = File::open(&path).with_context(|| format!("network namespace {name} ({})", path.display()))?;
    setns(f, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into {name}"))?;
    Ok(())
}

/// Inode of the current network namespace: names it uniquely while it lives.
pub fn current_id() -> Result<u64> {
    Ok(std::fs::metadata("/proc/self/ns/net").context("stat /proc/self/ns/net")?.ino())
}

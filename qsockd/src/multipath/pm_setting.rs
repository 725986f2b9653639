//! Makes qsockd the path manager of its namespace: the per-namespace sysctl
//! `net.mptcp.path_manager` (Linux 6.15+; `pm_type` before) set to
//! `userspace`, and the limits it needs. What was there before is saved
//! under the state directory first, so a stop restores it and a successor
//! of a killed qsockd restores the original, not qsockd's own setting.
use std::path::{Path, PathBuf};

use qsock::{ErrorKind, QsockError};
use serde::{Deserialize, Serialize};

use crate::kernel::mptcp_pm::{Limits, PmClient};

const SYSCTL_DIR: &str = "/proc/sys/net/mptcp";

/// The namespace's path-manager setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmSetting {
    /// `net.mptcp.path_manager` ("kernel", "userspace"), or the `pm_type`
    /// number as text on kernels without that sysctl.
    pub path_manager: String,
    /// The limits.
    pub limits: Limits,
}

/// Which sysctl selects the path manager here, and its value for userspace.
fn pm_sysctl() -> Result<(PathBuf, &'static str), QsockError> {
    let dir = Path::new(SYSCTL_DIR);
    if !dir.exists() {
        return Err(QsockError::new(ErrorKind::Unsupported, "this kernel has no MPTCP (no /proc/sys/net/mptcp): multipath is off"));
    }
    if std::fs::read_to_string(dir.join("enabled")).map(|s| s.trim() == "0").unwrap_or(false) {
        return Err(QsockError::new(ErrorKind::Unsupported, "MPTCP is disabled in this namespace (net.mptcp.enabled = 0): multipath is off"));
    }
    let named = dir.join("path_manager");
    if named.exists() {
        Ok((named, "userspace"))
    } else {
        Ok((dir.join("pm_type"), "1"))
    }
}

fn read(path: &Path) -> Result<String, QsockError> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).map_err(|e| QsockError::new(ErrorKind::Kernel, format!("read {}: {e}", path.display())))
}

fn write(path: &Path, value: &str) -> Result<(), QsockError> {
    std::fs::write(path, value).map_err(|e| QsockError::new(ErrorKind::Kernel, format!("write {value:?} to {}: {e}", path.display())))
}

/// The saved original setting of this namespace (`state_dir/mptcp-pm.json`).
fn saved_file(state_dir: &Path) -> PathBuf {
    state_dir.join("mptcp-pm.json")
}

/// Switches the namespace to the userspace path manager with `limits`.
/// The setting found is saved first, unless a file saved by a predecessor
/// that did not stop cleanly is there: that one holds the original.
/// Returns the original setting.
///
/// Errors: [`ErrorKind::Unsupported`] (no MPTCP, MPTCP disabled),
/// [`ErrorKind::PermissionDenied`], [`ErrorKind::Kernel`].
pub async fn take_over(state_dir: &Path, pm: &mut PmClient, limits: Limits) -> Result<PmSetting, QsockError> {
    let (sysctl, userspace) = pm_sysctl()?;
    let file = saved_file(state_dir);
    let original = match std::fs::read(&file) {
        Ok(b) => {
            let s: PmSetting = serde_json::from_slice(&b).map_err(|e| QsockError::new(ErrorKind::Kernel, format!("corrupt {}: {e}", file.display())))?;
            log::info!("multipath: a previous qsockd did not restore the path manager; the original ({}) is kept from {}", s.path_manager, file.display());
            s
        }
        Err(_) => {
            let s = PmSetting { path_manager: read(&sysctl)?, limits: pm.limits().await? };
            std::fs::create_dir_all(state_dir).map_err(|e| QsockError::new(ErrorKind::Kernel, format!("create {}: {e}", state_dir.display())))?;
            let body = serde_json::to_vec_pretty(&s).expect("plain struct");
            std::fs::write(&file, body).map_err(|e| QsockError::new(ErrorKind::Kernel, format!("write {}: {e}", file.display())))?;
            s
        }
    };
    write(&sysctl, userspace)?;
    pm.set_limits(limits).await?;
    Ok(original)
}

/// Puts back the saved setting and removes the file; nothing to do when
/// none was saved. Errors: [`ErrorKind::Kernel`] (the file stays, so the
/// next start or stop tries again).
pub async fn restore(state_dir: &Path, pm: &mut PmClient) -> Result<(), QsockError> {
    let file = saved_file(state_dir);
    let Ok(b) = std::fs::read(&file) else { return Ok(()) };
    let s: PmSetting = serde_json::from_slice(&b).map_err(|e| QsockError::new(ErrorKind::Kernel, format!("corrupt {}: {e}", file.display())))?;
    let (sysctl, _) = pm_sysctl()?;
    write(&sysctl, &s.path_manager)?;
    pm.set_limits(s.limits).await?;
    std::fs::remove_file(&file).map_err(|e| QsockError::new(ErrorKind::Kernel, format!("remove {}: {e}", file.display())))
}

//! qsockd's books on disk: one small JSON file per managed socket, written
//! when the socket is attached or changed and removed when it is released,
//! so a restarted daemon (upgrade, crash) recovers every socket whose class
//! and map entries are still in the kernel. A file per socket keeps each
//! write's cost independent of how many sockets are managed. The state
//! directory is under `/run` (tmpfs): after a reboot nothing is recovered,
//! as nothing is left in the kernel either. A managed MPTCP connection has
//! a record of its own beside its subflow streams' (`connections/`).
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use serde::{de::DeserializeOwned, Serialize};

use crate::state::sockets::{Managed, UNCLAIMED};

/// The directory of the books of one network namespace.
#[derive(Clone, Debug)]
pub struct Books {
    dir: PathBuf,
}

impl Books {
    /// Books under `state_dir` (the namespace's state directory).
    pub fn new(state_dir: &Path) -> Self {
        Self { dir: state_dir.join("sockets") }
    }

    fn file(&self, cookie: u64) -> PathBuf {
        self.dir.join(format!("{cookie}.json"))
    }

    fn connections_dir(&self) -> PathBuf {
        self.dir.join("connections")
    }

    /// Records socket `cookie` (atomically: a crash leaves the old record
    /// or the new one). Errors: the file system's.
    pub fn save(&self, cookie: u64, m: &Managed) -> std::io::Result<()> {
        write_atomically(&self.dir, cookie, m)
    }

    /// Records the managed MPTCP connection of the application's socket
    /// `app` (atomically, as [`Books::save`]). Errors: the file system's.
    pub fn save_connection<T: Serialize>(&self, app: u64, record: &T) -> std::io::Result<()> {
        write_atomically(&self.connections_dir(), app, record)
    }

    /// Forgets connection `app` (nothing happens if it has no record).
    pub fn remove_connection(&self, app: u64) {
        let _ = fs::remove_file(self.connections_dir().join(format!("{app}.json")));
    }

    /// Every connection record, by the application socket's cookie.
    /// Unreadable records are removed with a warning.
    pub fn load_connections<T: DeserializeOwned>(&self) -> Vec<(u64, T)> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(self.connections_dir()) else { return out };
        for e in rd.flatten() {
            let path = e.path();
            let app = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok());
            let parsed =
                (path.extension().is_some_and(|x| x == "json")).then(|| fs::read(&path).ok().and_then(|b| serde_json::from_slice::<T>(&b).ok())).flatten();
            match (app, parsed) {
                (Some(a), Some(r)) => out.push((a, r)),
                _ => {
                    log::warn!("removing unreadable connection record {}", path.display());
                    let _ = fs::remove_file(&path);
                }
            }
        }
        out
    }

    /// Forgets socket `cookie` (nothing happens if it has no record).
    pub fn remove(&self, cookie: u64) {
        let _ = fs::remove_file(self.file(cookie));
    }

    /// Every record, grouped by device, as not yet claimed by a client.
    /// Unreadable records are removed with a warning.
    pub fn load_all(&self) -> HashMap<String, Vec<(u64, Managed)>> {
        let mut out: HashMap<String, Vec<(u64, Managed)>> = HashMap::new();
        let Ok(rd) = fs::read_dir(&self.dir) else { return out };
        for e in rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_file())) {
            let path = e.path();
            let cookie = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok());
            let parsed = (path.extension().is_some_and(|x| x == "json"))
                .then(|| fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Managed>(&b).ok()))
                .flatten();
            match (cookie, parsed) {
                (Some(c), Some(mut m)) => {
                    m.conn = UNCLAIMED;
                    out.entry(m.device.clone()).or_default().push((c, m));
                }
                _ => {
                    log::warn!("removing unreadable socket record {}", path.display());
                    let _ = fs::remove_file(&path);
                }
            }
        }
        out
    }

    /// Forgets the sockets `cookies` (those without a record are skipped).
    pub fn remove_all(&self, cookies: impl IntoIterator<Item = u64>) {
        for c in cookies {
            self.remove(c);
        }
    }
}

/// Writes `value` as `<dir>/<key>.json` through a temporary file and a
/// rename, creating `dir` when it is missing. Errors: the file system's.
fn write_atomically<T: Serialize>(dir: &Path, key: u64, value: &T) -> std::io::Result<()> {
    let tmp = dir.join(format!("{key}.tmp"));
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    match fs::write(&tmp, &body) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            fs::write(&tmp, &body)?;
        }
        r => r?,
    }
    fs::rename(&tmp, dir.join(format!("{key}.json")))
}

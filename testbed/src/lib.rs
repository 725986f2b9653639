//! Network-namespace test bed for qsock's tests and demos.
//!
//! [`Testbed::new`] makes two namespaces, `server` and `client`, joined by a
//! veth pair (10.77.0.1/24 on the server side, 10.77.0.2/24 on the client
//! side). Names are unique per process and bed, so beds can coexist. Drop
//! stops the bed's qsockd, deletes the namespaces (and with them the veths)
//! and removes the bed's state and pin directories, on success and on panic.
//! Traffic stays inside the namespaces.
#![warn(missing_docs)]
use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use nix::sched::{setns, CloneFlags};

/// Server-side address of every bed.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Client-side address of every bed.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

pub mod multihomed;

pub(crate) static BED_SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs `f` on a thread inside network namespace `ns` (sockets made there stay there).
pub fn in_namespace<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let file = File::open(Path::new("/run/netns").join(ns)).with_context(|| format!("open netns {ns}"))?;
    std::thread::scope(|s| {
        s.spawn(move || -> Result<T> {
            setns(file, CloneFlags::CLONE_NEWNET).context("setns")?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow!("thread in {ns} panicked"))?
    })
}

/// Path of a binary built from this workspace (`target/<profile>/<name>`),
/// found next to the running executable (or its parent, for test binaries
/// in `deps/`).
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("binary {name} not found next to {} (run `cargo build --workspace` first)", exe.display())
}

/// Runs `cmd`, failing with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// Command-line options every experiment on the bed shares (flatten them
/// into the experiment's own `clap` arguments).
#[derive(clap::Args, Clone, Debug)]
pub struct ExperimentArgs {
    /// Bottleneck: root HTB rate on the server's egress (tc syntax, e.g. 10mbit).
    #[arg(long, default_value = "10mbit")]
    pub link_rate: String,
    /// Parallel TCP streams of the iperf3 load.
    #[arg(long, default_value_t = 4)]
    pub iperf_streams: u32,
    /// Directory for the CSV, JSON and SVG results.
    #[arg(long, default_value = "results")]
    pub out_dir: PathBuf,
}

/// Two namespaces and a veth pair; see the crate docs.
pub struct Testbed {
    /// Server namespace (its egress is where qsock works).
    pub server_ns: String,
    /// Client namespace (receivers live here).
    pub client_ns: String,
    /// veth end in the server namespace.
    pub server_dev: String,
    /// veth end in the client namespace.
    pub client_dev: String,
    /// Scratch directory of this bed (daemon socket, state, logs).
    pub dir: PathBuf,
    /// bpffs directory for this bed's pinned maps.
    pub pin_root: PathBuf,
    /// qsockd's state directory (device records, socket books), on tmpfs as
    /// `/run` is on a systemd host: on a disk file system each book write
    /// costs 0.1–0.7 ms on the CI machine's ext4 (`scripts/control-costs.sh`).
    pub state_root: PathBuf,
    /// The running qsockd, if any (behind a lock so a stream's helper thread
    /// can kill and restart it while the bed is shared).
    daemon: std::sync::Mutex<Option<Child>>,
}

impl Testbed {
    /// Creates the namespaces and the veth pair. `tag` (≤ 6 chars) shows up
    /// in the names, for finding leftovers.
    pub fn new(tag: &str) -> Result<Self> {
        let id = format!("{}{}", std::process::id(), BED_SEQ.fetch_add(1, Ordering::Relaxed));
        let tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric()).take(6).collect();
        let server_ns = format!("qs-{tag}-{id}-s");
        let client_ns = format!("qs-{tag}-{id}-c");
        // Interface names are limited to 15 bytes.
        let short = &id[id.len().saturating_sub(8)..];
        let server_dev = format!("qs{short}s");
        let client_dev = format!("qs{short}c");
        let dir = std::env::temp_dir().join(format!("qsock-bed-{tag}-{id}"));
        let pin_root = PathBuf::from("/sys/fs/bpf").join(format!("qsock-bed-{tag}-{id}"));
        let state_root = PathBuf::from("/dev/shm").join(format!("qsock-bed-{tag}-{id}"));
        let bed = Self { server_ns, client_ns, server_dev, client_dev, dir, pin_root, state_root, daemon: std::sync::Mutex::new(None) };
        bed.build().with_context(|| format!("building test bed {tag}"))?;
        Ok(bed)
    }

    fn build(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        run(Command::new("ip").args(["netns", "add", &self.server_ns]))?;
        run(Command::new("ip").args(["netns", "add", &self.client_ns]))?;
        run(Command::new("ip").args([
            "link",
            "add",
            &self.server_dev,
            "netns",
            &self.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &self.client_dev,
            "netns",
            &self.client_ns,
        ]))?;
        for (ns, dev, ip) in [(&self.server_ns, &self.server_dev, SERVER_IP), (&self.client_ns, &self.client_dev, CLIENT_IP)] {
            run(Command::new("ip").args(["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev]))?;
            run(Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]))?;
            run(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]))?;
        }
        Ok(())
    }

    /// Runs `f` on a thread inside namespace `ns` (sockets made there stay there).
    pub fn in_ns<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
        in_namespace(ns, f)
    }

    /// A UDP socket bound in `ns` to `bind` (port 0 for any).
    pub fn udp_socket(&self, ns: &str, bind: SocketAddr) -> Result<UdpSocket> {
        self.in_ns(ns, || UdpSocket::bind(bind))?.with_context(|| format!("bind {bind} in {ns}"))
    }

    /// A command that runs `program` inside `ns` (via `ip netns exec`).
    pub fn command_in(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// Path of the bed's qsockd socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("qsockd.sock")
    }

    /// Where qsockd pins the server device's maps and links: qsockd keys a
    /// namespace by its inode (`<pin_root>/net<inode>/<device>`). Errors:
    /// the server namespace's file cannot be read.
    pub fn pin_dir(&self) -> Result<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(format!("/run/netns/{}", self.server_ns))?.ino();
        Ok(self.pin_root.join(format!("net{ino}")).join(&self.server_dev))
    }

    /// qsockd invoked for this bed's server namespace, state and pins.
    pub fn qsockd(&self) -> Result<Command> {
        let mut c = Command::new(workspace_bin("qsockd")?);
        c.arg("--netns").arg(&self.server_ns);
        c.arg("--socket").arg(self.socket_path());
        c.arg("--state-root").arg(&self.state_root);
        c.arg("--pin-root").arg(&self.pin_root);
        Ok(c)
    }

    /// `qsockd init` on the server device at `rate` (e.g. "10mbit").
    pub fn init(&self, rate: &str) -> Result<()> {
        run(self.qsockd()?.args(["init", "--device", &self.server_dev, "--rate", rate]))?;
        Ok(())
    }

    fn daemon_slot(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.daemon.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `qsockd run` and waits until it answers a ping (bounded: 30 s).
    /// Its log goes to `dir/qsockd.log` (appended to across restarts).
    pub fn start_daemon(&self) -> Result<()> {
        self.start_daemon_with(&[])
    }

    /// [`Testbed::start_daemon`] with extra `qsockd run` flags (e.g. `--admission warn`).
    pub fn start_daemon_with(&self, flags: &[&str]) -> Result<()> {
        let log_path = self.dir.join("qsockd.log");
        let log = File::options().create(true).append(true).open(&log_path)?;
        let child = self.qsockd()?.arg("run").args(flags).stdout(Stdio::null()).stderr(log).spawn()?;
        let socket = self.socket_path();
        let mut slot = self.daemon_slot();
        await_daemon(slot.insert(child), &socket, &log_path)
    }

    /// Stops the running daemon (SIGSTOP) and returns once the kernel shows
    /// every thread of it stopped (`/proc/PID/task/*/stat` state `T`), so a
    /// request sent next finds it hung (bounded: 5 s). Errors: no daemon
    /// runs, or it did not stop.
    pub fn pause_daemon(&self) -> Result<()> {
        let pid = self.daemon_slot().as_ref().map(|c| c.id()).ok_or_else(|| anyhow::anyhow!("no qsockd runs in this bed"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGSTOP)?;
        let stopped = || -> bool {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
            tasks.filter_map(|t| t.ok()).all(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                // The state follows the command name's closing parenthesis.
                stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stopped() {
            if Instant::now() > deadline {
                bail!("qsockd (pid {pid}) did not stop within 5 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Lets a daemon stopped by [`Testbed::pause_daemon`] run again (SIGCONT).
    pub fn resume_daemon(&self) -> Result<()> {
        let pid = self.daemon_slot().as_ref().map(|c| c.id()).ok_or_else(|| anyhow::anyhow!("no qsockd runs in this bed"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGCONT)?;
        Ok(())
    }

    /// Whether the daemon process is still running.
    pub fn daemon_alive(&self) -> bool {
        matches!(self.daemon_slot().as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops the daemon (SIGTERM, then waits). A paused daemon is resumed
    /// first, or it would never handle the SIGTERM.
    pub fn stop_daemon(&self) {
        if let Some(mut c) = self.daemon_slot().take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }

    /// Kills the daemon with SIGKILL (a crash: no cleanup of its own) and
    /// reaps it.
    pub fn kill_daemon(&self) {
        if let Some(mut c) = self.daemon_slot().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts an iperf3 server on the client side and waits until it listens
    /// (bounded by iperf3 itself exiting); stopped on drop.
    pub fn iperf_server(&self) -> Result<KillOnDrop> {
        use std::io::BufRead;
        let mut c = self.command_in(&self.client_ns, "iperf3");
        c.args(["-s", "--forceflush", "-B", &CLIENT_IP.to_string()]).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = KillOnDrop(c.spawn().context("iperf3 server (install iperf3: scripts/setup.sh --demo)")?);
        let mut out = std::io::BufReader::new(child.0.stdout.take().expect("piped"));
        let mut line = String::new();
        while !line.contains("Server listening") {
            line.clear();
            if out.read_line(&mut line)? == 0 {
                bail!("iperf3 server exited before listening");
            }
        }
        // Keep draining its reports so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Ok(child)
    }

    /// Bulk TCP from the server side to the client side: `iperf3 -c` with
    /// `streams` parallel flows for `secs` seconds; returns when it ends.
    pub fn iperf_client(&self, secs: u64, streams: u32) -> Result<()> {
        let mut c = self.command_in(&self.server_ns, "iperf3");
        c.args(["-c", &CLIENT_IP.to_string(), "-t", &secs.to_string(), "-P", &streams.to_string(), "--connect-timeout", "3000"]);
        run(c.stdout(Stdio::null()))?;
        Ok(())
    }

    /// `tc <args>` in the server namespace; returns stdout.
    pub fn tc_server(&self, args: &[&str]) -> Result<String> {
        let out = run(Command::new("tc").arg("-n").arg(&self.server_ns).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Spawns `cmd` with stdout piped and stderr written to `log`, and waits
/// until its first line on stdout is `ready`. Errors with the log's content
/// if it says anything else or exits.
pub fn spawn_ready(mut cmd: Command, log: &Path) -> Result<Child> {
    use std::io::BufRead;
    let mut child = cmd.stdout(Stdio::piped()).stderr(File::create(log)?).spawn().with_context(|| format!("spawn {cmd:?}"))?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().expect("piped")).read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = child.kill();
        bail!("{cmd:?} did not become ready: {}", std::fs::read_to_string(log).unwrap_or_default());
    }
    Ok(child)
}

/// A child process killed and reaped on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the qsockd `child` answers a ping on `socket` (bounded:
/// 30 s, room for a large `class_pool`); fails with its `log` if it exits first.
pub(crate) fn await_daemon(child: &mut Child, socket: &Path, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while qsock_ping(socket).is_err() {
        if let Some(st) = child.try_wait()? {
            bail!("qsockd exited ({st}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        if Instant::now() > deadline {
            bail!("qsockd did not come up within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Pings the qsockd at `path`.
pub(crate) fn qsock_ping(path: &Path) -> Result<()> {
    qsock::Client::connect(path)?.call(&qsock::proto::Request::Ping, None)?;
    Ok(())
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.stop_daemon();
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
        let _ = remove_tree(&self.pin_root);
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.state_root);
    }
}

/// Removes a bpffs directory tree (bpffs has no recursive remove of its own).
pub(crate) fn remove_tree(p: &Path) -> std::io::Result<()> {
    if p.is_dir() {
        for e in std::fs::read_dir(p)? {
            remove_tree(&e?.path())?;
        }
        std::fs::remove_dir(p)
    } else if p.exists() {
        std::fs::remove_file(p)
    } else {
        Ok(())
    }
}

//! A multi-homed host for the Socket Intents tests and experiments: a
//! `host` namespace with several links to a `server` namespace, each link a
//! veth path with its own downstream rate (tbf on the server's end) and,
//! optionally, a one-way delay added by [`delay-line`](../bin/delay-line)
//! in a `wire` namespace of its own (this kernel has no netem). The server
//! answers on one service address, [`SERVICE_IP`], reachable over every
//! link; the host's main table sends everything over the first link, so
//! only qsockd's policy routing makes another link carry a socket.
//!
//! Link `i` uses 10.(81+i).0.0/24: the host's end is `.2`, the server's `.1`.
//! Drop stops the daemon, the delay lines and the web server, and deletes
//! the namespaces and the bed's directories.
use std::{
    fs::File,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{remove_tree, run, spawn_ready, workspace_bin, KillOnDrop, BED_SEQ};

/// The server's address on every link's far side (on its loopback).
pub const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);

/// One link between host and server.
#[derive(Clone, Debug)]
pub struct LinkSpec {
    /// Interface name on the host (≤ 15 bytes), e.g. `"dsl"`.
    pub name: String,
    /// Downstream rate (server → host), bit/s.
    pub down_bps: u64,
    /// Upstream rate (host → server): qsockd's root HTB on the host, bit/s.
    pub up_bps: u64,
    /// One-way delay added in each direction, µs (0: no delay line).
    pub one_way_delay_us: u64,
    /// Interface type for qsockd's config (`wired`, `wifi`, `cellular`).
    pub kind: &'static str,
    /// Metered, for qsockd's config.
    pub metered: bool,
    /// Random loss the delay line adds, parts per million of frames in
    /// each direction (0: none; needs `one_way_delay_us > 0`).
    pub loss_ppm: u32,
}

/// See the module docs.
pub struct MultiHomed {
    /// Namespace of the multi-homed host (qsockd and clients run here).
    pub host_ns: String,
    /// Namespace of the server.
    pub server_ns: String,
    wire_ns: Vec<String>,
    /// The links, in order.
    pub links: Vec<LinkSpec>,
    /// Scratch directory (daemon socket, config, logs, web root).
    pub dir: PathBuf,
    /// bpffs directory for the bed's pinned maps.
    pub pin_root: PathBuf,
    daemon: Option<Child>,
    helpers: Vec<KillOnDrop>,
    web_server: Option<Child>,
}

impl MultiHomed {
    /// Builds the namespaces and links; `tag` (≤ 6 chars) shows in the names.
    pub fn new(tag: &str, links: Vec<LinkSpec>) -> Result<Self> {
        let id = format!("{}x{}", std::process::id(), BED_SEQ.fetch_add(1, Ordering::Relaxed));
        let tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric()).take(6).collect();
        remove_stale(&tag);
        let host_ns = format!("qs-{tag}-{id}-h");
        let server_ns = format!("qs-{tag}-{id}-s");
        let wire_ns = (0..links.len()).map(|i| format!("qs-{tag}-{id}-w{i}")).collect();
        let dir = std::env::temp_dir().join(format!("qsock-mh-{tag}-{id}"));
        let pin_root = PathBuf::from("/sys/fs/bpf").join(format!("qsock-mh-{tag}-{id}"));
        let mut bed = Self { host_ns, server_ns, wire_ns, links, dir, pin_root, daemon: None, helpers: Vec::new(), web_server: None };
        bed.build().with_context(|| format!("building multi-homed bed {tag}"))?;
        Ok(bed)
    }

    /// Host address on link `i`.
    pub fn host_ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 81 + i as u8, 0, 2)
    }

    /// Server address on link `i` (the host's gateway on it).
    pub fn gateway_ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 81 + i as u8, 0, 1)
    }

    fn ip(&self, ns: &str, args: &[&str]) -> Result<()> {
        run(Command::new("ip").arg("-n").arg(ns).args(args))?;
        Ok(())
    }

    fn sh(&self, ns: &str, script: &str) -> Result<()> {
        run(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]))?;
        Ok(())
    }

    fn build(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        for ns in [&self.host_ns, &self.server_ns] {
            run(Command::new("ip").args(["netns", "add", ns]))?;
        }
        let links = self.links.clone();
        for (i, l) in links.iter().enumerate() {
            let srv = format!("s{}", l.name);
            if l.one_way_delay_us == 0 {
                if l.loss_ppm > 0 {
                    bail!("link {}: loss needs a delay line (give it a one_way_delay_us)", l.name);
                }
                run(Command::new("ip").args(["link", "add", &l.name, "netns", &self.host_ns, "type", "veth", "peer", "name", &srv, "netns", &self.server_ns]))?;
            } else {
                let w = self.wire_ns[i].clone();
                run(Command::new("ip").args(["netns", "add", &w]))?;
                run(Command::new("ip").args(["link", "add", &l.name, "netns", &self.host_ns, "type", "veth", "peer", "name", "wh", "netns", &w]))?;
                run(Command::new("ip").args(["link", "add", &srv, "netns", &self.server_ns, "type", "veth", "peer", "name", "ws", "netns", &w]))?;
                // Frames cross user space: they must be whole (checksummed, one MTU each).
                for (ns, dev) in [(&self.host_ns, &l.name), (&self.server_ns, &srv), (&w, &"wh".to_string()), (&w, &"ws".to_string())] {
                    run(Command::new("ip").args(["netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off"]))
                        .context("ethtool (scripts/setup.sh --demo installs it)")?;
                }
                self.ip(&w, &["link", "set", "wh", "up"])?;
                self.ip(&w, &["link", "set", "ws", "up"])?;
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &w])
                    .arg(workspace_bin("delay-line")?)
                    .args(["--a", "wh", "--b", "ws", "--delay-us", &l.one_way_delay_us.to_string()])
                    .args(["--loss-ppm", &l.loss_ppm.to_string(), "--seed", &(2 * i as u64 + 1).to_string()]);
                self.helpers.push(KillOnDrop(spawn_ready(c, &self.dir.join(format!("delay-{}.log", l.name)))?));
            }
            self.ip(&self.host_ns, &["addr", "add", &format!("{}/24", Self::host_ip(i)), "dev", &l.name])?;
            self.ip(&self.server_ns, &["addr", "add", &format!("{}/24", Self::gateway_ip(i)), "dev", &srv])?;
            self.ip(&self.host_ns, &["link", "set", &l.name, "up"])?;
            self.ip(&self.server_ns, &["link", "set", &srv, "up"])?;
            self.set_down_rate(i, l.down_bps)?;
        }
        for ns in [&self.host_ns, &self.server_ns] {
            self.ip(ns, &["link", "set", "lo", "up"])?;
        }
        self.ip(&self.server_ns, &["addr", "add", &format!("{SERVICE_IP}/32"), "dev", "lo"])?;
        self.ip(&self.host_ns, &["route", "add", "default", "via", &Self::gateway_ip(0).to_string()])?;
        // Replies to a source address come back over that address's link; loose checks only.
        self.sh(&self.host_ns, "for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done")?;
        Ok(())
    }

    /// Sets link `i`'s downstream rate (tbf on the server's end; 100 ms of queue).
    pub fn set_down_rate(&self, i: usize, bps: u64) -> Result<()> {
        let burst = (bps / 8 / 500).max(3028); // 2 ms at the rate, at least two frames
        let args = [
            "qdisc",
            "replace",
            "dev",
            &format!("s{}", self.links[i].name),
            "root",
            "tbf",
            "rate",
            &format!("{bps}bit"),
            "burst",
            &burst.to_string(),
            "latency",
            "100ms",
        ];
        run(Command::new("tc").arg("-n").arg(&self.server_ns).args(args))?;
        Ok(())
    }

    /// A downstream bottleneck of `bps` bit/s inside link `i`'s wire, a router's
    /// queue (tbf, 100 ms) between the delay line and the host: senders on the
    /// server see its drops as loss, where the server's own tbf
    /// ([`MultiHomed::set_down_rate`]) pushes back on their sockets instead.
    /// Errors: the link has no wire (`one_way_delay_us = 0`), tc failed.
    pub fn set_wire_down_rate(&self, i: usize, bps: u64) -> Result<()> {
        if self.links[i].one_way_delay_us == 0 {
            bail!("link {} has no wire (give it a one_way_delay_us)", self.links[i].name);
        }
        let burst = (bps / 8 / 500).max(3028).to_string();
        let rate = format!("{bps}bit");
        let args = ["qdisc", "replace", "dev", "wh", "root", "tbf", "rate", &rate, "burst", &burst, "latency", "100ms"];
        run(Command::new("tc").arg("-n").arg(&self.wire_ns[i]).args(args))?;
        Ok(())
    }

    /// Takes link `i` down (`false`) or up on the host's side.
    pub fn set_link(&self, i: usize, up: bool) -> Result<()> {
        self.ip(&self.host_ns, &["link", "set", &self.links[i].name, if up { "up" } else { "down" }])
    }

    /// Blackholes link `i` (`true`) or lifts it: the link's wire drops
    /// every frame in both directions while host and server keep their
    /// interfaces up (no link event, no local error to either sender: what
    /// a dead cellular bearer or a failed middlebox looks like). Done in the
    /// link's wire namespace, between the delay line and the veths, with a
    /// `pfifo limit 0` root on both wire ends (this kernel has no tc drop
    /// action). Errors: the link has no wire (`one_way_delay_us = 0`), tc failed.
    pub fn set_blackhole(&self, i: usize, on: bool) -> Result<()> {
        if self.links[i].one_way_delay_us == 0 {
            bail!("link {} has no wire to blackhole (give it a one_way_delay_us)", self.links[i].name);
        }
        for dev in ["wh", "ws"] {
            let mut c = Command::new("tc");
            c.args(["-n", &self.wire_ns[i], "qdisc"]);
            if on {
                c.args(["replace", "dev", dev, "root", "pfifo", "limit", "0"]);
            } else {
                c.args(["del", "dev", dev, "root"]);
            }
            run(&mut c)?;
        }
        Ok(())
    }

    /// Path of the bed's qsockd socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("qsockd.sock")
    }

    /// qsockd's config for this bed: every link managed, with its gateway and,
    /// as the operator's prior until qsockd measures it, the RTT the delay line makes.
    pub fn config_toml(&self, default_policy: &str) -> String {
        let mut s = format!("default_policy = \"{default_policy}\"\n");
        for (i, l) in self.links.iter().enumerate() {
            s += &format!(
                "\n[[interfaces]]\nname = \"{}\"\nnominal_down_bps = {}\nnominal_up_bps = {}\nkind = \"{}\"\nmetered = {}\ncost = {}\ngateway = \"{}\"\nexpected_rtt_ms = {}\n",
                l.name,
                l.down_bps,
                l.up_bps,
                l.kind,
                l.metered,
                if l.metered { 10 } else { 1 },
                Self::gateway_ip(i),
                (2 * l.one_way_delay_us).div_ceil(1000)
            );
        }
        s
    }

    /// Starts `qsockd run` in the host namespace with [`MultiHomed::config_toml`]
    /// and waits until it answers (bounded: 30 s). Log: `dir/qsockd.log`.
    pub fn start_daemon(&mut self, default_policy: &str) -> Result<()> {
        self.start_daemon_with(default_policy, "")
    }

    /// [`MultiHomed::start_daemon`] with `extra` TOML appended to the config
    /// (e.g. more `[[interfaces]]` entries).
    pub fn start_daemon_with(&mut self, default_policy: &str, extra: &str) -> Result<()> {
        let cfg = self.dir.join("qsockd.toml");
        std::fs::write(&cfg, self.config_toml(default_policy) + extra)?;
        let log = File::options().create(true).append(true).open(self.dir.join("qsockd.log"))?;
        let mut c = Command::new(workspace_bin("qsockd")?);
        c.arg("--netns").arg(&self.host_ns).arg("--config").arg(&cfg).arg("--socket").arg(self.socket_path());
        c.arg("--state-root").arg(self.dir.join("state")).arg("--pin-root").arg(&self.pin_root);
        let (socket, log_path) = (self.socket_path(), self.dir.join("qsockd.log"));
        let child = self.daemon.insert(c.arg("run").stdout(Stdio::null()).stderr(log).spawn()?);
        crate::await_daemon(child, &socket, &log_path)
    }

    /// Stops the daemon (SIGTERM, then waits: it removes its routing).
    pub fn stop_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }

    /// Kills the daemon (SIGKILL: nothing of it runs its shutdown).
    pub fn kill_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A client of this bed's qsockd.
    pub fn client(&self) -> Result<qsock::Client> {
        Ok(qsock::Client::connect(&self.socket_path())?)
    }

    /// A command running `program` in the host namespace, talking to this bed's qsockd.
    pub fn host_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host_ns]).arg(program).env("QSOCK_SOCKET", self.socket_path());
        c
    }

    /// Runs `f` on a thread in the host namespace.
    pub fn in_host<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        crate::in_namespace(&self.host_ns, f)
    }

    /// Runs `f` on a thread in the server namespace.
    pub fn in_server<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        crate::in_namespace(&self.server_ns, f)
    }

    /// Bytes the host sent (`tx`) and received (`rx`) on link `i` so far.
    pub fn link_bytes(&self, i: usize) -> Result<(u64, u64)> {
        let out = run(Command::new("ip").args(["-n", &self.host_ns, "-j", "-s", "link", "show", "dev", &self.links[i].name]))?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let s = &v[0]["stats64"];
        Ok((s["tx"]["bytes"].as_u64().context("tx bytes")?, s["rx"]["bytes"].as_u64().context("rx bytes")?))
    }

    /// `ip <args>` in the host namespace; returns stdout.
    pub fn ip_host(&self, args: &[&str]) -> Result<String> {
        let out = run(Command::new("ip").arg("-n").arg(&self.host_ns).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops nginx: SIGTERM to the master, which stops its workers and
    /// exits (SIGKILL would leave the workers running); SIGKILL after 5 s.
    pub fn stop_web_server(&mut self) {
        let Some(mut c) = self.web_server.take() else { return };
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Starts nginx (Debian's) in the server namespace on port 80, serving
    /// `root`; stopped on drop. Waits until it accepts connections (bounded: 10 s).
    pub fn start_web_server(&mut self, root: &std::path::Path) -> Result<()> {
        self.start_web_server_under(root, &[])
    }

    /// [`MultiHomed::start_web_server`] with nginx run by `launcher` (a
    /// program and its arguments that execs the rest, e.g. `qsock-run
    /// --multipath --`).
    pub fn start_web_server_under(&mut self, root: &std::path::Path, launcher: &[std::ffi::OsString]) -> Result<()> {
        let conf = self.dir.join("nginx.conf");
        let d = self.dir.display();
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  sendfile on;\n  keepalive_requests 10000;\n  client_body_temp_path {d}/nginx-body;\n  proxy_temp_path {d}/nginx-proxy;\n  \
                 fastcgi_temp_path {d}/nginx-fcgi;\n  uwsgi_temp_path {d}/nginx-uwsgi;\n  scgi_temp_path {d}/nginx-scgi;\n  \
                 server {{ listen {SERVICE_IP}:80; root {}; }}\n}}\n",
                root.display()
            ),
        )?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.server_ns])
            .args(launcher)
            .args(["nginx", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(File::create(self.dir.join("nginx.log"))?);
        self.web_server = Some(c.spawn().context("nginx (scripts/setup.sh --demo installs it)")?);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.in_server(|| std::net::TcpStream::connect((SERVICE_IP, 80)).is_ok())? {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen within 10 s: {}", std::fs::read_to_string(self.dir.join("nginx-error.log")).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Removes what beds tagged `tag` of processes that no longer run left
/// behind (a run killed before its beds were dropped): the processes still
/// in their namespaces (SIGTERM, so nginx stops its workers, then SIGKILL),
/// the namespaces, the scratch and pin directories.
pub fn remove_stale(tag: &str) {
    let prefix = format!("qs-{tag}-");
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else { continue };
        let Some((pid, _)) = rest.split_once('x') else { continue };
        if pid.parse::<u32>().is_err() || std::path::Path::new("/proc").join(pid).exists() {
            continue;
        }
        let pids = Command::new("ip").args(["netns", "pids", &name]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        for sig in [nix::sys::signal::Signal::SIGTERM, nix::sys::signal::Signal::SIGKILL] {
            for p in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        if let Some(id) = rest.rsplit_once('-').map(|(id, _)| id) {
            let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("qsock-mh-{tag}-{id}")));
            let _ = remove_tree(&PathBuf::from("/sys/fs/bpf").join(format!("qsock-mh-{tag}-{id}")));
        }
    }
}

impl Drop for MultiHomed {
    fn drop(&mut self) {
        self.stop_daemon();
        self.stop_web_server();
        self.helpers.clear();
        for ns in self.wire_ns.iter().chain([&self.host_ns, &self.server_ns]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
        let _ = remove_tree(&self.pin_root);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

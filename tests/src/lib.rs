//! Helpers shared by qsock's integration tests (`tests/`): a test bed with
//! qsockd running, sockets on both sides, and readers of tc's counters.
#![warn(missing_docs)]
use std::{
    io::Read,
    net::{SocketAddr, UdpSocket},
    os::fd::AsFd,
    time::{Duration, Instant},
};

pub mod figures;
pub mod http;
pub mod mptcp;
pub mod session;

use anyhow::{bail, Result};
use qsock::{Client, PacketFlags, QosParams};
use testbed::{Testbed, CLIENT_IP, SERVER_IP};

/// Payload of the end-of-test marker: sent non-droppable on the same socket
/// after the data, it arrives after every packet the data path let through
/// (one class, one FIFO), so the receiver knows it has seen everything.
pub const MARKER: &[u8] = b"qsock-test-end";

/// Whether a timed receive's error `e` means only that nothing arrived
/// yet: the timeout passed (`EAGAIN`), or the call was interrupted
/// (`EINTR`). A receive with `SO_RCVTIMEO` fails with `EINTR` when the
/// process was stopped and continued (a frozen cgroup, a debugger, job
/// control) even without a signal handler (signal(7)).
pub fn nothing_yet(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted)
}

/// [`Read::read`] on `r` into `buf`, again while it is interrupted (see
/// [`nothing_yet`]); other errors, a timeout included, are returned.
pub fn read_some(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Panics unless running as root (the tests need namespaces, tc and BPF).
pub fn require_root() {
    assert!(nix::unistd::geteuid().is_root(), "qsock integration tests need root (namespaces, tc, BPF)");
}

/// True (after saying so on stderr) when not running as root: the caller,
/// a test that needs namespaces, tc and BPF, returns at once. `cargo test`
/// as a user then passes these tests as skipped instead of failing them;
/// `scripts/test.sh` runs them as root.
pub fn skip_unless_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    eprintln!("skipped: needs root (network namespaces, tc, BPF); run scripts/test.sh as root");
    true
}

/// A test bed with qsock initialised on the server's egress at `link_rate`
/// and qsockd running, plus a client connected to it.
pub struct Bed {
    /// The namespaces and daemon.
    pub bed: Testbed,
    /// Connection to the bed's qsockd.
    pub client: Client,
}

impl Bed {
    /// Builds the bed; `tag` names it.
    pub fn new(tag: &str, link_rate: &str) -> Result<Self> {
        require_root();
        let bed = Testbed::new(tag)?;
        bed.init(link_rate)?;
        bed.start_daemon()?;
        let client = Client::connect(&bed.socket_path())?;
        Ok(Self { bed, client })
    }

    /// A UDP socket in the server namespace.
    pub fn sender(&self) -> Result<UdpSocket> {
        self.bed.udp_socket(&self.bed.server_ns, SocketAddr::new(SERVER_IP.into(), 0))
    }

    /// A UDP socket in the client namespace and its address.
    pub fn receiver(&self) -> Result<(UdpSocket, SocketAddr)> {
        let s = self.bed.udp_socket(&self.bed.client_ns, SocketAddr::new(CLIENT_IP.into(), 0))?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        let a = s.local_addr()?;
        Ok((s, a))
    }

    /// Resolves ARP towards `to` (one datagram from a plain sender, read
    /// from `rx`), so measured traffic never waits in the neighbour queue.
    /// Errors if the datagram does not arrive (bounded: 20 s).
    pub fn warm_up(&self, to: SocketAddr, rx: &UdpSocket) -> Result<()> {
        self.sender()?.send_to(MARKER, to)?;
        recv_until_marker(rx)?;
        Ok(())
    }

    /// Parameters for a guaranteed rate on the bed's server device.
    pub fn rate(&self, rate_bps: u64) -> QosParams {
        QosParams::rate(self.bed.server_dev.clone(), rate_bps)
    }

    /// A guaranteed rate that may not borrow (ceiling = rate): the class
    /// gets exactly `rate_bps` even on an idle link, so deadlines come under
    /// real pressure. (A class that may borrow is predicted at its ceiling
    /// until the data path has measured what it gets: on an idle link it
    /// delivers what a plain socket would.)
    pub fn capped_rate(&self, rate_bps: u64) -> QosParams {
        let attrs = qsock::RateAttrs { ceil_bps: Some(rate_bps), ..qsock::RateAttrs::guaranteed(rate_bps) };
        QosParams { scheduler: qsock::SchedulerParams::Rate(attrs), ..self.rate(rate_bps) }
    }

    /// Whether class `classid` (e.g. "1:10") serves a socket: it exists and
    /// is not parked (qsockd keeps released classes parked at 8 kbit/s for
    /// the next socket instead of deleting them).
    pub fn class_in_use(&self, classid: &str) -> bool {
        let out = self.bed.tc_server(&["class", "show", "dev", &self.bed.server_dev]).unwrap_or_default();
        out.lines().any(|l| l.starts_with(&format!("class htb {classid} ")) && !l.contains(" rate 8Kbit "))
    }

    /// Sent packets of class `classid` (e.g. "1:10") from `tc -s class show`.
    pub fn class_packets(&self, classid: &str) -> Result<u64> {
        let out = self.bed.tc_server(&["-s", "class", "show", "dev", &self.bed.server_dev])?;
        let mut lines = out.lines();
        while let Some(l) = lines.next() {
            if l.starts_with(&format!("class htb {classid} ")) {
                let sent = lines.next().unwrap_or_default();
                // " Sent 114620 bytes 110 pkt (dropped 0, ...)"
                let w: Vec<&str> = sent.split_whitespace().collect();
                if let Some(i) = w.iter().position(|x| *x == "pkt") {
                    return Ok(w[i - 1].parse()?);
                }
            }
        }
        bail!("class {classid} not found in:\n{out}")
    }
}

/// Sends the end marker on `tx` (non-droppable) to `to`.
pub fn send_marker(tx: &UdpSocket, to: SocketAddr) -> Result<()> {
    let flags = PacketFlags { drop_priority: qsock::DropPriority::NON_DROPPABLE, ..Default::default() };
    qsock::qsendto(tx.as_fd(), MARKER, &to, &flags)?;
    Ok(())
}

/// Receives datagrams until [`MARKER`] arrives (bounded: 20 s); returns
/// the payloads before it.
pub fn recv_until_marker(rx: &UdpSocket) -> Result<Vec<Vec<u8>>> {
    let give_up = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match rx.recv(&mut buf) {
            Ok(n) if &buf[..n] == MARKER => return Ok(got),
            Ok(n) => got.push(buf[..n].to_vec()),
            Err(e) if nothing_yet(&e) => {
                if Instant::now() > give_up {
                    bail!("end marker did not arrive within 20 s ({} datagrams before)", got.len());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Prints `name: median M<unit>, range LO–HI<unit> over N runs` for
/// `values` (one figure per repetition of a benchmark), with `decimals`
/// digits. Panics on an empty slice.
pub fn print_spread(name: &str, values: &[f64], unit: &str, decimals: usize) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let (lo, med, hi) = (v[0], v[v.len() / 2], v[v.len() - 1]);
    println!("{name}: median {med:.decimals$}{unit}, range {lo:.decimals$}–{hi:.decimals$}{unit} over {} runs", v.len());
}

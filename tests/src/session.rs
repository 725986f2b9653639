//! qsock-session ends for the session tests and benchmarks (issue 17) on a
//! [`MultiHomed`] bed: a two-link bed with chosen rates, delays and losses,
//! session and plain-TCP downloads that measure goodput, and the messages
//! of an experiment, which carry their number and send time so the
//! receiver can judge order and latency.
use std::{
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use qsock_session::{SessionConfig, SessionInfo, SessionSocket};
use testbed::multihomed::{LinkSpec, MultiHomed, SERVICE_IP};

/// One link of [`two_link_bed`]: rates in bit/s, one-way delay in µs,
/// random loss in parts per million of frames, each direction.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// Server → host, bit/s (tbf at the server's end).
    pub down_bps: u64,
    /// Host → server, bit/s (qsockd's root HTB on the host).
    pub up_bps: u64,
    /// One-way delay, µs (> 0: every link has a delay line, so it can be blackholed).
    pub one_way_us: u64,
    /// Random loss, ppm of frames each way.
    pub loss_ppm: u32,
}

/// A bed of two wired links, `wan0` and `wan1`, each through a delay line.
/// Panics when the bed cannot be built.
pub fn two_link_bed(tag: &str, links: [Link; 2]) -> MultiHomed {
    let spec = |i: usize, l: Link| LinkSpec {
        name: format!("wan{i}"),
        down_bps: l.down_bps,
        up_bps: l.up_bps,
        one_way_delay_us: l.one_way_us,
        kind: "wired",
        metered: false,
        loss_ppm: l.loss_ppm,
    };
    MultiHomed::new(tag, vec![spec(0, links[0]), spec(1, links[1])]).unwrap()
}

/// A session download measured by [`session_download`].
#[derive(Debug)]
pub struct Download {
    /// Goodput of the measured part, bit/s.
    pub goodput_bps: f64,
    /// The receiver's session figures at the end of the measurement.
    pub info: SessionInfo,
}

/// A session download on `b`: the server (its namespace, [`SERVICE_IP`]:`port`)
/// writes full-size messages as fast as the session takes them; the host reads
/// for `warmup`, then for `measure`. Panics when the session fails.
pub fn session_download(b: &MultiHomed, port: u16, cfg: SessionConfig, warmup: Duration, measure: Duration) -> Download {
    let server_cfg = cfg.clone();
    let l = b.in_server(move || SessionSocket::new(server_cfg).unwrap().bind(SocketAddr::new(SERVICE_IP.into(), port)).unwrap()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ns = b.server_ns.clone();
    let writer_stop = stop.clone();
    let writer = std::thread::spawn(move || {
        testbed::in_namespace(&ns, move || {
            let s = l.accept().unwrap();
            let m = vec![9u8; qsock_session::MAX_MESSAGE_BYTES];
            while !writer_stop.load(Ordering::Relaxed) {
                if s.write(&m, &qsock::PacketFlags::default()).is_err() {
                    break;
                }
            }
            let _ = s.close();
        })
        .unwrap()
    });
    let s = b.in_host(move || SessionSocket::new(cfg).unwrap().connect(SocketAddr::new(SERVICE_IP.into(), port)).unwrap()).unwrap();
    let read_until = |until: Instant| {
        let mut bytes = 0u64;
        while Instant::now() < until {
            if let Ok(Some(m)) = s.read_timeout(Duration::from_millis(100)) {
                bytes += m.len() as u64;
            }
        }
        bytes
    };
    read_until(Instant::now() + warmup);
    let bytes = read_until(Instant::now() + measure);
    let info = s.info();
    stop.store(true, Ordering::Relaxed);
    // The server's close waits until the host acknowledged what it wrote: keep reading meanwhile.
    while !writer.is_finished() {
        let _ = s.read_timeout(Duration::from_millis(10));
    }
    writer.join().unwrap();
    let _ = s.close();
    Download { goodput_bps: bytes as f64 * 8.0 / measure.as_secs_f64(), info }
}

/// A plain TCP connection of the host from link `i`'s address to [`SERVICE_IP`]:`port`.
/// Panics when it cannot connect.
pub fn connect_plain(b: &MultiHomed, i: usize, port: u16) -> TcpStream {
    b.in_host(move || {
        use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrStorage};
        let s = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
        bind(s.as_raw_fd(), &SockaddrStorage::from(SocketAddr::new(MultiHomed::host_ip(i).into(), 0))).unwrap();
        connect(s.as_raw_fd(), &SockaddrStorage::from(SocketAddr::new(SERVICE_IP.into(), port))).unwrap();
        TcpStream::from(s)
    })
    .unwrap()
}

/// Goodput of a plain TCP download over link `i` alone (per-source routing,
/// the server writing as fast as it can), bit/s, over `measure` after
/// `warmup`. Panics when the download fails.
pub fn tcp_download(b: &MultiHomed, i: usize, port: u16, warmup: Duration, measure: Duration) -> f64 {
    crate::mptcp::per_source_routing(b, false);
    crate::mptcp::source(b, port);
    let mut s = connect_plain(b, i, port);
    let t0 = Instant::now();
    crate::mptcp::read_window(&mut s, t0, t0 + warmup);
    let from = Instant::now();
    let (bytes, _) = crate::mptcp::read_window(&mut s, from, from + measure);
    bytes as f64 * 8.0 / measure.as_secs_f64()
}

/// Bytes of an experiment message's head: its number and send time.
pub const STAMP_BYTES: usize = 16;

/// A message of `len` bytes (≥ [`STAMP_BYTES`]): number `i`, send time
/// `sent_ns` (CLOCK_MONOTONIC, shared by every namespace of the host), then
/// bytes that depend on `i`, so the receiver can check it is intact.
pub fn stamped(i: u64, sent_ns: u64, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(len);
    m.extend(i.to_be_bytes());
    m.extend(sent_ns.to_be_bytes());
    m.extend((0..len.saturating_sub(STAMP_BYTES)).map(|k| (i as usize * 31 + k) as u8));
    m
}

/// The number and send time of a [`stamped`] message, `None` if it is not
/// one or its body is not the body of that number.
pub fn unstamp(m: &[u8]) -> Option<(u64, u64)> {
    if m.len() < STAMP_BYTES {
        return None;
    }
    let i = u64::from_be_bytes(m[..8].try_into().ok()?);
    let sent = u64::from_be_bytes(m[8..16].try_into().ok()?);
    m[STAMP_BYTES..].iter().enumerate().all(|(k, b)| *b == (i as usize * 31 + k) as u8).then_some((i, sent))
}

/// One message as a [`receive_stamped`] receiver's application got it.
#[derive(Clone, Debug)]
pub struct Arrival {
    /// When the application read it.
    pub at: Instant,
    /// The same, CLOCK_MONOTONIC ns (the [`stamped`] send time's clock).
    pub at_ns: u64,
    /// Its number and send time; `None`: not a [`stamped`] message, or damaged.
    pub stamp: Option<(u64, u64)>,
    /// Its length, bytes.
    pub bytes: usize,
}

/// A session listener on the server at [`SERVICE_IP`]:`port`; the first
/// session's messages, until its peer closes it, come back on the channel
/// at its end (a read waiting 30 s also ends it). Panics when the listener
/// cannot be bound or the session not accepted.
pub fn receive_stamped(b: &MultiHomed, port: u16, cfg: SessionConfig) -> mpsc::Receiver<Vec<Arrival>> {
    let (tx, rx) = mpsc::channel();
    let l = b.in_server(move || SessionSocket::new(cfg).unwrap().bind(SocketAddr::new(SERVICE_IP.into(), port)).unwrap()).unwrap();
    let ns = b.server_ns.clone();
    std::thread::spawn(move || {
        testbed::in_namespace(&ns, move || {
            let s = l.accept().unwrap();
            let mut got = Vec::new();
            while let Ok(Some(m)) = s.read_timeout(Duration::from_secs(30)) {
                got.push(Arrival { at: Instant::now(), at_ns: qsock::monotonic_now_ns(), stamp: unstamp(&m), bytes: m.len() });
            }
            let _ = s.close();
            let _ = tx.send(got);
        })
        .unwrap();
    });
    rx
}

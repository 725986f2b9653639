//! MPTCP ends for the multipath tests and benchmarks, on a
//! [`MultiHomed`] bed: listeners on the server's service address, a
//! connecting client on the host, and a reader that measures stalls.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use testbed::multihomed::{LinkSpec, MultiHomed, SERVICE_IP};

/// A new `IPPROTO_MPTCP` stream socket in the calling thread's namespace.
/// Panics when the kernel refuses one.
pub fn mptcp_fd() -> OwnedFd {
    // SAFETY: socket(2), checked and owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, qsock::IPPROTO_MPTCP) };
    assert!(fd >= 0, "MPTCP socket: {}", std::io::Error::last_os_error());
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A listener on [`SERVICE_IP`]:`port` in the bed's server namespace, MPTCP or plain TCP.
pub fn listener(b: &MultiHomed, port: u16, mptcp: bool) -> TcpListener {
    b.in_server(move || {
        if !mptcp {
            return TcpListener::bind((SERVICE_IP, port)).unwrap();
        }
        let l = TcpListener::from(mptcp_fd());
        let sa = nix::sys::socket::SockaddrStorage::from(SocketAddr::new(SERVICE_IP.into(), port));
        nix::sys::socket::bind(l.as_raw_fd(), &sa).unwrap();
        nix::sys::socket::listen(&l, nix::sys::socket::Backlog::new(16).unwrap()).unwrap();
        l
    })
    .unwrap()
}

/// An MPTCP listener on `port` that sends to each connection until it
/// closes (a download), 16 KiB a write.
pub fn source(b: &MultiHomed, port: u16) {
    let l = listener(b, port, true);
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut c = c;
                let chunk = vec![5u8; 16 * 1024];
                while c.write_all(&chunk).is_ok() {}
            });
        }
    });
}

/// An MPTCP socket of the host namespace connected to [`SERVICE_IP`]:`port`.
pub fn connect(b: &MultiHomed, port: u16) -> TcpStream {
    connect_with_rcvbuf(b, port, None)
}

/// [`connect`] with `SO_RCVBUF` set to `rcvbuf` bytes before it connects
/// (the kernel doubles it and stops autotuning); `None`: autotuned. Benches
/// take it from an environment variable to measure what a clamped receive
/// window changes.
pub fn connect_with_rcvbuf(b: &MultiHomed, port: u16, rcvbuf: Option<usize>) -> TcpStream {
    b.in_host(move || {
        let fd = mptcp_fd();
        if let Some(n) = rcvbuf {
            nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::RcvBuf, &n).expect("SO_RCVBUF");
        }
        let sa = nix::sys::socket::SockaddrStorage::from(SocketAddr::new(SERVICE_IP.into(), port));
        nix::sys::socket::connect(fd.as_raw_fd(), &sa).expect("connect");
        TcpStream::from(fd)
    })
    .unwrap()
}

/// Reads from `s` until `until`; returns the bytes read after `from` and
/// the longest time without data between `from` and `until` (the stall).
/// Panics if the stream ends or fails.
pub fn read_window(s: &mut TcpStream, from: Instant, until: Instant) -> (u64, Duration) {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut bytes, mut last, mut longest) = (0u64, from, Duration::ZERO);
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    while Instant::now() < until {
        match s.read(&mut buf) {
            Ok(0) => panic!("the download ended"),
            Ok(n) => {
                let now = Instant::now();
                if now > from {
                    bytes += n as u64;
                    longest = longest.max(now - last.max(from));
                    last = now;
                }
            }
            Err(e) if crate::nothing_yet(&e) => {}
            Err(e) => panic!("the download failed: {e}"),
        }
    }
    (bytes, longest.max(Instant::now() - last.max(from)))
}

/// The issue's two-link bed (issue 16, item 5): dsl 6 Mbit/s down at
/// 10 ms RTT, lte 12 Mbit/s down at 70 ms (cellular, metered), each through
/// a delay line; MPTCP limits of 4 subflows and 4 accepted addresses on
/// both ends. Panics when the bed cannot be built.
pub fn issue_bed(tag: &str) -> MultiHomed {
    let links = vec![
        LinkSpec { name: "dsl".into(), down_bps: 6_000_000, up_bps: 100_000_000, one_way_delay_us: 5_000, kind: "wired", metered: false, loss_ppm: 0 },
        LinkSpec { name: "lte".into(), down_bps: 12_000_000, up_bps: 100_000_000, one_way_delay_us: 35_000, kind: "cellular", metered: true, loss_ppm: 0 },
    ];
    let b = MultiHomed::new(tag, links).unwrap();
    for ns in [&b.host_ns, &b.server_ns] {
        testbed::run(std::process::Command::new("ip").args(["-n", ns, "mptcp", "limits", "set", "subflows", "4", "add_addr_accepted", "4"])).unwrap();
    }
    b
}

/// What qsockd installs, for the variants without it: a routing table per
/// source address of the host; with `endpoint`, the in-kernel path
/// manager's `subflow` endpoint on the second link (id 2). Panics when
/// `ip` fails.
pub fn per_source_routing(b: &MultiHomed, endpoint: bool) {
    per_source_routing_with(b, endpoint.then_some(&["subflow"][..]));
}

/// [`per_source_routing`] with the second link's endpoint flags given
/// (e.g. `["subflow", "backup"]`: the in-kernel path manager opens it as
/// a backup subflow); `None`: no endpoint. Panics when `ip` fails.
pub fn per_source_routing_with(b: &MultiHomed, endpoint_flags: Option<&[&str]>) {
    for (i, l) in b.links.iter().enumerate() {
        let (src, gw, table) = (MultiHomed::host_ip(i).to_string(), MultiHomed::gateway_ip(i).to_string(), (200 + i).to_string());
        b.ip_host(&["route", "add", "default", "via", &gw, "dev", &l.name, "table", &table]).unwrap();
        b.ip_host(&["rule", "add", "from", &src, "table", &table]).unwrap();
    }
    if let Some(flags) = endpoint_flags {
        let (second, ip) = (&b.links[1].name, MultiHomed::host_ip(1).to_string());
        let mut args = vec!["mptcp", "endpoint", "add", &ip, "dev", second, "id", "2"];
        args.extend_from_slice(flags);
        b.ip_host(&args).unwrap();
    }
}

/// Starts Debian's nginx in the bed's server namespace serving `root`,
/// made MPTCP by `qsock-run --multipath` (the preload library's `socket()`
/// shim). Panics when it does not come up.
pub fn start_mptcp_web_server(b: &mut MultiHomed, root: &std::path::Path) {
    let launcher = testbed::workspace_bin("qsock-run").unwrap();
    b.start_web_server_under(root, &[launcher.into_os_string(), "--multipath".into(), "--".into()]).unwrap();
}

/// Waits until the backup flag of `s`'s established subflow on `interface`
/// is `want`; panics with qsockd's log after 5 s (qsockd changes the flag
/// after a path-manager event, so it may lag the subflow's establishment).
pub fn wait_backup(b: &MultiHomed, s: &TcpStream, interface: &str, want: bool) {
    let t0 = Instant::now();
    loop {
        let c = b.in_host(|| qsock::qsubflows(s)).unwrap().unwrap();
        let flag = c.subflows.iter().find(|x| x.interface.as_deref() == Some(interface) && x.state == qsock::TcpState::Established).and_then(|x| x.backup);
        if flag == Some(want) {
            return;
        }
        let log = std::fs::read_to_string(b.dir.join("qsockd.log")).unwrap_or_default();
        assert!(t0.elapsed() < Duration::from_secs(5), "the subflow on {interface} has backup {flag:?}, want {want}; qsockd:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

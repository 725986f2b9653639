//! Aggregation (issue 16, item 6): one bulk download over both links of the
//! issue's bed, against the sum of each link alone, with qsockd's path
//! manager beside the kernel's own in the same run: `cargo bench -p
//! qsock-tests --bench aggregate` (root; in `scripts/bench.sh`). Links:
//! dsl 6 Mbit/s down at 10 ms RTT, lte 12 Mbit/s at 70 ms; the server is a
//! stock-Linux MPTCP listener writing as fast as it can. Each variant reads
//! for [`WARMUP`] (slow start) and then [`MEASURE`]; the figure is the
//! goodput of the measured part, bit/s. Variants per repetition, each on a
//! fresh bed: plain TCP bound to dsl, plain TCP bound to lte, MPTCP with the
//! in-kernel path manager (`subflow` endpoint on lte), MPTCP with qsockd as
//! path manager, and the same attached to qsockd with a 1 Mbit/s guarantee
//! (each subflow then leaves through its own class on its link: the ACK
//! direction here). Prints each repetition and, per variant, the median and
//! range of goodput and of its ratio to dsl + lte alone of the same
//! repetition (`AGGREGATE_REPS` overrides the repetitions; `AGGREGATE_RCVBUF`
//! gives the MPTCP variants' `SO_RCVBUF`, bytes, instead of autotuning).
use std::{
    net::{SocketAddr, TcpStream},
    os::fd::{AsFd, AsRawFd},
    time::{Duration, Instant},
};

use qsock_tests::mptcp::{connect_with_rcvbuf, issue_bed, per_source_routing, read_window, source};
use testbed::multihomed::{MultiHomed, SERVICE_IP};

/// Repetitions of each variant.
const REPS: usize = 3;
/// Reading before the measurement starts.
const WARMUP: Duration = Duration::from_secs(3);
/// Measured reading.
const MEASURE: Duration = Duration::from_secs(10);
const PORT: u16 = 7300;

/// A plain TCP connection from link `i`'s address.
fn connect_plain(b: &MultiHomed, i: usize) -> TcpStream {
    b.in_host(move || {
        let s =
            nix::sys::socket::socket(nix::sys::socket::AddressFamily::Inet, nix::sys::socket::SockType::Stream, nix::sys::socket::SockFlag::SOCK_CLOEXEC, None)
                .unwrap();
        let local = nix::sys::socket::SockaddrStorage::from(SocketAddr::new(MultiHomed::host_ip(i).into(), 0));
        nix::sys::socket::bind(s.as_raw_fd(), &local).unwrap();
        let remote = nix::sys::socket::SockaddrStorage::from(SocketAddr::new(SERVICE_IP.into(), PORT));
        nix::sys::socket::connect(s.as_raw_fd(), &remote).unwrap();
        TcpStream::from(s)
    })
    .unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    DslAlone,
    LteAlone,
    InKernel,
    Qsockd,
    QsockdAttached,
}

/// Goodput of one variant, bit/s.
fn goodput(v: Variant, rep: usize) -> f64 {
    let mut b = issue_bed(&format!("ag{}{rep}", v as u8));
    match v {
        Variant::DslAlone | Variant::LteAlone => per_source_routing(&b, false),
        Variant::InKernel => per_source_routing(&b, true),
        Variant::Qsockd | Variant::QsockdAttached => b.start_daemon_with("category", "\n[multipath]\nenabled = true\n").unwrap(),
    }
    source(&b, PORT);
    let mut s = match v {
        Variant::DslAlone => connect_plain(&b, 0),
        Variant::LteAlone => connect_plain(&b, 1),
        _ => connect_with_rcvbuf(&b, PORT, rcvbuf()),
    };
    let client = (v == Variant::QsockdAttached).then(|| {
        let c = b.client().unwrap();
        let params = qsock::QosParams { device: None, ..qsock::QosParams::rate("any", 1_000_000) };
        c.attach(s.as_fd(), &params).unwrap();
        c
    });
    let t0 = Instant::now();
    read_window(&mut s, t0, t0 + WARMUP);
    if v != Variant::DslAlone && v != Variant::LteAlone {
        let c = b.in_host(|| qsock::qsubflows(&s)).unwrap().unwrap();
        assert_eq!(c.subflows.len(), 2, "{v:?}: two subflows before the measurement: {c:#?}");
    }
    if let Some(c) = &client {
        let mp = c.info(s.as_fd()).unwrap().multipath.expect("a connection");
        assert!(mp.subflows.iter().all(|x| x.qos.is_ok()), "each subflow has its class: {mp:#?}");
    }
    let from = Instant::now();
    let (bytes, _) = read_window(&mut s, from, from + MEASURE);
    bytes as f64 * 8.0 / MEASURE.as_secs_f64()
}

/// `SO_RCVBUF` of the MPTCP variants (`AGGREGATE_RCVBUF`, bytes); `None`: autotuned.
fn rcvbuf() -> Option<usize> {
    std::env::var("AGGREGATE_RCVBUF").ok().and_then(|v| v.parse().ok())
}

fn main() {
    qsock_tests::require_root();
    let mut figures = qsock_tests::figures::Figures::new("aggregate");
    let reps = std::env::var("AGGREGATE_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(REPS);
    let variants = [Variant::DslAlone, Variant::LteAlone, Variant::InKernel, Variant::Qsockd, Variant::QsockdAttached];
    for rep in 0..reps {
        let g: Vec<f64> = variants.iter().map(|&v| goodput(v, rep)).collect();
        let sum = g[0] + g[1];
        println!(
            "rep {rep}: Mbit/s dsl {:.2}, lte {:.2} (sum {:.2}); in-kernel {:.2}, qsockd {:.2}, qsockd + classes {:.2}",
            g[0] / 1e6,
            g[1] / 1e6,
            sum / 1e6,
            g[2] / 1e6,
            g[3] / 1e6,
            g[4] / 1e6
        );
        for (v, x) in variants.iter().zip(&g) {
            figures.add(&format!("{v:?}"), "goodput", "Mbit/s", rep, x / 1e6);
        }
        for (v, x) in variants.iter().zip(&g).skip(2) {
            figures.add(&format!("{v:?}"), "share of dsl + lte alone", "%", rep, x / sum * 100.0);
        }
    }
    figures.finish(2).unwrap();
}

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
//! repetition (`AGGREGATE_REPS` overrides the repetitions, `AGGREGATE_ONLY`
//! keeps the variants whose name holds it besides each link alone; `AGGREGATE_RCVBUF`
//! gives the MPTCP variants' `SO_RCVBUF`, bytes, instead of autotuning).
//!
//! Issue 17's sessions beside them, same bed and run: an ordered lossless
//! qsock session (the server writes 1400-byte messages as fast as the
//! session takes them, the host reads) with the scheduler its throughput
//! objective chooses (earliest arrival), with naive round robin (the
//! head-of-line blocking the striping paper warns of), and with WDRR; for
//! each, also the 99th percentile of the time a message waited in the
//! host's reorder buffer over the whole download, ms.
use std::{
    os::fd::AsFd,
    time::{Duration, Instant},
};

use qsock_session::{Objective, SchedulerKind, Semantics, SessionConfig};
use qsock_tests::{
    mptcp::{connect_with_rcvbuf, issue_bed, per_source_routing, read_window, source},
    session::{connect_plain, session_download},
};

/// Repetitions of each variant.
const REPS: usize = 3;
/// Reading before the measurement starts.
const WARMUP: Duration = Duration::from_secs(3);
/// Measured reading.
const MEASURE: Duration = Duration::from_secs(10);
const PORT: u16 = 7300;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    DslAlone,
    LteAlone,
    InKernel,
    Qsockd,
    QsockdAttached,
    SessionEarliest,
    SessionRoundRobin,
    SessionWdrr,
}

/// Goodput (bit/s) and reorder-buffer p99 (ms) of a session download with `scheduler`.
fn session_goodput(scheduler: SchedulerKind, rep: usize) -> (f64, f64) {
    let mut b = issue_bed(&format!("as{}{rep}", scheduler as u8));
    b.start_daemon("category").unwrap();
    let mut cfg = SessionConfig::new(Semantics::OrderedLossless, &[Objective::Throughput]);
    cfg.scheduler = Some(scheduler);
    cfg.daemon = Some(b.socket_path());
    let d = session_download(&b, PORT, cfg, WARMUP, MEASURE);
    assert!(d.info.paths.len() == 2, "{scheduler:?}: two paths: {:#?}", d.info);
    (d.goodput_bps, d.info.reorder_wait_p99_us as f64 / 1000.0)
}

/// Goodput of one variant, bit/s.
fn goodput(v: Variant, rep: usize) -> (f64, Option<f64>) {
    let session = match v {
        Variant::SessionEarliest => Some(SchedulerKind::EarliestArrival),
        Variant::SessionRoundRobin => Some(SchedulerKind::RoundRobin),
        Variant::SessionWdrr => Some(SchedulerKind::Wdrr),
        _ => None,
    };
    if let Some(k) = session {
        let (g, p99) = session_goodput(k, rep);
        return (g, Some(p99));
    }
    let mut b = issue_bed(&format!("ag{}{rep}", v as u8));
    match v {
        Variant::DslAlone | Variant::LteAlone => per_source_routing(&b, false),
        Variant::InKernel => per_source_routing(&b, true),
        Variant::Qsockd | Variant::QsockdAttached => b.start_daemon_with("category", "\n[multipath]\nenabled = true\n").unwrap(),
        _ => unreachable!("sessions are measured above"),
    }
    source(&b, PORT);
    let mut s = match v {
        Variant::DslAlone => connect_plain(&b, 0, PORT),
        Variant::LteAlone => connect_plain(&b, 1, PORT),
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
    (bytes as f64 * 8.0 / MEASURE.as_secs_f64(), None)
}

/// `SO_RCVBUF` of the MPTCP variants (`AGGREGATE_RCVBUF`, bytes); `None`: autotuned.
fn rcvbuf() -> Option<usize> {
    std::env::var("AGGREGATE_RCVBUF").ok().and_then(|v| v.parse().ok())
}

fn main() {
    qsock_tests::require_root();
    let mut figures = qsock_tests::figures::Figures::new("aggregate");
    let reps = std::env::var("AGGREGATE_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(REPS);
    let variants = [
        Variant::DslAlone,
        Variant::LteAlone,
        Variant::InKernel,
        Variant::Qsockd,
        Variant::QsockdAttached,
        Variant::SessionEarliest,
        Variant::SessionRoundRobin,
        Variant::SessionWdrr,
    ];
    // AGGREGATE_ONLY=<substring>: only the variants whose name holds it (and each link alone, the reference).
    let only = std::env::var("AGGREGATE_ONLY").unwrap_or_default();
    let chosen = |v: &Variant| matches!(v, Variant::DslAlone | Variant::LteAlone) || format!("{v:?}").contains(&only);
    for rep in 0..reps {
        let measured: Vec<(f64, Option<f64>)> = variants.iter().map(|&v| if chosen(&v) { goodput(v, rep) } else { (f64::NAN, None) }).collect();
        let g: Vec<f64> = measured.iter().map(|m| m.0).collect();
        let sum = g[0] + g[1];
        println!(
            "rep {rep}: Mbit/s dsl {:.2}, lte {:.2} (sum {:.2}); in-kernel {:.2}, qsockd {:.2}, qsockd + classes {:.2}; sessions: earliest arrival {:.2}, round robin {:.2}, wdrr {:.2}",
            g[0] / 1e6,
            g[1] / 1e6,
            sum / 1e6,
            g[2] / 1e6,
            g[3] / 1e6,
            g[4] / 1e6,
            g[5] / 1e6,
            g[6] / 1e6,
            g[7] / 1e6
        );
        for (v, m) in variants.iter().zip(&measured) {
            if let Some(p99) = m.1 {
                figures.add(&format!("{v:?}"), "reorder wait p99", "ms", rep, p99);
            }
        }
        for (v, x) in variants.iter().zip(&g).filter(|(_, x)| !x.is_nan()) {
            figures.add(&format!("{v:?}"), "goodput", "Mbit/s", rep, x / 1e6);
        }
        for (v, x) in variants.iter().zip(&g).skip(2).filter(|(_, x)| !x.is_nan()) {
            figures.add(&format!("{v:?}"), "share of dsl + lte alone", "%", rep, x / sum * 100.0);
        }
    }
    figures.finish(2).unwrap();
}

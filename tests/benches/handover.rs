//! Handover after a link goes down or is blackholed, qsockd's path manager
//! beside the kernel's own in the same run (issue 16, item 5): `cargo bench
//! -p qsock-tests --bench handover` (root). The issue's bed: a download
//! from a stock-Linux MPTCP server over two links, dsl (6 Mbit/s down,
//! 10 ms RTT) and lte (12 Mbit/s down, 70 ms RTT), the initial subflow on
//! dsl; 2 s in, dsl goes down on the host, or its wire drops everything
//! (blackhole: no link event). The figure is the longest time without
//! received data in the 3 s after (the stall); for qsockd after a
//! blackhole also how long after the wire is healed the connection has a
//! subflow on dsl again. Variants alternate, a fresh bed each repetition;
//! prints every figure, then median and range.
use std::time::{Duration, Instant};

use qsock_tests::mptcp::{connect, issue_bed, per_source_routing, read_window, source};

/// Repetitions of each variant (`HANDOVER_REPS` overrides).
const REPS: usize = 5;

/// How dsl dies.
#[derive(Clone, Copy, PartialEq)]
enum Kill {
    /// The host's interface goes down (a link event).
    Down,
    /// The wire drops every frame (no event).
    Blackhole,
}

/// One repetition: the stall after dsl dies, and (qsockd, blackhole) how
/// long after the wire heals a subflow is on dsl again.
fn stall(qsockd: bool, kill: Kill, rep: usize) -> (Duration, Option<Duration>) {
    let mut b = issue_bed(&format!("h{}{}{rep}", if qsockd { "q" } else { "k" }, if kill == Kill::Down { "d" } else { "b" }));
    if qsockd {
        b.start_daemon_with("category", "\n[multipath]\nenabled = true\n").unwrap();
    } else {
        per_source_routing(&b, true);
    }
    source(&b, 7100);
    let mut s = connect(&b, 7100);
    let t0 = Instant::now();
    let (before, _) = read_window(&mut s, t0, t0 + Duration::from_secs(2));
    assert!(before > 0);
    let on_lte = b.in_host(|| qsock::qsubflows(&s)).unwrap().unwrap().subflows.iter().any(|x| x.interface.as_deref() == Some("lte"));
    assert!(on_lte, "a subflow on lte before the handover");
    match kill {
        Kill::Down => b.set_link(0, false).unwrap(),
        Kill::Blackhole => b.set_blackhole(0, true).unwrap(),
    }
    let down = Instant::now();
    let (after, stall) = read_window(&mut s, down, down + Duration::from_secs(3));
    assert!(after > 0, "the download went on");
    if !(qsockd && kill == Kill::Blackhole) {
        return (stall, None);
    }
    if std::env::var_os("HANDOVER_LOG").is_some() {
        let log = std::fs::read_to_string(b.dir.join("qsockd.log")).unwrap_or_default();
        eprintln!("{}", log.lines().filter(|l| l.contains("multipath")).collect::<Vec<_>>().join("\n"));
    }
    b.set_blackhole(0, false).unwrap();
    let healed = Instant::now();
    let on_dsl = |s: &std::net::TcpStream| {
        b.in_host(|| qsock::qsubflows(s))
            .unwrap()
            .unwrap()
            .subflows
            .iter()
            .any(|x| x.interface.as_deref() == Some("dsl") && x.state == qsock::TcpState::Established)
    };
    while !on_dsl(&s) {
        assert!(healed.elapsed() < Duration::from_secs(15), "no subflow on dsl 15 s after the wire healed");
        read_window(&mut s, Instant::now(), Instant::now() + Duration::from_millis(20));
    }
    (stall, Some(healed.elapsed()))
}

/// Milliseconds of `d`.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    qsock_tests::require_root();
    let mut figures = qsock_tests::figures::Figures::new("handover");
    let reps = std::env::var("HANDOVER_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(REPS);
    for rep in 0..reps {
        let (kd, _) = stall(false, Kill::Down, rep);
        let (qd, _) = stall(true, Kill::Down, rep);
        let (kb, _) = stall(false, Kill::Blackhole, rep);
        let (qb, back) = stall(true, Kill::Blackhole, rep);
        let back = back.expect("measured");
        println!(
            "rep {rep}: link down: in-kernel {kd:?}, qsockd {qd:?}; blackhole: in-kernel {kb:?}, qsockd {qb:?}, back on dsl {back:?} after the wire healed"
        );
        figures.add("in-kernel PM", "stall after link down", "ms", rep, ms(kd));
        figures.add("qsockd PM", "stall after link down", "ms", rep, ms(qd));
        figures.add("in-kernel PM", "stall after blackhole", "ms", rep, ms(kb));
        figures.add("qsockd PM", "stall after blackhole", "ms", rep, ms(qb));
        figures.add("qsockd PM", "back on dsl after the blackhole ends", "ms", rep, ms(back));
    }
    figures.finish(0).unwrap();
}

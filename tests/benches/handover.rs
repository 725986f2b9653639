//! Handover after a link goes down, qsockd's path manager beside the
//! kernel's own in the same run (issue 16, item 5): `cargo bench -p
//! qsock-tests --bench handover` (root). The bed: a download from a
//! stock-Linux MPTCP server over two links, dsl (6 Mbit/s down, 10 ms RTT)
//! and lte (12 Mbit/s down, 70 ms RTT), the initial subflow on dsl; 2 s in,
//! dsl goes down on the host. The figure is the longest time without
//! received data in the 3 s after (the stall). Variants alternate, a fresh
//! bed each repetition; prints every stall, then median and range.
use std::time::{Duration, Instant};

use qsock_tests::mptcp::{connect, read_window, source};
use testbed::{
    multihomed::{LinkSpec, MultiHomed},
    run,
};

/// Repetitions of each variant.
const REPS: usize = 5;

fn bed(tag: &str) -> MultiHomed {
    let links = vec![
        LinkSpec { name: "dsl".into(), down_bps: 6_000_000, up_bps: 100_000_000, one_way_delay_us: 5_000, kind: "wired", metered: false },
        LinkSpec { name: "lte".into(), down_bps: 12_000_000, up_bps: 100_000_000, one_way_delay_us: 35_000, kind: "cellular", metered: true },
    ];
    let b = MultiHomed::new(tag, links).unwrap();
    for ns in [&b.host_ns, &b.server_ns] {
        run(std::process::Command::new("ip").args(["-n", ns, "mptcp", "limits", "set", "subflows", "4", "add_addr_accepted", "4"])).unwrap();
    }
    b
}

/// The kernel's path manager: a `subflow` endpoint on lte, and a routing
/// table per source address (what qsockd installs in the other variant).
fn in_kernel(b: &MultiHomed) {
    for (i, l) in b.links.iter().enumerate() {
        let (src, gw, table) = (MultiHomed::host_ip(i).to_string(), MultiHomed::gateway_ip(i).to_string(), (200 + i).to_string());
        b.ip_host(&["route", "add", "default", "via", &gw, "dev", &l.name, "table", &table]).unwrap();
        b.ip_host(&["rule", "add", "from", &src, "table", &table]).unwrap();
    }
    b.ip_host(&["mptcp", "endpoint", "add", &MultiHomed::host_ip(1).to_string(), "dev", "lte", "id", "2", "subflow"]).unwrap();
}

/// One repetition: the stall after dsl goes down.
fn stall(qsockd: bool, rep: usize) -> Duration {
    let mut b = bed(&format!("ho{}{rep}", if qsockd { "q" } else { "k" }));
    if qsockd {
        b.start_daemon_with("category", "\n[multipath]\nenabled = true\n").unwrap();
    } else {
        in_kernel(&b);
    }
    source(&b, 7100);
    let mut s = connect(&b, 7100);
    let t0 = Instant::now();
    let (before, _) = read_window(&mut s, t0, t0 + Duration::from_secs(2));
    assert!(before > 0);
    let on_lte = b.in_host(|| qsock::qsubflows(&s)).unwrap().unwrap().subflows.iter().any(|x| x.interface.as_deref() == Some("lte"));
    assert!(on_lte, "a subflow on lte before the handover");
    b.set_link(0, false).unwrap();
    let down = Instant::now();
    let (after, stall) = read_window(&mut s, down, down + Duration::from_secs(3));
    assert!(after > 0, "the download went on");
    stall
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("{name}: median {:.0} ms, range {:.0}–{:.0} ms over {} runs", ms(v[v.len() / 2]), ms(v[0]), ms(v[v.len() - 1]), v.len());
}

fn main() {
    qsock_tests::require_root();
    let (mut kernel, mut ours) = (Vec::new(), Vec::new());
    for rep in 0..REPS {
        let k = stall(false, rep);
        let q = stall(true, rep);
        println!("rep {rep}: in-kernel path manager {k:?}, qsockd {q:?}");
        kernel.push(k);
        ours.push(q);
    }
    summary("in-kernel path manager, stall after link down", kernel);
    summary("qsockd path manager, stall after link down", ours);
}

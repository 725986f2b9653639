//! Control-plane cost against the number of managed sockets:
//! `cargo bench -p qsock-tests --bench scale` (root). For 10, 1,000 and
//! 10,000 sockets on one device (10 Gbit/s root HTB) it times every
//! `qattach` and every `qclose` (detach), and `qinfo` and `qchange` on one
//! socket while all of them are managed, and prints the medians and 99th
//! percentiles side by side, with the total time to attach and close them
//! all. Each size runs in its own fresh test bed, once with classes created
//! on attach and once with as many parked classes created ahead
//! (`class_pool`). Build the daemon first: `scripts/bench.sh` does both.
use std::{
    net::UdpSocket,
    os::fd::AsFd,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use qsock_tests::Bed;

/// Sizes measured.
const SIZES: [usize; 3] = [10, 1_000, 10_000];
/// `qinfo` and `qchange` calls timed per size.
const REPEATS: usize = 1_000;

/// Latency histogram in ns, 1 ns to 10 s.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid bounds")
}

fn timed<T>(h: &mut Histogram<u64>, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    h.saturating_record(t.elapsed().as_nanos() as u64);
    r
}

/// One row: (sockets, attach, change, info, close histograms, total attach+close time).
struct Row {
    sockets: usize,
    pool: bool,
    attach: Histogram<u64>,
    change: Histogram<u64>,
    info: Histogram<u64>,
    close: Histogram<u64>,
    total: Duration,
}

/// Measures `n` sockets on a fresh bed; with `pool`, qsockd creates `n`
/// parked classes when it starts (config `class_pool`), before the clock runs.
fn measure(n: usize, pool: bool) -> Row {
    let bed = testbed::Testbed::new(&format!("sc{n}{}", pool as u8)).expect("test bed (run as root)");
    bed.init("10gbit").expect("qsockd init");
    let config = bed.dir.join("bench.toml");
    std::fs::write(&config, format!("class_pool = {}\n", if pool { n } else { 0 })).expect("config");
    bed.start_daemon_with(&["--config", config.to_str().expect("utf-8 path")]).expect("qsockd run");
    let client = qsock::Client::connect(&bed.socket_path()).expect("connect");
    let b = Bed { bed, client };
    let sockets: Vec<UdpSocket> =
        b.bed.in_ns(&b.bed.server_ns, || (0..n).map(|_| UdpSocket::bind("0.0.0.0:0").expect("UDP socket")).collect()).expect("server namespace");
    let params = b.rate(100_000);
    let (mut attach, mut change, mut info, mut close) = (histogram(), histogram(), histogram(), histogram());
    let start = Instant::now();
    for s in &sockets {
        timed(&mut attach, || b.client.attach(s.as_fd(), &params).expect("qattach"));
    }
    let mut total = start.elapsed();
    let probe = &sockets[n / 2];
    for i in 0..REPEATS {
        timed(&mut info, || b.client.info(probe.as_fd()).expect("qinfo"));
        let p = b.rate(if i % 2 == 0 { 200_000 } else { 100_000 });
        timed(&mut change, || b.client.change(probe.as_fd(), &p).expect("qchange"));
    }
    let start = Instant::now();
    for s in &sockets {
        timed(&mut close, || b.client.detach(s.as_fd()).expect("qclose"));
    }
    total += start.elapsed();
    // Remove the qdisc now, while the next bed waits: a namespace deleted
    // with 10,000 classes in it is cleaned up by the kernel in the
    // background and would slow the next measurement down.
    let Bed { bed, client } = b;
    drop(client);
    bed.stop_daemon();
    testbed::run(bed.qsockd().expect("qsockd").args(["teardown", "--device", &bed.server_dev])).expect("teardown");
    Row { sockets: n, pool, attach, change, info, close, total }
}

fn us(h: &Histogram<u64>, q: f64) -> String {
    format!("{:.0}", h.value_at_quantile(q) as f64 / 1e3)
}

fn main() {
    // 10,000 sockets in this process: raise the descriptor limit to the hard limit.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).expect("getrlimit");
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    println!("| managed sockets | classes | qattach p50 / p99 (µs) | qchange p50 / p99 | qinfo p50 / p99 | qclose p50 / p99 | all attaches + closes |");
    println!("|---|---|---|---|---|---|---|");
    for pool in [false, true] {
        for n in SIZES {
            let r = measure(n, pool);
            println!(
                "| {} | {} | {} / {} | {} / {} | {} / {} | {} / {} | {:.2} s |",
                r.sockets,
                if r.pool { "parked ahead" } else { "created on attach" },
                us(&r.attach, 0.5),
                us(&r.attach, 0.99),
                us(&r.change, 0.5),
                us(&r.change, 0.99),
                us(&r.info, 0.5),
                us(&r.info, 0.99),
                us(&r.close, 0.5),
                us(&r.close, 0.99),
                r.total.as_secs_f64()
            );
        }
    }
}

//! The paper's second use case (Hesmans and Bonaventure 2016, §4: a
//! delayed subflow): open the second subflow only for an object large
//! enough to gain from it, against the in-kernel full-mesh manager, which
//! opens it on every connection at once. `cargo bench -p qsock-tests
//! --bench delayed_subflow` (root; in `scripts/bench.sh`). The issue's bed
//! (dsl 6 Mbit/s at 10 ms, lte 12 Mbit/s at 70 ms), nginx made MPTCP by
//! `qsock-run --multipath` serving the Socket Intents page (130 objects,
//! 48 B–263 KB), fetched as a browser does: 6 keep-alive MPTCP
//! connections, each taking the next object from a shared queue. Variants,
//! each on a fresh bed, in turn: *full mesh* (in-kernel path manager,
//! `subflow` endpoint on lte), *delayed* (qsockd, `open_subflows =
//! "on_request"`; a connection opens its lte subflow when a response's
//! `Content-Length` exceeds [`THRESHOLD`]), *one path* (qsockd, no
//! subflow opened). Prints per variant the page time and the subflows
//! opened beyond the initial ones, median and range over the repetitions
//! (`DELAYED_REPS` overrides [`REPS`], `DELAYED_THRESHOLD` the threshold, bytes).
use std::{
    collections::VecDeque,
    net::TcpStream,
    os::fd::AsFd,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use qsock::SubflowLocal;
use qsock_tests::mptcp::{connect, issue_bed, per_source_routing, start_mptcp_web_server};

const REPS: usize = 3;
/// Objects larger than this open the second subflow by default, bytes: at 6 Mbit/s
/// such an object takes over 130 ms on dsl, several lte RTTs (a join costs
/// about one), so lte's share pays for the join.
const THRESHOLD: usize = 100_000;
/// Connections, as a browser opens per host.
const CONNECTIONS: usize = 6;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    FullMesh,
    Delayed,
    OnePath,
}

/// Reads the rest of a body of `length` bytes of which `have` were read.
fn body(s: &mut TcpStream, length: usize, mut have: usize) {
    let mut chunk = vec![0u8; 64 * 1024];
    while have < length {
        let n = qsock_tests::read_some(s, &mut chunk[..(length - have).min(64 * 1024)]).unwrap();
        assert!(n > 0, "the server closed mid-body");
        have += n;
    }
}

/// Page time (s) and subflows opened beyond the initial ones.
fn run(v: Variant, rep: usize, root: &std::path::Path, objects: &[(String, u64)], threshold: usize) -> (f64, usize) {
    let mut b = issue_bed(&format!("ds{}{rep}", v as u8));
    match v {
        Variant::FullMesh => per_source_routing(&b, true),
        _ => b.start_daemon_with("category", "\n[multipath]\nenabled = true\nopen_subflows = \"on_request\"\n").unwrap(),
    }
    start_mptcp_web_server(&mut b, root);
    let client = (v != Variant::FullMesh).then(|| b.client().unwrap());
    let queue = Mutex::new(objects.iter().map(|(p, _)| p.clone()).collect::<VecDeque<_>>());
    let opened = AtomicUsize::new(0);
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..CONNECTIONS {
            sc.spawn(|| {
                let mut s = connect(&b, 80);
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut second = false;
                loop {
                    let Some(path) = queue.lock().unwrap().pop_front() else { break };
                    let (length, first) = qsock_tests::http::get_head(&mut s, &path);
                    let have = first.len();
                    if let (Variant::Delayed, false, true, Some(c)) = (v, second, length > threshold, &client) {
                        // The body keeps arriving over dsl while the join runs.
                        if c.open_subflow(s.as_fd(), &SubflowLocal::Interface("lte".into()), None, Duration::from_secs(3)).is_ok() {
                            opened.fetch_add(1, Ordering::Relaxed);
                        }
                        second = true;
                    }
                    body(&mut s, length, have);
                }
                if v == Variant::FullMesh {
                    let c = b.in_host(|| qsock::qsubflows(&s)).unwrap().unwrap();
                    opened.fetch_add(c.subflows.len().saturating_sub(1), Ordering::Relaxed);
                }
            });
        }
    });
    (t0.elapsed().as_secs_f64(), opened.load(Ordering::Relaxed))
}

fn main() {
    qsock_tests::require_root();
    let reps = std::env::var("DELAYED_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(REPS);
    let root = std::env::temp_dir().join(format!("qsock-delayed-{}", std::process::id()));
    let objects = socket_intents::page::write(&root, 1_000).unwrap();
    let page: Vec<(String, u64)> = objects.into_iter().filter(|(p, _)| !p.contains("bulk")).collect();
    let threshold = std::env::var("DELAYED_THRESHOLD").ok().and_then(|v| v.parse().ok()).unwrap_or(THRESHOLD);
    let large = page.iter().filter(|(_, n)| *n as usize > threshold).count();
    println!("page: {} objects, {large} over the {threshold} B threshold", page.len());
    let mut figures = qsock_tests::figures::Figures::new("delayed_subflow");
    for rep in 0..reps {
        for v in [Variant::FullMesh, Variant::Delayed, Variant::OnePath] {
            let (t, n) = run(v, rep, &root, &page, threshold);
            println!("rep {rep} {v:?}: page {t:.2} s, {n} subflows opened");
            figures.add(&format!("{v:?}"), "page time", "s", rep, t);
            figures.add(&format!("{v:?}"), "subflows opened", "", rep, n as f64);
        }
    }
    figures.finish(2).unwrap();
    let _ = std::fs::remove_dir_all(&root);
}

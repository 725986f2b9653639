//! The paper's third use case (Hesmans and Bonaventure 2016, §4: a
//! deadline): a streaming client fetches chunks, each due [`DEADLINE`]
//! after it was asked for, over the primary link, and opens a subflow on
//! the secondary, metered one only while it falls behind: at any time t
//! into a chunk, received / t < size / deadline (the paper's rule; checked
//! from [`GRACE`] on, before which nothing can be judged). The subflow is
//! closed when the chunk is complete. `cargo bench -p qsock-tests --bench
//! deadline_subflow` (root; in `scripts/bench.sh`). The issue's bed (dsl
//! 6 Mbit/s at 10 ms primary, lte 12 Mbit/s at 70 ms metered), nginx made
//! MPTCP, qsockd the path manager opening only what the client asks
//! (`open_subflows = "on_request"`), one keep-alive MPTCP connection,
//! [`CHUNKS`] chunks of [`CHUNK_BYTES`]: dsl alone needs about 1.4 s for
//! one, the deadline is 1.2 s. Variants in turn, a fresh bed each: *primary
//! only*, *always both* (the lte subflow opened before the first chunk and
//! kept), *deadline rule*. Prints per variant the chunks on time and the
//! bytes lte received, median and range over the repetitions
//! (`DEADLINE_REPS` overrides [`REPS`]).
use std::{
    os::fd::AsFd,
    time::{Duration, Instant},
};

use qsock::SubflowLocal;
use qsock_tests::mptcp::{connect, issue_bed, start_mptcp_web_server};

const REPS: usize = 3;
const CHUNKS: usize = 20;
const CHUNK_BYTES: usize = 1_000_000;
const DEADLINE: Duration = Duration::from_millis(1_200);
/// Time into a chunk before the rule is applied (the request's RTT and
/// slow start make every chunk look late at first).
const GRACE: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    PrimaryOnly,
    AlwaysBoth,
    DeadlineRule,
}

/// The paper's rule: `received` bytes `elapsed` into a chunk of `size`
/// bytes due after `deadline` is behind when received / elapsed < size /
/// deadline (cross-multiplied, no division).
fn behind(received: usize, elapsed: Duration, size: usize, deadline: Duration) -> bool {
    (received as u128) * deadline.as_micros() < (size as u128) * elapsed.as_micros()
}

/// Chunks on time and bytes lte received.
fn run(v: Variant, rep: usize, root: &std::path::Path) -> (usize, u64) {
    let mut b = issue_bed(&format!("dl{}{rep}", v as u8));
    b.start_daemon_with("category", "\n[multipath]\nenabled = true\nopen_subflows = \"on_request\"\n").unwrap();
    start_mptcp_web_server(&mut b, root);
    let c = b.client().unwrap();
    let mut s = connect(&b, 80);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let lte = || SubflowLocal::Interface("lte".into());
    // One small request first: MPTCP allows joins once data was exchanged.
    let (n, first) = qsock_tests::http::get_head(&mut s, "chunk0");
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = first.len();
    while have < n {
        have += qsock_tests::read_some(&mut s, &mut buf).unwrap();
    }
    let mut extra = (v == Variant::AlwaysBoth).then(|| c.open_subflow(s.as_fd(), &lte(), None, Duration::from_secs(3)).unwrap().id);
    let lte_rx0 = b.link_bytes(1).unwrap().1;
    let mut on_time = 0;
    for i in 0..CHUNKS {
        let t0 = Instant::now();
        let (length, first) = qsock_tests::http::get_head(&mut s, &format!("chunk{i}"));
        let mut have = first.len();
        while have < length {
            let n = qsock_tests::read_some(&mut s, &mut buf[..(length - have).min(64 * 1024)]).unwrap();
            assert!(n > 0, "the server closed mid-chunk");
            have += n;
            let t = t0.elapsed();
            if v == Variant::DeadlineRule && extra.is_none() && t >= GRACE && behind(have, t, length, DEADLINE) {
                extra = c.open_subflow(s.as_fd(), &lte(), None, Duration::from_secs(3)).ok().map(|x| x.id);
            }
        }
        if t0.elapsed() <= DEADLINE {
            on_time += 1;
        }
        if v == Variant::DeadlineRule {
            if let Some(id) = extra.take() {
                c.close_subflow(s.as_fd(), id).unwrap();
            }
        }
    }
    (on_time, b.link_bytes(1).unwrap().1 - lte_rx0)
}

fn main() {
    qsock_tests::require_root();
    let reps = std::env::var("DEADLINE_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(REPS);
    let root = std::env::temp_dir().join(format!("qsock-deadline-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    for i in 0..CHUNKS {
        std::fs::write(root.join(format!("chunk{i}")), vec![i as u8; CHUNK_BYTES]).unwrap();
    }
    let mut figures = qsock_tests::figures::Figures::new("deadline_subflow");
    for rep in 0..reps {
        for v in [Variant::PrimaryOnly, Variant::AlwaysBoth, Variant::DeadlineRule] {
            let (n, bytes) = run(v, rep, &root);
            println!("rep {rep} {v:?}: {n}/{CHUNKS} chunks on time, lte received {:.2} MB", bytes as f64 / 1e6);
            figures.add(&format!("{v:?}"), &format!("chunks on time (of {CHUNKS})"), "", rep, n as f64);
            figures.add(&format!("{v:?}"), "bytes on lte", "MB", rep, bytes as f64 / 1e6);
        }
    }
    figures.finish(1).unwrap();
    let _ = std::fs::remove_dir_all(&root);
}

//! Cost of one DWCS scheduling decision (enqueue one packet, decide once)
//! against the number of streams: 1, 100, 10,000. `cargo bench -p qsock-dwcs`.
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use qsock_dwcs::{
    scheduler::{Dwcs, NaiveDwcs, Scheduler},
    WindowConstraint,
};

fn loaded<S: Scheduler + Default>(n: usize) -> S {
    let mut s = S::default();
    for i in 0..n {
        s.add_stream(WindowConstraint::new((i % 3) as u32, 4).unwrap(), false);
        // Four packets per stream, far-away deadlines: nothing is missed.
        for k in 0..4 {
            s.enqueue(i, 1_000_000_000 + (k * n + i) as u64 * 1000, false);
        }
    }
    s
}

/// Steady state: each iteration queues one packet and makes one decision.
fn one_decision<S: Scheduler + Default>(b: &mut criterion::Bencher<'_>, n: usize) {
    let mut s: S = loaded(n);
    let mut out = Vec::with_capacity(4);
    let mut i = 0usize;
    b.iter(|| {
        s.enqueue(i % n, 2_000_000_000 + i as u64, false);
        out.clear();
        s.decide(black_box(0), &mut out);
        i += 1;
    })
}

fn decision(c: &mut Criterion) {
    let mut g = c.benchmark_group("dwcs decision");
    for n in [1usize, 100, 10_000] {
        g.bench_with_input(BenchmarkId::new("heap", n), &n, |b, &n| one_decision::<Dwcs>(b, n));
        if n <= 100 {
            g.bench_with_input(BenchmarkId::new("linear scan", n), &n, |b, &n| one_decision::<NaiveDwcs>(b, n));
        }
    }
    g.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);

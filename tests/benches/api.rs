//! Cost of each qsock call next to its plain-socket counterpart, as in
//! Q.Sockets' Table 1 (Abbasi et al. 2002, §4.1): `cargo bench -p qsock-tests`
//! (root). Runs in a test bed whose 10 Gbit/s root HTB never queues the
//! benchmark's 100-byte datagrams, so sends measure the call path: syscall,
//! egress classifier, qdisc, veth. With `kernel.bpf_stats_enabled` on for the
//! run (and restored after), each send row also prints what the egress
//! program and the dequeue probe cost per run (`run_time_ns / run_cnt` over
//! the row), so the gap to plain `sendto` splits into the programs and the
//! rest (ancillary data, the larger code path of `sendmsg`).
use std::{net::UdpSocket, os::fd::AsFd, time::Duration};

use criterion::{black_box, criterion_group, Criterion};
use qsock::{Client, DropPriority, PacketFlags};
use qsock_tests::Bed;
use testbed::CLIENT_IP;

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Total run time (ns) and runs of every loaded program named `name`.
fn prog_stats(name: &str) -> (u64, u64) {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(name))
        .fold((0, 0), |(t, n), p| (t + p.run_time().as_nanos() as u64, n + p.run_count()))
}

/// Runs `f` (one criterion row) and prints the programs' cost per run over it.
fn with_prog_cost(row: &str, f: impl FnOnce()) {
    let (e0, d0) = (prog_stats(qsock_common::PROG_EGRESS), prog_stats(qsock_common::PROG_DEQUEUE));
    f();
    let (e1, d1) = (prog_stats(qsock_common::PROG_EGRESS), prog_stats(qsock_common::PROG_DEQUEUE));
    let per = |a: (u64, u64), b: (u64, u64)| if b.1 > a.1 { (b.0 - a.0) as f64 / (b.1 - a.1) as f64 } else { 0.0 };
    eprintln!("bpf cost | {row} | egress {:.0} ns/run ({} runs) | dequeue probe {:.0} ns/run ({} runs)", per(e0, e1), e1.1 - e0.1, per(d0, d1), d1.1 - d0.1);
}

fn api(c: &mut Criterion) {
    let b = Bed::new("bench", "10gbit").expect("test bed (run as root)");
    // On once the bed stands (a bed that fails leaves the setting alone).
    let stats_before = std::fs::read_to_string(BPF_STATS).unwrap_or_default();
    if let Err(e) = std::fs::write(BPF_STATS, "1") {
        eprintln!("bpf cost: cannot enable {BPF_STATS} ({e}); program costs print as 0");
    }
    // Sockets are created in this thread's namespace: move it to the server side.
    let ns = std::fs::File::open(format!("/run/netns/{}", b.bed.server_ns)).unwrap();
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    let client: &Client = &b.client;
    let params = b.rate(1_000_000);
    let to = std::net::SocketAddr::new(CLIENT_IP.into(), 9);
    let payload = [0u8; 100];

    let mut g = c.benchmark_group("create+close");
    g.bench_function("socket+close", |x| x.iter(|| drop(black_box(UdpSocket::bind("0.0.0.0:0").unwrap()))));
    g.bench_function("socket+qattach+detach+close", |x| {
        x.iter(|| {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            client.attach(s.as_fd(), &params).unwrap();
            client.detach(s.as_fd()).unwrap();
        })
    });
    g.finish();

    let managed = UdpSocket::bind("0.0.0.0:0").unwrap();
    client.attach(managed.as_fd(), &params).unwrap();
    let mut g = c.benchmark_group("control");
    g.bench_function("qinfo", |x| x.iter(|| black_box(client.info(managed.as_fd()).unwrap())));
    let mut flip = false;
    g.bench_function("qchange", |x| {
        x.iter(|| {
            flip = !flip;
            client.change(managed.as_fd(), &b.rate(if flip { 2_000_000 } else { 1_000_000 })).unwrap()
        })
    });
    g.finish();

    let plain = UdpSocket::bind("0.0.0.0:0").unwrap();
    // A DWCS stream reserved far above what the loop sends, so every datagram
    // runs the whole DWCS branch (deadline, prediction, window rules) and none is dropped.
    let dwcs = UdpSocket::bind("0.0.0.0:0").unwrap();
    let dwcs_params = qsock::QosParams {
        scheduler: qsock::SchedulerParams::Dwcs(qsock::DwcsAttrs { ipg_ns: 2_000, unit_bytes: 1000, oln: 1, old: 2, non_droppable: false }),
        ..b.rate(1)
    };
    client.attach(dwcs.as_fd(), &dwcs_params).unwrap();
    let flags = PacketFlags { drop_priority: DropPriority::NON_DROPPABLE, frame_start: true, frame_end: true, ..Default::default() };
    let mut g = c.benchmark_group("send 100 B");
    with_prog_cost("sendto (unmanaged socket)", || {
        g.bench_function("sendto (unmanaged socket)", |x| x.iter(|| plain.send_to(black_box(&payload), to).unwrap()));
    });
    with_prog_cost("sendto (managed socket)", || {
        g.bench_function("sendto (managed socket)", |x| x.iter(|| managed.send_to(black_box(&payload), to).unwrap()));
    });
    with_prog_cost("sendto (DWCS socket)", || {
        g.bench_function("sendto (DWCS socket)", |x| x.iter(|| dwcs.send_to(black_box(&payload), to).unwrap()));
    });
    with_prog_cost("qsendto (managed, flags)", || {
        g.bench_function("qsendto (managed, flags)", |x| x.iter(|| qsock::qsendto(managed.as_fd(), black_box(&payload), &to, &flags).unwrap()));
    });
    with_prog_cost("qsendto (managed, flags + deadline)", || {
        g.bench_function("qsendto (managed, flags + deadline)", |x| {
            x.iter(|| {
                let f = PacketFlags { deadline_ns: Some(qsock::monotonic_now_ns() + 1_000_000_000), ..flags };
                qsock::qsendto(managed.as_fd(), black_box(&payload), &to, &f).unwrap()
            })
        });
    });
    g.finish();
    let d = client.info(dwcs.as_fd()).unwrap();
    assert_eq!(d.drops.total_packets(), 0, "the DWCS row measured the kept path: {d:?}");
    assert!(d.deadline_met_packets > 0 && d.late_kept_packets == 0, "{d:?}");
    let _ = std::fs::write(BPF_STATS, stats_before.trim());
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = api
}

fn main() {
    // The bed must drop (namespaces removed) before exit, so no criterion_main!.
    benches();
    Criterion::default().configure_from_args().final_summary();
}

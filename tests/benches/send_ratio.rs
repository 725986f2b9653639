//! `qsendto` against `sendto`, paired: `cargo bench -p qsock-tests --bench
//! send_ratio` (root). The API bench's criterion rows run one after another
//! and this VM's speed drifts by up to 30 % between them, more than the gap
//! they measure. Here every round times a block of each variant in ABBA order
//! (A, B, B, A: a linear drift cancels) and keeps the round's ratio; the
//! figure is the median ratio over the rounds with its interquartile range.
//! Same test bed as the API bench: a 10 Gbit/s root HTB that never queues
//! the 100-byte datagrams, so a send measures the call path.
use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsFd,
    time::Instant,
};

use qsock::{DropPriority, PacketFlags};
use qsock_tests::Bed;
use testbed::CLIENT_IP;

/// Sends per block; one block is about 5 ms.
const BLOCK: usize = 1_000;
/// Rounds (ABBA each): 400 rounds of 4 blocks is about 8 s a pair.
const ROUNDS: usize = 400;

/// Time of one block of `send`, ns.
fn block_ns(send: &mut dyn FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..BLOCK {
        send();
    }
    t.elapsed().as_nanos() as f64
}

/// Median, first and third quartile of `ratios` (sorted in place).
fn quartiles(ratios: &mut [f64]) -> (f64, f64, f64) {
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.25), at(0.75))
}

/// Prints the paired ratio `b / a` and each variant's median time per send.
fn pair(name: &str, a: &mut dyn FnMut(), b: &mut dyn FnMut()) {
    for _ in 0..BLOCK * 10 {
        a();
        b();
    }
    let (mut ratios, mut ta, mut tb) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for _ in 0..ROUNDS {
        let a1 = block_ns(a);
        let b1 = block_ns(b);
        let b2 = block_ns(b);
        let a2 = block_ns(a);
        ratios.push((b1 + b2) / (a1 + a2));
        ta.push((a1 + a2) / (2 * BLOCK) as f64);
        tb.push((b1 + b2) / (2 * BLOCK) as f64);
    }
    let (med, q1, q3) = quartiles(&mut ratios);
    let (ma, mb) = (quartiles(&mut ta).0, quartiles(&mut tb).0);
    println!("{name}: ratio {med:.3} (IQR {q1:.3}–{q3:.3}, {ROUNDS} ABBA rounds of {BLOCK}) | {:.2} µs vs {:.2} µs per send", ma / 1e3, mb / 1e3);
}

fn main() {
    let b = Bed::new("ratio", "10gbit").expect("test bed (run as root)");
    let ns = std::fs::File::open(format!("/run/netns/{}", b.bed.server_ns)).unwrap();
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    let to = SocketAddr::new(CLIENT_IP.into(), 9);
    let payload = [0u8; 100];
    let plain = UdpSocket::bind("0.0.0.0:0").unwrap();
    let managed = UdpSocket::bind("0.0.0.0:0").unwrap();
    b.client.attach(managed.as_fd(), &b.rate(1_000_000)).unwrap();
    let flags = PacketFlags { drop_priority: DropPriority::NON_DROPPABLE, frame_start: true, frame_end: true, ..Default::default() };
    let send_plain = &mut || {
        plain.send_to(&payload, to).unwrap();
    };
    let send_managed = &mut || {
        managed.send_to(&payload, to).unwrap();
    };
    let qsend_flags = &mut || {
        qsock::qsendto(managed.as_fd(), &payload, &to, &flags).unwrap();
    };
    let qsend_deadline = &mut || {
        let f = PacketFlags { deadline_ns: Some(qsock::monotonic_now_ns() + 1_000_000_000), ..flags };
        qsock::qsendto(managed.as_fd(), &payload, &to, &f).unwrap();
    };
    pair("qsendto (managed, frame + non-droppable) / sendto (unmanaged)", send_plain, qsend_flags);
    pair("qsendto (managed, frame + non-droppable) / sendto (same managed socket)", send_managed, qsend_flags);
    pair("qsendto (managed, flags + deadline) / sendto (unmanaged)", send_plain, qsend_deadline);
    pair("sendto (managed) / sendto (unmanaged)", send_plain, send_managed);
    let info = b.client.info(managed.as_fd()).unwrap();
    assert_eq!(info.drops.total_packets(), 0, "the rows measured the kept path: {info:?}");
}

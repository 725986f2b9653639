//! DWCS in the live data path, and several scheduler modules on one device:
//! whole-frame drops within the window constraint, classes and per-stream
//! state of rate, EDF and DWCS streams side by side, and `qchange` across
//! modules without losing queued packets. (The periodic-stream window test is
//! in `dwcs_window.rs`, a binary of its own so no other test shares its CPUs.)
use std::{
    collections::BTreeSet,
    net::{SocketAddr, UdpSocket},
    os::fd::AsFd,
};

use qsock::{DwcsAttrs, EdfAttrs, QosParams, RateAttrs, SchedulerParams, SchedulerState};
use qsock_tests::{recv_until_marker, send_marker, Bed, MARKER};

fn dwcs(b: &Bed, x: u32, y: u32, unit_bytes: u32, ipg_ns: u64, non_droppable: bool) -> QosParams {
    QosParams { scheduler: SchedulerParams::Dwcs(DwcsAttrs { ipg_ns, unit_bytes, oln: x, old: y, non_droppable }), ..b.rate(1) }
}

/// Receives until every sequence number in `0..n` and the marker arrived (bounded: 20 s).
fn recv_all(rx: &UdpSocket, n: u16) -> BTreeSet<u16> {
    let mut seen = BTreeSet::new();
    let mut marker = false;
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut buf = [0u8; 2048];
    while !(marker && seen.len() == n as usize) && std::time::Instant::now() < give_up {
        match rx.recv(&mut buf) {
            Ok(k) if &buf[..k] == MARKER => marker = true,
            Ok(k) if k >= 2 => {
                seen.insert(u16::from_be_bytes([buf[0], buf[1]]));
            }
            _ => {}
        }
    }
    seen
}

#[test]
fn rate_edf_and_dwcs_serve_one_device_and_qchange_moves_between_them() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("modules", "10mbit").unwrap();
    let (rx, to): (UdpSocket, SocketAddr) = b.receiver().unwrap();
    b.warm_up(to, &rx).unwrap();
    let (tx_rate, tx_edf, tx_dwcs) = (b.sender().unwrap(), b.sender().unwrap(), b.sender().unwrap());
    let slow = QosParams { scheduler: SchedulerParams::Rate(RateAttrs { ceil_bps: Some(500_000), ..RateAttrs::guaranteed(500_000) }), ..b.rate(1) };
    let edf = QosParams { scheduler: SchedulerParams::Edf(EdfAttrs { lossy: true, message_bytes: 1042, min_interval_ns: 10_000_000 }), ..b.rate(1) };
    let a_rate = b.client.attach(tx_rate.as_fd(), &slow).unwrap();
    let a_edf = b.client.attach(tx_edf.as_fd(), &edf).unwrap();
    let a_dwcs = b.client.attach(tx_dwcs.as_fd(), &dwcs(&b, 1, 4, 1042, 10_000_000, false)).unwrap();
    assert_eq!(a_dwcs.classid, "1:fffd");
    assert!(a_rate.classid != a_edf.classid && a_edf.classid != "1:fffd");
    let classes = b.bed.tc_server(&["class", "show", "dev", &b.bed.server_dev]).unwrap();
    // 1.1 × 3/4 × 1042 B per 10 ms = 687720 bit/s, ceil = rate.
    assert!(classes.contains("class htb 1:fffd ") && classes.contains("rate 687720bit ceil 687720bit"), "{classes}");
    assert_eq!(b.client.info(tx_edf.as_fd()).unwrap().scheduler_state, SchedulerState::Edf { lossy: true });
    assert_eq!(b.client.info(tx_rate.as_fd()).unwrap().scheduler_state, SchedulerState::Rate);
    let st = b.client.info(tx_dwcs.as_fd()).unwrap().scheduler_state;
    assert!(matches!(st, SchedulerState::Dwcs { x: 1, y: 4, x_now: 1, y_now: 4, violated: false, .. }), "{st:?}");
    // A unit on time moves y' down; a new constraint starts a fresh window.
    tx_dwcs.send_to(&[0u8; 100], to).unwrap();
    let st = b.client.info(tx_dwcs.as_fd()).unwrap().scheduler_state;
    assert!(matches!(st, SchedulerState::Dwcs { x_now: 1, y_now: 3, deadline_ns, .. } if deadline_ns > 0), "{st:?}");
    b.client.change(tx_dwcs.as_fd(), &dwcs(&b, 2, 5, 1042, 10_000_000, false)).unwrap();
    let st = b.client.info(tx_dwcs.as_fd()).unwrap().scheduler_state;
    assert!(matches!(st, SchedulerState::Dwcs { x: 2, y: 5, x_now: 2, y_now: 5, .. }), "{st:?}");
    tx_dwcs.send_to(&[0u8; 100], to).unwrap();
    let st = b.client.info(tx_dwcs.as_fd()).unwrap().scheduler_state;
    assert!(matches!(st, SchedulerState::Dwcs { x: 2, y: 5, x_now: 2, y_now: 4, .. }), "{st:?}");

    // 60 datagrams queue behind the 500 kbit/s ceiling; then the socket moves
    // to DWCS (non-droppable, so nothing is dropped) and its own class drains.
    for i in 0..60u16 {
        let mut p = vec![0u8; 1000];
        p[..2].copy_from_slice(&i.to_be_bytes());
        tx_rate.send_to(&p, to).unwrap();
    }
    let queued = b.client.info(tx_rate.as_fd()).unwrap().backlog_packets;
    assert!(queued > 10, "packets wait in the rate class when the scheduler changes ({queued})");
    let moved = b.client.change(tx_rate.as_fd(), &dwcs(&b, 0, 1, 1042, 10_000_000, true)).unwrap();
    assert_eq!(moved.classid, "1:fffd");
    send_marker(&tx_rate, to).unwrap();
    assert_eq!(recv_all(&rx, 60), (0..60).collect(), "every packet queued before the change arrives");
    // And back to a rate class of its own; the DWCS class shrinks again.
    let back = b.client.change(tx_rate.as_fd(), &slow).unwrap();
    assert!(back.classid != "1:fffd");
    let classes = b.bed.tc_server(&["class", "show", "dev", &b.bed.server_dev]).unwrap();
    // Only the 2/5 stream is left in it: 1.1 × 3/5 × 1042 B per 10 ms.
    assert!(classes.contains("rate 550176bit ceil 550176bit"), "{classes}");
}

#[test]
fn dwcs_drops_whole_frames_within_the_window_constraint() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("frames", "10mbit").unwrap();
    let (rx, to) = b.receiver().unwrap();
    b.warm_up(to, &rx).unwrap();
    let tx = b.sender().unwrap();
    // Frames of 3 datagrams (3 × 1042 wire bytes) every 10 ms offer 2.5 Mbit/s;
    // 1/4 may be lost, so the DWCS class gets 1.1 × 3/4 × 2.5 = 2.06 Mbit/s
    // and about a sixth of the frames must go.
    b.client.attach(tx.as_fd(), &dwcs(&b, 1, 4, 3 * 1042, 10_000_000, false)).unwrap();
    // Receive while sending: 300 datagrams would overflow the receive buffer.
    let receiver = std::thread::spawn(move || recv_until_marker(&rx).unwrap());
    let frames = 100u16;
    let start = qsock::monotonic_now_ns();
    for f in 0..frames {
        let due = start + f as u64 * 10_000_000;
        let now = qsock::monotonic_now_ns();
        if due > now {
            std::thread::sleep(std::time::Duration::from_nanos(due - now));
        }
        let deadline = Some(qsock::monotonic_now_ns() + 40_000_000);
        for p in 0..3u8 {
            let mut d = vec![0u8; 1000];
            d[..2].copy_from_slice(&f.to_be_bytes());
            d[2] = p;
            let flags = qsock::PacketFlags { deadline_ns: deadline, frame_start: p == 0, frame_end: p == 2, ..Default::default() };
            qsock::qsendto(tx.as_fd(), &d, &to, &flags).unwrap();
        }
    }
    send_marker(&tx, to).unwrap();
    let mut got = vec![0u8; frames as usize];
    for d in receiver.join().unwrap() {
        got[u16::from_be_bytes([d[0], d[1]]) as usize] += 1;
    }
    assert!(got.iter().all(|&n| n == 0 || n == 3), "a frame arrived in part: {got:?}");
    let lost: Vec<bool> = got.iter().map(|&n| n == 0).collect();
    let n_lost = lost.iter().filter(|l| **l).count() as u64;
    let info = b.client.info(tx.as_fd()).unwrap();
    assert!(n_lost > 0, "the class is overloaded, some frames must go: {info:?}");
    assert!(qsock_dwcs::worst_window(&lost, 4) <= 1, "1/4 broken at the receiver: {lost:?}");
    assert_eq!(
        (info.drops.deadline_packets, info.drops.frame_packets),
        (n_lost, 2 * n_lost),
        "a dropped frame counts its first packet and then the rest: {info:?}"
    );
}

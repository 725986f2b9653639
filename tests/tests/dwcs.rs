//! DWCS in the live data path, and several scheduler modules on one device:
//! window constraints checked at the receiver on an overloaded DWCS class,
//! classes and per-stream state of rate, EDF and DWCS streams side by side,
//! and `qchange` across modules without losing queued packets.
use std::{
    collections::BTreeSet,
    net::{SocketAddr, UdpSocket},
    os::fd::AsFd,
    process::Stdio,
};

use qsock::{sched::SchedulerState, DwcsAttrs, EdfAttrs, QosParams, RateAttrs, SchedulerParams};
use qsock_tests::{recv_until_marker, send_marker, Bed, MARKER};
use testbed::{spawn_ready, workspace_bin, CLIENT_IP};
use video_server::streams::{outcomes, parse_specs, Arrival};

fn dwcs(b: &Bed, x: u32, y: u32, unit_bytes: u32, ipg_ns: u64, non_droppable: bool) -> QosParams {
    QosParams { scheduler: SchedulerParams::Dwcs(DwcsAttrs { ipg_ns, unit_bytes, oln: x, old: y, non_droppable }), ..b.rate(1) }
}

#[test]
fn window_constraints_hold_at_the_receiver_on_an_overloaded_dwcs_class() {
    let b = Bed::new("window", "10mbit").unwrap();
    // ARP first, so no deadline waits in the neighbour queue.
    let (rx, to) = b.receiver().unwrap();
    b.sender().unwrap().send_to(MARKER, to).unwrap();
    recv_until_marker(&rx).unwrap();
    drop(rx);
    // Five streams of 1042 wire bytes every 4 ms offer 10.4 Mbit/s; their DWCS
    // reservations add up to 1.1 × (1/2 + 3/4 + 7/8 + 1/2 + 3/4) × 2.084 Mbit/s
    // = 7.74 Mbit/s, so the DWCS class must drop about 26 % of what it is offered.
    let specs = "1/2,1/4,1/8,1/2,1/4";
    let port = 7100;
    let out = b.bed.dir.join("arrivals.json");
    let mut recv = b.bed.command_in(&b.bed.client_ns, workspace_bin("stream-receiver").unwrap());
    recv.args(["--bind", &format!("{CLIENT_IP}:{port}"), "--streams", "5", "--timeout-s", "30"]).arg("--out").arg(&out);
    let mut recv = spawn_ready(recv, &b.bed.dir.join("receiver.log")).unwrap();
    let mut send = b.bed.command_in(&b.bed.server_ns, workspace_bin("dwcs-streams").unwrap());
    send.args(["--dest", &format!("{CLIENT_IP}:{port}"), "--device", &b.bed.server_dev, "--streams", specs]);
    // SCHED_FIFO senders: the streams stay periodic even on a busy machine.
    send.args(["--ipg-us", "4000", "--bytes", "1000", "--duration-s", "4", "--realtime"]);
    let o = send.env("QSOCK_SOCKET", b.bed.socket_path()).stderr(Stdio::inherit()).output().unwrap();
    assert!(o.status.success(), "dwcs-streams failed");
    assert!(recv.wait().unwrap().success(), "stream-receiver failed");
    let sender: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let sent: Vec<u64> = serde_json::from_value(sender["sent"].clone()).unwrap();
    let arrivals: Vec<Arrival> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let specs = parse_specs(specs).unwrap();
    let res = outcomes(&specs, &sent, &arrivals);
    for (i, r) in res.iter().enumerate() {
        let info: qsock::QInfo = serde_json::from_value(sender["qinfo"][i].clone()).unwrap();
        let y = r.spec.y as usize;
        let broken: Vec<usize> = (y..=r.missed.len()).filter(|&e| r.missed[e - y..e].iter().filter(|m| **m).count() > r.spec.x as usize).map(|e| e - 1).collect();
        let summary = format!(
            "stream {i} ({}/{}): {} on time, {} late, {} lost, worst window {} (windows ending at deadlines {broken:?}); {info:?}",
            r.spec.x, r.spec.y, r.on_time, r.late, r.lost, r.worst_window
        );
        assert!(r.worst_window <= r.spec.x as usize, "window constraint broken: {summary}");
        assert_eq!(r.lost, info.drops.deadline_packets, "what the receiver lost is what DWCS dropped: {summary}");
        assert!(matches!(info.scheduler_state, SchedulerState::Dwcs { x, y, violations: 0, .. } if (x, y) == (r.spec.x, r.spec.y)), "{summary}");
        assert_eq!(info.classid, "1:fffd", "DWCS streams share one class");
    }
    // Overload lands on the loosest constraints first.
    let lost: Vec<u64> = res.iter().map(|r| r.lost).collect();
    assert!(lost[0].min(lost[3]) > lost[1].max(lost[2]).max(lost[4]), "the 1/2 streams lose most: {lost:?}");
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
    let b = Bed::new("modules", "10mbit").unwrap();
    let (rx, to): (UdpSocket, SocketAddr) = b.receiver().unwrap();
    b.sender().unwrap().send_to(MARKER, to).unwrap();
    recv_until_marker(&rx).unwrap();
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

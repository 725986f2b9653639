//! QoS survives the daemon: qsockd killed with SIGKILL in the middle of a
//! guaranteed stream under bulk load and started again. The stream's class,
//! policy and counters stay in the kernel, the new qsockd recovers its books
//! from them, and the library reconnects and re-registers the socket on its
//! own. Checked: no datagram of the stream lost or late, against a plain
//! socket sending the same stream in the same run, and the recovered socket
//! behaves as before (same class, counters kept, `qchange` and `qclose` work,
//! the class goes on close). Teardown still restores the device.
use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsFd,
    time::{Duration, Instant},
};

use qsock::{qsendto, DropPriority, PacketFlags};
use qsock_tests::{send_marker, Bed, MARKER};

/// Datagram size, bytes.
const SIZE: usize = 1000;
/// Datagrams per second of each stream (1.6 Mbit/s).
const PER_SECOND: u64 = 200;
/// Stream length, s.
const SECONDS: u64 = 8;
/// Deadline of every datagram after it is sent, ns: later is lost to the application.
const DEADLINE_NS: u64 = 40_000_000;

/// Sends the stream on `tx`: sequence number and send time in each payload,
/// paced by absolute send times; `flags` carry a deadline when `tagged`.
/// `at_second(s)` runs once the s-th second of sending has begun.
fn stream(tx: &UdpSocket, to: SocketAddr, tagged: bool, mut at_second: impl FnMut(u64)) {
    let start = Instant::now();
    let ipg = Duration::from_nanos(1_000_000_000 / PER_SECOND);
    for i in 0..SECONDS * PER_SECOND {
        if i % PER_SECOND == 0 {
            at_second(i / PER_SECOND);
        }
        let at = start + ipg * i as u32;
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now = qsock::monotonic_now_ns();
        let mut p = vec![0u8; SIZE];
        p[..8].copy_from_slice(&i.to_be_bytes());
        p[8..16].copy_from_slice(&now.to_be_bytes());
        if tagged {
            let flags = PacketFlags { deadline_ns: Some(now + DEADLINE_NS), drop_priority: DropPriority::NON_DROPPABLE, ..Default::default() };
            qsendto(tx.as_fd(), &p, &to, &flags).unwrap();
        } else {
            let _ = tx.send_to(&p, to);
        }
    }
}

/// Receives until the end marker: (datagrams received, received later than
/// the deadline after they were sent).
fn receive(rx: UdpSocket) -> (u64, u64) {
    let give_up = Instant::now() + Duration::from_secs(SECONDS + 30);
    let (mut got, mut late) = (0, 0);
    let mut buf = [0u8; 2048];
    while Instant::now() < give_up {
        match rx.recv(&mut buf) {
            Ok(n) if &buf[..n] == MARKER => break,
            Ok(n) if n == SIZE => {
                got += 1;
                let sent = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                if qsock::monotonic_now_ns().saturating_sub(sent) > DEADLINE_NS {
                    late += 1;
                }
            }
            _ => {}
        }
    }
    (got, late)
}

#[test]
fn a_stream_under_load_keeps_its_guarantee_through_kill_9_and_restart() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("restart", "10mbit").unwrap();
    let (rx_q, to_q) = b.receiver().unwrap();
    let (rx_p, to_p) = b.receiver().unwrap();
    b.warm_up(to_q, &rx_q).unwrap();
    let managed = b.sender().unwrap();
    let plain = b.sender().unwrap();
    let attached = b.client.attach(managed.as_fd(), &b.rate(2_500_000)).unwrap();
    assert!(b.class_in_use(&attached.classid));

    let _iperf = b.bed.iperf_server().unwrap();
    let mut load = b.bed.command_in(&b.bed.server_ns, "iperf3");
    load.args(["-c", &testbed::CLIENT_IP.to_string(), "-t", &(SECONDS + 2).to_string(), "-P", "4"]).stdout(std::process::Stdio::null());
    let _load = testbed::KillOnDrop(load.spawn().unwrap());
    let receivers = [std::thread::spawn(move || receive(rx_q)), std::thread::spawn(move || receive(rx_p))];
    let (tx_started, started) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        // The plain stream runs beside the managed one, through the same load.
        let plain = &plain;
        s.spawn(move || {
            stream(plain, to_p, false, |_| {});
            plain.send_to(MARKER, to_p).unwrap();
        });
        let managed = &managed;
        let sender = s.spawn(move || {
            stream(managed, to_q, true, |sec| tx_started.send(sec).unwrap());
            send_marker(managed, to_q).unwrap();
        });
        // The daemon dies in the 4th second of the stream and is back in the 5th.
        while started.recv().unwrap() < 3 {}
        let enqueued_before_kill = b.client.info(managed.as_fd()).unwrap().enqueued_packets;
        b.bed.kill_daemon();
        while started.recv().unwrap() < 4 {}
        b.bed.start_daemon().unwrap();
        sender.join().unwrap();
        // The same client, never told of the restart: it reconnects and re-registers on its own.
        let info = b.client.info(managed.as_fd()).expect("qinfo after the restart");
        assert_eq!(info.classid, attached.classid, "the socket kept its class");
        assert!(
            info.enqueued_packets >= enqueued_before_kill + PER_SECOND,
            "counters kept ({} before the kill, {} now)",
            enqueued_before_kill,
            info.enqueued_packets
        );
        assert_eq!(info.guaranteed_rate_bps, 2_500_000);
    });
    let [(got_q, late_q), (got_p, late_p)] = receivers.map(|r| r.join().unwrap());
    let n = SECONDS * PER_SECOND;
    eprintln!("under load through kill -9 and restart: qsock {got_q}/{n} received, {late_q} late; plain {got_p}/{n}, {late_p} late");
    assert_eq!((got_q, late_q), (n, 0), "qsock lost or delayed datagrams through the restart (plain: {got_p} received, {late_p} late)");
    assert!(got_p - late_p < n, "the load must hurt a plain socket, or the test proves nothing");
    let info = b.client.info(managed.as_fd()).unwrap();
    assert_eq!(info.drops.deadline_packets + info.drops.qdisc_packets, 0);

    // The recovered socket is fully managed: listed with its owner, changed, closed.
    let listed = b.client.list().unwrap();
    assert!(listed.iter().any(|s| s.cookie == attached.cookie && s.pid == std::process::id() as i32), "listed with its owner after the restart");
    b.client.change(managed.as_fd(), &b.rate(3_000_000)).unwrap();
    assert_eq!(b.client.info(managed.as_fd()).unwrap().guaranteed_rate_bps, 3_000_000);
    b.client.detach(managed.as_fd()).unwrap();
    assert!(!b.class_in_use(&attached.classid), "class released on close");
}

#[test]
fn a_restart_releases_what_closed_while_it_was_down_and_keeps_the_rest() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("restart2", "10mbit").unwrap();
    let (_rx, to) = b.receiver().unwrap();
    let kept = b.sender().unwrap();
    let gone = b.sender().unwrap();
    let k = b.client.attach(kept.as_fd(), &b.rate(1_000_000)).unwrap();
    let g = b.client.attach(gone.as_fd(), &b.rate(1_000_000)).unwrap();
    kept.send_to(b"x", to).unwrap();
    gone.send_to(b"x", to).unwrap();
    b.bed.kill_daemon();
    drop(gone); // closed while no daemon ran
    b.bed.start_daemon().unwrap();
    let has = |cid: &str| b.class_in_use(cid);
    let deadline = Instant::now() + Duration::from_secs(5);
    while has(&g.classid) {
        assert!(Instant::now() < deadline, "the socket closed during the restart was not released within 5 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(has(&k.classid), "the open socket kept its class");
    assert_eq!(b.client.info(kept.as_fd()).unwrap().classid, k.classid);
    // Teardown after a restart still restores the device exactly.
    b.client.detach(kept.as_fd()).unwrap();
    b.bed.stop_daemon();
    testbed::run(b.bed.qsockd().unwrap().args(["teardown", "--device", &b.bed.server_dev])).unwrap();
    let qdisc = b.bed.tc_server(&["qdisc", "show", "dev", &b.bed.server_dev]).unwrap();
    assert!(!qdisc.contains("htb") && !qdisc.contains("clsact"), "device restored: {qdisc}");
    let pins = std::fs::read_dir(&b.bed.pin_root).map(|d| d.count()).unwrap_or(0);
    assert_eq!(pins, 0, "no pinned map or link left");
}

#[test]
fn calls_wait_no_longer_than_they_allow_and_the_library_reconnects_by_itself() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("restart3", "10mbit").unwrap();
    let (_rx, to) = b.receiver().unwrap();
    let sock = b.sender().unwrap();
    let a = b.client.attach(sock.as_fd(), &b.rate(1_000_000)).unwrap();
    sock.send_to(b"x", to).unwrap();

    // A daemon that hangs: the call gives up after its wait, typed; the
    // late answer does not confuse the next call.
    b.bed.pause_daemon().unwrap();
    let e = b.client.info_within(sock.as_fd(), Duration::from_millis(20)).unwrap_err();
    assert_eq!(e.kind, qsock::ErrorKind::DaemonUnavailable, "{e}");
    b.bed.resume_daemon().unwrap();
    let info = b.client.info(sock.as_fd()).unwrap();
    assert_eq!(info.classid, a.classid, "the answer is this call's, not the late one");

    // A daemon that is away: typed error at once, sends go on regardless.
    b.bed.kill_daemon();
    let e = b.client.info(sock.as_fd()).unwrap_err();
    assert_eq!(e.kind, qsock::ErrorKind::DaemonUnavailable, "{e}");
    let e = b.client.change(sock.as_fd(), &b.rate(2_000_000)).unwrap_err();
    assert_eq!(e.kind, qsock::ErrorKind::DaemonUnavailable, "{e}");
    qsendto(sock.as_fd(), b"y", &to, &PacketFlags::default()).expect("sends never depend on the daemon");
    assert!(!b.client.is_connected());

    // Back: the background reconnector re-registers the socket without any call.
    b.bed.start_daemon().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.client.is_connected() {
        assert!(Instant::now() < deadline, "the library did not reconnect within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let listed = b.client.list().unwrap();
    assert!(listed.iter().any(|s| s.cookie == a.cookie && s.pid == std::process::id() as i32), "claimed by this process again: {listed:?}");
    assert_eq!(b.client.change(sock.as_fd(), &b.rate(2_000_000)).unwrap().classid, a.classid);
    b.client.detach(sock.as_fd()).unwrap();
}

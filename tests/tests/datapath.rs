//! The egress data path against the real kernel: classification by socket
//! cookie, non-droppable messages, frame-coherent drops, and qinfo against
//! what the receiver counted.
use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    os::fd::AsFd,
};

use qsock::{qsendto, DropPriority, PacketFlags};
use qsock_tests::{recv_until_marker, send_marker, Bed, MARKER};

/// A receiver, ARP resolved, and a sender attached with `params`: (tx, rx, to).
fn attached_flow(b: &Bed, params: &qsock::QosParams) -> (UdpSocket, UdpSocket, SocketAddr) {
    let (rx, to) = b.receiver().unwrap();
    b.warm_up(to, &rx).unwrap();
    let tx = b.sender().unwrap();
    b.client.attach(tx.as_fd(), params).unwrap();
    (tx, rx, to)
}

fn payload(tag: u8, a: u16, b: u16) -> Vec<u8> {
    let mut p = vec![0u8; 1000];
    p[0] = tag;
    p[1..3].copy_from_slice(&a.to_be_bytes());
    p[3..5].copy_from_slice(&b.to_be_bytes());
    p
}

fn parse(p: &[u8]) -> (u8, u16, u16) {
    (p[0], u16::from_be_bytes([p[1], p[2]]), u16::from_be_bytes([p[3], p[4]]))
}

fn deadline_in(ms: u64) -> Option<u64> {
    Some(qsock::monotonic_now_ns() + ms * 1_000_000)
}

#[test]
fn classification_by_cookie_lands_in_the_socket_class() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("cls", "10mbit").unwrap();
    let (rx, to) = b.receiver().unwrap();
    let (rx_plain, to_plain) = b.receiver().unwrap();
    b.warm_up(to, &rx).unwrap();
    let managed = b.sender().unwrap();
    let info = b.client.attach(managed.as_fd(), &b.rate(2_000_000)).unwrap();
    assert_eq!(info.classid, "1:10");
    let unmanaged = b.sender().unwrap();
    let be_before = b.class_packets("1:fffe").unwrap();
    for i in 0..50u16 {
        managed.send_to(&payload(b'M', i, 0), to).unwrap();
        unmanaged.send_to(&payload(b'U', i, 0), to_plain).unwrap();
    }
    send_marker(&managed, to).unwrap();
    unmanaged.send_to(MARKER, to_plain).unwrap();
    assert_eq!(recv_until_marker(&rx).unwrap().len(), 50);
    assert_eq!(recv_until_marker(&rx_plain).unwrap().len(), 50);
    assert_eq!(b.class_packets("1:10").unwrap(), 51, "every managed datagram, marker included, went through 1:10");
    assert!(b.class_packets("1:fffe").unwrap() - be_before >= 51, "unmanaged traffic stays in best effort");
}

#[test]
fn non_droppable_messages_are_never_dropped() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("nodrop", "10mbit").unwrap();
    // 200 kbit/s guaranteed, no borrowing: a 1000-byte message takes 40 ms,
    // so a burst overruns 100 ms deadlines quickly.
    let (tx, rx, to) = attached_flow(&b, &b.capped_rate(200_000));
    for i in 0..20u16 {
        let keep = PacketFlags { deadline_ns: deadline_in(100), drop_priority: DropPriority::NON_DROPPABLE, ..Default::default() };
        qsendto(tx.as_fd(), &payload(b'N', i, 0), &to, &keep).unwrap();
        let droppable = PacketFlags { deadline_ns: deadline_in(100), ..Default::default() };
        qsendto(tx.as_fd(), &payload(b'D', i, 0), &to, &droppable).unwrap();
    }
    send_marker(&tx, to).unwrap();
    let got: Vec<_> = recv_until_marker(&rx).unwrap().iter().map(|p| parse(p)).collect();
    let kept: Vec<u16> = got.iter().filter(|g| g.0 == b'N').map(|g| g.1).collect();
    assert_eq!(kept, (0..20).collect::<Vec<_>>(), "all non-droppable messages, in order");
    let droppable = got.iter().filter(|g| g.0 == b'D').count();
    assert!(droppable < 20, "the same conditions do drop droppable messages ({droppable}/20 arrived)");
    let info = b.client.info(tx.as_fd()).unwrap();
    assert!(info.late_kept_packets > 0, "non-droppable messages predicted late are sent late: {info:?}");
    assert_eq!(info.drops.deadline_packets + info.drops.frame_packets, 20 - droppable as u64);
}

/// The same burst on a class that may borrow, on an idle link: a plain
/// socket delivers all of it in time, so qsock drops nothing, from the
/// first message on (before the data path has measured what the class gets).
#[test]
fn a_class_that_may_borrow_drops_nothing_plain_delivers_on_an_idle_link() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("borrow", "10mbit").unwrap();
    let (tx, rx, to) = attached_flow(&b, &b.rate(200_000));
    for i in 0..20u16 {
        let droppable = PacketFlags { deadline_ns: deadline_in(100), ..Default::default() };
        qsendto(tx.as_fd(), &payload(b'D', i, 0), &to, &droppable).unwrap();
    }
    send_marker(&tx, to).unwrap();
    assert_eq!(recv_until_marker(&rx).unwrap().len(), 20, "every message arrives");
    let info = b.client.info(tx.as_fd()).unwrap();
    assert_eq!(info.drops.deadline_packets + info.drops.frame_packets, 0, "{info:?}");
}

/// A burst of frames that overruns the class: each frame is judged once,
/// at its first message, and arrives whole or not at all, with and without
/// the frame's size declared on its first message.
#[test]
fn a_frame_is_sent_whole_or_dropped_whole() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    for declared in [false, true] {
        let b = Bed::new("frame", "10mbit").unwrap();
        let (tx, rx, to) = attached_flow(&b, &b.capped_rate(200_000));
        const FRAMES: u16 = 10;
        const PER_FRAME: u16 = 6;
        for f in 0..FRAMES {
            let deadline = deadline_in(100);
            let wire = PER_FRAME as u32 * qsock::datagram_wire_bytes(payload(b'F', f, 0).len(), false);
            for i in 0..PER_FRAME {
                let flags = PacketFlags {
                    deadline_ns: deadline,
                    frame_start: i == 0,
                    frame_end: i + 1 == PER_FRAME,
                    frame_bytes: (declared && i == 0).then_some(wire),
                    ..Default::default()
                };
                qsendto(tx.as_fd(), &payload(b'F', f, i), &to, &flags).unwrap();
            }
        }
        send_marker(&tx, to).unwrap();
        let mut per_frame: BTreeMap<u16, Vec<u16>> = BTreeMap::new();
        for p in recv_until_marker(&rx).unwrap() {
            let (_, f, i) = parse(&p);
            per_frame.entry(f).or_default().push(i);
        }
        for (f, idx) in &per_frame {
            assert_eq!(idx, &(0..PER_FRAME).collect::<Vec<_>>(), "frame {f} (declared size: {declared}) arrived in part");
        }
        let dropped = FRAMES as u64 - per_frame.len() as u64;
        assert!(dropped >= 1, "the burst overruns the 100 ms deadline at 200 kbit/s: {per_frame:?}");
        let info = b.client.info(tx.as_fd()).unwrap();
        assert_eq!(info.drops.deadline_packets, dropped, "one deadline drop per frame: {:?}", info.drops);
        assert_eq!(info.drops.frame_packets, dropped * (PER_FRAME as u64 - 1), "the rest of each dropped frame: {:?}", info.drops);
    }
}

/// A deadline already past when the message is sent is a policy matter:
/// `qsendto` succeeds, a droppable message is dropped, a non-droppable one
/// is sent late, and qinfo counts both.
#[test]
fn a_deadline_already_past_is_dropped_or_sent_late_and_counted() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("past", "10mbit").unwrap();
    let (tx, rx, to) = attached_flow(&b, &b.rate(1_000_000));
    let past = Some(qsock::monotonic_now_ns() - 50_000_000);
    for i in 0..5u16 {
        qsendto(tx.as_fd(), &payload(b'D', i, 0), &to, &PacketFlags { deadline_ns: past, ..Default::default() }).unwrap();
        let keep = PacketFlags { deadline_ns: past, drop_priority: DropPriority::NON_DROPPABLE, ..Default::default() };
        qsendto(tx.as_fd(), &payload(b'N', i, 0), &to, &keep).unwrap();
    }
    send_marker(&tx, to).unwrap();
    let got: Vec<u8> = recv_until_marker(&rx).unwrap().iter().map(|p| parse(p).0).collect();
    assert_eq!(got, vec![b'N'; 5], "only the non-droppable messages arrive");
    let info = b.client.info(tx.as_fd()).unwrap();
    assert_eq!(info.past_deadline_units, 10, "{info:?}");
    assert_eq!(info.drops.deadline_packets, 5);
    assert_eq!(info.late_kept_packets, 5);
}

#[test]
fn qinfo_agrees_with_what_the_receiver_counted() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("qinfo", "10mbit").unwrap();
    let (tx, rx, to) = attached_flow(&b, &b.capped_rate(400_000));
    const N: u64 = 100;
    for i in 0..N as u16 {
        let flags = PacketFlags { deadline_ns: deadline_in(150), ..Default::default() };
        qsendto(tx.as_fd(), &payload(b'Q', i, 0), &to, &flags).unwrap();
    }
    send_marker(&tx, to).unwrap();
    let received = recv_until_marker(&rx).unwrap().len() as u64;
    assert!(received > 0 && received < N, "some but not all messages meet the deadline ({received})");
    let info = b.client.info(tx.as_fd()).unwrap();
    assert_eq!(info.sent_packets, received + 1, "sent = received + marker: {info:?}");
    assert_eq!(info.enqueued_packets, info.sent_packets);
    assert_eq!(info.drops.deadline_packets + info.drops.frame_packets, N - received);
    assert_eq!(info.drops.qdisc_packets, 0);
    assert_eq!(info.queuing_delay.samples, info.sent_packets, "every dequeued packet had its delay measured");
    assert!(info.queuing_delay.max_ns >= info.queuing_delay.mean_ns && info.queuing_delay.mean_ns > 0);
    assert_eq!(info.stack.socket_type, libc::SOCK_DGRAM);
    assert!(info.stack.sndbuf_bytes > 0);
}

#[test]
fn qchange_resizes_the_class_in_place_and_close_removes_it() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("chg", "10mbit").unwrap();
    let tx = b.sender().unwrap();
    let a = b.client.attach(tx.as_fd(), &b.rate(1_000_000)).unwrap();
    let c = b.client.change(tx.as_fd(), &b.rate(3_000_000)).unwrap();
    assert_eq!(a.classid, c.classid, "the class (and its queue) stays");
    let classes = b.bed.tc_server(&["class", "show", "dev", &b.bed.server_dev]).unwrap();
    assert!(classes.contains("class htb 1:10 parent 1:1 prio 0 rate 3Mbit"), "{classes}");
    assert!(classes.contains("class htb 1:fffe parent 1:1 prio 7 rate 7Mbit"), "best effort shrinks: {classes}");
    b.client.detach(tx.as_fd()).unwrap();
    let classes = b.bed.tc_server(&["class", "show", "dev", &b.bed.server_dev]).unwrap();
    assert!(!b.class_in_use("1:10"), "released: parked for the next socket, not serving one: {classes}");
    assert!(classes.contains("class htb 1:fffe parent 1:1 prio 7 rate 10Mbit"), "{classes}");
}

#[test]
fn a_client_that_goes_away_without_qclose_releases_its_sockets() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("gc", "10mbit").unwrap();
    let tx = b.sender().unwrap();
    let short_lived = qsock::Client::connect(&b.bed.socket_path()).unwrap();
    assert_eq!(short_lived.attach(tx.as_fd(), &b.rate(4_000_000)).unwrap().classid, "1:10");
    // As when the process exits: no qclose. qsockd sees the connection
    // close and releases the class (parks it). Bounded wait for that
    // asynchronous event.
    drop(short_lived);
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let classes = b.bed.tc_server(&["class", "show", "dev", &b.bed.server_dev]).unwrap();
        if !b.class_in_use("1:10") {
            assert!(classes.contains("class htb 1:fffe parent 1:1 prio 7 rate 10Mbit"), "rate returned to best effort: {classes}");
            break;
        }
        assert!(std::time::Instant::now() < give_up, "class of the released socket still there: {classes}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(b.client.info(tx.as_fd()).unwrap_err().kind, qsock::ErrorKind::NotManaged);
    // The freed class id is handed out again.
    assert_eq!(b.client.attach(tx.as_fd(), &b.rate(4_000_000)).unwrap().classid, "1:10");
}

#[test]
fn qinfo_rate_matches_the_rate_the_socket_sent_at() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("rate", "10mbit").unwrap();
    let (tx, _rx, to) = attached_flow(&b, &b.rate(3_000_000));
    // About 1 Mbit/s for 1.5 s: 1250-byte datagrams every 10 ms. The expected
    // rate is what was actually sent over the time it actually took.
    let start = std::time::Instant::now();
    let mut bytes = 0u64;
    for i in 0..150u32 {
        let due = start + std::time::Duration::from_millis(10 * i as u64);
        if let Some(w) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(w);
        }
        tx.send_to(&[0u8; 1250], to).unwrap();
        bytes += 1250 + 8 + 20 + 14; // UDP, IPv4, Ethernet headers: skb->len on the veth
    }
    let sent_bps = bytes as f64 * 8.0 / start.elapsed().as_secs_f64();
    let info = b.client.info(tx.as_fd()).unwrap();
    let ratio = info.rate_bps as f64 / sent_bps;
    eprintln!("qinfo rate {} bit/s, sent {sent_bps:.0} bit/s, ratio {ratio:.3}", info.rate_bps);
    assert!(info.rate_window_ns >= 500_000_000, "rate averaged over at least half a second: {info:?}");
    assert!((0.85..1.15).contains(&ratio), "qinfo {} bit/s vs sent {sent_bps:.0} bit/s", info.rate_bps);
}

#[test]
fn edf_streams_are_admitted_by_utilisation_and_lossy_drops_what_lossless_sends_late() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("edf", "10mbit").unwrap();
    let edf = |lossy: bool, message_bytes: u32, min_interval_ns: u64| qsock::QosParams {
        scheduler: qsock::SchedulerParams::Edf(qsock::EdfAttrs { lossy, message_bytes, min_interval_ns }),
        ..b.rate(1)
    };
    // 1250 bytes every 1 ms needs the whole 10 Mbit/s link: unschedulable.
    let greedy = b.sender().unwrap();
    let e = b.client.attach(greedy.as_fd(), &edf(true, 1250, 1_000_000)).unwrap_err();
    assert_eq!(e.kind, qsock::ErrorKind::CapacityExceeded);
    assert!(e.message.contains("unschedulable"), "{e}");

    // Two sensors of 1042 bytes every 40 ms (208.4 kbit/s each), then the same
    // overload on both: 20 messages at once, each due in 100 ms.
    let (rx_lossy, to_lossy) = b.receiver().unwrap();
    let (rx_lossless, to_lossless) = b.receiver().unwrap();
    b.warm_up(to_lossy, &rx_lossy).unwrap();
    let lossy = b.sender().unwrap();
    let lossless = b.sender().unwrap();
    b.client.attach(lossy.as_fd(), &edf(true, 1042, 40_000_000)).unwrap();
    b.client.attach(lossless.as_fd(), &edf(false, 1042, 40_000_000)).unwrap();
    assert_eq!(b.client.info(lossy.as_fd()).unwrap().guaranteed_rate_bps, 208_400);
    for i in 0..20u16 {
        for (tx, to) in [(&lossy, to_lossy), (&lossless, to_lossless)] {
            let flags = PacketFlags { deadline_ns: deadline_in(100), ..Default::default() };
            qsendto(tx.as_fd(), &payload(b'S', i, 0), &to, &flags).unwrap();
        }
    }
    send_marker(&lossy, to_lossy).unwrap();
    send_marker(&lossless, to_lossless).unwrap();
    let got_lossy = recv_until_marker(&rx_lossy).unwrap().len() as u64;
    let got_lossless = recv_until_marker(&rx_lossless).unwrap().len() as u64;
    let (il, ill) = (b.client.info(lossy.as_fd()).unwrap(), b.client.info(lossless.as_fd()).unwrap());
    assert!(got_lossy < 20 && il.drops.deadline_packets == 20 - got_lossy && il.late_kept_packets == 0, "lossy: {got_lossy} arrived, {il:?}");
    assert!(got_lossless == 20 && ill.drops.total_packets() == 0 && ill.late_kept_packets > 0, "lossless: {got_lossless} arrived, {ill:?}");
    // Every message carried a deadline: met + late + dropped accounts for all 20.
    for i in [&il, &ill] {
        assert_eq!(i.deadline_met_packets + i.late_kept_packets + i.drops.deadline_packets, 20, "{i:?}");
    }
    assert!(il.deadline_met_packets > 0 && il.deadline_met_packets == got_lossy, "lossy: what arrived is what met its deadline");
}

#[test]
fn qchange_switches_scheduler_without_losing_queued_packets() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("switch", "10mbit").unwrap();
    let (rx, to) = b.receiver().unwrap();
    b.warm_up(to, &rx).unwrap();
    let tx = b.sender().unwrap();
    // 500 kbit/s with a ceiling of 500 kbit/s: 60 datagrams of 1042 bytes queue for ~1 s.
    let slow = qsock::QosParams {
        scheduler: qsock::SchedulerParams::Rate(qsock::RateAttrs { ceil_bps: Some(500_000), ..qsock::RateAttrs::guaranteed(500_000) }),
        ..b.rate(1)
    };
    let before = b.client.attach(tx.as_fd(), &slow).unwrap();
    for i in 0..60u16 {
        tx.send_to(&payload(b'W', i, 0), to).unwrap();
    }
    let queued = b.client.info(tx.as_fd()).unwrap().backlog_packets;
    assert!(queued > 10, "packets are waiting in the class when the scheduler changes ({queued})");
    let edf = qsock::QosParams {
        scheduler: qsock::SchedulerParams::Edf(qsock::EdfAttrs { lossy: false, message_bytes: 1042, min_interval_ns: 5_000_000 }),
        ..b.rate(1)
    };
    let after = b.client.change(tx.as_fd(), &edf).unwrap();
    assert_eq!(before.classid, after.classid, "same class, same queue");
    let info = b.client.info(tx.as_fd()).unwrap();
    assert_eq!(info.scheduler.name(), "edf");
    assert_eq!(info.guaranteed_rate_bps, 1_667_200);
    send_marker(&tx, to).unwrap();
    let got: Vec<u16> = recv_until_marker(&rx).unwrap().iter().map(|p| parse(p).1).collect();
    assert_eq!(got, (0..60).collect::<Vec<_>>(), "every queued packet arrives, in order");
}

/// Backlog of class `classid` in packets, from `tc -s class show`
/// (" backlog 105000b 100p requeues 0").
fn class_backlog_packets(b: &Bed, classid: &str) -> u64 {
    let out = b.bed.tc_server(&["-s", "class", "show", "dev", &b.bed.server_dev]).unwrap();
    let block = out.split("class htb ").find(|c| c.starts_with(&format!("{classid} "))).unwrap_or_else(|| panic!("no class {classid} in {out}"));
    let w: Vec<&str> = block.split_whitespace().collect();
    let i = w.iter().position(|x| *x == "backlog").expect("a backlog field");
    w[i + 2].trim_end_matches('p').parse().unwrap()
}

#[test]
fn edf_messages_meet_their_deadlines_while_best_effort_floods_the_link() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("edfbe", "10mbit").unwrap();
    let (rx_edf, to_edf) = b.receiver().unwrap();
    let (rx_be, to_be) = b.receiver().unwrap();
    b.warm_up(to_edf, &rx_edf).unwrap();
    let tx = b.sender().unwrap();
    let edf = qsock::QosParams {
        scheduler: qsock::SchedulerParams::Edf(qsock::EdfAttrs { lossy: false, message_bytes: 1042, min_interval_ns: 10_000_000 }),
        ..b.rate(1)
    };
    b.client.attach(tx.as_fd(), &edf).unwrap();
    let flooders: Vec<UdpSocket> = (0..4).map(|_| b.sender().unwrap()).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (got, be_backlog) = std::thread::scope(|s| {
        // Best effort: four sockets sending as fast as their buffers let them,
        // far more than the link carries.
        for f in &flooders {
            let stop = &stop;
            s.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = f.send_to(&[0u8; 1000], to_be);
                }
            });
        }
        s.spawn(|| while rx_be.recv(&mut [0u8; 2048]).is_ok() || !stop.load(std::sync::atomic::Ordering::Relaxed) {});
        let receiver = s.spawn(|| recv_until_marker(&rx_edf).unwrap().len());
        // Wait (bounded) until best effort queues, so the EDF messages meet a full link.
        let mut be_backlog = 0;
        for _ in 0..200 {
            be_backlog = class_backlog_packets(&b, "1:fffe");
            if be_backlog >= 50 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // 100 deadline messages, one per 10 ms, each due 20 ms after it is sent.
        for i in 0..100u16 {
            qsendto(tx.as_fd(), &payload(b'E', i, 0), &to_edf, &PacketFlags { deadline_ns: deadline_in(20), ..Default::default() }).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        be_backlog = be_backlog.min(class_backlog_packets(&b, "1:fffe"));
        send_marker(&tx, to_edf).unwrap();
        let got = receiver.join().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (got, be_backlog)
    });
    let info = b.client.info(tx.as_fd()).unwrap();
    assert!(be_backlog >= 50, "best effort was not flooded ({be_backlog} packets queued)");
    assert_eq!(got, 100, "lossless EDF delivers every message");
    assert_eq!((info.deadline_met_packets, info.late_kept_packets), (100, 0), "{info:?}");
    // Measured in the kernel, not predicted: time each message spent in the root qdisc.
    assert!(info.queuing_delay.max_ns < 20_000_000, "an EDF message waited past its deadline behind best effort: {:?}", info.queuing_delay);
}

//! Bad input gets a clear, typed error, changes nothing, and the daemon
//! keeps serving.
use std::{
    io::IoSlice,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use nix::sys::socket::{connect, recv, sendmsg, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};
use qsock::{proto::Request, Client, ErrorKind, InitParams, PacketFlags, QosParams, RateAttrs, SchedulerParams};
use qsock_tests::Bed;

fn kind<T: std::fmt::Debug>(r: qsock::Result<T>) -> ErrorKind {
    r.expect_err("must fail").kind
}

#[test]
fn bad_requests_get_typed_errors_and_the_daemon_keeps_serving() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("err", "10mbit").unwrap();
    let dev = b.bed.server_dev.clone();
    let tx = b.sender().unwrap();
    let c = &b.client;

    assert_eq!(kind(c.attach(tx.as_fd(), &QosParams::rate("nosuchdev0", 1_000_000))), ErrorKind::NoSuchDevice);
    // Rate 0, checked by the library and again by the daemon (raw request).
    assert_eq!(kind(c.attach(tx.as_fd(), &QosParams::rate(dev.clone(), 0))), ErrorKind::InvalidParams);
    assert_eq!(kind(c.call(&Request::Attach(QosParams::rate(dev.clone(), 0)), Some(tx.as_fd()))), ErrorKind::InvalidParams);
    // More than the link, and more than what is left.
    assert_eq!(kind(c.attach(tx.as_fd(), &QosParams::rate(dev.clone(), 20_000_000))), ErrorKind::CapacityExceeded);
    c.attach(tx.as_fd(), &QosParams::rate(dev.clone(), 6_000_000)).unwrap();
    let tx2 = b.sender().unwrap();
    assert_eq!(kind(c.attach(tx2.as_fd(), &QosParams::rate(dev.clone(), 6_000_000))), ErrorKind::CapacityExceeded);
    assert_eq!(kind(c.attach(tx.as_fd(), &QosParams::rate(dev.clone(), 1_000_000))), ErrorKind::AlreadyManaged);
    // Not managed.
    assert_eq!(kind(c.info(tx2.as_fd())), ErrorKind::NotManaged);
    assert_eq!(kind(c.change(tx2.as_fd(), &QosParams::rate(dev.clone(), 1_000_000))), ErrorKind::NotManaged);
    assert_eq!(kind(c.detach(tx2.as_fd())), ErrorKind::NotManaged);
    // A DWCS stream that makes the DWCS set infeasible: (1 - 1/10) x 12500 bytes per 10 ms = 9 Mbit/s.
    let dwcs = |oln, old| QosParams {
        scheduler: SchedulerParams::Dwcs(qsock::DwcsAttrs { ipg_ns: 10_000_000, unit_bytes: 12_500, oln, old, non_droppable: false }),
        ..QosParams::rate(dev.clone(), 1)
    };
    assert_eq!(kind(c.attach(tx2.as_fd(), &dwcs(1, 10))), ErrorKind::CapacityExceeded);
    assert_eq!(kind(c.attach(tx2.as_fd(), &dwcs(11, 10))), ErrorKind::InvalidParams);
    // A ceil below the guarantee.
    let bad_ceil =
        QosParams { scheduler: SchedulerParams::Rate(RateAttrs { ceil_bps: Some(1000), ..RateAttrs::guaranteed(2000) }), ..QosParams::rate(dev.clone(), 1) };
    assert_eq!(kind(c.attach(tx2.as_fd(), &bad_ceil)), ErrorKind::InvalidParams);
    // Token buckets: a burst of 0 or one that cannot drain in 60 s at its
    // rate is invalid; one beyond the link's burst horizon (200 ms of
    // 10 Mbit/s = 250,000 bytes) is refused by admission, and says so.
    let bucket = |rate, burst| QosParams { scheduler: SchedulerParams::Rate(RateAttrs::token_bucket(rate, burst)), ..QosParams::rate(dev.clone(), 1) };
    assert_eq!(kind(c.attach(tx2.as_fd(), &bucket(1_000_000, 0))), ErrorKind::InvalidParams);
    assert_eq!(kind(c.attach(tx2.as_fd(), &bucket(1_000, 8_000_000))), ErrorKind::InvalidParams);
    let e = c.attach(tx2.as_fd(), &bucket(1_000_000, 300_000)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::CapacityExceeded);
    assert!(e.message.contains("burst of 300000 bytes"), "{e}");

    // A closed descriptor, and a descriptor that is not a socket.
    let closed = b.sender().unwrap();
    let raw = closed.as_raw_fd();
    drop(closed);
    // SAFETY: deliberately a closed descriptor number; only passed to calls that check it.
    let stale = unsafe { BorrowedFd::borrow_raw(raw) };
    assert_eq!(kind(c.attach(stale, &QosParams::rate(dev.clone(), 1_000_000))), ErrorKind::BadSocket);
    let file = std::fs::File::open("/proc/self/status").unwrap();
    assert_eq!(kind(c.call(&Request::Attach(QosParams::rate(dev.clone(), 1_000_000)), Some(file.as_fd()))), ErrorKind::BadSocket);
    // A request that needs a socket but carries none.
    assert_eq!(kind(c.call(&Request::Info, None)), ErrorKind::Malformed);

    // Per-message errors, before anything is sent.
    // A deadline that is no CLOCK_MONOTONIC time (a wall-clock one, an hour
    // and more away) is refused; a merely past one is policy (datapath tests).
    let to = "10.77.0.2:9".parse().unwrap();
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    for d in [wall, qsock::monotonic_now_ns() + 3_700_000_000_000] {
        let f = PacketFlags { deadline_ns: Some(d), ..Default::default() };
        assert_eq!(kind(qsock::qsendto(tx.as_fd(), b"x", &to, &f)), ErrorKind::InvalidParams, "deadline {d}");
    }
    let misplaced = PacketFlags { frame_bytes: Some(3000), ..Default::default() };
    assert_eq!(kind(qsock::qsendto(tx.as_fd(), b"x", &to, &misplaced)), ErrorKind::InvalidParams, "frame size off a frame start");
    assert_eq!(kind(qsock::qsendto(tx2.as_fd(), b"x", &to, &PacketFlags::default())), ErrorKind::InvalidParams, "flags on an unattached socket");

    // A second init of the same device through the daemon.
    let again = InitParams { device: dev.clone(), link_rate_bps: 10_000_000, best_effort_permille: 50, replace: false };
    assert_eq!(kind(c.init(&again)), ErrorKind::AlreadyInitialized);
    assert_eq!(kind(c.init(&InitParams { device: "nosuchdev0".into(), ..again.clone() })), ErrorKind::NoSuchDevice);

    // Malformed bytes on the socket: an error answer, same connection still usable.
    let raw = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).unwrap();
    connect(raw.as_raw_fd(), &UnixAddr::new(b.bed.socket_path().as_path()).unwrap()).unwrap();
    for junk in [&b"{not json"[..], b"\x00\xff\xfe", br#"{"Attach": 5}"#] {
        sendmsg::<()>(raw.as_raw_fd(), &[IoSlice::new(junk)], &[], MsgFlags::empty(), None).unwrap();
        let mut buf = [0u8; 4096];
        let n = recv(raw.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.contains("Malformed"), "{answer}");
    }
    sendmsg::<()>(raw.as_raw_fd(), &[IoSlice::new(br#""Ping""#)], &[], MsgFlags::empty(), None).unwrap();
    let mut buf = [0u8; 4096];
    let n = recv(raw.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("Pong"));

    // Through all of it the daemon stayed up and the managed socket is intact.
    assert!(b.bed.daemon_alive());
    c.ping().unwrap();
    assert_eq!(c.info(tx.as_fd()).unwrap().guaranteed_rate_bps, 6_000_000);
}

#[test]
fn an_unprivileged_peer_manages_its_own_socket_but_cannot_init() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("priv", "10mbit").unwrap();
    let path = b.bed.socket_path();
    let dev = b.bed.server_dev.clone();
    let netns = std::fs::File::open(format!("/run/netns/{}", b.bed.server_ns)).unwrap();
    // setresuid(2) through the raw syscall changes only this thread's
    // credentials, which SO_PEERCRED records at connect.
    let (attached, init, teardown) = std::thread::spawn(move || {
        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let sock = std::net::UdpSocket::bind("10.77.0.1:0").unwrap();
        // SAFETY: plain syscall on this thread only.
        let r = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
        assert_eq!(r, 0);
        let c = Client::connect(&path).unwrap();
        let a = c.attach(sock.as_fd(), &QosParams::rate(dev.clone(), 1_000_000)).map(|a| a.classid);
        let info = c.info(sock.as_fd()).map(|i| i.guaranteed_rate_bps);
        assert_eq!(info, Ok(1_000_000));
        // The default per-user limit: 80 % of the 9.5 Mbit/s guaranteeable, 1 Mbit/s already held.
        let more = std::net::UdpSocket::bind("10.77.0.1:0").unwrap();
        let e = c.attach(more.as_fd(), &QosParams::rate(dev.clone(), 7_000_000)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::CapacityExceeded);
        assert!(e.message.contains("uid 65534 may hold at most 800") && e.message.contains("limits defaults"), "{e}");
        c.attach(more.as_fd(), &QosParams::rate(dev.clone(), 6_000_000)).expect("within the limit");
        c.detach(more.as_fd()).unwrap();
        c.detach(sock.as_fd()).unwrap();
        let p = InitParams { device: dev.clone(), link_rate_bps: 10_000_000, best_effort_permille: 50, replace: true };
        (a, c.init(&p).unwrap_err().kind, c.teardown(&dev).unwrap_err().kind)
    })
    .join()
    .unwrap();
    assert_eq!(attached, Ok("1:10".to_string()));
    assert_eq!(init, ErrorKind::PermissionDenied);
    assert_eq!(teardown, ErrorKind::PermissionDenied);
    assert!(b.bed.tc_server(&["qdisc", "show", "dev", &b.bed.server_dev]).unwrap().contains("htb 1:"), "device untouched");
}

#[test]
fn admission_configured_to_warn_admits_with_what_is_left_and_says_so() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    qsock_tests::require_root();
    let bed = testbed::Testbed::new("warn").unwrap();
    bed.init("10mbit").unwrap();
    bed.start_daemon_with(&["--admission", "warn"]).unwrap();
    let c = Client::connect(&bed.socket_path()).unwrap();
    let sock = |b: &testbed::Testbed| b.udp_socket(&b.server_ns, "10.77.0.1:0".parse().unwrap()).unwrap();
    let (a, b) = (sock(&bed), sock(&bed));
    let dev = bed.server_dev.clone();
    // 9.5 Mbit/s of the 10 can be guaranteed (5 % best-effort reserve).
    let first = c.attach(a.as_fd(), &QosParams::rate(dev.clone(), 6_000_000)).unwrap();
    assert_eq!(first.warning, None);
    // 1250 B every 2 ms = 5 Mbit/s of EDF utilisation, but 3.5 Mbit/s is left.
    let edf = QosParams {
        scheduler: SchedulerParams::Edf(qsock::EdfAttrs { lossy: true, message_bytes: 1250, min_interval_ns: 2_000_000 }),
        ..QosParams::rate(dev, 1)
    };
    let second = c.attach(b.as_fd(), &edf).unwrap();
    let w = second.warning.expect("admitted with a warning");
    assert!(w.contains("unschedulable") && w.contains("admitted anyway with 3500000 bit/s"), "{w}");
    assert_eq!(c.info(b.as_fd()).unwrap().guaranteed_rate_bps, 3_500_000);
}

#[test]
fn limits_from_the_config_are_enforced_and_named_and_bad_keys_refused() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    qsock_tests::require_root();
    let bed = testbed::Testbed::new("limit").unwrap();
    bed.init("10mbit").unwrap();
    let cfg = bed.dir.join("limits.toml");
    // A bad config is refused with the key's name, before anything is served.
    std::fs::write(&cfg, "socket_group = \"no-such-group-qsock\"\n").unwrap();
    let out = bed.qsockd().unwrap().arg("--config").arg(&cfg).arg("run").output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("socket_group"), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&cfg, "[limits]\ndefault_share_permille = 0\n").unwrap();
    let out = bed.qsockd().unwrap().arg("--config").arg(&cfg).arg("run").output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("default_share_permille"));
    // Root named in the limits: 2 sockets, 30 % of the 9.5 Mbit/s guaranteeable.
    std::fs::write(&cfg, "[[limits.user]]\nid = 0\nshare_permille = 300\nmax_sockets = 2\n").unwrap();
    bed.start_daemon_with(&["--config", cfg.to_str().unwrap()]).unwrap();
    let c = Client::connect(&bed.socket_path()).unwrap();
    let dev = bed.server_dev.clone();
    let sock = || bed.udp_socket(&bed.server_ns, "10.77.0.1:0".parse().unwrap()).unwrap();
    let (a, b, third) = (sock(), sock(), sock());
    let e = c.attach(a.as_fd(), &QosParams::rate(dev.clone(), 3_000_000)).unwrap_err();
    assert!(e.kind == ErrorKind::CapacityExceeded && e.message.contains("limits.user id 0"), "{e}");
    c.attach(a.as_fd(), &QosParams::rate(dev.clone(), 2_000_000)).unwrap();
    // qchange may not grow past the limit either; the socket keeps what it had.
    assert_eq!(kind(c.change(a.as_fd(), &QosParams::rate(dev.clone(), 3_000_000))), ErrorKind::CapacityExceeded);
    assert_eq!(c.info(a.as_fd()).unwrap().guaranteed_rate_bps, 2_000_000);
    c.attach(b.as_fd(), &QosParams::rate(dev.clone(), 500_000)).unwrap();
    let e = c.attach(third.as_fd(), &QosParams::rate(dev.clone(), 100_000)).unwrap_err();
    assert!(e.message.contains("at most 2 managed sockets"), "{e}");
}

/// A second device in the bed's namespaces (a veth pair, server side
/// `name`, addressed 10.78.0.1/24), initialised by qsockd at `rate`.
fn second_device(bed: &testbed::Testbed, name: &str, rate: &str) {
    let peer = format!("{name}p");
    testbed::run(bed.command_in(&bed.server_ns, "ip").args(["link", "add", name, "type", "veth", "peer", "name", &peer, "netns", &bed.client_ns])).unwrap();
    testbed::run(bed.command_in(&bed.server_ns, "ip").args(["addr", "add", "10.78.0.1/24", "dev", name])).unwrap();
    testbed::run(bed.command_in(&bed.server_ns, "ip").args(["link", "set", name, "up"])).unwrap();
    testbed::run(bed.command_in(&bed.client_ns, "ip").args(["link", "set", &peer, "up"])).unwrap();
    testbed::run(bed.qsockd().unwrap().args(["init", "--device", name, "--rate", rate])).unwrap();
}

/// What must not change when a request is refused: the socket's device,
/// class, guarantee and counters, and its class's rate in the kernel.
fn fingerprint(b: &Bed, c: &Client, sock: BorrowedFd<'_>) -> (String, String, u64, u64, String) {
    let i = c.info(sock).unwrap();
    let class = b.bed.tc_server(&["class", "show", "dev", &i.device, "classid", &i.classid]).unwrap();
    (i.device, i.classid, i.guaranteed_rate_bps, i.enqueued_packets, class)
}

#[test]
fn a_refused_move_to_another_device_leaves_the_socket_as_it_was() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("move", "100mbit").unwrap();
    second_device(&b.bed, "qsmv0", "10mbit");
    let (dev, small) = (b.bed.server_dev.clone(), "qsmv0".to_string());
    let path = b.bed.socket_path();
    let netns = std::fs::File::open(format!("/run/netns/{}", b.bed.server_ns)).unwrap();

    // As uid 65534 (default limit: 80 % of what each device can guarantee):
    // 9 Mbit/s on the 100 Mbit/s device may not move to the 10 Mbit/s one.
    let small2 = small.clone();
    let (before, refused, after, smaller) = std::thread::spawn(move || {
        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let sock = std::net::UdpSocket::bind("10.77.0.1:0").unwrap();
        // SAFETY: plain syscall on this thread only.
        assert_eq!(unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) }, 0);
        let c = Client::connect(&path).unwrap();
        c.attach(sock.as_fd(), &QosParams::rate(dev.clone(), 9_000_000)).unwrap();
        sock.send_to(b"x", "10.77.0.2:9").unwrap();
        let i = c.info(sock.as_fd()).unwrap();
        let before = (i.device.clone(), i.classid.clone(), i.guaranteed_rate_bps, i.enqueued_packets);
        let refused = c.change(sock.as_fd(), &QosParams::rate(small2.clone(), 9_000_000)).unwrap_err();
        let i = c.info(sock.as_fd()).expect("still managed after the refusal");
        let after = (i.device, i.classid, i.guaranteed_rate_bps, i.enqueued_packets);
        // A move that fits the limit goes through.
        let smaller = c.change(sock.as_fd(), &QosParams::rate(small2, 5_000_000)).map(|a| a.device);
        // Given back now, not by the release sweep after the socket closes:
        // the admission check below counts on the whole small device.
        c.detach(sock.as_fd()).unwrap();
        (before, refused, after, smaller)
    })
    .join()
    .unwrap();
    assert_eq!(refused.kind, ErrorKind::CapacityExceeded);
    assert!(refused.message.contains("uid 65534"), "refused by the per-user limit: {refused}");
    assert_eq!(before, after, "a refused move changes nothing");
    assert_eq!(smaller, Ok(small.clone()));

    // As root (no limit), refused by admission: the small device has 4.5 of
    // its 9.5 Mbit/s left.
    let c = &b.client;
    let filler = b.sender().unwrap();
    c.attach(filler.as_fd(), &QosParams::rate(small.clone(), 5_000_000)).unwrap();
    let sock = b.sender().unwrap();
    c.attach(sock.as_fd(), &QosParams::rate(b.bed.server_dev.clone(), 9_000_000)).unwrap();
    sock.send_to(b"x", "10.77.0.2:9").unwrap();
    let before = fingerprint(&b, c, sock.as_fd());
    assert_eq!(kind(c.change(sock.as_fd(), &QosParams::rate(small.clone(), 9_000_000))), ErrorKind::CapacityExceeded);
    assert_eq!(fingerprint(&b, c, sock.as_fd()), before, "a refused move changes nothing");
    assert_eq!(c.change(sock.as_fd(), &QosParams::rate(small.clone(), 4_000_000)).unwrap().device, small);
}

#[test]
fn a_kernel_step_that_fails_is_undone() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("undo", "10mbit").unwrap();
    let dev = b.bed.server_dev.clone();
    // A class qsockd did not make, at the id it would take next (1:10).
    b.bed.tc_server(&["class", "add", "dev", &dev, "parent", "1:1", "classid", "1:10", "htb", "rate", "1mbit"]).unwrap();
    let best_effort = || b.bed.tc_server(&["class", "show", "dev", &dev, "classid", "1:fffe"]).unwrap();
    let before = best_effort();
    let sock = b.sender().unwrap();
    let e = b.client.attach(sock.as_fd(), &QosParams::rate(dev.clone(), 4_000_000)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Kernel, "{e}");
    // Undone: not managed, best effort back at its rate, the foreign class untouched.
    assert_eq!(kind(b.client.info(sock.as_fd())), ErrorKind::NotManaged);
    assert_eq!(best_effort(), before, "the reservation was given back");
    assert!(b.bed.tc_server(&["class", "show", "dev", &dev, "classid", "1:10"]).unwrap().contains("rate 1Mbit"));
    // The whole link is still there to book, on another class id.
    let a = b.client.attach(sock.as_fd(), &QosParams::rate(dev.clone(), 9_000_000)).unwrap();
    assert_ne!(a.classid, "1:10");
}

#[test]
fn an_mptcp_socket_gets_a_clear_refusal_not_a_class_that_never_sees_a_packet() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("mptcp", "10mbit").unwrap();
    let dev = b.bed.server_dev.clone();
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let mptcp = b
        .bed
        .in_ns(&b.bed.server_ns, || {
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 262) };
            assert!(fd >= 0, "this kernel has MPTCP (see the notes): {}", std::io::Error::last_os_error());
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
        })
        .unwrap();
    let e = b.client.attach(mptcp.as_fd(), &QosParams::rate(dev.clone(), 6_000_000)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    assert!(e.message.contains("MPTCP"), "the error names why: {e}");
    assert_eq!(kind(b.client.info(mptcp.as_fd())), ErrorKind::NotManaged);
    // Nothing was booked: the whole guarantee (95 % of 10 Mbit/s) is still there.
    let tx = b.sender().unwrap();
    b.client.attach(tx.as_fd(), &QosParams::rate(dev, 9_000_000)).expect("the refusal reserved nothing");
}

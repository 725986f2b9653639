//! The application's control of its MPTCP subflows (issue 16, items 1 and
//! 3): `qsubflows` lists them on a real connection over two links, checked
//! against each link's own byte counter; qsockd, as the namespace's path
//! manager, opens, closes and prioritises them (the links' counters show
//! the effect), refuses bad requests and keeps serving, and gives the path
//! manager back on stop and after a kill; a managed connection keeps its
//! classes through a qsockd restart; fallback to TCP and non-MPTCP
//! sockets get `NotMultipath`. A managed MPTCP connection's QoS follows it:
//! each subflow gets the connection's class on its own interface, and
//! loses it when it closes.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsFd,
    process::Command,
};

use qsock::{ErrorKind, QosParams, SubflowLocal, TcpState};
use qsock_tests::{
    mptcp::{connect, listener, read_window, source},
    skip_unless_root,
};
use testbed::{
    multihomed::{LinkSpec, MultiHomed, SERVICE_IP},
    run,
};

/// Bytes the client sends.
const TRANSFER: usize = 3_000_000;
/// Each link's upstream rate, bit/s: the same on both, so a bulk transfer
/// faster than one link must use both (the default MPTCP scheduler sends on
/// the other subflow once one's window is full).
const LINK_BPS: u64 = 8_000_000;

/// The two-link bed. Without qsockd the test shapes each link's upstream
/// (tbf) and routes each source address by its own link; with qsockd
/// (`managed`) its root HTB at `up_bps` and its policy routing do both.
fn bed(tag: &str, managed: bool) -> MultiHomed {
    let links = vec![
        LinkSpec { name: "wan0".into(), down_bps: 50_000_000, up_bps: LINK_BPS, one_way_delay_us: 0, kind: "wired", metered: false, loss_ppm: 0 },
        LinkSpec { name: "wan1".into(), down_bps: 50_000_000, up_bps: LINK_BPS, one_way_delay_us: 0, kind: "wired", metered: false, loss_ppm: 0 },
    ];
    let b = MultiHomed::new(tag, links).unwrap();
    for (i, l) in b.links.iter().enumerate().filter(|_| !managed) {
        let rate = format!("{}bit", l.up_bps);
        run(Command::new("tc").args(["-n", &b.host_ns, "qdisc", "replace", "dev", &l.name, "root", "tbf", "rate", &rate, "burst", "15000", "latency", "100ms"])).unwrap();
        let (src, gw, table) = (MultiHomed::host_ip(i).to_string(), MultiHomed::gateway_ip(i).to_string(), (200 + i).to_string());
        b.ip_host(&["route", "add", "default", "via", &gw, "dev", &l.name, "table", &table]).unwrap();
        b.ip_host(&["rule", "add", "from", &src, "table", &table]).unwrap();
    }
    for ns in [&b.host_ns, &b.server_ns] {
        run(Command::new("ip").args(["-n", ns, "mptcp", "limits", "set", "subflows", "4", "add_addr_accepted", "4"])).unwrap();
    }
    b
}

/// A listener on the service address that reads [`TRANSFER`] bytes of each
/// connection, answers with the count and then waits for the client to
/// close (so the subflows stay established while the client looks at
/// them); MPTCP or plain TCP.
fn sink(b: &MultiHomed, port: u16, mptcp: bool) {
    let l = listener(b, port, mptcp);
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut c = c;
                let mut buf = vec![0u8; TRANSFER];
                if c.read_exact(&mut buf).is_ok() {
                    let _ = c.write_all(&(TRANSFER as u64).to_le_bytes());
                }
                while let Ok(1..) = c.read(&mut buf) {}
            });
        }
    });
}

/// Sends [`TRANSFER`] bytes and waits for the sink's answer: every byte
/// arrived (and was acknowledged: the answer carries the ACK).
fn send_all(s: &mut TcpStream) {
    s.write_all(&vec![7u8; TRANSFER]).unwrap();
    let mut n = [0u8; 8];
    s.read_exact(&mut n).unwrap();
    assert_eq!(u64::from_le_bytes(n), TRANSFER as u64, "the sink got every byte");
}

#[test]
fn subflows_are_listed_with_the_link_that_carries_each() {
    if skip_unless_root() {
        return;
    }
    let b = bed("sflist", false);
    // The in-kernel path manager opens the second subflow from wan1's address (id 2).
    b.ip_host(&["mptcp", "endpoint", "add", &MultiHomed::host_ip(1).to_string(), "dev", "wan1", "id", "2", "subflow"]).unwrap();
    sink(&b, 7001, true);
    let mut s = connect(&b, 7001);
    let before: Vec<u64> = (0..2).map(|i| b.link_bytes(i).unwrap().0).collect();
    // About 1.5 s at 2 × 8 Mbit/s; the join completes in the first RTTs.
    send_all(&mut s);
    let after: Vec<u64> = (0..2).map(|i| b.link_bytes(i).unwrap().0).collect();
    // The application runs on the host: interfaces are named in its namespace.
    let c = b.in_host(|| qsock::qsubflows(&s)).unwrap().unwrap();
    assert_eq!(c.token, qsock::mptcp_token(&s).unwrap());
    assert_eq!(c.subflows.len(), 2, "{c:#?}");
    assert!(c.bytes_acked >= TRANSFER as u64, "{c:#?}");
    for (i, sf) in c.subflows.iter().enumerate() {
        let link = &b.links[i];
        assert_eq!(sf.id, i as u32 + 1, "ids count up from the initial subflow: {c:#?}");
        assert_eq!(sf.local.ip(), MultiHomed::host_ip(i), "{c:#?}");
        assert_eq!(sf.remote, SocketAddr::new(SERVICE_IP.into(), 7001));
        assert_eq!(sf.interface.as_deref(), Some(link.name.as_str()));
        assert_eq!(sf.state, TcpState::Established);
        assert!(sf.rtt_us > 0 && sf.cwnd_segments > 0 && sf.mss_bytes > 0, "{sf:#?}");
        // The link's own counter proves which link carried the subflow's bytes:
        // at least what the peer acknowledged on it, at most what it sent
        // (retransmissions of what the shaper dropped included) plus headers
        // (≤ 10 % at this MSS) and the handshake.
        let on_link = after[i] - before[i];
        eprintln!("{}: subflow {} acked {} sent {} bytes; the link sent {on_link}", link.name, sf.id, sf.bytes_acked, sf.bytes_sent);
        assert!(on_link >= sf.bytes_acked && on_link <= sf.bytes_sent + sf.bytes_sent / 10 + 20_000, "{}: {on_link} bytes on the link: {sf:#?}", link.name);
        // Equal links and a transfer faster than one: each carries a real share.
        assert!(sf.bytes_acked >= TRANSFER as u64 / 5, "{}: only {} of {TRANSFER} bytes: {c:#?}", link.name, sf.bytes_acked);
    }
}

#[test]
fn a_peer_without_mptcp_falls_back_and_subflow_calls_say_so() {
    if skip_unless_root() {
        return;
    }
    let b = bed("sffb", false);
    sink(&b, 7002, false);
    let mut s = connect(&b, 7002);
    send_all(&mut s);
    let e = qsock::qsubflows(&s).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotMultipath, "{e}");
    assert!(e.message.contains("fell back"), "{e}");
    assert_eq!(qsock::mptcp_token(&s).unwrap_err().kind, ErrorKind::NotMultipath);
    // Not MPTCP at all: a TCP and a UDP socket.
    let tcp = b.in_host(|| TcpStream::connect((SERVICE_IP, 7002)).unwrap()).unwrap();
    let e = qsock::qsubflows(&tcp).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotMultipath, "{e}");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(qsock::qsubflows(&udp).unwrap_err().kind, ErrorKind::NotMultipath);
}

#[test]
fn a_connection_placed_before_its_peer_falls_back_is_managed_as_tcp() {
    if skip_unless_root() {
        return;
    }
    let (b, c) = managed_bed("sfpfb");
    sink(&b, 7010, false);
    // Attached before it connects (as qsock-run --multipath does): placed, then connected to a peer without MPTCP.
    let mut s = b
        .in_host(|| {
            let s = TcpStream::from(qsock_tests::mptcp::mptcp_fd());
            c.attach(s.as_fd(), &QosParams { device: None, ..QosParams::rate("any", 2_000_000) }).unwrap();
            let to = nix::sys::socket::SockaddrStorage::from(SocketAddr::new(SERVICE_IP.into(), 7010));
            nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&s), &to).unwrap();
            s
        })
        .unwrap();
    let mp = wait_subflows(&c, &s, "the fallen-back connection managed through its one subflow", |x| x.len() == 1 && x[0].qos.is_ok());
    assert!(mp.fallback && mp.token == 0, "{mp:#?}");
    send_all(&mut s);
    let q = c.info(s.as_fd()).unwrap();
    assert_eq!(q.guaranteed_rate_bps, 2_000_000);
    eprintln!("fallback: class {} on {} classified {} bytes", q.classid, q.device, q.enqueued_bytes);
    assert!(q.enqueued_bytes > TRANSFER as u64 / 2 && class_bytes(&b, &q.device, &q.classid) > TRANSFER as u64 / 2, "{q:#?}");
    c.detach(s.as_fd()).unwrap();
    assert!(c.list().unwrap().is_empty());
}

/// The host's path manager and limits, as the kernel reports them.
fn pm_setting(b: &MultiHomed) -> (String, String) {
    let pm = b.in_host(|| std::fs::read_to_string("/proc/sys/net/mptcp/path_manager").unwrap().trim().to_string()).unwrap();
    (pm, b.ip_host(&["mptcp", "limits", "show"]).unwrap().trim().to_string())
}

/// The managed two-link bed with qsockd as path manager (its defaults:
/// a subflow on every managed interface), and a client of it.
fn managed_bed(tag: &str) -> (MultiHomed, qsock::Client) {
    let mut b = bed(tag, true);
    b.start_daemon_with("category", "\n[multipath]\nenabled = true\n").unwrap();
    let c = b.client().unwrap();
    (b, c)
}

/// Bytes each link sent while `f` ran.
fn link_tx_during(b: &MultiHomed, f: impl FnOnce()) -> Vec<u64> {
    let before: Vec<u64> = (0..2).map(|i| b.link_bytes(i).unwrap().0).collect();
    f();
    (0..2).map(|i| b.link_bytes(i).unwrap().0 - before[i]).collect()
}

/// Sends `n` bytes and waits until the sink has read them (it answers
/// nothing mid-stream: the test reads the connection-level ACK count).
fn send_acked(s: &mut TcpStream, n: usize) {
    let acked0 = qsock::qsubflows(&*s).unwrap().bytes_acked;
    s.write_all(&vec![1u8; n]).unwrap();
    // Bounded: at 8 Mbit/s per link, n = 1 MB drains in about 1 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while qsock::qsubflows(&*s).unwrap().bytes_acked < acked0 + n as u64 {
        assert!(std::time::Instant::now() < deadline, "{n} bytes not acknowledged within 20 s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn qsockd_opens_closes_and_prioritises_subflows() {
    if skip_unless_root() {
        return;
    }
    let mut b = bed("sfctl", true);
    b.start_daemon_with("category", "\n[multipath]\nenabled = true\nopen_subflows = \"on_request\"\n").unwrap();
    assert_eq!(pm_setting(&b).0, "userspace", "qsockd took the path manager over");
    let c = b.client().unwrap();
    sink(&b, 7003, true);
    let mut s = connect(&b, 7003);
    let first = b.in_host(|| qsock::qsubflows(&s)).unwrap().unwrap();
    assert_eq!(first.subflows.len(), 1, "the userspace path manager opens nothing on its own: {first:#?}");
    assert_eq!(first.subflows[0].interface.as_deref(), Some("wan0"));
    assert_eq!((first.subflows[0].backup, first.subflows[0].peer_backup), (Some(false), Some(false)), "{first:#?}");
    let mut events = c.subflow_events(s.as_fd()).unwrap();

    // Before any data the connection is not fully established: a join is refused, with the reason.
    let e = c.open_subflow(s.as_fd(), &SubflowLocal::Interface("wan1".into()), None, std::time::Duration::from_millis(200)).unwrap_err();
    assert!(e.message.contains("fully established"), "{e}");
    send_acked(&mut s, 10_000);
    let ev = next_event(&mut events);
    assert!(matches!(&ev, qsock::SubflowEvent::ConnectionEstablished { interface: Some(i), .. } if i == "wan0"), "joins allowed from now on: {ev:?}");
    // Open: returns once established, on the interface asked for.
    let sf = c.open_subflow(s.as_fd(), &SubflowLocal::Interface("wan1".into()), None, qsock::SUBFLOW_OPEN_WAIT).unwrap();
    assert_eq!((sf.local.ip(), sf.interface.as_deref(), sf.state), (MultiHomed::host_ip(1).into(), Some("wan1"), TcpState::Established), "{sf:#?}");
    assert_eq!(sf.remote, first.subflows[0].remote, "to the initial subflow's remote by default");
    let ev = next_event(&mut events);
    assert!(matches!(&ev, qsock::SubflowEvent::Established { local, interface: Some(i), backup: false, .. } if *local == sf.local && i == "wan1"), "{ev:?}");
    let both = link_tx_during(&b, || send_acked(&mut s, 2_000_000));
    eprintln!("two subflows: {both:?} bytes on wan0, wan1");
    assert!(both.iter().all(|&n| n > 200_000), "both links carry a share of 2 MB: {both:?}");

    // Backup: the initial subflow is used only if no other can send.
    c.set_subflow_backup(s.as_fd(), 1, true).unwrap();
    let initial = first.subflows[0].local;
    let ev = next_event(&mut events);
    assert!(matches!(&ev, qsock::SubflowEvent::BackupChanged { local, backup: true, .. } if *local == initial), "{ev:?}");
    let listed = b.in_host(|| qsock::qsubflows(&s)).unwrap().unwrap();
    let flags: Vec<_> = listed.subflows.iter().map(|x| (x.id, x.backup, x.peer_backup)).collect();
    assert_eq!(flags, vec![(1, Some(true), Some(false)), (sf.id, Some(false), Some(false))], "the listing shows which is backup: {listed:#?}");
    let backup = link_tx_during(&b, || send_acked(&mut s, 1_000_000));
    eprintln!("subflow 1 backup: {backup:?}");
    assert!(backup[0] < 50_000 && backup[1] >= 1_000_000, "wan0 idle but for ACKs, wan1 carries the 1 MB: {backup:?}");
    c.set_subflow_backup(s.as_fd(), 1, false).unwrap();

    // Close: the connection goes on over the other subflow.
    assert!(matches!(next_event(&mut events), qsock::SubflowEvent::BackupChanged { backup: false, .. }));
    c.close_subflow(s.as_fd(), sf.id).unwrap();
    let ev = next_event(&mut events);
    assert!(matches!(&ev, qsock::SubflowEvent::Closed { local, .. } if *local == sf.local), "{ev:?}");
    let closed = link_tx_during(&b, || send_acked(&mut s, 1_000_000));
    eprintln!("subflow {} closed: {closed:?}", sf.id);
    assert!(closed[1] < 50_000 && closed[0] >= 1_000_000, "wan1 silent after the close: {closed:?}");
    let now = b.in_host(|| qsock::qsubflows(&s)).unwrap().unwrap();
    assert!(now.subflows.iter().all(|x| x.id != sf.id || x.state != TcpState::Established), "{now:#?}");

    // Bad requests get clear errors, and the daemon keeps serving.
    let e = c.close_subflow(s.as_fd(), 99).unwrap_err();
    assert!(e.kind == ErrorKind::InvalidParams && e.message.contains("no subflow 99"), "{e}");
    let e = c.open_subflow(s.as_fd(), &SubflowLocal::Interface("lo".into()), None, qsock::SUBFLOW_OPEN_WAIT).unwrap_err();
    assert!(e.kind == ErrorKind::NoInterface && e.message.contains("not a managed interface"), "{e}");
    let e = c.open_subflow(s.as_fd(), &SubflowLocal::Interface("nosuch0".into()), None, qsock::SUBFLOW_OPEN_WAIT).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NoInterface, "{e}");
    let tcp = b.in_host(|| TcpStream::connect((SERVICE_IP, 7003)).unwrap()).unwrap();
    let e = c.open_subflow(tcp.as_fd(), &SubflowLocal::Interface("wan1".into()), None, qsock::SUBFLOW_OPEN_WAIT).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotMultipath, "{e}");
    let e = c.set_subflow_backup(tcp.as_fd(), 1, true).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotMultipath, "{e}");
    let e = c.subflow_events(tcp.as_fd()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotMultipath, "{e}");
    c.ping().unwrap();
    // The connection still carries data end to end.
    send_acked(&mut s, 100_000);
    // Its end is the subscription's last event.
    drop(s);
    assert_eq!(next_event(&mut events), qsock::SubflowEvent::ConnectionClosed);
    assert_eq!(events.next_within(std::time::Duration::from_millis(10)).unwrap(), None, "nothing after the end");
}

/// The subscription's next event: qsockd forwards each as the kernel
/// reports it, so 5 s is a bound far above a few RTTs on this bed.
fn next_event(events: &mut qsock::SubflowEvents) -> qsock::SubflowEvent {
    events.next_within(std::time::Duration::from_secs(5)).unwrap().expect("an event within 5 s")
}

#[test]
fn the_path_manager_is_given_back_on_stop_and_after_a_kill() {
    if skip_unless_root() {
        return;
    }
    let mut b = bed("sfpm", true);
    let original = pm_setting(&b);
    assert_eq!(original.0, "kernel");
    let mp = "\n[multipath]\nenabled = true\nsubflows_max = 3\nadd_addr_accepted_max = 2\n";
    b.start_daemon_with("category", mp).unwrap();
    let (pm, limits) = pm_setting(&b);
    assert_eq!(pm, "userspace");
    assert!(limits.contains("subflows 3") && limits.contains("add_addr_accepted 2"), "{limits}");
    b.stop_daemon();
    assert_eq!(pm_setting(&b), original, "SIGTERM: restored");
    // Killed: the successor restores the original, not the killed daemon's setting.
    b.start_daemon_with("category", mp).unwrap();
    b.kill_daemon();
    assert_eq!(pm_setting(&b).0, "userspace", "nothing ran at the kill");
    b.start_daemon_with("category", mp).unwrap();
    b.stop_daemon();
    assert_eq!(pm_setting(&b), original, "the successor gave back the setting from before the killed daemon");
    // Off in the config: the path manager is left alone and subflow calls say why.
    b.start_daemon("category").unwrap();
    assert_eq!(pm_setting(&b), original);
    sink(&b, 7004, true);
    let s = connect(&b, 7004);
    let e = b.client().unwrap().close_subflow(s.as_fd(), 1).unwrap_err();
    assert!(e.kind == ErrorKind::Unsupported && e.message.contains("without multipath"), "{e}");
}

#[test]
fn by_default_qsockd_opens_a_subflow_on_every_managed_interface() {
    if skip_unless_root() {
        return;
    }
    let mut b = bed("sfauto", true);
    b.start_daemon_with("category", "\n[multipath]\nenabled = true\n").unwrap();
    sink(&b, 7005, true);
    let mut s = connect(&b, 7005);
    // The application asks for nothing: qsockd opens wan1's subflow once the connection is established.
    let tx = link_tx_during(&b, || send_all(&mut s));
    let c = b.in_host(|| qsock::qsubflows(&s)).unwrap().unwrap();
    eprintln!("{tx:?} bytes on wan0, wan1; subflows {:?}", c.subflows.iter().map(|x| (x.id, x.interface.clone(), x.bytes_acked)).collect::<Vec<_>>());
    let on: Vec<Option<&str>> = c.subflows.iter().map(|x| x.interface.as_deref()).collect();
    assert_eq!(on, [Some("wan0"), Some("wan1")], "{c:#?}");
    // Two equal links and a bulk transfer faster than one: each carries a real share.
    assert!(tx.iter().all(|&n| n >= TRANSFER as u64 / 5), "{tx:?}");
}

/// Bytes HTB class `classid` of `dev` (host side) has sent.
fn class_bytes(b: &MultiHomed, dev: &str, classid: &str) -> u64 {
    // iproute2 6.1 prints HTB classes as text only: " Sent 114620 bytes 110 pkt (...)".
    let out = run(Command::new("tc").args(["-n", &b.host_ns, "-s", "class", "show", "dev", dev, "classid", classid])).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let sent = text.split_once("Sent ").map(|(_, r)| r).unwrap_or_else(|| panic!("no class {classid} on {dev}: {text}"));
    sent.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unreadable: {text}"))
}

#[test]
fn a_managed_connection_has_its_class_on_every_interface_it_uses() {
    if skip_unless_root() {
        return;
    }
    let (b, c) = managed_bed("sfqos");
    sink(&b, 7006, true);
    let mut s = connect(&b, 7006);
    // Attached with one subflow: no device, so every managed interface it uses gives the guarantee.
    let params = QosParams { device: None, ..QosParams::rate("any", 2_000_000) };
    let a = c.attach(s.as_fd(), &params).unwrap();
    assert_eq!(a.device, "wan0", "{a:?}");
    // The first data makes the connection established; qsockd then joins wan1, and its QoS follows.
    send_all(&mut s);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let info = loop {
        let i = c.info(s.as_fd()).unwrap();
        if i.multipath.as_ref().is_some_and(|m| m.subflows.len() == 2) || std::time::Instant::now() > deadline {
            break i;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mp = info.multipath.clone().expect("an MPTCP connection's qinfo lists its subflows");
    assert!(!mp.fallback && mp.token != 0, "{mp:#?}");
    assert_eq!(mp.subflows.len(), 2, "{mp:#?}");
    for (sf, dev) in mp.subflows.iter().zip(["wan0", "wan1"]) {
        let q = sf.qos.as_ref().unwrap_or_else(|e| panic!("{dev}: no QoS: {e}"));
        assert_eq!((sf.interface.as_deref(), q.device.as_str()), (Some(dev), dev), "{sf:#?}");
        assert_eq!(q.guaranteed_rate_bps, 2_000_000, "replicated: the whole guarantee on each interface");
        // The data path classified the subflow's packets by its cookie into that class.
        eprintln!("{dev}: class {} classified {} bytes, the class sent {}", q.classid, q.enqueued_bytes, class_bytes(&b, dev, &q.classid));
        assert!(q.enqueued_bytes > 100_000, "{dev}: {} bytes classified", q.enqueued_bytes);
        assert!(class_bytes(&b, dev, &q.classid) >= q.enqueued_bytes / 2, "{dev}: the class carried them");
    }
    // qchange reaches every subflow stream; a device it is not on is refused.
    let faster = QosParams { device: None, ..QosParams::rate("any", 3_000_000) };
    c.change(s.as_fd(), &faster).unwrap();
    let mp = c.info(s.as_fd()).unwrap().multipath.unwrap();
    assert!(mp.subflows.iter().all(|x| x.qos.as_ref().is_ok_and(|q| q.guaranteed_rate_bps == 3_000_000)), "{mp:#?}");
    let e = c.change(s.as_fd(), &QosParams { device: Some("wan1".into()), ..faster.clone() }).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidParams, "{e}");
    // Admission on the subflow's link refuses more than it has (8 Mbit/s): nothing changes.
    let e = c.change(s.as_fd(), &QosParams { device: None, ..QosParams::rate("any", 50_000_000) }).unwrap_err();
    assert_eq!(e.kind, ErrorKind::CapacityExceeded, "{e}");
    let mp = c.info(s.as_fd()).unwrap().multipath.unwrap();
    assert!(mp.subflows.iter().all(|x| x.qos.as_ref().is_ok_and(|q| q.guaranteed_rate_bps == 3_000_000)), "unchanged: {mp:#?}");
    // The subflow closes: its entry goes, the connection keeps the other.
    let id2 = b.in_host(|| qsock::qsubflows(&s)).unwrap().unwrap().subflows[1].id;
    c.close_subflow(s.as_fd(), id2).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while c.info(s.as_fd()).unwrap().multipath.unwrap().subflows.len() != 1 {
        assert!(std::time::Instant::now() < deadline, "the closed subflow's QoS was not released");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let left = c.list().unwrap();
    assert_eq!(left.iter().map(|x| x.device.as_str()).collect::<Vec<_>>(), ["wan0"], "one subflow stream left: {left:#?}");
    // qclose releases the connection and its subflows.
    c.detach(s.as_fd()).unwrap();
    assert_eq!(c.info(s.as_fd()).unwrap_err().kind, ErrorKind::NotManaged);
    assert!(c.list().unwrap().is_empty());
}

#[test]
fn an_aggregate_connection_splits_its_guarantee_over_its_links() {
    if skip_unless_root() {
        return;
    }
    let (b, c) = managed_bed("sfsplit");
    sink(&b, 7009, true);
    let with = |policy: qsock::MultipathPolicy, rate: u64| {
        let mut p = QosParams { device: None, ..QosParams::rate("any", rate) };
        p.intents.multipath = Some(qsock::Multipath::Active);
        p.intents.multipath_policy = Some(policy);
        p
    };
    // Replicated (Handover): each link must give the whole 10 Mbit/s, which one 8 Mbit/s link cannot.
    let handover = connect(&b, 7009);
    let e = c.attach(handover.as_fd(), &with(qsock::MultipathPolicy::Handover, 10_000_000)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::CapacityExceeded, "{e}");
    drop(handover);
    // Split (Aggregate): 5 + 5 Mbit/s, in proportion to the two equal links; the first subflow holds only its share.
    let mut s = connect(&b, 7009);
    let a = c.attach(s.as_fd(), &with(qsock::MultipathPolicy::Aggregate, 10_000_000)).unwrap();
    assert_eq!(c.info(s.as_fd()).unwrap().guaranteed_rate_bps, 5_000_000, "{a:?}");
    send_acked(&mut s, 1_000_000);
    let rates = |mp: &qsock::MultipathQos| mp.subflows.iter().map(|x| x.qos.as_ref().map_or(0, |q| q.guaranteed_rate_bps)).collect::<Vec<_>>();
    let mp = wait_subflows(&c, &s, "a share on each link", |x| x.len() == 2 && x.iter().all(|q| q.qos.is_ok()));
    assert_eq!(rates(&mp), [5_000_000, 5_000_000], "{mp:#?}");
    assert_eq!(c.info(s.as_fd()).unwrap().guaranteed_rate_bps, 10_000_000, "qinfo gives the connection's whole guarantee");
    // qchange divides the new rate; a subflow that closes leaves its share to the others.
    c.change(s.as_fd(), &with(qsock::MultipathPolicy::Aggregate, 6_000_000)).unwrap();
    assert_eq!(rates(&c.info(s.as_fd()).unwrap().multipath.unwrap()), [3_000_000, 3_000_000]);
    let id2 = b.in_host(|| qsock::qsubflows(&s)).unwrap().unwrap().subflows[1].id;
    c.close_subflow(s.as_fd(), id2).unwrap();
    let mp = wait_subflows(&c, &s, "the whole rate on wan0", |x| x.len() == 1 && x[0].qos.as_ref().is_ok_and(|q| q.guaranteed_rate_bps == 6_000_000));
    assert_eq!(mp.subflows[0].interface.as_deref(), Some("wan0"));
    send_acked(&mut s, 100_000);
    c.detach(s.as_fd()).unwrap();
    assert!(c.list().unwrap().is_empty());
}

/// Polls `c.info(s)` until `done` holds of the connection's subflows, at most 10 s.
fn wait_subflows(c: &qsock::Client, s: &TcpStream, what: &str, done: impl Fn(&[qsock::SubflowQos]) -> bool) -> qsock::MultipathQos {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mp = c.info(s.as_fd()).ok().and_then(|i| i.multipath);
        match mp {
            Some(mp) if done(&mp.subflows) => return mp,
            mp => assert!(std::time::Instant::now() < deadline, "{what} within 10 s: {mp:#?}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// (interface, classid, bytes classified) of each subflow that has QoS.
fn subflow_classes(mp: &qsock::MultipathQos) -> Vec<(String, String, u64)> {
    mp.subflows.iter().filter_map(|x| x.qos.as_ref().ok().map(|q| (q.device.clone(), q.classid.clone(), q.enqueued_bytes))).collect()
}

#[test]
fn a_managed_connection_keeps_its_classes_through_kill_9_and_restart() {
    if skip_unless_root() {
        return;
    }
    let mut b = bed("sfrst", true);
    let mp_cfg = "\n[multipath]\nenabled = true\n";
    b.start_daemon_with("category", mp_cfg).unwrap();
    let c = b.client().unwrap();
    sink(&b, 7008, true);
    let params = QosParams { device: None, ..QosParams::rate("any", 2_000_000) };
    let mut s = connect(&b, 7008);
    c.attach(s.as_fd(), &params).unwrap();
    send_acked(&mut s, 1_000_000);
    let both = |x: &[qsock::SubflowQos]| x.len() == 2 && x.iter().all(|q| q.qos.is_ok());
    let before = subflow_classes(&wait_subflows(&c, &s, "a class on each link", both));
    // A second connection, closed while no qsockd runs.
    let mut gone = connect(&b, 7008);
    c.attach(gone.as_fd(), &params).unwrap();
    send_acked(&mut gone, 100_000);
    wait_subflows(&c, &gone, "the second connection managed", |x| x.iter().any(|q| q.qos.is_ok()));

    b.kill_daemon();
    drop(gone);
    b.start_daemon_with("category", mp_cfg).unwrap();
    // The same client, never told: it reconnects and claims the connection again.
    let after = wait_subflows(&c, &s, "the connection recovered with both subflows", both);
    let kept = subflow_classes(&after);
    eprintln!("before the kill {before:?}; after the restart {kept:?}");
    for ((d0, c0, n0), (d1, c1, n1)) in before.iter().zip(&kept) {
        assert_eq!((d0, c0), (d1, c1), "each subflow kept its class on its link");
        assert!(n1 >= n0, "counters kept");
    }
    let listed = c.list().unwrap();
    let pid = std::process::id() as i32;
    assert!(listed.len() == 2 && listed.iter().all(|x| x.pid == pid), "the two subflow streams, claimed; the closed connection's released: {listed:#?}");
    // QoS still applies on both links, and follows subflows that come and go.
    send_acked(&mut s, 2_000_000);
    let grown = subflow_classes(&wait_subflows(&c, &s, "both classes", both));
    for ((d, _, n0), (_, _, n1)) in kept.iter().zip(&grown) {
        assert!(n1 - n0 > 100_000, "{d}: {} bytes classified after the restart", n1 - n0);
    }
    let id2 = b.in_host(|| qsock::qsubflows(&s)).unwrap().unwrap().subflows[1].id;
    c.close_subflow(s.as_fd(), id2).unwrap();
    wait_subflows(&c, &s, "wan1's subflow released", |x| x.len() == 1);
    let sf = c.open_subflow(s.as_fd(), &SubflowLocal::Interface("wan1".into()), None, qsock::SUBFLOW_OPEN_WAIT).unwrap();
    assert_eq!(sf.interface.as_deref(), Some("wan1"));
    let again = wait_subflows(&c, &s, "the new subflow's class", both);
    assert_eq!(subflow_classes(&again).iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), ["wan0", "wan1"]);
    send_acked(&mut s, 100_000);
    c.detach(s.as_fd()).unwrap();
    assert!(c.list().unwrap().is_empty(), "qclose released every subflow stream");
}

#[test]
fn a_download_moves_off_a_link_that_goes_down_and_back_when_it_returns() {
    if skip_unless_root() {
        return;
    }
    let mut b = bed("sfho", true);
    b.start_daemon_with("category", "\n[multipath]\nenabled = true\n").unwrap();
    source(&b, 7007);
    let mut s = connect(&b, 7007);
    // Both links carry the download once qsockd has joined wan1.
    let t0 = std::time::Instant::now();
    let (before, _) = read_window(&mut s, t0, t0 + std::time::Duration::from_secs(1));
    let subflows = |s: &TcpStream| b.in_host(|| qsock::qsubflows(s)).unwrap().unwrap().subflows;
    let on = |s: &TcpStream, dev: &str| subflows(s).iter().any(|x| x.interface.as_deref() == Some(dev) && x.state == TcpState::Established);
    assert!(before > 0 && on(&s, "wan0") && on(&s, "wan1"), "{:#?}", subflows(&s));
    let c = b.client().unwrap();
    let mut events = c.subflow_events(s.as_fd()).unwrap();
    // wan0 goes down: qsockd withdraws its address from the connection; the peer moves to wan1.
    b.set_link(0, false).unwrap();
    let down = std::time::Instant::now();
    let (after, stall) = read_window(&mut s, down, down + std::time::Duration::from_secs(2));
    eprintln!("link down: longest stall {stall:?}, {after} bytes in the 2 s after");
    assert!(after > 500_000, "the download goes on over wan1: {after} bytes in 2 s");
    assert!(!on(&s, "wan0"), "the dead link's subflow is gone: {:#?}", subflows(&s));
    // The application heard of it: the interface first, then its subflow's close.
    assert_eq!(next_event(&mut events), qsock::SubflowEvent::InterfaceDown { interface: "wan0".into() });
    let ev = next_event(&mut events);
    assert!(matches!(&ev, qsock::SubflowEvent::Closed { local, .. } if local.ip() == std::net::IpAddr::from(MultiHomed::host_ip(0))), "{ev:?}");
    // wan0 returns: after the hold-down, the connection uses it again.
    b.set_link(0, true).unwrap();
    let up = std::time::Instant::now();
    while !on(&s, "wan0") {
        assert!(up.elapsed() < std::time::Duration::from_secs(10), "no subflow on wan0 10 s after it returned: {:#?}", subflows(&s));
        read_window(&mut s, std::time::Instant::now(), std::time::Instant::now() + std::time::Duration::from_millis(50));
    }
    eprintln!("back on wan0 {:?} after it returned", up.elapsed());
}

//! qsock sessions (issue 17) on the real kernel: a host with two links
//! (wan0 10 ms RTT, wan1 70 ms RTT, each through a delay line that can be
//! blackholed) stripes one session over both to a server; qsockd on the
//! host attaches each path socket on its interface.
use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    sync::mpsc,
    time::{Duration, Instant},
};

use qsock::{DropPriority, PacketFlags};
use qsock_session::{ErrorKind, Mode, Objective, PathInfo, Semantics, Session, SessionConfig, SessionInfo, SessionSocket};
use qsock_tests::skip_unless_root;
use testbed::multihomed::{LinkSpec, MultiHomed, SERVICE_IP};

/// Bytes of each test message.
const MESSAGE: usize = 1200;

fn bed(tag: &str) -> MultiHomed {
    let link = |name: &str, up_bps, one_way_delay_us| LinkSpec {
        name: name.into(),
        down_bps: 20_000_000,
        up_bps,
        one_way_delay_us,
        kind: "wired",
        metered: false,
        loss_ppm: 0,
    };
    let mut b = MultiHomed::new(tag, vec![link("wan0", 8_000_000, 5_000), link("wan1", 4_000_000, 35_000)]).unwrap();
    b.start_daemon("category").unwrap();
    b
}

fn config(b: &MultiHomed, semantics: Semantics, objectives: &[Objective]) -> SessionConfig {
    let mut c = SessionConfig::new(semantics, objectives);
    c.daemon = Some(b.socket_path());
    c
}

/// What the server's side of one session received: its messages and final
/// info, or what went wrong.
type Served = Result<(Vec<Vec<u8>>, SessionInfo), String>;

/// A listener on the server accepting `sessions` sessions; each one's
/// messages (until the peer closes) and final info go to the channel.
fn serve(b: &MultiHomed, port: u16, cfg: SessionConfig, sessions: usize) -> mpsc::Receiver<Served> {
    let (tx, rx) = mpsc::channel();
    let l = b.in_server(move || SessionSocket::new(cfg).unwrap().bind(SocketAddr::new(SERVICE_IP.into(), port)).unwrap()).unwrap();
    let ns = b.server_ns.clone();
    std::thread::spawn(move || {
        // Accepting creates the session's path sockets: in the server's namespace.
        testbed::in_namespace(&ns, move || {
            for _ in 0..sessions {
                let r = l.accept().map_err(|e| e.to_string()).and_then(|s| {
                    let mut got = Vec::new();
                    loop {
                        match s.read_timeout(Duration::from_secs(30)) {
                            Ok(Some(m)) => got.push(m),
                            Ok(None) => break,
                            Err(e) => return Err(format!("after {} messages: {e}", got.len())),
                        }
                    }
                    let info = s.info();
                    let _ = s.close();
                    Ok((got, info))
                });
                let _ = tx.send(r);
            }
        })
        .unwrap();
    });
    rx
}

fn connect(b: &MultiHomed, port: u16, cfg: SessionConfig) -> qsock_session::Result<Session> {
    b.in_host(move || SessionSocket::new(cfg)?.connect(SocketAddr::new(SERVICE_IP.into(), port))).unwrap()
}

/// Message `i`: its number, then bytes that depend on it.
fn message(i: u64) -> Vec<u8> {
    let mut m = i.to_be_bytes().to_vec();
    m.extend((0..MESSAGE - 8).map(|k| (i as usize * 31 + k) as u8));
    m
}

/// Waits until both of `s`'s paths have joined (bounded: 5 s).
fn both_active(s: &Session) {
    let t0 = Instant::now();
    while s.info().paths.iter().filter(|p| p.state == qsock_session::path::PathState::Active).count() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(5), "not both paths joined: {:#?}", s.info());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn path_on<'a>(info: &'a SessionInfo, dev: &str) -> &'a PathInfo {
    info.paths.iter().find(|p| p.interface.as_deref() == Some(dev)).unwrap_or_else(|| panic!("no path on {dev}: {info:#?}"))
}

#[test]
fn ordered_lossless_delivers_every_message_in_order_over_both_paths_and_through_a_blackhole() {
    if skip_unless_root() {
        return;
    }
    let b = bed("sslsl");
    let cfg = config(&b, Semantics::OrderedLossless, &[Objective::Throughput]);
    let rx = serve(&b, 7500, cfg.clone(), 1);
    let s = connect(&b, 7500, cfg).unwrap();
    assert_eq!(s.info().mode, Mode::Striped);
    both_active(&s);
    // 3 MB: about 2 s over both links; wan0 is blackholed (no link event) once a third was acknowledged.
    let n = 2500u64;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..n {
                s.write(&message(i), &PacketFlags::default()).unwrap();
            }
        });
        let t0 = Instant::now();
        while s.info().acked < n / 3 {
            assert!(t0.elapsed() < Duration::from_secs(30), "a third not acknowledged in 30 s: {:#?}", s.info());
            std::thread::sleep(Duration::from_millis(5));
        }
        b.set_blackhole(0, true).unwrap();
    });
    let sent = s.close().expect("everything acknowledged");
    let (got, _) = rx.recv_timeout(Duration::from_secs(60)).unwrap().unwrap();
    assert_eq!(got.len() as u64, n, "every message arrived once");
    for (i, m) in got.iter().enumerate() {
        assert_eq!(*m, message(i as u64), "message {i} in order and intact");
    }
    let (wan0, wan1) = (path_on(&sent, "wan0"), path_on(&sent, "wan1"));
    assert!(wan0.sent_packets > 100 && wan1.sent_packets > 100, "both paths carried data: {sent:#?}");
    assert!(wan0.lost_packets > 0 && wan1.copies > 0, "the blackholed path's messages went again on wan1: {sent:#?}");
}

#[test]
fn a_join_or_datagram_without_the_sessions_proof_is_refused() {
    if skip_unless_root() {
        return;
    }
    let b = bed("ssjoin");
    let cfg = config(&b, Semantics::UnorderedLossy, &[Objective::Latency]);
    let rx = serve(&b, 7501, cfg.clone(), 1);
    let s = connect(&b, 7501, cfg).unwrap();
    s.write(b"first", &PacketFlags::default()).unwrap();
    let info = s.info();
    let endpoint = info.paths[0].remote;
    // An off-path host knows the connection id and the endpoint, not the secret.
    let intruder = b.in_host(|| UdpSocket::bind((MultiHomed::host_ip(0), 0)).unwrap()).unwrap();
    let mut join = Vec::new();
    qsock_session::wire::encode(&qsock_session::wire::Packet::Join { conn: info.conn, path: 9, nonce: 1, proof: [0; 16] }, &mut join);
    let mut data = Vec::new();
    qsock_session::wire::encode(
        &qsock_session::wire::Packet::Data {
            conn: info.conn,
            path: 0,
            flags: 0,
            seq: 1,
            path_seq: 0,
            sent_us: 0,
            budget_us: 0,
            hold_from: 0,
            floor: 0,
            payload: b"forged",
        },
        &mut data,
    );
    for d in [&join, &data, &b"garbage".to_vec()] {
        intruder.send_to(d, endpoint).unwrap();
    }
    // The join gets no answer (one would come within an RTT, 10 ms; 500 ms is the bound).
    intruder.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    assert!(intruder.recv(&mut [0u8; 64]).is_err(), "a join without the proof was answered");
    s.write(b"last", &PacketFlags::default()).unwrap();
    s.close().unwrap();
    let (got, server) = rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();
    assert!(!got.iter().any(|m| m == b"forged"), "a forged message reached the application");
    assert_eq!(server.refused_datagrams, 3, "join, forged data and garbage refused: {server:#?}");
    assert!(!server.paths.iter().any(|p| p.id == 9), "no path was added: {server:#?}");
}

#[test]
fn a_plain_peer_gets_a_plain_connection_and_a_garbled_one_an_error() {
    if skip_unless_root() {
        return;
    }
    let b = bed("ssplain");
    // A plain TCP echo server.
    let plain = b.in_server(|| TcpListener::bind((SERVICE_IP, 7502)).unwrap()).unwrap();
    std::thread::spawn(move || {
        for c in plain.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = c.try_clone().unwrap();
                let mut w = c;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    let cfg = config(&b, Semantics::OrderedLossless, &[]);
    let t0 = Instant::now();
    let s = connect(&b, 7502, cfg.clone()).unwrap();
    let took = t0.elapsed();
    assert!(matches!(s.info().mode, Mode::Plain { .. }), "{:?}", s.info().mode);
    // Bound: the answer wait (2 × the 10 ms TCP RTT + 250 ms) and a second connect.
    assert!(took < Duration::from_secs(1), "fallback took {took:?}");
    s.write(b"ping", &PacketFlags::default()).unwrap();
    assert_eq!(s.read_timeout(Duration::from_secs(5)).unwrap().unwrap(), b"ping");
    assert_eq!(s.write(&vec![0u8; 5000], &PacketFlags::default()).unwrap_err().kind, ErrorKind::TooLarge);

    // A client that starts like the protocol and then sends garbage gets an
    // error on the listener's side, which then serves the next session.
    let (tx, rx) = mpsc::channel();
    let l = b.in_server(|| SessionSocket::new(SessionConfig::new(Semantics::OrderedLossless, &[])).unwrap().bind((SERVICE_IP, 7503).into()).unwrap()).unwrap();
    let ns = b.server_ns.clone();
    std::thread::spawn(move || {
        testbed::in_namespace(&ns, move || {
            for _ in 0..3 {
                let _ = tx.send(l.accept().map(|s| s.info().mode));
            }
        })
        .unwrap();
    });
    b.in_host(|| {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect((SERVICE_IP, 7503)).unwrap();
        c.write_all(b"QSS1\x00\x00\x00\x05{nope").unwrap();
    })
    .unwrap();
    let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(first.unwrap_err().kind, ErrorKind::Protocol);
    // A well-formed hello with a semantics no version knows: refused, with the reason.
    let reason = b
        .in_host(|| {
            use std::io::Write;
            let mut c = std::net::TcpStream::connect((SERVICE_IP, 7503)).unwrap();
            let body = br#"{"semantics":"reliable-ish","objectives":[],"addresses":[],"transports":["udp"],"max_message_bytes":1000}"#;
            c.write_all(b"QSS1").unwrap();
            c.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
            c.write_all(body).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            qsock_session::handshake::read_frame::<qsock_session::handshake::Answer>(&mut c).unwrap()
        })
        .unwrap();
    assert!(
        matches!(&reason, qsock_session::handshake::Answer::Refused { reason } if reason.contains("reliable-ish")),
        "an unknown semantics is refused by name: {reason:?}"
    );
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap_err().kind, ErrorKind::Protocol);
    let good = connect(&b, 7503, cfg).unwrap();
    // The listener has one address, the host two: a striped session.
    assert_eq!(good.info().mode, Mode::Striped);
    assert!(rx.recv_timeout(Duration::from_secs(5)).unwrap().is_ok());
}

#[test]
fn each_message_carries_its_flags_onto_the_path_that_sends_it_and_close_leaves_nothing() {
    if skip_unless_root() {
        return;
    }
    let b = bed("ssflag");
    let mut cfg = config(&b, Semantics::OrderedLossy, &[Objective::Latency]);
    // A class of its own on each interface, so deadlines are judged there.
    cfg.path_scheduler = qsock::SchedulerParams::Rate(qsock::RateAttrs::guaranteed(2_000_000));
    let rx = serve(&b, 7504, cfg.clone(), 1);
    let s = connect(&b, 7504, cfg).unwrap();
    both_active(&s);
    // Non-droppable messages whose deadline has already passed: the session
    // sends each on two paths (none is in time), and each interface's data
    // path sends them late and counts them.
    let past = qsock::monotonic_now_ns() - 1_000_000;
    let flags = PacketFlags { deadline_ns: Some(past), drop_priority: DropPriority::NON_DROPPABLE, ..Default::default() };
    for i in 0..50 {
        s.write(&message(i), &flags).unwrap();
    }
    let t0 = Instant::now();
    loop {
        let q = s.path_qinfo();
        assert_eq!(q.len(), 2, "both path sockets are managed: {q:?}");
        let late: Vec<u64> = q.iter().map(|(_, r)| r.as_ref().map(|i| i.past_deadline_units).unwrap_or(0)).collect();
        if late.iter().all(|l| *l > 0) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "the data path of each path saw the deadlines: {late:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = b.client().unwrap();
    assert_eq!(c.list().unwrap().len(), 2, "two path sockets managed while the session lives");
    s.close().unwrap();
    let (got, _) = rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();
    assert_eq!(got.len(), 50, "non-droppable: every message arrived");
    // Teardown: the path sockets close, and qsockd releases them and their classes.
    let t0 = Instant::now();
    while !c.list().unwrap().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "qsockd still manages {:?}", c.list().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `n` stamped messages on `s`, one every `gap`, each due `budget`
/// after it is written; returns how many were written.
fn paced(s: &Session, n: u64, gap: Duration, budget: Duration) -> u64 {
    let t0 = Instant::now();
    for i in 0..n {
        std::thread::sleep((t0 + gap * i as u32).saturating_duration_since(Instant::now()));
        let now = qsock::monotonic_now_ns();
        let flags = PacketFlags { deadline_ns: Some(now + budget.as_nanos() as u64), ..Default::default() };
        s.write(&qsock_tests::session::stamped(i, now, MESSAGE), &flags).unwrap_or_else(|e| panic!("message {i}: {e}; {:#?}", s.info()));
    }
    n
}

#[test]
fn each_semantics_keeps_its_promise_on_two_lossy_paths() {
    if skip_unless_root() {
        return;
    }
    // 1 % random loss each way on both links (the delay line's Bernoulli loss).
    let link = |name: &str, up_bps, one_way_delay_us| LinkSpec {
        name: name.into(),
        down_bps: 20_000_000,
        up_bps,
        one_way_delay_us,
        kind: "wired",
        metered: false,
        loss_ppm: 10_000,
    };
    let mut b = MultiHomed::new("sslossy", vec![link("wan0", 8_000_000, 5_000), link("wan1", 4_000_000, 35_000)]).unwrap();
    b.start_daemon("category").unwrap();
    // 1500 messages of 1200 bytes, one every 2 ms (4.8 Mbit/s): about 30
    // lost on the way at 1 %, each due 250 ms after it is written.
    let (n, budget) = (1500u64, Duration::from_millis(250));
    for (k, semantics) in [Semantics::UnorderedLossy, Semantics::UnorderedLossless, Semantics::OrderedLossy, Semantics::OrderedLossless].into_iter().enumerate()
    {
        let port = 7510 + k as u16;
        let cfg = config(&b, semantics, &[Objective::Latency]);
        let rx = qsock_tests::session::receive_stamped(&b, port, cfg);
        let s = connect(&b, port, config(&b, semantics, &[Objective::Latency])).unwrap();
        paced(&s, n, Duration::from_millis(2), budget);
        s.close().unwrap();
        let got = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        let name = semantics.name();
        assert!(got.iter().all(|a| a.stamp.is_some()), "{name}: every message intact");
        let numbers: Vec<u64> = got.iter().map(|a| a.stamp.unwrap().0).collect();
        let mut once = numbers.clone();
        once.sort_unstable();
        once.dedup();
        assert_eq!(once.len(), numbers.len(), "{name}: no message reached the application twice");
        if semantics.lossless() {
            assert_eq!(numbers.len() as u64, n, "{name}: every message arrived");
        }
        if semantics.ordered() {
            assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{name}: released in order");
        }
        if !semantics.lossless() {
            // Released by its deadline, with 100 ms for the receiver's own
            // scheduling beside a busy CPU: an ordered lossy receiver never
            // waits past a deadline for a message that does not come.
            let late: Vec<(u64, u64)> = got
                .iter()
                .map(|a| (a.stamp.unwrap().0, a.at_ns.saturating_sub(a.stamp.unwrap().1) / 1_000_000))
                .filter(|(_, ms)| *ms > (budget.as_millis() + 100) as u64)
                .collect();
            assert!(late.is_empty(), "{name}: released after the deadline (number, ms): {late:?}");
        }
    }
}

#[test]
fn a_flapping_link_is_kept_out_until_it_holds_and_nothing_is_lost() {
    if skip_unless_root() {
        return;
    }
    let b = bed("ssflap");
    let cfg = config(&b, Semantics::OrderedLossless, &[Objective::Throughput]);
    let rx = serve(&b, 7520, cfg.clone(), 1);
    let s = connect(&b, 7520, cfg).unwrap();
    both_active(&s);
    let n = 4000u64;
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for i in 0..n {
                s.write(&message(i), &PacketFlags::default()).unwrap();
            }
        });
        // wan0 flaps: 300 ms dead, 300 ms alive, five times (SRTLA users'
        // complaint). Its probes never succeed for a whole READMIT_AFTER (1 s).
        for _ in 0..5 {
            b.set_blackhole(0, true).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            b.set_blackhole(0, false).unwrap();
            std::thread::sleep(Duration::from_millis(300));
        }
        let flapped = s.info();
        let wan0 = path_on(&flapped, "wan0");
        assert_eq!(wan0.times_suspect, 1, "suspect once and kept out while it flapped: {flapped:#?}");
        assert_ne!(wan0.state, qsock_session::path::PathState::Active, "not re-admitted 300 ms after the last flap: {flapped:#?}");
        // Steady again: re-admitted once its probes held for READMIT_AFTER (bound: 3 s).
        let t0 = Instant::now();
        while path_on(&s.info(), "wan0").state != qsock_session::path::PathState::Active {
            assert!(t0.elapsed() < Duration::from_secs(3), "wan0 not re-admitted: {:#?}", s.info());
            std::thread::sleep(Duration::from_millis(10));
        }
        writer.join().unwrap();
    });
    s.close().expect("everything acknowledged");
    let (got, _) = rx.recv_timeout(Duration::from_secs(60)).unwrap().unwrap();
    assert_eq!(got.len() as u64, n, "every message arrived once");
    assert!(got.iter().enumerate().all(|(i, m)| *m == message(i as u64)), "in order and intact");
}

#[test]
fn an_encrypted_session_hides_and_authenticates_every_datagram() {
    if skip_unless_root() {
        return;
    }
    let b = bed("sscrypt");
    let mut cfg = config(&b, Semantics::OrderedLossless, &[Objective::Throughput]);
    cfg.encrypt = true;
    let rx = serve(&b, 7530, cfg.clone(), 1);
    // Capture wan1's frames on the host while the session runs: no message text may show.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sniffer = {
        let (ns, stop) = (b.host_ns.clone(), stop.clone());
        std::thread::spawn(move || testbed::in_namespace(&ns, move || sniff("wan1", &stop)).unwrap())
    };
    let s = connect(&b, 7530, cfg).unwrap();
    assert!(s.info().encrypted, "{:#?}", s.info());
    both_active(&s);
    let secret_text = b"attack at dawn, bring the footage";
    let n = 600u64;
    for i in 0..n {
        let mut m = secret_text.to_vec();
        m.extend(message(i));
        s.write(&m, &PacketFlags::default()).unwrap();
    }
    assert_eq!(
        s.write(&vec![0u8; qsock_session::MAX_MESSAGE_BYTES], &PacketFlags::default()).unwrap_err().kind,
        ErrorKind::TooLarge,
        "sealing takes 24 bytes of the datagram"
    );
    // A datagram to the session's endpoint that was not sealed with its key is refused.
    let endpoint = s.info().paths[0].remote;
    let intruder = b.in_host(|| UdpSocket::bind((MultiHomed::host_ip(0), 0)).unwrap()).unwrap();
    let mut forged = Vec::new();
    let conn = s.info().conn;
    qsock_session::wire::encode(&qsock_session::wire::Packet::Probe { conn, path: 0, path_seq: 1, sent_us: 0 }, &mut forged);
    forged.extend([0u8; qsock_session::crypto::OVERHEAD]);
    intruder.send_to(&forged, endpoint).unwrap();
    let sent = s.close().expect("everything acknowledged");
    let (got, server) = rx.recv_timeout(Duration::from_secs(60)).unwrap().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let wire = sniffer.join().unwrap();
    assert_eq!(got.len() as u64, n, "every message arrived");
    assert!(got.iter().enumerate().all(|(i, m)| m[secret_text.len()..] == message(i as u64)[..]), "in order and intact");
    assert!(server.encrypted && server.refused_datagrams >= 1, "the forged datagram was refused: {server:#?}");
    assert!(path_on(&sent, "wan1").sent_packets > 10 && wire.len() > 10_000, "wan1 carried the session: {} bytes seen", wire.len());
    assert!(!wire.windows(secret_text.len()).any(|w| w == secret_text), "message text on the wire");
}

/// Every frame device `dev` sends or receives until `stop`, concatenated
/// (an AF_PACKET socket of the calling thread's namespace).
fn sniff(dev: &str, stop: &std::sync::atomic::AtomicBool) -> Vec<u8> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let proto = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
    // SAFETY: socket(2), checked and owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_ll is valid; its fields are set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = nix::net::if_::if_nametoindex(dev).unwrap() as i32;
    // SAFETY: bind with a sockaddr_ll of its size.
    let r = unsafe { libc::bind(fd.as_raw_fd(), &sll as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_ll>() as u32) };
    assert_eq!(r, 0, "bind to {dev}: {}", std::io::Error::last_os_error());
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(0, 100_000)).unwrap();
    let (mut all, mut buf) = (Vec::new(), vec![0u8; 65536]);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 {
            all.extend_from_slice(&buf[..n as usize]);
        }
    }
    all
}

#[test]
fn the_sensor_sender_keeps_its_deadlines_over_a_session() {
    if skip_unless_root() {
        return;
    }
    let b = bed("sssens");
    let out = b.dir.join("arrivals.json");
    let mut rx = std::process::Command::new("ip");
    rx.args(["netns", "exec", &b.server_ns]).arg(testbed::workspace_bin("sensor-receiver").unwrap());
    rx.args(["--session", "--bind", &format!("{SERVICE_IP}:7540"), "--timeout-s", "30", "--out"]).arg(&out);
    let mut rx = testbed::spawn_ready(rx, &b.dir.join("sensor-receiver.log")).unwrap();
    // Fig. 7's trace shape: a reading every 2–18 ms, each due 20–60 ms after it, for 5 s.
    let tx = std::process::Command::new("ip")
        .args(["netns", "exec", &b.host_ns])
        .arg(testbed::workspace_bin("sensor").unwrap())
        .args(["--mode", "session", "--dest", &format!("{SERVICE_IP}:7540"), "--duration-s", "5"])
        .env("QSOCK_SOCKET", b.socket_path())
        .output()
        .unwrap();
    assert!(tx.status.success(), "sensor: {}", String::from_utf8_lossy(&tx.stderr));
    assert!(rx.wait().unwrap().success(), "sensor-receiver: {}", std::fs::read_to_string(b.dir.join("sensor-receiver.log")).unwrap_or_default());
    let summary: serde_json::Value = serde_json::from_slice(&tx.stdout).unwrap();
    let sent = summary["sent_offsets_ns"].as_array().unwrap().len();
    let arrivals: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let on_time = arrivals.iter().filter(|a| a["arrival_ns"].as_u64() <= a["deadline_ns"].as_u64()).count();
    assert!(summary["session"]["paths"].as_array().unwrap().len() == 2, "striped over both links: {summary}");
    // Bound: 98 % by their deadline. The idle path is 10 ms RTT against deadlines
    // of 20 ms and more; the rest is room for a busy host's scheduling.
    assert!(on_time * 100 >= sent * 98, "{on_time} of {sent} readings by their deadline: {summary}");
}

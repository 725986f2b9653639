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
    let link =
        |name: &str, up_bps, one_way_delay_us| LinkSpec { name: name.into(), down_bps: 20_000_000, up_bps, one_way_delay_us, kind: "wired", metered: false };
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
    // Bound: the answer wait (2 × the 10 ms TCP RTT + 50 ms) and a second connect.
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
            for _ in 0..2 {
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

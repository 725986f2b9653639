//! Intents decide multipath (issue 16, item 4): `qsocket` creates an MPTCP
//! socket when the intents ask for multipath (TAPS `multipath`, or Socket
//! Intents' readings: resilience sensitive → Handover, bulk of a large file
//! → Aggregate), `qconnect` places and connects it, and qsockd, as path
//! manager, gives each interface the role the policy implies: under
//! Handover the second link gets a backup subflow (it carries nothing
//! until the first link dies, then everything), under Aggregate both carry
//! the upload, and a Prohibit keeps a link out; a bulk connection's
//! subflow on the link a query uses is a backup while the query lives.
//! Each link's byte counter says which carried what.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::{AsFd, AsRawFd, FromRawFd},
    time::{Duration, Instant},
};

use qsock::{Category, Intents, InterfacePreference, Preference, QosParams, Resilience, TcpState};
use qsock_tests::{
    mptcp::{listener, wait_backup},
    skip_unless_root,
};
use testbed::{
    multihomed::{LinkSpec, MultiHomed, SERVICE_IP},
    run,
};

/// Each link's upstream rate (qsockd's root HTB), bit/s.
const LINK_BPS: u64 = 8_000_000;
/// Bytes of one upload.
const UPLOAD: usize = 2_000_000;

fn bed(tag: &str) -> MultiHomed {
    let link =
        |name: &str| LinkSpec { name: name.into(), down_bps: 50_000_000, up_bps: LINK_BPS, one_way_delay_us: 0, kind: "wired", metered: false, loss_ppm: 0 };
    let mut b = MultiHomed::new(tag, vec![link("wan0"), link("wan1")]).unwrap();
    for ns in [&b.host_ns, &b.server_ns] {
        run(std::process::Command::new("ip").args(["-n", ns, "mptcp", "limits", "set", "subflows", "4", "add_addr_accepted", "4"])).unwrap();
    }
    b.start_daemon_with("category", "\n[multipath]\nenabled = true\n").unwrap();
    // An MPTCP sink: reads everything, acknowledging each 1 MB with a byte.
    let l = listener(&b, 7400, true);
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut c = c;
                let mut buf = vec![0u8; 64 * 1024];
                let mut total = 0usize;
                while let Ok(n @ 1..) = c.read(&mut buf) {
                    let before = total / 1_000_000;
                    total += n;
                    for _ in before..total / 1_000_000 {
                        let _ = c.write_all(&[1]);
                    }
                }
            });
        }
    });
    b
}

/// A socket made as `qsocket` makes it for `intents` (the protocol from
/// `qsock::multipath_protocol`; attached through the bed's client, so
/// beds in parallel do not share the process-wide one), placed by the
/// policy and connected as `qconnect` does; waits until qsockd has joined
/// the subflows the plan allows (`want` interfaces). The client is
/// returned too: closing it releases the connection (and its plan).
fn connected(b: &MultiHomed, intents: Intents, want: &[&str]) -> (TcpStream, qsock::Client) {
    connected_on(b, intents, "wan0", want)
}

/// [`connected`], the policy placing the initial subflow on `initial`.
fn connected_on(b: &MultiHomed, intents: Intents, initial: &str, want: &[&str]) -> (TcpStream, qsock::Client) {
    let c = b.client().unwrap();
    let params = QosParams::intents(intents);
    let proto = qsock::multipath_protocol(libc::AF_INET, libc::SOCK_STREAM, 0, &params.intents).expect("these intents ask for MPTCP");
    let s = b
        .in_host(|| {
            // SAFETY: socket(2), checked and owned at once.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, proto) };
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            let s = TcpStream::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
            let a = c.attach(s.as_fd(), &params).unwrap();
            assert_eq!(a.device, initial, "{a:?}");
            let to = nix::sys::socket::SockaddrStorage::from(SocketAddr::new(SERVICE_IP.into(), 7400));
            nix::sys::socket::connect(s.as_raw_fd(), &to).unwrap();
            s
        })
        .unwrap();
    assert!(b.in_host(|| qsock::qsubflows(&s)).unwrap().is_ok(), "qsocket made an MPTCP socket for these intents");
    // The first data makes the connection fully established; then qsockd joins.
    let mut s = s;
    s.write_all(&[0u8; 1000]).unwrap();
    let t0 = Instant::now();
    loop {
        let on: Vec<String> = b
            .in_host(|| qsock::qsubflows(&s))
            .unwrap()
            .unwrap()
            .subflows
            .into_iter()
            .filter(|x| x.state == TcpState::Established)
            .filter_map(|x| x.interface)
            .collect();
        if want.iter().all(|w| on.iter().any(|o| o == w)) {
            return (s, c);
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "subflows on {want:?} within 10 s; have {on:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Uploads [`UPLOAD`] bytes and waits for the sink's acknowledgements;
/// returns the bytes each link sent meanwhile.
fn upload(b: &MultiHomed, s: &mut TcpStream) -> [u64; 2] {
    let before = [b.link_bytes(0).unwrap().0, b.link_bytes(1).unwrap().0];
    s.write_all(&vec![7u8; UPLOAD]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut ack = [0u8; 2];
    s.read_exact(&mut ack).unwrap();
    [b.link_bytes(0).unwrap().0 - before[0], b.link_bytes(1).unwrap().0 - before[1]]
}

#[test]
fn handover_intent_keeps_the_second_link_as_backup_until_the_first_dies() {
    if skip_unless_root() {
        return;
    }
    let b = bed("mihand");
    // Resilience sensitive, nothing else: Socket Intents' reading is Handover.
    let intents = Intents { resilience: Some(Resilience::Sensitive), ..Default::default() };
    let (mut s, _client) = connected(&b, intents, &["wan0", "wan1"]);
    let tx = upload(&b, &mut s);
    eprintln!("handover: {tx:?} bytes sent on wan0, wan1");
    assert!(tx[0] >= UPLOAD as u64 && tx[1] < UPLOAD as u64 / 50, "the backup subflow carried nothing: {tx:?}");
    b.set_link(0, false).unwrap();
    let tx = upload(&b, &mut s);
    eprintln!("after wan0 went down: {tx:?}");
    assert!(tx[1] >= UPLOAD as u64, "the backup took over: {tx:?}");
}

#[test]
fn aggregate_intent_uses_both_links_and_a_prohibit_keeps_one_out() {
    if skip_unless_root() {
        return;
    }
    let b = bed("miaggr");
    let bulk = Intents { category: Some(Category::BulkTransfer), file_size_bytes: Some(50_000_000), ..Default::default() };
    let (mut s, _client) = connected(&b, bulk.clone(), &["wan0", "wan1"]);
    let tx = upload(&b, &mut s);
    eprintln!("aggregate: {tx:?} bytes sent on wan0, wan1");
    assert!(tx.iter().all(|&n| n >= UPLOAD as u64 / 5), "both links carry a real share: {tx:?}");
    // The same intents with the second link prohibited: one subflow only.
    let prohibit = Intents { interfaces: vec![InterfacePreference::new(Preference::Prohibit, "wan1").unwrap()], ..bulk };
    let (mut s, _client2) = connected(&b, prohibit, &["wan0"]);
    let tx = upload(&b, &mut s);
    let c = b.in_host(|| qsock::qsubflows(&s)).unwrap().unwrap();
    eprintln!("prohibit wan1: {tx:?}; subflows {:?}", c.subflows.iter().map(|x| (&x.interface, x.state)).collect::<Vec<_>>());
    let log = std::fs::read_to_string(b.dir.join("qsockd.log")).unwrap();
    assert!(!c.subflows.iter().any(|x| x.interface.as_deref() == Some("wan1") && x.state == TcpState::Established), "no subflow on wan1:\n{log}");
    assert!(tx[1] < UPLOAD as u64 / 50, "{tx:?}");
}

#[test]
fn a_bulk_connection_yields_the_link_a_query_uses_while_the_query_lives() {
    if skip_unless_root() {
        return;
    }
    let b = bed("miyield");
    let prefer = |name: &str| vec![InterfacePreference::new(Preference::Prefer, name).unwrap()];
    // Aggregate, as `qsock-run --multipath-policy aggregate` asks.
    let aggregate = Intents { multipath: Some(qsock::Multipath::Active), multipath_policy: Some(qsock::MultipathPolicy::Aggregate), ..Default::default() };
    let bulk = Intents { category: Some(Category::BulkTransfer), interfaces: prefer("wan1"), ..aggregate.clone() };
    let (mut bulk_sock, _bulk_client) = connected_on(&b, bulk, "wan1", &["wan0", "wan1"]);
    let tx = upload(&b, &mut bulk_sock);
    eprintln!("bulk alone: {tx:?} bytes sent on wan0, wan1");
    assert!(tx.iter().all(|&n| n >= UPLOAD as u64 / 5), "both links carry the bulk: {tx:?}");

    // A query on wan0: the bulk's subflow there becomes a backup and carries nothing.
    let query = Intents { category: Some(Category::Query), interfaces: prefer("wan0"), ..aggregate };
    let (query_sock, query_client) = connected_on(&b, query, "wan0", &["wan0"]);
    wait_backup(&b, &bulk_sock, "wan0", true);
    let tx = upload(&b, &mut bulk_sock);
    eprintln!("bulk beside a query on wan0: {tx:?}");
    assert!(tx[0] < UPLOAD as u64 / 50 && tx[1] >= UPLOAD as u64, "the bulk kept off wan0: {tx:?}");

    // The query ends: wan0 carries the bulk again.
    drop(query_sock);
    drop(query_client);
    wait_backup(&b, &bulk_sock, "wan0", false);
    let tx = upload(&b, &mut bulk_sock);
    eprintln!("bulk after the query: {tx:?}");
    assert!(tx.iter().all(|&n| n >= UPLOAD as u64 / 5), "both links carry the bulk again: {tx:?}");
}

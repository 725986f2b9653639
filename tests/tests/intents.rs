//! Socket Intents on a multi-homed host (issue 9): the policy's choice is
//! applied for real (source binding + qsockd's policy routing), link events
//! are followed, TAPS Require/Prohibit are hard, bad input is refused while
//! the daemon keeps serving, routing goes at shutdown, and the preload
//! launcher places an unmodified curl.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::{AsFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use qsock::{Category, Client, ErrorKind, Intents, InterfacePreference, Preference, QosParams};
use qsock_tests::require_root;
use testbed::{
    multihomed::{LinkSpec, MultiHomed, SERVICE_IP},
    run, workspace_bin,
};

/// Bytes each test transfer carries.
const TRANSFER: usize = 1_000_000;
/// Bytes a link may carry besides the test's own traffic (ARP, the other
/// direction's ACKs are counted as rx, not tx).
const LEAK_BOUND: u64 = 20_000;

fn bed(tag: &str) -> MultiHomed {
    require_root();
    let links = vec![
        // Delays through the delay line: the RTTs differ for real (and are measured).
        LinkSpec { name: "dsl".into(), down_bps: 6_000_000, up_bps: 100_000_000, one_way_delay_us: 2_000, kind: "wired", metered: false, loss_ppm: 0 },
        LinkSpec { name: "lte".into(), down_bps: 12_000_000, up_bps: 100_000_000, one_way_delay_us: 10_000, kind: "cellular", metered: true, loss_ppm: 0 },
    ];
    let mut b = MultiHomed::new(tag, links).unwrap();
    b.start_daemon("category").unwrap();
    b
}

/// A TCP sink on the service address: reads and discards every connection.
fn sink(b: &MultiHomed, port: u16) {
    let l = b.in_server(|| TcpListener::bind((SERVICE_IP, port))).unwrap().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut c = c;
                let mut buf = [0u8; 65536];
                while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
}

fn tcp_socket(b: &MultiHomed) -> OwnedFd {
    b.in_host(|| {
        // SAFETY: socket(2), checked and owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        unsafe { OwnedFd::from_raw_fd(fd) }
    })
    .unwrap()
}

fn intents(category: Category) -> QosParams {
    QosParams::intents(Intents { category: Some(category), ..Default::default() })
}

/// Attaches a new TCP socket with `params`, connects it to the sink and
/// sends [`TRANSFER`] bytes; returns the device qsockd chose and the bytes
/// each link sent meanwhile.
fn transfer(b: &MultiHomed, c: &Client, params: &QosParams, port: u16) -> (String, Vec<u64>) {
    let before: Vec<u64> = (0..2).map(|i| b.link_bytes(i).unwrap().0).collect();
    let fd = tcp_socket(b);
    let info = c.attach(fd.as_fd(), params).unwrap();
    let sel = info.selection.clone().expect("the policy chose");
    assert_eq!(sel.interface, info.device);
    let dest = nix::sys::socket::SockaddrStorage::from(SocketAddr::new(SERVICE_IP.into(), port));
    nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &dest).expect("connect");
    let mut s = TcpStream::from(fd);
    assert_eq!(s.local_addr().unwrap().ip(), sel.source, "bound to the chosen interface's address");
    s.write_all(&vec![7u8; TRANSFER]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let q = c.info(s.as_fd()).unwrap();
    assert_eq!(q.selection.as_ref(), Some(&sel), "qinfo reports the decision");
    // Wait until the peer has everything (its FIN after reading to the end).
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = qsock_tests::read_some(&mut s, &mut [0u8; 1]);
    let after: Vec<u64> = (0..2).map(|i| b.link_bytes(i).unwrap().0).collect();
    (info.device, after.iter().zip(&before).map(|(a, b)| a - b).collect())
}

/// Polls qsockd's view of interface `name` until `pred` holds (bounded: 5 s).
fn wait_for_interface(c: &Client, name: &str, pred: impl Fn(&qsock::InterfaceInfo) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let all = c.interfaces().unwrap();
        if all.iter().any(|i| i.name == name && pred(i)) {
            return;
        }
        assert!(Instant::now() < deadline, "qsockd never saw the change on {name}: {all:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn each_category_leaves_the_interface_the_policy_chose_and_nothing_leaks() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = bed("icat");
    sink(&b, 5001);
    let c = b.client().unwrap();
    let (dev, sent) = transfer(&b, &c, &intents(Category::BulkTransfer), 5001);
    assert_eq!(dev, "lte", "bulk goes where the capacity is");
    assert!(sent[1] >= TRANSFER as u64, "lte carried the transfer: {sent:?}");
    assert!(sent[0] < LEAK_BOUND, "nothing leaked out of dsl: {sent:?}");
    let (dev, sent) = transfer(&b, &c, &intents(Category::Query), 5001);
    assert_eq!(dev, "dsl", "queries go where the RTT is lowest");
    assert!(sent[0] >= TRANSFER as u64, "dsl carried the transfer: {sent:?}");
    assert!(sent[1] < LEAK_BOUND, "nothing leaked out of lte: {sent:?}");
    // The choice sits under the socket's QoS on that interface: a guaranteed rate, placed by intent.
    let mut guaranteed = intents(Category::BulkTransfer);
    guaranteed.scheduler = qsock::SchedulerParams::Rate(qsock::RateAttrs::guaranteed(2_000_000));
    let on_lte = |c: &Client| c.interfaces().unwrap().iter().find(|i| i.name == "lte").unwrap().managed_sockets;
    let before = on_lte(&c);
    let fd = tcp_socket(&b);
    let info = c.attach(fd.as_fd(), &guaranteed).unwrap();
    assert_eq!(info.device, "lte");
    assert_eq!(on_lte(&c), before + 1);
    let classes = run(std::process::Command::new("tc").args(["-n", &b.host_ns, "class", "show", "dev", "lte"])).unwrap();
    assert!(String::from_utf8_lossy(&classes.stdout).contains(&format!("class htb {} ", info.classid)), "its class is on lte");
}

#[test]
fn a_link_that_goes_down_is_avoided_and_used_again_when_it_returns() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = bed("idown");
    sink(&b, 5002);
    let c = b.client().unwrap();
    b.set_link(1, false).unwrap();
    wait_for_interface(&c, "lte", |i| !i.up);
    let (dev, sent) = transfer(&b, &c, &intents(Category::BulkTransfer), 5002);
    assert_eq!(dev, "dsl", "bulk avoids the down link");
    assert!(sent[0] >= TRANSFER as u64);
    let fd = tcp_socket(&b);
    let require = QosParams::intents(Intents { interfaces: vec![InterfacePreference::new(Preference::Require, "lte").unwrap()], ..Default::default() });
    let e = c.attach(fd.as_fd(), &require).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NoInterface, "{e}");
    assert!(e.message.contains("lte: down"), "{e}");
    b.set_link(1, true).unwrap();
    wait_for_interface(&c, "lte", |i| i.up);
    // Routes through lte went with it; qsockd put them back.
    let (dev, sent) = transfer(&b, &c, &intents(Category::BulkTransfer), 5002);
    assert_eq!(dev, "lte");
    assert!(sent[1] >= TRANSFER as u64 && sent[0] < LEAK_BOUND, "{sent:?}");
}

#[test]
fn require_and_prohibit_are_hard_and_bad_input_is_refused() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = bed("ireq");
    let c = b.client().unwrap();
    let with = |prefs: &[(Preference, &str)]| {
        let p = prefs.iter().map(|(l, s)| InterfacePreference::new(*l, s).unwrap()).collect();
        QosParams::intents(Intents { category: Some(Category::BulkTransfer), interfaces: p, ..Default::default() })
    };
    let try_attach = |p: &QosParams| c.attach(tcp_socket(&b).as_fd(), p);
    // Prohibit metered: bulk goes to dsl after all.
    assert_eq!(try_attach(&with(&[(Preference::Prohibit, "type:metered")])).unwrap().device, "dsl");
    // Avoid only informs: with lte the only wired-free choice left, it is still used.
    assert_eq!(try_attach(&with(&[(Preference::Avoid, "type:metered"), (Preference::Prohibit, "dsl")])).unwrap().device, "lte");
    let e = try_attach(&with(&[(Preference::Require, "type:wifi")])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NoInterface, "{e}");
    let e = try_attach(&with(&[(Preference::Prohibit, "dsl"), (Preference::Prohibit, "lte")])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NoInterface, "{e}");
    let e = try_attach(&with(&[(Preference::Require, "wlan0")])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidParams);
    assert!(e.message.contains("does not manage"), "{e}");
    let mut p = intents(Category::Query);
    p.policy = Some("fastest".into());
    let e = try_attach(&p).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidParams);
    assert!(e.message.contains("not enabled"), "{e}");
    // A connected socket is not moved.
    sink(&b, 5003);
    let s = b.in_host(|| TcpStream::connect((SERVICE_IP, 5003))).unwrap().unwrap();
    let e = c.attach(s.as_fd(), &intents(Category::BulkTransfer)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::SocketInUse, "{e}");
    // A malformed request (an attach without its socket) gets an answer; the daemon keeps serving.
    let e = Client::connect(&b.socket_path()).unwrap().call(&qsock::proto::Request::Attach(p), None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Malformed);
    assert_eq!(try_attach(&intents(Category::Query)).unwrap().device, "dsl");
    assert!(c.ping().is_ok());
}

#[test]
fn routing_rules_and_tables_are_gone_after_shutdown() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let mut b = bed("iroute");
    let rules = b.ip_host(&["rule", "show"]).unwrap();
    assert!(rules.contains("from 10.81.0.2 lookup 1000"), "{rules}");
    assert!(rules.contains("from 10.82.0.2 lookup 1001"), "{rules}");
    assert!(b.ip_host(&["route", "show", "table", "1001"]).unwrap().contains("default via 10.82.0.1 dev lte"));
    b.stop_daemon();
    let rules = b.ip_host(&["rule", "show"]).unwrap();
    assert!(!rules.contains("lookup 1000") && !rules.contains("lookup 1001"), "{rules}");
    for t in ["1000", "1001"] {
        let r = std::process::Command::new("ip").args(["-n", &b.host_ns, "route", "show", "table", t]).output().unwrap();
        assert!(r.stdout.is_empty(), "table {t} still has {}", String::from_utf8_lossy(&r.stdout));
    }
}

#[test]
fn the_preload_launcher_places_an_unmodified_curl() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let mut b = bed("ipre");
    let root = b.dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("big.bin"), vec![1u8; TRANSFER]).unwrap();
    b.start_web_server(&root).unwrap();
    let launcher = workspace_bin("qsock-run").unwrap();
    let curl = |args: &[&str]| {
        let mut c = b.host_command(&launcher);
        c.args(args).args(["--", "curl", "-s", "-S", "-o", "/dev/null", "-w", "%{local_ip}", &format!("http://{SERVICE_IP}/big.bin")]);
        c.output().unwrap()
    };
    let rx_before = b.link_bytes(1).unwrap().1;
    let out = curl(&["--category", "bulk-transfer"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), MultiHomed::host_ip(1).to_string(), "bulk: curl's socket was bound to lte's address");
    assert!(b.link_bytes(1).unwrap().1 - rx_before >= TRANSFER as u64, "the download came in over lte");
    let out = curl(&["--category", "query"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), MultiHomed::host_ip(0).to_string(), "query: dsl");
    let out = curl(&["--prohibit", "dsl", "--prohibit", "lte"]);
    assert!(!out.status.success(), "curl cannot connect when no interface is allowed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("qsock: NoInterface"), "{err}");
    // Without the launcher curl runs unmanaged over the main table's link.
    let plain = b.host_command("curl").args(["-s", "-o", "/dev/null", "-w", "%{local_ip}", &format!("http://{SERVICE_IP}/big.bin")]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&plain.stdout), MultiHomed::host_ip(0).to_string());
    // Stopping the bed's web server stops its workers too (none are left running).
    let master: u32 = std::fs::read_to_string(b.dir.join("nginx.pid")).unwrap().trim().parse().unwrap();
    let workers = |m: u32| {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path().join("stat")).is_ok_and(|st| {
                    let f: Vec<&str> = st.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
                    f.first() != Some(&"Z") && f.get(1) == Some(&m.to_string().as_str())
                })
            })
            .count()
    };
    assert!(workers(master) > 0, "nginx has workers while it serves");
    b.stop_web_server();
    assert_eq!(workers(master), 0, "no nginx worker outlives the bed");
}

#[test]
fn an_interface_that_appears_is_managed_and_one_that_vanishes_is_forgotten() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    require_root();
    let links =
        vec![LinkSpec { name: "dsl".into(), down_bps: 6_000_000, up_bps: 100_000_000, one_way_delay_us: 0, kind: "wired", metered: false, loss_ppm: 0 }];
    let mut b = MultiHomed::new("iappr", links).unwrap();
    b.start_daemon_with("category", "\n[[interfaces]]\nname = \"wlan0\"\nnominal_down_bps = 50000000\nnominal_up_bps = 50000000\nkind = \"wifi\"\n").unwrap();
    let c = b.client().unwrap();
    wait_for_interface(&c, "wlan0", |i| !i.present);
    let wifi = QosParams::intents(Intents { interfaces: vec![InterfacePreference::new(Preference::Require, "type:wifi").unwrap()], ..Default::default() });
    let e = c.attach(tcp_socket(&b).as_fd(), &wifi).unwrap_err();
    assert!(e.kind == ErrorKind::NoInterface && e.message.contains("wlan0: absent"), "{e}");
    // It appears (a veth pair stands in for a Wi-Fi interface: this kernel has no dummy) without a restart.
    for args in [
        &["link", "add", "wlan0", "type", "veth", "peer", "name", "wlan0p"][..],
        &["addr", "add", "10.99.0.2/24", "dev", "wlan0"],
        &["link", "set", "wlan0p", "up"],
        &["link", "set", "wlan0", "up"],
    ] {
        b.ip_host(args).unwrap();
    }
    wait_for_interface(&c, "wlan0", |i| i.up && i.addresses.contains(&"10.99.0.2".parse().unwrap()));
    let info = c.attach(tcp_socket(&b).as_fd(), &wifi).unwrap();
    assert_eq!((info.device.as_str(), info.selection.unwrap().source.to_string()), ("wlan0", "10.99.0.2".to_string()));
    let qdisc = run(std::process::Command::new("tc").args(["-n", &b.host_ns, "qdisc", "show", "dev", "wlan0"])).unwrap();
    assert!(String::from_utf8_lossy(&qdisc.stdout).contains("qdisc htb 1: root"), "qsock's root qdisc is on the new interface");
    assert!(b.ip_host(&["rule", "show"]).unwrap().contains("from 10.99.0.2 lookup 1001"));
    b.ip_host(&["link", "del", "wlan0"]).unwrap();
    wait_for_interface(&c, "wlan0", |i| !i.present);
    assert!(!b.ip_host(&["rule", "show"]).unwrap().contains("10.99.0.2"), "its rule went with it");
    assert_eq!(c.attach(tcp_socket(&b).as_fd(), &wifi).unwrap_err().kind, ErrorKind::NoInterface);
    assert!(c.ping().is_ok());
}

#[test]
fn qconnect_asks_the_policy_then_connects() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = bed("iconn");
    sink(&b, 5004);
    // The library's own connection to qsockd (qconnect, qinterfaces) finds the bed's socket here.
    std::env::set_var("QSOCK_SOCKET", b.socket_path());
    let fd = tcp_socket(&b);
    let params = QosParams::intents(Intents { capacity_profile: Some(qsock::CapacityProfile::CapacitySeeking), ..Default::default() });
    let info = b.in_host(|| qsock::qconnect(&fd, &SocketAddr::new(SERVICE_IP.into(), 5004), &params)).unwrap().unwrap();
    assert_eq!(info.device, "lte", "capacity-seeking: the most capacity");
    let s = TcpStream::from(fd);
    assert_eq!(s.peer_addr().unwrap(), SocketAddr::new(SERVICE_IP.into(), 5004));
    assert_eq!(s.local_addr().unwrap().ip(), std::net::IpAddr::from(MultiHomed::host_ip(1)));
    let ifs = qsock::qinterfaces().unwrap();
    assert_eq!(ifs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["dsl", "lte"]);
    assert!(ifs.iter().all(|i| i.present && i.up && i.table.is_some()));
}

//! qsockd init / teardown leave the device as it was.
use qsock_tests::require_root;
use testbed::{run, Testbed};

fn device_view(bed: &Testbed) -> String {
    let q = bed.tc_server(&["qdisc", "show", "dev", &bed.server_dev]).unwrap();
    let f = bed.tc_server(&["filter", "show", "dev", &bed.server_dev, "egress"]).unwrap();
    let c = bed.tc_server(&["class", "show", "dev", &bed.server_dev]).unwrap();
    format!("{q}--\n{f}--\n{c}")
}

#[test]
fn init_then_teardown_restores_default_qdisc() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    require_root();
    let bed = Testbed::new("life").unwrap();
    let before = device_view(&bed);
    bed.init("10mbit").unwrap();
    let during = device_view(&bed);
    assert!(during.contains("qdisc htb 1: root"), "{during}");
    assert!(during.contains("qdisc clsact"), "{during}");
    assert!(during.contains("qsock_egress"), "{during}");
    assert!(during.contains("class htb 1:fffe parent 1:1"), "{during}");
    assert!(bed.pin_root.read_dir().unwrap().next().is_some(), "maps are pinned");
    run(bed.qsockd().unwrap().args(["teardown", "--device", &bed.server_dev])).unwrap();
    assert_eq!(device_view(&bed), before);
    // Nothing pinned is left behind.
    assert!(bed.pin_root.read_dir().map(|mut d| d.next().is_none()).unwrap_or(true));
}

#[test]
fn foreign_root_qdisc_is_refused_then_replaced_and_restored() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    require_root();
    let bed = Testbed::new("fgn").unwrap();
    bed.tc_server(&["qdisc", "add", "dev", &bed.server_dev, "root", "handle", "5:", "tbf", "rate", "3mbit", "burst", "32kb", "latency", "40ms"]).unwrap();
    let before = device_view(&bed);
    let refused = bed.qsockd().unwrap().args(["init", "--device", &bed.server_dev, "--rate", "10mbit"]).output().unwrap();
    assert!(!refused.status.success());
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(msg.contains("ForeignQdisc") && msg.contains("tbf"), "{msg}");
    assert_eq!(device_view(&bed), before, "a refused init changes nothing");

    run(bed.qsockd().unwrap().args(["init", "--device", &bed.server_dev, "--rate", "10mbit", "--replace"])).unwrap();
    assert!(device_view(&bed).contains("qdisc htb 1: root"));
    run(bed.qsockd().unwrap().args(["teardown", "--device", &bed.server_dev])).unwrap();
    assert_eq!(device_view(&bed), before, "teardown restores the tbf with its parameters");
}

#[test]
fn second_init_and_teardown_of_unknown_device_are_refused() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    require_root();
    let bed = Testbed::new("twice").unwrap();
    bed.init("10mbit").unwrap();
    let again = bed.qsockd().unwrap().args(["init", "--device", &bed.server_dev, "--rate", "10mbit"]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("AlreadyInitialized"));
    let none = bed.qsockd().unwrap().args(["teardown", "--device", "nosuchdev0"]).output().unwrap();
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("NotInitialized"));
    let nodev = bed.qsockd().unwrap().args(["init", "--device", "nosuchdev0", "--rate", "10mbit"]).output().unwrap();
    assert!(String::from_utf8_lossy(&nodev.stderr).contains("NoSuchDevice"));
}

#[test]
fn a_restarted_daemon_keeps_what_it_booked_and_parks_what_nobody_books() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = qsock_tests::Bed::new("restart", "10mbit").unwrap();
    let tx = b.sender().unwrap();
    b.client.attach(std::os::fd::AsFd::as_fd(&tx), &b.rate(3_000_000)).unwrap();
    // qsockd leaves classes and map entries in place when it exits.
    b.bed.stop_daemon();
    assert!(b.class_in_use("1:10"));
    // A class in qsock's range that no book accounts for (as a crashed older qsockd could leave).
    b.bed.tc_server(&["class", "add", "dev", &b.bed.server_dev, "parent", "1:1", "classid", "1:20", "htb", "rate", "1mbit"]).unwrap();
    b.bed.start_daemon().unwrap();
    let classes = b.bed.tc_server(&["class", "show", "dev", &b.bed.server_dev]).unwrap();
    assert!(b.class_in_use("1:10"), "the booked socket keeps its class: {classes}");
    assert!(!b.class_in_use("1:20"), "the class nobody books is parked: {classes}");
    assert!(classes.contains("class htb 1:fffe parent 1:1 prio 7 rate 7Mbit"), "the recovered reservation still counts: {classes}");
    // The client that attached it reconnects on its own and still manages it.
    assert_eq!(b.client.info(std::os::fd::AsFd::as_fd(&tx)).unwrap().classid, "1:10");
    let c = qsock::Client::connect(&b.bed.socket_path()).unwrap();
    assert_eq!(c.attach(std::os::fd::AsFd::as_fd(&tx), &b.rate(3_000_000)).unwrap_err().kind, qsock::ErrorKind::AlreadyManaged);
}

#[test]
fn init_configured_installs_every_listed_interface_once() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    require_root();
    let bed = Testbed::new("lcfg").unwrap();
    let before = device_view(&bed);
    let cfg = bed.dir.join("qsockd.toml");
    std::fs::write(&cfg, "").unwrap();
    let out = bed.qsockd().unwrap().arg("--config").arg(&cfg).args(["init", "--configured"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("lists no [[interfaces]]"));
    std::fs::write(&cfg, format!("[[interfaces]]\nname = \"{}\"\nnominal_down_bps = 10000000\nnominal_up_bps = 8000000\n\n[[interfaces]]\nname = \"absent0\"\nnominal_down_bps = 1000000\nnominal_up_bps = 1000000\n", bed.server_dev)).unwrap();
    let out = run(bed.qsockd().unwrap().arg("--config").arg(&cfg).args(["init", "--configured"])).unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("absent0: not present, skipped"), "{said}");
    let during = device_view(&bed);
    assert!(during.contains("qdisc htb 1: root") && during.contains("rate 8Mbit"), "{during}");
    // At the next boot (or a second start) it is left as it is.
    let again = run(bed.qsockd().unwrap().arg("--config").arg(&cfg).args(["init", "--configured"])).unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("already initialised"));
    assert_eq!(device_view(&bed), during);
    run(bed.qsockd().unwrap().args(["teardown", "--device", &bed.server_dev])).unwrap();
    assert_eq!(device_view(&bed), before);
}

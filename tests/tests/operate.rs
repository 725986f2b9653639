//! The operator's view: `qsockctl list` shows every managed socket with its
//! owner, device, class and figures, as a table and as JSON; an unprivileged
//! client sees only its own; bad arguments get a clear error.
use std::os::fd::AsFd;

use qsock::{Client, SocketSummary};
use qsock_tests::Bed;
use testbed::{run, workspace_bin};

#[test]
fn qsockctl_lists_managed_sockets_with_owner_and_figures() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("ctl", "10mbit").unwrap();
    let (s1, s2) = (b.sender().unwrap(), b.sender().unwrap());
    let a1 = b.client.attach(s1.as_fd(), &b.rate(1_000_000)).unwrap();
    let a2 = b.client.attach(s2.as_fd(), &b.rate(2_000_000)).unwrap();
    let ctl = || {
        let mut c = std::process::Command::new(workspace_bin("qsockctl").unwrap());
        c.arg("--socket").arg(b.bed.socket_path());
        c
    };
    let out = run(ctl().args(["list", "-j"])).unwrap();
    let v: Vec<SocketSummary> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.len(), 2);
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap().trim().to_string();
    for (s, a, rate) in [(&v[0], &a1, 1_000_000), (&v[1], &a2, 2_000_000)] {
        let s = if s.cookie == a.cookie { s } else { v.iter().find(|x| x.cookie == a.cookie).unwrap() };
        assert_eq!((s.uid, s.pid, s.command.as_str()), (0, std::process::id() as i32, comm.as_str()));
        assert_eq!((s.device.as_str(), s.classid.as_str(), s.scheduler.as_str()), (b.bed.server_dev.as_str(), a.classid.as_str(), "rate"));
        assert_eq!(s.guaranteed_rate_bps, rate);
    }
    let table = String::from_utf8(run(ctl().arg("list")).unwrap().stdout).unwrap();
    assert!(table.lines().next().unwrap().contains("cookie") && table.lines().filter(|l| l.contains(&b.bed.server_dev)).count() == 2, "{table}");
    // An unprivileged client sees only its own sockets (none).
    let path = b.bed.socket_path();
    let theirs = std::thread::spawn(move || {
        // SAFETY: plain syscall on this thread only.
        assert_eq!(unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) }, 0);
        Client::connect(&path).unwrap().list().unwrap().len()
    })
    .join()
    .unwrap();
    assert_eq!(theirs, 0);
    // Bad input: a clear error, non-zero exit.
    let bad = ctl().args(["list", "--watch", "0"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("refresh period"));
}

/// The OpenMetrics endpoint (off by default) serves the same figures; a
/// malformed `metrics_listen` keeps qsockd from starting with a clear error.
#[test]
fn openmetrics_endpoint_serves_every_managed_socket() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let bed = testbed::Testbed::new("metric").unwrap();
    bed.init("10mbit").unwrap();
    let config = bed.dir.join("qsockd.toml");
    std::fs::write(&config, "metrics_listen = \"localhost-ish\"\n").unwrap();
    let err = bed.start_daemon_with(&["--config", config.to_str().unwrap()]).unwrap_err().to_string();
    assert!(err.contains("metrics_listen"), "the bad key is named: {err}");
    // The daemon runs in the server namespace: so does its endpoint (on that namespace's loopback).
    std::fs::write(&config, "metrics_listen = \"127.0.0.1:9464\"\n").unwrap();
    bed.start_daemon_with(&["--config", config.to_str().unwrap()]).unwrap();
    let b = Bed { client: Client::connect(&bed.socket_path()).unwrap(), bed };
    let s = b.sender().unwrap();
    let a = b.client.attach(s.as_fd(), &b.rate(1_500_000)).unwrap();
    let out = run(b.bed.command_in(&b.bed.server_ns, "curl").args(["-sS", "-D", "-", "http://127.0.0.1:9464/metrics"])).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("application/openmetrics-text"), "{text}");
    let labels = format!("cookie=\"{}\",uid=\"0\",device=\"{}\",classid=\"{}\",scheduler=\"rate\"", a.cookie, b.bed.server_dev, a.classid);
    assert!(text.contains(&format!("qsock_socket_guaranteed_rate_bits_per_second{{{labels}}} 1500000")), "{text}");
    assert!(text.contains(&format!("qsock_managed_sockets{{device=\"{}\"}} 1", b.bed.server_dev)), "{text}");
    assert!(text.contains("reason=\"qdisc\"") && text.contains("quantile=\"0.99\""), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}

//! Unmodified programs over MPTCP (issue 16, item 4): `qsock-run
//! --multipath` turns Debian's nginx (server side) and curl (client side)
//! into MPTCP programs through the preload library's `socket()` shim; with
//! qsockd as the host's path manager each subflow of the download is
//! managed on its own link (the intent-aware connect attaches the socket
//! before it connects; its subflows get their classes once it is
//! established). `--multipath` alone is Handover (the second subflow a
//! backup); `--multipath-policy aggregate` uses both links. The same curl
//! without the launcher uses one link.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use qsock_tests::skip_unless_root;
use testbed::{
    multihomed::{LinkSpec, MultiHomed, SERVICE_IP},
    run, workspace_bin,
};

/// Bytes of the file served.
const FILE: usize = 4_000_000;

fn bed(tag: &str) -> MultiHomed {
    let link =
        |name: &str| LinkSpec { name: name.into(), down_bps: 8_000_000, up_bps: 100_000_000, one_way_delay_us: 0, kind: "wired", metered: false, loss_ppm: 0 };
    let mut b = MultiHomed::new(tag, vec![link("wan0"), link("wan1")]).unwrap();
    for ns in [&b.host_ns, &b.server_ns] {
        run(std::process::Command::new("ip").args(["-n", ns, "mptcp", "limits", "set", "subflows", "4", "add_addr_accepted", "4"])).unwrap();
    }
    b.start_daemon_with("category", "\n[multipath]\nenabled = true\n").unwrap();
    let root = b.dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("big.bin"), (0..FILE).map(|i| (i % 251) as u8).collect::<Vec<u8>>()).unwrap();
    let launcher = workspace_bin("qsock-run").unwrap();
    b.start_web_server_under(&root, &[launcher.into_os_string(), "--multipath".into(), "--".into()]).unwrap();
    b
}

/// Bytes received on each link while `f` runs.
fn rx_during<T>(b: &MultiHomed, f: impl FnOnce() -> T) -> (T, [u64; 2]) {
    let before = [b.link_bytes(0).unwrap().1, b.link_bytes(1).unwrap().1];
    let out = f();
    (out, [b.link_bytes(0).unwrap().1 - before[0], b.link_bytes(1).unwrap().1 - before[1]])
}

/// curl of the file into `to`, through `launcher` args when given.
fn curl(b: &MultiHomed, launcher: Option<&[&str]>, to: &Path) -> std::process::Child {
    let url = format!("http://{SERVICE_IP}/big.bin");
    let mut c = match launcher {
        Some(args) => {
            let mut c = b.host_command(workspace_bin("qsock-run").unwrap());
            c.args(args).arg("--").arg("curl");
            c
        }
        None => b.host_command("curl"),
    };
    c.args(["-s", "-S", "-o"]).arg(to).arg(url);
    c.stderr(std::process::Stdio::piped()).spawn().unwrap()
}

/// curl through `qsock-run <args>` into `name`; checks the file and
/// returns the devices qsockd managed a stream on while it ran.
fn download(b: &MultiHomed, c: &qsock::Client, args: &[&str], name: &str) -> Vec<String> {
    let out = b.dir.join(name);
    let mut child = curl(b, Some(args), &out);
    let t0 = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while child.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(30) {
        seen.extend(c.list().unwrap().into_iter().map(|s| s.device));
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait_with_output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let expect: Vec<u8> = (0..FILE).map(|i| (i % 251) as u8).collect();
    assert!(std::fs::read(&out).unwrap() == expect, "{name}: the download is intact");
    seen.into_iter().collect()
}

#[test]
fn qsock_run_multipath_makes_nginx_and_curl_use_both_links() {
    if skip_unless_root() {
        return;
    }
    let b = bed("pmp");
    let expect: Vec<u8> = (0..FILE).map(|i| (i % 251) as u8).collect();
    // Plain curl: TCP (nginx's MPTCP listener falls back), one link.
    let plain_out = b.dir.join("plain.bin");
    let (status, rx) = rx_during(&b, || curl(&b, None, &plain_out).wait_with_output().unwrap());
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert_eq!(std::fs::read(&plain_out).unwrap(), expect, "plain download intact");
    eprintln!("plain curl: rx {rx:?} bytes on wan0, wan1");
    assert!(rx[1] < FILE as u64 / 20, "plain TCP stays on wan0: {rx:?}");
    // Through the launcher: MPTCP, attached before it connects. `--multipath`
    // alone is TAPS' default policy, Handover: the second link's subflow is
    // a backup and carries nothing while the first works.
    let c = b.client().unwrap();
    let (handover, rx) = rx_during(&b, || download(&b, &c, &["--multipath", "--category", "bulk-transfer"], "handover.bin"));
    eprintln!("qsock-run --multipath (handover): rx {rx:?} bytes on wan0, wan1; managed streams seen on {handover:?}");
    assert_eq!(handover, ["wan0", "wan1"], "each subflow was managed on its link");
    assert!(rx.iter().any(|&n| n < FILE as u64 / 20), "one link's subflow is a backup: {rx:?}");
    let (aggregate, rx) = rx_during(&b, || download(&b, &c, &["--multipath-policy", "aggregate"], "aggregate.bin"));
    eprintln!("qsock-run --multipath-policy aggregate: rx {rx:?} bytes on wan0, wan1; managed streams seen on {aggregate:?}");
    assert_eq!(aggregate, ["wan0", "wan1"]);
    assert!(rx.iter().all(|&n| n > FILE as u64 / 5), "both links carried a real share: {rx:?}");
    // curl exited: its connection and subflow streams are released.
    let t0 = Instant::now();
    while !c.list().unwrap().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(5), "released after curl exited: {:?}", c.list().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! The paper's first use case (Hesmans and Bonaventure 2016, §4: refresh
//! subflows): an application downloading from a real web server (Debian's
//! nginx made MPTCP by `qsock-run --multipath`) replaces its active subflow
//! every [`REFRESH_BYTES`] of the body, opening the next on the other link
//! and closing the old one through qsockd (`open_subflows = "on_request"`,
//! so only the application opens subflows). The file must arrive intact
//! (compared byte for byte) over dozens of successive subflows, and each
//! link carries part of it.
use std::{os::fd::AsFd, time::Duration};

use qsock::{SubflowLocal, TcpState};
use qsock_tests::{
    mptcp::{connect, start_mptcp_web_server},
    skip_unless_root,
};
use testbed::{
    multihomed::{LinkSpec, MultiHomed},
    run,
};

/// Bytes of the file.
const FILE: usize = 2_000_000;
/// Body bytes between two refreshes (the paper: 1024 B over a small file;
/// here about 30 subflows over the file, one every 65 ms at 8 Mbit/s).
const REFRESH_BYTES: usize = 64 * 1024;

fn body() -> Vec<u8> {
    (0..FILE).map(|i| (i * 7 % 253) as u8).collect()
}

#[test]
fn a_download_refreshes_its_subflow_every_64_kib_and_arrives_intact() {
    if skip_unless_root() {
        return;
    }
    let link =
        |name: &str| LinkSpec { name: name.into(), down_bps: 8_000_000, up_bps: 50_000_000, one_way_delay_us: 0, kind: "wired", metered: false, loss_ppm: 0 };
    let mut b = MultiHomed::new("refr", vec![link("wan0"), link("wan1")]).unwrap();
    for ns in [&b.host_ns, &b.server_ns] {
        run(std::process::Command::new("ip").args(["-n", ns, "mptcp", "limits", "set", "subflows", "8", "add_addr_accepted", "8"])).unwrap();
    }
    b.start_daemon_with("category", "\n[multipath]\nenabled = true\nopen_subflows = \"on_request\"\n").unwrap();
    let root = b.dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("file.bin"), body()).unwrap();
    start_mptcp_web_server(&mut b, &root);
    let c = b.client().unwrap();
    let rx0 = [b.link_bytes(0).unwrap().1, b.link_bytes(1).unwrap().1];

    let t0 = std::time::Instant::now();
    let mut s = connect(&b, 80);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (length, mut got) = qsock_tests::http::get_head(&mut s, "file.bin");
    assert_eq!(length, FILE);
    let mut chunk = vec![0u8; 64 * 1024];
    let (mut next_refresh, mut refreshes, mut refused, mut on) = (REFRESH_BYTES, 0usize, 0usize, 0usize);
    let mut opened_ids = std::collections::BTreeSet::new();
    while got.len() < FILE {
        let n = qsock_tests::read_some(&mut s, &mut chunk).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(b.dir.join("qsockd.log")).unwrap_or_default();
            panic!("the download stalled at {} of {FILE} bytes: {e}; subflows {:#?}\n{log}", got.len(), b.in_host(|| qsock::qsubflows(&s)).unwrap())
        });
        assert!(n > 0, "the download ended at {} of {FILE} bytes", got.len());
        got.extend_from_slice(&chunk[..n]);
        if got.len() >= next_refresh && got.len() < FILE {
            next_refresh += REFRESH_BYTES;
            // The next subflow on the other link, then the old ones go.
            on = 1 - on;
            let old: Vec<u32> =
                b.in_host(|| qsock::qsubflows(&s)).unwrap().unwrap().subflows.iter().filter(|x| x.state == TcpState::Established).map(|x| x.id).collect();
            // The old subflows close only once the new one is up: a join the
            // peer refuses (seen: its in-kernel manager rejects a join while
            // it still counts subflows this side already closed) costs nothing.
            match c.open_subflow(s.as_fd(), &SubflowLocal::Interface(format!("wan{on}")), None, Duration::from_secs(5)) {
                Ok(new) => {
                    assert_eq!(new.interface.as_deref(), Some(format!("wan{on}").as_str()));
                    opened_ids.insert(new.id);
                    for id in old {
                        c.close_subflow(s.as_fd(), id).unwrap();
                    }
                }
                Err(e) => {
                    let ss = std::process::Command::new("ip").args(["netns", "exec", &b.server_ns, "ss", "-tanM"]).output().unwrap();
                    eprintln!("refresh {refreshes}: {e}\nserver sockets:\n{}", String::from_utf8_lossy(&ss.stdout));
                    refused += 1;
                    on = 1 - on;
                }
            }
            refreshes += 1;
        }
    }
    let rx = [b.link_bytes(0).unwrap().1 - rx0[0], b.link_bytes(1).unwrap().1 - rx0[1]];
    eprintln!("{refreshes} refreshes, {} subflows opened, {refused} joins refused; rx {rx:?} bytes on wan0, wan1", opened_ids.len());
    // With QSOCK_RESULTS set (scripts/multipath.sh) the figures go to results/refresh.csv.
    let mut figures = qsock_tests::figures::Figures::new("refresh");
    let variant = "refresh every 64 KiB";
    figures.add(variant, "download time", "s", 0, t0.elapsed().as_secs_f64());
    figures.add(variant, "subflows opened", "", 0, opened_ids.len() as f64);
    figures.add(variant, "joins refused", "", 0, refused as f64);
    figures.add(variant, "received on both links per file byte", "", 0, (rx[0] + rx[1]) as f64 / FILE as f64);
    figures.finish(2).unwrap();
    assert_eq!(got.len(), FILE);
    assert!(got == body(), "the file arrived intact across the refreshes");
    assert!(
        refreshes >= 25 && opened_ids.len() + refused == refreshes && refused * 4 <= refreshes,
        "{refreshes} refreshes, {refused} refused, ids {opened_ids:?}"
    );
    assert!(rx.iter().all(|&n| n > FILE as u64 / 4), "both links carried part of it: {rx:?}");
}

//! DWCS window constraints checked at the receiver on an overloaded DWCS
//! class. Alone in its test binary: cargo runs test binaries one after the
//! other, so no other test bed competes for the CPUs while its streams run.
use std::process::Stdio;

use qsock::SchedulerState;
use qsock_tests::Bed;
use testbed::{spawn_ready, workspace_bin, CLIENT_IP};
use video_server::streams::{outcomes, parse_specs, Arrival};

#[test]
fn window_constraints_hold_at_the_receiver_on_an_overloaded_dwcs_class() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("window", "10mbit").unwrap();
    // ARP first, so no deadline waits in the neighbour queue.
    let (rx, to) = b.receiver().unwrap();
    b.warm_up(to, &rx).unwrap();
    drop(rx);
    // Four streams of 1042 wire bytes every 4 ms offer 8.34 Mbit/s; their DWCS
    // reservations add up to 1.1 × (3/4 + 3/4 + 7/8 + 7/8) × 2.084 Mbit/s
    // = 7.45 Mbit/s, so the DWCS class must drop about 11 % of what it is
    // offered: 57 % of what the constraints allow. (The experiment,
    // `dwcs-window`, runs a harder set, 1/2 to 0/1; see README.)
    let specs = "1/4,1/4,1/8,1/8";
    let port = 7100;
    let out = b.bed.dir.join("arrivals.json");
    let mut recv = b.bed.command_in(&b.bed.client_ns, workspace_bin("stream-receiver").unwrap());
    recv.args(["--bind", &format!("{CLIENT_IP}:{port}"), "--streams", "4", "--timeout-s", "30"]).arg("--out").arg(&out);
    let mut recv = spawn_ready(recv, &b.bed.dir.join("receiver.log")).unwrap();
    let mut send = b.bed.command_in(&b.bed.server_ns, workspace_bin("dwcs-streams").unwrap());
    send.args(["--dest", &format!("{CLIENT_IP}:{port}"), "--device", &b.bed.server_dev, "--streams", specs]);
    // SCHED_FIFO senders: the streams stay periodic even on a busy machine.
    send.args(["--ipg-us", "4000", "--bytes", "1000", "--duration-s", "4", "--realtime"]);
    let o = send.env("QSOCK_SOCKET", b.bed.socket_path()).stderr(Stdio::inherit()).output().unwrap();
    assert!(o.status.success(), "dwcs-streams failed");
    assert!(recv.wait().unwrap().success(), "stream-receiver failed");
    let sender: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let sent: Vec<u64> = serde_json::from_value(sender["sent"].clone()).unwrap();
    let arrivals: Vec<Arrival> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let specs = parse_specs(specs).unwrap();
    let res = outcomes(&specs, &sent, &arrivals);
    for (i, r) in res.iter().enumerate() {
        let info: qsock::QInfo = serde_json::from_value(sender["qinfo"][i].clone()).unwrap();
        let y = r.spec.y as usize;
        let broken: Vec<usize> =
            (y..=r.missed.len()).filter(|&e| r.missed[e - y..e].iter().filter(|m| **m).count() > r.spec.x as usize).map(|e| e - 1).collect();
        let summary = format!(
            "stream {i} ({}/{}): {} on time, {} late, {} lost, worst window {} (windows ending at deadlines {broken:?}); {info:?}",
            r.spec.x, r.spec.y, r.on_time, r.late, r.lost, r.worst_window
        );
        assert!(r.worst_window <= r.spec.x as usize, "window constraint broken: {summary}");
        assert_eq!(r.lost, info.drops.deadline_packets, "what the receiver lost is what DWCS dropped: {summary}");
        assert!(matches!(info.scheduler_state, SchedulerState::Dwcs { x, y, violations: 0, .. } if (x, y) == (r.spec.x, r.spec.y)), "{summary}");
        assert_eq!(info.classid, "1:fffd", "DWCS streams share one class");
    }
    // Overload lands on the loosest constraints first.
    let lost: Vec<u64> = res.iter().map(|r| r.lost).collect();
    assert!(lost[..2].iter().min() > lost[2..].iter().max(), "the 1/4 streams lose more than the 1/8 ones: {lost:?}");
}

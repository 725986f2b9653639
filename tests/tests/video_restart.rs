//! A daemon restart under a real, adaptive stream: the real footage (20 fps,
//! about 1.5 Mbit/s, scene cuts up to 9.6x the mean frame) streamed by
//! `video-server` with its defaults (adaptation on) through a 10 Mbit/s
//! link under `iperf3 -P 4`, once as it is and once with qsockd killed
//! (SIGKILL) 9 s in and started again 1 s later. The send loop never waits
//! on qsockd (qinfo is polled by a thread of its own, with a bounded wait),
//! so the restart run delivers every frame the undisturbed run delivers,
//! none later than its 300 ms playout. Alone in its test binary, so no
//! other bed competes for the CPUs while the streams run.
use std::{path::PathBuf, time::Duration};

use testbed::Testbed;
use video_server::session::{stream_once, RunOutcome, StreamRun, Transport};

fn footage() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/footage.h264");
    assert!(p.is_file(), "{} is missing: run `bash scripts/footage.sh` (scripts/test.sh does)", p.display());
    p
}

fn run(bed: &Testbed, label: &str, restart: bool) -> RunOutcome {
    let run =
        StreamRun { label: label.into(), input: footage(), fps: 20, playout_ms: 300, transport: Transport::Qsock, sender_args: Vec::new(), decode: false };
    stream_once(bed, &run, |d| {
        std::thread::scope(|s| {
            let load = s.spawn(|| bed.iperf_client(d.as_secs() + 1, 4));
            if restart {
                std::thread::sleep(Duration::from_secs(9));
                bed.kill_daemon();
                std::thread::sleep(Duration::from_secs(1));
                bed.start_daemon()?;
            }
            load.join().map_err(|_| anyhow::anyhow!("iperf3 thread panicked"))?
        })
    })
    .unwrap()
}

#[test]
fn an_adaptive_stream_under_load_loses_nothing_to_a_daemon_restart() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let bed = Testbed::new("vrestart").unwrap();
    bed.init("10mbit").unwrap();
    bed.start_daemon().unwrap();
    let _iperf = bed.iperf_server().unwrap();

    let calm = run(&bed, "no-restart", false);
    let restarted = run(&bed, "restart", true);
    let on_time = |o: &RunOutcome| -> Vec<bool> { o.summary.missed.iter().map(|m| !m).collect() };
    let (a, b) = (on_time(&calm), on_time(&restarted));
    let lost: Vec<usize> = a.iter().zip(&b).enumerate().filter(|(_, (a, b))| **a && !**b).map(|(i, _)| i).collect();
    let s = &restarted.summary;
    eprintln!(
        "restart under load: {} of {} frames on time ({} without restart); {} late; {} failed qinfo polls, {} baselines after the outage; adaptation {}",
        b.iter().filter(|x| **x).count(),
        s.frames,
        a.iter().filter(|x| **x).count(),
        s.late,
        restarted.sender["failed_qinfo_polls"],
        restarted.sender["baselines_after_outage"],
        restarted.sender["adaptation"]
    );
    assert!(lost.is_empty(), "frames the undisturbed run delivered on time and the restart run did not: {lost:?}; qinfo {}", restarted.sender["qinfo"]);
    assert_eq!(s.late, 0, "no frame later than its 300 ms playout");
    assert!(restarted.sender["failed_qinfo_polls"].as_u64().unwrap() > 0, "the poller saw the daemon away, or the test restarted nothing");
    assert_eq!(restarted.sender["qinfo"]["past_deadline_units"], 0, "the sender never stalled past a deadline");
}

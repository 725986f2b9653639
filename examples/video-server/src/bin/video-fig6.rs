//! Q.Sockets Fig. 6: three video streams share a 10 Mbit/s link that bulk
//! TCP (iperf3) overloads from a third of the way in: two managed by DWCS
//! (20 fps and 15 fps, window constraint `--oln`/`--old` over frames) and
//! one unmanaged at 20 fps. Prints frames per second per stream, writes CSV
//! and an SVG plot. Expected, as in the paper: the managed streams hold
//! their rates, the unmanaged one does not.
use std::{
    path::PathBuf,
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use testbed::{spawn_ready, workspace_bin, ExperimentArgs, Testbed, CLIENT_IP};
use video_server::{
    plot::{line_chart, Series},
    report::{analyse, FrameRecord, SecondRow, Summary},
};

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    bed: ExperimentArgs,
    /// H.264 Annex-B input, streamed by all three senders.
    #[arg(long)]
    input: PathBuf,
    /// DWCS window constraint: frames that may be lost ...
    #[arg(long, default_value_t = 1)]
    oln: u32,
    /// ... in any this many consecutive frames.
    #[arg(long, default_value_t = 10)]
    old: u32,
    /// Playout budget (frame deadline = send time + this), ms.
    #[arg(long, default_value_t = 300)]
    playout_ms: u64,
}

struct Stream {
    name: &'static str,
    fps: u32,
    managed: bool,
    port: u16,
}

const STREAMS: [Stream; 3] = [
    Stream { name: "DWCS 20 fps", fps: 20, managed: true, port: 5004 },
    Stream { name: "DWCS 15 fps", fps: 15, managed: true, port: 5006 },
    Stream { name: "unmanaged 20 fps", fps: 20, managed: false, port: 5008 },
];

fn sender(bed: &Testbed, a: &Args, s: &Stream) -> Result<Child> {
    let bin = workspace_bin("video-server")?;
    let mut tx = bed.command_in(&bed.server_ns, "setpriv");
    tx.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&bin);
    tx.arg("--input").arg(&a.input).args(["--dest", &format!("{CLIENT_IP}:{}", s.port), "--fps", &s.fps.to_string()]);
    // As in the paper, the application does not adapt: DWCS alone decides.
    tx.args(["--device", &bed.server_dev, "--playout-ms", &a.playout_ms.to_string(), "--no-adapt"]);
    if s.managed {
        tx.args(["--scheduler", "dwcs", "--oln", &a.oln.to_string(), "--old", &a.old.to_string()]);
    } else {
        tx.arg("--plain");
    }
    tx.env("QSOCK_SOCKET", bed.socket_path()).stdout(Stdio::piped());
    tx.stderr(std::fs::File::create(bed.dir.join(format!("sender-{}.log", s.port)))?);
    tx.spawn().with_context(|| format!("spawn sender {}", s.name))
}

fn main() -> Result<()> {
    let a = Args::parse();
    let a = Args { input: std::fs::canonicalize(&a.input).with_context(|| format!("input {}", a.input.display()))?, ..a };
    let bed = Testbed::new("fig6")?;
    bed.init(&a.bed.link_rate)?;
    bed.start_daemon()?;
    let _iperf = bed.iperf_server()?;
    let frames = video_server::h264::read_frames(&a.input)?.len();
    // The 15 fps stream plays the same frames for longer; overload covers the 20 fps streams' last two thirds.
    let secs = frames as f64 / 20.0;
    let mut receivers = Vec::new();
    for s in &STREAMS {
        let out = bed.dir.join(format!("records-{}.json", s.port));
        let mut rx = bed.command_in(&bed.client_ns, workspace_bin("video-receiver")?);
        rx.arg("--reference").arg(&a.input).args(["--bind", &format!("{CLIENT_IP}:{}", s.port), "--fps", &s.fps.to_string()]).arg("--out").arg(&out);
        receivers.push((spawn_ready(rx, &bed.dir.join(format!("receiver-{}.log", s.port)))?, out));
    }
    eprintln!("[fig6] three streams of {frames} frames; iperf3 -P {} from {:.0} s", a.bed.iperf_streams, secs / 3.0);
    let senders: Vec<Child> = STREAMS.iter().map(|s| sender(&bed, &a, s)).collect::<Result<_>>()?;
    std::thread::sleep(Duration::from_secs_f64(secs / 3.0));
    bed.iperf_client((frames as f64 / 15.0 - secs / 3.0).ceil() as u64, a.bed.iperf_streams)?;
    let mut sender_out = Vec::new();
    for (s, c) in STREAMS.iter().zip(senders) {
        let o = c.wait_with_output()?;
        if !o.status.success() {
            bail!("sender {} failed: {}", s.name, std::fs::read_to_string(bed.dir.join(format!("sender-{}.log", s.port)))?);
        }
        sender_out.push(serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap_or_default());
    }
    let mut results: Vec<(Vec<SecondRow>, Summary)> = Vec::new();
    for ((mut rx, out), s) in receivers.into_iter().zip(&STREAMS) {
        if !rx.wait()?.success() {
            bail!("receiver of {} failed", s.name);
        }
        let records: Vec<FrameRecord> = serde_json::from_slice(&std::fs::read(&out)?)?;
        results.push(analyse(&records, s.fps, a.playout_ms));
    }

    let overload_from = (secs / 3.0).round() as usize;
    println!(
        "\nFrames per second at the receiver, all / within the {} ms playout budget (link {}; iperf3 -P {} from {} s; DWCS {}/{} over frames)",
        a.playout_ms, a.bed.link_rate, a.bed.iperf_streams, overload_from, a.oln, a.old
    );
    println!("{:>4} | {:>12} {:>12} {:>17}", "sec", STREAMS[0].name, STREAMS[1].name, STREAMS[2].name);
    std::fs::create_dir_all(&a.bed.out_dir)?;
    let csv_path = a.bed.out_dir.join("video-fig6.csv");
    let mut w = csv::Writer::from_path(&csv_path)?;
    w.write_record(["second", "stream", "fps", "on_time_fps", "lost_i", "lost_p", "lost_b", "late"])?;
    let n = results.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let empty = SecondRow::default();
    for i in 0..n {
        let row = |k: usize| results[k].0.get(i).unwrap_or(&empty);
        let cell = |k: usize| format!("{}/{}", row(k).fps, row(k).on_time_fps);
        println!("{:>4} | {:>12} {:>12} {:>17}", i, cell(0), cell(1), cell(2));
        for (k, s) in STREAMS.iter().enumerate() {
            let r = row(k);
            w.write_record([
                i.to_string(),
                s.name.to_string(),
                r.fps.to_string(),
                r.on_time_fps.to_string(),
                r.lost_i.to_string(),
                r.lost_p.to_string(),
                r.lost_b.to_string(),
                r.late.to_string(),
            ])?;
        }
    }
    w.flush()?;
    println!("\n{:<18} {:>10} {:>22} {:>6} {:>6} {:>12} {:>6}", "stream", "mean fps", "on-time fps under load", "lost", "late", "worst window", "viol.");
    for (k, s) in STREAMS.iter().enumerate() {
        let (rows, sum) = &results[k];
        let loaded: Vec<u32> =
            rows.iter().skip(overload_from + 1).take((frames as f64 / s.fps as f64) as usize - overload_from - 1).map(|r| r.on_time_fps).collect();
        let under_load = loaded.iter().sum::<u32>() as f64 / loaded.len().max(1) as f64;
        let lost = sum.lost_i + sum.lost_p + sum.lost_b;
        // Worst window at the receiver: most frames lost or late in any `old` consecutive ones.
        let worst = format!("{}/{}", qsock_dwcs::worst_window(&sum.missed, a.old as usize), a.old);
        let viol = sender_out[k]["qinfo"]["scheduler_state"]["violations"].as_u64().map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        println!("{:<18} {:>10.2} {:>22.2} {:>6} {:>6} {:>12} {:>6}", s.name, sum.mean_fps, under_load, lost, sum.late, worst, viol);
    }
    let series: Vec<Series> = STREAMS
        .iter()
        .enumerate()
        .map(|(k, s)| Series { label: s.name, points: results[k].0.iter().map(|r| (r.second as f64, r.on_time_fps as f64)).collect(), dashed: false, color: k })
        .collect();
    println!("worst window: most frames lost or late in any {} consecutive frames, at the receiver; viol.: violations qinfo counted", a.old);
    let svg = a.bed.out_dir.join("video-fig6.svg");
    line_chart(&svg, "Video streams over qsock under overload (Q.Sockets Fig. 6)", "second", "frames per second within the playout budget", &series)?;
    println!("\nwrote {} and {}", csv_path.display(), svg.display());
    Ok(())
}

//! The qsock demo: streams a real H.264 file through a 10 Mbit/s bottleneck
//! twice under the same bulk TCP perturbation (iperf3 during the middle
//! third), once with a plain socket and once through qsock with a
//! guaranteed rate, and prints a side-by-side table per second, a summary,
//! and CSV/JSON files.
//!
//! Test bed: namespaces `server` and `client` joined by veth; qsockd owns
//! the server's egress (root HTB at `--link-rate`). The qsock sender runs
//! unprivileged (uid 65534) to show that applications need no privilege.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use testbed::{ExperimentArgs, spawn_ready, workspace_bin, Testbed, CLIENT_IP};
use video_server::report::{analyse, FrameRecord, SecondRow, Summary};

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    bed: ExperimentArgs,
    /// H.264 Annex-B input (20 fps unless --fps says otherwise).
    #[arg(long)]
    input: PathBuf,
    /// Frames per second of the input.
    #[arg(long, default_value_t = 20)]
    fps: u32,
    /// Guaranteed rate of the qsock video socket, bit/s.
    #[arg(long, default_value_t = 2_500_000)]
    rate: u64,
    /// Playout budget (frame deadline = send time + this), ms.
    #[arg(long, default_value_t = 300)]
    playout_ms: u64,
}

const VIDEO_PORT: u16 = 5004;

struct RunResult {
    rows: Vec<SecondRow>,
    summary: Summary,
    sender: serde_json::Value,
}

fn spawn_logged(mut cmd: Command, log: &Path) -> Result<Child> {
    let f = std::fs::File::create(log)?;
    cmd.stdout(Stdio::piped()).stderr(f).spawn().with_context(|| format!("spawn {cmd:?}"))
}

fn run_once(bed: &Testbed, args: &Args, plain: bool) -> Result<RunResult> {
    let mode = if plain { "plain" } else { "qsock" };
    let records_path = bed.dir.join(format!("records-{mode}.json"));
    let mut rx = bed.command_in(&bed.client_ns, workspace_bin("video-receiver")?);
    rx.arg("--reference").arg(&args.input).args(["--bind", &format!("{CLIENT_IP}:{VIDEO_PORT}"), "--fps", &args.fps.to_string()]);
    rx.arg("--out").arg(&records_path);
    let mut rx = spawn_ready(rx, &bed.dir.join(format!("receiver-{mode}.log")))?;

    // The sender: unprivileged in qsock mode.
    let sender_bin = workspace_bin("video-server")?;
    let mut tx = bed.command_in(&bed.server_ns, "setpriv");
    if plain {
        tx = bed.command_in(&bed.server_ns, &sender_bin);
    } else {
        tx.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&sender_bin);
    }
    tx.arg("--input").arg(&args.input).args(["--dest", &format!("{CLIENT_IP}:{VIDEO_PORT}"), "--fps", &args.fps.to_string()]);
    tx.args(["--device", &bed.server_dev, "--rate", &args.rate.to_string(), "--playout-ms", &args.playout_ms.to_string()]);
    if plain {
        tx.arg("--plain");
    }
    tx.env("QSOCK_SOCKET", bed.socket_path());
    let frames = video_server::h264::read_frames(&args.input)?.len();
    let duration = Duration::from_secs_f64(frames as f64 / args.fps as f64);
    let started = Instant::now();
    let tx = spawn_logged(tx, &bed.dir.join(format!("sender-{mode}.log")))?;

    // Perturbation: bulk TCP from the server side during the middle third.
    std::thread::sleep(duration / 3);
    let third = (duration.as_secs_f64() / 3.0).round().max(1.0) as u64;
    bed.iperf_client(third, args.bed.iperf_streams)?;
    let out = tx.wait_with_output()?;
    if !out.status.success() {
        bail!("sender ({mode}) failed: {}", std::fs::read_to_string(bed.dir.join(format!("sender-{mode}.log")))?);
    }
    let sender: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let st = rx.wait()?;
    if !st.success() {
        bail!("receiver ({mode}) failed: {}", std::fs::read_to_string(bed.dir.join(format!("receiver-{mode}.log")))?);
    }
    eprintln!("[demo] {mode} run took {:.1} s", started.elapsed().as_secs_f64());
    let records: Vec<FrameRecord> = serde_json::from_slice(&std::fs::read(&records_path)?)?;
    let (rows, summary) = analyse(&records, args.fps, args.playout_ms);
    Ok(RunResult { rows, summary, sender })
}

fn print_and_write(args: &Args, plain: &RunResult, q: &RunResult, link: &str) -> Result<()> {
    println!();
    println!("Per second (perturbation: iperf3 -P {} over the middle third; link {link}; qsock guarantee {} bit/s)", args.bed.iperf_streams, args.rate);
    println!("{:>4} | {:>9} {:>11} {:>5} {:>10} | {:>9} {:>11} {:>5} {:>10}", "sec", "plain fps", "lost I/P/B", "late", "jit99 ms", "qsock fps", "lost I/P/B", "late", "jit99 ms");
    std::fs::create_dir_all(&args.bed.out_dir)?;
    let csv_path = args.bed.out_dir.join("video-demo.csv");
    let mut w = csv::Writer::from_path(&csv_path)?;
    w.write_record([
        "second", "plain_fps", "plain_lost_i", "plain_lost_p", "plain_lost_b", "plain_late", "plain_jitter_p99_ms", "qsock_fps", "qsock_lost_i",
        "qsock_lost_p", "qsock_lost_b", "qsock_late", "qsock_jitter_p99_ms",
    ])?;
    let n = plain.rows.len().max(q.rows.len());
    let empty = SecondRow::default();
    for i in 0..n {
        let (a, b) = (plain.rows.get(i).unwrap_or(&empty), q.rows.get(i).unwrap_or(&empty));
        println!(
            "{:>4} | {:>9} {:>11} {:>5} {:>10.1} | {:>9} {:>11} {:>5} {:>10.1}",
            i,
            a.fps,
            format!("{}/{}/{}", a.lost_i, a.lost_p, a.lost_b),
            a.late,
            a.jitter_p99_ms,
            b.fps,
            format!("{}/{}/{}", b.lost_i, b.lost_p, b.lost_b),
            b.late,
            b.jitter_p99_ms
        );
        w.write_record(
            [
                i as f64, a.fps as f64, a.lost_i as f64, a.lost_p as f64, a.lost_b as f64, a.late as f64, a.jitter_p99_ms, b.fps as f64, b.lost_i as f64,
                b.lost_p as f64, b.lost_b as f64, b.late as f64, b.jitter_p99_ms,
            ]
            .map(|v| v.to_string()),
        )?;
    }
    w.flush()?;
    println!();
    println!("Summary ({} frames)       {:>10} {:>10}", plain.summary.frames, "plain", "qsock");
    let row = |name: &str, a: String, b: String| println!("  {name:<24}{a:>10} {b:>10}");
    row("mean fps", format!("{:.2}", plain.summary.mean_fps), format!("{:.2}", q.summary.mean_fps));
    row("frames completed", plain.summary.completed.to_string(), q.summary.completed.to_string());
    row("I-frames lost", plain.summary.lost_i.to_string(), q.summary.lost_i.to_string());
    row("P-frames lost", plain.summary.lost_p.to_string(), q.summary.lost_p.to_string());
    row("B-frames lost", plain.summary.lost_b.to_string(), q.summary.lost_b.to_string());
    row(&format!("late (> {} ms)", args.playout_ms), plain.summary.late.to_string(), q.summary.late.to_string());
    row("jitter p50 (ms)", format!("{:.2}", plain.summary.jitter_p50_ms), format!("{:.2}", q.summary.jitter_p50_ms));
    row("jitter p99 (ms)", format!("{:.2}", plain.summary.jitter_p99_ms), format!("{:.2}", q.summary.jitter_p99_ms));
    if let Some(info) = q.sender.get("qinfo") {
        println!();
        println!(
            "qinfo of the qsock socket at the end of the stream: sent {} packets, drops {}, late kept {}, queuing delay mean {} us / p99 {} us / max {} us",
            info["sent_packets"], info["drops"], info["late_kept_packets"],
            info["queuing_delay"]["mean_ns"].as_u64().unwrap_or(0) / 1000,
            info["queuing_delay"]["p99_ns"].as_u64().unwrap_or(0) / 1000,
            info["queuing_delay"]["max_ns"].as_u64().unwrap_or(0) / 1000,
        );
        println!("sender skipped {} frames itself as already past their deadline", q.sender["skipped_late"]);
    }
    let summary_path = args.bed.out_dir.join("video-demo-summary.json");
    std::fs::write(
        &summary_path,
        serde_json::to_vec_pretty(&serde_json::json!({"plain": plain.summary, "qsock": q.summary, "qsock_sender": q.sender, "link_rate": link, "guaranteed_bps": args.rate}))?,
    )?;
    println!("\nwrote {} and {}", csv_path.display(), summary_path.display());
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let args = Args { input: std::fs::canonicalize(&args.input).with_context(|| format!("input {}", args.input.display()))?, ..args };
    let mut bed = Testbed::new("demo")?;
    bed.init(&args.bed.link_rate)?;
    bed.start_daemon()?;
    let _iperf_server = bed.iperf_server()?;
    let plain = run_once(&bed, &args, true)?;
    let q = run_once(&bed, &args, false)?;
    print_and_write(&args, &plain, &q, &args.bed.link_rate)
}

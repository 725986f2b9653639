//! Q.Sockets Fig. 7: a sensor sending aperiodic readings with random
//! deadlines, three times under the same bulk TCP perturbation (iperf3
//! from `--perturb-at-s` to the end): plain socket, lossless EDF, lossy EDF.
//! Prints on-time/late/lost per 5 s interval and totals, writes CSV and an
//! SVG plot of missed deadlines per interval.
use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{bail, Result};
use clap::Parser;
use sensor::{intervals, plot, Arrival, Interval};
use testbed::{spawn_ready, workspace_bin, ExperimentArgs, Testbed, CLIENT_IP};

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    bed: ExperimentArgs,
    /// Length of each run, s.
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    /// When the iperf3 perturbation starts, s.
    #[arg(long, default_value_t = 10)]
    perturb_at_s: u64,
    /// Shortest gap the sensor declares to EDF admission, ms. Its readings
    /// come every 2–18 ms (10 ms on average), so 10 ms reserves exactly the
    /// mean load and bursts exceed the reservation.
    #[arg(long, default_value_t = 10)]
    declared_interval_ms: u64,
    /// Seed of the random reading trace (the same in all three runs).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Read the readings from this CSV (offset_ms,value,deadline_ms) instead.
    #[arg(long)]
    csv: Option<PathBuf>,
}

const PORT: u16 = 6000;

struct Run {
    intervals: Vec<Interval>,
    sender: serde_json::Value,
}

fn run_once(bed: &Testbed, a: &Args, mode: &str) -> Result<Run> {
    let out = bed.dir.join(format!("arrivals-{mode}.json"));
    let mut rx = bed.command_in(&bed.client_ns, workspace_bin("sensor-receiver")?);
    rx.args(["--bind", &format!("{CLIENT_IP}:{PORT}")]).arg("--out").arg(&out);
    let mut rx = spawn_ready(rx, &bed.dir.join(format!("receiver-{mode}.log")))?;
    let bin = workspace_bin("sensor")?;
    let mut tx = if mode == "plain" {
        bed.command_in(&bed.server_ns, &bin)
    } else {
        // Applications need no privilege: the EDF sender runs as uid 65534.
        let mut c = bed.command_in(&bed.server_ns, "setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&bin);
        c
    };
    tx.args(["--dest", &format!("{CLIENT_IP}:{PORT}"), "--mode", mode, "--device", &bed.server_dev]);
    tx.args(["--duration-s", &a.duration_s.to_string(), "--seed", &a.seed.to_string()]);
    tx.args(["--declared-interval-ms", &a.declared_interval_ms.to_string()]);
    if let Some(c) = &a.csv {
        tx.arg("--csv").arg(c);
    }
    tx.env("QSOCK_SOCKET", bed.socket_path()).stdout(Stdio::piped()).stderr(std::fs::File::create(bed.dir.join(format!("sender-{mode}.log")))?);
    let tx = tx.spawn()?;
    std::thread::sleep(Duration::from_secs(a.perturb_at_s));
    bed.iperf_client(a.duration_s.saturating_sub(a.perturb_at_s).max(1), a.bed.iperf_streams)?;
    let o = tx.wait_with_output()?;
    if !o.status.success() {
        bail!("sensor ({mode}) failed: {}", std::fs::read_to_string(bed.dir.join(format!("sender-{mode}.log")))?);
    }
    let sender: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    if !rx.wait()?.success() {
        bail!("receiver ({mode}) failed");
    }
    let arrivals: Vec<Arrival> = serde_json::from_slice(&std::fs::read(&out)?)?;
    let sent: Vec<u64> = serde_json::from_value(sender["sent_offsets_ns"].clone())?;
    Ok(Run { intervals: intervals(&sent, &arrivals), sender })
}

fn totals(iv: &[Interval]) -> (u32, u32, u32) {
    iv.iter().fold((0, 0, 0), |t, i| (t.0 + i.on_time, t.1 + i.late, t.2 + i.lost))
}

fn main() -> Result<()> {
    let a = Args::parse();
    let a = Args { csv: a.csv.as_ref().map(std::fs::canonicalize).transpose()?, ..a };
    let bed = Testbed::new("fig7")?;
    bed.init(&a.bed.link_rate)?;
    bed.start_daemon()?;
    let _iperf = bed.iperf_server()?;
    let modes = ["plain", "lossless", "lossy"];
    let mut runs = Vec::new();
    for m in modes {
        eprintln!("[fig7] {m} run ({} s, perturbation from {} s)", a.duration_s, a.perturb_at_s);
        runs.push(run_once(&bed, &a, m)?);
    }
    println!("\nReadings per 5 s interval: on time / late / lost (iperf3 -P {} from {} s; link {})", a.bed.iperf_streams, a.perturb_at_s, a.bed.link_rate);
    println!("{:>9} | {:>16} | {:>16} | {:>16}", "interval", "plain", "lossless EDF", "lossy EDF");
    std::fs::create_dir_all(&a.bed.out_dir)?;
    let csv_path = a.bed.out_dir.join("sensor-fig7.csv");
    let mut w = csv::Writer::from_path(&csv_path)?;
    w.write_record(["interval_start_s", "mode", "on_time", "late", "lost"])?;
    let n = runs.iter().map(|r| r.intervals.len()).max().unwrap_or(0);
    for i in 0..n {
        let cell = |r: &Run| r.intervals.get(i).map(|v| format!("{}/{}/{}", v.on_time, v.late, v.lost)).unwrap_or_default();
        println!("{:>7} s | {:>16} | {:>16} | {:>16}", i * 5, cell(&runs[0]), cell(&runs[1]), cell(&runs[2]));
        for (m, r) in modes.iter().zip(&runs) {
            if let Some(v) = r.intervals.get(i) {
                w.write_record([(i * 5).to_string(), m.to_string(), v.on_time.to_string(), v.late.to_string(), v.lost.to_string()])?;
            }
        }
    }
    w.flush()?;
    println!("\nTotals               on time     late     lost");
    for (m, r) in modes.iter().zip(&runs) {
        let (o, l, x) = totals(&r.intervals);
        println!("  {m:<16} {o:>10} {l:>8} {x:>8}");
    }
    for (m, r) in modes.iter().zip(&runs).skip(1) {
        let q = &r.sender["qinfo"];
        println!(
            "  qinfo {m}: guaranteed {} bit/s, drops (deadline) {}, late kept {}, sender skipped {} already past their deadline",
            q["guaranteed_rate_bps"], q["drops"]["deadline_packets"], q["late_kept_packets"], r.sender["skipped_past_deadline"]
        );
    }
    let svg = a.bed.out_dir.join("sensor-fig7.svg");
    let series: Vec<(&str, &[Interval])> = vec![("plain socket", &runs[0].intervals), ("lossless EDF", &runs[1].intervals), ("lossy EDF", &runs[2].intervals)];
    plot::missed_per_interval(&svg, "Sensor readings late or lost per 5 s (Q.Sockets Fig. 7)", &series)?;
    println!("\nwrote {} and {}", csv_path.display(), svg.display());
    Ok(())
}

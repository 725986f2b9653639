//! DWCS window test: several periodic streams with different window
//! constraints x/y share a 10 Mbit/s link that bulk TCP (iperf3) loads past
//! capacity for the whole run. The streams' DWCS reservations add up to
//! Σ (1 − x/y)·C/T, less than they offer, so DWCS must drop; the receiver
//! checks each stream's worst window (most misses in any y consecutive
//! deadlines) against x. The same streams on plain sockets run first, under
//! the same load, for comparison. Prints a table, writes CSV and an SVG of
//! the worst window per second per stream.
use std::process::Stdio;

use anyhow::{bail, Result};
use clap::Parser;
use qsock::DwcsAttrs;
use testbed::{spawn_ready, workspace_bin, ExperimentArgs, Testbed, CLIENT_IP};
use video_server::{
    plot::{line_chart, Series},
    streams::{outcomes, parse_specs, Reception, StreamOutcome, StreamSetArgs, StreamSpec},
};

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    set: StreamSetArgs,
    /// qsockd's DWCS reservation headroom, per mille.
    #[arg(long, default_value_t = qsock_dwcs::module::DEFAULT_HEADROOM_PERMILLE)]
    dwcs_headroom_permille: u32,
    /// Run the sender unprivileged (uid 65534, so without SCHED_FIFO), as an
    /// application would; by default it runs as root under SCHED_FIFO.
    #[arg(long)]
    unprivileged_sender: bool,
    #[command(flatten)]
    bed: ExperimentArgs,
}

const PORT: u16 = 7000;

struct Run {
    outcomes: Vec<StreamOutcome>,
    sender: serde_json::Value,
}

fn run_once(bed: &Testbed, a: &Args, specs: &[StreamSpec], plain: bool) -> Result<Run> {
    let mode = if plain { "plain" } else { "dwcs" };
    let out = bed.dir.join(format!("arrivals-{mode}.json"));
    let mut rx = bed.command_in(&bed.client_ns, workspace_bin("stream-receiver")?);
    rx.args(["--bind", &format!("{CLIENT_IP}:{PORT}"), "--streams", &specs.len().to_string()]).arg("--out").arg(&out);
    let mut rx = spawn_ready(rx, &bed.dir.join(format!("receiver-{mode}.log")))?;
    // By default the sender runs as root only for SCHED_FIFO, which keeps its
    // streams periodic while iperf3 and the receiver share the CPUs.
    let bin = workspace_bin("dwcs-streams")?;
    let mut tx = if a.unprivileged_sender {
        let mut c = bed.command_in(&bed.server_ns, "setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&bin);
        c
    } else {
        let mut c = bed.command_in(&bed.server_ns, &bin);
        c.arg("--realtime");
        c
    };
    tx.args(["--dest", &format!("{CLIENT_IP}:{PORT}"), "--device", &bed.server_dev]).args(a.set.to_args());
    if plain {
        tx.arg("--plain");
    }
    tx.env("QSOCK_SOCKET", bed.socket_path()).stdout(Stdio::piped()).stderr(std::fs::File::create(bed.dir.join(format!("sender-{mode}.log")))?);
    // The link is loaded before the first datagram and until after the last.
    let sender = std::thread::scope(|s| -> Result<serde_json::Value> {
        let load = s.spawn(|| bed.iperf_client(a.set.duration_s + 2, a.bed.iperf_streams));
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let o = tx.spawn()?.wait_with_output()?;
        load.join().map_err(|_| anyhow::anyhow!("iperf3 thread panicked"))??;
        if !o.status.success() {
            bail!("dwcs-streams ({mode}) failed: {}", std::fs::read_to_string(bed.dir.join(format!("sender-{mode}.log")))?);
        }
        Ok(serde_json::from_slice(&o.stdout)?)
    })?;
    if !rx.wait()?.success() {
        bail!("stream-receiver ({mode}) failed");
    }
    let reception: Reception = serde_json::from_slice(&std::fs::read(&out)?)?;
    if reception.receive_buffer_drops > 0 {
        eprintln!("{} datagrams lost in the receiver's full buffer, not in qsock", reception.receive_buffer_drops);
    }
    let arrivals = reception.arrivals;
    let sent: Vec<u64> = serde_json::from_value(sender["sent"].clone())?;
    Ok(Run { outcomes: outcomes(specs, &sent, &arrivals), sender })
}

/// Worst window among the deadlines of each second (for the plot).
fn worst_per_second(o: &StreamOutcome, per_second: usize) -> Vec<(f64, f64)> {
    let y = o.spec.y as usize;
    let mut in_window = 0usize;
    let mut worst = vec![0usize; o.missed.len().div_ceil(per_second.max(1))];
    for (i, &m) in o.missed.iter().enumerate() {
        in_window += m as usize;
        if i >= y {
            in_window -= o.missed[i - y] as usize;
        }
        let s = i / per_second.max(1);
        worst[s] = worst[s].max(in_window);
    }
    worst.into_iter().enumerate().map(|(s, w)| (s as f64, w as f64)).collect()
}

fn main() -> Result<()> {
    let a = Args::parse();
    let specs = parse_specs(&a.set.streams)?;
    let bed = Testbed::new("window")?;
    bed.init(&a.bed.link_rate)?;
    bed.start_daemon_with(&["--dwcs-headroom-permille", &a.dwcs_headroom_permille.to_string()])?;
    let _iperf = bed.iperf_server()?;
    eprintln!("[window] plain run ({} s under iperf3 -P {})", a.set.duration_s, a.bed.iperf_streams);
    let plain = run_once(&bed, &a, &specs, true)?;
    eprintln!("[window] DWCS run ({} s under iperf3 -P {})", a.set.duration_s, a.bed.iperf_streams);
    let dwcs = run_once(&bed, &a, &specs, false)?;

    let offered = a.set.wire_bytes() as u64 * 8 * 1_000_000 / a.set.ipg_us;
    let reserved: u64 = specs
        .iter()
        .map(|s| {
            let d = DwcsAttrs { ipg_ns: a.set.ipg_us * 1000, unit_bytes: a.set.wire_bytes(), oln: s.x, old: s.y, non_droppable: false };
            qsock_dwcs::module::reservation_bps(&d, a.dwcs_headroom_permille)
        })
        .sum();
    println!(
        "\nDWCS window test: {} streams of {} B every {} us ({} bit/s each on the wire), DWCS reserves {} bit/s of {} ({} per mille headroom; offered {} bit/s); iperf3 -P {} loads the link throughout; sender {}",
        specs.len(),
        a.set.bytes,
        a.set.ipg_us,
        offered,
        reserved,
        a.bed.link_rate,
        a.dwcs_headroom_permille,
        offered * specs.len() as u64,
        a.bed.iperf_streams,
        if a.unprivileged_sender { "unprivileged" } else { "SCHED_FIFO" }
    );
    println!(
        "{:>6} {:>6} | {:>8} {:>8} {:>8} {:>8} {:>7} | {:>8} {:>8} {:>8} {:>8} {:>7} {:>6}",
        "stream", "x/y", "plain ok", "late", "lost", "worst", "holds", "dwcs ok", "late", "lost", "worst", "holds", "viol."
    );
    std::fs::create_dir_all(&a.bed.out_dir)?;
    let csv_path = a.bed.out_dir.join("dwcs-window.csv");
    let mut w = csv::Writer::from_path(&csv_path)?;
    w.write_record(["stream", "x", "y", "mode", "sent", "on_time", "late", "lost", "worst_window", "holds"])?;
    for (i, (p, d)) in plain.outcomes.iter().zip(&dwcs.outcomes).enumerate() {
        let viol = &dwcs.sender["qinfo"][i]["scheduler_state"]["violations"];
        let holds = |o: &StreamOutcome| o.worst_window <= o.spec.x as usize;
        println!(
            "{:>6} {:>6} | {:>8} {:>8} {:>8} {:>8} {:>7} | {:>8} {:>8} {:>8} {:>8} {:>7} {:>6}",
            i,
            format!("{}/{}", p.spec.x, p.spec.y),
            p.on_time,
            p.late,
            p.lost,
            p.worst_window,
            holds(p),
            d.on_time,
            d.late,
            d.lost,
            d.worst_window,
            holds(d),
            viol
        );
        for (mode, o) in [("plain", p), ("dwcs", d)] {
            w.write_record([
                i.to_string(),
                o.spec.x.to_string(),
                o.spec.y.to_string(),
                mode.into(),
                o.sent.to_string(),
                o.on_time.to_string(),
                o.late.to_string(),
                o.lost.to_string(),
                o.worst_window.to_string(),
                holds(o).to_string(),
            ])?;
        }
    }
    w.flush()?;
    let per_second = (1_000_000 / a.set.ipg_us) as usize;
    let labels: Vec<String> = specs.iter().map(|s| format!("DWCS {}/{}", s.x, s.y)).collect();
    let mut series = Vec::new();
    for (i, d) in dwcs.outcomes.iter().enumerate() {
        let pts = worst_per_second(d, per_second);
        let n = pts.len() as f64;
        series.push(Series { label: &labels[i], points: pts, dashed: false, color: i });
        series.push(Series { label: "", points: vec![(0.0, d.spec.x as f64), (n, d.spec.x as f64)], dashed: true, color: i });
    }
    let svg = a.bed.out_dir.join("dwcs-window.svg");
    line_chart(&svg, "DWCS window test: worst window per second (dashed: constraint x)", "second", "misses in y consecutive deadlines", &series)?;
    println!("\nworst window = most deadlines missed (late or lost) in any y consecutive ones; holds = worst <= x; viol. = violations qinfo counted");
    println!("wrote {} and {}", csv_path.display(), svg.display());
    Ok(())
}

//! qinfo-driven adaptation under a bottleneck that drops mid-stream and
//! comes back. The stream is reserved less than it needs (`--rate`, below
//! its mean rate: admission gave less than asked) and lives on borrowing.
//! At a third of the stream the link drops from `--link-rate` to
//! `--low-rate` (`tc class change` of the root class and the best-effort
//! class), below the stream's mean rate, and at two thirds it comes back.
//! `--load` adds `iperf3 -P 4` in best effort throughout (best effort then
//! holds its own rate, and the stream gets only its reservation).
//! The stream runs twice in one bed: `video-server` adapting to `qinfo`
//! (shedding B-frames, then P-frames up to the next I-frame) and not
//! adapting. ffmpeg decodes both as an RTP client. Prints per second the
//! frames on time and the sender's shedding level, a summary, and writes
//! CSV.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use testbed::{ExperimentArgs, Testbed};
use video_server::session::{stream_once, RunOutcome, StreamRun, Transport};

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    bed: ExperimentArgs,
    /// H.264 Annex-B input.
    #[arg(long)]
    input: PathBuf,
    /// Frames per second of the input.
    #[arg(long, default_value_t = 20)]
    fps: u32,
    /// Playout budget, ms.
    #[arg(long, default_value_t = 300)]
    playout_ms: u64,
    /// Rate reserved for the stream, bit/s (below its mean: it relies on borrowing).
    #[arg(long, default_value_t = 1_000_000)]
    rate: u64,
    /// Burst reserved for the stream, bytes.
    #[arg(long, default_value_t = 30_000)]
    burst: u64,
    /// Link rate during the middle third, bit/s.
    #[arg(long, default_value_t = 1_200_000)]
    low_rate: u64,
    /// Load best effort with iperf3 throughout.
    #[arg(long)]
    load: bool,
}

/// Sets the root class (the link) and best effort (what guarantees leave)
/// to `link_bps`, as the link itself changing would.
fn set_link(bed: &Testbed, link_bps: u64, guaranteed_bps: u64) -> Result<()> {
    let dev = &bed.server_dev;
    let (link, be) = (format!("{link_bps}bit"), format!("{}bit", link_bps.saturating_sub(guaranteed_bps).max(8_000)));
    bed.tc_server(&["class", "change", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", &link, "ceil", &link])?;
    bed.tc_server(&["class", "change", "dev", dev, "parent", "1:1", "classid", "1:fffe", "htb", "rate", &be, "ceil", &link, "prio", "7"])?;
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let input = std::fs::canonicalize(&args.input).with_context(|| format!("input {}", args.input.display()))?;
    let link_bps = parse_link_rate(&args.bed.link_rate)?;
    let bed = Testbed::new("adapt")?;
    bed.init(&args.bed.link_rate)?;
    bed.start_daemon()?;
    let _iperf_server = bed.iperf_server()?;
    let mut outcomes: Vec<(&str, RunOutcome)> = Vec::new();
    for (label, adapt) in [("adapting", true), ("not adapting", false)] {
        let mut sender_args = vec!["--rate".to_string(), args.rate.to_string(), "--burst".into(), args.burst.to_string()];
        if !adapt {
            sender_args.push("--no-adapt".into());
        }
        let run = StreamRun {
            label: label.replace(' ', "-"),
            input: input.clone(),
            fps: args.fps,
            playout_ms: args.playout_ms,
            transport: Transport::Qsock,
            sender_args,
            decode: true,
        };
        eprintln!("[adapt] {label}");
        let o = stream_once(&bed, &run, |d| {
            let third = d / 3;
            let load = std::thread::scope(|s| {
                let load = s.spawn(|| if args.load { bed.iperf_client(d.as_secs() + 1, args.bed.iperf_streams) } else { Ok(()) });
                std::thread::sleep(third);
                set_link(&bed, args.low_rate, args.rate)?;
                std::thread::sleep(third);
                set_link(&bed, link_bps, args.rate)?;
                load.join().map_err(|_| anyhow::anyhow!("iperf3 thread panicked"))?
            });
            load
        })?;
        outcomes.push((label, o));
    }
    print_and_write(&args, &outcomes)
}

/// Parses a tc-style rate ("10mbit") into bit/s.
fn parse_link_rate(s: &str) -> Result<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.trim_end_matches("bit");
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1_000),
        Some('m') => (&s[..s.len() - 1], 1_000_000),
        Some('g') => (&s[..s.len() - 1], 1_000_000_000),
        _ => (s, 1),
    };
    Ok(num.parse::<u64>().with_context(|| format!("link rate {s:?}"))? * mult)
}

fn level_at(o: &RunOutcome, second: usize) -> u64 {
    let changes = o.sender["adaptation"].as_array().cloned().unwrap_or_default();
    changes.iter().rfind(|c| c["t_ms"].as_u64().unwrap_or(0) <= second as u64 * 1000 + 999).and_then(|c| c["level"].as_u64()).unwrap_or(0)
}

fn print_and_write(args: &Args, outcomes: &[(&str, RunOutcome)]) -> Result<()> {
    let n = outcomes.iter().map(|(_, o)| o.rows.len()).max().unwrap_or(0);
    println!();
    println!(
        "Link {} -> {} bit/s over the middle third and back; {}; stream reserved {} bit/s, burst {} bytes",
        args.bed.link_rate,
        args.low_rate,
        if args.load { format!("iperf3 -P {} throughout", args.bed.iperf_streams) } else { "no other traffic".into() },
        args.rate,
        args.burst
    );
    println!("{:>4} | {:>22} | {:>22}", "sec", "adapting: on time/lvl", "not adapting: on time");
    std::fs::create_dir_all(&args.bed.out_dir)?;
    let csv_path = args.bed.out_dir.join("video-adapt.csv");
    let mut w = csv::Writer::from_path(&csv_path)?;
    w.write_record(["second", "adapting_on_time_fps", "adapting_level", "not_adapting_on_time_fps"])?;
    for i in 0..n {
        let a = outcomes[0].1.rows.get(i).map_or(0, |r| r.on_time_fps);
        let b = outcomes[1].1.rows.get(i).map_or(0, |r| r.on_time_fps);
        let lvl = level_at(&outcomes[0].1, i);
        println!("{i:>4} | {:>18} / {lvl} | {b:>22}", a);
        w.write_record([i.to_string(), a.to_string(), lvl.to_string(), b.to_string()])?;
    }
    w.flush()?;
    println!();
    println!(
        "{:<14} {:>9} {:>8} {:>7} {:>7} {:>6} {:>6} {:>8} {:>6} {:>8} {:>6}",
        "run", "complete", "on time", "partial", "missing", "late", "shed", "decoded", "exact", "dec.err", "drops"
    );
    for (label, o) in outcomes {
        let s = &o.summary;
        let on_time = s.missed.iter().filter(|m| !**m).count();
        let drops = o.sender["qinfo"]["drops"]["deadline_packets"].as_u64().unwrap_or(0) + o.sender["qinfo"]["drops"]["frame_packets"].as_u64().unwrap_or(0);
        let d = o.decoded.clone().unwrap_or_default();
        println!(
            "{label:<14} {:>9} {on_time:>8} {:>7} {:>7} {:>6} {:>6} {:>8} {:>6} {:>8} {drops:>6}",
            format!("{}/{}", s.completed, s.frames),
            s.partial,
            s.missing,
            s.late,
            o.sender["shed_frames"].as_u64().unwrap_or(0),
            d.frames,
            d.exact_frames,
            d.errors
        );
    }
    println!("exact: frames ffmpeg decoded identical to the file's own decode (not concealed)");
    println!("adaptation steps (adapting run): {}", outcomes[0].1.sender["adaptation"]);
    println!("wrote {}", csv_path.display());
    Ok(())
}

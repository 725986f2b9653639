//! The qsock demo on real content: each input is streamed as RTP through a
//! 10 Mbit/s bottleneck, on an idle link and under `iperf3 -P 4` bulk TCP
//! for the whole stream, once with a plain socket and once through qsock
//! (token bucket sized by `video-server` from the file), all in one bed,
//! one after the other. ffmpeg receives every stream as an ordinary RTP
//! client (SDP file) and decodes it. Prints, per input, link and variant:
//! frames complete, partial, missing, late, I-frames lost, what ffmpeg
//! decoded and its error count, and how many frames plain delivered on
//! time that qsock did not; writes CSV and JSON.
//!
//! Test bed: namespaces `server` and `client` joined by veth; qsockd owns
//! the server's egress (root HTB at `--link-rate`). The qsock sender runs
//! unprivileged (uid 65534).
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use testbed::{ExperimentArgs, Testbed};
use video_server::session::{stream_once, RunOutcome, StreamRun, Transport};

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    bed: ExperimentArgs,
    /// H.264 Annex-B inputs (`scripts/footage.sh` makes the real ones).
    #[arg(long, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Frames per second of the inputs.
    #[arg(long, default_value_t = 20)]
    fps: u32,
    /// Playout budget (frame deadline = send time + this), ms.
    #[arg(long, default_value_t = 300)]
    playout_ms: u64,
    /// Link conditions to run: "idle", "load" (iperf3 for the whole stream).
    #[arg(long, value_delimiter = ',', default_value = "idle,load")]
    links: Vec<String>,
    /// Do not decode with ffmpeg.
    #[arg(long)]
    no_decode: bool,
}

/// One row of the result table.
#[derive(serde::Serialize)]
struct Row {
    input: String,
    link: String,
    variant: &'static str,
    frames: usize,
    complete: usize,
    partial: usize,
    missing: usize,
    late: usize,
    i_lost: usize,
    complete_on_time: usize,
    decoded: Option<u64>,
    decoded_exact: Option<u64>,
    decode_errors: Option<u64>,
    reserved_rate_bps: Option<u64>,
    reserved_burst_bytes: Option<u64>,
    shed_frames: u64,
    qsock_drops: Option<u64>,
    /// Frames the plain run delivered complete and on time that this run did not.
    worse_than_plain: usize,
}

fn on_time(o: &RunOutcome) -> Vec<bool> {
    o.summary.missed.iter().map(|m| !m).collect()
}

fn row(input: &str, link: &str, variant: &'static str, o: &RunOutcome, plain: Option<&RunOutcome>) -> Row {
    let s = &o.summary;
    let mine = on_time(o);
    let worse = plain.map_or(0, |p| on_time(p).iter().zip(&mine).filter(|(p, m)| **p && !**m).count());
    let res = o.sender.get("reservation");
    Row {
        input: input.to_string(),
        link: link.to_string(),
        variant,
        frames: s.frames,
        complete: s.completed,
        partial: s.partial,
        missing: s.missing,
        late: s.late,
        i_lost: s.lost_i,
        complete_on_time: mine.iter().filter(|x| **x).count(),
        decoded: o.decoded.as_ref().map(|d| d.frames),
        decoded_exact: o.decoded.as_ref().map(|d| d.exact_frames),
        decode_errors: o.decoded.as_ref().map(|d| d.errors),
        reserved_rate_bps: res.and_then(|r| r["rate_bps"].as_u64()),
        reserved_burst_bytes: res.and_then(|r| r["burst_bytes"].as_u64()),
        shed_frames: o.sender["shed_frames"].as_u64().unwrap_or(0),
        qsock_drops: o
            .sender
            .get("qinfo")
            .and_then(|i| i.get("drops"))
            .map(|d| d["deadline_packets"].as_u64().unwrap_or(0) + d["frame_packets"].as_u64().unwrap_or(0) + d["qdisc_packets"].as_u64().unwrap_or(0)),
        worse_than_plain: worse,
    }
}

fn print_table(rows: &[Row]) {
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    println!(
        "{:<11} {:<5} {:<6} {:>8} {:>8} {:>7} {:>7} {:>6} {:>7} {:>8} {:>6} {:>8} {:>6} {:>15} {:>6}",
        "input", "link", "var.", "complete", "on time", "partial", "missing", "late", "I lost", "decoded", "exact", "dec.err", "worse", "reserved", "drops"
    );
    for r in rows {
        let reserved = match (r.reserved_rate_bps, r.reserved_burst_bytes) {
            (Some(rate), Some(b)) => format!("{:.2}M/{}kB", rate as f64 / 1e6, b / 1000),
            _ => "-".into(),
        };
        println!(
            "{:<11} {:<5} {:<6} {:>8} {:>8} {:>7} {:>7} {:>6} {:>7} {:>8} {:>6} {:>8} {:>6} {:>15} {:>6}",
            r.input,
            r.link,
            r.variant,
            format!("{}/{}", r.complete, r.frames),
            r.complete_on_time,
            r.partial,
            r.missing,
            r.late,
            r.i_lost,
            opt(r.decoded),
            opt(r.decoded_exact),
            opt(r.decode_errors),
            r.worse_than_plain,
            reserved,
            opt(r.qsock_drops)
        );
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bed = Testbed::new("demo")?;
    bed.init(&args.bed.link_rate)?;
    bed.start_daemon()?;
    let _iperf_server = bed.iperf_server()?;
    let mut rows = Vec::new();
    for input in &args.input {
        let input = std::fs::canonicalize(input).with_context(|| format!("input {}", input.display()))?;
        let name = input.file_stem().map_or("input".into(), |s| s.to_string_lossy().into_owned());
        for link in &args.links {
            let load = match link.as_str() {
                "idle" => false,
                "load" => true,
                other => anyhow::bail!("link condition {other:?}: use idle or load"),
            };
            let mut plain_outcome = None;
            for plain in [true, false] {
                let variant = if plain { "plain" } else { "qsock" };
                let run = StreamRun {
                    label: format!("{name}-{link}-{variant}"),
                    input: input.clone(),
                    fps: args.fps,
                    playout_ms: args.playout_ms,
                    transport: if plain { Transport::Plain } else { Transport::Qsock },
                    sender_args: Vec::new(),
                    decode: !args.no_decode,
                };
                eprintln!("[demo] {name}, {link} link, {variant}");
                let o = stream_once(&bed, &run, |d| if load { bed.iperf_client(d.as_secs() + 1, args.bed.iperf_streams) } else { Ok(()) })?;
                if let Some(d) = o.decoded.as_ref().filter(|d| d.errors > 0 || d.socket_drops > 0) {
                    eprintln!(
                        "[demo] ffmpeg said ({} lines): {}; datagrams its socket dropped: {}; first frames not as encoded (output positions): {:?}",
                        d.errors,
                        d.first_errors.join(" | "),
                        d.socket_drops,
                        d.first_inexact
                    );
                }
                rows.push(row(&name, link, variant, &o, plain_outcome.as_ref()));
                if plain {
                    plain_outcome = Some(o);
                }
            }
        }
    }
    println!();
    println!(
        "Real content through a {} bottleneck (load: iperf3 -P {} for the whole stream); playout budget {} ms",
        args.bed.link_rate, args.bed.iperf_streams, args.playout_ms
    );
    print_table(&rows);
    println!("on time: complete and within the playout budget; worse: frames plain delivered on time that this run did not;");
    println!("decoded/exact/dec.err: frames ffmpeg decoded as an RTP client (SDP), those identical to the file's own decode, its error lines;");
    println!("reserved: what video-server asked (rate/burst); drops: qsock drops (packets)");
    std::fs::create_dir_all(&args.bed.out_dir)?;
    let csv_path = args.bed.out_dir.join("video-demo.csv");
    let mut w = csv::Writer::from_path(&csv_path)?;
    for r in &rows {
        w.serialize(r)?;
    }
    w.flush()?;
    let json_path = args.bed.out_dir.join("video-demo.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&rows)?)?;
    println!("wrote {} and {}", csv_path.display(), json_path.display());
    Ok(())
}

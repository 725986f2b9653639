//! Streams an H.264 Annex-B file as RTP over UDP, paced at the file's frame
//! rate. With qsock (default) the socket gets a guaranteed rate, I-frames are
//! non-droppable, P- and B-frames droppable (B first), every packet carries
//! its frame's deadline and frame-start/end marks. `--scheduler dwcs` puts
//! the socket under DWCS instead (ipg = 1/fps, window constraint
//! `--oln`/`--old` over frames, reservation from the file's mean frame size).
//! `--plain` uses a plain socket. Prints a JSON summary (with `qinfo` in qsock
//! mode) on stdout.
use std::{
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Parser;
use qsock::{DropPriority, DwcsAttrs, PacketFlags, QosParams, RateAttrs, SchedulerParams};
use video_server::{h264::FrameKind, rtpstream};

#[derive(Parser, Debug)]
struct Args {
    /// H.264 Annex-B input.
    #[arg(long)]
    input: PathBuf,
    /// Receiver address.
    #[arg(long)]
    dest: SocketAddr,
    /// Frames per second of the file.
    #[arg(long, default_value_t = 20)]
    fps: u32,
    /// Largest RTP datagram, bytes.
    #[arg(long, default_value_t = 1200)]
    mtu: usize,
    /// Use a plain UDP socket instead of qsock.
    #[arg(long)]
    plain: bool,
    /// Egress device for qsock.
    #[arg(long, default_value = "eth0")]
    device: String,
    /// Guaranteed rate for qsock, bit/s (rate scheduler).
    #[arg(long, default_value_t = 2_500_000)]
    rate: u64,
    /// qsock scheduler: "rate" or "dwcs".
    #[arg(long, default_value = "rate")]
    scheduler: String,
    /// DWCS: frames that may be lost in any `--old` consecutive frames.
    #[arg(long, default_value_t = 1)]
    oln: u32,
    /// DWCS: window length, frames.
    #[arg(long, default_value_t = 10)]
    old: u32,
    /// Playout budget: each frame's deadline is its send time plus this, ms.
    #[arg(long, default_value_t = 300)]
    playout_ms: u64,
}

fn drop_priority(kind: FrameKind) -> DropPriority {
    match kind {
        FrameKind::I => DropPriority::NON_DROPPABLE,
        FrameKind::P => DropPriority::droppable(4).expect("in range"),
        FrameKind::B => DropPriority::droppable(1).expect("in range"),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let frames = video_server::h264::read_frames(&args.input)?;
    let stream = rtpstream::packetize(&frames, args.mtu, args.fps)?;
    let sock: UdpSocket = if args.plain {
        UdpSocket::bind("0.0.0.0:0")?
    } else {
        let scheduler = match args.scheduler.as_str() {
            "rate" => SchedulerParams::Rate(RateAttrs { rate_bps: args.rate, ..RateAttrs::guaranteed(args.rate) }),
            "dwcs" => {
                // One DWCS unit per frame: its mean size on the wire (IPv4 + UDP + Ethernet headers added).
                let wire: usize = stream.iter().flat_map(|f| f.packets.iter().map(|p| p.len() + 42)).sum();
                SchedulerParams::Dwcs(DwcsAttrs {
                    ipg_ns: 1_000_000_000 / args.fps as u64,
                    unit_bytes: (wire / stream.len().max(1)) as u32,
                    oln: args.oln,
                    old: args.old,
                    non_droppable: false,
                })
            }
            other => anyhow::bail!("unknown scheduler {other:?}; use rate or dwcs"),
        };
        let params = QosParams {
            device: args.device.clone(),
            scheduler,
            intents: qsock::Intents {
                category: Some(qsock::Category::Stream),
                bitrate_bps: Some(args.rate),
                burstiness: Some(qsock::Burstiness::RegularBursts),
                timeliness: Some(qsock::Timeliness::Stream),
                resilience: Some(qsock::Resilience::Tolerant),
                ..Default::default()
            },
        };
        UdpSocket::from(qsock::qsocket(libc::AF_INET, libc::SOCK_DGRAM, 0, &params).context("qsocket")?)
    };
    let period = Duration::from_nanos(1_000_000_000 / args.fps as u64);
    let start = Instant::now();
    let start_mono = qsock::monotonic_now_ns();
    let (mut sent_frames, mut skipped_late) = (0u64, 0u64);
    for f in &stream {
        let due = start + period * f.index as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if args.plain {
            for p in &f.packets {
                sock.send_to(p, args.dest)?;
            }
            sent_frames += 1;
            continue;
        }
        let deadline = start_mono + (period * f.index as u32).as_nanos() as u64 + args.playout_ms * 1_000_000;
        let prio = drop_priority(f.kind);
        let late = deadline <= qsock::monotonic_now_ns() + 1_000_000;
        if late && prio != DropPriority::NON_DROPPABLE {
            skipped_late += 1; // the application's own lossy choice: a late frame is useless
            continue;
        }
        let n = f.packets.len();
        for (i, p) in f.packets.iter().enumerate() {
            let flags = PacketFlags { deadline_ns: (!late).then_some(deadline), drop_priority: prio, frame_start: i == 0, frame_end: i + 1 == n };
            qsock::qsendto(&sock, p, &args.dest, &flags)?;
        }
        sent_frames += 1;
    }
    let info = if args.plain { None } else { Some(qsock::qinfo(&sock)?) };
    // End of stream: one marker, non-droppable, behind everything in the same queue.
    let end = [0x80u8, rtpstream::PAYLOAD_TYPE_END, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    if args.plain {
        sock.send_to(&end, args.dest)?;
    } else {
        qsock::qsendto(&sock, &end, &args.dest, &PacketFlags { drop_priority: DropPriority::NON_DROPPABLE, ..Default::default() })?;
    }
    let summary = serde_json::json!({ "sent_frames": sent_frames, "skipped_late": skipped_late, "qinfo": info });
    println!("{summary}");
    if !args.plain {
        qsock::qclose(std::os::fd::OwnedFd::from(sock))?;
    }
    Ok(())
}

//! Streams an H.264 Annex-B file as RTP over UDP, paced at the file's frame
//! rate. With qsock (default) the socket gets a token-bucket reservation
//! sized from the file itself (`envelope`: every frame within
//! `--sizing-budget-ms` when the class gets exactly its reservation; say
//! `--rate`/`--burst` to choose), I-frames are non-droppable, P- and
//! B-frames droppable (B first), and every frame is sent with its deadline,
//! its size on its first packet and frame-start/end marks, so the data path
//! judges it once, whole. While it streams a thread of its own reads `qinfo`
//! (the send loop never waits on qsockd, and figures that span a daemon
//! restart are a new baseline, not pressure) and it sheds
//! B-frames, then P-frames up to the next I-frame, when its class is under
//! pressure (`adapt`; `--no-adapt` turns it off). `--scheduler dwcs` puts the
//! socket under DWCS instead (ipg = 1/fps, window constraint `--oln`/`--old`
//! over frames, reservation from the file's mean frame size). `--plain` uses
//! a plain socket. `--session` sends over a qsock session instead (issue
//! 17): `--dest` is a session listener (`video-receiver --session`), the
//! session is ordered lossy with the latency objective (deadline-aware
//! striping over every interface qsockd manages), every RTP packet is one
//! message with the same flags, and the reservation is split over the
//! paths in proportion to each interface's nominal rate (each path socket
//! gets its share as a guarantee and may borrow up to its link). Prints
//! what it reserved on stderr and a JSON summary (with `qinfo` in qsock
//! mode, the session's figures in session mode) on stdout.
use std::{
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Parser;
use qsock::{DropPriority, DwcsAttrs, PacketFlags, QosParams, RateAttrs, SchedulerParams};
use video_server::{
    adapt::{Sample, Shedder},
    envelope::{size_reservation, Reservation},
    h264::FrameKind,
    rtpstream,
};

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
    #[arg(long, default_value_t = rtpstream::DEFAULT_MTU)]
    mtu: usize,
    /// Use a plain UDP socket instead of qsock.
    #[arg(long, conflicts_with = "session")]
    plain: bool,
    /// Send over a qsock session to a session listener at `--dest`.
    #[arg(long)]
    session: bool,
    /// Egress device for qsock.
    #[arg(long, default_value = "eth0")]
    device: String,
    /// Guaranteed rate, bit/s (rate scheduler). Default: sized from the file.
    #[arg(long)]
    rate: Option<u64>,
    /// Burst with `--rate`, bytes. Default: the file's envelope at that rate.
    #[arg(long, requires = "rate")]
    burst: Option<u64>,
    /// Delay budget the reservation is sized for, ms: every frame leaves
    /// within it when the class gets exactly its reservation. Default: two
    /// thirds of the playout budget.
    #[arg(long)]
    sizing_budget_ms: Option<u64>,
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
    /// Do not adapt to qinfo (send every frame whatever the pressure).
    #[arg(long)]
    no_adapt: bool,
    /// How often to read qinfo for adaptation, ms.
    #[arg(long, default_value_t = 250)]
    adapt_poll_ms: u64,
}

fn drop_priority(kind: FrameKind) -> DropPriority {
    match kind {
        FrameKind::I => DropPriority::NON_DROPPABLE,
        FrameKind::P => DropPriority::droppable(4).expect("in range"),
        FrameKind::B => DropPriority::droppable(1).expect("in range"),
    }
}

/// The reservation to ask for: `--rate`/`--burst`, or sized from the file.
fn reservation(args: &Args, stream: &[rtpstream::RtpFrame]) -> Result<(Reservation, &'static str)> {
    let sizes: Vec<u64> = stream.iter().map(|f| f.wire_bytes()).collect();
    let period_ns = 1_000_000_000 / args.fps as u64;
    let budget_ns = args.sizing_budget_ms.unwrap_or(args.playout_ms * 2 / 3) * 1_000_000;
    match args.rate {
        Some(rate_bps) => {
            let burst_bytes = args.burst.unwrap_or_else(|| video_server::envelope::envelope_burst(&sizes, period_ns, rate_bps));
            let delay_bound_ns = (burst_bytes as u128 * 8_000_000_000 / rate_bps.max(1) as u128) as u64;
            Ok((Reservation { rate_bps, burst_bytes, delay_bound_ns }, "given"))
        }
        None => Ok((size_reservation(&sizes, period_ns, budget_ns)?, "sized from the file")),
    }
}

/// The stream over a qsock session: each path gets its interface's share
/// of the reservation `res` (by nominal upstream rate, from qsockd).
fn stream_over_session(args: &Args, stream: &[rtpstream::RtpFrame], res: &Reservation) -> Result<serde_json::Value> {
    let mut cfg = qsock_session::SessionConfig::new(qsock_session::Semantics::OrderedLossy, &[qsock_session::Objective::Latency]);
    let interfaces = qsock::Client::connect_default().and_then(|c| c.interfaces()).context("qsockd's interfaces")?;
    let total: u64 = interfaces.iter().filter(|i| i.up).map(|i| i.nominal_up_bps).sum();
    for i in interfaces.iter().filter(|i| i.up && i.nominal_up_bps > 0) {
        let share = |x: u64| (x as u128 * i.nominal_up_bps as u128 / total.max(1) as u128) as u64;
        let rate = RateAttrs::token_bucket(share(res.rate_bps).max(1), share(res.burst_bytes).max(1500));
        eprintln!("video-server: path on {}: rate {} bit/s, burst {} bytes", i.name, rate.rate_bps, rate.burst_bytes.unwrap_or(0));
        cfg.path_schedulers.push((i.name.clone(), SchedulerParams::Rate(rate)));
    }
    let session = qsock_session::SessionSocket::new(cfg)?.connect(args.dest).context("session to the receiver")?;
    let period = Duration::from_nanos(1_000_000_000 / args.fps as u64);
    let start = Instant::now();
    let start_mono = qsock::monotonic_now_ns();
    for f in stream {
        let due = start + period * f.index as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let deadline = start_mono + (period * f.index as u32).as_nanos() as u64 + args.playout_ms * 1_000_000;
        let n = f.packets.len();
        let frame_bytes = u32::try_from(f.wire_bytes()).unwrap_or(u32::MAX);
        for (i, p) in f.packets.iter().enumerate() {
            let flags = PacketFlags {
                deadline_ns: Some(deadline),
                drop_priority: drop_priority(f.kind),
                frame_start: i == 0,
                frame_end: i + 1 == n,
                frame_bytes: (i == 0).then_some(frame_bytes),
            };
            session.write(p, &flags)?;
        }
    }
    let paths: Vec<serde_json::Value> =
        session.path_qinfo().into_iter().map(|(id, q)| serde_json::json!({"path": id, "qinfo": q.map_err(|e| e.to_string()).ok()})).collect();
    // Close waits until the receiver has what it is owed (non-droppable frames, ones still in time).
    let info = session.close()?;
    Ok(serde_json::json!({"sent_frames": stream.len(), "shed_frames": 0, "reservation": res, "session": info, "path_qinfo": paths}))
}

fn main() -> Result<()> {
    env_logger::init();
    let args = Args::parse();
    let frames = video_server::h264::read_frames(&args.input)?;
    let stream = rtpstream::packetize(&frames, args.mtu, args.fps)?;
    let (res, how) = reservation(&args, &stream)?;
    if args.session {
        eprintln!("video-server: session; rate {} bit/s, burst {} bytes ({how})", res.rate_bps, res.burst_bytes);
        println!("{}", stream_over_session(&args, &stream, &res)?);
        return Ok(());
    }
    let sock: UdpSocket = if args.plain {
        UdpSocket::bind("0.0.0.0:0")?
    } else {
        let sizes: Vec<u64> = stream.iter().map(|f| f.wire_bytes()).collect();
        let mean = sizes.iter().sum::<u64>() / sizes.len() as u64;
        let scheduler = match args.scheduler.as_str() {
            "rate" => {
                eprintln!(
                    "video-server: asking for rate {} bit/s, burst {} bytes ({how}; delay bound {} ms; mean {} bit/s, largest frame {} bytes = {:.1}x the mean)",
                    res.rate_bps,
                    res.burst_bytes,
                    res.delay_bound_ns / 1_000_000,
                    mean * 8 * args.fps as u64,
                    sizes.iter().max().copied().unwrap_or(0),
                    *sizes.iter().max().unwrap_or(&0) as f64 / mean.max(1) as f64
                );
                SchedulerParams::Rate(RateAttrs::token_bucket(res.rate_bps, res.burst_bytes))
            }
            // One DWCS unit per frame: its mean size on the wire.
            "dwcs" => SchedulerParams::Dwcs(DwcsAttrs {
                ipg_ns: 1_000_000_000 / args.fps as u64,
                unit_bytes: mean as u32,
                oln: args.oln,
                old: args.old,
                non_droppable: false,
            }),
            other => anyhow::bail!("unknown scheduler {other:?}; use rate or dwcs"),
        };
        let params = QosParams {
            device: Some(args.device.clone()),
            policy: None,
            scheduler,
            intents: qsock::Intents {
                category: Some(qsock::Category::Stream),
                bitrate_bps: Some(mean * 8 * args.fps as u64),
                burstiness: Some(qsock::Burstiness::RegularBursts),
                timeliness: Some(qsock::Timeliness::Stream),
                resilience: Some(qsock::Resilience::Tolerant),
                ..Default::default()
            },
        };
        UdpSocket::from(qsock::qsocket(libc::AF_INET, libc::SOCK_DGRAM, 0, &params).context("qsocket")?)
    };
    let adapt = !args.plain && !args.no_adapt;
    // A step gets 1.5 s to show (the queue it left behind drains first); 3 s of calm to step back.
    let mut shedder = Shedder::new(args.playout_ms * 1_000_000 / 3, 1_500_000_000, 3_000_000_000);
    let poll = Duration::from_millis(args.adapt_poll_ms.max(1));
    // qinfo is read by a thread of its own: the send loop never waits on qsockd.
    let poller = if adapt { Some(video_server::poll::InfoPoller::start(&sock, poll).context("start the qinfo poller")?) } else { None };
    let mut last_info: Option<qsock::QInfo> = None;
    let mut baselines_after_outage = 0u64;
    let mut level_changes = Vec::new();

    let period = Duration::from_nanos(1_000_000_000 / args.fps as u64);
    let start = Instant::now();
    let start_mono = qsock::monotonic_now_ns();
    let (mut sent_frames, mut shed_frames) = (0u64, 0u64);
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
        // New figures, if the poller has any; figures that span a daemon
        // outage are a new baseline, not pressure.
        if let Some(p) = poller.as_ref().and_then(|p| p.latest()) {
            match &last_info {
                Some(before) if !p.after_outage => {
                    let t = start.elapsed().as_nanos() as u64;
                    if let Some(level) = shedder.observe(Sample::between(before, &p.info), t) {
                        level_changes.push(serde_json::json!({"t_ms": t / 1_000_000, "frame": f.index, "level": level}));
                    }
                }
                Some(_) => baselines_after_outage += 1,
                None => {}
            }
            last_info = Some(p.info);
        }
        if adapt && !shedder.send(f.kind, f.reference) {
            shed_frames += 1;
            continue;
        }
        // A deadline already past (the sender stalled) is the data path's
        // call: it drops a droppable frame and sends an I-frame late.
        let deadline = start_mono + (period * f.index as u32).as_nanos() as u64 + args.playout_ms * 1_000_000;
        let prio = drop_priority(f.kind);
        let frame_bytes = u32::try_from(f.wire_bytes()).unwrap_or(u32::MAX);
        let n = f.packets.len();
        for (i, p) in f.packets.iter().enumerate() {
            let flags = PacketFlags {
                deadline_ns: Some(deadline),
                drop_priority: prio,
                frame_start: i == 0,
                frame_end: i + 1 == n,
                frame_bytes: (i == 0).then_some(frame_bytes),
            };
            qsock::qsendto(&sock, p, &args.dest, &flags)?;
        }
        sent_frames += 1;
    }
    let failed_polls = poller.as_ref().map(|p| p.failed_polls()).unwrap_or(0);
    drop(poller);
    // qinfo goes through qsockd; a daemon that is away costs the report, not the stream.
    let info = if args.plain { None } else { qsock::qinfo(&sock).map_err(|e| eprintln!("video-server: qinfo: {e}")).ok() };
    // End of stream: one marker, non-droppable, behind everything in the same queue.
    let end = [0x80u8, rtpstream::PAYLOAD_TYPE_END, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    if args.plain {
        sock.send_to(&end, args.dest)?;
    } else {
        qsock::qsendto(&sock, &end, &args.dest, &PacketFlags { drop_priority: DropPriority::NON_DROPPABLE, ..Default::default() })?;
    }
    // Once the class has drained (bounded: 2 s), every packet the data path
    // let into the qdisc has been seen leaving it.
    let drained = if args.plain {
        None
    } else {
        let give_up = Instant::now() + Duration::from_secs(2);
        loop {
            let Ok(i) = qsock::qinfo(&sock) else { break None };
            if i.enqueued_packets == i.sent_packets + i.unseen_packets || Instant::now() > give_up {
                break Some(i);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let summary = serde_json::json!({
        "drained_qinfo": drained,
        "sent_frames": sent_frames,
        "shed_frames": shed_frames,
        "reservation": if args.plain { None } else { Some(res) },
        "adaptation": level_changes,
        "failed_qinfo_polls": failed_polls,
        "baselines_after_outage": baselines_after_outage,
        "qinfo": info,
    });
    println!("{summary}");
    if !args.plain {
        if let Err(e) = qsock::qclose(std::os::fd::OwnedFd::from(sock)) {
            eprintln!("video-server: qclose: {e} (the daemon releases the socket when this process exits)");
        }
    }
    Ok(())
}

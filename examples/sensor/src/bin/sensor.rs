//! Sensor sender: emits readings at their planned times (random trace or
//! CSV), each with its own deadline. `--mode plain` uses a plain UDP socket;
//! `lossless` and `lossy` use qsock EDF; `session` sends over a qsock
//! session (`qsock-session`) to a session listener at `--dest`
//! (`sensor-receiver --session`): unordered lossy with the latency
//! objective, so each reading goes on the path predicted to deliver it by
//! its deadline over every interface qsockd manages, and one no path can
//! deliver in time is dropped at the sender. Prints a JSON summary on stdout.
use std::{
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use qsock::{EdfAttrs, PacketFlags, QosParams, SchedulerParams};
use sensor::{csv_trace, random_trace, Reading};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Plain,
    Lossless,
    Lossy,
    /// A qsock session striped over every managed interface.
    Session,
}

/// Where the readings go.
enum Out {
    Socket(UdpSocket),
    Session(qsock_session::Session),
}

#[derive(Parser, Debug)]
struct Args {
    /// Receiver address.
    #[arg(long)]
    dest: SocketAddr,
    /// plain socket, or qsock EDF lossless / lossy.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Egress device (qsock modes).
    #[arg(long, default_value = "eth0")]
    device: String,
    /// UDP payload per reading, bytes.
    #[arg(long, default_value_t = 200)]
    message_bytes: usize,
    /// Shortest gap the application declares to EDF admission, ms.
    #[arg(long, default_value_t = 8)]
    declared_interval_ms: u64,
    /// Random trace: gap between readings, uniform in MIN,MAX ms.
    #[arg(long, value_delimiter = ',', default_values_t = [2u64, 18])]
    gap_ms: Vec<u64>,
    /// Random trace: relative deadline, uniform in MIN,MAX ms.
    #[arg(long, value_delimiter = ',', default_values_t = [20u64, 60])]
    deadline_ms: Vec<u64>,
    /// Random trace length, s.
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    /// Random trace seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Read the readings from this CSV (offset_ms,value,deadline_ms) instead.
    #[arg(long)]
    csv: Option<PathBuf>,
}

/// Bytes a datagram of `payload` bytes takes on an Ethernet link (IPv4, UDP).
const WIRE_OVERHEAD: usize = 14 + 20 + 8;

fn main() -> Result<()> {
    let a = Args::parse();
    let plan = match &a.csv {
        Some(p) => csv_trace(p)?,
        None => random_trace(a.seed, a.duration_s, (a.gap_ms[0], a.gap_ms[1]), (a.deadline_ms[0], a.deadline_ms[1])),
    };
    let out = match a.mode {
        Mode::Session => {
            let cfg = qsock_session::SessionConfig::new(qsock_session::Semantics::UnorderedLossy, &[qsock_session::Objective::Latency]);
            Out::Session(qsock_session::SessionSocket::new(cfg)?.connect(a.dest).context("session to the receiver")?)
        }
        Mode::Plain => Out::Socket(UdpSocket::bind("0.0.0.0:0")?),
        Mode::Lossless | Mode::Lossy => {
            let edf = EdfAttrs {
                lossy: a.mode == Mode::Lossy,
                message_bytes: (a.message_bytes + WIRE_OVERHEAD) as u32,
                min_interval_ns: a.declared_interval_ms * 1_000_000,
            };
            let params = QosParams::on(a.device.clone(), SchedulerParams::Edf(edf));
            Out::Socket(UdpSocket::from(qsock::qsocket(libc::AF_INET, libc::SOCK_DGRAM, 0, &params).context("qsocket (EDF)")?))
        }
    };
    let start = Instant::now();
    let start_ns = qsock::monotonic_now_ns();
    let mut sent_offsets_ns = Vec::with_capacity(plan.len());
    let mut skipped = 0u64;
    for (seq, p) in plan.iter().enumerate() {
        if let Some(w) = (start + Duration::from_nanos(p.at_ns)).checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        let deadline_ns = start_ns + p.at_ns + p.deadline_in_ns;
        let r = Reading { seq: seq as u32, sent_ns: qsock::monotonic_now_ns(), deadline_ns, value: p.value };
        sent_offsets_ns.push(p.at_ns);
        let msg = r.encode(a.message_bytes)?;
        let past = deadline_ns <= qsock::monotonic_now_ns() + 100_000;
        let flags = PacketFlags { deadline_ns: (!past).then_some(deadline_ns), ..Default::default() };
        match (&out, a.mode) {
            (Out::Socket(sock), Mode::Plain) => {
                sock.send_to(&msg, a.dest)?;
            }
            // Lossy: a reading already past its deadline is useless; lossless sends it anyway.
            (_, Mode::Lossy | Mode::Session) if past => skipped += 1,
            (Out::Socket(sock), _) => {
                qsock::qsendto(sock, &msg, &a.dest, &flags)?;
            }
            (Out::Session(s), _) => s.write(&msg, &flags)?,
        }
    }
    let summary = serde_json::json!({ "start_ns": start_ns, "sent_offsets_ns": sent_offsets_ns, "skipped_past_deadline": skipped });
    let (key, figures) = match out {
        // The session's end is the stream's: closing waits until what is owed arrived.
        Out::Session(s) => ("session", serde_json::to_value(s.close()?)?),
        Out::Socket(sock) => {
            let info = if a.mode == Mode::Plain { None } else { Some(qsock::qinfo(&sock)?) };
            let end = b"END";
            if a.mode == Mode::Plain {
                sock.send_to(end, a.dest)?;
            } else {
                qsock::qsendto(&sock, end, &a.dest, &PacketFlags { drop_priority: qsock::DropPriority::NON_DROPPABLE, ..Default::default() })?;
            }
            ("qinfo", serde_json::to_value(info)?)
        }
    };
    let mut summary = summary;
    summary[key] = figures;
    println!("{summary}");
    Ok(())
}

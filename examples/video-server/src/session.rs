//! One video stream through a test bed: `video-server` on the sending side
//! (plain, through qsock as an unprivileged user, or over a qsock session
//! striped over every interface of a multi-homed host), `video-receiver`
//! on the receiving side recording every frame, and
//! optionally ffmpeg as an ordinary RTP client decoding what arrives (the
//! receiver relays the stream to it and ends the session with an RTCP BYE;
//! ffmpeg reads an SDP file). Used by the
//! demo, the adaptation experiment and the integration tests.
use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use testbed::{multihomed::MultiHomed, run, spawn_ready, workspace_bin, Testbed, CLIENT_IP};

use crate::report::{analyse, FrameRecord, SecondRow, Summary};

/// Port the receiver listens on in the client namespace.
pub const VIDEO_PORT: u16 = 5004;
/// Port ffmpeg listens on (loopback of the client namespace).
pub const DECODER_PORT: u16 = 5006;

/// How the sender reaches the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A plain UDP socket.
    Plain,
    /// One qsock socket (a class on the sender's device, per-message flags).
    Qsock,
    /// A qsock session (`qsock-session`): ordered lossy, deadline-aware
    /// striping over every interface qsockd manages, each path a qsock socket.
    Session,
}

/// Where a stream runs: the namespaces of both ends and the bed's files.
#[derive(Clone, Debug)]
pub struct Places {
    /// Scratch directory (logs, records, SDP).
    pub dir: PathBuf,
    /// Namespace of `video-server` (qsockd runs there).
    pub sender_ns: String,
    /// Namespace of `video-receiver` and ffmpeg.
    pub receiver_ns: String,
    /// The receiver's address.
    pub receiver_ip: std::net::IpAddr,
    /// The sender's egress device for [`Transport::Qsock`].
    pub device: String,
    /// qsockd's socket.
    pub socket_path: PathBuf,
}

impl Places {
    /// The two-namespace bed: the server sends to the client.
    pub fn of_testbed(bed: &Testbed) -> Self {
        Self {
            dir: bed.dir.clone(),
            sender_ns: bed.server_ns.clone(),
            receiver_ns: bed.client_ns.clone(),
            receiver_ip: CLIENT_IP.into(),
            device: bed.server_dev.clone(),
            socket_path: bed.socket_path(),
        }
    }

    /// The multi-homed bed: the host sends to the server's service address
    /// (a session stripes over every link; one socket leaves by the first).
    pub fn of_multi_homed(bed: &MultiHomed) -> Self {
        Self {
            dir: bed.dir.clone(),
            sender_ns: bed.host_ns.clone(),
            receiver_ns: bed.server_ns.clone(),
            receiver_ip: testbed::multihomed::SERVICE_IP.into(),
            device: bed.links[0].name.clone(),
            socket_path: bed.socket_path(),
        }
    }

    fn command_in(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }
}

/// What to stream and how.
#[derive(Clone, Debug)]
pub struct StreamRun {
    /// Name of the run, for file names and messages.
    pub label: String,
    /// H.264 Annex-B input.
    pub input: PathBuf,
    /// Frames per second of the input.
    pub fps: u32,
    /// Playout budget, ms.
    pub playout_ms: u64,
    /// How the sender reaches the receiver.
    pub transport: Transport,
    /// More `video-server` arguments (e.g. `--rate`, `--no-adapt`).
    pub sender_args: Vec<String>,
    /// Decode the stream with ffmpeg as an RTP client.
    pub decode: bool,
}

/// What ffmpeg made of the stream.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Decoded {
    /// Frames ffmpeg decoded (lines of its `framecrc` output).
    pub frames: u64,
    /// Of those, frames identical to a frame of the file decoded locally
    /// (same `framecrc` checksum): shown as encoded, not concealed.
    pub exact_frames: u64,
    /// Lines ffmpeg printed at log level `error` (decode errors).
    pub errors: u64,
    /// The first few of those lines.
    pub first_errors: Vec<String>,
    /// Output positions (from 0) of the first few frames that were not exact.
    pub first_inexact: Vec<usize>,
    /// UDP datagrams the client namespace's stack dropped for a full
    /// receive buffer while ffmpeg ran (`Udp: RcvbufErrors`): relayed
    /// packets ffmpeg never got, though the receiver did.
    pub socket_drops: u64,
}

/// The outcome of one run.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// Per frame, what the receiver saw.
    pub records: Vec<FrameRecord>,
    /// Per second of the run.
    pub rows: Vec<SecondRow>,
    /// The whole run.
    pub summary: Summary,
    /// The sender's JSON summary (reservation, adaptation, qinfo).
    pub sender: serde_json::Value,
    /// ffmpeg's count, if it decoded.
    pub decoded: Option<Decoded>,
}

/// Streams `run.input` once over `bed` (qsockd running for the qsock
/// variants): [`stream_between`] the server and the client.
pub fn stream_once(bed: &Testbed, run: &StreamRun, during: impl FnOnce(Duration) -> Result<()>) -> Result<RunOutcome> {
    stream_between(&Places::of_testbed(bed), run, during)
}

/// Streams `run.input` once between `at`'s sender and receiver. `during` runs on this thread once the sender has started,
/// with the stream's nominal duration (e.g. a load, or link changes);
/// returns after the sender, the receiver and ffmpeg have finished.
/// Errors: a process that fails to start or exits with an error (its log
/// in the message), a receiver that got no end marker.
pub fn stream_between(bed: &Places, run: &StreamRun, during: impl FnOnce(Duration) -> Result<()>) -> Result<RunOutcome> {
    let label = &run.label;
    let plain = run.transport == Transport::Plain;
    let receiver = std::net::SocketAddr::new(bed.receiver_ip, VIDEO_PORT);
    let (frames, sets) = crate::h264::read_stream(&run.input)?;
    let duration = Duration::from_secs_f64(frames.len() as f64 / run.fps as f64);
    let decoder = if run.decode { Some(start_decoder(bed, label, &sets, reference_crcs(&run.input)?)?) } else { None };

    let records_path = bed.dir.join(format!("records-{label}.json"));
    let mut rx = bed.command_in(&bed.receiver_ns, workspace_bin("video-receiver")?);
    rx.arg("--reference").arg(&run.input).args(["--bind", &receiver.to_string(), "--fps", &run.fps.to_string()]);
    if run.transport == Transport::Session {
        rx.arg("--session");
    }
    rx.arg("--out").arg(&records_path);
    if decoder.is_some() {
        rx.args(["--forward", &format!("127.0.0.1:{DECODER_PORT}")]);
    }
    let mut rx = spawn_ready(rx, &bed.dir.join(format!("receiver-{label}.log")))?;

    let sender_bin = workspace_bin("video-server")?;
    let mut tx = if plain {
        bed.command_in(&bed.sender_ns, &sender_bin)
    } else {
        // Applications need no privilege: the qsock sender runs as nobody.
        let mut c = bed.command_in(&bed.sender_ns, "setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&sender_bin);
        c
    };
    tx.arg("--input").arg(&run.input).args(["--dest", &receiver.to_string(), "--fps", &run.fps.to_string()]);
    tx.args(["--device", &bed.device, "--playout-ms", &run.playout_ms.to_string()]).args(&run.sender_args);
    match run.transport {
        Transport::Plain => {
            tx.arg("--plain");
        }
        Transport::Session => {
            tx.arg("--session");
        }
        Transport::Qsock => {}
    }
    tx.env("QSOCK_SOCKET", &bed.socket_path);
    let sender_log = bed.dir.join(format!("sender-{label}.log"));
    let tx = tx.stdout(Stdio::piped()).stderr(std::fs::File::create(&sender_log)?).spawn().context("spawn video-server")?;
    let during_result = during(duration);
    let out = tx.wait_with_output()?;
    let log = std::fs::read_to_string(&sender_log).unwrap_or_default();
    if !out.status.success() {
        // The receiver would wait for a stream that never comes.
        let _ = rx.kill();
        let _ = rx.wait();
        bail!("sender ({label}) failed: {log}");
    }
    during_result?;
    let sender: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| format!("sender ({label}) summary"))?;
    if !rx.wait()?.success() {
        bail!("receiver ({label}) failed: {}; the sender's log: {log}", std::fs::read_to_string(bed.dir.join(format!("receiver-{label}.log")))?);
    }
    let decoded = match decoder {
        Some(d) => Some(d.finish()?),
        None => None,
    };
    let records: Vec<FrameRecord> = serde_json::from_slice(&std::fs::read(&records_path)?)?;
    let (rows, summary) = analyse(&records, run.fps, run.playout_ms);
    Ok(RunOutcome { records, rows, summary, sender, decoded })
}

/// A running ffmpeg RTP client.
struct Decoder {
    child: Child,
    crc: PathBuf,
    log: PathBuf,
    reference: String,
    rcvbuf_errors_before: u64,
    client_ns: String,
}

/// `Udp: RcvbufErrors` of namespace `ns` (`/proc/net/snmp`).
fn udp_rcvbuf_errors(ns: &str) -> Result<u64> {
    let out = run(std::process::Command::new("ip").args(["netns", "exec", ns, "cat", "/proc/net/snmp"]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap_or_default(), udp.next().unwrap_or_default());
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors").context("no RcvbufErrors in /proc/net/snmp")?;
    Ok(values.split_whitespace().nth(at).and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn start_decoder(bed: &Places, label: &str, sets: &crate::h264::ParameterSets, reference: String) -> Result<Decoder> {
    let sdp = bed.dir.join(format!("stream-{label}.sdp"));
    std::fs::write(&sdp, crate::sdp::h264_sdp(std::net::Ipv4Addr::LOCALHOST, DECODER_PORT, sets))?;
    let crc = bed.dir.join(format!("decoded-{label}.framecrc"));
    let log = bed.dir.join(format!("ffmpeg-{label}.log"));
    let mut c = bed.command_in(&bed.receiver_ns, "ffmpeg");
    // No reorder queue: the link does not reorder, and a lost packet should
    // not hold the frames behind it back; every decoded frame is output once.
    c.args(["-hide_banner", "-nostdin", "-v", "error", "-protocol_whitelist", "file,udp,rtp", "-reorder_queue_size", "0", "-i"]).arg(&sdp);
    c.args(["-fps_mode", "passthrough", "-f", "framecrc", "-y"]).arg(&crc);
    let rcvbuf_errors_before = udp_rcvbuf_errors(&bed.receiver_ns)?;
    let child = c.stdout(Stdio::null()).stderr(std::fs::File::create(&log)?).spawn().context("spawn ffmpeg (scripts/setup.sh --demo installs it)")?;
    let mut d = Decoder { child, crc, log, reference, rcvbuf_errors_before, client_ns: bed.receiver_ns.clone() };
    // Wait until ffmpeg has bound its RTP port (bounded: 10 s).
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let mut ss = bed.command_in(&bed.receiver_ns, "ss");
        ss.args(["-Huln", &format!("sport = :{DECODER_PORT}")]);
        if !run(&mut ss)?.stdout.is_empty() {
            return Ok(d);
        }
        if let Some(st) = d.child.try_wait()? {
            bail!("ffmpeg exited ({st}) before listening: {}", std::fs::read_to_string(&d.log).unwrap_or_default());
        }
        if Instant::now() > give_up {
            let _ = d.child.kill();
            bail!("ffmpeg did not listen on port {DECODER_PORT} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Decoder {
    /// Waits for ffmpeg to end on its own (the relay ends the session with
    /// an RTCP BYE, and ffmpeg flushes its decoder at that end of input;
    /// bounded: 10 s), then counts its frames and error lines.
    fn finish(mut self) -> Result<Decoded> {
        let give_up = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > give_up {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("ffmpeg did not end within 10 s of the stream's RTCP BYE");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let crcs = frame_crcs(&std::fs::read_to_string(&self.crc).with_context(|| format!("ffmpeg wrote no {}", self.crc.display()))?);
        let reference: std::collections::HashSet<String> = frame_crcs(&self.reference).into_iter().collect();
        Ok(Decoded {
            frames: crcs.len() as u64,
            exact_frames: crcs.iter().filter(|c| reference.contains(*c)).count() as u64,
            first_inexact: crcs.iter().enumerate().filter(|(_, c)| !reference.contains(*c)).map(|(i, _)| i).take(5).collect(),
            errors: log.lines().count() as u64,
            first_errors: log.lines().take(5).map(str::to_string).collect(),
            socket_drops: udp_rcvbuf_errors(&self.client_ns)?.saturating_sub(self.rcvbuf_errors_before),
        })
    }
}

/// The checksum of every frame in `framecrc` output (its last field).
fn frame_crcs(text: &str) -> Vec<String> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(|l| l.rsplit(',').next()).map(|c| c.trim().to_string()).collect()
}

/// `framecrc` of `input` decoded from the file by ffmpeg: what every frame
/// looks like when nothing was lost.
fn reference_crcs(input: &Path) -> Result<String> {
    let mut c = std::process::Command::new("ffmpeg");
    c.args(["-hide_banner", "-nostdin", "-v", "error", "-i"]).arg(input).args(["-fps_mode", "passthrough", "-f", "framecrc", "-"]);
    Ok(String::from_utf8(run(&mut c)?.stdout)?)
}

//! Receives the RTP stream of `video-server`, matches packets to frames of
//! the reference file (same packetization), and writes one record per frame
//! (JSON) when the end-of-stream marker arrives or `--timeout-s` passes;
//! with `--forward` it also relays the stream to an RTP client.
//! `--session` listens for one qsock session instead (`video-server
//! --session`): each message is one RTP packet, and the session's end is
//! the stream's. Prints "ready" on stdout once bound.
use std::{io::Write, net::UdpSocket, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use video_server::{report::FrameRecord, rtpstream};
use webrtc_util::marshal::{Marshal, Unmarshal};

#[derive(Parser, Debug)]
struct Args {
    /// The H.264 file the sender streams (tells frame types and packet counts).
    #[arg(long)]
    reference: PathBuf,
    /// Address to listen on.
    #[arg(long)]
    bind: std::net::SocketAddr,
    /// Frames per second.
    #[arg(long, default_value_t = 20)]
    fps: u32,
    /// Sender's RTP datagram limit, bytes.
    #[arg(long, default_value_t = rtpstream::DEFAULT_MTU)]
    mtu: usize,
    /// Where to write the records (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Give up waiting for the end marker after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Also relay every RTP packet to this address (an ordinary RTP client
    /// such as ffmpeg listening there).
    #[arg(long)]
    forward: Option<std::net::SocketAddr>,
    /// Accept one qsock session on `--bind` instead of reading a UDP socket.
    #[arg(long)]
    session: bool,
}

/// Where the packets come from.
enum Source {
    Udp(UdpSocket),
    /// A listener until the sender's session arrives, then the session.
    Session(Option<Box<qsock_session::SessionListener>>, Option<Box<qsock_session::Session>>),
}

impl Source {
    /// The next packet into `buf`: its length; `None`: the stream ended (a
    /// session closed); `Err(WouldBlock)`: nothing for now.
    fn next(&mut self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        match self {
            Source::Udp(s) => s.recv(buf).map(Some),
            Source::Session(listener, session) => {
                if session.is_none() {
                    let l = listener.take().expect("a listener until the session");
                    *session = Some(Box::new(l.accept().map_err(std::io::Error::other)?));
                }
                match session.as_ref().expect("accepted").read_timeout(Duration::from_millis(500)) {
                    Ok(Some(m)) => {
                        buf[..m.len()].copy_from_slice(&m);
                        Ok(Some(m.len()))
                    }
                    Ok(None) => Ok(None),
                    Err(e) if e.kind == qsock_session::ErrorKind::TimedOut => Err(std::io::ErrorKind::WouldBlock.into()),
                    Err(e) => Err(std::io::Error::other(e)),
                }
            }
        }
    }
}

fn main() -> Result<()> {
    env_logger::init();
    let args = Args::parse();
    let frames = video_server::h264::read_frames(&args.reference)?;
    let stream = rtpstream::packetize(&frames, args.mtu, args.fps)?;
    // Frame of each sequence number (the sender's sequencer starts at 0).
    let frame_of_seq: Vec<usize> = stream.iter().flat_map(|f| std::iter::repeat_n(f.index, f.packets.len())).collect();
    let mut records: Vec<FrameRecord> = stream
        .iter()
        .map(|f| FrameRecord { index: f.index, kind: f.kind, expected_packets: f.packets.len() as u32, received_packets: 0, last_arrival_ns: None })
        .collect();
    let mut source = if args.session {
        let cfg = qsock_session::SessionConfig::new(qsock_session::Semantics::OrderedLossy, &[qsock_session::Objective::Latency]);
        Source::Session(
            Some(Box::new(qsock_session::SessionSocket::new(cfg)?.bind(args.bind).with_context(|| format!("session listener on {}", args.bind))?)),
            None,
        )
    } else {
        let sock = UdpSocket::bind(args.bind).with_context(|| format!("bind {}", args.bind))?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        Source::Udp(sock)
    };
    println!("ready");
    std::io::stdout().flush()?;
    let give_up = std::time::Instant::now() + Duration::from_secs(args.timeout_s);
    let mut buf = vec![0u8; 65536];
    let mut highest: i64 = -1;
    let relay = match args.forward {
        Some(to) => Some((UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?, to)),
        None => None,
    };
    loop {
        let n = match source.next(&mut buf) {
            Ok(Some(n)) => n,
            Ok(None) => {
                if let Some((relay, to)) = &relay {
                    let bye = rtcp::goodbye::Goodbye { sources: vec![rtpstream::SSRC], reason: Bytes::from_static(b"end of session") };
                    relay.send_to(&bye.marshal()?, std::net::SocketAddr::new(to.ip(), to.port() + 1))?;
                }
                break;
            }
            // EINTR: the receiver was stopped and continued (a timed receive fails so, signal(7)).
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => {
                if std::time::Instant::now() > give_up {
                    eprintln!("video-receiver: no end marker within {} s", args.timeout_s);
                    break;
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let now = qsock::monotonic_now_ns();
        let mut b = Bytes::copy_from_slice(&buf[..n]);
        let Ok(pkt) = rtp::packet::Packet::unmarshal(&mut b) else { continue };
        if pkt.header.payload_type == rtpstream::PAYLOAD_TYPE_END {
            // End of the session for the relayed client too: RTCP BYE (RFC 3550 §6.6).
            if let Some((relay, to)) = &relay {
                let bye = rtcp::goodbye::Goodbye { sources: vec![rtpstream::SSRC], reason: Bytes::from_static(b"end of stream") };
                relay.send_to(&bye.marshal()?, std::net::SocketAddr::new(to.ip(), to.port() + 1))?;
            }
            break;
        }
        if let Some((relay, to)) = &relay {
            relay.send_to(&buf[..n], to)?;
        }
        // Extend the 16-bit sequence number to the value nearest the highest seen.
        let s16 = pkt.header.sequence_number as i64;
        let base = if highest < 0 { 0 } else { highest - (highest & 0xffff) };
        let ext = [base - 65536 + s16, base + s16, base + 65536 + s16].into_iter().min_by_key(|c| (c - highest.max(0)).abs()).expect("three candidates");
        highest = highest.max(ext);
        let Some(&fi) = usize::try_from(ext).ok().and_then(|e| frame_of_seq.get(e)) else { continue };
        let r = &mut records[fi];
        r.received_packets += 1;
        r.last_arrival_ns = Some(now);
    }
    std::fs::write(&args.out, serde_json::to_vec(&records)?)?;
    Ok(())
}

//! Sender of the DWCS window test: one thread per stream, each sending one
//! datagram of `--bytes` every `--ipg-us` on its own socket, attached to
//! DWCS with its window constraint x/y (or plain with `--plain`). Each
//! datagram carries its DWCS deadline in its payload for the receiver and,
//! under qsock, in its per-message flags, so the data path judges the very
//! deadline the receiver checks. Prints JSON: datagrams sent per stream,
//! the deadline of each, each stream's late sends ([`LateSend`]), and
//! `qinfo` of each.
use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::OwnedFd,
    time::Duration,
};

use anyhow::{Context, Result};
use clap::Parser;
use nix::time::{clock_nanosleep, ClockId, ClockNanosleepFlags};
use qsock::{DropPriority, DwcsAttrs, PacketFlags, QosParams, SchedulerParams};
use video_server::streams::{encode, parse_specs, LateSend, StreamSetArgs, END_SEQ, HEADER_BYTES, LATE_SEND_NS};

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    set: StreamSetArgs,
    /// Receiver address.
    #[arg(long)]
    dest: SocketAddr,
    /// Egress device for qsock.
    #[arg(long, default_value = "eth0")]
    device: String,
    /// Plain UDP sockets instead of DWCS.
    #[arg(long)]
    plain: bool,
    /// Run the sender threads under SCHED_FIFO (needs CAP_SYS_NICE; said on
    /// stderr and skipped where refused), so a busy CPU does not bunch their
    /// datagrams.
    #[arg(long)]
    realtime: bool,
}

/// Moves the calling thread to SCHED_FIFO priority 10.
fn realtime() -> std::io::Result<()> {
    let p = libc::sched_param { sched_priority: 10 };
    // SAFETY: plain syscall on the calling thread with a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn sleep_until(t_ns: u64) {
    let ts = nix::sys::time::TimeSpec::new((t_ns / 1_000_000_000) as i64, (t_ns % 1_000_000_000) as i64);
    while let Err(nix::errno::Errno::EINTR) = clock_nanosleep(ClockId::CLOCK_MONOTONIC, ClockNanosleepFlags::TIMER_ABSTIME, &ts) {}
}

fn main() -> Result<()> {
    let a = Args::parse();
    let specs = parse_specs(&a.set.streams)?;
    anyhow::ensure!(a.set.bytes >= HEADER_BYTES, "--bytes must be at least {HEADER_BYTES}");
    let ipg_ns = a.set.ipg_us * 1000;
    let mut socks = Vec::new();
    for s in &specs {
        let sock = if a.plain {
            UdpSocket::bind("0.0.0.0:0")?
        } else {
            let params = QosParams {
                device: Some(a.device.clone()),
                policy: None,
                scheduler: SchedulerParams::Dwcs(DwcsAttrs { ipg_ns, unit_bytes: a.set.wire_bytes(), oln: s.x, old: s.y, non_droppable: false }),
                intents: Default::default(),
            };
            UdpSocket::from(qsock::qsocket(libc::AF_INET, libc::SOCK_DGRAM, 0, &params).with_context(|| format!("qsocket for {}/{}", s.x, s.y))?)
        };
        socks.push(sock);
    }
    let n = specs.len() as u64;
    let t0 = qsock::monotonic_now_ns() + 100_000_000;
    let count = a.set.duration_s * 1_000_000_000 / ipg_ns;
    // Per stream: the deadline of every datagram sent, and its sends later
    // than `LATE_SEND_NS` (the test excuses the windows they disturb).
    let sent: Vec<(Vec<u64>, Vec<LateSend>)> = std::thread::scope(|sc| {
        let handles: Vec<_> = socks
            .iter()
            .enumerate()
            .map(|(i, sock)| {
                let (dest, bytes, plain, rt) = (a.dest, a.set.bytes, a.plain, a.realtime);
                sc.spawn(move || -> Result<(Vec<u64>, Vec<LateSend>)> {
                    if rt {
                        if let Err(e) = realtime() {
                            // Still a valid run, only more exposed to a busy CPU.
                            eprintln!("dwcs-streams: stream {i} stays SCHED_OTHER: SCHED_FIFO refused ({e})");
                        }
                    }
                    let mut buf = vec![0u8; bytes];
                    // Streams are spread over the period so arrivals interleave.
                    let phase = t0 + i as u64 * ipg_ns / n;
                    let mut deadline = 0;
                    let (mut late, mut deadlines) = (Vec::new(), Vec::with_capacity(count as usize));
                    for k in 0..count {
                        sleep_until(phase + k * ipg_ns);
                        // The DWCS deadline as the data path sets it: the previous
                        // one + ipg, or send time + ipg when the stream lags behind.
                        let now = qsock::monotonic_now_ns();
                        let behind = now.saturating_sub(phase + k * ipg_ns);
                        if behind > LATE_SEND_NS {
                            late.push(LateSend { seq: k, sent_ns: now, behind_ns: behind });
                        }
                        deadline = if deadline != 0 && deadline + ipg_ns >= now { deadline + ipg_ns } else { now + ipg_ns };
                        deadlines.push(deadline);
                        encode(&mut buf, i as u32, k, deadline);
                        if plain {
                            sock.send_to(&buf, dest)?;
                        } else {
                            qsock::qsendto(sock, &buf, &dest, &PacketFlags { deadline_ns: Some(deadline), ..Default::default() })?;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    encode(&mut buf, i as u32, END_SEQ, 0);
                    if plain {
                        sock.send_to(&buf[..HEADER_BYTES], dest)?;
                    } else {
                        qsock::qsendto(sock, &buf[..HEADER_BYTES], &dest, &PacketFlags { drop_priority: DropPriority::NON_DROPPABLE, ..Default::default() })?;
                    }
                    Ok((deadlines, late))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("sender thread")).collect::<Result<Vec<(Vec<u64>, Vec<LateSend>)>>>()
    })?;
    let (deadlines, late_sends): (Vec<Vec<u64>>, Vec<Vec<LateSend>>) = sent.into_iter().unzip();
    let sent: Vec<u64> = deadlines.iter().map(|d| d.len() as u64).collect();
    let infos = if a.plain { Vec::new() } else { socks.iter().map(qsock::qinfo).collect::<qsock::Result<Vec<_>>>()? };
    println!("{}", serde_json::json!({ "sent": sent, "deadlines": deadlines, "late_sends": late_sends, "qinfo": infos }));
    for s in socks {
        if !a.plain {
            qsock::qclose(OwnedFd::from(s))?;
        }
    }
    Ok(())
}

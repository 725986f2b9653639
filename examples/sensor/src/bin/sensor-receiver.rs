//! Sensor receiver: records every reading's arrival until the sender's END
//! marker (or a timeout) and writes them as JSON. `--session` accepts one
//! qsock session instead (`sensor --mode session`), whose end is the
//! stream's. Prints "ready" once bound.
use std::{io::Write, net::UdpSocket, path::PathBuf, time::Duration};

use anyhow::Result;
use clap::Parser;
use sensor::{Arrival, Reading};

#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    bind: std::net::SocketAddr,
    /// Where to write the arrivals (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Give up waiting for END after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Accept one qsock session on `--bind` instead of reading a UDP socket.
    #[arg(long)]
    session: bool,
}

/// The readings of one session until its sender closes it.
fn over_session(a: &Args) -> Result<Vec<Arrival>> {
    let cfg = qsock_session::SessionConfig::new(qsock_session::Semantics::UnorderedLossy, &[qsock_session::Objective::Latency]);
    let listener = qsock_session::SessionSocket::new(cfg)?.bind(a.bind)?;
    println!("ready");
    std::io::stdout().flush()?;
    let s = listener.accept()?;
    let mut arrivals = Vec::new();
    while let Some(m) = s.read_timeout(Duration::from_secs(a.timeout_s))? {
        let now = qsock::monotonic_now_ns();
        if let Ok(r) = Reading::decode(&m) {
            arrivals.push(Arrival { seq: r.seq, sent_ns: r.sent_ns, deadline_ns: r.deadline_ns, arrival_ns: now });
        }
    }
    Ok(arrivals)
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.session {
        let arrivals = over_session(&a)?;
        std::fs::write(&a.out, serde_json::to_vec(&arrivals)?)?;
        return Ok(());
    }
    let sock = UdpSocket::bind(a.bind)?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    println!("ready");
    std::io::stdout().flush()?;
    let give_up = std::time::Instant::now() + Duration::from_secs(a.timeout_s);
    let mut arrivals = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) if &buf[..n] == b"END" => break,
            Ok(n) => {
                let now = qsock::monotonic_now_ns();
                if let Ok(r) = Reading::decode(&buf[..n]) {
                    arrivals.push(Arrival { seq: r.seq, sent_ns: r.sent_ns, deadline_ns: r.deadline_ns, arrival_ns: now });
                }
            }
            // EINTR: the receiver was stopped and continued (a timed receive fails so, signal(7)).
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => {
                if std::time::Instant::now() > give_up {
                    eprintln!("sensor-receiver: no END within {} s", a.timeout_s);
                    break;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    std::fs::write(&a.out, serde_json::to_vec(&arrivals)?)?;
    Ok(())
}

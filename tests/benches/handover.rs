//! Handover after a link goes down or is blackholed, qsockd's path manager
//! beside the kernel's own in the same run (issue 16, item 5): `cargo bench
//! -p qsock-tests --bench handover` (root). The issue's bed: a download
//! from a stock-Linux MPTCP server over two links, dsl (6 Mbit/s down,
//! 10 ms RTT) and lte (12 Mbit/s down, 70 ms RTT), the initial subflow on
//! dsl; 2 s in, dsl goes down on the host, or its wire drops everything
//! (blackhole: no link event). The figure is the longest time without
//! received data in the 3 s after (the stall); after a blackhole also how
//! long after the wire is healed dsl carries the download's data again.
//! Six path managers ([`Manager`]): the kernel's and qsockd, each with
//! lte's subflow active and as a backup (qsockd's from the application's
//! resilience-sensitive intents, TAPS Handover, given after or before the
//! socket connects), and qsockd with TAPS Interactive (lte, metered, a backup). `HANDOVER_RCVBUF` (bytes) clamps the client's
//! receive buffer; `HANDOVER_OUTAGE_MS` lengthens the blackhole. Variants alternate, a fresh bed each repetition; prints every figure,
//! then median and range.
use std::time::{Duration, Instant};

use qsock_tests::mptcp::{connect_with_rcvbuf, issue_bed, per_source_routing_with, read_window, source};

/// Repetitions of each variant (`HANDOVER_REPS` overrides).
const REPS: usize = 5;

/// Who manages the paths, and in what roles.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Manager {
    /// The in-kernel path manager, a `subflow` endpoint on lte: both active.
    InKernel,
    /// The in-kernel path manager, lte's endpoint `subflow backup`.
    InKernelBackup,
    /// qsockd, the application says nothing: a subflow on each link, both active.
    Qsockd,
    /// qsockd, the connection attached with resilience-sensitive intents
    /// (TAPS Handover) once connected: lte's subflow, joined active at the
    /// connection's start, is made a backup (`MP_PRIO`) by the plan.
    QsockdHandover,
    /// The same intents (and Avoid metered) given before the socket
    /// connects, as `qsocket`/`qconnect` do: placed on dsl, lte's subflow
    /// joined as a backup from the start (`MP_JOIN` with the B bit).
    QsockdHandoverPlaced,
    /// TAPS multipathPolicy Interactive given before the socket connects:
    /// lte is metered, so its subflow joins as a backup.
    QsockdInteractivePlaced,
}

impl Manager {
    fn qsockd(self) -> bool {
        matches!(self, Self::Qsockd | Self::QsockdHandover | Self::QsockdHandoverPlaced | Self::QsockdInteractivePlaced)
    }

    fn label(self) -> &'static str {
        match self {
            Self::InKernel => "in-kernel PM",
            Self::InKernelBackup => "in-kernel PM, lte backup",
            Self::Qsockd => "qsockd PM",
            Self::QsockdHandover => "qsockd PM, Handover intent (lte backup)",
            Self::QsockdHandoverPlaced => "qsockd PM, Handover intent before connect (lte backup)",
            Self::QsockdInteractivePlaced => "qsockd PM, Interactive intent before connect (lte metered: backup)",
        }
    }
}

/// How dsl dies.
#[derive(Clone, Copy, PartialEq)]
enum Kill {
    /// The host's interface goes down (a link event).
    Down,
    /// The wire drops every frame (no event).
    Blackhole,
}

/// One repetition: the stall after dsl dies, and after a blackhole how
/// long after the wire heals the download's data flows on dsl again
/// (at most [`BACK_WAIT`]).
fn stall(manager: Manager, kill: Kill, rep: usize) -> (Duration, Option<Duration>) {
    let tag = ["k", "kb", "q", "qh", "qp", "qi"][manager as usize];
    let mut b = issue_bed(&format!("h{tag}{}{rep}", if kill == Kill::Down { "d" } else { "b" }));
    match manager {
        Manager::InKernel => per_source_routing_with(&b, Some(&["subflow"])),
        Manager::InKernelBackup => per_source_routing_with(&b, Some(&["subflow", "backup"])),
        _ => b.start_daemon_with("category", "\n[multipath]\nenabled = true\n").unwrap(),
    }
    source(&b, 7100);
    let resilient = || qsock::Intents { resilience: Some(qsock::Resilience::Sensitive), ..Default::default() };
    let (mut s, _client) = match manager {
        Manager::QsockdHandoverPlaced | Manager::QsockdInteractivePlaced => {
            let c = b.client().unwrap();
            let intents = if manager == Manager::QsockdHandoverPlaced {
                let mut i = resilient();
                i.interfaces.push(qsock::InterfacePreference::new(qsock::Preference::Avoid, "type:metered").unwrap());
                i
            } else {
                qsock::Intents { multipath: Some(qsock::Multipath::Active), multipath_policy: Some(qsock::MultipathPolicy::Interactive), ..Default::default() }
            };
            let s = b
                .in_host(|| {
                    let s = std::net::TcpStream::from(qsock_tests::mptcp::mptcp_fd());
                    let a = c.attach(std::os::fd::AsFd::as_fd(&s), &qsock::QosParams::intents(intents)).unwrap();
                    assert_eq!(a.device, "dsl", "{a:?}");
                    let to = nix::sys::socket::SockaddrStorage::from(std::net::SocketAddr::new(testbed::multihomed::SERVICE_IP.into(), 7100));
                    nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&s), &to).unwrap();
                    s
                })
                .unwrap();
            (s, Some(c))
        }
        Manager::QsockdHandover => {
            let s = connect_with_rcvbuf(&b, 7100, rcvbuf());
            let c = b.client().unwrap();
            c.attach(std::os::fd::AsFd::as_fd(&s), &qsock::QosParams::intents(resilient())).unwrap();
            (s, Some(c))
        }
        _ => (connect_with_rcvbuf(&b, 7100, rcvbuf()), None),
    };
    let t0 = Instant::now();
    let (before, _) = read_window(&mut s, t0, t0 + Duration::from_secs(2));
    assert!(before > 0);
    let listed = b.in_host(|| qsock::qsubflows(&s)).unwrap().unwrap().subflows;
    let lte = listed.iter().find(|x| x.interface.as_deref() == Some("lte")).expect("a subflow on lte before the handover");
    let backup = matches!(manager, Manager::InKernelBackup | Manager::QsockdHandover | Manager::QsockdHandoverPlaced | Manager::QsockdInteractivePlaced);
    assert_eq!(lte.backup, Some(backup), "{manager:?}: lte's subflow backup flag");
    match kill {
        Kill::Down => b.set_link(0, false).unwrap(),
        Kill::Blackhole => b.set_blackhole(0, true).unwrap(),
    }
    let down = Instant::now();
    let (after, stall) = read_window(&mut s, down, down + Duration::from_secs(3));
    assert!(after > 0, "the download went on");
    if kill == Kill::Down {
        return (stall, None);
    }
    if manager.qsockd() && std::env::var_os("HANDOVER_LOG").is_some() {
        let log = std::fs::read_to_string(b.dir.join("qsockd.log")).unwrap_or_default();
        eprintln!("{}", log.lines().filter(|l| l.contains("multipath")).collect::<Vec<_>>().join("\n"));
    }
    // A longer outage (HANDOVER_OUTAGE_MS, from the blackhole) lets the peer's retransmission timer back off.
    let outage = std::env::var("HANDOVER_OUTAGE_MS").ok().and_then(|v| v.parse().ok()).map_or(Duration::from_secs(3), Duration::from_millis);
    while down.elapsed() < outage {
        read_window(&mut s, Instant::now(), Instant::now() + Duration::from_millis(20));
    }
    // Back on dsl: the healed wire carries the download's data again (not
    // only a subflow's handshake): BACK_BYTES more received on dsl.
    b.set_blackhole(0, false).unwrap();
    let healed = Instant::now();
    let rx0 = b.link_bytes(0).unwrap().1;
    while b.link_bytes(0).unwrap().1 < rx0 + BACK_BYTES {
        if healed.elapsed() >= BACK_WAIT {
            return (stall, Some(BACK_WAIT));
        }
        read_window(&mut s, Instant::now(), Instant::now() + Duration::from_millis(20));
    }
    (stall, Some(healed.elapsed()))
}

/// Bytes dsl must receive after the wire heals for the download to count as back on it.
const BACK_BYTES: u64 = 64 * 1024;
/// How long the bench waits for that; a variant not back by then is recorded as this.
const BACK_WAIT: Duration = Duration::from_secs(10);

/// `SO_RCVBUF` of the client, bytes (`HANDOVER_RCVBUF`; not for the
/// variant placed before it connects); `None`: autotuned.
fn rcvbuf() -> Option<usize> {
    std::env::var("HANDOVER_RCVBUF").ok().and_then(|v| v.parse().ok())
}

/// Milliseconds of `d`.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    qsock_tests::require_root();
    let mut figures = qsock_tests::figures::Figures::new("handover");
    let reps = std::env::var("HANDOVER_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(REPS);
    let managers =
        [Manager::InKernel, Manager::Qsockd, Manager::InKernelBackup, Manager::QsockdHandover, Manager::QsockdHandoverPlaced, Manager::QsockdInteractivePlaced];
    for rep in 0..reps {
        for kill in [Kill::Down, Kill::Blackhole] {
            for m in managers {
                let (stalled, back) = stall(m, kill, rep);
                let what = if kill == Kill::Down { "stall after link down" } else { "stall after blackhole" };
                println!(
                    "rep {rep}: {}: {what} {stalled:?}{}",
                    m.label(),
                    back.map(|d| format!(", back on dsl {d:?} after the wire healed")).unwrap_or_default()
                );
                figures.add(m.label(), what, "ms", rep, ms(stalled));
                if let Some(back) = back {
                    figures.add(m.label(), "back on dsl after the blackhole ends", "ms", rep, ms(back));
                }
            }
        }
    }
    figures.finish(0).unwrap();
}

//! `qsockctl`: the operator's view of qsockd. `list` shows every managed
//! socket (root; others see their own) with owner, device, class,
//! scheduler, guarantee, rate, drops by reason and queuing delay: as a
//! table, as JSON (`-j`, iproute2's convention), or live (`--watch SECS`).
//! `interfaces` shows the managed interfaces and what qsockd measures.
use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use qsock::{Client, SocketSummary};

/// Inspect qsockd.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// qsockd's Unix socket (default: $QSOCK_SOCKET or /run/qsock/qsockd.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// JSON instead of a table.
    #[arg(short = 'j', long, global = true)]
    json: bool,
    /// Refresh every SECS seconds until interrupted (table only).
    #[arg(long, global = true, value_parser = parse_watch)]
    watch: Option<f64>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Managed sockets.
    List,
    /// Managed interfaces.
    Interfaces,
}

fn parse_watch(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: the refresh period must be 0.1..=3600 seconds")),
    }
}

fn mbit(bps: u64) -> String {
    format!("{:.3}", bps as f64 / 1e6)
}

fn table(v: &[SocketSummary]) -> String {
    let mut s = format!(
        "{:>20} {:>6} {:>7} {:<15} {:<10} {:<8} {:<11} {:>10} {:>10} {:>8} {:>8} {:>8} {:>10} {:>10}\n",
        "cookie", "uid", "pid", "command", "device", "class", "scheduler", "guar.Mb/s", "rate Mb/s", "dl.drop", "fr.drop", "q.drop", "delay p50", "delay p99"
    );
    for x in v {
        s += &format!(
            "{:>20} {:>6} {:>7} {:<15} {:<10} {:<8} {:<11} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}µs {:>8}µs\n",
            x.cookie,
            x.uid,
            x.pid,
            x.command,
            x.device,
            x.classid,
            x.scheduler,
            mbit(x.guaranteed_rate_bps),
            mbit(x.rate_bps),
            x.drops.deadline_packets,
            x.drops.frame_packets,
            x.drops.qdisc_packets,
            x.queuing_delay.p50_ns / 1000,
            x.queuing_delay.p99_ns / 1000
        );
    }
    s
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let path = cli.socket.clone().unwrap_or_else(qsock::client::socket_path);
    let c = Client::connect(&path).with_context(|| format!("connect to qsockd at {}", path.display()))?;
    loop {
        let text = match (&cli.cmd, cli.json) {
            (Cmd::List, true) => serde_json::to_string_pretty(&c.list()?)?,
            (Cmd::List, false) => table(&c.list()?),
            (Cmd::Interfaces, true) => serde_json::to_string_pretty(&c.interfaces()?)?,
            (Cmd::Interfaces, false) => {
                let mut s = format!(
                    "{:<12} {:>5} {:>4} {:<9} {:>10} {:>10} {:>10} {:>10} {:>6} {:>7}\n",
                    "name", "index", "up", "kind", "down Mb/s", "rx Mb/s", "tx Mb/s", "srtt ms", "conns", "sockets"
                );
                for i in c.interfaces()? {
                    s += &format!(
                        "{:<12} {:>5} {:>4} {:<9} {:>10} {:>10} {:>10} {:>10} {:>6} {:>7}\n",
                        i.name,
                        i.ifindex,
                        if i.up { "up" } else { "down" },
                        format!("{:?}", i.kind).to_lowercase(),
                        mbit(i.nominal_down_bps),
                        mbit(i.rx_bps),
                        mbit(i.tx_bps),
                        i.srtt_us.map(|u| format!("{:.1}", u as f64 / 1000.0)).unwrap_or("-".into()),
                        i.tcp_connections,
                        i.managed_sockets
                    );
                }
                s
            }
        };
        match cli.watch {
            Some(p) if !cli.json => {
                print!("\x1b[H\x1b[2J{text}");
                std::thread::sleep(Duration::from_secs_f64(p));
            }
            _ => {
                println!("{text}");
                return Ok(());
            }
        }
    }
}

//! qsockd command line: `init` (= qsockinit), `teardown`, `run`, `status`.
use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use qsock::InitParams;
use qsockd::{
    config::{Config, Paths},
    device::runtime::ModuleSettings,
    device::{self, DeviceState},
    kernel::netns,
    kernel::tc::Tc,
    multipath::Multipath,
    ops::Registry,
    serve::server,
};

/// qsock daemon: kernel-assisted QoS for sockets.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Work in this named network namespace (`ip netns`); only the network
    /// namespace is entered, so bpffs and the Unix socket stay the host's.
    #[arg(long, global = true)]
    netns: Option<String>,
    /// TOML configuration file (keys as in `Config`); flags override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Unix socket applications connect to.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Directory for per-device state files.
    #[arg(long, global = true)]
    state_root: Option<PathBuf>,
    /// bpffs directory for pinned maps.
    #[arg(long, global = true)]
    pin_root: Option<PathBuf>,
    /// What admission does with a stream that does not fit: refuse (default) or warn.
    #[arg(long, global = true, value_parser = parse_admission)]
    admission: Option<qsock_sched::Admission>,
    /// DWCS reservation headroom, per mille (default 100 = 10 %).
    #[arg(long, global = true)]
    dwcs_headroom_permille: Option<u32>,
    /// Burst horizon, ms: booked bursts must drain within it at the link rate (default 200).
    #[arg(long, global = true)]
    burst_horizon_ms: Option<u64>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Install the root HTB, best-effort class and egress classifier on a device (qsockinit).
    Init {
        /// Network device.
        #[arg(long, required_unless_present = "configured", requires = "rate")]
        device: Option<String>,
        /// Link rate to shape to: bit/s, or with a suffix k/m/g (bit), e.g. 10mbit.
        #[arg(long, value_parser = parse_rate)]
        rate: Option<u64>,
        /// Instead of --device/--rate: every `[[interfaces]]` entry of the
        /// config that exists, at its nominal upstream rate; devices already
        /// initialised are left as they are (for a boot-time unit).
        #[arg(long, conflicts_with_all = ["device", "rate"])]
        configured: bool,
        /// Share of the link never guaranteed to sockets, per mille.
        #[arg(long, default_value_t = 50)]
        best_effort_permille: u32,
        /// Replace a root qdisc qsock did not install (teardown restores it).
        #[arg(long)]
        replace: bool,
    },
    /// Remove qsock from a device and restore what was there before.
    Teardown {
        /// Network device.
        #[arg(long)]
        device: String,
    },
    /// Serve applications on the Unix socket.
    Run,
    /// List devices qsock is initialised on (in this namespace).
    Status,
}

/// Parses a rate in bit/s: `1000`, `10k`, `10kbit`, `10mbit`, `1.5m`, `1g`.
fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix("bit").or_else(|| t.strip_suffix("bps")).unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1e3),
        Some('m') => (&t[..t.len() - 1], 1e6),
        Some('g') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    let v: f64 = num.parse().map_err(|_| format!("{s:?} is not a rate (e.g. 10mbit)"))?;
    let bps = v * mult;
    if !(1.0..1e13).contains(&bps) {
        return Err(format!("rate {s:?} must be between 1 bit/s and 10 Tbit/s"));
    }
    Ok(bps as u64)
}

fn parse_admission(s: &str) -> Result<qsock_sched::Admission, String> {
    match s {
        "refuse" => Ok(qsock_sched::Admission::Refuse),
        "warn" => Ok(qsock_sched::Admission::Warn),
        _ => Err(format!("admission {s:?} must be \"refuse\" or \"warn\"")),
    }
}

fn config(cli: &Cli) -> Result<Config> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    if let Some(s) = &cli.socket {
        cfg.socket = s.clone();
    }
    if let Some(s) = &cli.state_root {
        cfg.state_root = s.clone();
    }
    if let Some(s) = &cli.pin_root {
        cfg.pin_root = s.clone();
    }
    if let Some(a) = cli.admission {
        cfg.admission = a;
    }
    if let Some(h) = cli.dwcs_headroom_permille {
        cfg.dwcs_headroom_permille = h;
    }
    if let Some(h) = cli.burst_horizon_ms {
        cfg.burst_horizon_ms = h;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qsockd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> Result<()> {
    // setns applies to the calling thread: do it before the runtime spawns workers.
    if let Some(ns) = &cli.netns {
        netns::enter(ns)?;
    }
    let cfg = config(&cli)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let paths = Paths::new(&cfg)?;
        match cli.cmd {
            Cmd::Init { configured: true, replace, .. } => {
                anyhow::ensure!(!cfg.interfaces.is_empty(), "init --configured: the config lists no [[interfaces]]");
                for ifc in &cfg.interfaces {
                    if device::ifindex(&ifc.name).is_err() {
                        println!("{}: not present, skipped (qsockd run initialises it when it appears)", ifc.name);
                        continue;
                    }
                    let p = InitParams { device: ifc.name.clone(), link_rate_bps: ifc.nominal_up_bps, best_effort_permille: ifc.best_effort_permille, replace };
                    match device::init(&paths, &p).await {
                        Ok(_) => println!("qsock initialised on {}: root htb 1: at {} bit/s", ifc.name, ifc.nominal_up_bps),
                        Err(e) if e.kind == qsock::ErrorKind::AlreadyInitialized => println!("{}: already initialised", ifc.name),
                        Err(e) => return Err(anyhow::anyhow!("{}: {e}", ifc.name)),
                    }
                }
                Ok(())
            }
            Cmd::Init { device, rate, best_effort_permille, replace, .. } => {
                let (device, rate) = (device.expect("clap requires it"), rate.expect("clap requires it"));
                let p = InitParams { device: device.clone(), link_rate_bps: rate, best_effort_permille, replace };
                device::init(&paths, &p).await?;
                println!("qsock initialised on {device}: root htb 1: at {rate} bit/s, best effort 1:fffe");
                Ok(())
            }
            Cmd::Teardown { device } => {
                device::teardown(&paths, &device).await?;
                println!("qsock removed from {device}");
                Ok(())
            }
            Cmd::Status => {
                for d in DeviceState::load_all(&paths) {
                    println!("{} ifindex {} link {} bit/s pins {}", d.device, d.ifindex, d.link_rate_bps, d.pin_dir.display());
                }
                Ok(())
            }
            Cmd::Run => run(cfg, paths).await,
        }
    })
}

async fn run(cfg: Config, paths: Paths) -> Result<()> {
    let tc = Tc::new().context("open rtnetlink")?;
    let settings = ModuleSettings {
        admission: cfg.admission,
        dwcs_headroom_permille: cfg.dwcs_headroom_permille,
        burst_horizon_ns: cfg.burst_horizon_ms * 1_000_000,
        class_pool: cfg.class_pool,
        class_pool_max: cfg.class_pool_max,
    };
    let state_dir = paths.state_dir();
    let registry = Arc::new(tokio::sync::RwLock::new(Registry::new(paths, tc, settings, &cfg).await));
    let listener = server::bind_listener(&cfg)?;
    registry.write().await.start_interfaces().await;
    let managed: Vec<String> = cfg.interfaces.iter().map(|i| i.name.clone()).collect();
    let (notices, mut notice_rx) = tokio::sync::mpsc::unbounded_channel();
    let multipath = Multipath::start(&cfg.multipath, managed, state_dir, notices).await;
    registry.write().await.set_multipath(multipath.clone());
    let reg = registry.clone();
    tokio::spawn(async move {
        while let Some(n) = notice_rx.recv().await {
            reg.write().await.on_subflow(n).await;
        }
    });
    if !cfg.interfaces.is_empty() {
        let reg = registry.clone();
        tokio::spawn(async move {
            if let Err(e) = qsockd::kernel::watch::watch_links(reg).await {
                log::error!("link events: {e}; interface changes are seen at the next sampling tick only");
            }
        });
    }
    if let Some(addr) = cfg.metrics_listen {
        let endpoint = qsockd::serve::metrics::serve(addr, registry.clone()).await.with_context(|| format!("metrics_listen {addr}"))?;
        tokio::spawn(async move {
            if let Err(e) = endpoint.await {
                log::error!("OpenMetrics endpoint stopped: {e}");
            }
        });
    }
    log::info!("qsockd serving on {}", cfg.socket.display());
    let release_every = (cfg.release_check_ms > 0).then(|| Duration::from_millis(cfg.release_check_ms));
    tokio::spawn(server::housekeeping_loop(registry.clone(), Duration::from_millis(cfg.sample_interval_ms.max(1)), release_every));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        r = server::serve(listener, registry.clone(), multipath.clone()) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    };
    server::remove_socket(&cfg.socket);
    registry.write().await.stop_interfaces().await;
    multipath.stop().await;
    log::info!("qsockd stopped");
    result
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates_parse_with_suffixes() {
        assert_eq!(parse_rate("10mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("1.5M"), Ok(1_500_000));
        assert_eq!(parse_rate("800kbit"), Ok(800_000));
        assert_eq!(parse_rate("2500"), Ok(2500));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }
}

//! `qsock-run`: runs an unmodified program with qsock intents and QoS on
//! every socket it connects, through `libqsock_preload.so`:
//!
//! ```text
//! qsock-run --category bulk-transfer -- curl -o big.iso http://10.9.0.1/big.iso
//! qsock-run --file-size 6000 --prohibit type:metered -- wget http://10.9.0.1/a.png
//! qsock-run --multipath -- nginx -c /etc/nginx/nginx.conf      # MPTCP listener
//! qsock-run --multipath --multipath-policy aggregate -- curl -O http://10.9.0.1/big.iso
//! ```
//!
//! With `--multipath`, or intents that imply it (`Intents::effective_multipath`),
//! the program's TCP sockets are MPTCP sockets (client and server side).
//! `--multipath` without any other QoS or intent option does only that: no
//! socket is attached (a server's listening sockets need no qsockd), and
//! qsockd's `open_subflows` decides the subflows. With intents (a
//! `--multipath-policy` is one) each connecting socket is attached, and the
//! intents decide which links get subflows and which are backup.
use std::{os::unix::process::CommandExt, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};
use clap::Parser;
use qsock::{CapacityProfile, Category, Intents, InterfacePreference, Multipath, MultipathPolicy, Preference, QosParams, RateAttrs, SchedulerParams};

/// Run a program with qsock intents on its sockets.
#[derive(Parser, Debug)]
#[command(version, trailing_var_arg = true)]
struct Args {
    /// Socket Intents category: query, bulk-transfer, control-traffic, keep-alives, stream.
    #[arg(long, value_parser = wire_name::<Category>)]
    category: Option<Category>,
    /// Bytes the program will transfer per connection (file-size intent).
    #[arg(long)]
    file_size: Option<u64>,
    /// TAPS capacity profile: default, scavenger, low-latency-interactive,
    /// low-latency-non-interactive, constant-rate-streaming, capacity-seeking.
    #[arg(long, value_parser = wire_name::<CapacityProfile>)]
    capacity_profile: Option<CapacityProfile>,
    /// Use only this interface (name, or type:wired|wifi|cellular|metered); repeatable.
    #[arg(long)]
    require: Vec<String>,
    /// Prefer this interface (name or type:...); repeatable.
    #[arg(long)]
    prefer: Vec<String>,
    /// Avoid this interface (name or type:...); repeatable.
    #[arg(long)]
    avoid: Vec<String>,
    /// Never use this interface (name or type:...); repeatable.
    #[arg(long)]
    prohibit: Vec<String>,
    /// Interface-selection policy to ask (default: qsockd's).
    #[arg(long)]
    policy: Option<String>,
    /// Egress device: no policy, the program's sockets go there.
    #[arg(long)]
    device: Option<String>,
    /// Guaranteed rate per socket, bit/s (default: best effort).
    #[arg(long)]
    rate: Option<u64>,
    /// Make the program's TCP sockets MPTCP sockets (TAPS multipath Active).
    #[arg(long)]
    multipath: bool,
    /// TAPS multipathPolicy: handover, interactive, aggregate (implies --multipath).
    #[arg(long, value_parser = wire_name::<MultipathPolicy>)]
    multipath_policy: Option<MultipathPolicy>,
    /// The program and its arguments.
    #[arg(required = true)]
    program: Vec<String>,
}

/// An intent value by its wire name (`bulk_transfer`), written with `-` or `_`.
fn wire_name<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.replace('-', "_"))).map_err(|e| format!("{s:?}: {e}"))
}

fn params(a: &Args) -> Result<QosParams> {
    let mut interfaces = Vec::new();
    for (level, list) in
        [(Preference::Require, &a.require), (Preference::Prefer, &a.prefer), (Preference::Avoid, &a.avoid), (Preference::Prohibit, &a.prohibit)]
    {
        for i in list {
            interfaces.push(InterfacePreference::new(level, i).map_err(|e| anyhow::anyhow!("{}", e.message))?);
        }
    }
    let multipath = (a.multipath || a.multipath_policy.is_some()).then_some(Multipath::Active);
    let intents = Intents {
        category: a.category,
        file_size_bytes: a.file_size,
        capacity_profile: a.capacity_profile,
        interfaces,
        multipath,
        multipath_policy: a.multipath_policy,
        ..Default::default()
    };
    let scheduler = match a.rate {
        Some(r) => SchedulerParams::Rate(RateAttrs::guaranteed(r)),
        None => SchedulerParams::BestEffort,
    };
    let p = QosParams { device: a.device.clone(), scheduler, intents, policy: a.policy.clone() };
    p.validate().map_err(|e| anyhow::anyhow!("{}", e.message))?;
    Ok(p)
}

/// `libqsock_preload.so` next to this executable.
fn library() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let lib = exe.parent().context("executable has no directory")?.join("libqsock_preload.so");
    if !lib.is_file() {
        bail!("{} not found (build the workspace: cargo build)", lib.display());
    }
    Ok(lib)
}

/// Whether any option asks for QoS or intents (beyond multipath itself).
fn asks_qos(a: &Args) -> bool {
    a.category.is_some()
        || a.file_size.is_some()
        || a.capacity_profile.is_some()
        || !(a.require.is_empty() && a.prefer.is_empty() && a.avoid.is_empty() && a.prohibit.is_empty())
        || a.policy.is_some()
        || a.device.is_some()
        || a.rate.is_some()
        || a.multipath_policy.is_some()
}

fn main() -> Result<()> {
    let a = Args::parse();
    let p = params(&a)?;
    let lib = library()?;
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(v) if !v.is_empty() => format!("{}:{v}", lib.display()),
        _ => lib.display().to_string(),
    };
    let mut c = Command::new(&a.program[0]);
    c.args(&a.program[1..]).env("LD_PRELOAD", preload);
    if p.intents.effective_multipath().0 != Multipath::Disabled {
        c.env(qsock::MULTIPATH_ENV, "1");
    }
    if asks_qos(&a) || !(a.multipath || a.multipath_policy.is_some()) {
        c.env(qsock::PARAMS_ENV, serde_json::to_string(&p)?);
    }
    let err = c.exec();
    bail!("exec {}: {err}", a.program[0])
}

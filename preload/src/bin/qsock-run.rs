//! `qsock-run`: runs an unmodified program with qsock intents and QoS on
//! every socket it connects, through `libqsock_preload.so`:
//!
//! ```text
//! qsock-run --category bulk-transfer -- curl -o big.iso http://10.9.0.1/big.iso
//! qsock-run --file-size 6000 --prohibit type:metered -- wget http://10.9.0.1/a.png
//! ```
use std::{os::unix::process::CommandExt, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};
use clap::Parser;
use qsock::{CapacityProfile, Category, Intents, InterfacePreference, Preference, QosParams, RateAttrs, SchedulerParams};

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
    let intents = Intents { category: a.category, file_size_bytes: a.file_size, capacity_profile: a.capacity_profile, interfaces, ..Default::default() };
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

fn main() -> Result<()> {
    let a = Args::parse();
    let p = params(&a)?;
    let lib = library()?;
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(v) if !v.is_empty() => format!("{}:{v}", lib.display()),
        _ => lib.display().to_string(),
    };
    let err = Command::new(&a.program[0]).args(&a.program[1..]).env("LD_PRELOAD", preload).env(qsock::PARAMS_ENV, serde_json::to_string(&p)?).exec();
    bail!("exec {}: {err}", a.program[0])
}

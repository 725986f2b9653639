//! Fetching with curl through `qsock-run` in the host namespace: a page
//! (curl's parallel mode, up to six keep-alive connections, as a browser
//! opens per host) or one object per connection, each with the intents the
//! scenario gives.
use std::{
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use testbed::multihomed::{MultiHomed, SERVICE_IP};

/// The URL of `path` on the bed's web server.
pub fn url(path: &str) -> String {
    format!("http://{SERVICE_IP}/{path}")
}

/// `qsock-run <intent args> -- curl <curl args>` in the host namespace.
pub fn curl(bed: &MultiHomed, launcher: &std::path::Path, intent: &[String], curl_args: &[String]) -> Command {
    let mut c = bed.host_command(launcher);
    c.args(intent).arg("--").arg("curl").args(["-s", "-S", "--fail"]).args(curl_args);
    c
}

/// Runs `c` to the end; fails with its stderr. Returns (seconds, stdout).
pub fn timed(mut c: Command) -> Result<(f64, String)> {
    let t = Instant::now();
    let out = c.stdout(Stdio::piped()).stderr(Stdio::piped()).output().context("spawn curl")?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{c:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// A curl config file fetching every object of `objects` to /dev/null,
/// printing each transfer's local address: `parallel` on up to 6
/// connections at once (as a browser per host), else one after the other on
/// one keep-alive connection (as the paper's wget).
pub fn page_config(objects: &[(String, u64)], parallel: bool) -> String {
    let mut s = String::from(if parallel { "parallel\nparallel-max = 6\n" } else { "" });
    s += "write-out = \"%{local_ip}\\n\"\n";
    for (p, _) in objects {
        s += &format!("url = \"{}\"\noutput = \"/dev/null\"\n", url(p));
    }
    s
}

/// How many lines of curl's `%{local_ip}` output name each link's host address.
pub fn per_link(out: &str, links: usize) -> Vec<usize> {
    (0..links).map(|i| out.lines().filter(|l| l.trim() == MultiHomed::host_ip(i).to_string()).count()).collect()
}

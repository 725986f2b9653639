//! The Socket Intents experiments (Schmidt et al., CoNEXT 2013, §5) on
//! qsock. A multi-homed host with the paper's two links: `dsl` (6 Mbit/s
//! down, 768 kbit/s up, 10 ms RTT) and `lte` (12 Mbit/s down, 6 Mbit/s up,
//! 70 ms RTT, metered); nginx in the server namespace serves a page shaped
//! like the paper's (130 objects, median 6 KB, mean 21 KB) and a bulk file;
//! curl, unmodified, is placed by `qsock-run` with intents.
//!
//! - Scenario 1 (bulk vs query): a bulk download starts, then the page is
//!   fetched, by two clients in turn: curl's parallel mode (6 connections,
//!   as a browser) and one sequential keep-alive connection (as the paper's
//!   wget). Variants: intents
//!   (bulk: category bulk transfer, page: query; qsockd's category policy),
//!   multipath (the same intents with TAPS multipathPolicy Aggregate: nginx
//!   and curl made MPTCP by `qsock-run --multipath`, qsockd the path
//!   manager, every connection's subflows on both links), dsl only, lte
//!   only (TAPS Require). Page and bulk completion times.
//! - Scenario 2 (file-size offload): dsl slowed to 2 Mbit/s (the paper's
//!   i1'); every object on its own connection with its file-size intent, 6
//!   at a time. Variants: the filesize policy, round robin, dsl only, lte only.
//!
//! Writes `intents-scenario1.csv`, `intents-scenario2.csv`, a boxplot SVG of
//! each and `intents-summary.txt` to `--out-dir`, and prints the summary.
use std::{
    collections::VecDeque,
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Parser;
use socket_intents::{
    fetch::{curl, page_config, per_link, timed, url},
    page, plot,
    stats::{summary, Summary},
};
use testbed::{
    multihomed::{LinkSpec, MultiHomed, SERVICE_IP},
    workspace_bin,
};

/// Run the Socket Intents scenarios.
#[derive(Parser, Debug)]
struct Args {
    /// Repetitions of scenario 1 (the paper: 30).
    #[arg(long, default_value_t = 30)]
    reps1: usize,
    /// Repetitions of scenario 2 (the paper: 15).
    #[arg(long, default_value_t = 15)]
    reps2: usize,
    /// Page clients of scenario 1: parallel (6 connections), sequential (1), or both.
    #[arg(long, value_enum, default_value = "both")]
    page_client: PageClient,
    /// Size of the bulk download, MB (10^6 bytes).
    #[arg(long, default_value_t = 8)]
    bulk_mb: u64,
    /// Directory for CSV, SVG and the summary.
    #[arg(long, default_value = "results")]
    out_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum PageClient {
    Parallel,
    Sequential,
    Both,
}

/// qsockd's config for scenario 1: it is the MPTCP path manager.
const MULTIPATH: &str = "\n[multipath]\nenabled = true\n";

fn links() -> Vec<LinkSpec> {
    vec![
        LinkSpec { name: "dsl".into(), down_bps: 6_000_000, up_bps: 768_000, one_way_delay_us: 5_000, kind: "wired", metered: false, loss_ppm: 0 },
        LinkSpec { name: "lte".into(), down_bps: 12_000_000, up_bps: 6_000_000, one_way_delay_us: 35_000, kind: "cellular", metered: true, loss_ppm: 0 },
    ]
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Median TCP handshake time over link `i` (20 connects from its address), ms.
fn handshake_rtt_ms(bed: &MultiHomed, i: usize) -> Result<f64> {
    let src = MultiHomed::host_ip(i);
    let mut v = Vec::new();
    for _ in 0..20 {
        let ms = bed.in_host(move || -> Result<f64> {
            use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
            let sock = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
            // From the link's address: qsockd's rule sends it over that link.
            bind(fd, &SockaddrIn::from(std::net::SocketAddrV4::new(src, 0)))?;
            let t = Instant::now();
            connect(fd, &SockaddrIn::from(std::net::SocketAddrV4::new(SERVICE_IP, 80)))?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        })??;
        v.push(ms);
    }
    Ok(summary(&v).median)
}

struct Run1 {
    rep: usize,
    client: &'static str,
    variant: &'static str,
    page_s: f64,
    bulk_s: f64,
    page_dsl: usize,
    page_lte: usize,
    bulk_link: String,
}

#[allow(clippy::too_many_arguments)]
fn scenario1(
    bed: &MultiHomed,
    launcher: &Path,
    cfg: &Path,
    rep: usize,
    client: &'static str,
    variant: &'static str,
    bulk: &[String],
    page: &[String],
) -> Result<Run1> {
    let t0 = Instant::now();
    let mut b = curl(bed, launcher, bulk, &strings(&["-o", "/dev/null", "-w", "%{local_ip}", &url("bulk.bin")]));
    let bulk_child = b.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().context("bulk curl")?;
    // The bulk transfer is under way when the page load starts.
    std::thread::sleep(Duration::from_millis(500));
    let (page_s, out) = timed(curl(bed, launcher, page, &strings(&["-K", &cfg.display().to_string()])))?;
    let bulk_out = bulk_child.wait_with_output()?;
    let bulk_s = t0.elapsed().as_secs_f64();
    anyhow::ensure!(bulk_out.status.success(), "bulk curl failed: {}", String::from_utf8_lossy(&bulk_out.stderr));
    let n = per_link(&out, 2);
    let bulk_ip = String::from_utf8_lossy(&bulk_out.stdout).trim().to_string();
    let bulk_link = if bulk_ip == MultiHomed::host_ip(1).to_string() { "lte" } else { "dsl" }.to_string();
    Ok(Run1 { rep, client, variant, page_s, bulk_s, page_dsl: n[0], page_lte: n[1], bulk_link })
}

struct Run2 {
    rep: usize,
    variant: &'static str,
    page_s: f64,
    objects_dsl: usize,
    objects_lte: usize,
}

fn scenario2(bed: &MultiHomed, launcher: &Path, objects: &[(String, u64)], rep: usize, variant: &'static str, args: &[String]) -> Result<Run2> {
    let queue = Mutex::new(objects.iter().cloned().collect::<VecDeque<_>>());
    let ips = Mutex::new(String::new());
    let t0 = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let Some((path, size)) = queue.lock().expect("queue").pop_front() else { return Ok(()) };
                        let mut intent = args.to_vec();
                        intent.extend(strings(&["--file-size", &size.to_string()]));
                        let (_, out) = timed(curl(bed, launcher, &intent, &strings(&["-o", "/dev/null", "-w", "%{local_ip}\n", &url(&path)])))?;
                        ips.lock().expect("ips").push_str(&out);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        }
        Ok(())
    })?;
    let page_s = t0.elapsed().as_secs_f64();
    let n = per_link(&ips.into_inner().expect("ips"), 2);
    Ok(Run2 { rep, variant, page_s, objects_dsl: n[0], objects_lte: n[1] })
}

fn fmt(s: &Summary) -> String {
    format!("median {:.2} s (IQR {:.2}-{:.2}, range {:.2}-{:.2})", s.median, s.q1, s.q3, s.min, s.max)
}

fn interfaces_line(bed: &MultiHomed) -> Result<String> {
    let mut s = String::new();
    for i in bed.client()?.interfaces()? {
        write!(s, "{}: srtt {} µs, {} tcp; ", i.name, i.srtt_us.map(|v| v.to_string()).unwrap_or("-".into()), i.tcp_connections)?;
    }
    Ok(s)
}

/// Waits until qsockd sees both links idle (receive rate below 2 % of
/// nominal, no TCP connection), so each variant starts from an idle host as
/// in the paper and the policies do not see the previous variant's traffic
/// in their moving averages. Bounded: 15 s.
fn wait_idle(bed: &MultiHomed) -> Result<()> {
    let c = bed.client()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ifs = c.interfaces()?;
        if ifs.iter().all(|i| i.rx_bps * 50 < i.nominal_down_bps && i.tcp_connections == 0) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "links not idle after 15 s: {ifs:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The filesize policy's reason for a 1-byte transfer (it names the threshold).
fn threshold_reason(bed: &MultiHomed) -> Result<String> {
    let c = bed.client()?;
    // Unbound: the policy may place it.
    let sock = bed.in_host(|| {
        nix::sys::socket::socket(nix::sys::socket::AddressFamily::Inet, nix::sys::socket::SockType::Stream, nix::sys::socket::SockFlag::SOCK_CLOEXEC, None)
    })??;
    let mut p = qsock::QosParams::intents(qsock::Intents { file_size_bytes: Some(1), ..Default::default() });
    p.policy = Some("filesize".into());
    let info = c.attach(std::os::fd::AsFd::as_fd(&sock), &p)?;
    c.detach(std::os::fd::AsFd::as_fd(&sock))?;
    Ok(info.selection.map(|s| s.reason).unwrap_or_default())
}

fn warm_up(bed: &MultiHomed, launcher: &Path) -> Result<()> {
    for l in ["dsl", "lte"] {
        timed(curl(bed, launcher, &strings(&["--require", l]), &strings(&["-o", "/dev/null", &url("warm.bin")])))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let a = Args::parse();
    std::fs::create_dir_all(&a.out_dir)?;
    let mut bed = MultiHomed::new("sint", links())?;
    bed.start_daemon_with("category", MULTIPATH)?;
    let root = bed.dir.join("www");
    let objects = page::write(&root, a.bulk_mb * 1_000_000)?;
    let launcher = workspace_bin("qsock-run")?;
    // nginx accepts MPTCP (and plain TCP, which the other variants use).
    bed.start_web_server_under(&root, &[launcher.clone().into_os_string(), "--multipath".into(), "--".into()])?;
    let clients: Vec<(&'static str, PathBuf)> = [("parallel", true), ("sequential", false)]
        .into_iter()
        .filter(|(n, _)| a.page_client == PageClient::Both || format!("{:?}", a.page_client).to_lowercase() == *n)
        .map(|(n, par)| {
            let f = bed.dir.join(format!("page-{n}.curlrc"));
            std::fs::write(&f, page_config(&objects, par)).map(|_| (n, f))
        })
        .collect::<std::io::Result<_>>()?;
    let sizes: Vec<f64> = objects.iter().map(|(_, s)| *s as f64).collect();
    let ps = summary(&sizes);
    let mut out = String::new();
    writeln!(
        out,
        "page: {} objects, median {:.0} B, mean {:.0} B, {:.2} MB in all; bulk file {} MB",
        objects.len(),
        ps.median,
        sizes.iter().sum::<f64>() / sizes.len() as f64,
        sizes.iter().sum::<f64>() / 1e6,
        a.bulk_mb
    )?;
    for i in 0..2 {
        writeln!(
            out,
            "link {}: TCP handshake {:.1} ms (median of 20; delay line set to {} ms RTT)",
            bed.links[i].name,
            handshake_rtt_ms(&bed, i)?,
            2 * bed.links[i].one_way_delay_us / 1000
        )?;
    }
    warm_up(&bed, &launcher)?;
    writeln!(out, "qsockd after warm-up: {}", interfaces_line(&bed)?)?;
    print!("{out}");

    // Scenario 1.
    let variants1: [(&'static str, Vec<String>, Vec<String>); 4] = [
        ("intents", strings(&["--category", "bulk-transfer"]), strings(&["--category", "query"])),
        (
            "multipath",
            strings(&["--multipath-policy", "aggregate", "--category", "bulk-transfer"]),
            strings(&["--multipath-policy", "aggregate", "--category", "query"]),
        ),
        ("dsl only", strings(&["--require", "dsl"]), strings(&["--require", "dsl"])),
        ("lte only", strings(&["--require", "lte"]), strings(&["--require", "lte"])),
    ];
    let mut runs1 = Vec::new();
    for rep in 0..a.reps1 {
        for (client, cfg) in &clients {
            for (v, bulk, pg) in &variants1 {
                wait_idle(&bed)?;
                let r = scenario1(&bed, &launcher, cfg, rep, client, v, bulk, pg)?;
                eprintln!("scenario 1 rep {rep} {client} {v}: page {:.2} s, bulk {:.2} s on {}", r.page_s, r.bulk_s, r.bulk_link);
                runs1.push(r);
            }
        }
    }
    let mut w = csv::Writer::from_path(a.out_dir.join("intents-scenario1.csv"))?;
    w.write_record(["rep", "client", "variant", "page_s", "bulk_s", "page_transfers_dsl", "page_transfers_lte", "bulk_link"])?;
    for r in &runs1 {
        w.write_record([
            r.rep.to_string(),
            r.client.into(),
            r.variant.into(),
            format!("{:.3}", r.page_s),
            format!("{:.3}", r.bulk_s),
            r.page_dsl.to_string(),
            r.page_lte.to_string(),
            r.bulk_link.clone(),
        ])?;
    }
    w.flush()?;
    writeln!(out, "\nscenario 1 (bulk download + page, {} reps, clients and variants in turn):", a.reps1)?;
    let mut series1 = Vec::new();
    for (client, _) in &clients {
        writeln!(out, " page client: {client}")?;
        let mut medians1 = Vec::new();
        for (v, _, _) in &variants1 {
            let mine = || runs1.iter().filter(|r| r.variant == *v && r.client == *client);
            let page: Vec<f64> = mine().map(|r| r.page_s).collect();
            let bulk: Vec<f64> = mine().map(|r| r.bulk_s).collect();
            let (on_dsl, on_lte) = (mine().map(|r| r.page_dsl).sum::<usize>(), mine().map(|r| r.page_lte).sum::<usize>());
            let bulk_on_lte = mine().filter(|r| r.bulk_link == "lte").count();
            let (sp, sb) = (summary(&page), summary(&bulk));
            writeln!(
                out,
                "  {v:9} page {}; bulk {}; page transfers on dsl/lte {on_dsl}/{on_lte}; bulk on lte {bulk_on_lte}/{}",
                fmt(&sp),
                fmt(&sb),
                page.len()
            )?;
            medians1.push((sp.median, sb.median));
            series1.push((format!("{client} {v} page"), page));
            series1.push((format!("{client} {v} bulk"), bulk));
        }
        let (intents, multipath, dsl, lte) = (medians1[0], medians1[1], medians1[2], medians1[3]);
        writeln!(out, "  page median, intents / dsl only {:.2}, intents / lte only {:.2}", intents.0 / dsl.0, intents.0 / lte.0)?;
        writeln!(out, "  bulk median, intents / lte only {:.2}, intents / dsl only {:.2}", intents.1 / lte.1, intents.1 / dsl.1)?;
        writeln!(
            out,
            "  page median, multipath / lte only {:.2}, multipath / intents {:.2}; bulk median, multipath / intents {:.2}",
            multipath.0 / lte.0,
            multipath.0 / intents.0,
            multipath.1 / intents.1
        )?;
    }
    plot::boxplot(&a.out_dir.join("intents-scenario1.svg"), "Socket Intents scenario 1: page and bulk download times", "completion time (s)", &series1)?;

    // Scenario 2: the paper's i1' (2 Mbit/s), configured as such.
    bed.stop_daemon();
    bed.links[0].down_bps = 2_000_000;
    bed.set_down_rate(0, 2_000_000)?;
    bed.start_daemon("category")?;
    warm_up(&bed, &launcher)?;
    wait_idle(&bed)?;
    let reason = threshold_reason(&bed)?;
    writeln!(out, "\nscenario 2 (dsl at 2 Mbit/s; one connection per object with its file size, 6 at a time, {} reps):", a.reps2)?;
    writeln!(out, "  qsockd: {}; filesize policy for 1 B: {reason}", interfaces_line(&bed)?)?;
    let variants2: [(&'static str, Vec<String>); 5] = [
        ("filesize", strings(&["--policy", "filesize"])),
        ("earliest completion", strings(&["--policy", "earliest_completion"])),
        ("round robin", strings(&["--policy", "round_robin"])),
        ("dsl only", strings(&["--require", "dsl"])),
        ("lte only", strings(&["--require", "lte"])),
    ];
    let mut runs2 = Vec::new();
    for rep in 0..a.reps2 {
        for (v, args) in &variants2 {
            wait_idle(&bed)?;
            let r = scenario2(&bed, &launcher, &objects, rep, v, args)?;
            eprintln!("scenario 2 rep {rep} {v}: page {:.2} s, objects on dsl/lte {}/{}", r.page_s, r.objects_dsl, r.objects_lte);
            runs2.push(r);
        }
    }
    let mut w = csv::Writer::from_path(a.out_dir.join("intents-scenario2.csv"))?;
    w.write_record(["rep", "variant", "page_s", "objects_dsl", "objects_lte"])?;
    for r in &runs2 {
        w.write_record([r.rep.to_string(), r.variant.into(), format!("{:.3}", r.page_s), r.objects_dsl.to_string(), r.objects_lte.to_string()])?;
    }
    w.flush()?;
    let mut series2 = Vec::new();
    let mut medians2 = Vec::new();
    for (v, _) in &variants2 {
        let page: Vec<f64> = runs2.iter().filter(|r| r.variant == *v).map(|r| r.page_s).collect();
        let last = runs2.iter().rfind(|r| r.variant == *v).expect("ran");
        let s = summary(&page);
        writeln!(out, "  {v:19} page {}; objects on dsl/lte {}/{} (last rep)", fmt(&s), last.objects_dsl, last.objects_lte)?;
        medians2.push(s.median);
        series2.push((v.to_string(), page));
    }
    writeln!(
        out,
        "  page median, round robin / filesize {:.2}, earliest completion / filesize {:.2}, dsl only / filesize {:.2}, lte only / filesize {:.2}",
        medians2[2] / medians2[0],
        medians2[1] / medians2[0],
        medians2[3] / medians2[0],
        medians2[4] / medians2[0]
    )?;
    plot::boxplot(&a.out_dir.join("intents-scenario2.svg"), "Socket Intents scenario 2: page download time", "completion time (s)", &series2)?;
    std::fs::write(a.out_dir.join("intents-summary.txt"), &out)?;
    print!("{}", out.split_once("\nscenario 1").map(|(_, r)| format!("\nscenario 1{r}")).unwrap_or_default());
    Ok(())
}

//! `delay-line`: a user-space delay line between two network devices, for
//! kernels without netem (mahimahi's `mm-delay` idea, over AF_PACKET rather
//! than TUN). Every frame received on one device is sent out of the other
//! `--delay-us` later, in order, unchanged; both directions. With
//! `--loss-ppm`, each frame in either direction is dropped independently
//! with that probability (a Bernoulli loss, as netem's `loss random`), from
//! a generator seeded by `--seed` so a run can be repeated. Run it in a
//! namespace of its own holding both devices and no addresses, with
//! checksum and segmentation offloads off on the devices around it (frames
//! must be complete on the wire). Prints `ready` once both sockets are bound.
use std::{
    collections::VecDeque,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Delay every frame between two devices.
#[derive(Parser, Debug)]
struct Args {
    /// One device.
    #[arg(long)]
    a: String,
    /// The other device.
    #[arg(long)]
    b: String,
    /// One-way delay added in each direction, µs.
    #[arg(long)]
    delay_us: u64,
    /// Probability that a frame is dropped, parts per million (each
    /// direction, each frame independently; 10000 is 1 %).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    loss_ppm: u32,
    /// Seed of the loss generator (the `b → a` direction uses `seed + 1`).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// `PACKET_IGNORE_OUTGOING` (linux/if_packet.h, 4.20+): do not see our own sends.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// Largest frame read, bytes (no GSO: offloads are off).
const MAX_FRAME: usize = 9216;

/// A raw socket bound to one device, all protocols.
struct RawPort {
    fd: libc::c_int,
}

impl RawPort {
    fn open(dev: &str) -> Result<Self> {
        let ifindex = nix::net::if_::if_nametoindex(dev).with_context(|| format!("no device {dev}"))?;
        let proto = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
        // SAFETY: plain socket(2); checked below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a valid int.
        if unsafe { libc::setsockopt(fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &one as *const _ as *const libc::c_void, 4) } != 0 {
            bail!("PACKET_IGNORE_OUTGOING: {}", std::io::Error::last_os_error());
        }
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: bind with a sockaddr_ll of its size.
        if unsafe { libc::bind(fd, &sll as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_ll>() as u32) } != 0 {
            bail!("bind to {dev}: {}", std::io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(self.fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: frame is readable for its length.
        let n = unsafe { libc::send(self.fd, frame.as_ptr() as *const libc::c_void, frame.len(), 0) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// Forwards frames from `from` to `to`, each `delay` after it arrived,
/// dropping each with probability `loss_ppm` / 10⁶.
fn pump(from: Arc<RawPort>, to: Arc<RawPort>, delay: Duration, loss_ppm: u32, seed: u64) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; MAX_FRAME];
        let mut rng = StdRng::seed_from_u64(seed);
        loop {
            match from.recv(&mut buf) {
                Ok(_) if loss_ppm > 0 && rng.random_range(0..1_000_000) < loss_ppm => {}
                Ok(n) => {
                    if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return eprintln!("delay-line: recv: {e}"),
            }
        }
    });
    std::thread::spawn(move || {
        let mut due: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
        loop {
            if due.is_empty() {
                match rx.recv() {
                    Ok(f) => due.push_back(f),
                    Err(_) => return,
                }
            }
            while let Ok(f) = rx.try_recv() {
                due.push_back(f);
            }
            let (at, _) = due.front().expect("non-empty");
            let now = Instant::now();
            if *at > now {
                // Wake early for frames that arrive meanwhile (they are due later: FIFO).
                std::thread::sleep(*at - now);
                continue;
            }
            let (_, frame) = due.pop_front().expect("non-empty");
            // A full device queue drops the frame, as a wire would.
            let _ = to.send(&frame);
        }
    });
}

fn main() -> Result<()> {
    let a = Args::parse();
    let (pa, pb) = (Arc::new(RawPort::open(&a.a)?), Arc::new(RawPort::open(&a.b)?));
    let delay = Duration::from_micros(a.delay_us);
    pump(pa.clone(), pb.clone(), delay, a.loss_ppm, a.seed);
    pump(pb, pa, delay, a.loss_ppm, a.seed.wrapping_add(1));
    println!("ready");
    loop {
        std::thread::park();
    }
}

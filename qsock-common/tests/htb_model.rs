//! The egress program's arithmetic (`service`, `unit`, the compact tag)
//! checked against a simulation of one HTB leaf class: a rate bucket
//! (rate R, depth b) charged only for what the class sends on its own
//! tokens, a ceiling bucket (ceil C) charged for everything, borrowing
//! whenever the parent lends, and a link that serialises at C. Dequeues
//! feed the `ServiceMeter` as the dequeue probe does.
use proptest::prelude::*;
use qsock_common::{
    dwcs,
    service::{predict, tx_ns, ClassModel, ServiceMeter},
    unit::{frame_state_after, judge, starts_unit, Verdict, FRAME_DROPPING},
    *,
};

const MTU: u64 = 1514;

/// One HTB leaf class fed a FIFO of packets.
struct HtbClass {
    rate_bps: u64,
    ceil_bps: u64,
    burst_bytes: i128,
    cburst_bytes: i128,
    /// Whether the parent lends at time t (ns).
    lends: Box<dyn Fn(u64) -> bool>,
}

impl HtbClass {
    /// Departure time of every packet `(arrival ns, bytes)`, in FIFO order.
    fn run(&self, packets: &[(u64, u64)]) -> Vec<u64> {
        // Tokens kept in bytes·1e9 (byte-ns) to stay exact.
        let (r, c) = (self.rate_bps as i128, self.ceil_bps as i128);
        let (tmax, cmax) = (self.burst_bytes * 8_000_000_000, self.cburst_bytes * 8_000_000_000);
        let (mut tok, mut ctok, mut t) = (tmax, cmax, 0u64);
        let mut out = Vec::with_capacity(packets.len());
        for &(arr, len) in packets {
            let cost = len as i128 * 8_000_000_000;
            let mut now = t.max(arr);
            let refill = |tok: i128, ctok: i128, dt: u64| ((tok + r * dt as i128).min(tmax), (ctok + c * dt as i128).min(cmax));
            (tok, ctok) = refill(tok, ctok, now - t);
            loop {
                // The ceiling bucket must not be in debt.
                if ctok < 0 {
                    let dt = ((-ctok + c - 1) / c) as u64;
                    (tok, ctok) = refill(tok, ctok, dt);
                    now += dt;
                    continue;
                }
                if tok >= 0 {
                    tok -= cost;
                    break;
                }
                if (self.lends)(now) {
                    // Borrowed: HTB does not charge the class's own bucket.
                    break;
                }
                // Wait for own tokens, or for the parent to lend (checked each 1 ms).
                let dt = (((-tok + r - 1) / r) as u64).min(1_000_000);
                (tok, ctok) = refill(tok, ctok, dt);
                now += dt;
            }
            ctok -= cost;
            out.push(now);
            // The link serialises the packet at C.
            let tx = tx_ns(len, self.ceil_bps);
            (tok, ctok) = refill(tok, ctok, tx);
            t = now + tx;
        }
        out
    }
}

/// A unit as the sender hands it over: arrival, packets, deadline, priority.
#[derive(Clone, Debug)]
struct Unit {
    at: u64,
    packets: Vec<u64>,
    deadline: u64,
    prio: u8,
}

/// What the egress program would predict for each unit if every unit were
/// kept, given the simulated departures (so backlog and meter are real).
fn predictions(class: ClassModel, units: &[Unit], departures: &[u64], with_meter: bool) -> Vec<u64> {
    let mut vclock = 0u64;
    let mut meter = ServiceMeter::default();
    let (mut enq, mut deq) = (0u64, 0u64);
    let mut deq_idx = 0usize;
    let flat: Vec<u64> = units.iter().flat_map(|u| u.packets.iter().copied()).collect();
    let arrivals: Vec<u64> = units.iter().flat_map(|u| u.packets.iter().map(move |_| u.at)).collect();
    let mut out = Vec::new();
    for u in units {
        // Dequeues that happened before this unit arrived.
        while deq_idx < departures.len() && departures[deq_idx] <= u.at && deq_idx < enq_count(units, u) {
            deq += flat[deq_idx];
            meter = meter.on_dequeue(departures[deq_idx], flat[deq_idx], arrivals[deq_idx]);
            deq_idx += 1;
        }
        let bytes: u64 = u.packets.iter().sum();
        // Without the meter: a reading at R, i.e. the guaranteed bound alone.
        let measured = if with_meter { meter.rate_at(u.at) } else { class.rate_bps };
        let p = predict(class, vclock, u.at, enq - deq, bytes, u.packets[0], measured);
        out.push(p.finish_ns);
        vclock = p.vclock_after_ns;
        enq += bytes;
    }
    out
}

/// Packets of the units before `u` (the only ones that can have left).
fn enq_count(units: &[Unit], u: &Unit) -> usize {
    units.iter().take_while(|x| !std::ptr::eq(*x, u)).map(|x| x.packets.len()).sum()
}

fn packets_of(units: &[Unit]) -> Vec<(u64, u64)> {
    units.iter().flat_map(|u| u.packets.iter().map(move |&l| (u.at, l))).collect()
}

/// Last departure of each unit.
fn unit_departures(units: &[Unit], departures: &[u64]) -> Vec<u64> {
    let mut i = 0;
    units
        .iter()
        .map(|u| {
            i += u.packets.len();
            departures[i - 1]
        })
        .collect()
}

/// Video-like units: one frame every `period`, sizes from `sizes`, split
/// into MTU packets; I-frames non-droppable, P 4, B 1; deadline +300 ms.
fn video(sizes: &[(u64, u8)], period: u64) -> Vec<Unit> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &(bytes, prio))| {
            let mut packets = vec![MTU; (bytes / MTU) as usize];
            if bytes % MTU != 0 || packets.is_empty() {
                packets.push((bytes % MTU).max(64));
            }
            let at = 1_000_000_000 + i as u64 * period;
            Unit { at, packets, deadline: at + 300_000_000, prio }
        })
        .collect()
}

/// Frame sizes with scene cuts: mostly `mean`-ish P/B frames, an I-frame
/// every `gop` frames up to `cut`× the mean.
fn frame_sizes() -> impl Strategy<Value = Vec<(u64, u8)>> {
    (2_000u64..12_000, 2u64..12, 10usize..60, prop::collection::vec((0.3f64..1.7, 0u8..3), 40..160)).prop_map(|(mean, cut, gop, v)| {
        v.into_iter()
            .enumerate()
            .map(|(i, (scale, kind))| {
                if i % gop == 0 {
                    (mean * cut, DROP_PRIO_NON_DROPPABLE)
                } else if kind == 0 {
                    (((mean as f64) * scale) as u64, 4)
                } else {
                    (((mean as f64) * scale * 0.6) as u64, 1)
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The guaranteed bound (no meter) is never earlier than the class
    /// really sends, whether or not the parent lends (but for one packet's
    /// serialisation at the link rate): what it predicts on time is on time.
    #[test]
    fn the_guaranteed_bound_is_never_optimistic(sizes in frame_sizes(), rate_k in 300u64..6_000, lend_pattern in any::<u64>()) {
        let rate = rate_k * 1_000;
        let burst = qsock_common_default_burst(rate) + 20_000;
        let class = ClassModel { rate_bps: rate, ceil_bps: 10_000_000, burst_ns: tx_ns(burst, rate) };
        let units = video(&sizes, 50_000_000);
        // The parent lends in some 100 ms slots and not in others.
        let sim = HtbClass {
            rate_bps: rate, ceil_bps: 10_000_000, burst_bytes: burst as i128, cburst_bytes: qsock_common_default_burst(10_000_000) as i128,
            lends: Box::new(move |t| lend_pattern >> ((t / 100_000_000) % 64) & 1 == 1),
        };
        let dep = sim.run(&packets_of(&units));
        let actual = unit_departures(&units, &dep);
        let predicted = predictions(class, &units, &dep, false);
        for (i, (p, a)) in predicted.iter().zip(&actual).enumerate() {
            prop_assert!(p + tx_ns(MTU, 10_000_000) >= *a, "unit {i}: predicted {p}, left at {a}");
        }
    }

    /// On an idle link (the parent always lends), a stream that a plain
    /// FIFO at the link rate would deliver on time loses nothing to the
    /// frame decisions, whatever its reservation: never less than plain.
    #[test]
    fn on_an_idle_link_nothing_plain_delivers_is_dropped(sizes in frame_sizes(), rate_k in 300u64..4_000) {
        idle_link_keeps_what_plain_delivers(&sizes, rate_k)?;
    }

    /// Whatever marks and verdicts come, every frame is kept or dropped
    /// whole: its messages share its first message's fate.
    #[test]
    fn frames_are_judged_once_and_kept_or_dropped_whole(marks in prop::collection::vec((any::<bool>(), any::<bool>(), any::<bool>()), 1..200)) {
        let mut state = 0u64;
        let mut fate: Option<bool> = None; // fate of the open frame
        for (start, end, drop) in marks {
            let tag = TAG_VALID | if start { TAG_FRAME_START } else { 0 } | if end { TAG_FRAME_END } else { 0 };
            let dropped = if starts_unit(state, tag) {
                fate = Some(drop);
                drop
            } else {
                let d = state == FRAME_DROPPING;
                prop_assert_eq!(Some(d), fate, "a message inside a frame follows the frame's verdict");
                d
            };
            state = frame_state_after(state, tag, dropped);
            if state == 0 {
                fate = None;
            }
        }
    }

    /// The compact frame tag carries the deadline exactly (to 256 ns) and
    /// the frame size, for deadlines up to its reach either side of now.
    #[test]
    fn compact_tags_round_trip(now in 1u64 << 40..u64::MAX >> 2, ahead in -(COMPACT_DEADLINE_REACH_NS as i64)..COMPACT_DEADLINE_REACH_NS as i64,
                               bytes in 0u64..1 << 26, prio in 0u8..8, end in any::<bool>(), drift in 0u64..1_000_000_000) {
        let deadline = now.wrapping_add_signed(ahead);
        let tag = encode_frame_tag(Some(deadline), now, prio, end, bytes).expect("within reach");
        // The program reads it a little later than it was sent.
        prop_assert_eq!(tag_deadline(tag, now + drift), deadline & TAG_DEADLINE_MASK);
        prop_assert_eq!(tag_frame_bytes(tag), bytes.min(MAX_TAG_FRAME_BYTES));
        prop_assert_eq!(tag & TAG_DROP_PRIO_MASK, prio as u64);
        prop_assert_eq!(tag & TAG_FRAME_END != 0, end);
        prop_assert!(tag & TAG_FRAME_START != 0);
        prop_assert!(encode_frame_tag(Some(now + COMPACT_DEADLINE_REACH_NS + 1), now, prio, end, bytes).is_none());
    }

    /// DWCS patience (precedence turned into patience at enqueue): never
    /// more than the slack; the whole slack for a unit that may not be
    /// dropped or whose window has no room; and a stream with a looser
    /// current constraint (larger x'/y') never gets more patience than a
    /// tighter one, so losses land on the loosest constraints first.
    #[test]
    fn dwcs_patience_orders_streams_by_their_current_constraint(slack in 0u64..10_000_000_000, unit_tx in 0u64..100_000_000,
                                                                  y1 in 1u32..64, y2 in 1u32..64, x1s in 0u32..64, x2s in 0u32..64) {
        let (x1, x2) = (x1s % (y1 + 1), x2s % (y2 + 1));
        let (w1, w2) = (Window::new(x1, y1), Window::new(x2, y2));
        let p1 = if x1 > 0 { dwcs::patience(slack, w1, true, unit_tx) } else { slack };
        prop_assert!(p1 <= slack);
        prop_assert_eq!(dwcs::patience(slack, w1, false, unit_tx), slack);
        let p2 = dwcs::patience(slack, w2, x2 > 0, unit_tx);
        if x2 > 0 && (x1 as u64) * (y2 as u64) < (x2 as u64) * (y1 as u64) {
            prop_assert!(p2 <= p1, "x'/y' {x2}/{y2} looser than {x1}/{y1} but more patient: {p2} > {p1}");
        }
    }

    /// The BPF-safe arithmetic agrees with 128-bit arithmetic.
    #[test]
    fn bpf_safe_arithmetic(a in any::<u64>(), b in any::<u64>(), num in any::<u32>(), den in 1u32..) {
        prop_assert_eq!(sat_mul(a, b), a.saturating_mul(b));
        let num = num.min(den);
        prop_assert_eq!(scale_down(a, num, den) as u128, a as u128 * num as u128 / den as u128);
    }
}

/// The idle-link property for one case: on a link whose parent always
/// lends, no unit that a plain FIFO at the link rate delivers by its
/// deadline is dropped by the frame decisions.
fn idle_link_keeps_what_plain_delivers(sizes: &[(u64, u8)], rate_k: u64) -> Result<(), TestCaseError> {
    let rate = rate_k * 1_000;
    let link = 10_000_000;
    let units = video(sizes, 50_000_000);
    // What a plain socket gets: a FIFO at the link rate.
    let plain = HtbClass { rate_bps: link, ceil_bps: link, burst_bytes: 1 << 40, cburst_bytes: 1 << 40, lends: Box::new(|_| true) };
    let plain_dep = unit_departures(&units, &plain.run(&packets_of(&units)));
    prop_assume!(units.iter().zip(&plain_dep).all(|(u, d)| *d <= u.deadline));
    let burst = qsock_common_default_burst(rate);
    let class = ClassModel { rate_bps: rate, ceil_bps: link, burst_ns: tx_ns(burst, rate) };
    let sim = HtbClass {
        rate_bps: rate,
        ceil_bps: link,
        burst_bytes: burst as i128,
        cburst_bytes: qsock_common_default_burst(link) as i128,
        lends: Box::new(|_| true),
    };
    let dep = sim.run(&packets_of(&units));
    let predicted = predictions(class, &units, &dep, true);
    for (i, (u, p)) in units.iter().zip(&predicted).enumerate() {
        let droppable = u.prio < DROP_PRIO_NON_DROPPABLE;
        let v = judge(u.deadline, *p, u.at, u.prio, droppable);
        prop_assert!(
            v != Verdict::Drop,
            "unit {i} ({} bytes, prio {}) dropped: predicted {} ms",
            u.packets.iter().sum::<u64>(),
            u.prio,
            (p - u.at) / 1_000_000
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// The idle-link property on a long random search (10,000 cases, under
    /// a second in a release build): run before changing the prediction,
    /// `cargo test --release -p qsock-common --test htb_model -- --ignored`.
    #[test]
    #[ignore = "long random search; run by hand before changing service.rs or unit.rs"]
    fn on_an_idle_link_nothing_plain_delivers_is_dropped_long_search(sizes in frame_sizes(), rate_k in 300u64..4_000) {
        idle_link_keeps_what_plain_delivers(&sizes, rate_k)?;
    }
}

/// The counterexample of issue 15, kept as a plain test as well as in the
/// regression file: an 8712 B I-frame leaves by borrowing in less than the
/// meter's window, then a 3522 B priority-1 frame 50 ms later on a stream
/// reserved at 300 kbit/s (the guaranteed clock alone said 133 ms of its
/// 300 ms deadline, more than the 2/7 a priority-1 frame may use).
#[test]
fn the_second_frame_before_any_meter_sample_is_kept() {
    let gop = std::iter::once((8712, 7)).chain(std::iter::repeat_n((1306, 4), 9));
    let mut sizes: Vec<(u64, u8)> = gop.clone().chain(gop.clone()).chain(gop.clone()).chain(gop).collect();
    sizes[1] = (3522, 1);
    idle_link_keeps_what_plain_delivers(&sizes, 300).unwrap();
}

/// The default HTB bucket (one tick at HZ 250 plus one frame), as qsockd sets it.
fn qsock_common_default_burst(rate_bps: u64) -> u64 {
    rate_bps / 8 / 250 + MTU
}

//! Property tests of the DWCS scheduler against a straightforward reference
//! model and against the guarantees of West et al. (shared/notes/dwcs-edf.md).
use std::collections::VecDeque;

use proptest::prelude::*;
use qsock_dwcs::{
    scheduler::{Dwcs, Event, NaiveDwcs, Scheduler},
    WindowConstraint,
};

#[derive(Clone, Debug)]
enum Op {
    Enqueue { stream: usize, deadline_in: u64, non_droppable: bool },
    Decide { advance: u64 },
}

fn constraint() -> impl Strategy<Value = WindowConstraint> {
    (1u32..8).prop_flat_map(|y| (0..=y, Just(y))).prop_map(|(x, y)| WindowConstraint::new(x, y).unwrap())
}

fn ops(streams: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            (0..streams, 1u64..40, prop::bool::weighted(0.15)).prop_map(|(stream, deadline_in, non_droppable)| Op::Enqueue {
                stream,
                deadline_in,
                non_droppable
            }),
            (0u64..6).prop_map(|advance| Op::Decide { advance }),
        ],
        1..300,
    )
}

/// Runs `ops` on `s`; returns the events and, per stream, the non-droppable
/// flag of every packet that left by a Dropped event.
fn run(s: &mut dyn Scheduler, n: usize, ops: &[Op]) -> (Vec<Event>, Vec<bool>) {
    let mut now = 0;
    let mut events = Vec::new();
    let mut mirror: Vec<VecDeque<bool>> = vec![VecDeque::new(); n];
    let mut dropped_nd = Vec::new();
    for op in ops {
        match *op {
            Op::Enqueue { stream, deadline_in, non_droppable } => {
                s.enqueue(stream, now + deadline_in, non_droppable);
                mirror[stream].push_back(non_droppable || s.stream(stream).non_droppable);
            }
            Op::Decide { advance } => {
                now += advance;
                let from = events.len();
                s.decide(now, &mut events);
                for e in &events[from..] {
                    match *e {
                        Event::Dropped { stream } => dropped_nd.push(mirror[stream].pop_front().expect("a queued packet")),
                        Event::Sent { stream, .. } => {
                            mirror[stream].pop_front().expect("a queued packet");
                        }
                    }
                }
            }
        }
    }
    (events, dropped_nd)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The O(log n) heap scheduler decides exactly as the linear scan does.
    #[test]
    fn heap_scheduler_matches_the_reference_model(
        (cs, nd, ops) in prop::collection::vec((constraint(), prop::bool::weighted(0.2)), 1..8)
            .prop_flat_map(|s| { let n = s.len(); (Just(s.iter().map(|c| c.0).collect::<Vec<_>>()), Just(s.iter().map(|c| c.1).collect::<Vec<_>>()), ops(n)) })
    ) {
        let mut fast = Dwcs::default();
        let mut slow = NaiveDwcs::default();
        for (c, n) in cs.iter().zip(&nd) {
            fast.add_stream(*c, *n);
            slow.add_stream(*c, *n);
        }
        let (a, _) = run(&mut fast, cs.len(), &ops);
        let (b, _) = run(&mut slow, cs.len(), &ops);
        prop_assert_eq!(a, b);
        for i in 0..cs.len() {
            prop_assert_eq!(fast.stream(i), slow.stream(i));
        }
    }

    /// Non-droppable packets (per stream or per packet) are never dropped.
    #[test]
    fn non_droppable_packets_are_never_dropped(
        (cs, nd, ops) in prop::collection::vec((constraint(), prop::bool::weighted(0.3)), 1..6)
            .prop_flat_map(|s| { let n = s.len(); (Just(s.iter().map(|c| c.0).collect::<Vec<_>>()), Just(s.iter().map(|c| c.1).collect::<Vec<_>>()), ops(n)) })
    ) {
        let mut s = Dwcs::default();
        for (c, n) in cs.iter().zip(&nd) {
            s.add_stream(*c, *n);
        }
        let (_, dropped_nd) = run(&mut s, cs.len(), &ops);
        prop_assert!(dropped_nd.iter().all(|nd| !nd), "a non-droppable packet was dropped");
    }

    /// With no loss allowed (x = 0) DWCS reduces to EDF. Unit-size packets,
    /// one per stream every T slots, deadline at the end of the period: with
    /// n ≤ T streams every deadline is met. (For x > 0 the plain DWCS rules do
    /// not guarantee sliding-window constraints on every feasible set: Mok &
    /// Wang, RTSS 2001; proptest finds counterexamples, see the issue notes.)
    #[test]
    fn with_no_loss_allowed_every_deadline_is_met_on_feasible_sets(
        (period, ys) in (1u64..8).prop_flat_map(|t| (Just(t), prop::collection::vec(1u32..8, 1..=t as usize))),
    ) {
        let mut s = Dwcs::default();
        for y in &ys {
            s.add_stream(WindowConstraint::new(0, *y).unwrap(), false);
        }
        let mut events = Vec::new();
        for slot in 0..period * 40 {
            if slot % period == 0 {
                for i in 0..ys.len() {
                    s.enqueue(i, slot + period, false);
                }
            }
            s.decide(slot, &mut events);
        }
        prop_assert_eq!(events.len(), ys.len() * 40);
        prop_assert!(events.iter().all(|e| matches!(e, Event::Sent { on_time: true, .. })), "{:?}", events);
    }

    /// Under overload the losses land on the loosest constraints: tight
    /// streams (x = 0) whose demand fits the link and loose streams (x = y,
    /// every deadline may be missed) share T unit slots per period; more
    /// packets arrive than slots exist, and every miss is a loose stream's.
    #[test]
    fn under_overload_losses_land_on_the_loosest_constraints(
        (period, tight, loose) in (1u64..8).prop_flat_map(|t| (
            Just(t),
            prop::collection::vec(1u32..8, 1..=t as usize),
            prop::collection::vec(1u32..8, 1..4),
        )),
    ) {
        let mut s = Dwcs::default();
        for y in &tight {
            s.add_stream(WindowConstraint::new(0, *y).unwrap(), false);
        }
        for y in &loose {
            s.add_stream(WindowConstraint::new(*y, *y).unwrap(), false);
        }
        let n = tight.len() + loose.len();
        let mut events = Vec::new();
        for slot in 0..period * 40 {
            if slot % period == 0 {
                for i in 0..n {
                    s.enqueue(i, slot + period, false);
                }
            }
            s.decide(slot, &mut events);
        }
        let missed = |e: &Event| match *e {
            Event::Sent { stream, on_time } => (!on_time).then_some(stream),
            Event::Dropped { stream } => Some(stream),
        };
        let misses: Vec<usize> = events.iter().filter_map(missed).collect();
        prop_assert!(misses.iter().all(|&i| i >= tight.len()), "a tight stream missed: {:?}", misses);
        if n as u64 > period {
            prop_assert!(!misses.is_empty(), "overload without a single miss");
        }
    }
}

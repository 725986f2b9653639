//! Property tests of lossy and lossless EDF against a reference model and
//! the claims Q.Sockets makes for them (§4.2.2).
use proptest::prelude::*;
use qsock_edf::scheduler::{run, run_reference, Message, Outcome};

fn messages() -> impl Strategy<Value = Vec<Message>> {
    prop::collection::vec((0u64..40, 1u64..12).prop_map(|(release, slack)| Message { release, deadline: release + slack }), 0..80)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The heap scheduler decides exactly as the linear scan.
    #[test]
    fn heap_matches_the_reference_model(m in messages(), lossy in any::<bool>()) {
        prop_assert_eq!(run(&m, lossy), run_reference(&m, lossy));
    }

    /// Lossy EDF never sends late; lossless never drops; and lossy loses no
    /// more messages than lossless delivers late (the paper's Fig. 7 claim).
    #[test]
    fn lossy_loses_fewer_than_lossless_delivers_late(m in messages()) {
        let lossy = run(&m, true);
        let lossless = run(&m, false);
        prop_assert!(!lossy.contains(&Outcome::Late));
        prop_assert!(!lossless.contains(&Outcome::Dropped));
        let dropped = lossy.iter().filter(|o| **o == Outcome::Dropped).count();
        let late = lossless.iter().filter(|o| **o == Outcome::Late).count();
        prop_assert!(dropped <= late, "lossy dropped {} > lossless late {}", dropped, late);
    }

    /// A set that passes the utilisation test meets every deadline: periodic
    /// unit messages, one per stream every T slots, deadline T after release,
    /// Σ 1/T ≤ 1.
    #[test]
    fn admitted_periodic_sets_meet_every_deadline(periods in prop::collection::vec(1u64..10, 1..6)) {
        let streams: Vec<qsock_edf::PeriodicStream> = periods.iter().map(|&t| qsock_edf::PeriodicStream { bytes: 1, period_ns: t * 1_000_000_000 }).collect();
        prop_assume!(qsock_edf::utilisation(&streams, 8) <= 1.0);
        let m: Vec<Message> = periods
            .iter()
            .flat_map(|&t| (0..60 / t).map(move |k| Message { release: k * t, deadline: (k + 1) * t }))
            .collect();
        prop_assert!(run(&m, false).iter().all(|o| *o == Outcome::OnTime));
    }
}

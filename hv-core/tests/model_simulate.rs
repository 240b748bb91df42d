//! `model::simulate`: the numbers issue 4 asks of `hv simulate`, for K = 16
//! (with a smaller N than the CLI's 100,000), the churn phase, and proof
//! that the stale check sees a missing flush.

use hv_core::model::{SimulateConfig, SimulateReport, simulate};
use hv_mmu::shadow::Policy;

const K: usize = 16;
const N: u64 = 2_000;

fn invvpids(report: &SimulateReport) -> u64 {
    report.invvpid.individual
        + report.invvpid.single
        + report.invvpid.all
        + report.invvpid.single_retaining_globals
}

#[test]
fn hv_switches_without_flushes_and_stops_filling_after_the_first_round() {
    let report = simulate(SimulateConfig::new(K, N, Policy::Hv)).expect("simulation runs");
    assert_eq!(report.nested_entries, N, "{report:?}");
    assert_eq!(report.reflected, N, "every CPUID goes to L1: {report:?}");
    assert_eq!(report.invept.single + report.invept.global, 0, "{report:?}");
    // At most one INVVPID per VPID02 at its first binding (hv-core flushes
    // a newly bound VPID02), none on any switch after that.
    assert!(invvpids(&report) <= K as u64, "{report:?}");
    assert_eq!(report.flushes_after_first_round, 0, "{report:?}");
    assert!(report.ept02_fills >= 4 * K as u64, "{report:?}");
    assert_eq!(report.fills_after_first_round, 0, "{report:?}");
    assert_eq!(report.stale_translations, 0, "{report:?}");
    assert_eq!(report.roots_live, K as u64, "{report:?}");
}

#[test]
fn every_policy_is_free_of_stale_translations_with_and_without_churn() {
    for policy in Policy::ALL {
        for churn in [false, true] {
            let config = SimulateConfig {
                churn,
                ..SimulateConfig::new(K, 400, policy)
            };
            let report = simulate(config).expect("simulation runs");
            assert_eq!(
                report.stale_translations, 0,
                "{policy:?} churn={churn}: {report:?}"
            );
            assert_eq!(report.nested_entries, 400, "{policy:?}: {report:?}");
        }
    }
}

#[test]
fn kvm_xen_and_flush_always_show_their_refills_and_flushes() {
    let hv = simulate(SimulateConfig::new(K, N, Policy::Hv)).expect("runs");
    for policy in [Policy::Kvm, Policy::Xen, Policy::FlushAlways] {
        let report = simulate(SimulateConfig::new(K, N, policy)).expect("runs");
        assert!(report.fills_after_first_round > 0, "{policy:?}: {report:?}");
        assert!(
            report.ept02_fills > hv.ept02_fills,
            "{policy:?}: {report:?}"
        );
        assert!(
            report.flushes_after_first_round > 0,
            "{policy:?}: {report:?}"
        );
        assert_eq!(report.stale_translations, 0, "{policy:?}: {report:?}");
    }
}

#[test]
fn churn_makes_hv_flush_only_what_l1_invalidated() {
    let report = simulate(SimulateConfig {
        churn: true,
        ..SimulateConfig::new(K, 200, Policy::Hv)
    })
    .expect("runs");
    assert!(report.invept.single > 0, "{report:?}");
    assert!(report.invvpid.individual > 0, "{report:?}");
    assert_eq!(report.stale_translations, 0, "{report:?}");
}

#[test]
fn a_dropped_flush_is_caught_as_a_stale_translation() {
    for policy in Policy::ALL {
        let report = simulate(SimulateConfig {
            churn: true,
            drop_invalidations: true,
            ..SimulateConfig::new(K, 200, policy)
        })
        .expect("runs");
        assert!(report.stale_translations > 0, "{policy:?}: {report:?}");
    }
}

#[test]
fn bad_configurations_are_errors() {
    assert!(simulate(SimulateConfig::new(0, 10, Policy::Hv)).is_err());
    assert!(
        simulate(SimulateConfig {
            pages_per_l2: 0,
            ..SimulateConfig::new(1, 10, Policy::Hv)
        })
        .is_err()
    );
}

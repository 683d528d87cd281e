//! The billing and renewals scenarios against the in-memory reference store. Other stores run
//! the same cases through `nls_core::billing::scenarios::run_all`.

use std::sync::Arc;

use nls_core::billing::scenarios::{self, CASES};
use nls_core::memory_store::MemoryStore;
use nls_core::ports::Store;

fn fresh() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

macro_rules! scenario_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                scenarios::$name(fresh()).await;
            }
        )*

        #[test]
        fn every_scenario_has_a_test_here() {
            let here = [$(stringify!($name)),*];
            for (name, _) in CASES {
                assert!(here.contains(name), "scenario {name} is not run against the memory store");
            }
        }
    };
}

scenario_tests!(
    each_event_has_its_effect,
    billing_never_lifts_an_admin_suspension,
    payment_lifts_a_billing_suspension,
    lapsing_subscription_suspends_then_expires,
    trial_will_end_sends_a_notice,
    every_event_replayed_five_times_has_one_effect,
    shuffled_histories_converge,
    concurrent_deliveries_apply_once,
    unknown_price_is_acknowledged,
    bad_signatures_change_nothing,
    a_lost_key_email_is_sent_on_redelivery,
    renewal_notices_each_window_once,
    overlapping_runs_and_a_crash_send_once,
    opt_out_skips_reminders_not_the_suspension_notice,
    a_paid_through_date_past_2200_is_refused,
);

//! Conformance cases of [`ValidationStatsStore`]: batches counted once, aggregates as exact
//! counters under concurrent writers, the distinct-value bound, compliance records.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate};

use crate::issuing::new_id;
use crate::model::Timestamp;
use crate::ports::*;
use crate::validation_stats::*;

fn at(hour: i64) -> Timestamp {
    DateTime::parse_from_rfc3339("2026-11-15T00:00:00Z").expect("valid literal").to_utc()
        + Duration::hours(hour)
}

fn day() -> NaiveDate {
    at(0).date_naive()
}

fn event(license: &str, fingerprint: &str, ip: &str, code: &str, when: Timestamp) -> ValidationEvent {
    ValidationEvent {
        license_id: license.to_owned(),
        deployment_id: Some("dep-1".to_owned()),
        fingerprint: Some(fingerprint.to_owned()),
        client_ip: Some(ip.to_owned()),
        country: None,
        code: code.to_owned(),
        at: when,
        edge: Some("test".to_owned()),
    }
}

fn batch(events: Vec<ValidationEvent>) -> ValidationEventBatch {
    ValidationEventBatch { batch_id: new_id("veb"), received_at: at(20), events }
}

fn top_count(aggregate: &ValidationDayAggregate, kind: DistinctKind, value: &str) -> Option<u64> {
    aggregate.distinct.get(&kind)?.top.iter().find(|v| v.value == value).map(|v| v.count)
}

pub(super) async fn validation_events_count_once_per_batch(store: Arc<dyn Store>) {
    let lic = new_id("lic");
    let mut country = event(&lic, "fp-b", "10.0.0.2", "EXPIRED", at(3));
    country.country = Some("DE".to_owned());
    let b = batch(vec![
        event(&lic, "fp-a", "10.0.0.1", "VALID", at(1)),
        event(&lic, "fp-a", "10.0.0.1", "VALID", at(2)),
        country,
        // Another day and another license are separate aggregates.
        event(&lic, "fp-a", "10.0.0.1", "VALID", at(30)),
        event("lic-other", "fp-z", "10.0.0.9", "VALID", at(1)),
    ]);
    assert_eq!(store.record_validation_events(&b).await.expect("record"), BatchOutcome::Recorded);
    assert_eq!(store.record_validation_events(&b).await.expect("replay"), BatchOutcome::Duplicate);
    let agg = store.validation_day_aggregate(&lic, day()).await.expect("read").expect("exists");
    assert_eq!(agg.by_code.get("VALID"), Some(&2));
    assert_eq!(agg.by_code.get("EXPIRED"), Some(&1));
    assert_eq!(agg.validations(), 3);
    assert_eq!(agg.distinct_count(DistinctKind::Fingerprint), 2);
    assert_eq!(agg.distinct_count(DistinctKind::ClientIp), 2);
    assert_eq!(agg.distinct_count(DistinctKind::Deployment), 1);
    assert_eq!(agg.distinct_count(DistinctKind::Country), 1);
    assert_eq!(top_count(&agg, DistinctKind::Fingerprint, "fp-a"), Some(2));
    assert_eq!(agg.distinct[&DistinctKind::Fingerprint].top[0].value, "fp-a", "most frequent first");
    assert_eq!((agg.first_seen, agg.last_seen), (at(1), at(3)));
    let next_day = store.validation_day_aggregate(&lic, day().succ_opt().expect("day")).await.expect("read");
    assert_eq!(next_day.expect("exists").validations(), 1);
    let other = store.validation_day_aggregate("lic-other", day()).await.expect("read").expect("exists");
    assert_eq!(other.validations(), 1);
    assert!(store.validation_day_aggregate("lic-none", day()).await.expect("read").is_none());
}

/// Eight writers, each sending its own batch twice at once: every batch counts once, and
/// values shared by all writers are counted (and kept) once.
pub(super) async fn concurrent_validation_event_writers_add_up(store: Arc<dyn Store>) {
    let lic = new_id("lic");
    let writers = 8;
    let batches: Vec<ValidationEventBatch> = (0..writers)
        .map(|w| {
            batch(
                (0..10)
                    .map(|i| {
                        // Half the fingerprints are shared by every writer, half are its own.
                        let fp = if i % 2 == 0 { format!("shared-{i}") } else { format!("own-{w}-{i}") };
                        event(&lic, &fp, &format!("10.1.{w}.1"), "VALID", at(1 + i))
                    })
                    .collect(),
            )
        })
        .collect();
    let tasks: Vec<_> = batches
        .iter()
        .flat_map(|b| [b.clone(), b.clone()])
        .map(|b| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.record_validation_events(&b).await })
        })
        .collect();
    let mut recorded = 0;
    for t in tasks {
        if t.await.expect("task").expect("record") == BatchOutcome::Recorded {
            recorded += 1;
        }
    }
    assert_eq!(recorded, writers, "each batch once");
    let agg = store.validation_day_aggregate(&lic, day()).await.expect("read").expect("exists");
    assert_eq!(agg.by_code.get("VALID"), Some(&(10 * writers as u64)));
    assert_eq!(agg.distinct_count(DistinctKind::Fingerprint), 5 + 5 * writers as u64);
    assert_eq!(agg.distinct_count(DistinctKind::ClientIp), writers as u64);
    assert_eq!(agg.distinct_count(DistinctKind::Deployment), 1);
    assert_eq!(top_count(&agg, DistinctKind::Fingerprint, "shared-0"), Some(writers as u64));
    assert_eq!(top_count(&agg, DistinctKind::Deployment, "dep-1"), Some(10 * writers as u64));
}

/// An edge's outbox may deliver an older batch after a newer one: the day's and each value's
/// first and last sightings are the earliest and latest of every batch, whatever the order.
pub(super) async fn late_batches_widen_first_and_last_seen(store: Arc<dyn Store>) {
    let lic = new_id("lic");
    let newer = batch(vec![
        event(&lic, "fp-a", "10.3.0.1", "VALID", at(5)),
        event(&lic, "fp-a", "10.3.0.1", "VALID", at(6)),
    ]);
    let older = batch(vec![
        event(&lic, "fp-a", "10.3.0.1", "VALID", at(1)),
        event(&lic, "fp-a", "10.3.0.2", "VALID", at(2)),
    ]);
    for b in [&newer, &older] {
        assert_eq!(store.record_validation_events(b).await.expect("record"), BatchOutcome::Recorded);
    }
    let agg = store.validation_day_aggregate(&lic, day()).await.expect("read").expect("exists");
    assert_eq!((agg.first_seen, agg.last_seen), (at(1), at(6)), "the day");
    let fp = &agg.distinct[&DistinctKind::Fingerprint].top[0];
    assert_eq!((fp.value.as_str(), fp.count, fp.first_seen, fp.last_seen), ("fp-a", 4, at(1), at(6)));
    let ips = &agg.distinct[&DistinctKind::ClientIp].top;
    let first_ip = ips.iter().find(|v| v.value == "10.3.0.1").expect("kept");
    assert_eq!((first_ip.count, first_ip.first_seen, first_ip.last_seen), (3, at(1), at(6)));
}

/// More distinct values than the bound, from concurrent writers: exactly the bound is kept and
/// the rest is counted as untracked events; the code counters stay exact.
pub(super) async fn distinct_values_are_bounded(store: Arc<dyn Store>) {
    let lic = new_id("lic");
    let total = DISTINCT_VALUES_KEPT as usize + 50;
    let events: Vec<ValidationEvent> =
        (0..total).map(|i| event(&lic, &format!("fp-{i:05}"), "10.2.0.1", "VALID", at(1))).collect();
    let tasks: Vec<_> = events
        .chunks(MAX_EVENTS_PER_BATCH)
        .map(|chunk| {
            let store = Arc::clone(&store);
            let b = batch(chunk.to_vec());
            tokio::spawn(async move { store.record_validation_events(&b).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("record"), BatchOutcome::Recorded);
    }
    let agg = store.validation_day_aggregate(&lic, day()).await.expect("read").expect("exists");
    let fingerprints = &agg.distinct[&DistinctKind::Fingerprint];
    assert_eq!(fingerprints.distinct, DISTINCT_VALUES_KEPT);
    assert_eq!(fingerprints.untracked, 50);
    assert_eq!(agg.by_code.get("VALID"), Some(&(total as u64)));
    assert_eq!(agg.distinct_count(DistinctKind::ClientIp), 1);
}

fn record(license: &str, d: NaiveDate, flagged: bool) -> ComplianceRecord {
    let evidence = ValidationDayAggregate {
        license_id: license.to_owned(),
        day: d,
        by_code: [("VALID".to_owned(), 7)].into(),
        distinct: [(DistinctKind::ClientIp, DistinctValues { distinct: 9, untracked: 0, top: Vec::new() })]
            .into(),
        first_seen: at(1),
        last_seen: at(2),
    };
    let flags = if flagged {
        vec![ComplianceFlag { kind: ComplianceFlagKind::TooManyClientIps, observed: 9, threshold: 3 }]
    } else {
        Vec::new()
    };
    ComplianceRecord { license_id: license.to_owned(), day: d, flags, evidence, evaluated_at: at(3) }
}

pub(super) async fn compliance_records_by_license_and_flagged(store: Arc<dyn Store>) {
    let d = |n: u32| NaiveDate::from_ymd_opt(2026, 11, n).expect("day");
    let (a, b) = (new_id("lic_a"), new_id("lic_b"));
    for r in
        [record(&a, d(10), true), record(&a, d(12), false), record(&a, d(14), true), record(&b, d(14), true)]
    {
        store.put_compliance_record(&r).await.expect("put");
    }
    let days = |rs: Vec<ComplianceRecord>| rs.into_iter().map(|r| (r.license_id, r.day)).collect::<Vec<_>>();
    let own = store.list_compliance_records(&a, d(11)).await.expect("list");
    assert_eq!(own[0], record(&a, d(14), true), "round trip");
    assert_eq!(days(own), vec![(a.clone(), d(14)), (a.clone(), d(12))], "newest first, from `since`");
    let (first, second) = if a < b { (&a, &b) } else { (&b, &a) };
    let flagged = store.list_flagged_compliance(d(1), d(30), 10).await.expect("flagged");
    assert_eq!(
        days(flagged),
        vec![(first.clone(), d(14)), (second.clone(), d(14)), (a.clone(), d(10))],
        "flagged only, newest day first, then license id"
    );
    assert_eq!(store.list_flagged_compliance(d(11), d(13), 10).await.expect("range").len(), 0);
    assert_eq!(store.list_flagged_compliance(d(1), d(30), 1).await.expect("limit").len(), 1);
    // A record replaced by an unflagged one leaves the fleet list.
    store.put_compliance_record(&record(&b, d(14), false)).await.expect("unflag");
    assert_eq!(
        days(store.list_flagged_compliance(d(14), d(14), 10).await.expect("after")),
        vec![(a.clone(), d(14))]
    );
}

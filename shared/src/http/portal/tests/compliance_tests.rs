//! The compliance flags on the license page and the dashboard: a flagged day is shown with its
//! evidence to any staff role, an unflagged one is not listed, and neither page offers an
//! action on it.

use super::*;

use std::collections::BTreeMap;

use crate::model::Timestamp;
use crate::ports::ValidationStatsStore;
use crate::validation_stats::{
    ComplianceFlag, ComplianceFlagKind, ComplianceRecord, DistinctKind, DistinctValues,
    ValidationDayAggregate, ValueSeen,
};

fn seen(value: &str, count: u64, first: Timestamp, last: Timestamp) -> ValueSeen {
    ValueSeen { value: value.to_owned(), count, first_seen: first, last_seen: last }
}

fn record(license_id: &str, day: Timestamp, flags: Vec<ComplianceFlag>) -> ComplianceRecord {
    let first = day - Duration::hours(5);
    let last = day - Duration::minutes(3);
    let mut distinct = BTreeMap::new();
    distinct.insert(
        DistinctKind::ClientIp,
        DistinctValues::from_values(
            vec![seen("203.0.113.7", 40, first, last), seen("198.51.100.23", 2, first, first)],
            0,
        ),
    );
    distinct.insert(
        DistinctKind::Fingerprint,
        DistinctValues { distinct: 1000, untracked: 12, top: vec![seen("fp-shared-host", 30, first, last)] },
    );
    ComplianceRecord {
        license_id: license_id.to_owned(),
        day: day.date_naive(),
        flags,
        evidence: ValidationDayAggregate {
            license_id: license_id.to_owned(),
            day: day.date_naive(),
            by_code: [("VALID".to_owned(), 42), ("TOO_MANY_DEPLOYMENTS".to_owned(), 4)].into(),
            distinct,
            first_seen: first,
            last_seen: last,
        },
        evaluated_at: day,
    }
}

#[tokio::test]
async fn flags_show_with_their_evidence_on_the_license_page_and_the_dashboard() {
    let p = portal();
    p.staff("ann@nectar.example", StaffRole::Admin).await;
    p.staff("vic@nectar.example", StaffRole::Viewer).await;
    let admin = p.session("ann@nectar.example").await;
    let viewer = p.session("vic@nectar.example").await;
    let (id, _key) = p.license_via_wizard(&admin, "Acme").await;

    // Before any flag: both pages say so.
    let page = p.get(&format!("/admin/licenses/{id}"), &viewer).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("No flags in the last 30 days."), "{}", page.body);
    let dashboard = p.get("/admin/", &viewer).await;
    assert!(dashboard.body.contains("No license flagged in the last 7 days."), "{}", dashboard.body);

    let now = p.clock.now();
    let flags = vec![
        ComplianceFlag { kind: ComplianceFlagKind::TooManyFingerprints, observed: 1000, threshold: 3 },
        ComplianceFlag { kind: ComplianceFlagKind::RepeatedTooManyDeployments, observed: 4, threshold: 3 },
    ];
    p.store.put_compliance_record(&record(&id, now, flags)).await.unwrap();
    // An unflagged day of another license is evidence only: not listed.
    p.store.put_compliance_record(&record("lic_quiet", now, Vec::new())).await.unwrap();

    let page = p.get(&format!("/admin/licenses/{id}"), &viewer).await;
    assert_eq!(page.status, StatusCode::OK);
    let body = &page.body;
    let section = &body[body.find("id=\"compliance\"").expect("the compliance section")..];
    let section = &section[..section.find("Emails sent").unwrap_or(section.len())];
    let day = now.format("%Y-%m-%d").to_string();
    for expected in [
        "<h2 id=\"compliance-heading\">Compliance flags</h2>",
        &format!("<caption>Flags on {day}</caption>"),
        "<th scope=\"col\">Flag</th><th scope=\"col\">Observed</th><th scope=\"col\">Threshold</th>",
        "<td>More machine fingerprints than seats allow</td><td>1000</td><td>3</td>",
        "<td>Repeated TOO_MANY_DEPLOYMENTS refusals</td><td>4</td><td>3</td>",
        "at least 1000",
        "<code>VALID=42</code>",
        "<td>Client IP</td><td class=\"mono\">203.0.113.7</td><td>40</td>",
        "<td class=\"mono\">198.51.100.23</td>",
        "<td>Fingerprint</td><td class=\"mono\">fp-shared-host</td><td>30</td>",
        &format!("<dt>First seen</dt><dd>{}</dd>", (now - Duration::hours(5)).format("%Y-%m-%d %H:%M UTC")),
        &format!("<dt>Last seen</dt><dd>{}</dd>", (now - Duration::minutes(3)).format("%Y-%m-%d %H:%M UTC")),
        "never suspends",
    ] {
        assert!(section.contains(expected), "missing {expected:?} in {section}");
    }
    assert!(!section.contains("<form") && !section.contains("<button"), "information only: {section}");
    assert!(!section.contains("No flags in the last"), "{section}");

    let dashboard = p.get("/admin/", &viewer).await;
    assert_eq!(dashboard.status, StatusCode::OK);
    let table = &dashboard.body[dashboard.body.find("id=\"flagged-licenses\"").expect("the flagged list")..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(table.contains(&format!("href=\"/admin/licenses/{id}#compliance\"")), "{table}");
    assert!(table.contains(&format!("<td>{day}</td>")), "{table}");
    assert!(
        table.contains("More machine fingerprints than seats allow; Repeated TOO_MANY_DEPLOYMENTS refusals"),
        "{table}"
    );
    assert!(table.contains("<th scope=\"col\">License</th>"), "{table}");
    assert!(!table.contains("lic_quiet"), "an unflagged day is not listed: {table}");
    assert!(!dashboard.body.contains("No license flagged"), "{}", dashboard.body);
}

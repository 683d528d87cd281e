//! `DynamoStore::add_license_sort_keys` on moto: a license item written before the portal's
//! sort indexes (no `license_*_sk` keys) is missing from the sorted list until the backfill
//! adds its keys; a second run changes nothing.

mod moto_support;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{TimeZone, Utc};
use nls_core::issuing::new_license;
use nls_core::license_search::LicenseQuery;
use nls_core::model::Customer;
use nls_core::ports::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_license_items_join_the_sorted_list_once_backfilled() {
    let t = moto_support::fresh_table().await;
    let now = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
    let customer = Customer {
        id: "cus_old".into(),
        name: "Old Timer".into(),
        email: "old@example.com".into(),
        stripe_customer_id: None,
        reminders_opt_out: false,
        created_at: now,
        updated_at: now,
    };
    let old = new_license(&customer.id, Default::default(), now);
    let recent = new_license(&customer.id, Default::default(), now);
    t.store
        .commit(
            None,
            vec![
                Write::CreateCustomer(customer),
                Write::CreateLicense(old.clone()),
                Write::CreateLicense(recent.clone()),
            ],
        )
        .await
        .unwrap();
    // GIVEN an item as an older build wrote it: without the sort keys.
    t.store
        .client()
        .update_item()
        .table_name(&t.table)
        .key("pk", AttributeValue::S(format!("LICENSE#{}", old.id)))
        .key("sk", AttributeValue::S("LICENSE".into()))
        .update_expression("REMOVE license_created_sk, license_expiry_sk, license_customer_sk")
        .send()
        .await
        .unwrap();
    let listed =
        |page: Page<nls_core::model::License>| page.items.into_iter().map(|l| l.id).collect::<Vec<_>>();
    let all = PageRequest::first(10);
    let before = listed(t.store.search_licenses(&LicenseQuery::default(), &all).await.unwrap());
    assert_eq!(before, vec![recent.id.clone()], "the old item is missing from the sorted list");

    // WHEN the backfill runs THEN the old license is listed too, and a rerun is a no-op.
    assert_eq!(t.store.add_license_sort_keys().await.unwrap(), 1);
    let mut both = listed(t.store.search_licenses(&LicenseQuery::default(), &all).await.unwrap());
    both.sort();
    let mut want = vec![old.id.clone(), recent.id.clone()];
    want.sort();
    assert_eq!(both, want);
    assert_eq!(t.store.add_license_sort_keys().await.unwrap(), 0);
    assert_eq!(t.store.get_license(&old.id).await.unwrap().unwrap(), old, "the record itself is unchanged");
}

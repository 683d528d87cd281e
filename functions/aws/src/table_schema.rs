//! Creating the table: keys, the GSIs and TTL, as docs/dynamodb.md and template.yaml
//! describe them. For local use and tests; in AWS the SAM template owns the table.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use nls_core::ports::{StoreError, StoreResult};

use crate::store_errors::{build_error, sdk_error};
use crate::table_keys::*;

/// (index name, partition key attribute, sort key attribute)
pub const GLOBAL_SECONDARY_INDEXES: [(&str, &str, &str); 7] = [
    (GSI_BY_KIND, KIND_PK, KIND_SK),
    (GSI_BY_CUSTOMER, CUSTOMER_PK, CUSTOMER_SK),
    (GSI_BY_STRIPE, STRIPE_PK, STRIPE_SK),
    (GSI_BY_EXPIRY_DAY, EXPIRY_PK, EXPIRY_SK),
    (GSI_LICENSES_BY_CREATED, KIND_PK, LICENSE_CREATED_SK),
    (GSI_LICENSES_BY_EXPIRY, KIND_PK, LICENSE_EXPIRY_SK),
    (GSI_LICENSES_BY_CUSTOMER_ORDER, KIND_PK, LICENSE_CUSTOMER_SK),
];

fn key(attribute: &str, key_type: KeyType) -> StoreResult<KeySchemaElement> {
    KeySchemaElement::builder().attribute_name(attribute).key_type(key_type).build().map_err(build_error)
}

fn string_attribute(attribute: &str) -> StoreResult<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(attribute)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(build_error)
}

/// Creates `table_name` (on-demand billing, GSIs with all attributes projected), waits until
/// it is active and enables TTL. `AlreadyExists` if the table is there.
pub async fn create_table(client: &Client, table_name: &str) -> StoreResult<()> {
    let mut attributes = vec![string_attribute(PK)?, string_attribute(SK)?];
    let mut indexes = Vec::new();
    for (index, pk, sk) in GLOBAL_SECONDARY_INDEXES {
        // Indexes share `kind_pk`: each attribute is defined once.
        for attribute in [pk, sk] {
            if !attributes.iter().any(|a| a.attribute_name() == attribute) {
                attributes.push(string_attribute(attribute)?);
            }
        }
        indexes.push(
            GlobalSecondaryIndex::builder()
                .index_name(index)
                .key_schema(key(pk, KeyType::Hash)?)
                .key_schema(key(sk, KeyType::Range)?)
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .map_err(build_error)?,
        );
    }
    let created = client
        .create_table()
        .table_name(table_name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .set_attribute_definitions(Some(attributes))
        .set_global_secondary_indexes(Some(indexes))
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(SdkError::ServiceError(service))
            if matches!(service.err(), CreateTableError::ResourceInUseException(_)) =>
        {
            return Err(StoreError::AlreadyExists(format!("table {table_name}")));
        }
        Err(err) => return Err(sdk_error("CreateTable", err)),
    }
    wait_until_active(client, table_name).await?;
    client
        .update_time_to_live()
        .table_name(table_name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(TTL_ATTRIBUTE)
                .enabled(true)
                .build()
                .map_err(build_error)?,
        )
        .send()
        .await
        .map_err(|e| sdk_error("UpdateTimeToLive", e))?;
    Ok(())
}

async fn wait_until_active(client: &Client, table_name: &str) -> StoreResult<()> {
    for _ in 0..120 {
        let described = client
            .describe_table()
            .table_name(table_name)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeTable", e))?;
        if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(StoreError::Unavailable(format!("table {table_name} did not become active within a minute")))
}

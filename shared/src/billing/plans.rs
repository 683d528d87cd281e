//! The plan catalogue: which tier, features, limits and seats a Stripe price buys.
//!
//! The adapter reads the file named by `NLS_PLANS_FILE`; the core only parses its text:
//! `{"plans":[{"stripe_price":"price_...","tier":"pro","features":[...],"limits":{"metric":N},"max_deployments":N,"amount":4900,"currency":"eur"}]}`
//! (`amount`, the monthly price in minor units, and `currency` are optional and go together).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One plan: what a license on this Stripe price carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub stripe_price: String,
    pub tier: String,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
    /// Absent means unlimited.
    #[serde(default)]
    pub max_deployments: Option<u32>,
    /// The container images a license of this plan may pull (docs/distribution.md).
    #[serde(default)]
    pub registry: Option<crate::registry_token::RegistryGrant>,
    /// The monthly price in minor units (cents), for the portal's recurring revenue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
    /// ISO 4217 code, lower or upper case (`eur`, `USD`); needed with `amount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The cloud services a license of this plan may call, and its limits at each
    /// (docs/cloud-access.md).
    #[serde(default)]
    pub cloud: Option<crate::access_token::CloudGrant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    plans: Vec<Plan>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanCatalogueError {
    #[error("the plan catalogue is not valid JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the plan catalogue lists price {0:?} twice")]
    DuplicatePrice(String),
    #[error("a plan in the catalogue has an empty {0}")]
    Empty(&'static str),
    #[error("plan {0:?}: {1}")]
    Registry(String, crate::registry_token::GrantError),
    #[error("plan {0:?}: `amount` needs a three-letter `currency`, and `currency` an `amount`")]
    Price(String),
    #[error("plan {0:?}: cloud: {1}")]
    Cloud(String, crate::access_token::CloudGrantError),
}

/// Stripe price id → plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanCatalogue {
    by_price: BTreeMap<String, Plan>,
}

impl PlanCatalogue {
    pub fn parse(json: &str) -> Result<Self, PlanCatalogueError> {
        let file: CatalogueFile = serde_json::from_str(json)?;
        Self::from_plans(file.plans)
    }

    pub fn from_plans(plans: Vec<Plan>) -> Result<Self, PlanCatalogueError> {
        let mut by_price = BTreeMap::new();
        for plan in plans {
            if plan.stripe_price.trim().is_empty() {
                return Err(PlanCatalogueError::Empty("stripe_price"));
            }
            if plan.tier.trim().is_empty() {
                return Err(PlanCatalogueError::Empty("tier"));
            }
            if let Some(grant) = &plan.registry {
                grant.check().map_err(|e| PlanCatalogueError::Registry(plan.stripe_price.clone(), e))?;
            }
            let currency_ok = |c: &String| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic());
            if plan.amount.is_some() != plan.currency.is_some()
                || plan.currency.as_ref().is_some_and(|c| !currency_ok(c))
            {
                return Err(PlanCatalogueError::Price(plan.stripe_price));
            }
            if let Some(cloud) = &plan.cloud {
                crate::access_token::check_cloud_grant(cloud)
                    .map_err(|e| PlanCatalogueError::Cloud(plan.stripe_price.clone(), e))?;
            }
            if by_price.contains_key(&plan.stripe_price) {
                return Err(PlanCatalogueError::DuplicatePrice(plan.stripe_price));
            }
            by_price.insert(plan.stripe_price.clone(), plan);
        }
        Ok(Self { by_price })
    }

    pub fn plan_for_price(&self, stripe_price: &str) -> Option<&Plan> {
        self.by_price.get(stripe_price)
    }

    pub fn plans(&self) -> impl Iterator<Item = &Plan> {
        self.by_price.values()
    }

    pub fn is_empty(&self) -> bool {
        self.by_price.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalogue_parses_and_looks_up_by_price() {
        let catalogue = PlanCatalogue::parse(
            r#"{"plans":[
                {"stripe_price":"price_basic","tier":"basic","features":["sso"],"limits":{"api_calls":1000},"max_deployments":2,
                 "registry":{"repositories":["nectar/app","nectar/worker-*"],"actions":["pull"]},
                 "cloud":{"workflows":{"requests_per_minute":600,"burst":50,"monthly_quota":100000}}},
                {"stripe_price":"price_ent","tier":"enterprise","amount":49900,"currency":"eur"}
            ]}"#,
        )
        .expect("valid catalogue");
        let basic = catalogue.plan_for_price("price_basic").expect("basic");
        assert_eq!(basic.tier, "basic");
        assert_eq!(basic.limits.get("api_calls"), Some(&1000));
        assert_eq!(basic.max_deployments, Some(2));
        let registry = basic.registry.as_ref().expect("a registry grant");
        assert_eq!(registry.repositories, ["nectar/app", "nectar/worker-*"]);
        let cloud = basic.cloud.as_ref().expect("a cloud grant");
        assert_eq!(
            cloud.get("workflows"),
            Some(&crate::access_token::CloudLimits {
                requests_per_minute: 600,
                burst: 50,
                monthly_quota: Some(100_000)
            })
        );
        let ent = catalogue.plan_for_price("price_ent").expect("enterprise");
        assert_eq!(ent.cloud, None);
        assert_eq!(ent.max_deployments, None);
        assert!(ent.features.is_empty());
        assert_eq!(ent.registry, None);
        assert_eq!((ent.amount, ent.currency.as_deref()), (Some(49900), Some("eur")));
        assert_eq!(basic.amount, None);
        assert!(catalogue.plan_for_price("price_unknown").is_none());
    }

    #[test]
    fn bad_catalogues_are_refused() {
        for bad in [
            "",
            "{}",
            r#"{"plans":[{"tier":"x"}]}"#,
            r#"{"plans":[{"stripe_price":"p","tier":"x","max_deployments":-1}]}"#,
            r#"{"plans":[{"stripe_price":"p","tier":"x","seats":3}]}"#,
            r#"{"plans":[{"stripe_price":"","tier":"x"}]}"#,
            r#"{"plans":[{"stripe_price":"p","tier":"x"},{"stripe_price":"p","tier":"y"}]}"#,
            r#"{"plans":[{"stripe_price":"p","tier":"x","registry":{"repositories":["a"],"actions":["push"]}}]}"#,
            r#"{"plans":[{"stripe_price":"p","tier":"x","registry":{"repositories":["A B"]}}]}"#,
            r#"{"plans":[{"stripe_price":"p","tier":"x","registry":{"repos":["a"]}}]}"#,
            r#"{"plans":[{"stripe_price":"p","tier":"x","amount":100}]}"#,
            r#"{"plans":[{"stripe_price":"p","tier":"x","currency":"eur"}]}"#,
            r#"{"plans":[{"stripe_price":"p","tier":"x","amount":100,"currency":"euro"}]}"#,
            r#"{"plans":[{"stripe_price":"p","tier":"x","amount":-1,"currency":"eur"}]}"#,
            r#"{"plans":[{"stripe_price":"p","tier":"x","cloud":{"Bad Name":{"requests_per_minute":1,"burst":1}}}]}"#,
            r#"{"plans":[{"stripe_price":"p","tier":"x","cloud":{"w":{"requests_per_minute":0,"burst":1}}}]}"#,
            r#"{"plans":[{"stripe_price":"p","tier":"x","cloud":{"w":{"requests_per_minute":1}}}]}"#,
        ] {
            assert!(PlanCatalogue::parse(bad).is_err(), "{bad}");
        }
    }
}

//! The canary's metrics as a CloudWatch Embedded Metric Format line on stdout: CloudWatch
//! Logs turns it into `NLS/Canary` metrics, with no SDK call and no `PutMetricData` permission.
//! Dimension `Stage`, so each deployment alarms on its own series (template.yaml).

use serde_json::json;

use crate::canary_check::CanaryOutcome;

pub const NAMESPACE: &str = "NLS/Canary";
/// 1 when the run passed, 0 when it failed: the alarm watches its minimum.
pub const SUCCESS_METRIC: &str = "CanarySuccess";
pub const LATENCY_METRIC: &str = "CanaryLatency";

/// One EMF document (a single JSON line) for `outcome`, at `timestamp_ms` (Unix ms).
pub fn emf_line(stage: &str, outcome: &CanaryOutcome, timestamp_ms: i64) -> String {
    let mut document = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Stage"]],
                "Metrics": [
                    {"Name": SUCCESS_METRIC, "Unit": "Count"},
                    {"Name": LATENCY_METRIC, "Unit": "Milliseconds"},
                ],
            }],
        },
        "Stage": stage,
        SUCCESS_METRIC: u8::from(outcome.passed),
        LATENCY_METRIC: outcome.latency_ms,
        "event": "canary_run",
    });
    if let Some(failure) = &outcome.failure {
        document["failure"] = json!(failure);
    }
    document.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_an_emf_document_with_both_metrics() {
        let failed = CanaryOutcome { passed: false, latency_ms: 42, failure: Some("HTTP 503".into()) };
        let line: serde_json::Value =
            serde_json::from_str(&emf_line("prod", &failed, 1_700_000_000_000)).unwrap();
        assert!(!emf_line("prod", &failed, 0).contains('\n'), "one line");
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["Stage"]]));
        let names: Vec<&str> =
            directive["Metrics"].as_array().unwrap().iter().map(|m| m["Name"].as_str().unwrap()).collect();
        assert_eq!(names, [SUCCESS_METRIC, LATENCY_METRIC]);
        // Every metric and dimension named in the directive is a member of the document.
        assert_eq!(line["Stage"], "prod");
        assert_eq!(line[SUCCESS_METRIC], 0);
        assert_eq!(line[LATENCY_METRIC], 42);
        assert_eq!(line["failure"], "HTTP 503");
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000i64);
        let passed = CanaryOutcome { passed: true, latency_ms: 7, failure: None };
        let line: serde_json::Value = serde_json::from_str(&emf_line("prod", &passed, 0)).unwrap();
        assert_eq!(line[SUCCESS_METRIC], 1);
        assert!(line.get("failure").is_none());
    }
}

//! JSON Schemas generated from the Rust types (schemars), checked into `schemas/`.
//!
//! `tests/schemas.rs` fails when a checked-in schema differs from what [`generate`] produces, and
//! rewrites them with `LOOPD_UPDATE_SCHEMAS=1`. Adding a schema is one line in [`generate`].

use serde_json::Value;

pub use crate::config::schema_of;

/// Every generated schema: `(file name under schemas/, schema)`.
pub fn generate() -> Vec<(&'static str, Value)> {
    let mut all = crate::config::input_schemas();
    all.extend([
        ("status.schema.json", schema_of::<crate::view::StatusDoc>()),
        (
            "summary.schema.json",
            schema_of::<crate::view::SummaryDoc>(),
        ),
        (
            "attempt_page.schema.json",
            schema_of::<crate::view::AttemptPage>(),
        ),
        (
            "attempts.schema.json",
            schema_of::<crate::view::AttemptsDoc>(),
        ),
        ("export.schema.json", schema_of::<crate::view::ExportDoc>()),
        ("detail.schema.json", schema_of::<crate::view::LoopDetail>()),
        (
            "insights.schema.json",
            schema_of::<crate::view::InsightsDoc>(),
        ),
        ("report.schema.json", schema_of::<crate::view::ReportDoc>()),
    ]);
    all
}

/// The schema named `file` in [`generate`], if there is one.
pub fn by_name(file: &str) -> Option<Value> {
    generate()
        .into_iter()
        .find(|(name, _)| *name == file)
        .map(|(_, schema)| schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_is_a_valid_json_schema() {
        for (name, schema) in generate() {
            assert!(
                jsonschema::validator_for(&schema).is_ok(),
                "{name} does not compile"
            );
        }
    }

    #[test]
    fn fleet_schema_refuses_unknown_keys() {
        let schema = by_name("fleet.schema.json").unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let bad = serde_json::json!({"fleet": {"max_concurent_agents": 2}});
        assert!(!validator.is_valid(&bad));
        let good = serde_json::json!({"fleet": {"max_concurrent_agents": 2}});
        assert!(validator.is_valid(&good));
    }
}

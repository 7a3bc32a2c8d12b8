//! The JSON Schemas of loopd's inputs (the fleet file, a loop, the tests file), which validation
//! checks them against. Generated here, beside the types, so that validating input needs no
//! module above the records (`crate::schema` adds the API's output schemas for `schemas/`).

use schemars::JsonSchema;
use serde_json::Value;

use super::{FleetFile, LoopConfig};
use crate::tests_file::TestsFile;

/// The input schemas: `(file name under schemas/, schema)`.
pub fn input_schemas() -> Vec<(&'static str, Value)> {
    vec![
        ("fleet.schema.json", schema_of::<FleetFile>()),
        ("loop.schema.json", schema_of::<LoopConfig>()),
        ("tests.schema.json", schema_of::<TestsFile>()),
    ]
}

/// The JSON Schema (draft 2020-12) of `T`.
pub fn schema_of<T: JsonSchema>() -> Value {
    schemars::schema_for!(T).to_value()
}

/// The input schema named `file`, if there is one.
pub fn by_name(file: &str) -> Option<Value> {
    input_schemas()
        .into_iter()
        .find(|(name, _)| *name == file)
        .map(|(_, schema)| schema)
}

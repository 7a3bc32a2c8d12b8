//! Adjustments to the generated schemas where serde attributes carry meaning schemars cannot see.

use schemars::Schema;
use serde_json::{json, Value};

/// `tests_file` may be written `test_state_file` (the prototype's name, a serde alias): the schema
/// accepts either key and requires one of them.
pub(crate) fn accept_tests_file_alias(schema: &mut Schema) {
    let obj = schema.ensure_object();
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        if let Some(tests_file) = props.get("tests_file").cloned() {
            let mut alias = tests_file;
            if let Value::Object(a) = &mut alias {
                a.insert(
                    "description".into(),
                    json!("Alias of `tests_file` (the prototype's name)."),
                );
                a.insert("deprecated".into(), json!(true));
            }
            props.insert("test_state_file".into(), alias);
        }
    }
    if let Some(Value::Array(required)) = obj.get_mut("required") {
        required.retain(|k| k != "tests_file");
    }
    obj.insert(
        "anyOf".into(),
        json!([{"required": ["tests_file"]}, {"required": ["test_state_file"]}]),
    );
}

//! Checking frames against the official OCPP 1.6 JSON schemas (draft-04), for tests.
//!
//! The schemas are not part of this repository: [`Schemas::load`] reads them from a
//! directory at test time — the one the PyPI `ocpp` package installs
//! (`ocpp/v16/schemas`), which `cargo xtask test` provides and names in
//! `EVSOURCE_OCPP_SCHEMAS`. The validator implements the draft-04 keywords those schemas
//! use, and refuses a schema with any other keyword rather than pass it silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use super::frame::Frame;

/// The environment variable naming the schema directory.
pub const SCHEMAS_VAR: &str = "EVSOURCE_OCPP_SCHEMAS";

/// Keywords that only annotate.
const ANNOTATIONS: [&str; 6] = ["$schema", "$id", "id", "title", "description", "javaType"];

/// The OCPP 1.6 schemas, by message name (`BootNotification`, `BootNotificationResponse`).
#[derive(Debug)]
pub struct Schemas {
    dir: PathBuf,
    by_name: BTreeMap<String, Value>,
}

/// A frame that does not conform, or a schema that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot read the schemas in {dir}: {reason}")]
    Load { dir: String, reason: String },
    #[error("no schema {name} in {dir}")]
    Missing { name: String, dir: String },
    #[error("{schema}: {path}: {reason}")]
    Violation {
        schema: String,
        path: String,
        reason: String,
    },
}

impl Schemas {
    /// Reads every `*.json` in `dir`.
    pub fn load(dir: &Path) -> Result<Schemas, SchemaError> {
        let failed = |reason: String| SchemaError::Load {
            dir: dir.display().to_string(),
            reason,
        };
        let entries = std::fs::read_dir(dir).map_err(|e| failed(e.to_string()))?;
        let mut by_name = BTreeMap::new();
        for entry in entries {
            let path = entry.map_err(|e| failed(e.to_string()))?.path();
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| failed(e.to_string()))?;
            let schema: Value = serde_json::from_str(&text)
                .map_err(|e| failed(format!("{}: {e}", path.display())))?;
            by_name.insert(name.to_owned(), schema);
        }
        if by_name.is_empty() {
            return Err(failed("no *.json files".into()));
        }
        Ok(Schemas {
            dir: dir.to_owned(),
            by_name,
        })
    }

    /// The schemas named by [`SCHEMAS_VAR`], loaded once per process; `None` when the
    /// variable is not set. Panics if it is set and the schemas do not load: a test
    /// run asked for conformance checks must not quietly skip them.
    pub fn from_env() -> Option<&'static Schemas> {
        static LOADED: OnceLock<Option<Schemas>> = OnceLock::new();
        LOADED
            .get_or_init(|| {
                let dir = std::env::var_os(SCHEMAS_VAR)?;
                Some(
                    Schemas::load(Path::new(&dir)).unwrap_or_else(|e| panic!("{SCHEMAS_VAR}: {e}")),
                )
            })
            .as_ref()
    }

    /// Checks `payload` against the schema `name`.
    pub fn check(&self, name: &str, payload: &Value) -> Result<(), SchemaError> {
        let schema = self.by_name.get(name).ok_or_else(|| SchemaError::Missing {
            name: name.to_owned(),
            dir: self.dir.display().to_string(),
        })?;
        validate(schema, schema, payload, "$").map_err(|(path, reason)| SchemaError::Violation {
            schema: name.to_owned(),
            path,
            reason,
        })
    }

    /// Checks a frame the CSMS sent. `answered_action` is the action of the station's
    /// CALL a CALLRESULT answers. A CALLERROR has no payload schema; its code was
    /// checked when it parsed.
    pub fn check_frame(
        &self,
        text: &str,
        answered_action: Option<&str>,
    ) -> Result<(), SchemaError> {
        let violation = |reason: String| SchemaError::Violation {
            schema: "OCPP-J frame".into(),
            path: "$".into(),
            reason,
        };
        match Frame::parse(text).map_err(|e| violation(e.to_string()))? {
            Frame::Call {
                action, payload, ..
            } => self.check(&action, &payload),
            Frame::CallResult { payload, .. } => match answered_action {
                Some(action) => self.check(&format!("{action}Response"), &payload),
                None => Err(violation("a CALLRESULT that answers no CALL".into())),
            },
            Frame::CallError { .. } => Ok(()),
        }
    }
}

type Invalid = (String, String);

fn validate(schema: &Value, root: &Value, value: &Value, path: &str) -> Result<(), Invalid> {
    let Value::Object(keywords) = schema else {
        return Err((
            path.into(),
            format!("a schema must be an object, not {schema}"),
        ));
    };
    let fail = |reason: String| Err((path.to_owned(), reason));
    for (keyword, argument) in keywords {
        match keyword.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "definitions" => {}
            "$ref" => {
                let target = argument
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/definitions/"))
                    .and_then(|name| root.get("definitions")?.get(name));
                match target {
                    Some(target) => validate(target, root, value, path)?,
                    None => return fail(format!("unresolvable $ref {argument}")),
                }
            }
            "type" => {
                let matches = |name: &str| match name {
                    "object" => value.is_object(),
                    "array" => value.is_array(),
                    "string" => value.is_string(),
                    "boolean" => value.is_boolean(),
                    "null" => value.is_null(),
                    "number" => value.is_number(),
                    "integer" => {
                        value.is_i64()
                            || value.is_u64()
                            || value.as_f64().is_some_and(|f| f.fract() == 0.0)
                    }
                    _ => false,
                };
                let ok = match argument {
                    Value::String(name) => matches(name),
                    Value::Array(names) => names.iter().filter_map(Value::as_str).any(matches),
                    _ => false,
                };
                if !ok {
                    return fail(format!("{value} is not of type {argument}"));
                }
            }
            "enum" => {
                let allowed = argument.as_array().is_some_and(|a| a.contains(value));
                if !allowed {
                    return fail(format!("{value} is not one of {argument}"));
                }
            }
            "maxLength" => {
                let limit = argument.as_u64().unwrap_or(0) as usize;
                if let Some(text) = value.as_str()
                    && text.chars().count() > limit
                {
                    return fail(format!(
                        "{} characters, more than {limit}",
                        text.chars().count()
                    ));
                }
            }
            "format" => {
                if argument != "date-time" {
                    return fail(format!("unsupported format {argument}"));
                }
                if let Some(text) = value.as_str()
                    && !is_date_time(text)
                {
                    return fail(format!("{text:?} is not an RFC 3339 date-time"));
                }
            }
            "multipleOf" => {
                if let (Some(step), Some(number)) = (argument.as_f64(), value.as_f64()) {
                    let ratio = number / step;
                    if (ratio - ratio.round()).abs() > 1e-9 {
                        return fail(format!("{number} is not a multiple of {step}"));
                    }
                }
            }
            "minItems" => {
                let least = argument.as_u64().unwrap_or(0) as usize;
                if let Some(items) = value.as_array()
                    && items.len() < least
                {
                    return fail(format!("{} items, fewer than {least}", items.len()));
                }
            }
            "items" => {
                if let Some(items) = value.as_array() {
                    if !argument.is_object() {
                        return fail("only a single items schema is supported".into());
                    }
                    for (index, item) in items.iter().enumerate() {
                        validate(argument, root, item, &format!("{path}[{index}]"))?;
                    }
                }
            }
            // Only meaningful beside a list of `items`, which these schemas never use.
            "additionalItems" => {}
            "required" => {
                if let Some(object) = value.as_object() {
                    for name in argument
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        if !object.contains_key(name) {
                            return fail(format!("required property {name:?} is missing"));
                        }
                    }
                }
            }
            "properties" => {
                if let Some(object) = value.as_object() {
                    for (name, sub) in argument.as_object().into_iter().flatten() {
                        if let Some(field) = object.get(name) {
                            validate(sub, root, field, &format!("{path}.{name}"))?;
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(object) = value.as_object() {
                    let declared = keywords.get("properties").and_then(Value::as_object);
                    for (name, field) in object {
                        if declared.is_some_and(|d| d.contains_key(name)) {
                            continue;
                        }
                        match argument {
                            Value::Bool(false) => {
                                return fail(format!("property {name:?} is not allowed"));
                            }
                            Value::Bool(true) => {}
                            sub => validate(sub, root, field, &format!("{path}.{name}"))?,
                        }
                    }
                }
            }
            other => return fail(format!("unsupported schema keyword {other:?}")),
        }
    }
    Ok(())
}

/// RFC 3339 `date-time`: `2026-11-23T10:00:00(.123)?(Z|+01:00)`.
fn is_date_time(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let at = |index: usize, expected: &[u8]| bytes.get(index).is_some_and(|b| expected.contains(b));
    let fixed = digits(0..4)
        && at(4, b"-")
        && digits(5..7)
        && at(7, b"-")
        && digits(8..10)
        && at(10, b"Tt")
        && digits(11..13)
        && at(13, b":")
        && digits(14..16)
        && at(16, b":")
        && digits(17..19);
    if !fixed {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let count = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if count == 0 {
            return false;
        }
        rest = &fraction[count..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    //! The validator on hand-written schemas (the official ones are checked in
    //! `tests/ocpp_schemas.rs`, where the installed package provides them).
    use serde_json::json;

    use super::*;

    fn schemas(schema: Value) -> Schemas {
        Schemas {
            dir: PathBuf::from("inline"),
            by_name: BTreeMap::from([("S".to_owned(), schema)]),
        }
    }

    #[test]
    fn each_keyword_refuses_what_it_should() {
        let s = schemas(json!({
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "object",
            "definitions": {"Tag": {"type": "string", "maxLength": 3}},
            "properties": {
                "n": {"type": "integer", "multipleOf": 0.5},
                "e": {"type": "string", "enum": ["A", "B"]},
                "t": {"type": "string", "format": "date-time"},
                "l": {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/Tag"}}
            },
            "additionalProperties": false,
            "required": ["n"]
        }));
        let good = json!({"n": 2, "e": "A", "t": "2026-11-23T10:00:00.5+01:00", "l": ["abc"]});
        assert_eq!(s.check("S", &good), Ok(()));
        for bad in [
            json!({}),
            json!({"n": "2"}),
            json!({"n": 2.5}),
            json!({"n": 2, "e": "C"}),
            json!({"n": 2, "t": "yesterday"}),
            json!({"n": 2, "t": "2026-11-23 10:00:00Z"}),
            json!({"n": 2, "l": []}),
            json!({"n": 2, "l": ["abcd"]}),
            json!({"n": 2, "x": 1}),
        ] {
            assert!(
                matches!(s.check("S", &bad), Err(SchemaError::Violation { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            s.check("T", &good),
            Err(SchemaError::Missing { .. })
        ));
    }

    #[test]
    fn an_unknown_keyword_fails_instead_of_passing() {
        let s = schemas(json!({"type": "object", "patternProperties": {}}));
        let error = s.check("S", &json!({})).unwrap_err();
        assert!(error.to_string().contains("patternProperties"), "{error}");
    }
}

//! Contracts as EventBridge Schema Registry documents: the schema of the whole event AWS
//! delivers (`source`, `detail-type`, `detail` …), with our envelope in `detail` and the
//! contract as `detail.data`, in one of the two content types the registry takes.
//!
//! The contracts are JSON Schema 2020-12; the registry's types are older dialects, so the few
//! keywords that changed are rewritten (`const` → `enum`, a numeric `exclusiveMinimum` → the
//! boolean form, `$defs` → the document's own definitions), and a keyword neither dialect has
//! is refused naming the schema, rather than dropped (a dropped keyword is a weaker contract).

use serde_json::{json, Map, Value};

/// The registry's content types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Content {
    /// `OpenApi3`: what the registry discovers and generates code bindings from.
    #[value(name = "openapi3")]
    OpenApi3,
    /// `JSONSchemaDraft4`.
    #[value(name = "jsonschema-draft4")]
    JsonSchemaDraft4,
}

impl Content {
    /// The registry's name for it (CreateSchema's `Type`).
    pub fn registry_type(self) -> &'static str {
        match self {
            Content::OpenApi3 => "OpenApi3",
            Content::JsonSchemaDraft4 => "JSONSchemaDraft4",
        }
    }
}

/// Keywords of 2020-12 with no equivalent in draft 4 / OpenAPI 3.0.
const UNSUPPORTED: [&str; 9] = [
    "prefixItems",
    "unevaluatedProperties",
    "unevaluatedItems",
    "dependentRequired",
    "dependentSchemas",
    "if",
    "contains",
    "$dynamicRef",
    "propertyNames",
];

/// The registry's name for a schema: `source@DetailType`, as EventBridge names what it discovers.
pub fn schema_name(source: &str, detail_type: &str) -> String {
    format!("{source}@{detail_type}")
}

/// The registry document for the contract of `(source, detail_type)`.
pub fn document(
    source: &str,
    detail_type: &str,
    contract: &Value,
    content: Content,
) -> Result<Value, String> {
    let definitions_at = match content {
        Content::OpenApi3 => "#/components/schemas/",
        Content::JsonSchemaDraft4 => "#/definitions/",
    };
    let mut definitions = Map::new();
    let data = rewrite(contract, content, definitions_at, &mut definitions)
        .map_err(|e| format!("{source}/{detail_type}: {e}"))?;
    let data_name = format!("{}Data", identifier(detail_type));
    // Every metadata field but the id may be null (a column the row lacks).
    let nullable = |kind: &str| match content {
        Content::OpenApi3 => json!({"type": kind, "nullable": true}),
        Content::JsonSchemaDraft4 => json!({"type": [kind, "null"]}),
    };
    let metadata = json!({
        "type": "object",
        "required": ["event_id"],
        "properties": {
            "event_id": {"type": "string"},
            "aggregate_type": nullable("string"),
            "aggregate_id": nullable("string"),
            "aggregate_version": nullable("integer"),
            "occurred_at": nullable("string"),
            "commit_lsn": nullable("string"),
            "traceparent": nullable("string"),
            "replayed": {"type": "boolean"}
        }
    });
    let detail = json!({
        "type": "object",
        "required": ["metadata", "data"],
        "properties": {
            "metadata": {"$ref": format!("{definitions_at}Metadata")},
            "data": {"$ref": format!("{definitions_at}{data_name}")}
        }
    });
    let mut event = json!({
        "type": "object",
        "required": ["detail-type", "resources", "detail", "id", "source", "time", "region", "version", "account"],
        "properties": {
            "account": {"type": "string"},
            "detail": {"$ref": format!("{definitions_at}{}", identifier(detail_type))},
            "detail-type": {"type": "string", "enum": [detail_type]},
            "id": {"type": "string"},
            "region": {"type": "string"},
            "resources": {"type": "array", "items": {"type": "string"}},
            "source": {"type": "string", "enum": [source]},
            "time": {"type": "string", "format": "date-time"},
            "version": {"type": "string"}
        }
    });
    definitions.insert(identifier(detail_type), detail);
    definitions.insert("Metadata".into(), metadata);
    definitions.insert(data_name, data);
    Ok(match content {
        Content::OpenApi3 => {
            if let Some(e) = event.as_object_mut() {
                e.insert("x-amazon-events-source".into(), json!(source));
                e.insert("x-amazon-events-detail-type".into(), json!(detail_type));
            }
            let mut schemas = Map::new();
            schemas.insert("AWSEvent".into(), event);
            schemas.extend(definitions);
            json!({
                "openapi": "3.0.0",
                "info": {"version": "1.0.0", "title": detail_type},
                "paths": {},
                "components": {"schemas": schemas}
            })
        }
        Content::JsonSchemaDraft4 => {
            if let Some(e) = event.as_object_mut() {
                e.insert("$schema".into(), json!("http://json-schema.org/draft-04/schema#"));
                e.insert("title".into(), json!(detail_type));
                e.insert("definitions".into(), Value::Object(definitions));
            }
            event
        }
    })
}

/// A name usable as a definition's key (`Order.Placed-v2` → `OrderPlacedv2`).
fn identifier(text: &str) -> String {
    text.chars().filter(char::is_ascii_alphanumeric).collect()
}

fn rewrite(
    schema: &Value,
    content: Content,
    at: &str,
    definitions: &mut Map<String, Value>,
) -> Result<Value, String> {
    let Value::Object(object) = schema else {
        return match schema {
            Value::Bool(true) => Ok(json!({})),
            Value::Bool(false) => Ok(json!({"not": {}})),
            other => Ok(other.clone()),
        };
    };
    let mut out = Map::new();
    for (key, value) in object {
        match key.as_str() {
            "$schema" | "$id" | "$comment" | "examples" => {}
            "$defs" | "definitions" => {
                let Value::Object(defs) = value else {
                    return Err(format!("`{key}` is not an object"));
                };
                for (name, def) in defs {
                    let def = rewrite(def, content, at, definitions)?;
                    definitions.insert(name.clone(), def);
                }
            }
            "$ref" => {
                let target = value.as_str().unwrap_or_default();
                let name = target
                    .strip_prefix("#/$defs/")
                    .or_else(|| target.strip_prefix("#/definitions/"))
                    .ok_or_else(|| format!("`$ref: {target}`: only references to this schema's $defs are exported"))?;
                out.insert(key.clone(), json!(format!("{at}{name}")));
            }
            "const" => {
                out.insert("enum".into(), json!([value]));
            }
            "exclusiveMinimum" | "exclusiveMaximum" if value.is_number() => {
                let bound = if key == "exclusiveMinimum" { "minimum" } else { "maximum" };
                out.insert(bound.into(), value.clone());
                out.insert(key.clone(), json!(true));
            }
            "type" if value.is_array() && content == Content::OpenApi3 => {
                // OpenAPI 3.0 has one type and `nullable`.
                let types: Vec<&str> = value.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                let others: Vec<&str> = types.iter().copied().filter(|t| *t != "null").collect();
                match others.as_slice() {
                    [one] => {
                        out.insert("type".into(), json!(one));
                        if types.contains(&"null") {
                            out.insert("nullable".into(), json!(true));
                        }
                    }
                    _ => return Err(format!("`type: {value}`: OpenAPI 3.0 takes one type (and null)")),
                }
            }
            "properties" | "patternProperties" => {
                let Value::Object(props) = value else {
                    return Err(format!("`{key}` is not an object"));
                };
                let mut rewritten = Map::new();
                for (name, prop) in props {
                    rewritten.insert(name.clone(), rewrite(prop, content, at, definitions)?);
                }
                out.insert(key.clone(), Value::Object(rewritten));
            }
            "items" | "additionalProperties" | "not" => {
                out.insert(key.clone(), rewrite(value, content, at, definitions)?);
            }
            "allOf" | "anyOf" | "oneOf" => {
                let parts = value
                    .as_array()
                    .ok_or_else(|| format!("`{key}` is not an array"))?
                    .iter()
                    .map(|s| rewrite(s, content, at, definitions))
                    .collect::<Result<Vec<_>, _>>()?;
                out.insert(key.clone(), Value::Array(parts));
            }
            unsupported if UNSUPPORTED.contains(&unsupported) => {
                return Err(format!(
                    "`{unsupported}` has no equivalent in {}: the contract cannot be exported without weakening it",
                    content.registry_type()
                ))
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract() -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://example.com/OrderPlaced.json",
            "type": "object",
            "required": ["order_id", "order_total", "state"],
            "properties": {
                "order_id": {"type": "string"},
                "order_total": {"type": "number", "exclusiveMinimum": 0},
                "state": {"const": "APPROVED"},
                "note": {"type": ["string", "null"]},
                "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}}
            },
            "$defs": {"line": {"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string"}}}}
        })
    }

    fn event(data: Value) -> Value {
        json!({"version": "0", "id": "1", "detail-type": "OrderPlaced", "source": "legacy.monolith",
            "account": "123456789012", "time": "2026-12-07T00:00:00Z", "region": "eu-west-1", "resources": [],
            "detail": {"metadata": {"event_id": "e1", "aggregate_type": "Order", "traceparent": null}, "data": data}})
    }

    /// The draft 4 document validates what the contract validates, as a draft 4 validator reads it.
    #[test]
    fn the_draft4_document_keeps_the_contracts_meaning() {
        let doc = document(
            "legacy.monolith",
            "OrderPlaced",
            &contract(),
            Content::JsonSchemaDraft4,
        )
        .unwrap();
        assert_eq!(doc["$schema"], "http://json-schema.org/draft-04/schema#");
        let validator = jsonschema::draft4::new(&doc).unwrap();
        let good = json!({"order_id": "o1", "order_total": 3, "state": "APPROVED", "note": null, "lines": [{"sku": "a"}]});
        assert!(validator.is_valid(&event(good)));
        for bad in [
            json!({"order_id": "o1", "order_total": 0, "state": "APPROVED"}),
            json!({"order_id": "o1", "order_total": 3, "state": "REJECTED"}),
            json!({"order_id": "o1", "order_total": 3, "state": "APPROVED", "lines": [{}]}),
            json!({"order_total": 3, "state": "APPROVED"}),
        ] {
            assert!(!validator.is_valid(&event(bad.clone())), "{bad}");
        }
        let mut other_source = event(json!({"order_id": "o1", "order_total": 3, "state": "APPROVED"}));
        other_source["source"] = json!("shipping");
        assert!(!validator.is_valid(&other_source));
    }

    #[test]
    fn the_openapi3_document_has_the_registrys_shape() {
        let doc = document("legacy.monolith", "OrderPlaced", &contract(), Content::OpenApi3).unwrap();
        assert_eq!(doc["openapi"], "3.0.0");
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["AWSEvent"]["x-amazon-events-source"], "legacy.monolith");
        assert_eq!(schemas["AWSEvent"]["x-amazon-events-detail-type"], "OrderPlaced");
        assert_eq!(
            schemas["AWSEvent"]["properties"]["detail"]["$ref"],
            "#/components/schemas/OrderPlaced"
        );
        let data = &schemas["OrderPlacedData"];
        assert_eq!(
            data["properties"]["note"],
            json!({"type": "string", "nullable": true})
        );
        assert_eq!(data["properties"]["state"], json!({"enum": ["APPROVED"]}));
        assert_eq!(
            data["properties"]["order_total"],
            json!({"type": "number", "minimum": 0, "exclusiveMinimum": true})
        );
        assert_eq!(
            data["properties"]["lines"]["items"]["$ref"],
            "#/components/schemas/line"
        );
        assert!(schemas["line"].is_object());
        assert!(data.get("$schema").is_none() && data.get("$defs").is_none());
        // Every $ref points into the document.
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"").skip(1) {
            let target = r.split('"').next().unwrap_or_default();
            let name = target.trim_start_matches("#/components/schemas/");
            assert!(schemas.get(name).is_some(), "dangling {target}");
        }
    }

    #[test]
    fn a_keyword_older_dialects_lack_is_refused_not_dropped() {
        let contract = json!({"type": "object", "dependentRequired": {"a": ["b"]}});
        let err = document("s", "T", &contract, Content::OpenApi3).unwrap_err();
        assert!(err.contains("dependentRequired") && err.contains("s/T"), "{err}");
    }
}

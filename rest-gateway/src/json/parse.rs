//! Request bodies in EDM JSON → entities.
//!
//! Type inference follows Azure: a JSON string is `Edm.String`, an integer `Edm.Int32` (an integer that
//! does not fit 32 bits without an annotation is rejected, as Azure does), a number with a fraction or
//! exponent `Edm.Double`, a boolean `Edm.Boolean`. A `name@odata.type` annotation gives the type of
//! `name`: `Edm.Int64` (a JSON string only: Azure's OData reader requires Int64 values quoted, and a
//! bare number is 400 `InvalidInput`), `Edm.DateTime`, `Edm.Guid`, `Edm.Binary` (base64) and
//! `Edm.Double` (also `"NaN"`, `"Infinity"`, `"-Infinity"`). Null properties are dropped (Azure never
//! stores nulls). Other `odata.*` members and instance annotations are ignored; an unknown EDM type name
//! is 400 `InvalidInput`; a property given twice is 400 `DuplicatePropertiesSpecified`.
//!
//! [`parse_entity_json`] is the fuzzing entry point: it must never panic, whatever the bytes.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value as Json;
use trestle_types::{DateTime, EdmType, Entity, EntityKey, Error, ErrorCode, Value};

/// An entity body as the client sent it: keys are optional because PUT/MERGE carry them in the URL.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedEntity {
    pub partition_key: Option<String>,
    pub row_key: Option<String>,
    pub properties: BTreeMap<String, Value>,
}

/// A JSON object's members in document order, duplicates kept (serde_json's map would silently keep the
/// last one).
struct Members(Vec<(String, Json)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry::<String, Json>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::InvalidInput, message)
}

fn parse_members(body: &[u8]) -> Result<Vec<(String, Json)>, Error> {
    serde_json::from_slice::<Members>(body)
        .map(|m| m.0)
        .map_err(|e| invalid(format!("The request body is not a valid JSON object: {e}")))
}

/// Parses an entity body without checking Azure's limits (see [`parse_entity`] for that).
pub fn parse_entity_json(body: &[u8]) -> Result<ParsedEntity, Error> {
    let mut values: BTreeMap<String, Json> = BTreeMap::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in parse_members(body)? {
        if let Some(property) = name.strip_suffix("@odata.type") {
            let Json::String(edm) = value else {
                return Err(invalid(format!(
                    "The type annotation of {property} must be a string."
                )));
            };
            if types.insert(property.to_string(), edm).is_some() {
                return Err(Error::from_code(ErrorCode::DuplicatePropertiesSpecified));
            }
        } else if name.starts_with("odata.") || name.contains('@') {
            // Control information and other instance annotations carry nothing to store.
        } else if values.insert(name, value).is_some() {
            return Err(Error::from_code(ErrorCode::DuplicatePropertiesSpecified));
        }
    }
    let mut parsed = ParsedEntity {
        partition_key: key_value(&mut values, "PartitionKey")?,
        row_key: key_value(&mut values, "RowKey")?,
        properties: BTreeMap::new(),
    };
    // The server sets Timestamp; a client echoing it back (as SDKs do after a read) is ignored.
    values.remove("Timestamp");
    for (name, json) in values {
        let edm = match types.get(&name) {
            Some(edm_name) => Some(EdmType::from_edm_name(edm_name).ok_or_else(|| {
                invalid(format!(
                    "The type {edm_name} of property {name} is not a supported EDM type."
                ))
            })?),
            None => None,
        };
        if let Some(value) = convert(&name, json, edm)? {
            parsed.properties.insert(name, value);
        }
    }
    Ok(parsed)
}

fn key_value(values: &mut BTreeMap<String, Json>, name: &str) -> Result<Option<String>, Error> {
    match values.remove(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("The {name} must be a string."))),
    }
}

/// Converts one JSON value with an optional declared type; `None` for null.
fn convert(name: &str, json: Json, edm: Option<EdmType>) -> Result<Option<Value>, Error> {
    let mismatch = || {
        invalid(format!(
            "The value of property {name} does not match its type."
        ))
    };
    let value = match (json, edm) {
        (Json::Null, _) => return Ok(None),
        (Json::Bool(b), None | Some(EdmType::Boolean)) => Value::Boolean(b),
        (Json::Number(n), None | Some(EdmType::Int32)) => {
            if n.is_f64() {
                match edm {
                    None => Value::Double(n.as_f64().ok_or_else(mismatch)?),
                    Some(_) => return Err(mismatch()),
                }
            } else {
                let int = n.as_i64().ok_or_else(|| out_of_range(name))?;
                Value::Int32(i32::try_from(int).map_err(|_| out_of_range(name))?)
            }
        }
        (Json::Number(_), Some(EdmType::Int64)) => {
            // The payload format serializes Edm.Int64 as a JSON string; Azure's OData reader refuses a
            // bare number ("Primitive values of type 'Edm.Int64' must be quoted in the payload").
            return Err(invalid(format!(
                "Cannot convert a primitive value to the expected type 'Edm.Int64' for property \
                 {name}: Edm.Int64 values must be quoted in the payload."
            )));
        }
        (Json::Number(n), Some(EdmType::Double)) => Value::Double(n.as_f64().ok_or_else(mismatch)?),
        (Json::String(s), None | Some(EdmType::String)) => Value::String(s),
        (Json::String(s), Some(EdmType::Int64)) => {
            Value::Int64(s.trim().parse().map_err(|_| mismatch())?)
        }
        (Json::String(s), Some(EdmType::Int32)) => {
            Value::Int32(s.trim().parse().map_err(|_| mismatch())?)
        }
        (Json::String(s), Some(EdmType::Double)) => {
            Value::Double(parse_double(&s).ok_or_else(mismatch)?)
        }
        (Json::String(s), Some(EdmType::Boolean)) => match s.as_str() {
            "true" => Value::Boolean(true),
            "false" => Value::Boolean(false),
            _ => return Err(mismatch()),
        },
        (Json::String(s), Some(EdmType::DateTime)) => {
            Value::DateTime(DateTime::parse(&s).ok_or_else(mismatch)?)
        }
        (Json::String(s), Some(EdmType::Guid)) => {
            Value::Guid(uuid::Uuid::parse_str(&s).map_err(|_| mismatch())?)
        }
        (Json::String(s), Some(EdmType::Binary)) => {
            Value::Binary(STANDARD.decode(s).map_err(|_| mismatch())?)
        }
        _ => return Err(mismatch()),
    };
    Ok(Some(value))
}

fn out_of_range(name: &str) -> Error {
    invalid(format!(
        "The value of property {name} is out of range for Edm.Int32; annotate it as Edm.Int64."
    ))
}

fn parse_double(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" | "INF" => Some(f64::INFINITY),
        "-Infinity" | "-INF" => Some(f64::NEG_INFINITY),
        other => other.trim().parse::<f64>().ok().filter(|d| d.is_finite()),
    }
}

/// Parses and validates an entity. When `url_key` is given (PUT, MERGE, PATCH on an entity URL) the body's
/// keys may be omitted but must equal the URL's if present; otherwise (POST) both keys are required.
pub fn parse_entity(body: &[u8], url_key: Option<&EntityKey>) -> Result<Entity, Error> {
    let parsed = parse_entity_json(body)?;
    let (partition_key, row_key) = match url_key {
        Some(key) => {
            let same = |body: &Option<String>, url: &str| body.as_deref().is_none_or(|b| b == url);
            if !same(&parsed.partition_key, &key.partition_key)
                || !same(&parsed.row_key, &key.row_key)
            {
                return Err(invalid(
                    "The keys in the request body do not match the keys in the request URI.",
                ));
            }
            (key.partition_key.clone(), key.row_key.clone())
        }
        None => match (parsed.partition_key, parsed.row_key) {
            (Some(pk), Some(rk)) => (pk, rk),
            _ => return Err(Error::from_code(ErrorCode::PropertiesNeedValue)),
        },
    };
    let entity = Entity {
        partition_key,
        row_key,
        timestamp: None,
        properties: parsed.properties,
    };
    entity.validate()?;
    Ok(entity)
}

/// Parses a Create Table body, `{"TableName":"t"}`, returning the name (not yet validated).
pub fn parse_table_name(body: &[u8]) -> Result<String, Error> {
    let mut name = None;
    for (member, value) in parse_members(body)? {
        if member == "TableName" {
            match value {
                Json::String(s) if name.is_none() => name = Some(s),
                Json::String(_) => {
                    return Err(Error::from_code(ErrorCode::DuplicatePropertiesSpecified));
                }
                _ => return Err(invalid("TableName must be a string.")),
            }
        }
    }
    name.ok_or_else(|| Error::from_code(ErrorCode::PropertiesNeedValue))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AZURE_INSERT: &str = r#"{"PartitionKey":"pk","RowKey":"rk","age":"39","age@odata.type":"Edm.Int64",
        "ratio":3.1,"Birthday":"1973-10-04T00:00:00Z","Birthday@odata.type":"Edm.DateTime",
        "binary":"YmluYXJ5","binary@odata.type":"Edm.Binary",
        "clsid":"c9da6455-213d-42c9-9a79-3e9149a57833","clsid@odata.type":"Edm.Guid",
        "count":7,"big":2147483647,"flag":true,"name":"x","gone":null,"whole":3.0}"#;

    #[test]
    fn parses_the_recorded_azure_insert() {
        let e = parse_entity(AZURE_INSERT.as_bytes(), None).unwrap();
        assert_eq!((e.partition_key.as_str(), e.row_key.as_str()), ("pk", "rk"));
        let p = &e.properties;
        assert_eq!(p["age"], Value::Int64(39));
        assert_eq!(p["ratio"], Value::Double(3.1));
        assert_eq!(p["whole"], Value::Double(3.0));
        assert_eq!(
            p["Birthday"],
            Value::DateTime(DateTime::parse("1973-10-04T00:00:00Z").unwrap())
        );
        assert_eq!(p["binary"], Value::Binary(b"binary".to_vec()));
        assert_eq!(p["clsid"].edm_type(), EdmType::Guid);
        assert_eq!(p["count"], Value::Int32(7));
        assert_eq!(p["big"], Value::Int32(i32::MAX));
        assert_eq!(p["flag"], Value::Boolean(true));
        assert_eq!(p["name"], Value::String("x".into()));
        assert!(!p.contains_key("gone"));
        assert_eq!(p.len(), 10);
    }

    #[test]
    fn double_specials_and_annotated_numbers() {
        let body = r#"{"PartitionKey":"p","RowKey":"r","n":"NaN","n@odata.type":"Edm.Double",
            "i":"Infinity","i@odata.type":"Edm.Double","m":"-Infinity","m@odata.type":"Edm.Double",
            "d":2,"d@odata.type":"Edm.Double","l":"5","l@odata.type":"Edm.Int64","s":"5","s@odata.type":"Edm.String"}"#;
        let e = parse_entity(body.as_bytes(), None).unwrap();
        assert!(matches!(e.properties["n"], Value::Double(d) if d.is_nan()));
        assert_eq!(e.properties["i"], Value::Double(f64::INFINITY));
        assert_eq!(e.properties["m"], Value::Double(f64::NEG_INFINITY));
        assert_eq!(e.properties["d"], Value::Double(2.0));
        assert_eq!(e.properties["l"], Value::Int64(5));
        assert_eq!(e.properties["s"], Value::String("5".into()));
    }

    #[test]
    fn rejections_use_azure_codes() {
        let code = |body: &str| parse_entity(body.as_bytes(), None).unwrap_err().code;
        assert_eq!(
            code(r#"{"PartitionKey":"p","RowKey":"r","x":2147483648}"#),
            ErrorCode::InvalidInput
        );
        assert_eq!(
            code(r#"{"PartitionKey":"p","RowKey":"r","x":1,"x":2}"#),
            ErrorCode::DuplicatePropertiesSpecified
        );
        assert_eq!(
            code(r#"{"PartitionKey":"p","RowKey":"r","x":"1","x@odata.type":"Edm.Int128"}"#),
            ErrorCode::InvalidInput
        );
        assert_eq!(
            code(r#"{"PartitionKey":"p","RowKey":"r","x":"abc","x@odata.type":"Edm.Int64"}"#),
            ErrorCode::InvalidInput
        );
        // Edm.Int64 must be a JSON string, whatever the number and the annotation order.
        for body in [
            r#"{"PartitionKey":"p","RowKey":"r","n":5,"n@odata.type":"Edm.Int64"}"#,
            r#"{"PartitionKey":"p","RowKey":"r","n@odata.type":"Edm.Int64","n":-5}"#,
            r#"{"PartitionKey":"p","RowKey":"r","n":9223372036854775807,"n@odata.type":"Edm.Int64"}"#,
            r#"{"PartitionKey":"p","RowKey":"r","n":5.0,"n@odata.type":"Edm.Int64"}"#,
        ] {
            let error = parse_entity(body.as_bytes(), None).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidInput, "{body}");
            assert!(
                error.message.contains("must be quoted"),
                "{}",
                error.message
            );
        }
        let quoted = r#"{"PartitionKey":"p","RowKey":"r","n":"-9223372036854775808","n@odata.type":"Edm.Int64"}"#;
        assert_eq!(
            parse_entity(quoted.as_bytes(), None).unwrap().properties["n"],
            Value::Int64(i64::MIN)
        );
        assert_eq!(
            code(r#"{"PartitionKey":"p","RowKey":"r","x":"zz","x@odata.type":"Edm.Guid"}"#),
            ErrorCode::InvalidInput
        );
        assert_eq!(
            code(r#"{"PartitionKey":"p","RowKey":"r","x":"!!","x@odata.type":"Edm.Binary"}"#),
            ErrorCode::InvalidInput
        );
        assert_eq!(
            code(r#"{"PartitionKey":"p","RowKey":"r","x":"soon","x@odata.type":"Edm.DateTime"}"#),
            ErrorCode::InvalidInput
        );
        assert_eq!(
            code(r#"{"PartitionKey":"p","RowKey":"r","x":[1]}"#),
            ErrorCode::InvalidInput
        );
        assert_eq!(
            code(r#"{"PartitionKey":"p","RowKey":"r","x":{"a":1}}"#),
            ErrorCode::InvalidInput
        );
        assert_eq!(
            code(r#"{"PartitionKey":1,"RowKey":"r"}"#),
            ErrorCode::InvalidInput
        );
        assert_eq!(code(r#"{"RowKey":"r"}"#), ErrorCode::PropertiesNeedValue);
        assert_eq!(code(r#"[1,2]"#), ErrorCode::InvalidInput);
        assert_eq!(code(r#"{"PartitionKey":"p","#), ErrorCode::InvalidInput);
        assert_eq!(
            code(r#"{"PartitionKey":"p","RowKey":"r","bad-name":1}"#),
            ErrorCode::PropertyNameInvalid
        );
        assert_eq!(
            code(r#"{"PartitionKey":"a/b","RowKey":"r"}"#),
            ErrorCode::InvalidInput
        );
        let many: String = (0..253).map(|i| format!(",\"p{i}\":1")).collect();
        assert_eq!(
            code(&format!(
                "{{\"PartitionKey\":\"p\",\"RowKey\":\"r\"{many}}}"
            )),
            ErrorCode::TooManyProperties
        );
        let long = "x".repeat(40_000);
        assert_eq!(
            code(&format!(
                "{{\"PartitionKey\":\"p\",\"RowKey\":\"r\",\"s\":\"{long}\"}}"
            )),
            ErrorCode::PropertyValueTooLarge
        );
    }

    #[test]
    fn url_keys_must_agree_with_body_keys() {
        let key = EntityKey::new("p", "r");
        let e = parse_entity(br#"{"x":1}"#, Some(&key)).unwrap();
        assert_eq!(e.key(), key);
        assert!(parse_entity(br#"{"PartitionKey":"p","RowKey":"r","x":1}"#, Some(&key)).is_ok());
        let err = parse_entity(br#"{"PartitionKey":"q","x":1}"#, Some(&key)).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidInput);
    }

    #[test]
    fn control_information_and_timestamp_are_ignored() {
        let body = br#"{"odata.metadata":"x","odata.etag":"W/\"x\"","PartitionKey":"p","RowKey":"r",
            "Timestamp":"2020-01-01T00:00:00Z","Timestamp@odata.type":"Edm.DateTime","a@odata.foo":"b","a":"c"}"#;
        let e = parse_entity(body, None).unwrap();
        assert_eq!(e.properties.len(), 1);
        assert_eq!(e.properties["a"], Value::String("c".into()));
    }

    #[test]
    fn table_names() {
        assert_eq!(parse_table_name(br#"{"TableName":"abc"}"#).unwrap(), "abc");
        assert_eq!(
            parse_table_name(br#"{}"#).unwrap_err().code,
            ErrorCode::PropertiesNeedValue
        );
        assert_eq!(
            parse_table_name(br#"{"TableName":5}"#).unwrap_err().code,
            ErrorCode::InvalidInput
        );
        assert_eq!(
            parse_table_name(b"nope").unwrap_err().code,
            ErrorCode::InvalidInput
        );
    }

    #[test]
    fn deeply_nested_json_is_an_error_not_a_crash() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            parse_entity_json(deep.as_bytes()).unwrap_err().code,
            ErrorCode::InvalidInput
        );
    }
}

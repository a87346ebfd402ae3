//! Entities and tables → JSON response bodies, at Azure's three metadata levels.
//!
//! Output is written by hand rather than through a JSON map so that member order matches Azure's
//! (control information first, then `PartitionKey`, `RowKey`, `Timestamp`, then properties, each
//! annotation just before its value) and so that whole doubles keep their `.0` (`3.0`, not `3`), which is
//! how a client without metadata tells a Double from an Int32. Int64 values are JSON strings at every
//! level (JSON numbers lose precision past 2^53), annotated except under `nometadata`.

use std::fmt::Write as _;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use trestle_types::{EdmType, Entity, Value};

use super::MetadataLevel;
use crate::resource::entity_path;

/// What a serializer needs to write `odata.metadata`, `odata.id` and `odata.editLink`.
#[derive(Debug, Clone, Copy)]
pub struct EntityUrls<'a> {
    /// The account's base URL, e.g. `http://127.0.0.1:10002/devstoreaccount1`.
    pub base_url: &'a str,
    pub account: &'a str,
    pub table: &'a str,
}

/// Appends `s` as a JSON string, escaped exactly as serde_json escapes it (quote, backslash and control
/// characters; everything else verbatim), straight into `out`: this runs once per property of every
/// entity a query returns.
fn push_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    push_escaped(out, s);
    out.push('"');
}

/// The inside of [`push_str`]: `s` escaped, without the quotes.
fn push_escaped(out: &mut String, s: &str) {
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // `b` is ASCII, so `i` is a char boundary.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

fn push_member(out: &mut String, first: &mut bool, name: &str) {
    if !*first {
        out.push(',');
    }
    *first = false;
    push_str(out, name);
    out.push(':');
}

/// Formats a double as Azure does: shortest round-trip text, whole numbers with `.0`.
pub fn format_double(d: f64) -> String {
    let text = format!("{d:?}");
    if text.contains(['.', 'e', 'E']) {
        text
    } else {
        format!("{text}.0")
    }
}

/// Whether a value needs an `@odata.type` annotation at this level.
fn needs_annotation(value: &Value, level: MetadataLevel) -> bool {
    match level {
        MetadataLevel::None => false,
        MetadataLevel::Minimal => match value {
            Value::Int64(_) | Value::DateTime(_) | Value::Guid(_) | Value::Binary(_) => true,
            Value::Double(d) => !d.is_finite(),
            Value::String(_) | Value::Int32(_) | Value::Boolean(_) => false,
        },
        MetadataLevel::Full => !matches!(
            value.edm_type(),
            EdmType::String | EdmType::Boolean | EdmType::Int32
        ),
    }
}

fn push_value(out: &mut String, value: &Value) {
    match value {
        Value::String(s) => push_str(out, s),
        Value::Int32(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Int64(i) => push_str(out, &i.to_string()),
        Value::Double(d) if d.is_nan() => push_str(out, "NaN"),
        Value::Double(d) if d.is_infinite() => {
            push_str(out, if *d > 0.0 { "Infinity" } else { "-Infinity" })
        }
        Value::Double(d) => out.push_str(&format_double(*d)),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::DateTime(dt) => push_str(out, &dt.to_iso()),
        Value::Guid(g) => push_str(out, &g.hyphenated().to_string()),
        Value::Binary(b) => push_str(out, &STANDARD.encode(b)),
    }
}

fn push_property(
    out: &mut String,
    first: &mut bool,
    name: &str,
    value: &Value,
    level: MetadataLevel,
) {
    if needs_annotation(value, level) {
        if !*first {
            out.push(',');
        }
        *first = false;
        out.push('"');
        push_escaped(out, name);
        out.push_str("@odata.type\":");
        push_str(out, value.edm_type().edm_name());
    }
    push_member(out, first, name);
    push_value(out, value);
}

/// Writes one entity object. `metadata` is the `odata.metadata` value for a top-level entity (none inside
/// a query's `value` array). `select` limits the properties; selected-but-absent ones are written as null
/// (Azure does; Azurite omits them).
fn write_entity(
    out: &mut String,
    entity: &Entity,
    level: MetadataLevel,
    urls: &EntityUrls<'_>,
    select: Option<&[String]>,
    metadata: Option<&str>,
) {
    let mut first = true;
    out.push('{');
    if level != MetadataLevel::None {
        if let Some(metadata) = metadata {
            push_member(out, &mut first, "odata.metadata");
            push_str(out, metadata);
        }
        if level == MetadataLevel::Full {
            let path = entity_path(urls.table, &entity.key());
            push_member(out, &mut first, "odata.type");
            push_str(out, &format!("{}.{}", urls.account, urls.table));
            push_member(out, &mut first, "odata.id");
            push_str(out, &format!("{}/{path}", urls.base_url));
            push_member(out, &mut first, "odata.etag");
            push_str(
                out,
                &entity.etag().map(|e| e.to_header()).unwrap_or_default(),
            );
            push_member(out, &mut first, "odata.editLink");
            push_str(out, &path);
        } else if let Some(etag) = entity.etag() {
            push_member(out, &mut first, "odata.etag");
            push_str(out, &etag.to_header());
        }
    }
    let selected = |name: &str| select.is_none_or(|names| names.iter().any(|n| n == name));
    if selected("PartitionKey") {
        push_member(out, &mut first, "PartitionKey");
        push_str(out, &entity.partition_key);
    }
    if selected("RowKey") {
        push_member(out, &mut first, "RowKey");
        push_str(out, &entity.row_key);
    }
    if let Some(timestamp) = entity.timestamp.filter(|_| selected("Timestamp")) {
        if level == MetadataLevel::Full {
            push_member(out, &mut first, "Timestamp@odata.type");
            push_str(out, "Edm.DateTime");
        }
        push_member(out, &mut first, "Timestamp");
        push_str(out, &timestamp.to_iso());
    }
    for (name, value) in &entity.properties {
        if selected(name) {
            push_property(out, &mut first, name, value, level);
        }
    }
    if let Some(names) = select {
        for name in names {
            let system = matches!(name.as_str(), "PartitionKey" | "RowKey" | "Timestamp");
            if !system && !entity.properties.contains_key(name) {
                push_member(out, &mut first, name);
                out.push_str("null");
            }
        }
    }
    out.push('}');
}

/// A single entity (Get Entity, the Insert Entity echo): `odata.metadata` ends in `#t/@Element`.
pub fn entity_document(
    entity: &Entity,
    level: MetadataLevel,
    urls: &EntityUrls<'_>,
    select: Option<&[String]>,
) -> String {
    let metadata = format!("{}/$metadata#{}/@Element", urls.base_url, urls.table);
    let mut out = String::new();
    write_entity(&mut out, entity, level, urls, select, Some(&metadata));
    out
}

/// A query page: `{"odata.metadata":"...#t","value":[...]}`.
pub fn query_document(
    entities: &[Entity],
    level: MetadataLevel,
    urls: &EntityUrls<'_>,
    select: Option<&[String]>,
) -> String {
    // Room for typical entities up front instead of doubling through a large page.
    let mut out = String::with_capacity(128 + entities.len() * 512);
    out.push('{');
    if level != MetadataLevel::None {
        out.push_str("\"odata.metadata\":");
        push_str(
            &mut out,
            &format!("{}/$metadata#{}", urls.base_url, urls.table),
        );
        out.push(',');
    }
    out.push_str("\"value\":[");
    for (i, entity) in entities.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_entity(&mut out, entity, level, urls, select, None);
    }
    out.push_str("]}");
    out
}

fn write_table(out: &mut String, name: &str, level: MetadataLevel, base_url: &str, account: &str) {
    let mut first = true;
    out.push('{');
    if level == MetadataLevel::Full {
        push_member(out, &mut first, "odata.type");
        push_str(out, &format!("{account}.Tables"));
        push_member(out, &mut first, "odata.id");
        push_str(out, &format!("{base_url}/Tables('{name}')"));
        push_member(out, &mut first, "odata.editLink");
        push_str(out, &format!("Tables('{name}')"));
    }
    push_member(out, &mut first, "TableName");
    push_str(out, name);
    out.push('}');
}

/// The Create Table echo: `{"odata.metadata":"...#Tables/@Element","TableName":"t"}`.
pub fn table_document(name: &str, level: MetadataLevel, base_url: &str, account: &str) -> String {
    let mut out = String::new();
    write_table(&mut out, name, level, base_url, account);
    if level != MetadataLevel::None {
        let metadata = format!("{{\"odata.metadata\":\"{base_url}/$metadata#Tables/@Element\",");
        out = out.replacen('{', &metadata, 1);
    }
    out
}

/// A Query Tables page: `{"odata.metadata":"...#Tables","value":[{"TableName":"t"}]}`.
pub fn tables_document(
    names: &[String],
    level: MetadataLevel,
    base_url: &str,
    account: &str,
) -> String {
    let mut out = String::from("{");
    if level != MetadataLevel::None {
        out.push_str("\"odata.metadata\":");
        push_str(&mut out, &format!("{base_url}/$metadata#Tables"));
        out.push(',');
    }
    out.push_str("\"value\":[");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_table(&mut out, name, level, base_url, account);
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use trestle_types::DateTime;

    use super::*;

    const URLS: EntityUrls<'static> = EntityUrls {
        base_url: "https://acct.table.core.windows.net",
        account: "acct",
        table: "t",
    };

    fn sample() -> Entity {
        let mut e = Entity::new("pk", "rk")
            .with("age", Value::Int64(39))
            .with("ratio", Value::Double(3.0))
            .with("count", Value::Int32(7))
            .with(
                "Birthday",
                Value::DateTime(DateTime::parse("1973-10-04T00:00:00Z").unwrap()),
            )
            .with("binary", Value::Binary(b"binary".to_vec()))
            .with("flag", Value::Boolean(false))
            .with("nan", Value::Double(f64::NAN))
            .with("name", Value::String("x\"y".into()));
        e.timestamp = DateTime::parse("2020-09-15T23:02:10.6970439Z");
        e
    }

    #[test]
    fn minimal_metadata_matches_azure() {
        let doc = entity_document(&sample(), MetadataLevel::Minimal, &URLS, None);
        assert_eq!(
            doc,
            "{\"odata.metadata\":\"https://acct.table.core.windows.net/$metadata#t/@Element\",\
             \"odata.etag\":\"W/\\\"datetime'2020-09-15T23%3A02%3A10.6970439Z'\\\"\",\
             \"PartitionKey\":\"pk\",\"RowKey\":\"rk\",\"Timestamp\":\"2020-09-15T23:02:10.6970439Z\",\
             \"Birthday@odata.type\":\"Edm.DateTime\",\"Birthday\":\"1973-10-04T00:00:00.0000000Z\",\
             \"age@odata.type\":\"Edm.Int64\",\"age\":\"39\",\
             \"binary@odata.type\":\"Edm.Binary\",\"binary\":\"YmluYXJ5\",\
             \"count\":7,\"flag\":false,\"name\":\"x\\\"y\",\
             \"nan@odata.type\":\"Edm.Double\",\"nan\":\"NaN\",\"ratio\":3.0}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(parsed["ratio"].as_f64(), Some(3.0));
    }

    #[test]
    fn no_and_full_metadata() {
        let none = entity_document(&sample(), MetadataLevel::None, &URLS, None);
        assert!(none.starts_with("{\"PartitionKey\":\"pk\""));
        assert!(!none.contains("odata"));
        assert!(none.contains("\"age\":\"39\""));
        let full = entity_document(&sample(), MetadataLevel::Full, &URLS, None);
        assert!(full.contains("\"odata.type\":\"acct.t\""));
        assert!(full.contains(
            "\"odata.id\":\"https://acct.table.core.windows.net/t(PartitionKey='pk',RowKey='rk')\""
        ));
        assert!(full.contains("\"odata.editLink\":\"t(PartitionKey='pk',RowKey='rk')\""));
        assert!(full.contains("\"Timestamp@odata.type\":\"Edm.DateTime\""));
        assert!(full.contains("\"ratio@odata.type\":\"Edm.Double\",\"ratio\":3.0"));
        assert!(!full.contains("count@odata.type"));
    }

    #[test]
    fn select_writes_absent_properties_as_null() {
        let select = vec![
            "count".to_string(),
            "missing".to_string(),
            "RowKey".to_string(),
        ];
        let doc = query_document(&[sample()], MetadataLevel::Minimal, &URLS, Some(&select));
        assert_eq!(
            doc,
            "{\"odata.metadata\":\"https://acct.table.core.windows.net/$metadata#t\",\"value\":[{\
             \"odata.etag\":\"W/\\\"datetime'2020-09-15T23%3A02%3A10.6970439Z'\\\"\",\
             \"RowKey\":\"rk\",\"count\":7,\"missing\":null}]}"
        );
    }

    #[test]
    fn doubles_keep_their_point() {
        assert_eq!(format_double(3.0), "3.0");
        assert_eq!(format_double(-0.5), "-0.5");
        assert_eq!(format_double(1e300), "1e300");
        assert_eq!(format_double(0.1), "0.1");
    }

    #[test]
    fn table_documents() {
        let base = "http://127.0.0.1:10002/devstoreaccount1";
        assert_eq!(
            table_document("t1", MetadataLevel::Minimal, base, "devstoreaccount1"),
            "{\"odata.metadata\":\"http://127.0.0.1:10002/devstoreaccount1/$metadata#Tables/@Element\",\"TableName\":\"t1\"}"
        );
        assert_eq!(
            table_document("t1", MetadataLevel::None, base, "a"),
            "{\"TableName\":\"t1\"}"
        );
        assert_eq!(
            tables_document(
                &["a1".into(), "b2".into()],
                MetadataLevel::Minimal,
                base,
                "d"
            ),
            "{\"odata.metadata\":\"http://127.0.0.1:10002/devstoreaccount1/$metadata#Tables\",\
             \"value\":[{\"TableName\":\"a1\"},{\"TableName\":\"b2\"}]}"
        );
        let full = tables_document(&["a1".into()], MetadataLevel::Full, base, "d");
        assert!(full.contains("\"odata.editLink\":\"Tables('a1')\""));
    }

    mod round_trip {
        use proptest::prelude::*;
        use trestle_types::{DateTime, Value};

        use super::super::super::parse::parse_entity;
        use super::*;

        fn arb_value() -> impl Strategy<Value = Value> {
            prop_oneof![
                ".{0,20}".prop_map(Value::String),
                any::<i32>().prop_map(Value::Int32),
                any::<i64>().prop_map(Value::Int64),
                any::<f64>().prop_map(Value::Double),
                any::<bool>().prop_map(Value::Boolean),
                (DateTime::MIN.0..=DateTime::MAX.0).prop_map(|t| Value::DateTime(DateTime(t))),
                any::<u128>().prop_map(|g| Value::Guid(uuid::Uuid::from_u128(g))),
                proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Binary),
            ]
        }

        #[test]
        fn every_control_character_is_escaped_as_serde_json_does() {
            let s: String = (0u8..0x80).map(char::from).chain(['é', '€', '𝄞']).collect();
            let mut out = String::new();
            push_str(&mut out, &s);
            assert_eq!(out, serde_json::Value::String(s).to_string());
        }

        proptest! {
            /// The hand-written escaping is serde_json's, byte for byte.
            #[test]
            fn strings_are_escaped_as_serde_json_escapes_them(s in "(?s).{0,40}") {
                let mut out = String::new();
                push_str(&mut out, &s);
                prop_assert_eq!(out, serde_json::Value::String(s).to_string());
            }

            /// What the writer emits at minimal or full metadata parses back to the same entity (compared
            /// as written text, since NaN != NaN): the invariant the `entity_json` fuzz target checks.
            #[test]
            fn written_entities_parse_back(
                pk in "[a-z ]{0,8}",
                rk in "[a-z0-9']{0,8}",
                props in proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,10}", arb_value(), 0..8),
            ) {
                let mut entity = Entity::new(pk, rk);
                entity.properties = props.into_iter()
                    .filter(|(name, _)| !matches!(name.as_str(), "PartitionKey" | "RowKey" | "Timestamp"))
                    .collect();
                for level in [MetadataLevel::Minimal, MetadataLevel::Full] {
                    let written = entity_document(&entity, level, &URLS, None);
                    let parsed = parse_entity(written.as_bytes(), None).map_err(|e| TestCaseError::fail(format!("{e}: {written}")))?;
                    prop_assert_eq!(entity_document(&parsed, level, &URLS, None), written);
                }
            }
        }
    }
}

//! Conversions between protobuf messages and `trestle-types` domain values.
//!
//! Domain → proto never fails. Proto → domain fails with `InvalidInput` when a message is malformed (a
//! value without a kind, a Guid that is not 16 bytes): gRPC clients are untrusted input.

use std::collections::BTreeMap;

use trestle_types::{DateTime, ETag, Entity, Error, ErrorCode, IfMatch, Result, Value};

use crate::table as pb;

impl From<&Value> for pb::Value {
    fn from(v: &Value) -> Self {
        use pb::value::Kind;
        let kind = match v {
            Value::String(s) => Kind::StringValue(s.clone()),
            Value::Int32(i) => Kind::Int32Value(*i),
            Value::Int64(i) => Kind::Int64Value(*i),
            Value::Double(d) => Kind::DoubleValue(*d),
            Value::Boolean(b) => Kind::BoolValue(*b),
            Value::DateTime(dt) => Kind::DatetimeTicks(dt.ticks()),
            Value::Guid(g) => Kind::GuidValue(g.as_bytes().to_vec()),
            Value::Binary(b) => Kind::BinaryValue(b.clone()),
        };
        pb::Value { kind: Some(kind) }
    }
}

impl TryFrom<pb::Value> for Value {
    type Error = Error;

    fn try_from(v: pb::Value) -> Result<Value> {
        use pb::value::Kind;
        Ok(match v.kind {
            Some(Kind::StringValue(s)) => Value::String(s),
            Some(Kind::Int32Value(i)) => Value::Int32(i),
            Some(Kind::Int64Value(i)) => Value::Int64(i),
            Some(Kind::DoubleValue(d)) => Value::Double(d),
            Some(Kind::BoolValue(b)) => Value::Boolean(b),
            Some(Kind::DatetimeTicks(t)) => Value::DateTime(DateTime(t)),
            Some(Kind::GuidValue(g)) => {
                let bytes: [u8; 16] = g
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::invalid_input("A Guid value must be 16 bytes."))?;
                Value::Guid(uuid::Uuid::from_bytes(bytes))
            }
            Some(Kind::BinaryValue(b)) => Value::Binary(b),
            None => return Err(Error::invalid_input("A property value has no type.")),
        })
    }
}

/// Properties of a domain entity as protobuf properties (in name order).
pub fn properties_to_proto(props: &BTreeMap<String, Value>) -> Vec<pb::Property> {
    props
        .iter()
        .map(|(name, value)| pb::Property {
            name: name.clone(),
            value: Some(value.into()),
        })
        .collect()
}

/// Protobuf properties as a domain property map; a name given twice is `DuplicatePropertiesSpecified`.
pub fn properties_from_proto(props: Vec<pb::Property>) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for p in props {
        let value = p
            .value
            .ok_or_else(|| Error::invalid_input(format!("Property {} has no value.", p.name)))?;
        if out.insert(p.name, Value::try_from(value)?).is_some() {
            return Err(Error::from_code(ErrorCode::DuplicatePropertiesSpecified));
        }
    }
    Ok(out)
}

impl From<&Entity> for pb::Entity {
    fn from(e: &Entity) -> Self {
        pb::Entity {
            partition_key: e.partition_key.clone(),
            row_key: e.row_key.clone(),
            timestamp_ticks: e.timestamp.map(DateTime::ticks),
            properties: properties_to_proto(&e.properties),
        }
    }
}

impl TryFrom<pb::Entity> for Entity {
    type Error = Error;

    fn try_from(e: pb::Entity) -> Result<Entity> {
        Ok(Entity {
            partition_key: e.partition_key,
            row_key: e.row_key,
            timestamp: e.timestamp_ticks.map(DateTime),
            properties: properties_from_proto(e.properties)?,
        })
    }
}

/// The protobuf form of an If-Match condition ([`IfMatch::None`] is an absent condition).
pub fn if_match_to_proto(m: IfMatch) -> Option<pb::Condition> {
    use pb::condition::Kind;
    match m {
        IfMatch::None => None,
        IfMatch::Any => Some(pb::Condition {
            kind: Some(Kind::Any(true)),
        }),
        IfMatch::ETag(ETag(dt)) => Some(pb::Condition {
            kind: Some(Kind::EtagTicks(dt.ticks())),
        }),
    }
}

/// The If-Match condition of a protobuf write (absent = [`IfMatch::None`]).
pub fn if_match_from_proto(c: Option<&pb::Condition>) -> IfMatch {
    use pb::condition::Kind;
    match c.and_then(|c| c.kind.as_ref()) {
        None => IfMatch::None,
        Some(Kind::Any(_)) => IfMatch::Any,
        Some(Kind::EtagTicks(t)) => IfMatch::ETag(ETag(DateTime(*t))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_round_trip_through_protobuf() {
        let e = Entity::new("pk", "rk")
            .with("s", Value::String("x".into()))
            .with("i", Value::Int32(-1))
            .with("l", Value::Int64(i64::MAX))
            .with("d", Value::Double(1.5))
            .with("b", Value::Boolean(true))
            .with("t", Value::DateTime(DateTime(123)))
            .with("g", Value::Guid(uuid::Uuid::from_u128(7)))
            .with("bin", Value::Binary(vec![0, 1, 2]));
        let back = Entity::try_from(pb::Entity::from(&e)).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn malformed_values_are_invalid_input() {
        let bad = pb::Value {
            kind: Some(pb::value::Kind::GuidValue(vec![1, 2])),
        };
        assert_eq!(
            Value::try_from(bad).unwrap_err().code,
            ErrorCode::InvalidInput
        );
        assert_eq!(
            Value::try_from(pb::Value { kind: None }).unwrap_err().code,
            ErrorCode::InvalidInput
        );
        let dup = vec![
            pb::Property {
                name: "a".into(),
                value: Some((&Value::Int32(1)).into()),
            },
            pb::Property {
                name: "a".into(),
                value: Some((&Value::Int32(2)).into()),
            },
        ];
        assert_eq!(
            properties_from_proto(dup).unwrap_err().code,
            ErrorCode::DuplicatePropertiesSpecified
        );
    }
}

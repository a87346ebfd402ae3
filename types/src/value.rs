//! EDM property values.
//!
//! Azure's entity properties are typed with the Entity Data Model: String, Int32, Int64, Double, Boolean,
//! DateTime (100-nanosecond precision, UTC), Guid and Binary. Nulls are never stored: a property set to
//! null is simply absent.

use std::fmt;

use chrono::{DateTime as ChronoDateTime, NaiveDateTime, SecondsFormat, Utc};

/// The EDM type of a property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EdmType {
    String,
    Int32,
    Int64,
    Double,
    Boolean,
    DateTime,
    Guid,
    Binary,
}

impl EdmType {
    /// The `Edm.*` name used in `@odata.type` annotations.
    pub fn edm_name(self) -> &'static str {
        match self {
            EdmType::String => "Edm.String",
            EdmType::Int32 => "Edm.Int32",
            EdmType::Int64 => "Edm.Int64",
            EdmType::Double => "Edm.Double",
            EdmType::Boolean => "Edm.Boolean",
            EdmType::DateTime => "Edm.DateTime",
            EdmType::Guid => "Edm.Guid",
            EdmType::Binary => "Edm.Binary",
        }
    }

    pub fn from_edm_name(name: &str) -> Option<EdmType> {
        Some(match name {
            "Edm.String" => EdmType::String,
            "Edm.Int32" => EdmType::Int32,
            "Edm.Int64" => EdmType::Int64,
            "Edm.Double" => EdmType::Double,
            "Edm.Boolean" => EdmType::Boolean,
            "Edm.DateTime" => EdmType::DateTime,
            "Edm.Guid" => EdmType::Guid,
            "Edm.Binary" => EdmType::Binary,
            _ => return None,
        })
    }
}

/// A UTC instant with Azure's precision: 100-nanosecond ticks since the Unix epoch (negative before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DateTime(pub i64);

/// Ticks (100 ns) per second.
pub const TICKS_PER_SECOND: i64 = 10_000_000;

impl DateTime {
    /// Azure's smallest DateTime: 1601-01-01T00:00:00Z.
    pub const MIN: DateTime = DateTime(-116_444_736_000_000_000);
    /// Azure's largest DateTime: 9999-12-31T23:59:59.9999999Z.
    pub const MAX: DateTime = DateTime(2_534_023_007_999_999_999);

    pub fn ticks(self) -> i64 {
        self.0
    }

    pub fn from_chrono(t: ChronoDateTime<Utc>) -> DateTime {
        let secs = t.timestamp();
        let sub = i64::from(t.timestamp_subsec_nanos()) / 100;
        DateTime(secs.saturating_mul(TICKS_PER_SECOND).saturating_add(sub))
    }

    pub fn to_chrono(self) -> Option<ChronoDateTime<Utc>> {
        let secs = self.0.div_euclid(TICKS_PER_SECOND);
        let nanos = (self.0.rem_euclid(TICKS_PER_SECOND) * 100) as u32;
        ChronoDateTime::from_timestamp(secs, nanos)
    }

    /// The wall clock now, truncated to 100 ns.
    pub fn now() -> DateTime {
        DateTime::from_chrono(Utc::now())
    }

    /// Parses an ISO 8601 instant as Azure accepts it: `2020-09-15T23:02:10.6970439Z`, with 0 to 7
    /// fractional digits, `Z` or an offset; a value without zone is taken as UTC.
    pub fn parse(s: &str) -> Option<DateTime> {
        let t = if let Ok(t) = ChronoDateTime::parse_from_rfc3339(s) {
            t.with_timezone(&Utc)
        } else {
            let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
                .ok()?;
            naive.and_utc()
        };
        let dt = DateTime::from_chrono(t);
        (DateTime::MIN..=DateTime::MAX).contains(&dt).then_some(dt)
    }

    /// Azure's wire form: always seven fractional digits, `Z`.
    pub fn to_iso(self) -> String {
        match self.to_chrono() {
            Some(t) => {
                let base = t.to_rfc3339_opts(SecondsFormat::Secs, true);
                // base ends with 'Z'; insert the 7-digit fraction before it.
                let frac = self.0.rem_euclid(TICKS_PER_SECOND);
                format!("{}.{:07}Z", &base[..base.len() - 1], frac)
            }
            None => format!("{}", self.0),
        }
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_iso())
    }
}

/// A typed property value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Int32(i32),
    Int64(i64),
    Double(f64),
    Boolean(bool),
    DateTime(DateTime),
    Guid(uuid::Uuid),
    Binary(Vec<u8>),
}

impl Value {
    pub fn edm_type(&self) -> EdmType {
        match self {
            Value::String(_) => EdmType::String,
            Value::Int32(_) => EdmType::Int32,
            Value::Int64(_) => EdmType::Int64,
            Value::Double(_) => EdmType::Double,
            Value::Boolean(_) => EdmType::Boolean,
            Value::DateTime(_) => EdmType::DateTime,
            Value::Guid(_) => EdmType::Guid,
            Value::Binary(_) => EdmType::Binary,
        }
    }

    /// The size Azure charges for this value when it computes an entity's size: strings count two bytes
    /// per UTF-16 code unit plus four, binaries their length plus four, fixed types their width.
    pub fn azure_size(&self) -> usize {
        match self {
            Value::String(s) => 4 + 2 * s.encode_utf16().count(),
            Value::Binary(b) => 4 + b.len(),
            Value::Int32(_) => 4,
            Value::Int64(_) | Value::Double(_) | Value::DateTime(_) => 8,
            Value::Boolean(_) => 1,
            Value::Guid(_) => 16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_round_trips_with_seven_digits() {
        let dt = DateTime::parse("2020-09-15T23:02:10.6970439Z").unwrap();
        assert_eq!(dt.to_iso(), "2020-09-15T23:02:10.6970439Z");
        let whole = DateTime::parse("1973-10-04T00:00:00Z").unwrap();
        assert_eq!(whole.to_iso(), "1973-10-04T00:00:00.0000000Z");
        assert_eq!(DateTime::parse("1973-10-04T00:00:00").unwrap(), whole);
    }

    #[test]
    fn datetime_bounds_are_azures() {
        assert_eq!(DateTime::MIN.to_iso(), "1601-01-01T00:00:00.0000000Z");
        assert_eq!(DateTime::MAX.to_iso(), "9999-12-31T23:59:59.9999999Z");
        assert!(DateTime::parse("1600-12-31T23:59:59Z").is_none());
        assert!(DateTime::parse("not a date").is_none());
    }

    #[test]
    fn edm_names_round_trip() {
        for t in [
            EdmType::String,
            EdmType::Int32,
            EdmType::Int64,
            EdmType::Double,
            EdmType::Boolean,
            EdmType::DateTime,
            EdmType::Guid,
            EdmType::Binary,
        ] {
            assert_eq!(EdmType::from_edm_name(t.edm_name()), Some(t));
        }
    }
}

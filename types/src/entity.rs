//! Entities, their keys and ETags, and Azure's size limits.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, ErrorCode, Result};
use crate::names::{validate_key, validate_property_name};
use crate::value::{DateTime, Value};

/// Azure's limits on entities and requests.
pub mod limits {
    /// Custom properties per entity (255 minus the three system properties).
    pub const MAX_PROPERTIES: usize = 252;
    /// Size of one entity as Azure counts it.
    pub const MAX_ENTITY_BYTES: usize = 1024 * 1024;
    /// Size of one String or Binary value.
    pub const MAX_VALUE_BYTES: usize = 64 * 1024;
    /// Size of a PartitionKey or RowKey (UTF-16 bytes).
    pub const MAX_KEY_BYTES: usize = 1024;
    /// Characters in a property name.
    pub const MAX_PROPERTY_NAME_CHARS: usize = 255;
    /// Operations in one entity group transaction.
    pub const MAX_BATCH_OPERATIONS: usize = 100;
    /// A request body (and a whole batch).
    pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
    /// Entities in one query page and the largest `$top`.
    pub const MAX_PAGE_ENTITIES: usize = 1000;
    /// Discrete comparisons in one `$filter`.
    pub const MAX_FILTER_COMPARISONS: usize = 15;
}

/// The primary key of an entity within a table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey {
    pub partition_key: String,
    pub row_key: String,
}

impl EntityKey {
    pub fn new(partition_key: impl Into<String>, row_key: impl Into<String>) -> Self {
        EntityKey {
            partition_key: partition_key.into(),
            row_key: row_key.into(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        validate_key("PartitionKey", &self.partition_key)?;
        validate_key("RowKey", &self.row_key)
    }
}

/// An entity: its key, the server-set timestamp (absent until stored) and its custom properties.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entity {
    pub partition_key: String,
    pub row_key: String,
    /// Set by the leader when the write is proposed; `None` on entities a client sends.
    pub timestamp: Option<DateTime>,
    pub properties: BTreeMap<String, Value>,
}

impl Entity {
    pub fn new(partition_key: impl Into<String>, row_key: impl Into<String>) -> Self {
        Entity {
            partition_key: partition_key.into(),
            row_key: row_key.into(),
            timestamp: None,
            properties: BTreeMap::new(),
        }
    }

    /// Builder-style property setter.
    pub fn with(mut self, name: impl Into<String>, value: Value) -> Self {
        self.properties.insert(name.into(), value);
        self
    }

    pub fn key(&self) -> EntityKey {
        EntityKey::new(self.partition_key.clone(), self.row_key.clone())
    }

    /// The entity's ETag, if it has been stored.
    pub fn etag(&self) -> Option<ETag> {
        self.timestamp.map(ETag)
    }

    /// The size Azure counts against the 1 MiB limit: 4 bytes of overhead, the keys as UTF-16, and for each
    /// property 8 bytes plus its name as UTF-16 plus its value.
    pub fn azure_size(&self) -> usize {
        let keys =
            2 * (self.partition_key.encode_utf16().count() + self.row_key.encode_utf16().count());
        let props: usize = self
            .properties
            .iter()
            .map(|(name, value)| 8 + 2 * name.encode_utf16().count() + value.azure_size())
            .sum();
        4 + keys + props
    }

    /// Checks every Azure limit on a client-supplied entity.
    pub fn validate(&self) -> Result<()> {
        self.key().validate()?;
        if self.properties.len() > limits::MAX_PROPERTIES {
            return Err(Error::from_code(ErrorCode::TooManyProperties));
        }
        for (name, value) in &self.properties {
            validate_property_name(name)?;
            if matches!(name.as_str(), "PartitionKey" | "RowKey" | "Timestamp") {
                return Err(Error::new(
                    ErrorCode::PropertyNameInvalid,
                    format!("The property name {name} is reserved."),
                ));
            }
            let too_large = match value {
                Value::String(s) => s.encode_utf16().count() * 2 > limits::MAX_VALUE_BYTES,
                Value::Binary(b) => b.len() > limits::MAX_VALUE_BYTES,
                _ => false,
            };
            if too_large {
                return Err(Error::from_code(ErrorCode::PropertyValueTooLarge));
            }
            if let Value::DateTime(dt) = value
                && !(DateTime::MIN..=DateTime::MAX).contains(dt)
            {
                return Err(Error::new(
                    ErrorCode::OutOfRangeInput,
                    format!("The DateTime value of {name} is out of range."),
                ));
            }
        }
        if self.azure_size() > limits::MAX_ENTITY_BYTES {
            return Err(Error::from_code(ErrorCode::EntityTooLarge));
        }
        Ok(())
    }
}

/// An entity's version tag. Azure derives it from the entity's Timestamp, so the leader makes timestamps
/// strictly increasing per range to keep ETags unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ETag(pub DateTime);

impl ETag {
    /// Azure's form: `W/"datetime'2020-09-15T23%3A02%3A10.6970439Z'"` (colons percent-encoded).
    pub fn to_header(self) -> String {
        format!("W/\"datetime'{}'\"", self.0.to_iso().replace(':', "%3A"))
    }

    /// An ETag no entity ever carries: Timestamps come from the clock of the replica that applies a
    /// write, never 1601-01-01. A condition on it fails for every stored entity, which is how an
    /// `If-Match` with a foreign entity tag (`W/"wrong"`) must behave.
    pub const NEVER_ISSUED: ETag = ETag(DateTime::MIN);

    /// Parses Azure's weak ETag form. Anything else is not an ETag Trestle issued.
    pub fn parse(s: &str) -> Option<ETag> {
        let inner = s.strip_prefix("W/\"datetime'")?.strip_suffix("'\"")?;
        let decoded = inner.replace("%3A", ":").replace("%3a", ":");
        DateTime::parse(&decoded).map(ETag)
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_header())
    }
}

/// The If-Match condition of an update, merge or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMatch {
    /// No condition: insert-or-replace / insert-or-merge semantics (the entity may be absent).
    None,
    /// `*`: the entity must exist, any version.
    Any,
    /// The entity must exist with exactly this ETag.
    ETag(ETag),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_matches_azures_wire_form() {
        let dt = DateTime::parse("2020-09-15T23:02:10.6970439Z").unwrap();
        let etag = ETag(dt);
        assert_eq!(
            etag.to_header(),
            "W/\"datetime'2020-09-15T23%3A02%3A10.6970439Z'\""
        );
        assert_eq!(ETag::parse(&etag.to_header()), Some(etag));
        assert_eq!(ETag::parse("\"abc\""), None);
    }

    #[test]
    fn limits_are_enforced_with_azure_codes() {
        let mut e = Entity::new("pk", "rk");
        for i in 0..=limits::MAX_PROPERTIES {
            e.properties.insert(format!("p{i}"), Value::Int32(1));
        }
        assert_eq!(e.validate().unwrap_err().code, ErrorCode::TooManyProperties);

        let big = Entity::new("pk", "rk").with("s", Value::String("x".repeat(32 * 1024 + 1)));
        assert_eq!(
            big.validate().unwrap_err().code,
            ErrorCode::PropertyValueTooLarge
        );
        let ok = Entity::new("pk", "rk").with("s", Value::String("x".repeat(32 * 1024)));
        assert!(ok.validate().is_ok());

        let mut huge = Entity::new("pk", "rk");
        for i in 0..20 {
            huge.properties
                .insert(format!("b{i}"), Value::Binary(vec![0; 60 * 1024]));
        }
        assert_eq!(huge.validate().unwrap_err().code, ErrorCode::EntityTooLarge);

        let reserved = Entity::new("pk", "rk").with("Timestamp", Value::Int32(1));
        assert_eq!(
            reserved.validate().unwrap_err().code,
            ErrorCode::PropertyNameInvalid
        );
    }
}

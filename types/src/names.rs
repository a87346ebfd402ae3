//! Name rules: table names, PartitionKey/RowKey values and property names, as Azure enforces them.

use std::fmt;

use crate::entity::limits;
use crate::error::{Error, ErrorCode, Result};

/// A validated table name: `^[A-Za-z][A-Za-z0-9]{2,62}$`, not `tables`. Azure compares table names
/// case-insensitively but preserves their case, so equality and lookups go through [`TableName::folded`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName(String);

impl TableName {
    pub fn new(name: &str) -> Result<TableName> {
        let bytes = name.as_bytes();
        let valid = (3..=63).contains(&bytes.len())
            && bytes[0].is_ascii_alphabetic()
            && bytes.iter().all(u8::is_ascii_alphanumeric)
            && !name.eq_ignore_ascii_case("tables");
        if valid {
            Ok(TableName(name.to_string()))
        } else {
            Err(Error::from_code(ErrorCode::InvalidResourceName))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-folded form used as the catalog key.
    pub fn folded(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a PartitionKey or RowKey value: at most 1 KiB (UTF-16 code units × 2, as Azure counts), and none of
/// `/ \ # ?` or the control characters U+0000–U+001F and U+007F–U+009F. The empty string is allowed.
pub fn validate_key(which: &str, key: &str) -> Result<()> {
    if key.encode_utf16().count() * 2 > limits::MAX_KEY_BYTES {
        return Err(Error::new(
            ErrorCode::OutOfRangeInput,
            format!("The {which} value is larger than 1 KiB."),
        ));
    }
    if let Some(c) = key
        .chars()
        .find(|&c| matches!(c, '/' | '\\' | '#' | '?' | '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'))
    {
        return Err(Error::new(
            ErrorCode::InvalidInput,
            format!("The {which} contains the character {c:?}, which is not allowed."),
        ));
    }
    Ok(())
}

/// Checks a custom property name: a C# identifier (letter or `_` first, then letters, digits, `_`), at most
/// 255 characters, and not one of the system property names.
pub fn validate_property_name(name: &str) -> Result<()> {
    if name.chars().count() > limits::MAX_PROPERTY_NAME_CHARS {
        return Err(Error::from_code(ErrorCode::PropertyNameTooLong));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_alphanumeric() || c == '_') {
        return Err(Error::new(
            ErrorCode::PropertyNameInvalid,
            format!("The property name {name:?} is invalid."),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_follow_azure_rules() {
        for ok in ["abc", "Customers", "a1b2c3", &"x".repeat(63)] {
            assert!(TableName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "1abc",
            "ab-c",
            "tables",
            "Tables",
            "",
            &"x".repeat(64),
            "tbl_1",
        ] {
            let err = TableName::new(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidResourceName, "{bad}");
        }
        assert_eq!(TableName::new("MyTable").unwrap().folded(), "mytable");
    }

    #[test]
    fn keys_reject_forbidden_characters_and_oversize() {
        assert!(validate_key("PartitionKey", "").is_ok());
        assert!(validate_key("PartitionKey", "ok key ü").is_ok());
        for bad in ["a/b", "a\\b", "a#b", "a?b", "a\u{1}b", "a\u{85}b"] {
            assert!(validate_key("RowKey", bad).is_err(), "{bad:?}");
        }
        assert!(validate_key("RowKey", &"k".repeat(512)).is_ok());
        assert_eq!(
            validate_key("RowKey", &"k".repeat(513)).unwrap_err().code,
            ErrorCode::OutOfRangeInput
        );
    }

    #[test]
    fn property_names_are_identifiers() {
        assert!(validate_property_name("Age").is_ok());
        assert!(validate_property_name("_x1").is_ok());
        assert_eq!(
            validate_property_name("1x").unwrap_err().code,
            ErrorCode::PropertyNameInvalid
        );
        assert_eq!(
            validate_property_name("a-b").unwrap_err().code,
            ErrorCode::PropertyNameInvalid
        );
        assert_eq!(
            validate_property_name("").unwrap_err().code,
            ErrorCode::PropertyNameInvalid
        );
        assert_eq!(
            validate_property_name(&"p".repeat(256)).unwrap_err().code,
            ErrorCode::PropertyNameTooLong
        );
    }
}

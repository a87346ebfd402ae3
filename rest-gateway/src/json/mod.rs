//! The EDM JSON formats of the Table service (OData v3 "light" JSON).
//!
//! - [`parse`]: request bodies → [`trestle_types::Entity`], with Azure's type inference and
//!   `@odata.type` annotations, duplicate detection and every limit of [`trestle_types::Entity::validate`].
//! - [`write`]: entities and tables → response bodies at the three metadata levels.
//!
//! The metadata level of a response comes from `$format` if present, else from `Accept`
//! ([`MetadataLevel::negotiate`]). Atom/XML is refused with 415 `AtomFormatNotSupported`, as Azure does for
//! every API version since 2015-12-11.

pub mod parse;
pub mod write;

pub use parse::{ParsedEntity, parse_entity, parse_entity_json, parse_table_name};
pub use write::{EntityUrls, entity_document, query_document, table_document, tables_document};

use trestle_types::ErrorCode;

use crate::error::{ApiError, ApiResult};

/// How much OData metadata a JSON response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataLevel {
    /// `odata=nometadata`: properties only; the client infers types.
    None,
    /// `odata=minimalmetadata` (the default): `odata.metadata`, `odata.etag` and annotations for types
    /// JSON cannot express.
    Minimal,
    /// `odata=fullmetadata`: also `odata.type`, `odata.id`, `odata.editLink` and every annotation.
    Full,
}

impl MetadataLevel {
    /// The response `Content-Type` for this level.
    pub fn content_type(self) -> &'static str {
        match self {
            MetadataLevel::None => "application/json;odata=nometadata;streaming=true;charset=utf-8",
            MetadataLevel::Minimal => {
                "application/json;odata=minimalmetadata;streaming=true;charset=utf-8"
            }
            MetadataLevel::Full => {
                "application/json;odata=fullmetadata;streaming=true;charset=utf-8"
            }
        }
    }

    /// Chooses the level from `$format` (which wins) or `Accept`. A request that accepts only Atom/XML gets
    /// 415 `AtomFormatNotSupported`; no `Accept` at all means minimal metadata.
    pub fn negotiate(accept: Option<&str>, format_param: Option<&str>) -> ApiResult<MetadataLevel> {
        if let Some(format) = format_param {
            let lower = format.trim().to_ascii_lowercase();
            if lower == "json" {
                return Ok(MetadataLevel::Minimal);
            }
            return match Self::from_media_range(&lower) {
                Some(level) => Ok(level),
                None if lower.contains("atom") || lower.contains("xml") => {
                    Err(ApiError::from_code(ErrorCode::AtomFormatNotSupported))
                }
                None => Err(ApiError::new(
                    ErrorCode::InvalidQueryParameterValue,
                    format!("The $format value {format:?} is not supported."),
                )),
            };
        }
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
            return Ok(MetadataLevel::Minimal);
        };
        let mut atom = false;
        for range in accept.split(',') {
            let lower = range.trim().to_ascii_lowercase();
            if let Some(level) = Self::from_media_range(&lower) {
                return Ok(level);
            }
            if lower.starts_with("*/*") || lower.starts_with("application/*") {
                return Ok(MetadataLevel::Minimal);
            }
            atom |= lower.contains("atom") || lower.contains("xml");
        }
        if atom {
            Err(ApiError::from_code(ErrorCode::AtomFormatNotSupported))
        } else {
            Err(ApiError::from_code(ErrorCode::MediaTypeNotSupported))
        }
    }

    fn from_media_range(lower: &str) -> Option<MetadataLevel> {
        if !lower.starts_with("application/json") {
            return None;
        }
        Some(if lower.contains("odata=nometadata") {
            MetadataLevel::None
        } else if lower.contains("odata=fullmetadata") {
            MetadataLevel::Full
        } else {
            MetadataLevel::Minimal
        })
    }
}

/// Checks a request body's `Content-Type`: JSON (or none) is fine, Atom/XML gets 415
/// `AtomFormatNotSupported`, anything else 415 `MediaTypeNotSupported`.
pub fn check_content_type(content_type: Option<&str>) -> ApiResult<()> {
    let Some(ct) = content_type
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
    else {
        return Ok(());
    };
    if ct.starts_with("application/json") {
        Ok(())
    } else if ct.contains("atom") || ct.contains("xml") {
        Err(ApiError::from_code(ErrorCode::AtomFormatNotSupported))
    } else {
        Err(ApiError::from_code(ErrorCode::MediaTypeNotSupported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_format_then_accept() {
        type M = MetadataLevel;
        assert_eq!(M::negotiate(None, None).unwrap(), M::Minimal);
        assert_eq!(
            M::negotiate(Some("application/json;odata=nometadata"), None).unwrap(),
            M::None
        );
        assert_eq!(
            M::negotiate(Some("application/json;odata=fullmetadata"), None).unwrap(),
            M::Full
        );
        assert_eq!(
            M::negotiate(Some("application/json"), None).unwrap(),
            M::Minimal
        );
        assert_eq!(M::negotiate(Some("*/*"), None).unwrap(), M::Minimal);
        assert_eq!(
            M::negotiate(
                Some("application/json;odata=nometadata"),
                Some("application/json;odata=fullmetadata")
            )
            .unwrap(),
            M::Full
        );
        assert_eq!(
            M::negotiate(Some("application/atom+xml"), None)
                .unwrap_err()
                .code,
            ErrorCode::AtomFormatNotSupported
        );
        assert_eq!(
            M::negotiate(None, Some("atom")).unwrap_err().code,
            ErrorCode::AtomFormatNotSupported
        );
        assert_eq!(
            M::negotiate(Some("text/plain"), None).unwrap_err().code,
            ErrorCode::MediaTypeNotSupported
        );
    }

    #[test]
    fn content_type_checks() {
        assert!(check_content_type(None).is_ok());
        assert!(check_content_type(Some("application/json;odata=nometadata")).is_ok());
        assert_eq!(
            check_content_type(Some("application/atom+xml"))
                .unwrap_err()
                .code,
            ErrorCode::AtomFormatNotSupported
        );
        assert_eq!(
            check_content_type(Some("text/csv")).unwrap_err().code,
            ErrorCode::MediaTypeNotSupported
        );
    }
}

//! Request handlers, one module per family of Azure operations, plus the request-header rules they
//! share (`If-Match`, `If-None-Match`, `Prefer`, `$top`, `$select`) so single operations and `$batch`
//! operations interpret them identically.

pub(crate) mod batch;
pub(crate) mod entities;
pub(crate) mod query;
pub(crate) mod service;
pub(crate) mod tables;

use trestle_types::{ETag, ErrorCode, IfMatch, WriteKind, limits};

use crate::auth::Access;
use crate::error::{ApiError, ApiResult};

/// What a `Prefer` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefer {
    NoContent,
    Content,
}

/// Reads `Prefer: return-no-content` / `return-content` (anything else is ignored, as HTTP says).
pub(crate) fn parse_prefer(value: Option<&str>) -> Option<Prefer> {
    let value = value?.to_ascii_lowercase();
    if value.contains("return-no-content") {
        Some(Prefer::NoContent)
    } else if value.contains("return-content") {
        Some(Prefer::Content)
    } else {
        None
    }
}

/// Parses `If-Match`: absent, `*`, or an entity tag.
///
/// An entity tag Trestle did not issue (`W/"wrong"`, `w/"…"`, a strong `"…"`, a weak tag in another
/// format) is a well-formed condition that no entity meets, so the write fails with 412
/// `UpdateConditionNotSatisfied` (404 if the entity is missing), as Azure answers (Azurite #1229:
/// "Azure and Storage Emulator return 412 for this etag"). A value that is not an entity tag at all
/// (`MalformedETag`, no quotes) is 400 `InvalidInput` (Azurite #2013, #1829: "The etag value … is not
/// valid").
pub(crate) fn parse_if_match(value: Option<&str>) -> ApiResult<IfMatch> {
    match value.map(str::trim) {
        None => Ok(IfMatch::None),
        Some("*") => Ok(IfMatch::Any),
        Some(text) => match ETag::parse(text) {
            Some(etag) => Ok(IfMatch::ETag(etag)),
            None if is_entity_tag(text) => Ok(IfMatch::ETag(ETag::NEVER_ISSUED)),
            None => Err(ApiError::invalid_input(format!(
                "The etag value {text:?} specified in one of the request headers is not valid."
            ))),
        },
    }
}

/// RFC 9110's `entity-tag`: an optional weak prefix (`W/`, and `w/` as clients write it) and a quoted
/// string without inner quotes.
fn is_entity_tag(text: &str) -> bool {
    let opaque = text
        .strip_prefix("W/")
        .or_else(|| text.strip_prefix("w/"))
        .unwrap_or(text);
    opaque.len() >= 2
        && opaque.starts_with('"')
        && opaque.ends_with('"')
        && !opaque[1..opaque.len() - 1].contains('"')
}

/// Azure refuses `If-None-Match` on entity writes.
pub(crate) fn reject_if_none_match(value: Option<&str>) -> ApiResult<()> {
    match value {
        Some(_) => Err(ApiError::invalid_input(
            "If-None-Match HTTP header cannot be specified for PUT, MERGE, PATCH or DELETE operations.",
        )),
        None => Ok(()),
    }
}

/// The write an entity-URL request performs: PUT replaces, MERGE/PATCH merge; without `If-Match` both
/// become upserts (Insert Or Replace / Insert Or Merge).
pub(crate) fn update_kind(method: &str, if_match: IfMatch) -> ApiResult<(WriteKind, Access)> {
    let replace = match method {
        "PUT" => true,
        "MERGE" | "PATCH" => false,
        _ => return Err(ApiError::from_code(ErrorCode::MethodNotAllowed)),
    };
    Ok(match (replace, if_match) {
        (true, IfMatch::None) => (WriteKind::InsertOrReplace, Access::UpsertEntity),
        (true, _) => (WriteKind::Replace, Access::UpdateEntity),
        (false, IfMatch::None) => (WriteKind::InsertOrMerge, Access::UpsertEntity),
        (false, _) => (WriteKind::Merge, Access::UpdateEntity),
    })
}

/// Delete requires `If-Match` (`*` for unconditional).
pub(crate) fn delete_condition(value: Option<&str>) -> ApiResult<IfMatch> {
    match parse_if_match(value)? {
        IfMatch::None => Err(ApiError::new(
            ErrorCode::MissingRequiredHeader,
            "An HTTP header that's mandatory for this request is not specified: If-Match.",
        )),
        condition => Ok(condition),
    }
}

/// `$top`: 1 to 1000.
pub(crate) fn parse_top(value: Option<&str>) -> ApiResult<Option<usize>> {
    let Some(text) = value else { return Ok(None) };
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=limits::MAX_PAGE_ENTITIES).contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::invalid_input(format!(
            "The value {text:?} of $top is not valid: it must be an integer from 1 to 1000."
        ))),
    }
}

/// `$select`: a comma-separated list; `*` or empty selects everything.
pub(crate) fn parse_select(value: Option<&str>) -> Option<Vec<String>> {
    let names: Vec<String> = value?
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() || names.iter().any(|n| n == "*") {
        None
    } else {
        Some(names)
    }
}

#[cfg(test)]
mod tests {
    use trestle_types::DateTime;

    use super::*;

    #[test]
    fn if_match_forms() {
        assert_eq!(parse_if_match(None).unwrap(), IfMatch::None);
        assert_eq!(parse_if_match(Some("*")).unwrap(), IfMatch::Any);
        let etag = ETag(DateTime::parse("2020-09-15T23:02:10.6970439Z").unwrap());
        assert_eq!(
            parse_if_match(Some(&etag.to_header())).unwrap(),
            IfMatch::ETag(etag)
        );
        for foreign in [
            "\"strong\"",
            "W/\"wrong\"",
            "w/\"datetime'2020-09-15T23%3A02%3A10.6970439Z'\"",
            "W/\"0x8D9A1B2C3D4E5F6\"",
        ] {
            assert_eq!(
                parse_if_match(Some(foreign)).unwrap(),
                IfMatch::ETag(ETag::NEVER_ISSUED),
                "{foreign}"
            );
        }
        for malformed in ["MalformedETag", "W/wrong", "\"a\"b\"", "\""] {
            assert_eq!(
                parse_if_match(Some(malformed)).unwrap_err().code,
                ErrorCode::InvalidInput,
                "{malformed}"
            );
        }
        assert_eq!(
            parse_if_match(Some("")).unwrap_err().code,
            ErrorCode::InvalidInput
        );
        assert_eq!(
            delete_condition(None).unwrap_err().code,
            ErrorCode::MissingRequiredHeader
        );
        assert_eq!(
            reject_if_none_match(Some("*")).unwrap_err().code,
            ErrorCode::InvalidInput
        );
    }

    #[test]
    fn update_kinds() {
        assert_eq!(
            update_kind("PUT", IfMatch::None).unwrap().0,
            WriteKind::InsertOrReplace
        );
        assert_eq!(
            update_kind("PUT", IfMatch::Any).unwrap().0,
            WriteKind::Replace
        );
        assert_eq!(
            update_kind("PATCH", IfMatch::None).unwrap().0,
            WriteKind::InsertOrMerge
        );
        assert_eq!(
            update_kind("MERGE", IfMatch::Any).unwrap(),
            (WriteKind::Merge, Access::UpdateEntity)
        );
        assert!(update_kind("GET", IfMatch::Any).is_err());
    }

    #[test]
    fn top_select_prefer() {
        assert_eq!(parse_top(None).unwrap(), None);
        assert_eq!(parse_top(Some("1000")).unwrap(), Some(1000));
        for bad in ["0", "1001", "-1", "x", ""] {
            assert_eq!(
                parse_top(Some(bad)).unwrap_err().code,
                ErrorCode::InvalidInput,
                "{bad}"
            );
        }
        assert_eq!(
            parse_select(Some("a, b,,c")),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(parse_select(Some("*")), None);
        assert_eq!(parse_select(Some("")), None);
        assert_eq!(
            parse_prefer(Some("return-no-content")),
            Some(Prefer::NoContent)
        );
        assert_eq!(parse_prefer(Some("return-content")), Some(Prefer::Content));
        assert_eq!(parse_prefer(Some("respond-async")), None);
    }
}

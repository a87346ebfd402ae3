//! Continuation tokens in Azure's opaque wire format.
//!
//! Azure hands out `x-ms-continuation-NextPartitionKey` / `NextRowKey` / `NextTableName` values of the form
//! `1!<len>!<payload>`, where the payload is the base64 of the key with every `=` replaced by `-` and
//! `<len>` is the payload's length, e.g. `1!16!cGsxMjFhMTk2NQ--` for `pk121a1965`. The token names the
//! **next** row to return (inclusive). SDKs treat tokens as opaque and echo them back as the query
//! parameters `NextPartitionKey`, `NextRowKey` and `NextTableName`.
//!
//! Decoding is strict: a token that is not in this form is rejected (400), never guessed at.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use trestle_types::{EntityKey, ErrorCode};

use crate::error::{ApiError, ApiResult};

/// Encodes one key as a continuation token.
pub fn encode_token(key: &str) -> String {
    let payload = STANDARD.encode(key.as_bytes()).replace('=', "-");
    format!("1!{}!{}", payload.len(), payload)
}

/// Decodes a continuation token back into the key it names; `None` if it is not a token we issue.
pub fn decode_token(token: &str) -> Option<String> {
    let mut parts = token.splitn(3, '!');
    let version = parts.next()?;
    let len: usize = parts.next()?.parse().ok()?;
    let payload = parts.next()?;
    if version != "1" || payload.len() != len {
        return None;
    }
    let bytes = STANDARD.decode(payload.replace('-', "=")).ok()?;
    String::from_utf8(bytes).ok()
}

/// The response headers for a query page that has more to come.
pub fn entity_continuation_headers(next: &EntityKey) -> [(&'static str, String); 2] {
    [
        (
            "x-ms-continuation-NextPartitionKey",
            encode_token(&next.partition_key),
        ),
        ("x-ms-continuation-NextRowKey", encode_token(&next.row_key)),
    ]
}

/// Reads `NextPartitionKey` / `NextRowKey` query parameters. A missing `NextRowKey` resumes at the start
/// of the partition; a `NextRowKey` without `NextPartitionKey` is an error.
pub fn parse_entity_continuation(
    next_partition_key: Option<&str>,
    next_row_key: Option<&str>,
) -> ApiResult<Option<EntityKey>> {
    let bad = |name: &str| {
        ApiError::new(
            ErrorCode::InvalidQueryParameterValue,
            format!("The continuation token in {name} is not valid."),
        )
    };
    match (next_partition_key, next_row_key) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(bad("NextRowKey")),
        (Some(pk), rk) => {
            let partition_key = decode_token(pk).ok_or_else(|| bad("NextPartitionKey"))?;
            let row_key = match rk {
                Some(rk) => decode_token(rk).ok_or_else(|| bad("NextRowKey"))?,
                None => String::new(),
            };
            Ok(Some(EntityKey::new(partition_key, row_key)))
        }
    }
}

/// Reads the `NextTableName` query parameter.
pub fn parse_table_continuation(next_table_name: Option<&str>) -> ApiResult<Option<String>> {
    next_table_name
        .map(|token| {
            decode_token(token).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidQueryParameterValue,
                    "The continuation token in NextTableName is not valid.",
                )
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_tokens_recorded_from_azure() {
        assert_eq!(encode_token("pk121a1965"), "1!16!cGsxMjFhMTk2NQ--");
        assert_eq!(
            decode_token("1!16!cGsxMjFhMTk2NQ--").as_deref(),
            Some("pk121a1965")
        );
        assert_eq!(
            decode_token("1!20!cmsxMjFhMTk2NTEyMw--").as_deref(),
            Some("rk121a1965123")
        );
    }

    #[test]
    fn round_trips_awkward_keys() {
        for key in [
            "",
            "a",
            "ab",
            "abc",
            "it's",
            "ü日本",
            "a b+c/d=e",
            &"x".repeat(600),
        ] {
            assert_eq!(
                decode_token(&encode_token(key)).as_deref(),
                Some(key),
                "{key:?}"
            );
        }
        assert_eq!(encode_token(""), "1!0!");
    }

    #[test]
    fn rejects_what_it_did_not_issue() {
        for bad in [
            "", "pk1", "2!4!YQ--", "1!5!YQ--", "1!x!YQ--", "1!4!@@@@", "1!4", "1!4!/w--",
        ] {
            assert_eq!(decode_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn continuation_parameters() {
        let pk = encode_token("p");
        let rk = encode_token("r");
        assert_eq!(
            parse_entity_continuation(Some(&pk), Some(&rk)).unwrap(),
            Some(EntityKey::new("p", "r"))
        );
        assert_eq!(
            parse_entity_continuation(Some(&pk), None).unwrap(),
            Some(EntityKey::new("p", ""))
        );
        assert_eq!(parse_entity_continuation(None, None).unwrap(), None);
        let err = parse_entity_continuation(None, Some(&rk)).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidQueryParameterValue);
        assert!(parse_entity_continuation(Some("garbage"), None).is_err());
        assert_eq!(
            parse_table_continuation(Some(&encode_token("t1")))
                .unwrap()
                .as_deref(),
            Some("t1")
        );
        assert!(parse_table_continuation(Some("t1")).is_err());
        let [(h1, v1), (h2, v2)] = entity_continuation_headers(&EntityKey::new("p", "r"));
        assert_eq!(
            (h1, v1.as_str(), h2, v2.as_str()),
            (
                "x-ms-continuation-NextPartitionKey",
                "1!4!cA--",
                "x-ms-continuation-NextRowKey",
                "1!4!cg--"
            )
        );
    }
}

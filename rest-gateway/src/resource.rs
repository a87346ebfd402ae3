//! Request addressing: which account and which resource a URL names.
//!
//! Path-style (`http://127.0.0.1:10002/devstoreaccount1/Tables`, the emulator form) and host-style
//! (`https://acct.table.core.windows.net/Tables`, also `acct.table.localhost`) URLs are both accepted.
//! A first path segment `{account}-secondary` names the read-only secondary endpoint. The rest of the
//! path is percent-decoded and parsed into a [`Resource`]:
//!
//! | path after the account        | resource                     |
//! |-------------------------------|------------------------------|
//! | (empty)                       | the service root             |
//! | `Tables`, `Tables()`          | the table collection         |
//! | `Tables('t')`                 | one table                    |
//! | `$batch`                      | entity group transactions    |
//! | `t`, `t()`                    | the entity set of table `t`  |
//! | `t(PartitionKey='p',RowKey='r')` | one entity (quotes doubled) |
//!
//! Parsing never panics; anything else is 400 `InvalidUri` (or `InvalidInput` for a malformed key).

use percent_encoding::percent_decode_str;
use trestle_types::{EntityKey, ErrorCode};

use crate::error::{ApiError, ApiResult};

/// What a request is addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub account: String,
    /// Addressed to `{account}-secondary` (reads only).
    pub secondary: bool,
    /// The account is the first path segment (emulator style) rather than part of the host name.
    pub path_style: bool,
    pub resource: Resource,
}

/// The resource within an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    ServiceRoot,
    Tables,
    Table(String),
    Batch,
    EntitySet(String),
    Entity { table: String, key: EntityKey },
}

impl Resource {
    /// The table the resource belongs to, if any.
    pub fn table(&self) -> Option<&str> {
        match self {
            Resource::Table(t) | Resource::EntitySet(t) | Resource::Entity { table: t, .. } => {
                Some(t)
            }
            Resource::ServiceRoot | Resource::Tables | Resource::Batch => None,
        }
    }
}

fn invalid_uri() -> ApiError {
    ApiError::from_code(ErrorCode::InvalidUri)
}

/// The account named by a host-style `Host` header (`acct.table.core.windows.net`, `acct.table.localhost`).
pub fn host_style_account(host: &str) -> Option<&str> {
    let host = host.split(':').next().unwrap_or(host);
    let (account, rest) = host.split_once('.')?;
    (rest.starts_with("table.") && !account.is_empty()).then_some(account)
}

/// Parses the request's host and raw (still percent-encoded) path.
pub fn parse_target(host: Option<&str>, raw_path: &str) -> ApiResult<Target> {
    let path = raw_path.strip_prefix('/').unwrap_or(raw_path);
    let (account_segment, rest, path_style) = match host.and_then(host_style_account) {
        Some(account) => (account.to_string(), path, false),
        None => {
            let (first, rest) = path.split_once('/').unwrap_or((path, ""));
            let first = decode(first)?;
            if first.is_empty() {
                return Err(invalid_uri());
            }
            (first, rest, true)
        }
    };
    let (account, secondary) = match account_segment.strip_suffix("-secondary") {
        Some(primary) => (primary.to_string(), true),
        None => (account_segment, false),
    };
    let rest = decode(rest)?;
    // The Python SDK addresses the path-style secondary as `/{account}-secondary/{account}/?...`; only
    // the service root is served there, so the repeated account segment is read as the root.
    if secondary && path_style && rest.trim_end_matches('/') == account {
        return Ok(Target {
            account,
            secondary,
            path_style,
            resource: Resource::ServiceRoot,
        });
    }
    let resource = parse_resource(&rest)?;
    Ok(Target {
        account,
        secondary,
        path_style,
        resource,
    })
}

fn decode(raw: &str) -> ApiResult<String> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| invalid_uri())
}

/// Parses the decoded path after the account.
pub fn parse_resource(path: &str) -> ApiResult<Resource> {
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        return Ok(Resource::ServiceRoot);
    }
    if path == "$batch" {
        return Ok(Resource::Batch);
    }
    let (name, args) = match path.find('(') {
        Some(open) => {
            let inner = path[open + 1..].strip_suffix(')').ok_or_else(invalid_uri)?;
            (&path[..open], Some(inner))
        }
        None => (path, None),
    };
    if name.is_empty() || name.contains(['/', '(', ')', '\'']) {
        return Err(invalid_uri());
    }
    if name.eq_ignore_ascii_case("Tables") {
        return match args {
            None | Some("") => Ok(Resource::Tables),
            Some(inner) => {
                let mut cursor = Cursor {
                    text: inner,
                    pos: 0,
                };
                let table = cursor.quoted()?;
                if !cursor.at_end() {
                    return Err(invalid_uri());
                }
                Ok(Resource::Table(table))
            }
        };
    }
    match args {
        None | Some("") => Ok(Resource::EntitySet(name.to_string())),
        Some(inner) => Ok(Resource::Entity {
            table: name.to_string(),
            key: parse_entity_key(inner)?,
        }),
    }
}

/// Parses `PartitionKey='p',RowKey='r'` (either order; `''` is an escaped quote).
pub fn parse_entity_key(inner: &str) -> ApiResult<EntityKey> {
    let bad = || ApiError::invalid_input("The entity key in the request URI is not valid.");
    let mut cursor = Cursor {
        text: inner,
        pos: 0,
    };
    let mut partition_key = None;
    let mut row_key = None;
    loop {
        let name = cursor.until('=').ok_or_else(bad)?.trim().to_string();
        let value = cursor.quoted().map_err(|_| bad())?;
        let slot = match name.as_str() {
            "PartitionKey" => &mut partition_key,
            "RowKey" => &mut row_key,
            _ => return Err(bad()),
        };
        if slot.replace(value).is_some() {
            return Err(bad());
        }
        if cursor.at_end() {
            break;
        }
        if !cursor.eat(',') {
            return Err(bad());
        }
    }
    match (partition_key, row_key) {
        (Some(pk), Some(rk)) => Ok(EntityKey::new(pk, rk)),
        _ => Err(bad()),
    }
}

/// Formats an entity's key predicate, `t(PartitionKey='p',RowKey='r')`, with quotes doubled and the keys
/// percent-encoded so the result is a valid URL path segment.
pub fn entity_path(table: &str, key: &EntityKey) -> String {
    format!(
        "{table}(PartitionKey='{}',RowKey='{}')",
        encode_key(&key.partition_key),
        encode_key(&key.row_key)
    )
}

fn encode_key(key: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'\'');
    percent_encoding::utf8_percent_encode(&key.replace('\'', "''"), SET).to_string()
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.text[self.pos..].starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// Everything up to (not including) `c`, consuming `c`.
    fn until(&mut self, c: char) -> Option<&str> {
        let rest = &self.text[self.pos..];
        let end = rest.find(c)?;
        self.pos += end + c.len_utf8();
        Some(&rest[..end])
    }

    /// A single-quoted string with `''` escapes.
    fn quoted(&mut self) -> ApiResult<String> {
        if !self.eat('\'') {
            return Err(invalid_uri());
        }
        let mut out = String::new();
        loop {
            let rest = &self.text[self.pos..];
            let end = rest.find('\'').ok_or_else(invalid_uri)?;
            out.push_str(&rest[..end]);
            self.pos += end + 1;
            if self.text[self.pos..].starts_with('\'') {
                out.push('\'');
                self.pos += 1;
            } else {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> ApiResult<Resource> {
        parse_target(Some("127.0.0.1:10002"), path).map(|t| t.resource)
    }

    #[test]
    fn path_style_resources() {
        let target = parse_target(Some("127.0.0.1:10002"), "/devstoreaccount1/Tables").unwrap();
        assert_eq!(target.account, "devstoreaccount1");
        assert!(target.path_style && !target.secondary);
        assert_eq!(target.resource, Resource::Tables);
        assert_eq!(
            resource("/devstoreaccount1").unwrap(),
            Resource::ServiceRoot
        );
        assert_eq!(
            resource("/devstoreaccount1/").unwrap(),
            Resource::ServiceRoot
        );
        assert_eq!(
            resource("/devstoreaccount1/Tables()").unwrap(),
            Resource::Tables
        );
        assert_eq!(
            resource("/devstoreaccount1/tables").unwrap(),
            Resource::Tables
        );
        assert_eq!(
            resource("/devstoreaccount1/Tables('my%20t''x')").unwrap(),
            Resource::Table("my t'x".into())
        );
        assert_eq!(
            resource("/devstoreaccount1/$batch").unwrap(),
            Resource::Batch
        );
        assert_eq!(
            resource("/devstoreaccount1/t1").unwrap(),
            Resource::EntitySet("t1".into())
        );
        assert_eq!(
            resource("/devstoreaccount1/t1()").unwrap(),
            Resource::EntitySet("t1".into())
        );
        let secondary = parse_target(None, "/devstoreaccount1-secondary/").unwrap();
        assert!(secondary.secondary);
        assert_eq!(secondary.account, "devstoreaccount1");
        let sdk_secondary =
            parse_target(None, "/devstoreaccount1-secondary/devstoreaccount1/").unwrap();
        assert_eq!(
            (sdk_secondary.secondary, sdk_secondary.resource),
            (true, Resource::ServiceRoot)
        );
    }

    #[test]
    fn entity_keys_with_quotes_and_encoding() {
        assert_eq!(
            resource("/a/t1(PartitionKey='p%27%27k',RowKey='r%2Ck)')").unwrap(),
            Resource::Entity {
                table: "t1".into(),
                key: EntityKey::new("p'k", "r,k)")
            }
        );
        assert_eq!(
            resource("/a/t1(RowKey='',PartitionKey='')").unwrap(),
            Resource::Entity {
                table: "t1".into(),
                key: EntityKey::new("", "")
            }
        );
        for bad in [
            "/a/t1(PartitionKey='p')",
            "/a/t1(PartitionKey='p',RowKey='r',RowKey='s')",
            "/a/t1(PartitionKey=p,RowKey='r')",
            "/a/t1(Foo='p',RowKey='r')",
            "/a/t1(PartitionKey='p'RowKey='r')",
        ] {
            assert!(resource(bad).is_err(), "{bad}");
        }
        for bad in [
            "/a/t1(PartitionKey='p',RowKey='r'",
            "/a/t1/x",
            "/a/Tables('x'",
            "//x",
            "/a/%FF",
        ] {
            assert!(resource(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entity_path_round_trips() {
        let key = EntityKey::new("it's ü", "a,b)");
        let path = entity_path("t1", &key);
        assert_eq!(path, "t1(PartitionKey='it''s%20%C3%BC',RowKey='a%2Cb%29')");
        assert_eq!(
            resource(&format!("/a/{path}")).unwrap(),
            Resource::Entity {
                table: "t1".into(),
                key
            }
        );
    }

    #[test]
    fn host_style() {
        assert_eq!(
            host_style_account("acct.table.core.windows.net"),
            Some("acct")
        );
        assert_eq!(
            host_style_account("acct.table.localhost:10002"),
            Some("acct")
        );
        assert_eq!(host_style_account("127.0.0.1:10002"), None);
        let target = parse_target(Some("acct.table.localhost:10002"), "/Tables").unwrap();
        assert_eq!(
            (target.account.as_str(), target.path_style),
            ("acct", false)
        );
        assert_eq!(target.resource, Resource::Tables);
    }
}

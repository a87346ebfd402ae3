//! The rules for lock names, lease TTLs and owner labels, the same everywhere (state machine, gRPC
//! service, SDK and `trestle ctl`).
//!
//! A **lock name** is 1–256 bytes of ASCII letters, digits and `.`, `_`, `-`, `/`, `:`; it neither starts
//! nor ends with `/` and has no empty segment (`//`). Names are case-sensitive. `trestle/` is reserved
//! for Trestle's own locks (clients may read them, and may take them only if they mean to act as
//! Trestle).
//!
//! A **TTL** is between [`MIN_TTL_MS`] and [`MAX_TTL_MS`]. An **owner** label (who holds a lease, for
//! humans: `host:pid`, a service name) is at most [`MAX_OWNER_BYTES`] bytes of printable ASCII.

use crate::LockError;

/// The longest lock name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// The shortest lease TTL: shorter leases would expire between two keep-alives of a healthy client.
pub const MIN_TTL_MS: u64 = 1_000;
/// The longest lease TTL. A new meta leader waits this long at most before expiring anything, so it
/// bounds how long locks of a dead client stay held after a leader change.
pub const MAX_TTL_MS: u64 = 300_000;
/// The longest owner label, in bytes.
pub const MAX_OWNER_BYTES: usize = 256;
/// The prefix of Trestle's own locks.
pub const RESERVED_PREFIX: &str = "trestle/";

/// Checks a lock name against the rules in the module header.
pub fn validate_name(name: &str) -> Result<(), LockError> {
    let bad = |why: &str| Err(LockError::InvalidName(format!("{name:?}: {why}")));
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return bad("a lock name is 1 to 256 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':'))
    {
        return bad("only ASCII letters, digits and . _ - / : are allowed");
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return bad("no leading or trailing '/' and no empty segment");
    }
    Ok(())
}

/// Checks a TTL against the documented bounds.
pub fn validate_ttl(ttl_ms: u64) -> Result<(), LockError> {
    if (MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl_ms) {
        Ok(())
    } else {
        Err(LockError::InvalidTtl(ttl_ms))
    }
}

/// Checks an owner label.
pub fn validate_owner(owner: &str) -> Result<(), LockError> {
    if owner.len() <= MAX_OWNER_BYTES && owner.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        Ok(())
    } else {
        Err(LockError::InvalidOwner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        for ok in [
            "a",
            "trestle/partition-manager",
            "jobs/nightly.backup",
            "x:1_2-3",
        ] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a b",
            "ä",
            "a\n",
            "semi;colon",
            long.as_str(),
        ] {
            assert!(
                matches!(validate_name(bad), Err(LockError::InvalidName(_))),
                "{bad:?}"
            );
        }
        assert!(validate_name(&"a".repeat(MAX_NAME_BYTES)).is_ok());
    }

    #[test]
    fn ttls_and_owners_have_bounds() {
        assert!(validate_ttl(MIN_TTL_MS).is_ok());
        assert!(validate_ttl(MAX_TTL_MS).is_ok());
        assert_eq!(validate_ttl(999), Err(LockError::InvalidTtl(999)));
        assert!(validate_ttl(MAX_TTL_MS + 1).is_err());
        assert!(validate_ttl(0).is_err());
        assert!(validate_owner("host-1:4242").is_ok());
        assert!(validate_owner("").is_ok());
        assert_eq!(validate_owner("tab\there"), Err(LockError::InvalidOwner));
        assert!(validate_owner(&"o".repeat(MAX_OWNER_BYTES + 1)).is_err());
    }
}

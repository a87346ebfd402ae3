//! The stored form of an entity: the value under its data key in `Cf::Data`.
//!
//! Layout: `crc32 (4 bytes, little-endian) ‖ format version (1 byte) ‖ prost StoredEntity`, where the crc
//! (crc32fast, IEEE) covers everything after it. The keys are not repeated in the value: they are in the
//! RocksDB key ([`trestle_engine::keys::data_key`]), and the caller hands them back to [`decode_entity`].
//! The same framing ([`seal`] / [`unseal`]) protects the meta group's catalog records.
//!
//! Invariants:
//! - every read of an entity goes through [`decode_entity`], which checks the crc before it parses a
//!   byte, so corrupted bytes are never served: they are [`ErrorCode::DataCorrupted`];
//! - [`encode_entity`] is a pure function of the entity (properties are in name order, prost encodes
//!   fields in a fixed order), so every replica writes byte-identical values for the same command;
//! - the version byte lets a later format coexist with this one; a value with an unknown version is
//!   treated as corrupt rather than guessed at.
//!
//! Why a crc on top of RocksDB's block checksums: those cover the SST files, not the memtable, the WAL
//! replay path, snapshot transfer between replicas or our own bugs. Four bytes per entity buy an
//! end-to-end check at the one place that matters: before a value reaches a client or a merge.

use prost::Message;
use trestle_proto::convert::{properties_from_proto, properties_to_proto};
use trestle_proto::internal::StoredEntity;
use trestle_types::{DateTime, Entity, Error, ErrorCode, Result};

/// The format version written by [`encode_entity`].
pub const FORMAT_VERSION: u8 = 1;

/// Bytes before the protobuf body: the crc and the version.
const HEADER_LEN: usize = 5;

/// Encodes an entity's timestamp and properties as a stored value. An entity without a timestamp (never
/// the case for what apply writes) is stored with timestamp 0.
pub fn encode_entity(entity: &Entity) -> Vec<u8> {
    let stored = StoredEntity {
        timestamp_ticks: entity.timestamp.map(DateTime::ticks).unwrap_or_default(),
        properties: properties_to_proto(&entity.properties),
    };
    seal(&stored.encode_to_vec())
}

/// Frames `body` as `crc32 ‖ version ‖ body`. The catalog's records use the same framing as entities.
pub fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&[0; 4]);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks the crc and the version of a value made by [`seal`] and returns its body; anything else is
/// [`ErrorCode::DataCorrupted`].
pub fn unseal(bytes: &[u8]) -> Result<&[u8]> {
    let (crc, rest) = bytes.split_first_chunk::<4>().ok_or_else(|| {
        corrupted(format!(
            "a stored value of {} bytes is too short",
            bytes.len()
        ))
    })?;
    let expected = u32::from_le_bytes(*crc);
    let actual = crc32fast::hash(rest);
    if expected != actual {
        return Err(corrupted(format!(
            "crc32 mismatch: stored {expected:08x}, computed {actual:08x}"
        )));
    }
    match rest.split_first() {
        Some((&FORMAT_VERSION, body)) => Ok(body),
        Some((version, _)) => Err(corrupted(format!(
            "unknown stored format version {version}"
        ))),
        None => Err(corrupted("a stored value has no version byte".to_string())),
    }
}

/// Decodes a stored value into the entity with keys `partition_key` / `row_key`. A crc mismatch, an
/// unknown version or an unparsable body is [`ErrorCode::DataCorrupted`].
pub fn decode_entity(partition_key: &str, row_key: &str, bytes: &[u8]) -> Result<Entity> {
    let stored = decode_stored(bytes)?;
    let properties = properties_from_proto(stored.properties)
        .map_err(|e| corrupted(format!("a stored property does not decode: {}", e.message)))?;
    Ok(Entity {
        partition_key: partition_key.to_string(),
        row_key: row_key.to_string(),
        timestamp: Some(DateTime(stored.timestamp_ticks)),
        properties,
    })
}

/// Checks the crc and version and parses the body, without building an [`Entity`].
pub fn decode_stored(bytes: &[u8]) -> Result<StoredEntity> {
    StoredEntity::decode(unseal(bytes)?)
        .map_err(|e| corrupted(format!("a stored entity does not parse: {e}")))
}

fn corrupted(message: String) -> Error {
    Error::new(ErrorCode::DataCorrupted, message)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use trestle_types::Value;

    use super::*;

    fn sample() -> Entity {
        let mut e = Entity::new("pk", "rk")
            .with("s", Value::String("héllo".into()))
            .with("i", Value::Int32(-7))
            .with("l", Value::Int64(i64::MIN))
            .with("d", Value::Double(2.5))
            .with("b", Value::Boolean(true))
            .with("t", Value::DateTime(DateTime(637_000_000_000_000_000)))
            .with("g", Value::Guid(uuid::Uuid::from_u128(0x1234)))
            .with("bin", Value::Binary(vec![0, 255, 7]));
        e.timestamp = Some(DateTime(42));
        e
    }

    #[test]
    fn every_edm_type_round_trips() {
        let e = sample();
        let bytes = encode_entity(&e);
        assert_eq!(bytes[4], FORMAT_VERSION);
        assert_eq!(decode_entity("pk", "rk", &bytes).unwrap(), e);
    }

    #[test]
    fn an_empty_entity_round_trips() {
        let mut e = Entity::new("", "");
        e.timestamp = Some(DateTime(-1));
        assert_eq!(decode_entity("", "", &encode_entity(&e)).unwrap(), e);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = encode_entity(&sample());
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                let err = decode_entity("pk", "rk", &bad).unwrap_err();
                assert_eq!(err.code, ErrorCode::DataCorrupted, "byte {i} ^ {flip:#x}");
            }
        }
    }

    #[test]
    fn truncated_and_unknown_versions_are_corrupt() {
        let bytes = encode_entity(&sample());
        for len in 0..bytes.len() {
            let err = decode_entity("pk", "rk", &bytes[..len]).unwrap_err();
            assert_eq!(err.code, ErrorCode::DataCorrupted, "len {len}");
        }
        // A well-formed value of a version this build does not know.
        let mut future = bytes.clone();
        future[4] = FORMAT_VERSION + 1;
        let crc = crc32fast::hash(&future[4..]);
        future[..4].copy_from_slice(&crc.to_le_bytes());
        let err = decode_entity("pk", "rk", &future).unwrap_err();
        assert!(err.message.contains("version"), "{err}");
    }

    #[test]
    fn encoding_is_deterministic() {
        assert_eq!(encode_entity(&sample()), encode_entity(&sample().clone()));
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            ".{0,20}".prop_map(Value::String),
            any::<i32>().prop_map(Value::Int32),
            any::<i64>().prop_map(Value::Int64),
            // NaN != NaN, so keep doubles comparable.
            (-1e300f64..1e300).prop_map(Value::Double),
            any::<bool>().prop_map(Value::Boolean),
            any::<i64>().prop_map(|t| Value::DateTime(DateTime(t))),
            any::<u128>().prop_map(|g| Value::Guid(uuid::Uuid::from_u128(g))),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Binary),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(
            pk in ".{0,10}", rk in ".{0,10}", ts in any::<i64>(),
            props in proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,8}", arb_value(), 0..10),
        ) {
            let e = Entity { partition_key: pk.clone(), row_key: rk.clone(), timestamp: Some(DateTime(ts)), properties: props };
            let bytes = encode_entity(&e);
            prop_assert_eq!(decode_entity(&pk, &rk, &bytes)?, e);
        }

        #[test]
        fn a_random_corruption_is_never_served(flip_at in any::<prop::sample::Index>(), flip in 1u8..) {
            let bytes = encode_entity(&sample());
            let mut bad = bytes.clone();
            bad[flip_at.index(bytes.len())] ^= flip;
            prop_assert_eq!(decode_entity("pk", "rk", &bad).map_err(|e| e.code), Err(ErrorCode::DataCorrupted));
        }
    }
}

//! The replicated commands and their results, between domain types and protobuf bytes.
//!
//! Both sides of a proposal use this file: `tables` builds a `TableCommand` / `MetaCommand` and reads the
//! `CommandResult` that comes back; the state machines read commands and write results. Keeping both
//! directions here means a result's shape (which error code, which operation index) is decided once.
//!
//! A result error carries the `ErrorCode` by name (`ErrorCode::as_str`), so a code added later reads
//! back as `InternalError` on an older node rather than failing to decode.

use prost::Message;
use trestle_proto::convert::{if_match_from_proto, if_match_to_proto};
use trestle_proto::internal::{
    self as ipb, CommandError, CommandResult, TableRecord, WriteResults, command_result::Kind,
};
use trestle_proto::table as pb;
use trestle_types::{
    AccessPolicy, BatchError, DateTime, ETag, Entity, Error, ErrorCode, Result, TableInfo,
    WriteKind, WriteOp, WriteOutcome,
};

/// Encodes a result.
pub fn encode_result(kind: Kind) -> Vec<u8> {
    CommandResult { kind: Some(kind) }.encode_to_vec()
}

/// The result bytes of a failed command; `failed_index` is the batch operation that failed.
pub fn error_result(error: &Error, failed_index: Option<usize>) -> Vec<u8> {
    encode_result(Kind::Error(CommandError {
        code: error.code.as_str().to_string(),
        message: error.message.clone(),
        failed_index: failed_index.and_then(|i| u32::try_from(i).ok()),
    }))
}

/// Decodes result bytes; a failed command comes back as a [`BatchError`] (its index set when one
/// operation of a batch failed).
pub fn decode_result(bytes: &[u8]) -> Result<Kind, BatchError> {
    let whole = |error| BatchError { index: None, error };
    let result = CommandResult::decode(bytes)
        .map_err(|e| whole(Error::internal(format!("undecodable command result: {e}"))))?;
    match result.kind {
        Some(Kind::Error(e)) => Err(BatchError {
            index: e.failed_index.map(|i| i as usize),
            error: Error::new(
                ErrorCode::parse(&e.code).unwrap_or(ErrorCode::InternalError),
                e.message,
            ),
        }),
        Some(kind) => Ok(kind),
        None => Err(whole(Error::internal("empty command result"))),
    }
}

/// The write results of a table command, as domain outcomes.
pub fn outcomes(results: WriteResults) -> Result<Vec<WriteOutcome>> {
    results
        .results
        .into_iter()
        .map(|r| {
            Ok(WriteOutcome {
                etag: r.etag_ticks.map(|t| ETag(DateTime(t))),
                entity: r.entity.map(Entity::try_from).transpose()?,
            })
        })
        .collect()
}

fn write_kind_to_proto(kind: WriteKind) -> pb::WriteKind {
    match kind {
        WriteKind::Insert => pb::WriteKind::Insert,
        WriteKind::Replace => pb::WriteKind::Replace,
        WriteKind::Merge => pb::WriteKind::Merge,
        WriteKind::InsertOrReplace => pb::WriteKind::InsertOrReplace,
        WriteKind::InsertOrMerge => pb::WriteKind::InsertOrMerge,
        WriteKind::Delete => pb::WriteKind::Delete,
    }
}

/// A domain write as its protobuf form.
pub fn write_op_to_proto(op: &WriteOp) -> pb::WriteOp {
    pb::WriteOp {
        kind: write_kind_to_proto(op.kind) as i32,
        entity: Some(pb::Entity::from(&op.entity)),
        if_match: if_match_to_proto(op.if_match),
    }
}

/// A protobuf write as a domain write; an unknown kind or a missing entity is `InvalidInput`.
pub fn write_op_from_proto(op: pb::WriteOp) -> Result<WriteOp> {
    let kind = match pb::WriteKind::try_from(op.kind) {
        Ok(pb::WriteKind::Insert) => WriteKind::Insert,
        Ok(pb::WriteKind::Replace) => WriteKind::Replace,
        Ok(pb::WriteKind::Merge) => WriteKind::Merge,
        Ok(pb::WriteKind::InsertOrReplace) => WriteKind::InsertOrReplace,
        Ok(pb::WriteKind::InsertOrMerge) => WriteKind::InsertOrMerge,
        Ok(pb::WriteKind::Delete) => WriteKind::Delete,
        Err(_) => {
            return Err(Error::invalid_input(format!(
                "Unknown write kind {}.",
                op.kind
            )));
        }
    };
    let if_match = if_match_from_proto(op.if_match.as_ref());
    let entity = op
        .entity
        .ok_or_else(|| Error::invalid_input("A write has no entity."))?;
    Ok(WriteOp {
        kind,
        entity: Entity::try_from(entity)?,
        if_match,
    })
}

/// A domain access policy as stored in the catalog.
pub fn policy_to_proto(p: &AccessPolicy) -> ipb::AccessPolicy {
    ipb::AccessPolicy {
        id: p.id.clone(),
        start_ticks: p.start.map(DateTime::ticks),
        expiry_ticks: p.expiry.map(DateTime::ticks),
        permission: p.permission.clone(),
    }
}

/// A stored access policy as the domain's.
pub fn policy_from_proto(p: &ipb::AccessPolicy) -> AccessPolicy {
    AccessPolicy {
        id: p.id.clone(),
        start: p.start_ticks.map(DateTime),
        expiry: p.expiry_ticks.map(DateTime),
        permission: p.permission.clone(),
    }
}

/// A catalog record as the table service reports it.
pub fn table_info(record: &TableRecord) -> TableInfo {
    TableInfo {
        name: record.name.clone(),
        id: record.id,
        policies: record.policies.iter().map(policy_from_proto).collect(),
    }
}

#[cfg(test)]
mod tests {
    use trestle_types::{IfMatch, Value};

    use super::*;

    #[test]
    fn errors_round_trip_with_their_index() {
        let err = Error::new(ErrorCode::UpdateConditionNotSatisfied, "nope");
        let back = decode_result(&error_result(&err, Some(3))).unwrap_err();
        assert_eq!(
            back,
            BatchError {
                index: Some(3),
                error: err
            }
        );
        let unknown = encode_result(Kind::Error(CommandError {
            code: "SomeFutureCode".into(),
            message: "m".into(),
            failed_index: None,
        }));
        assert_eq!(
            decode_result(&unknown).unwrap_err().error.code,
            ErrorCode::InternalError
        );
        assert_eq!(
            decode_result(b"\xff\xff").unwrap_err().error.code,
            ErrorCode::InternalError
        );
    }

    #[test]
    fn write_ops_round_trip() {
        for kind in [
            WriteKind::Insert,
            WriteKind::Replace,
            WriteKind::Merge,
            WriteKind::InsertOrReplace,
            WriteKind::InsertOrMerge,
            WriteKind::Delete,
        ] {
            for if_match in [
                IfMatch::None,
                IfMatch::Any,
                IfMatch::ETag(ETag(DateTime(5))),
            ] {
                let op = WriteOp {
                    kind,
                    entity: Entity::new("p", "r").with("x", Value::Int64(1)),
                    if_match,
                };
                assert_eq!(write_op_from_proto(write_op_to_proto(&op)).unwrap(), op);
            }
        }
        let bad = pb::WriteOp {
            kind: 99,
            entity: None,
            if_match: None,
        };
        assert_eq!(
            write_op_from_proto(bad).unwrap_err().code,
            ErrorCode::InvalidInput
        );
    }
}

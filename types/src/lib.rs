//! Trestle's domain types: what a table, an entity and a property value *are*, the limits Azure places
//! on them, and the one `ErrorCode` enum every layer speaks.
//!
//! This crate does no I/O and depends on nothing else in the workspace, so every other crate (servers,
//! the client SDK, the benchmark harness) can share it. The wire formats (EDM JSON, protobuf) and the
//! storage encoding live elsewhere; here are only the values and the rules.

pub mod entity;
pub mod error;
pub mod filter;
pub mod names;
pub mod ops;
pub mod signing;
pub mod value;

pub use entity::{ETag, Entity, EntityKey, IfMatch, limits};
pub use error::{Error, ErrorCode, Result};
pub use filter::{CompareOp, Filter, Operand};
pub use names::{TableName, validate_key, validate_property_name};
pub use ops::{
    AccessPolicy, BatchError, QueryPage, QuerySpec, TableInfo, WriteKind, WriteOp, WriteOutcome,
};
pub use value::{DateTime, EdmType, Value};

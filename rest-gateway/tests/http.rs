//! Raw-HTTP integration tests: the router on 127.0.0.1 (OS-chosen port) over the in-memory table
//! service, driven with reqwest and signed with the gateway's own signer. One binary, one module per
//! theme; every Azure error code the gateway produces has a test asserting status, `x-ms-error-code`
//! and body.

mod support;

#[path = "http/auth.rs"]
mod auth;
#[path = "http/batch.rs"]
mod batch;
#[path = "http/entities.rs"]
mod entities;
#[path = "http/errors.rs"]
mod errors;
#[path = "http/limits.rs"]
mod limits;
#[path = "http/queries.rs"]
mod queries;
#[path = "http/service.rs"]
mod service;
#[path = "http/tables.rs"]
mod tables;

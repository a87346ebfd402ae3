//! The Azure Table service REST API, served on axum.
//!
//! Wire-compatible with Azure so the official SDKs work unchanged: authentication (Shared Key, Shared Key
//! Lite, SAS), OData (`$filter`, `$select`, `$top`, continuation), the EDM JSON formats, `$batch` and
//! Azure's error bodies. It talks to the cluster only through the [`TableService`] trait.
//!
//! Entry points: [`router`] builds the axum [`Router`](axum::Router) from a [`TableService`] and a
//! [`GatewayConfig`]; [`listener::Server`] serves it on a TCP port (HTTP or HTTPS) with the connection
//! limits of the config. The parsers that face untrusted bytes are public for fuzzing:
//! [`json::parse_entity_json`] and [`batch::parse_batch`].
//!
//! Module map: `server` (addressing, dispatch, common headers) → `auth` → `handlers::*` (one module per
//! operation family) → `json` / `batch` / `xml` / `continuation` (wire formats) → [`TableService`].
//! `error` renders every failure as Azure does.

pub mod auth;
pub mod batch;
pub mod config;
pub mod continuation;
pub mod cors;
pub mod error;
mod handlers;
pub mod json;
pub mod listener;
pub mod resource;
mod server;
pub mod service;
pub mod xml;

pub use config::{AccountConfig, ConfigError, GatewayConfig};
pub use error::{ApiError, ApiResult};
pub use server::router;
pub use service::{Fencing, TableService};

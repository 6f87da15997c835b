//! nsr: a national social registry with a DCI interoperability gateway.
//!
//! Module map (`ls src` is the architecture). Dependencies: `cli` and `http` → `dci`,
//! `ingest`, `auth`, `partners` → `registry` → `store`; `crypto` and `clock` are leaves.

/// Staff identities: roles, users and passwords, access tokens, OIDC, the login throttle.
pub mod auth;
/// Command-line interface: parses arguments and runs one command.
pub mod cli;
/// The only place that reads the system time.
pub mod clock;
/// Defaults → `nsr.toml` → `NSR_*` environment; unknown keys rejected; secrets redacted.
pub mod config;
/// DCI conformance cases (`conformance/`) and their runner, with the OpenAPI validator.
pub mod conformance;
/// Consent: policies as data, the two-step decision (which records, then which fields), the
/// append-only disclosure log.
pub mod consent;
/// Message security (a leaf): keys and JWKS, canonical JSON, signed DCI envelopes, partner
/// signature checks, JWE.
pub mod crypto;
/// DCI wire layer: envelopes opened (verify, decrypt, replay check) and sealed (sign, encrypt).
pub mod dci;
/// HTTP: the staff API (`/api/v1`, one authorization table), OpenAPI and its docs page,
/// JWKS, health, readiness, metrics.
pub mod http;
/// CSV import and export, the synthetic population generator, the bundled sample.
pub mod ingest;
/// Partner registry: who may call the gateway, their scopes, keys, profiles and callbacks.
pub mod partners;
/// Domain: register definitions, records, validation, ids, change sets, audit chain, use cases.
pub mod registry;
/// Storage trait and its SQLite and PostgreSQL implementations.
pub mod store;

//! The one integration-test binary. `support` builds isolated databases; `contract` runs the
//! same registry story on SQLite (always) and PostgreSQL (when TEST_DATABASE_URL is set);
//! `gateway` covers partners and envelopes on both backends; `cli` drives the real `nsr` binary;
//! `http` and `api` drive the router (`api`: the staff API); `crypto` covers keys,
//! signatures and encryption.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

mod api;
mod architecture;
mod cli;
mod consent;
mod contract;
mod crypto;
mod dci;
mod gateway;
mod http;

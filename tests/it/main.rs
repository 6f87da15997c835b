//! The one integration-test binary. `support` builds isolated databases; `contract` runs the
//! same registry story on SQLite (always) and PostgreSQL (when TEST_DATABASE_URL is set);
//! `cli` drives the real `nsr` binary; `http` and `api` drive the router.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod api;
mod architecture;
mod cli;
mod contract;
mod http;
mod support;

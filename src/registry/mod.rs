//! The registry domain: register definitions, records and their validation, identifiers,
//! change sets, the audit chain, and the use cases that tie them together. Knows no HTTP and
//! no SQL: it reads and writes through [`crate::store::Store`].

pub mod audit;
pub mod change_request;
pub mod change_set;
pub mod ids;
pub mod listing;
pub mod query;
pub mod record;
pub mod register;
mod service;

pub use service::{
    Author, Draft, DraftMode, History, Pending, Prepared, RecordView, Registry, Rejection,
    WriteError, WriteOutcome,
};

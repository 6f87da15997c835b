//! The DCI Social Registry gateway (HTTP-free): envelopes opened (verified, decrypted,
//! replay-checked) and sealed (encrypted when required, always signed); partner access
//! tokens; the mapping between registry records and DCI JSON-LD; DCI queries compiled into
//! record queries; the sync and async operations; the job worker that delivers callbacks;
//! the release seam every reply with registry data passes before it is sealed.

pub mod codes;
pub mod disclosure;
pub mod envelope;
pub mod gateway;
pub mod jobs;
pub mod mapping;
pub mod query;
pub mod token;

pub use envelope::{EnvelopeError, EnvelopePolicy, Envelopes, Opened, SealError};
pub use gateway::{Ack, Gateway, GatewayError, GatewayPolicy, Operation, Reply};
pub use jobs::{Pass, Worker};
pub use mapping::{Mapping, MappingError};
pub use token::{Grant, Tokens};

//! The DCI wire layer. So far: the envelope, opened (verified, decrypted, replay-checked) on
//! the way in and sealed (encrypted when required, always signed) on the way out.

pub mod envelope;

pub use envelope::{EnvelopeError, EnvelopePolicy, Envelopes, Opened, SealError};

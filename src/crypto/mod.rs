//! Message security for the DCI gateway: our keys and their JWKS, canonical JSON, signed
//! envelopes (detached JWS and the DCI/OpenSPP2 signature string), partner signature
//! verification and JWE encryption of DCI messages.
//!
//! A leaf: no HTTP, no SQL, and no clock of its own (every time comes in as `now`). The byte-level
//! rules a partner must follow are in `docs/message-security.md`.
//!
//! Crypto comes from `aws-lc-rs`, the provider rustls already uses in this build (via sqlx), so
//! there is one crypto library in the binary.

pub mod canonical;
pub mod envelope;
pub mod jwe;
pub mod keys;

pub use canonical::canonical_json;
pub use envelope::{
    DEFAULT_SKEW, DEFAULT_VALIDITY, DciSignature, SignError, SignatureProfile, Verified,
    VerifyError, VerifyPolicy, seal_envelope, sign_envelope, signing_input, verify_envelope,
    verify_jws_compact,
};
pub use jwe::{
    EncryptedMessage, JweError, JweHeader, concat_kdf, decrypt, decrypt_json, decrypt_with,
    encrypt, encrypt_json,
};
pub use keys::{
    Alg, DecryptionKey, Jwks, KeyError, KeyInfo, KeyStatus, KeyStore, KeyUse, PublicJwk, SigningKey,
};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// BASE64URL without padding (RFC 7515 §2). Decoding is strict: no padding, no stray
/// characters, no non-zero trailing bits, so one encoded form per byte string.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Standard base64 with padding (RFC 4648 §4), as Python's `base64.b64encode` writes it.
pub(crate) fn b64std(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub(crate) fn b64std_decode(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

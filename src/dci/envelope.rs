//! The DCI envelope `{signature, header, message}`: opening what partners send (parse, find
//! the partner, verify its signature, decrypt, refuse replays) and sealing what we send
//! (encrypt when the partner requires it, then always sign).
//!
//! Order on the way in (ARCHITECTURE.md, request flow): signature over the envelope as
//! received → decryption → replay check. A message id is only used up by a message that passed
//! every other check, so a partner retrying after a refused message is not told "duplicate".

use crate::clock::Clock;
use crate::crypto::{
    DciSignature, KeyStore, SignError, SignatureProfile, Verified, VerifyError, VerifyPolicy,
    b64url_decode, decrypt_json, encrypt_json, seal_envelope, verify_envelope,
};
use crate::partners::{Partner, PartnerError, Partners};
use crate::store::Store;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Longest `message_id` remembered for replay protection (DCI identifiers are ≤ 99 chars).
const MAX_MESSAGE_ID_LEN: usize = 99;

/// Timing rules for envelopes.
#[derive(Debug, Clone, Copy)]
pub struct EnvelopePolicy {
    /// Clock skew tolerated on signature times and `message_ts`.
    pub skew: Duration,
    /// Validity of our signatures.
    pub signature_validity: Duration,
    /// How long message ids are remembered; older `message_ts` are refused.
    pub replay_window: Duration,
}

impl Default for EnvelopePolicy {
    fn default() -> Self {
        Self {
            skew: Duration::seconds(60),
            signature_validity: Duration::seconds(300),
            replay_window: Duration::hours(24),
        }
    }
}

/// A partner's envelope that passed every check.
#[derive(Debug, Clone)]
pub struct Opened {
    pub partner: Partner,
    /// The header as received.
    pub header: Value,
    /// The message, decrypted when it came encrypted.
    pub message: Value,
    pub message_id: String,
    pub action: String,
    pub verified: Verified,
}

/// Why an envelope was refused. [`EnvelopeError::code`] is the DCI answer.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not a JSON envelope at all: HTTP 400.
    #[error("the body is not a DCI envelope: {0}")]
    Unparsable(String),
    /// A required header member is missing or malformed.
    #[error("bad header: {0}")]
    Header(String),
    /// No enabled partner with this `sender_id`.
    #[error("unknown or disabled sender")]
    UnknownSender,
    #[error(transparent)]
    Signature(VerifyError),
    #[error("the message cannot be decrypted: {0}")]
    Encryption(String),
    #[error("message_ts {0}")]
    Timestamp(String),
    #[error("message_id already used by this sender")]
    Duplicate,
    /// `header.sender_id` is not the partner the caller's access token was issued to.
    #[error("header.sender_id is not the partner the access token was issued to")]
    SenderMismatch,
    /// The database or the partner's JWKS could not be reached: try again later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl EnvelopeError {
    /// The DCI code: an `err.*` ack error or a `rjct.*` header status reason.
    pub fn code(&self) -> &'static str {
        match self {
            EnvelopeError::Unparsable(_) | EnvelopeError::Header(_) => "err.request.bad",
            EnvelopeError::UnknownSender => "err.sender_id.invalid",
            EnvelopeError::Signature(error) => error.dci_code(),
            EnvelopeError::Encryption(_) => "err.encryption.invalid",
            EnvelopeError::Timestamp(_) => "rjct.message_ts.invalid",
            EnvelopeError::Duplicate => "rjct.message_id.duplicate",
            EnvelopeError::SenderMismatch => "err.request.forbidden",
            EnvelopeError::Unavailable(_) => "err.service.unavailable",
        }
    }
}

/// Why we could not seal an envelope. Nothing may be sent: the caller answers 5xx.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("no active signing key")]
    NoSigningKey,
    #[error("the partner requires encryption but has no encryption key")]
    NoEncryptionKey,
    #[error("encryption failed: {0}")]
    Encryption(String),
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// Opens partners' envelopes and seals ours.
#[derive(Clone)]
pub struct Envelopes {
    partners: Partners,
    keys: Arc<KeyStore>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    our_sender_id: String,
    policy: EnvelopePolicy,
}

impl Envelopes {
    pub fn new(
        partners: Partners,
        keys: Arc<KeyStore>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        our_sender_id: String,
        policy: EnvelopePolicy,
    ) -> Self {
        Self {
            partners,
            keys,
            store,
            clock,
            our_sender_id,
            policy,
        }
    }

    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    /// Checks a partner's envelope (the request body) and returns it opened.
    pub async fn open(&self, body: &[u8]) -> Result<Opened, EnvelopeError> {
        self.open_from(body, None).await
    }

    /// [`Envelopes::open`] for a caller already authenticated as `partner` (its access
    /// token): an envelope naming another sender is refused before anything else is checked, so
    /// it can neither use up that sender's message id nor learn what its signature check says.
    pub async fn open_for(&self, body: &[u8], partner: &Partner) -> Result<Opened, EnvelopeError> {
        self.open_from(body, Some(partner)).await
    }

    async fn open_from(
        &self,
        body: &[u8],
        known: Option<&Partner>,
    ) -> Result<Opened, EnvelopeError> {
        let now = self.clock.now();
        let mut envelope: Map<String, Value> = serde_json::from_slice(body)
            .map_err(|e| EnvelopeError::Unparsable(format!("not a JSON object: {e}")))?;
        let signature = match envelope.remove("signature") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text),
            Some(_) => {
                return Err(EnvelopeError::Unparsable(
                    "`signature` is not a string".to_owned(),
                ));
            }
        };
        let header = envelope
            .remove("header")
            .filter(Value::is_object)
            .ok_or_else(|| EnvelopeError::Unparsable("no `header` object".to_owned()))?;
        let message = envelope
            .remove("message")
            .ok_or_else(|| EnvelopeError::Unparsable("no `message`".to_owned()))?;

        let text = |name: &str| -> Result<String, EnvelopeError> {
            match header.get(name) {
                Some(Value::String(value)) if !value.is_empty() => Ok(value.clone()),
                _ => Err(EnvelopeError::Header(format!("`{name}` is required"))),
            }
        };
        let sender_id = text("sender_id")?;
        if known.is_some_and(|partner| partner.sender_id != sender_id) {
            return Err(EnvelopeError::SenderMismatch);
        }
        let message_id = text("message_id")?;
        if message_id.len() > MAX_MESSAGE_ID_LEN {
            return Err(EnvelopeError::Header(format!(
                "`message_id` is longer than {MAX_MESSAGE_ID_LEN} characters"
            )));
        }
        let action = text("action")?;
        // RFC 3339 always carries a zone (`Z` or an offset): a zone-less time is refused
        // (DCI: ISO 8601 "including timezone").
        let message_ts = DateTime::parse_from_rfc3339(&text("message_ts")?)
            .map_err(|_| {
                EnvelopeError::Timestamp("is not an RFC 3339 time with a zone".to_owned())
            })?
            .with_timezone(&Utc);
        let encrypted = match header.get("is_msg_encrypted") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(flag)) => *flag,
            Some(_) => {
                return Err(EnvelopeError::Header(
                    "`is_msg_encrypted` is not a boolean".to_owned(),
                ));
            }
        };

        let partner = match known {
            Some(partner) if partner.enabled => partner.clone(),
            Some(_) => return Err(EnvelopeError::UnknownSender),
            None => match self.partners.get(&sender_id).await {
                Ok(Some(partner)) if partner.enabled => partner,
                Ok(_) => return Err(EnvelopeError::UnknownSender),
                Err(error) => return Err(unavailable(error)),
            },
        };

        let verified = self
            .verify(&partner, signature.as_deref(), &header, &message, now)
            .await?;

        if message_ts > now + self.policy.skew {
            return Err(EnvelopeError::Timestamp("is in the future".to_owned()));
        }
        let forget_before = now - self.policy.replay_window;
        if message_ts < forget_before {
            return Err(EnvelopeError::Timestamp(
                "is older than the replay window".to_owned(),
            ));
        }

        let message = if encrypted {
            decrypt_json(&message, &self.keys)
                .map_err(|e| EnvelopeError::Encryption(e.to_string()))?
        } else {
            message
        };

        let fresh = self
            .store
            .remember_message(&sender_id, &message_id, now, forget_before)
            .await
            .map_err(|e| EnvelopeError::Unavailable(e.to_string()))?;
        if !fresh {
            return Err(EnvelopeError::Duplicate);
        }
        Ok(Opened {
            partner,
            header,
            message,
            message_id,
            action,
            verified,
        })
    }

    async fn verify(
        &self,
        partner: &Partner,
        signature: Option<&str>,
        header: &Value,
        message: &Value,
        now: DateTime<Utc>,
    ) -> Result<Verified, EnvelopeError> {
        let definition = &partner.definition;
        let profile = definition.signature_profile;
        // Under the profile `none` an unsigned envelope needs no keys; anything signed is
        // checked against the registered keys all the same.
        let keys = if profile == SignatureProfile::None && signature.is_none() {
            Arc::new(Vec::new())
        } else {
            let kid = signature.and_then(|s| signature_kid(profile, s));
            self.partners
                .verification_keys(partner, kid.as_deref())
                .await
                .map_err(unavailable)?
        };
        let policy = VerifyPolicy {
            allowed_algs: &definition.algorithms,
            skew: self.policy.skew,
        };
        // The DCI signature's kidId sender is checked against `header.sender_id`, the id
        // this partner was found by.
        verify_envelope(profile, signature, header, message, &keys, &policy, now)
            .map_err(EnvelopeError::Signature)
    }

    /// Seals an envelope for `partner`: `header.sender_id` is set to ours, the message is
    /// encrypted to the partner's key when it requires encryption, and the envelope is always
    /// signed with our active key (under the partner's
    /// profile, or the DCI signature string for a partner registered with `none`). Returns the
    /// envelope's JSON, ready to send ([`seal_envelope`]).
    pub fn seal(
        &self,
        partner: &Partner,
        mut header: Value,
        message: Value,
    ) -> Result<Vec<u8>, SealError> {
        let definition = &partner.definition;
        // Every envelope we send is from us, whatever header the caller built.
        if let Some(fields) = header.as_object_mut() {
            fields.insert(
                "sender_id".to_owned(),
                Value::String(self.our_sender_id.clone()),
            );
        }
        let message = if definition.requires_encryption {
            let key = definition
                .encryption_key
                .as_ref()
                .ok_or(SealError::NoEncryptionKey)?;
            if let Some(fields) = header.as_object_mut() {
                fields.insert("is_msg_encrypted".to_owned(), Value::Bool(true));
            }
            encrypt_json(&message, key).map_err(|e| SealError::Encryption(e.to_string()))?
        } else {
            message
        };
        let profile = match definition.signature_profile {
            SignatureProfile::None => SignatureProfile::DciSignature,
            signed => signed,
        };
        let key = self.keys.signing_key().ok_or(SealError::NoSigningKey)?;
        Ok(seal_envelope(
            profile,
            key,
            &self.our_sender_id,
            &header,
            &message,
            self.clock.now(),
            self.policy.signature_validity,
        )?)
    }
}

fn unavailable(error: PartnerError) -> EnvelopeError {
    EnvelopeError::Unavailable(error.to_string())
}

/// The key id a signature names, to refresh a partner's remote JWKS when it is new. Only a
/// hint: verification itself parses and checks everything.
fn signature_kid(profile: SignatureProfile, signature: &str) -> Option<String> {
    match profile {
        SignatureProfile::DciSignature => DciSignature::parse(signature).ok().map(|s| s.kid),
        SignatureProfile::Jws | SignatureProfile::None => {
            let protected = signature.split('.').next()?;
            let bytes = b64url_decode(protected)?;
            let header: Value = serde_json::from_slice(&bytes).ok()?;
            header.get("kid")?.as_str().map(str::to_owned)
        }
    }
}

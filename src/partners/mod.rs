//! The partner registry: the systems allowed to call the DCI gateway (ministries, programme
//! systems), how they authenticate (OAuth client id and hashed secret, scopes), how they sign
//! (signature profile, algorithms, public keys inline or at a JWKS URL), whether messages to
//! them are encrypted, and where callbacks to them may go.
//!
//! Keys come only from a partner's registration, never from a message: a JWKS URL is one that
//! was registered, fetched over HTTPS and cached (see [`RemoteJwks`]).

mod remote;

pub use remote::RemoteJwks;

use crate::clock::Clock;
use crate::crypto::{Alg, Jwks, KeyUse, PublicJwk, SignatureProfile};
use crate::registry::audit::AuditDraft;
use crate::store::{PartnerRow, Store, StoreError};
use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// The OAuth scopes a partner may be granted (one per DCI operation group).
pub const SCOPES: [&str; 4] = [
    "registry.search",
    "registry.txn-status",
    "registry.subscribe",
    "registry.unsubscribe",
];

/// Longest sender or client id (DCI caps identifiers at 99 characters).
const MAX_ID_LEN: usize = 99;

/// A registered partner.
#[derive(Clone, PartialEq, Eq)]
pub struct Partner {
    /// `header.sender_id` in the partner's DCI messages.
    pub sender_id: String,
    /// OAuth client id for `/oauth2/client/token`.
    pub client_id: String,
    pub enabled: bool,
    pub definition: PartnerDefinition,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl fmt::Debug for Partner {
    // The secret hash is not a secret, but it has no business in logs either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partner")
            .field("sender_id", &self.sender_id)
            .field("client_id", &self.client_id)
            .field("enabled", &self.enabled)
            .field("scopes", &self.definition.scopes)
            .field("signature_profile", &self.definition.signature_profile)
            .finish_non_exhaustive()
    }
}

/// What a partner may do and how it signs and encrypts: the stored JSON document.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerDefinition {
    pub scopes: Vec<String>,
    #[serde(with = "profile_text")]
    pub signature_profile: SignatureProfile,
    /// Signature algorithms accepted from this partner (empty only for the `none` profile).
    pub algorithms: Vec<Alg>,
    pub keys: PartnerKeys,
    /// URL prefixes its callbacks (`sender_uri`) may start with.
    pub callback_prefixes: Vec<String>,
    /// Its public encryption key, for replies when it requires encryption.
    pub encryption_key: Option<PublicJwk>,
    pub requires_encryption: bool,
    /// argon2id PHC string of the OAuth client secret.
    pub client_secret_hash: String,
}

impl fmt::Debug for PartnerDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartnerDefinition")
            .field("scopes", &self.scopes)
            .field("signature_profile", &self.signature_profile)
            .field("algorithms", &self.algorithms)
            .field("keys", &self.keys)
            .field("callback_prefixes", &self.callback_prefixes)
            .field("requires_encryption", &self.requires_encryption)
            .finish_non_exhaustive()
    }
}

/// Where a partner's public signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartnerKeys {
    /// Registered inline (a JWK Set).
    Jwks(Jwks),
    /// Published by the partner at this URL (registered, never taken from a message).
    JwksUrl(String),
}

mod profile_text {
    use crate::crypto::SignatureProfile;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(profile: &SignatureProfile, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(profile.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SignatureProfile, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A partner to register, as an operator describes it.
#[derive(Debug, Clone, Default)]
pub struct NewPartner {
    pub sender_id: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub signature_profile: Option<SignatureProfile>,
    pub algorithms: Vec<Alg>,
    /// JWK Set JSON text (its keys are checked to be public).
    pub jwks: Option<String>,
    pub jwks_url: Option<String>,
    pub callback_prefixes: Vec<String>,
    /// Public encryption JWK JSON text.
    pub encryption_key: Option<String>,
    pub requires_encryption: bool,
    /// The client secret to use; `None` generates one (returned once, stored only hashed).
    pub client_secret: Option<String>,
}

/// One thing wrong with a partner definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerProblem {
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for PartnerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PartnerError {
    #[error("the partner definition has problems: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<PartnerProblem>),
    #[error("a partner with this {0} already exists")]
    Exists(String),
    #[error("no partner `{0}`")]
    NotFound(String),
    #[error("the stored definition of partner `{0}` cannot be read: {1}")]
    Corrupt(String, String),
    #[error("the partner's keys could not be fetched: {0}")]
    Keys(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for PartnerError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unique { field, .. } => PartnerError::Exists(field),
            other => PartnerError::Store(other),
        }
    }
}

impl Partner {
    /// Whether `secret` is this partner's client secret (argon2 verification, constant time).
    pub fn secret_matches(&self, secret: &str) -> bool {
        PasswordHash::new(&self.definition.client_secret_hash).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &hash)
                .is_ok()
        })
    }

    /// Whether a callback to `url` is allowed: it starts with one of the registered prefixes.
    pub fn allows_callback(&self, url: &str) -> bool {
        self.definition
            .callback_prefixes
            .iter()
            .any(|prefix| url.starts_with(prefix.as_str()))
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.definition.scopes.iter().any(|s| s == scope)
    }

    fn from_row(row: PartnerRow) -> Result<Self, PartnerError> {
        let definition = serde_json::from_str(&row.document)
            .map_err(|e| PartnerError::Corrupt(row.sender_id.clone(), e.to_string()))?;
        Ok(Self {
            sender_id: row.sender_id,
            client_id: row.client_id,
            enabled: row.enabled,
            definition,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }

    fn to_row(&self) -> Result<PartnerRow, PartnerError> {
        let document = serde_json::to_string(&self.definition)
            .map_err(|e| PartnerError::Corrupt(self.sender_id.clone(), e.to_string()))?;
        Ok(PartnerRow {
            sender_id: self.sender_id.clone(),
            client_id: self.client_id.clone(),
            enabled: self.enabled,
            document,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }

    /// What the audit log records of a partner: everything but the secret hash.
    fn audit_detail(&self) -> String {
        let d = &self.definition;
        serde_json::json!({
            "client_id": self.client_id,
            "enabled": self.enabled,
            "scopes": d.scopes,
            "signature_profile": d.signature_profile.as_str(),
            "algorithms": d.algorithms,
            "keys": d.keys,
            "callback_prefixes": d.callback_prefixes,
            "encryption_key": d.encryption_key,
            "requires_encryption": d.requires_encryption,
        })
        .to_string()
    }
}

/// Whether `id` is usable as a sender or client id: 1–99 printable ASCII characters, without
/// `"` (quoted in the DCI signature string), `|` (its `kidId` separator) or spaces.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'|')
}

/// Whether `url` is an HTTPS URL, or HTTP to this machine (local stand-ins and tests).
pub fn secure_url(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    match parsed.scheme() {
        "https" => parsed.host_str().is_some(),
        "http" => matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")),
        _ => false,
    }
}

/// A JWK Set from text, refusing private key material (a partner must never send it to us).
fn parse_public_jwks(text: &str) -> Result<Jwks, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let keys = value
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("not a JWK Set (no `keys` array)")?;
    for key in keys {
        if ["d", "p", "q", "dp", "dq", "qi", "k"]
            .iter()
            .any(|m| key.get(m).is_some())
        {
            return Err("a key holds private material; register public keys only".to_owned());
        }
    }
    serde_json::from_value(value).map_err(|e| format!("not a JWK Set: {e}"))
}

fn parse_public_jwk(text: &str) -> Result<PublicJwk, String> {
    let wrapped = format!("{{\"keys\":[{text}]}}");
    let mut jwks = parse_public_jwks(&wrapped)?;
    jwks.keys.pop().ok_or_else(|| "no key".to_owned())
}

/// Checks `new` and builds the stored definition, or lists every problem.
fn definition_of(new: &NewPartner, secret: &str) -> Result<PartnerDefinition, Vec<PartnerProblem>> {
    let mut problems = Vec::new();
    let mut problem = |field: &'static str, message: String| {
        problems.push(PartnerProblem { field, message });
    };
    if !valid_id(&new.sender_id) {
        problem(
            "sender_id",
            "must be 1–99 printable ASCII characters without spaces, `\"` or `|`".to_owned(),
        );
    }
    if !valid_id(&new.client_id) {
        problem(
            "client_id",
            "must be 1–99 printable ASCII characters without spaces, `\"` or `|`".to_owned(),
        );
    }
    if new.scopes.is_empty() {
        problem(
            "scopes",
            format!("give at least one of {}", SCOPES.join(", ")),
        );
    }
    for scope in &new.scopes {
        if !SCOPES.contains(&scope.as_str()) {
            problem(
                "scopes",
                format!("unknown scope `{scope}` (known: {})", SCOPES.join(", ")),
            );
        }
    }
    let profile = new.signature_profile.unwrap_or(SignatureProfile::Jws);
    for alg in &new.algorithms {
        if alg.key_use() != KeyUse::Sig {
            problem(
                "algorithms",
                format!("`{alg}` is not a signature algorithm"),
            );
        }
    }
    if profile != SignatureProfile::None && new.algorithms.is_empty() {
        problem(
            "algorithms",
            "a signed profile needs at least one algorithm (EdDSA, ES256, RS256)".to_owned(),
        );
    }

    let keys = match (&new.jwks, &new.jwks_url) {
        (Some(_), Some(_)) => {
            problem("keys", "give a JWK Set or a JWKS URL, not both".to_owned());
            None
        }
        (Some(text), None) => match parse_public_jwks(text) {
            Ok(mut jwks) => {
                for key in &mut jwks.keys {
                    if key.kid.is_none() {
                        // Selection is by kid; a key registered without one gets its
                        // RFC 7638 thumbprint.
                        key.kid = key.thumbprint().ok();
                    }
                    if !new.algorithms.iter().any(|alg| key.fits(*alg)) {
                        problem(
                            "keys",
                            format!(
                                "key `{}` fits none of the allowed algorithms",
                                key.kid.as_deref().unwrap_or("?")
                            ),
                        );
                    }
                }
                if jwks.keys.is_empty() && profile != SignatureProfile::None {
                    problem("keys", "the JWK Set has no keys".to_owned());
                }
                Some(PartnerKeys::Jwks(jwks))
            }
            Err(message) => {
                problem("keys", message);
                None
            }
        },
        (None, Some(url)) => {
            if !secure_url(url) {
                problem(
                    "jwks_url",
                    format!("`{url}` is not an https URL (http only to this machine)"),
                );
            }
            Some(PartnerKeys::JwksUrl(url.clone()))
        }
        (None, None) if profile == SignatureProfile::None => {
            Some(PartnerKeys::Jwks(Jwks { keys: Vec::new() }))
        }
        (None, None) => {
            problem(
                "keys",
                "a signed profile needs the partner's public keys (a JWK Set or a JWKS URL)"
                    .to_owned(),
            );
            None
        }
    };

    for prefix in &new.callback_prefixes {
        if !secure_url(prefix) {
            problem(
                "callback_prefixes",
                format!("`{prefix}` is not an https URL (http only to this machine)"),
            );
        }
    }

    let encryption_key = match &new.encryption_key {
        None => None,
        Some(text) => match parse_public_jwk(text) {
            Ok(mut key) => {
                if key.kid.is_none() {
                    key.kid = key.thumbprint().ok();
                }
                if ![Alg::EcdhEsA256kw, Alg::RsaOaep256]
                    .iter()
                    .any(|alg| key.fits(*alg))
                {
                    problem(
                        "encryption_key",
                        "must be an ECDH-ES+A256KW (P-256) or RSA-OAEP-256 key".to_owned(),
                    );
                }
                Some(key)
            }
            Err(message) => {
                problem("encryption_key", message);
                None
            }
        },
    };
    if new.requires_encryption && encryption_key.is_none() {
        problem(
            "requires_encryption",
            "needs the partner's encryption key".to_owned(),
        );
    }
    if secret.len() < 16 {
        problem("client_secret", "must be at least 16 characters".to_owned());
    }
    let client_secret_hash = match Argon2::default().hash_password(secret.as_bytes()) {
        Ok(hash) => hash.to_string(),
        Err(e) => {
            problem("client_secret", format!("cannot be hashed: {e}"));
            String::new()
        }
    };
    match (problems.is_empty(), keys) {
        (true, Some(keys)) => Ok(PartnerDefinition {
            scopes: new.scopes.clone(),
            signature_profile: profile,
            algorithms: new.algorithms.clone(),
            keys,
            callback_prefixes: new.callback_prefixes.clone(),
            encryption_key,
            requires_encryption: new.requires_encryption,
            client_secret_hash,
        }),
        _ => Err(problems),
    }
}

/// A new random client secret: 32 bytes, base64url (43 characters).
fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    crate::crypto::b64url(&bytes)
}

/// How long a partner read from the store is reused by [`Partners::get`]. Changes made through
/// this process's `Partners` take effect at once; changes by another process (`nsr partner
/// disable`, another replica) within this time.
pub const PARTNER_CACHE_TTL: chrono::Duration = chrono::Duration::seconds(2);

/// The partner registry service.
#[derive(Clone)]
pub struct Partners {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    remote: RemoteJwks,
    /// Partners by sender id, with when they were read (every DCI request asks for its
    /// partner, twice: token and envelope).
    cache: moka::future::Cache<String, Arc<(Partner, DateTime<Utc>)>>,
}

impl Partners {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, remote: RemoteJwks) -> Self {
        Self {
            store,
            clock,
            remote,
            cache: moka::future::Cache::new(1_000),
        }
    }

    /// Registers a partner. Returns it and, when none was given, the generated client secret
    /// (shown once; only its hash is kept).
    pub async fn add(
        &self,
        new: NewPartner,
        actor: &str,
    ) -> Result<(Partner, Option<String>), PartnerError> {
        // Named here for a clear answer; the database's unique keys settle any race.
        if self.store.partner(&new.sender_id).await?.is_some() {
            return Err(PartnerError::Exists("sender_id".to_owned()));
        }
        if self
            .store
            .partner_by_client_id(&new.client_id)
            .await?
            .is_some()
        {
            return Err(PartnerError::Exists("client_id".to_owned()));
        }
        let generated = new.client_secret.is_none().then(generate_secret);
        let secret = new
            .client_secret
            .clone()
            .or_else(|| generated.clone())
            .unwrap_or_default();
        let definition = definition_of(&new, &secret).map_err(PartnerError::Invalid)?;
        let now = self.clock.now();
        let partner = Partner {
            sender_id: new.sender_id,
            client_id: new.client_id,
            enabled: true,
            definition,
            created_at: now,
            updated_at: now,
        };
        let audit = AuditDraft {
            at: now,
            actor: actor.to_owned(),
            action: "partner.add".to_owned(),
            subject: partner.sender_id.clone(),
            detail: partner.audit_detail(),
        };
        self.store
            .insert_partner(&partner.to_row()?, &audit)
            .await?;
        self.cache.invalidate(&partner.sender_id).await;
        Ok((partner, generated))
    }

    /// Enables or disables a partner (a disabled partner's tokens and messages are refused).
    pub async fn set_enabled(
        &self,
        sender_id: &str,
        enabled: bool,
        actor: &str,
    ) -> Result<Partner, PartnerError> {
        let mut partner = self
            .get(sender_id)
            .await?
            .ok_or_else(|| PartnerError::NotFound(sender_id.to_owned()))?;
        partner.enabled = enabled;
        partner.updated_at = self.clock.now();
        let audit = AuditDraft {
            at: partner.updated_at,
            actor: actor.to_owned(),
            action: if enabled {
                "partner.enable"
            } else {
                "partner.disable"
            }
            .to_owned(),
            subject: partner.sender_id.clone(),
            detail: partner.audit_detail(),
        };
        let updated = self
            .store
            .update_partner(&partner.to_row()?, &audit)
            .await?;
        self.cache.invalidate(sender_id).await;
        if !updated {
            return Err(PartnerError::NotFound(sender_id.to_owned()));
        }
        Ok(partner)
    }

    /// The partner with this sender id, read from the store at most [`PARTNER_CACHE_TTL`] ago.
    pub async fn get(&self, sender_id: &str) -> Result<Option<Partner>, PartnerError> {
        let now = self.clock.now();
        if let Some(entry) = self.cache.get(sender_id).await
            && entry.1 <= now
            && now - entry.1 < PARTNER_CACHE_TTL
        {
            return Ok(Some(entry.0.clone()));
        }
        let found = self
            .store
            .partner(sender_id)
            .await?
            .map(Partner::from_row)
            .transpose()?;
        match &found {
            Some(partner) => {
                self.cache
                    .insert(sender_id.to_owned(), Arc::new((partner.clone(), now)))
                    .await;
            }
            None => self.cache.invalidate(sender_id).await,
        }
        Ok(found)
    }

    pub async fn by_client_id(&self, client_id: &str) -> Result<Option<Partner>, PartnerError> {
        self.store
            .partner_by_client_id(client_id)
            .await?
            .map(Partner::from_row)
            .transpose()
    }

    pub async fn list(&self) -> Result<Vec<Partner>, PartnerError> {
        self.store
            .partners()
            .await?
            .into_iter()
            .map(Partner::from_row)
            .collect()
    }

    /// The partner's public signing keys: as registered, or from its JWKS URL (cached; fetched
    /// again when a signature names a kid the cache does not hold, at most once a minute).
    pub async fn verification_keys(
        &self,
        partner: &Partner,
        kid: Option<&str>,
    ) -> Result<Arc<Vec<PublicJwk>>, PartnerError> {
        match &partner.definition.keys {
            PartnerKeys::Jwks(jwks) => Ok(Arc::new(jwks.keys.clone())),
            PartnerKeys::JwksUrl(url) => self
                .remote
                .keys(url, kid, self.clock.now())
                .await
                .map_err(PartnerError::Keys),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED_JWK: &str =
        r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

    fn minimal() -> NewPartner {
        NewPartner {
            sender_id: "spmis.example.org".into(),
            client_id: "spmis".into(),
            scopes: vec!["registry.search".into()],
            signature_profile: Some(SignatureProfile::Jws),
            algorithms: vec![Alg::EdDsa],
            jwks: Some(format!("{{\"keys\":[{ED_JWK}]}}")),
            client_secret: Some("a-long-enough-secret".into()),
            ..NewPartner::default()
        }
    }

    #[test]
    fn a_valid_definition_is_accepted_and_keys_get_kids() {
        let definition = definition_of(&minimal(), "a-long-enough-secret").unwrap();
        let PartnerKeys::Jwks(jwks) = &definition.keys else {
            panic!("inline keys expected");
        };
        // RFC 8037 appendix A.3: the thumbprint of this key.
        assert_eq!(
            jwks.keys[0].kid.as_deref(),
            Some("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k")
        );
        assert!(definition.client_secret_hash.starts_with("$argon2id$"));
    }

    #[test]
    fn every_problem_is_listed() {
        let new = NewPartner {
            sender_id: "bad|id".into(),
            client_id: String::new(),
            scopes: vec!["registry.everything".into()],
            signature_profile: Some(SignatureProfile::DciSignature),
            algorithms: vec![Alg::RsaOaep256],
            jwks: Some(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA","d":"AA"}]}"#.into()),
            callback_prefixes: vec!["ftp://example.org/".into()],
            requires_encryption: true,
            ..NewPartner::default()
        };
        let problems = definition_of(&new, "short").unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field).collect();
        for field in [
            "sender_id",
            "client_id",
            "scopes",
            "algorithms",
            "keys",
            "callback_prefixes",
            "requires_encryption",
            "client_secret",
        ] {
            assert!(fields.contains(&field), "{field} missing from {problems:?}");
        }
    }

    #[test]
    fn only_https_or_local_http_urls_are_accepted() {
        assert!(secure_url("https://partner.example.org/jwks.json"));
        assert!(secure_url("http://127.0.0.1:8080/jwks.json"));
        assert!(!secure_url("http://partner.example.org/jwks.json"));
        assert!(!secure_url("file:///etc/passwd"));
        assert!(!secure_url("not a url"));
    }

    #[test]
    fn the_profile_none_is_explicit_and_needs_no_keys() {
        let new = NewPartner {
            signature_profile: Some(SignatureProfile::None),
            algorithms: Vec::new(),
            jwks: None,
            ..minimal()
        };
        let definition = definition_of(&new, "a-long-enough-secret").unwrap();
        assert_eq!(definition.signature_profile, SignatureProfile::None);
    }
}

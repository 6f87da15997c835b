//! Partner access tokens: `POST /oauth2/client/token` (DCI authz_core_api, RFC 6749 §4.4
//! client credentials) and the check every DCI endpoint makes on `Authorization: Bearer`.
//!
//! A token is a compact JWS (an RFC 9068-style JWT, `typ: at+jwt`) signed with our active
//! signing key, so anyone holding our JWKS can check it and no token table is needed. Claims:
//! `iss` (our sender id), `sub` (the partner's `sender_id`), `client_id`, `scope`
//! (space-separated, RFC 8693 §4.2), `iat`, `exp`, `jti`. Tokens signed by a retired key of
//! ours keep verifying until they expire, like envelope signatures.
//!
//! A verified token is cached (by its text) until it expires; whether its partner is still
//! enabled is asked on every use, so disabling a partner stops its tokens at once.

use crate::clock::Clock;
use crate::crypto::{KeyStore, b64url, b64url_decode, verify_jws_compact};
use crate::partners::{Partner, Partners};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};

/// Longest token text we look at (ours are well under 1 KB).
const MAX_TOKEN_LEN: usize = 4096;

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The partner's `sender_id` (`sub`).
    pub sender_id: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

impl Grant {
    pub fn allows(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// A token just issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The scopes granted, space-separated.
    pub scope: String,
}

/// A refused token request, as RFC 6749 §5.2 names it.
#[derive(Debug, thiserror::Error)]
pub enum TokenRequestError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("only grant_type=client_credentials is supported")]
    UnsupportedGrantType,
    /// Unknown client, wrong secret or disabled partner: one answer for all three.
    #[error("client authentication failed")]
    InvalidClient,
    #[error("{0}")]
    InvalidScope(String),
    #[error("the token service is unavailable")]
    Unavailable,
}

impl TokenRequestError {
    /// The RFC 6749 `error` value.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidClient => "invalid_client",
            Self::InvalidScope(_) => "invalid_scope",
            Self::Unavailable => "temporarily_unavailable",
        }
    }
}

/// Why a bearer token was refused (HTTP 401, or 503 when we cannot tell).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
    #[error("the partner is unknown or disabled")]
    PartnerDisabled,
    #[error("the partner registry is unavailable")]
    Unavailable,
}

/// The client credentials and scope of a token request.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scope: Option<String>,
}

/// Issues and checks partner tokens.
#[derive(Clone)]
pub struct Tokens {
    keys: Arc<KeyStore>,
    partners: Partners,
    clock: Arc<dyn Clock>,
    issuer: String,
    ttl: Duration,
    verified: moka::future::Cache<String, Arc<Grant>>,
}

impl Tokens {
    pub fn new(
        keys: Arc<KeyStore>,
        partners: Partners,
        clock: Arc<dyn Clock>,
        issuer: String,
        ttl: Duration,
    ) -> Self {
        Self {
            keys,
            partners,
            clock,
            issuer,
            ttl,
            verified: moka::future::Cache::new(10_000),
        }
    }

    /// Answers a client-credentials request: the partner's secret must match, and the token
    /// carries the requested scopes it is registered for (all of them when none are asked).
    pub async fn issue(&self, request: &TokenRequest) -> Result<Issued, TokenRequestError> {
        match request.grant_type.as_deref() {
            Some("client_credentials") => {}
            Some(_) => return Err(TokenRequestError::UnsupportedGrantType),
            None => {
                return Err(TokenRequestError::InvalidRequest(
                    "grant_type is required".into(),
                ));
            }
        }
        let (Some(client_id), Some(secret)) = (&request.client_id, &request.client_secret) else {
            return Err(TokenRequestError::InvalidClient);
        };
        let partner = self
            .partners
            .by_client_id(client_id)
            .await
            .map_err(|_| TokenRequestError::Unavailable)?;
        // argon2 takes tens of milliseconds of CPU: off the async workers.
        let secret = secret.clone();
        let partner = tokio::task::spawn_blocking(move || match partner {
            Some(partner) if partner.secret_matches(&secret) && partner.enabled => Some(partner),
            Some(_) => None,
            None => {
                // Spend the same time as a real check, so response times do not tell
                // which client ids exist.
                dummy_partner_check(&secret);
                None
            }
        })
        .await
        .map_err(|_| TokenRequestError::Unavailable)?
        .ok_or(TokenRequestError::InvalidClient)?;
        let scopes = granted_scopes(&partner, request.scope.as_deref())?;
        let now = self.clock.now();
        let expires = now + self.ttl;
        let key = self
            .keys
            .signing_key()
            .ok_or(TokenRequestError::Unavailable)?;
        let header = json!({"alg": key.alg().as_str(), "kid": key.kid(), "typ": "at+jwt"});
        let scope = scopes.join(" ");
        let jti: [u8; 16] = rand::random();
        let claims = json!({
            "iss": self.issuer,
            "sub": partner.sender_id,
            "client_id": partner.client_id,
            "scope": scope,
            "iat": now.timestamp(),
            "exp": expires.timestamp(),
            "jti": b64url(&jti),
        });
        let mut token = b64url(header.to_string().as_bytes());
        token.push('.');
        token.push_str(&b64url(claims.to_string().as_bytes()));
        let signature = key
            .sign(token.as_bytes())
            .map_err(|_| TokenRequestError::Unavailable)?;
        token.push('.');
        token.push_str(&b64url(&signature));
        Ok(Issued {
            access_token: token,
            expires_in: self.ttl.num_seconds(),
            scope,
        })
    }

    /// Checks a bearer token: our signature, issuer, lifetime, and that its partner is still
    /// registered and enabled. Returns the partner with the grant, since every caller needs it.
    pub async fn verify(&self, token: &str) -> Result<(Arc<Grant>, Partner), TokenError> {
        let now = self.clock.now();
        let grant = match self.verified.get(token).await {
            Some(grant) => grant,
            None => {
                let grant = Arc::new(self.check_signed(token)?);
                self.verified.insert(token.to_owned(), grant.clone()).await;
                grant
            }
        };
        if grant.expires_at <= now {
            self.verified.invalidate(token).await;
            return Err(TokenError::Expired);
        }
        match self.partners.get(&grant.sender_id).await {
            Ok(Some(partner)) if partner.enabled && partner.client_id == grant.client_id => {
                Ok((grant, partner))
            }
            Ok(_) => Err(TokenError::PartnerDisabled),
            Err(_) => Err(TokenError::Unavailable),
        }
    }

    fn check_signed(&self, token: &str) -> Result<Grant, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid("too long".into()));
        }
        let header_b64 = token.split('.').next().unwrap_or_default();
        let header: Value = b64url_decode(header_b64)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| TokenError::Invalid("not a JWT".into()))?;
        if header.get("typ").and_then(Value::as_str) != Some("at+jwt") {
            return Err(TokenError::Invalid("not an access token".into()));
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::Invalid("no kid".into()))?;
        // Only our own keys: a token signed by anyone else names a kid we do not have.
        let key = self
            .keys
            .signing_key_by_kid(kid)
            .ok_or_else(|| TokenError::Invalid("unknown key".into()))?;
        let (_, payload) = verify_jws_compact(token, None, key.public_jwk(), &[key.alg()])
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let claims: Value = serde_json::from_slice(&payload)
            .map_err(|_| TokenError::Invalid("claims are not JSON".into()))?;
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| TokenError::Invalid(format!("no `{name}` claim")))
        };
        if text("iss")? != self.issuer {
            return Err(TokenError::Invalid("issued by someone else".into()));
        }
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .and_then(|t| DateTime::from_timestamp(t, 0))
            .ok_or_else(|| TokenError::Invalid("no `exp` claim".into()))?;
        Ok(Grant {
            sender_id: text("sub")?,
            client_id: text("client_id")?,
            scopes: text("scope")?
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            expires_at: exp,
        })
    }

    /// Forgets cached verifications (after a key change in tests and tools).
    pub fn clear_cache(&self) {
        self.verified.invalidate_all();
    }
}

/// Requested ∩ registered scopes; every registered scope when none is requested.
fn granted_scopes(
    partner: &Partner,
    requested: Option<&str>,
) -> Result<Vec<String>, TokenRequestError> {
    let registered = &partner.definition.scopes;
    let Some(requested) = requested.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(registered.clone());
    };
    let mut granted = Vec::new();
    for scope in requested.split(' ').filter(|s| !s.is_empty()) {
        if !crate::partners::SCOPES.contains(&scope) {
            return Err(TokenRequestError::InvalidScope(format!(
                "unknown scope `{scope}`"
            )));
        }
        if partner.has_scope(scope) && !granted.iter().any(|g| g == scope) {
            granted.push(scope.to_owned());
        }
    }
    if granted.is_empty() {
        return Err(TokenRequestError::InvalidScope(
            "none of the requested scopes is registered for this client".into(),
        ));
    }
    Ok(granted)
}

/// An argon2 verification against a fixed hash, costing what a real one costs.
fn dummy_partner_check(secret: &str) {
    use argon2::password_hash::phc::PasswordHash;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};
    static HASH: OnceLock<String> = OnceLock::new();
    let hash = HASH.get_or_init(|| {
        argon2::Argon2::default()
            .hash_password(b"no client has this secret")
            .map(|h| h.to_string())
            .unwrap_or_default()
    });
    if let Ok(parsed) = PasswordHash::new(hash) {
        let _ = argon2::Argon2::default().verify_password(secret.as_bytes(), &parsed);
    }
}

/// Decodes an RFC 6749 §2.3.1 HTTP Basic header value (`Basic base64(id:secret)`, each part
/// form-urlencoded) into the client id and secret.
pub fn basic_credentials(value: &str) -> Option<(String, String)> {
    use base64::Engine;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// application/x-www-form-urlencoded decoding of one value.
fn form_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        // "s6BhdRkqt3:gX1fBat3bV" from RFC 6749 §2.3.1, and an id with an encoded colon.
        assert_eq!(
            basic_credentials("Basic czZCaGRSa3F0MzpnWDFmQmF0M2JW"),
            Some(("s6BhdRkqt3".into(), "gX1fBat3bV".into()))
        );
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode("a%3Ab:c+d");
        assert_eq!(
            basic_credentials(&format!("Basic {encoded}")),
            Some(("a:b".into(), "c d".into()))
        );
        assert_eq!(basic_credentials("Bearer x"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
    }
}

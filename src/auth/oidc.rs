//! Access tokens from an external OpenID Connect provider (Keycloak is what registries deploy):
//! signature checked against the provider's JSON Web Key Set, then issuer, audience and expiry
//! (RFC 9068 §4 lists these checks for JWT access tokens); roles read from a configurable claim.

use super::roles::{Caller, Origin, Role};
use crate::clock::Clock;
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a fetched key set is used before it is fetched again.
const JWKS_TTL: Duration = Duration::from_secs(300);
/// A token whose key id is not in the cached set makes nsr fetch the set again (the provider
/// may have rotated keys), but not more often than this.
const MIN_REFETCH: chrono::Duration = chrono::Duration::seconds(30);
/// Clock skew allowed between nsr and the provider.
const LEEWAY_SECONDS: i64 = 30;

/// Where the provider is and how its tokens map onto nsr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    pub issuer: String,
    pub audience: String,
    pub jwks_url: String,
    /// Dotted path to a list of role names, e.g. `realm_access.roles`.
    pub roles_claim: String,
    /// Claim naming the caller; `sub` when absent from a token.
    pub username_claim: String,
}

/// Why an external token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("the token is not valid: {0}")]
    Invalid(&'static str),
    #[error("the identity provider's keys cannot be fetched")]
    Unavailable,
}

/// Verifies tokens of one provider, caching its key set.
pub struct OidcVerifier {
    settings: OidcSettings,
    http: reqwest::Client,
    keys: moka::future::Cache<(), Arc<JwkSet>>,
    last_fetch: Mutex<Option<DateTime<Utc>>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Algorithms accepted from a provider: asymmetric only, so a token can never be checked with
/// a public key mistaken for an HMAC secret.
const ACCEPTED: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

impl OidcVerifier {
    pub fn new(settings: OidcSettings, clock: Arc<dyn Clock>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            settings,
            http,
            keys: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(JWKS_TTL)
                .build(),
            last_fetch: Mutex::new(None),
            clock,
        }
    }

    /// Whether this token claims to come from this provider (unverified: only to pick the
    /// verifier; the verification itself checks the issuer again).
    pub fn claims_issuer(&self, token: &str) -> bool {
        jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token)
            .ok()
            .and_then(|claims| claims.get("iss").and_then(Value::as_str).map(str::to_owned))
            .is_some_and(|iss| iss == self.settings.issuer)
    }

    async fn fetch(&self) -> Result<Arc<JwkSet>, OidcError> {
        let response = self
            .http
            .get(&self.settings.jwks_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| {
                tracing::warn!(%error, "cannot fetch the OIDC key set");
                OidcError::Unavailable
            })?;
        let bytes = response.bytes().await.map_err(|_| OidcError::Unavailable)?;
        let set: JwkSet = serde_json::from_slice(&bytes).map_err(|error| {
            tracing::warn!(%error, "the OIDC key set is not a JWK Set");
            OidcError::Unavailable
        })?;
        *self.last_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.clock.now());
        Ok(Arc::new(set))
    }

    async fn key_set(&self) -> Result<Arc<JwkSet>, OidcError> {
        self.keys
            .try_get_with((), self.fetch())
            .await
            .map_err(|error| (*error).clone())
    }

    /// The key with id `kid`, fetching the set again once if it is unknown (key rotation).
    async fn key(&self, kid: Option<&str>) -> Result<jsonwebtoken::jwk::Jwk, OidcError> {
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            // No key id: acceptable only when the provider publishes exactly one key.
            None => match set.keys.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            },
        };
        let set = self.key_set().await?;
        if let Some(jwk) = find(&set) {
            return Ok(jwk);
        }
        let recently = self
            .last_fetch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| self.clock.now() - at < MIN_REFETCH);
        if recently {
            return Err(OidcError::Invalid("unknown signing key"));
        }
        self.keys.invalidate(&()).await;
        let set = self.key_set().await?;
        find(&set).ok_or(OidcError::Invalid("unknown signing key"))
    }

    /// Verifies `token` and maps it to a caller.
    pub async fn verify(&self, token: &str) -> Result<Caller, OidcError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| OidcError::Invalid("malformed"))?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(OidcError::Invalid("algorithm not accepted"));
        }
        let jwk = self.key(header.kid.as_deref()).await?;
        if let Some(declared) = jwk.common.key_algorithm
            && declared.to_string().parse::<Algorithm>().ok() != Some(header.alg)
        {
            return Err(OidcError::Invalid("algorithm does not match the key"));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| OidcError::Invalid("unusable key"))?;
        let mut validation = Validation::new(header.alg);
        // Expiry is checked below against the injected clock.
        validation.validate_exp = false;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|error| {
                use jsonwebtoken::errors::ErrorKind;
                OidcError::Invalid(match error.kind() {
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::InvalidAudience => "wrong audience",
                    ErrorKind::InvalidSignature => "bad signature",
                    _ => "rejected",
                })
            })?
            .claims;
        let now = self.clock.now().timestamp();
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        if exp + LEEWAY_SECONDS <= now {
            return Err(OidcError::Invalid("expired"));
        }
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
            && nbf - LEEWAY_SECONDS > now
        {
            return Err(OidcError::Invalid("not yet valid"));
        }
        let name = claims
            .get(&self.settings.username_claim)
            .or_else(|| claims.get("sub"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or(OidcError::Invalid("no subject"))?;
        let roles = roles_at(&claims, &self.settings.roles_claim);
        Ok(Caller {
            name: format!("oidc:{name}"),
            roles,
            origin: Origin::Oidc,
        })
    }
}

/// The nsr roles named in the list at a dotted claim path (unknown names are ignored: a
/// provider's realm has roles of its own).
pub fn roles_at(claims: &Value, path: &str) -> BTreeSet<Role> {
    let mut value = Some(claims);
    for part in path.split('.') {
        value = value.and_then(|v| v.get(part));
    }
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter_map(Role::parse)
            .collect(),
        // A single role as a string, or space-separated like OAuth scopes.
        Some(Value::String(text)) => text.split_whitespace().filter_map(Role::parse).collect(),
        _ => BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_read_at_a_dotted_path() {
        let claims = serde_json::json!({
            "realm_access": {"roles": ["approver", "offline_access", "viewer"]},
            "scope": "auditor openid",
        });
        assert_eq!(
            roles_at(&claims, "realm_access.roles"),
            BTreeSet::from([Role::Approver, Role::Viewer])
        );
        assert_eq!(roles_at(&claims, "scope"), BTreeSet::from([Role::Auditor]));
        assert!(roles_at(&claims, "resource_access.nsr.roles").is_empty());
    }
}

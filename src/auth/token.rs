//! Access tokens nsr signs itself: compact JWS (RFC 7519) with HS256. Only nsr verifies them, so
//! a shared secret is enough; every replica must hold the same key (config `token_secret`, or
//! one key file they all read).

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// `iss` of tokens nsr signs.
pub const ISSUER: &str = "nsr";
/// `aud` of tokens nsr signs: the staff API.
pub const AUDIENCE: &str = "nsr-staff";
/// Shortest signing key accepted: HS256 keys must be at least as long as the hash output
/// (RFC 7518 §3.2).
pub const MIN_KEY_BYTES: usize = 32;

/// The HMAC key that signs and verifies staff access tokens.
#[derive(Clone)]
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([redacted])")
    }
}

/// Claims of a staff access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The staff user name.
    pub sub: String,
    /// The roles held when the token was issued (informational: every request reads the
    /// user's current roles, so a change or a disabled account takes effect at once).
    pub roles: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
}

impl TokenKey {
    /// A key from raw bytes (at least [`MIN_KEY_BYTES`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the token signing key must be at least {MIN_KEY_BYTES} bytes"
            ));
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
        })
    }

    /// A fresh random key (tests, and the first start of an embedded installation).
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self {
            encoding: EncodingKey::from_secret(&bytes),
            decoding: DecodingKey::from_secret(&bytes),
        }
    }

    /// Reads the key file at `path` (hex text), creating it with a new random key, readable by
    /// the owner only, if it does not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        if !path.exists() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let bytes: [u8; 32] = rand::random();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut file) => {
                    writeln!(file, "{}", hex::encode(bytes))
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    file.sync_all()?;
                    tracing::info!(path = %path.display(), "created a new token signing key");
                }
                // Another process created it first: use theirs.
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("cannot create {}", path.display()));
                }
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the token signing key file is readable by others than its owner; chmod 600 it");
            }
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let bytes = hex::decode(text.trim())
            .with_context(|| format!("{} does not hold a hex key", path.display()))?;
        Self::from_bytes(&bytes).map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))
    }

    /// Signs a token for `user` valid from `now` for `ttl`.
    pub fn issue(
        &self,
        user: &str,
        roles: &[String],
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> Result<(String, DateTime<Utc>), jsonwebtoken::errors::Error> {
        let expires = now + ttl;
        let claims = Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: user.to_owned(),
            roles: roles.to_vec(),
            iat: now.timestamp(),
            exp: expires.timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, expires))
    }

    /// Checks signature, issuer, audience and expiry (against `now`, from the injected clock:
    /// the library's own expiry check reads the system time, so it is turned off). Returns the
    /// user name.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, &'static str> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| "the token is not valid")?
            .claims;
        if claims.exp <= now.timestamp() {
            return Err("the token has expired");
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn tokens_verify_until_they_expire_and_only_with_their_key() {
        let key = TokenKey::generate();
        let now = Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap();
        let (token, expires) = key
            .issue(
                "ada",
                &["viewer".into()],
                now,
                chrono::Duration::minutes(15),
            )
            .unwrap();
        assert_eq!(expires, now + chrono::Duration::minutes(15));
        assert_eq!(key.verify(&token, now).unwrap().sub, "ada");
        assert!(key.verify(&token, expires).is_err());
        assert!(TokenKey::generate().verify(&token, now).is_err());
        assert!(TokenKey::from_bytes(b"short").is_err());
    }

    #[test]
    fn the_key_file_is_created_once_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/token.key");
        let first = TokenKey::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = TokenKey::load_or_create(&path).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap();
        let (token, _) = first
            .issue("ada", &[], now, chrono::Duration::minutes(1))
            .unwrap();
        assert!(
            again.verify(&token, now).is_ok(),
            "the same key after a restart"
        );
    }
}

//! Staff identities and access: roles, staff users with argon2id password hashes, the
//! short-lived access tokens nsr signs, tokens from an external OpenID Connect provider, and
//! the login throttle. Knows no HTTP framework and no SQL.

mod limiter;
mod oidc;
mod roles;
mod token;
mod users;

pub use limiter::{LoginLimiter, LoginLimits};
pub use oidc::{OidcError, OidcSettings, OidcVerifier, roles_at};
pub use roles::{Caller, Origin, Role};
pub use token::{Claims, TokenKey};
pub use users::{
    MIN_PASSWORD_CHARS, StaffUser, UserError, Users, check_name, check_password, hash_password,
    verify_password,
};

use crate::clock::Clock;
use crate::config::Config;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::sync::Arc;

/// What a successful login returns.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub roles: Vec<Role>,
}

/// Why a login failed. Unknown user, wrong password and disabled account are one answer, so a
/// caller cannot learn which names exist.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("invalid user name or password")]
    Invalid,
    #[error("too many failed logins; retry in {retry_after} s")]
    Throttled { retry_after: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the token could not be issued")]
    Internal,
}

/// Why a bearer token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error("the identity provider cannot be reached")]
    ProviderUnavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Settings for [`Auth`], from configuration.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub token_ttl: chrono::Duration,
    pub limits: LoginLimits,
    pub oidc: Option<OidcSettings>,
}

impl AuthSettings {
    /// From configuration (OIDC is on when an issuer is configured).
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let oidc = if config.oidc_issuer.is_empty() {
            None
        } else {
            if config.oidc_jwks_url.is_empty() || config.oidc_audience.is_empty() {
                anyhow::bail!("oidc_issuer is set: oidc_audience and oidc_jwks_url are needed too");
            }
            Some(OidcSettings {
                issuer: config.oidc_issuer.clone(),
                audience: config.oidc_audience.clone(),
                jwks_url: config.oidc_jwks_url.clone(),
                roles_claim: config.oidc_roles_claim.clone(),
                username_claim: config.oidc_username_claim.clone(),
            })
        };
        let seconds = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX));
        Ok(Self {
            token_ttl: seconds(config.token_ttl_seconds.max(1)),
            limits: LoginLimits {
                per_account: config.login_max_failures_per_account.max(1),
                per_address: config.login_max_failures_per_address.max(1),
                window: seconds(config.login_window_seconds.max(1)),
            },
            oidc,
        })
    }
}

/// Where the token signing key comes from: the configured secret, else the key file
/// (`token_key_file`, or `token.key` beside the SQLite database, or `nsr-data/token.key`).
pub fn load_token_key(config: &Config) -> anyhow::Result<TokenKey> {
    let secret = config.token_secret.expose();
    if !secret.is_empty() {
        return TokenKey::from_bytes(secret.as_bytes())
            .map_err(|m| anyhow::anyhow!("token_secret: {m}"));
    }
    TokenKey::load_or_create(&token_key_path(config))
}

/// The key file used when no `token_secret` is configured.
pub fn token_key_path(config: &Config) -> PathBuf {
    if !config.token_key_file.as_os_str().is_empty() {
        return config.token_key_file.clone();
    }
    let url = config.database_url.expose();
    let sqlite_dir = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        .filter(|path| !path.is_empty() && !path.contains(":memory:"))
        .and_then(|path| PathBuf::from(path).parent().map(PathBuf::from));
    sqlite_dir
        .unwrap_or_else(|| PathBuf::from("nsr-data"))
        .join("token.key")
}

/// Authentication: password logins, token issue and verification.
pub struct Auth {
    users: Users,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    key: TokenKey,
    settings: AuthSettings,
    limiter: LoginLimiter,
    oidc: Option<OidcVerifier>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        key: TokenKey,
        settings: AuthSettings,
    ) -> Self {
        let oidc = settings
            .oidc
            .clone()
            .map(|s| OidcVerifier::new(s, clock.clone()));
        Self {
            users: Users::new(store.clone(), clock.clone()),
            limiter: LoginLimiter::new(settings.limits),
            store,
            clock,
            key,
            settings,
            oidc,
        }
    }

    pub fn users(&self) -> &Users {
        &self.users
    }

    /// Checks a password login from `address` and issues a token.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        address: &str,
    ) -> Result<AccessToken, LoginError> {
        let now = self.clock.now();
        if let Err(retry_after) = self.limiter.check(name, address, now) {
            return Err(LoginError::Throttled { retry_after });
        }
        let user = self.store.staff_user(name).await?.filter(|u| !u.disabled);
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let password = password.to_owned();
        // The decoy is checked for an unknown or disabled user, so the answer takes as long.
        let matches = users::off_thread(move || {
            let stored = match &hash {
                Some(hash) => hash.as_str(),
                None => users::decoy_hash(),
            };
            verify_password(stored, &password)
        })
        .await
        .map_err(|_| LoginError::Internal)?;
        let Some(user) = user.filter(|_| matches) else {
            self.limiter.failed(name, address, now);
            return Err(LoginError::Invalid);
        };
        self.limiter.succeeded(name);
        let role_names: Vec<String> = user.roles.iter().map(|r| r.as_str().to_owned()).collect();
        let (token, expires_at) = self
            .key
            .issue(&user.name, &role_names, now, self.settings.token_ttl)
            .map_err(|_| LoginError::Internal)?;
        Ok(AccessToken {
            token,
            expires_at,
            roles: user.roles,
        })
    }

    /// The caller a bearer token stands for: an nsr token (the user must still exist and be
    /// enabled; their current roles apply), or one from the configured OIDC provider.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, TokenError> {
        if let Some(oidc) = self.oidc.as_ref().filter(|o| o.claims_issuer(token)) {
            return oidc.verify(token).await.map_err(|error| match error {
                OidcError::Invalid(why) => TokenError::Invalid(why),
                OidcError::Unavailable => TokenError::ProviderUnavailable,
            });
        }
        let claims = self
            .key
            .verify(token, self.clock.now())
            .map_err(TokenError::Invalid)?;
        let user = self
            .store
            .staff_user(&claims.sub)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(TokenError::Invalid("the account is disabled or gone"))?;
        Ok(Caller {
            name: user.name,
            roles: user.roles.into_iter().collect(),
            origin: Origin::Local,
        })
    }

    /// Issues a token without a password (tests and tools that have already authenticated
    /// someone another way).
    pub fn issue_token(&self, user: &StaffUser) -> Result<AccessToken, LoginError> {
        let role_names: Vec<String> = user.roles.iter().map(|r| r.as_str().to_owned()).collect();
        let (token, expires_at) = self
            .key
            .issue(
                &user.name,
                &role_names,
                self.clock.now(),
                self.settings.token_ttl,
            )
            .map_err(|_| LoginError::Internal)?;
        Ok(AccessToken {
            token,
            expires_at,
            roles: user.roles.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn the_key_file_sits_beside_the_sqlite_database() {
        let mut config = Config {
            database_url: Secret("sqlite://data/x/nsr.sqlite3".into()),
            ..Config::default()
        };
        assert_eq!(token_key_path(&config), PathBuf::from("data/x/token.key"));
        config.database_url = Secret("postgres://u@h/db".into());
        assert_eq!(token_key_path(&config), PathBuf::from("nsr-data/token.key"));
        config.token_key_file = PathBuf::from("/etc/nsr/token.key");
        assert_eq!(token_key_path(&config), PathBuf::from("/etc/nsr/token.key"));
    }
}

//! Staff users: names, roles, argon2id password hashes. Every change to a user is written with
//! an audit-chain entry in the same transaction.

use super::roles::Role;
use crate::clock::Clock;
use crate::registry::audit::AuditDraft;
use crate::store::{Store, StoreError};
use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use chrono::{DateTime, Utc};
use std::sync::{Arc, OnceLock};

/// Shortest password accepted (NIST SP 800-63B §3.1.1.2 asks for at least 8; staff accounts
/// reach personal data of a whole population, so more).
pub const MIN_PASSWORD_CHARS: usize = 12;
const MAX_PASSWORD_CHARS: usize = 256;
const MAX_NAME_CHARS: usize = 64;

/// A staff user as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StaffUser {
    /// Lower-case letters, digits, `.`, `_`, `-`; starts with a letter or digit.
    pub name: String,
    /// PHC string (`$argon2id$v=19$…`).
    pub password_hash: String,
    pub roles: Vec<Role>,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for StaffUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is left out: it is an offline-guessing target.
        f.debug_struct("StaffUser")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

/// Why a user change was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// `(field, message)` for every problem with the input.
    #[error("invalid user: {}", .0.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<(&'static str, String)>),
    #[error("a user named `{0}` already exists")]
    Exists(String),
    #[error("no user named `{0}`")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing failed")]
    Hashing,
}

/// Checks a user name.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_' || c == '-');
    if !first_ok || !rest_ok || name.len() > MAX_NAME_CHARS {
        return Err(format!(
            "must be 1 to {MAX_NAME_CHARS} of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks a new password's length (the only rule NIST SP 800-63B recommends imposing).
pub fn check_password(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        return Err(format!(
            "must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters long"
        ));
    }
    Ok(())
}

/// An argon2id hash (the crate's defaults: OWASP's first recommended parameter set, m = 19 MiB,
/// t = 2, p = 1) with a random salt. CPU-heavy: call off the async threads.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|_| UserError::Hashing)
}

/// Whether `password` matches the PHC string `hash`. CPU-heavy, like [`hash_password`].
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash of no one's password, checked when a login names an unknown or disabled user so
/// that the answer takes as long as for a real one (no user-name probing by timing).
pub fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password that nobody has").unwrap_or_default())
}

/// Runs a CPU-heavy closure on the blocking pool.
pub(super) async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, UserError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| UserError::Hashing)
}

/// Staff user management.
#[derive(Clone)]
pub struct Users {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Users {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Adds a user with `roles` (at least one). `actor` is who adds them.
    pub async fn add(
        &self,
        actor: &str,
        name: &str,
        password: &str,
        roles: &[Role],
    ) -> Result<StaffUser, UserError> {
        let mut problems = Vec::new();
        if let Err(message) = check_name(name) {
            problems.push(("name", message));
        }
        if let Err(message) = check_password(password) {
            problems.push(("password", message));
        }
        if roles.is_empty() {
            problems.push(("roles", "at least one role is needed".to_owned()));
        }
        if !problems.is_empty() {
            return Err(UserError::Invalid(problems));
        }
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        let password = password.to_owned();
        let password_hash = off_thread(move || hash_password(&password)).await??;
        let now = self.clock.now();
        let user = StaffUser {
            name: name.to_owned(),
            password_hash,
            roles,
            disabled: false,
            created_at: now,
            updated_at: now,
        };
        let audit = audit_entry(now, actor, "user.add", &user);
        match self.store.insert_staff_user(&user, &audit).await {
            Ok(()) => Ok(user),
            Err(StoreError::Unique { .. }) => Err(UserError::Exists(name.to_owned())),
            Err(other) => Err(other.into()),
        }
    }

    /// Disables a user: their password and any token they hold stop working at once.
    pub async fn disable(&self, actor: &str, name: &str) -> Result<StaffUser, UserError> {
        let Some(mut user) = self.store.staff_user(name).await? else {
            return Err(UserError::NotFound(name.to_owned()));
        };
        if user.disabled {
            return Ok(user);
        }
        user.disabled = true;
        user.updated_at = self.clock.now();
        let audit = audit_entry(user.updated_at, actor, "user.disable", &user);
        self.store.update_staff_user(&user, &audit).await?;
        Ok(user)
    }

    /// Every user, by name.
    pub async fn list(&self) -> Result<Vec<StaffUser>, StoreError> {
        self.store.staff_users().await
    }

    /// One user.
    pub async fn get(&self, name: &str) -> Result<Option<StaffUser>, StoreError> {
        self.store.staff_user(name).await
    }
}

/// The audit entry for a user change: who, which user, their roles and state afterwards (never
/// the hash).
fn audit_entry(at: DateTime<Utc>, actor: &str, action: &str, user: &StaffUser) -> AuditDraft {
    AuditDraft {
        at,
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: format!("user:{}", user.name),
        detail: serde_json::json!({
            "roles": user.roles,
            "disabled": user.disabled,
        })
        .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(check_name("ada.okafor-2").is_ok());
        for bad in ["", "Ada", "-ada", "ada:x", "a b", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_password("short").is_err());
        assert!(check_password("long enough passphrase").is_ok());
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse battery!"));
        assert!(!verify_password("not a hash", "x"));
    }
}

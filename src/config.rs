//! Configuration: built-in defaults, then `nsr.toml` (or `--config FILE`), then `NSR_*`
//! environment variables (the environment wins), then command-line flags. Unknown keys in the
//! file or the environment stop nsr with the key named. Secrets never appear in `Debug`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The embedded default database: a SQLite file under `./nsr-data/`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://nsr-data/nsr.sqlite3";
/// The file read when no `--config` is given (it may be absent).
pub const DEFAULT_CONFIG_FILE: &str = "nsr.toml";
const ENV_PREFIX: &str = "NSR_";

/// Everything nsr can be configured with. Every field is a key in `nsr.toml` and an
/// `NSR_<KEY>` environment variable.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `sqlite://PATH` (embedded, the default) or `postgres://…`. May hold a password.
    pub database_url: Secret,
    /// Folder of register definitions (`*.yaml`).
    pub registers_dir: PathBuf,
    /// Address `nsr serve` listens on.
    pub listen: SocketAddr,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `nsr=debug,sqlx=warn`.
    pub log_filter: String,
    /// Rows per change set (and per database transaction) in a CSV import.
    pub import_batch_size: usize,
    /// Connections in the database pool.
    pub max_connections: u32,
    /// Folder of our private keys (PKCS#8 files, mode 0600). `nsr serve` creates it with a
    /// signing and an encryption key when it does not exist at all.
    pub keys_dir: PathBuf,
    /// Our DCI sender id: `sender_id` of the envelopes we send, and the sender in the `kidId`
    /// of our DCI signature strings.
    pub gateway_sender_id: String,
    /// Clock skew tolerated on partners' signature times and message timestamps, in seconds.
    pub signature_skew_seconds: u32,
    /// How long our envelope signatures are valid, in seconds.
    pub signature_validity_seconds: u32,
    /// How long a partner's `message_id` is remembered (a repeat within it is refused); older
    /// messages are refused by their `message_ts`. Seconds.
    pub replay_window_seconds: u32,
    /// How long a partner JWKS fetched from its URL is reused, in seconds.
    pub partner_jwks_ttl_seconds: u32,
    // Staff API (authentication, change requests).
    /// HMAC key (at least 32 bytes) that signs staff access tokens. Empty: the key in
    /// `token_key_file`. Every replica must use the same key.
    pub token_secret: Secret,
    /// Where the signing key lives when `token_secret` is empty; created (mode 0600) on first
    /// start. Empty: `token.key` beside the SQLite database, or `nsr-data/token.key`.
    pub token_key_file: PathBuf,
    /// Lifetime of an access token from `POST /api/v1/auth/login`.
    pub token_ttl_seconds: u64,
    /// Failed logins for one account, within `login_window_seconds`, before further attempts
    /// are refused (429).
    pub login_max_failures_per_account: u32,
    /// Failed logins from one client address, within the window, before it is refused.
    pub login_max_failures_per_address: u32,
    /// The window over which failed logins are counted, and how long a lockout lasts.
    pub login_window_seconds: u64,
    /// Issuer (`iss`) of an external OpenID Connect provider whose access tokens are accepted,
    /// e.g. `https://keycloak.example/realms/nsr`. Empty: none.
    pub oidc_issuer: String,
    /// Audience (`aud`) those tokens must carry.
    pub oidc_audience: String,
    /// The provider's JSON Web Key Set URL.
    pub oidc_jwks_url: String,
    /// Dotted path of the claim holding the caller's roles (Keycloak: `realm_access.roles`).
    pub oidc_roles_claim: String,
    /// Claim naming the caller (recorded as `oidc:<name>`); `sub` if absent.
    pub oidc_username_claim: String,
    /// Change-request sources whose requests are applied without a second person's approval.
    pub auto_approve_sources: Vec<String>,
    // DCI gateway: tokens, mappings, searches, async jobs and callbacks.
    /// Lifetime of the access tokens `/oauth2/client/token` issues to partners, in seconds.
    pub partner_token_ttl_seconds: u32,
    /// Folder of the DCI mappings (register fields ⇄ DCI JSON-LD, searchable attributes).
    pub mappings_dir: PathBuf,
    /// Folder of the consent policies (`*.yaml`): who may receive which fields, for which
    /// purpose. A folder that does not exist holds none: nothing is shared.
    pub consent_policies_dir: PathBuf,
    /// Most search requests (or one status request) in one DCI message (`total_count`).
    pub dci_max_batch: u32,
    /// Most records in one page of a DCI search reply; also the most a search without
    /// `pagination` may match (more is `rjct.search.too_many_records_found`).
    pub dci_max_page_size: u32,
    /// How long nsr keeps trying to deliver an async callback before marking its job failed,
    /// in seconds.
    pub callback_deadline_seconds: u32,
    /// How often `nsr serve` anchors the disclosure chain in the registry's audit chain, in
    /// seconds (`registry::audit`): disclosures logged since the last anchor are covered by
    /// their own chain only.
    pub disclosure_anchor_seconds: u32,
    /// First retry delay of a callback that was not acknowledged; doubled each attempt (with
    /// jitter) up to `callback_retry_max_seconds`.
    pub callback_retry_initial_seconds: u32,
    /// Longest delay between two delivery attempts, in seconds.
    pub callback_retry_max_seconds: u32,
    /// Time allowed for one callback HTTP request, in seconds.
    pub callback_timeout_seconds: u32,
    /// How long a worker owns a claimed job; if its process dies, another worker takes the job
    /// over after this, in seconds.
    pub job_lease_seconds: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: Secret(DEFAULT_DATABASE_URL.to_owned()),
            registers_dir: PathBuf::from("specs/registers"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            log_format: LogFormat::Text,
            log_filter: "info".to_owned(),
            import_batch_size: 5000,
            max_connections: 8,
            keys_dir: PathBuf::from("nsr-data/keys"),
            gateway_sender_id: "nsr".to_owned(),
            signature_skew_seconds: 60,
            signature_validity_seconds: 300,
            replay_window_seconds: 86_400,
            partner_jwks_ttl_seconds: 300,
            token_secret: Secret(String::new()),
            token_key_file: PathBuf::new(),
            token_ttl_seconds: 900,
            login_max_failures_per_account: 5,
            login_max_failures_per_address: 20,
            login_window_seconds: 300,
            oidc_issuer: String::new(),
            oidc_audience: String::new(),
            oidc_jwks_url: String::new(),
            oidc_roles_claim: "realm_access.roles".to_owned(),
            oidc_username_claim: "preferred_username".to_owned(),
            auto_approve_sources: crate::registry::change_request::default_auto_approve_sources(),
            partner_token_ttl_seconds: 600,
            mappings_dir: PathBuf::from("mappings"),
            consent_policies_dir: PathBuf::from("consent-policies"),
            dci_max_batch: 50,
            dci_max_page_size: 1000,
            callback_deadline_seconds: 86_400,
            disclosure_anchor_seconds: 60,
            callback_retry_initial_seconds: 2,
            callback_retry_max_seconds: 600,
            callback_timeout_seconds: 10,
            job_lease_seconds: 120,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &self.database_url)
            .field("registers_dir", &self.registers_dir)
            .field("listen", &self.listen)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .field("import_batch_size", &self.import_batch_size)
            .field("max_connections", &self.max_connections)
            .field("keys_dir", &self.keys_dir)
            .field("gateway_sender_id", &self.gateway_sender_id)
            .field("signature_skew_seconds", &self.signature_skew_seconds)
            .field(
                "signature_validity_seconds",
                &self.signature_validity_seconds,
            )
            .field("replay_window_seconds", &self.replay_window_seconds)
            .field("partner_jwks_ttl_seconds", &self.partner_jwks_ttl_seconds)
            .field("token_secret", &self.token_secret)
            .field("token_key_file", &self.token_key_file)
            .field("token_ttl_seconds", &self.token_ttl_seconds)
            .field(
                "login_max_failures_per_account",
                &self.login_max_failures_per_account,
            )
            .field(
                "login_max_failures_per_address",
                &self.login_max_failures_per_address,
            )
            .field("login_window_seconds", &self.login_window_seconds)
            .field("oidc_issuer", &self.oidc_issuer)
            .field("oidc_audience", &self.oidc_audience)
            .field("oidc_jwks_url", &self.oidc_jwks_url)
            .field("oidc_roles_claim", &self.oidc_roles_claim)
            .field("oidc_username_claim", &self.oidc_username_claim)
            .field("auto_approve_sources", &self.auto_approve_sources)
            .field("partner_token_ttl_seconds", &self.partner_token_ttl_seconds)
            .field("mappings_dir", &self.mappings_dir)
            .field("consent_policies_dir", &self.consent_policies_dir)
            .field("dci_max_batch", &self.dci_max_batch)
            .field("dci_max_page_size", &self.dci_max_page_size)
            .field("callback_deadline_seconds", &self.callback_deadline_seconds)
            .field("disclosure_anchor_seconds", &self.disclosure_anchor_seconds)
            .field(
                "callback_retry_initial_seconds",
                &self.callback_retry_initial_seconds,
            )
            .field(
                "callback_retry_max_seconds",
                &self.callback_retry_max_seconds,
            )
            .field("callback_timeout_seconds", &self.callback_timeout_seconds)
            .field("job_lease_seconds", &self.job_lease_seconds)
            .finish()
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A value that must not be printed: its `Debug` shows only that it is set. A database URL's
/// password is the reason this exists; the scheme and host stay visible to help diagnosis.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep `scheme://` for diagnosis; everything after it may carry credentials.
        match self.0.split_once("://") {
            Some((scheme, _)) => write!(f, "\"{scheme}://[redacted]\""),
            None => f.write_str("\"[redacted]\""),
        }
    }
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("environment variable {var}: no such config key `{key}`")]
    UnknownEnv { var: String, key: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

impl Config {
    /// Loads defaults, then the file (`explicit` must exist; otherwise `nsr.toml` is read if
    /// present), then `NSR_*` variables from `env`.
    pub fn load(
        explicit: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table =
            toml::Table::try_from(Config::default()).map_err(|e| ConfigError::File {
                path: PathBuf::from("<defaults>"),
                message: e.to_string(),
            })?;
        let known: Vec<String> = table.keys().cloned().collect();

        let file = match explicit {
            Some(path) => Some(path.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let from_file: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::File {
                        path: path.clone(),
                        message: e.message().to_owned(),
                    })?;
            for (key, value) in from_file {
                if !known.contains(&key) {
                    return Err(ConfigError::File {
                        path,
                        message: format!("unknown key `{key}`"),
                    });
                }
                table.insert(key, value);
            }
            // Re-check the file's values by type, so a bad value names the file.
            Config::deserialize(table.clone()).map_err(|e| ConfigError::File {
                path: path.clone(),
                message: e.message().to_owned(),
            })?;
        }

        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        env.sort();
        for (var, raw) in env {
            let key = var.trim_start_matches(ENV_PREFIX).to_ascii_lowercase();
            if !known.contains(&key) {
                return Err(ConfigError::UnknownEnv { var, key });
            }
            // A number or boolean is read as TOML; anything else is a plain string.
            let value = format!("v = {raw}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(raw));
            let mut probe = table.clone();
            probe.insert(key.clone(), value.clone());
            Config::deserialize(probe).map_err(|e| ConfigError::Env {
                var: var.clone(),
                message: e.message().to_owned(),
            })?;
            table.insert(key, value);
        }
        Config::deserialize(table).map_err(|e| ConfigError::File {
            path: PathBuf::from("<merged>"),
            message: e.message().to_owned(),
        })
    }

    /// An example `nsr.toml` holding every key with its default.
    pub fn example_toml() -> String {
        toml::to_string(&Config::default()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nsr.toml");
        std::fs::write(&path, "import_batch_size = 10\nlog_filter = \"debug\"\n").unwrap();
        let config = Config::load(Some(&path), env(&[("NSR_IMPORT_BATCH_SIZE", "20")])).unwrap();
        assert_eq!(config.import_batch_size, 20);
        assert_eq!(config.log_filter, "debug");
        assert_eq!(config.max_connections, Config::default().max_connections);
        let config = Config::load(None, env(&[("NSR_KEYS_DIR", "/etc/nsr/keys")])).unwrap();
        assert_eq!(config.keys_dir, PathBuf::from("/etc/nsr/keys"));
        assert!(Config::example_toml().contains("keys_dir = \"nsr-data/keys\""));
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nsr.toml");
        std::fs::write(&path, "databse_url = \"x\"\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("databse_url"), "{err}");
        let err = Config::load(None, env(&[("NSR_LISTN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("NSR_LISTN") && err.contains("listn"), "{err}");
    }

    #[test]
    fn bad_values_name_their_source() {
        let err = Config::load(None, env(&[("NSR_LISTEN", "not-an-address")])).unwrap_err();
        assert!(err.to_string().contains("NSR_LISTEN"), "{err}");
    }

    #[test]
    fn debug_redacts_the_database_url() {
        let config = Config {
            database_url: Secret("postgres://nsr:hunter2@db/nsr".into()),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://[redacted]"), "{shown}");
    }
}

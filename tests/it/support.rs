//! Test databases: a SQLite file in a temporary folder, or a fresh PostgreSQL database per test
//! (created from TEST_DATABASE_URL and dropped at the end), so tests are independent of order.

use chrono::TimeZone;
use nsr::clock::FakeClock;
use nsr::registry::Registry;
use nsr::registry::register::Registers;
use nsr::store::{self, Store};
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which database a contract test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub fn specs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/registers")
}

/// The DCI mappings that ship with nsr.
pub fn mappings_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings")
}

pub fn registers() -> Registers {
    Registers::load_dir(&specs_dir()).expect("the shipped register definitions load")
}

/// A registry on an isolated database with a fake clock.
pub struct TestRegistry {
    pub registry: Registry,
    pub clock: Arc<FakeClock>,
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_admin: Option<(String, String)>,
}

/// The PostgreSQL admin URL, or `None` (after a note) when this run has no PostgreSQL.
pub fn postgres_url() -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("TEST_REQUIRE_POSTGRES").is_err(),
                "TEST_REQUIRE_POSTGRES is set but TEST_DATABASE_URL is not"
            );
            eprintln!("note: TEST_DATABASE_URL is not set; PostgreSQL variant skipped");
            None
        }
    }
}

impl TestRegistry {
    /// A new, empty database of the given kind; `None` if that kind is not available.
    pub async fn new(db: Db) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg_admin) = match db {
            Db::Sqlite => (
                format!("sqlite://{}", dir.path().join("nsr.sqlite3").display()),
                None,
            ),
            Db::Postgres => {
                let admin = postgres_url()?;
                let name = format!("nsr_it_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("connect to TEST_DATABASE_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                (store::url_with_database(&admin, &name), Some((admin, name)))
            }
        };
        let store = store::open(&url, 4).await.unwrap();
        let registers = registers();
        store.sync_field_indexes(&registers).await.unwrap();
        let clock = Arc::new(FakeClock::new(
            chrono::Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap(),
        ));
        let registry = Registry::new(store, Arc::new(registers), clock.clone());
        Some(Self {
            registry,
            clock,
            url,
            dir,
            pg_admin,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.registry.store()
    }

    /// Everything the router needs, over this registry: our `keys`, staff `auth`, a partner
    /// registry and the DCI gateway (test configuration) on the same store.
    pub async fn app_state(
        &self,
        keys: Arc<nsr::crypto::KeyStore>,
        auth: Arc<nsr::auth::Auth>,
    ) -> nsr::http::AppState {
        self.app_state_with(keys, auth, &crate::dci::config()).await
    }

    /// [`TestRegistry::app_state`] with the gateway configured by `config` (e.g. other
    /// consent policies).
    pub async fn app_state_with(
        &self,
        keys: Arc<nsr::crypto::KeyStore>,
        auth: Arc<nsr::auth::Auth>,
        config: &nsr::config::Config,
    ) -> nsr::http::AppState {
        let (dci, tokens) = nsr::cli::open_gateway(config, &self.registry, keys.clone())
            .await
            .unwrap();
        nsr::http::AppState {
            registry: self.registry.clone(),
            metrics: Arc::new(nsr::http::Metrics::default()),
            keys,
            auth,
            partners: dci.partners().clone(),
            dci,
            tokens,
        }
    }

    /// Staff authentication over this registry with the test settings.
    pub fn staff_auth(&self) -> Arc<nsr::auth::Auth> {
        Arc::new(nsr::auth::Auth::new(
            self.store().clone(),
            self.clock.clone(),
            nsr::auth::TokenKey::generate(),
            crate::api::settings(),
        ))
    }

    /// Runs raw SQL against the database (to tamper with it, as an attacker would).
    pub async fn execute_raw(&self, sql: &str) -> u64 {
        execute_raw_at(&self.url, sql).await
    }

    /// [`TestRegistry::execute_raw`] where the disclosure log is kept: on SQLite its own file
    /// (`<database>.disclosures`), on PostgreSQL the database.
    pub async fn execute_raw_on_disclosures(&self, sql: &str) -> u64 {
        if self.url.starts_with("sqlite:") {
            execute_raw_at(&format!("{}.disclosures", self.url), sql).await
        } else {
            self.execute_raw(sql).await
        }
    }

    /// Names of the per-field indexes that exist in the database.
    pub async fn field_indexes(&self) -> Vec<String> {
        self.field_index_definitions().await.into_keys().collect()
    }

    /// The per-field indexes that exist in the database, with their definitions, each followed
    /// by ` @` and the index's storage identity (SQLite's root page, PostgreSQL's oid), which
    /// changes when an index is built again.
    pub async fn field_index_definitions(&self) -> std::collections::BTreeMap<String, String> {
        let rows: Vec<(String, String)> = if self.url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query_as(
                "select name, sql || ' @' || rootpage from sqlite_master where type = 'index' and name like 'rv%'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap()
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_as(
                "select indexname::text, indexdef || ' @' || (quote_ident(schemaname) || '.' || quote_ident(indexname))::regclass::oid from pg_indexes where indexname like 'rv%'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap()
        };
        rows.into_iter().collect()
    }

    /// Runs a statement on the PostgreSQL database.
    pub async fn sql(&self, statement: &str) {
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
    }

    /// The first column of a PostgreSQL query's rows, as text.
    pub async fn sql_strings(&self, query: &str) -> Vec<String> {
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned()))
            .fetch_all(&mut conn)
            .await
            .unwrap()
    }

    /// Drops the PostgreSQL database (SQLite files go with the temporary folder).
    pub async fn finish(self) {
        let Self {
            registry, pg_admin, ..
        } = self;
        drop(registry);
        if let Some((admin, name)) = pg_admin {
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "drop database if exists {name} with (force)"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
        }
    }
}

/// Runs each named `async fn(&TestRegistry)` of the calling module as two tests:
/// `<module>::sqlite::<name>` (always) and `<module>::postgres::<name>` (when
/// TEST_DATABASE_URL is set), each on its own fresh database.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let t = $crate::support::TestRegistry::new($crate::support::Db::Sqlite)
                        .await
                        .unwrap();
                    super::$name(&t).await;
                    t.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(t) =
                        $crate::support::TestRegistry::new($crate::support::Db::Postgres).await
                    else {
                        return;
                    };
                    super::$name(&t).await;
                    t.finish().await;
                }
            )*
        }
    };
}

/// Runs `sql` on a connection of its own to `url` (SQLite or PostgreSQL); rows affected.
async fn execute_raw_at(url: &str, sql: &str) -> u64 {
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        let done = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        done.rows_affected()
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let done = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        done.rows_affected()
    }
}

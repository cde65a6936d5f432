//! Databases: one per component, created on first start — on PostgreSQL
//! `<instance>_<component>` on the configured server, on SQLite (`shop dev`) the file
//! `<dir>/<component>.db`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tracing::info;

use crate::lite::LiteDb;
use crate::Pool;

/// Where a component's database lives.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// A URL of the PostgreSQL server with any existing database (used to create ours).
    pub server_url: String,
    /// The instance name; each component's database is `<instance>_<component>`.
    pub instance: String,
    /// Connections per pool.
    pub max_connections: u32,
    /// Embedded storage instead: one SQLite file per component in this directory.
    pub sqlite_dir: Option<PathBuf>,
}

impl DatabaseConfig {
    /// The database name of one component of this instance.
    pub fn database_name(&self, component: &str) -> String {
        format!("{}_{}", self.instance, component).replace('-', "_")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot reach PostgreSQL at {url}: {source}. Start it with `scripts/infra.sh up` or set SHOP_DATABASE_URL")]
    Unreachable { url: String, source: sqlx::Error },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Hides the password of a database URL for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Creates the component's database when missing, connects a pool to it and applies the
/// given schema scripts (idempotent SQL; on PostgreSQL under an advisory lock).
///
/// # Errors
/// The server is unreachable, or a statement fails.
pub async fn open(
    config: &DatabaseConfig,
    component: &str,
    schema: &[&str],
) -> Result<Pool, DbError> {
    match &config.sqlite_dir {
        Some(dir) => open_sqlite(dir, component, schema).await,
        None => Ok(open_postgres(config, component, schema).await?.into()),
    }
}

/// The SQLite form of a schema script written for PostgreSQL: the few type spellings
/// SQLite does not share (everything else in our scripts is common SQL), without the
/// lines that end in `-- PostgreSQL only` (migrations of PostgreSQL stores).
pub fn sqlite_schema(script: &str) -> String {
    script
        .lines()
        .filter(|line| !line.trim_end().ends_with(POSTGRES_ONLY))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("BIGSERIAL PRIMARY KEY", "INTEGER PRIMARY KEY AUTOINCREMENT")
}

/// The mark of a schema line [`sqlite_schema`] leaves out.
const POSTGRES_ONLY: &str = "-- PostgreSQL only";

async fn open_sqlite(
    dir: &std::path::Path,
    component: &str,
    schema: &[&str],
) -> Result<Pool, DbError> {
    std::fs::create_dir_all(dir).map_err(|e| DbError::Sql(sqlx::Error::Io(e)))?;
    let db = LiteDb::open(&dir.join(format!("{component}.db")), false)?;
    let script: Vec<String> = schema.iter().map(|script| sqlite_schema(script)).collect();
    db.execute_scripts(&script).await?;
    Ok(db.into())
}

async fn open_postgres(
    config: &DatabaseConfig,
    component: &str,
    schema: &[&str],
) -> Result<PgPool, DbError> {
    let name = config.database_name(component);
    let server = PgConnectOptions::from_str(&config.server_url)?;
    let mut admin = server
        .clone()
        .connect()
        .await
        .map_err(|source| DbError::Unreachable {
            url: redact(&config.server_url),
            source,
        })?;
    ensure_database(&mut admin, &name).await?;
    admin.close().await.ok();

    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(server.database(&name))
        .await?;
    apply_schema(&pool, schema).await?;
    Ok(pool)
}

async fn ensure_database(admin: &mut PgConnection, name: &str) -> Result<(), DbError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut *admin)
            .await?;
    if !exists {
        // Two processes may race here; "already exists" is success.
        //
        // Text sorts bytewise (`C`): every text key in our tables is an identifier
        // (aggregate ids, consumer names, topics), and no query orders human text. With
        // a language collation, each index comparison of such a key goes through the
        // locale (`strcoll`; `C.UTF-8` too, before PostgreSQL 17); upserts into
        // `applied_versions` took a quarter longer that way.
        let sql = format!(
            "CREATE DATABASE \"{}\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C'",
            name.replace('"', "")
        );
        match sqlx::query(&sql).execute(&mut *admin).await {
            Ok(_) => info!(database = name, "created database"),
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Serializes schema changes across processes, until the transaction ends (PostgreSQL):
/// an arbitrary constant key, "schema changes of this database".
const SCHEMA_LOCK: &str = "SELECT pg_advisory_xact_lock(7242001)";

/// Runs idempotent schema scripts in one transaction, serialized across processes.
///
/// # Errors
/// A statement fails.
pub async fn apply_schema(pool: &PgPool, scripts: &[&str]) -> Result<(), DbError> {
    let mut tx = pool.begin().await?;
    sqlx::query(SCHEMA_LOCK).execute(&mut *tx).await?;
    for script in scripts {
        sqlx::raw_sql(script).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Runs a schema script (several statements) on either backend, in one transaction.
///
/// # Errors
/// A statement fails; nothing is applied.
pub async fn run_script(pool: &crate::Pool, script: &str) -> Result<(), DbError> {
    // Statement by statement through `sql` (our scripts have no `;` inside a statement):
    // sqlx's raw multi-statement scripts do not make `Send` futures.
    let script = match pool.dialect() {
        crate::Dialect::Postgres => script.to_string(),
        crate::Dialect::Sqlite => sqlite_schema(script),
    };
    let code: String = script
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let statements: Vec<String> = code
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut tx = pool.begin().await?;
    if pool.dialect() == crate::Dialect::Postgres {
        crate::sql::query(SCHEMA_LOCK).execute(&mut tx).await?;
    }
    for statement in &statements {
        crate::sql::query(statement).execute(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Adds `column` (`definition`: its type, constraints and default) to an existing
/// `table` when it has no such column: the additive change of a schema whose `CREATE
/// TABLE IF NOT EXISTS` leaves tables created by an older build as they were. Idempotent;
/// on PostgreSQL under the schema lock.
///
/// # Errors
/// A statement fails (the table does not exist, a bad definition).
pub async fn ensure_column(
    pool: &crate::Pool,
    table: &str,
    column: &str,
    definition: &str,
) -> Result<(), DbError> {
    match pool.dialect() {
        crate::Dialect::Postgres => {
            // Looked up first: `ALTER TABLE … ADD COLUMN IF NOT EXISTS` takes the table's
            // exclusive lock even when the column is there, and every process opening
            // the database would queue behind the table's readers and hold up the rest.
            let present: bool = crate::sql::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2)",
            )
            .bind(table)
            .bind(column)
            .fetch_one(pool)
            .await?;
            if present {
                return Ok(());
            }
            let mut tx = pool.begin().await?;
            crate::sql::query(SCHEMA_LOCK).execute(&mut tx).await?;
            crate::sql::query(&format!(
                "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {definition}"
            ))
            .execute(&mut tx)
            .await?;
            tx.commit().await?;
        }
        crate::Dialect::Sqlite => {
            // One writer at a time: no other process adds it between the look and the
            // change.
            let mut tx = pool.begin().await?;
            let present: i64 = crate::sql::query_scalar(&format!(
                "SELECT count(*) FROM pragma_table_info('{table}') WHERE name = $1"
            ))
            .bind(column)
            .fetch_one(&mut tx)
            .await?;
            if present == 0 {
                crate::sql::query(&format!(
                    "ALTER TABLE {table} ADD COLUMN {column} {definition}"
                ))
                .execute(&mut tx)
                .await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Drops a component's database (tests and `shop` tooling for throwaway instances).
///
/// # Errors
/// The server is unreachable or the drop fails.
pub async fn drop_database(server_url: &str, name: &str) -> Result<(), DbError> {
    let mut admin = PgConnectOptions::from_str(server_url)?.connect().await?;
    let sql = format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        name.replace('"', "")
    );
    sqlx::query(&sql).execute(&mut admin).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqlite_schema_leaves_out_postgres_only_lines() {
        let script = "CREATE TABLE t (id BIGSERIAL PRIMARY KEY);\n\
                      ALTER TABLE t DROP CONSTRAINT IF EXISTS t_fkey; -- PostgreSQL only\n\
                      CREATE INDEX t_i ON t (id);";
        assert_eq!(
            super::sqlite_schema(script),
            "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT);\nCREATE INDEX t_i ON t (id);"
        );
    }

    #[test]
    fn redacts_password() {
        assert_eq!(
            super::redact("postgres://postgres:secret@127.0.0.1:5432/postgres"),
            "postgres://postgres:***@127.0.0.1:5432/postgres"
        );
        assert_eq!(
            super::redact("postgres://127.0.0.1/x"),
            "postgres://127.0.0.1/x"
        );
    }
}

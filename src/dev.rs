//! `shop dev`: the whole system in one process on embedded storage — every command
//! service, the sagas, the projector, the read API and the gateway — with no external
//! service. Event stores and read models are SQLite files (one per component database)
//! and the event log is the embedded log, all under the data directory; a restart with
//! the same directory finds everything there and the sagas in flight finish.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use shop_eventing::platform::Platform;
use shop_eventing::CancellationToken;
use shop_log::embedded::EmbeddedLog;
use shop_sql::db::DatabaseConfig;
use shop_web::auth::{JwtKeys, ADMIN_EMAIL};

use crate::args::{Common, Component, DevArgs};
use crate::serve::{all_topics, consumer_tuning, relay_tuning, run_components};

/// The embedded event log's file in the data directory.
pub const LOG_FILE: &str = "log.db";
pub const ADMIN_PASSWORD_FILE: &str = "admin-password";
const JWT_SECRET_FILE: &str = "jwt-secret";

pub async fn run(common: &Common, args: DevArgs) -> anyhow::Result<()> {
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    // Password hashes and emails live here: the owner's only.
    private_directory(dir)?;
    // One process per data directory: its consumer groups live in that process.
    let _lock = lock(dir)?;
    let secret = match args.options.jwt_secret.clone().filter(|s| !s.is_empty()) {
        Some(secret) => secret,
        None => remembered_secret(&dir.join(JWT_SECRET_FILE))?,
    };
    // Only a password this directory keeps is printed; one given by the operator is theirs.
    let (admin_password, shown_password) = match args
        .options
        .admin_password
        .clone()
        .filter(|p| !p.is_empty())
    {
        Some(password) => (
            password,
            "(the password given in SHOP_ADMIN_PASSWORD)".to_string(),
        ),
        None => {
            let password = remembered_secret(&dir.join(ADMIN_PASSWORD_FILE))?;
            let shown = format!(
                "{password}  (generated once, kept in {})",
                dir.join(ADMIN_PASSWORD_FILE).display()
            );
            (password, shown)
        }
    };
    let log = EmbeddedLog::open(&dir.join(LOG_FILE), common.topic_partitions)
        .await
        .with_context(|| format!("cannot open the event log in {}", dir.display()))?;
    let platform = Platform {
        database: DatabaseConfig {
            server_url: String::new(),
            instance: "dev".to_string(),
            max_connections: common.db_pool_size,
            sqlite_dir: Some(dir.clone()),
        },
        log: Arc::new(log),
        topic_prefix: common.topic_prefix.clone(),
        jwt: JwtKeys::new(&secret, args.options.jwt_ttl_secs),
        consumer: consumer_tuning(&args.options, std::time::Duration::ZERO),
        relay: relay_tuning(&args.options),
        shutdown: CancellationToken::new(),
    };
    platform
        .log
        .ensure_topics(&all_topics(&platform.topic_prefix))
        .await?;
    // One process: the components other than the gateway listen on free ports.
    let mut options = args.options.clone();
    options.customers_port = 0;
    options.inventory_port = 0;
    options.orders_port = 0;
    options.payments_port = 0;
    options.shipping_port = 0;
    options.notifications_port = 0;
    // Webhook secrets derive from the remembered JWT secret unless a key is set.
    if options.webhooks_key.as_deref().is_none_or(str::is_empty) {
        options.webhooks_key = Some(secret.clone());
    }
    options.read_api_port = 0;
    options.projector_port = 0;
    // Nothing balances load in front of one `shop dev`: Ctrl-C stops it at once unless
    // `--drain-grace-ms` says otherwise.
    options.drain_grace_ms.get_or_insert(0);
    let data = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    let announce = |gateway: &str| {
        println!("shop: Shop is running at {gateway} (REST API under {gateway}/api)");
        println!("shop: admin login {ADMIN_EMAIL} / {shown_password}");
        // The databases exist now: owner-only, like the directory.
        if let Err(e) = private_directory(&data) {
            tracing::warn!(error = %e, "cannot restrict the data directory's permissions");
        }
        println!(
            "shop: data in {} (event log, one SQLite database per component)",
            data.display()
        );
    };
    run_components(
        &platform,
        &[Component::All],
        &options,
        Some(admin_password.clone()),
        &announce,
    )
    .await
}

/// Holds `DIR/.lock` for as long as the process lives (the OS releases it on exit, also
/// on a kill), so a second `shop dev` on the same directory stops at once.
fn lock(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another `shop dev` is running on {}; stop it or choose another --data-dir",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// A secret kept in `path` (created with a fresh random value, readable by its owner
/// only, on first use), so that tokens and the admin password survive restarts.
fn remembered_secret(path: &Path) -> anyhow::Result<String> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let existing = existing.trim().to_string();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(secret)
}

/// Makes the data directory and every file in it readable by their owner only (0700 and
/// 0600): SQLite creates its files with the process's umask, 0644 by default.
fn private_directory(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
        for entry in std::fs::read_dir(dir)?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("cannot restrict {}", entry.path().display()))?;
            }
        }
    }
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

//! `shop events`, `shop export` and `shop import`: the event stores read and written
//! directly — PostgreSQL (the usual database flags and `--instance`) or a `shop dev`
//! data directory (`--data-dir`, readable while `shop dev` runs).
//!
//! The exchange format is JSON Lines of CloudEvents (structured mode, SPEC §4) with two
//! more extension attributes an import needs: `aggregatetype` and `eventversion`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shop_eventing::auth::JwtKeys;
use shop_eventing::db::DatabaseConfig;
use shop_eventing::platform::Platform;
use shop_eventing::sql::{self, Pool};
use shop_eventing::store::{EventStore, StoredEvent};
use shop_eventing::CancellationToken;
use shop_schemas::{CloudEvent, EventMetadata, Service};

use crate::cli::Common;

/// Where the event stores are.
#[derive(Debug, Clone, Args)]
pub struct StoreTarget {
    /// A `shop dev` data directory (embedded storage) instead of PostgreSQL.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// customers, inventory, orders, payments or shipping.
    pub service: Service,
    /// Only this aggregate's events (in sequence order).
    #[arg(long)]
    pub aggregate: Option<String>,
    /// Start after this store position.
    #[arg(long, default_value_t = 0)]
    pub from_position: i64,
    /// Keep printing new events until Ctrl-C.
    #[arg(long)]
    pub follow: bool,
    /// One CloudEvent (structured JSON) per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: StoreTarget,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Services to export (default: all).
    pub services: Vec<Service>,
    #[command(flatten)]
    pub target: StoreTarget,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// JSON Lines of CloudEvents, as `shop export` writes them.
    pub file: PathBuf,
    #[command(flatten)]
    pub target: StoreTarget,
}

/// The platform of the target instance (the log is not used by these commands).
async fn platform(common: &Common, target: &StoreTarget) -> anyhow::Result<Platform> {
    let (database, log): (DatabaseConfig, Arc<dyn shop_eventing::log::EventLog>) =
        match &target.data_dir {
            Some(dir) => (
                DatabaseConfig {
                    server_url: String::new(),
                    instance: "dev".into(),
                    max_connections: 2,
                    sqlite_dir: Some(dir.clone()),
                },
                Arc::new(
                    shop_eventing::embedded::EmbeddedLog::open(
                        &dir.join(crate::dev::LOG_FILE),
                        common.topic_partitions,
                    )
                    .await?,
                ),
            ),
            None => (
                DatabaseConfig {
                    server_url: common.database_url.clone(),
                    instance: common.instance.clone(),
                    max_connections: 2,
                    sqlite_dir: None,
                },
                crate::serve::kafka(common)?,
            ),
        };
    Ok(Platform {
        database,
        log,
        topic_prefix: common.topic_prefix.clone(),
        jwt: JwtKeys::new("unused", 60),
        consumer: Default::default(),
        relay: Default::default(),
        shutdown: CancellationToken::new(),
    })
}

/// An existing service store, opened without creating anything.
async fn existing_store(platform: &Platform, service: Service) -> anyhow::Result<Pool> {
    let component = service.name();
    match &platform.database.sqlite_dir {
        Some(dir) => {
            let file = dir.join(format!("{component}.db"));
            if !file.exists() {
                bail!("no {component} store at {}", file.display());
            }
        }
        None => {
            let name = platform.database.database_name(component);
            let admin = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&platform.database.server_url)
                .await
                .context("PostgreSQL unreachable (`scripts/infra.sh up`, or --database-url)")?;
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&name)
                    .fetch_one(&admin)
                    .await?;
            admin.close().await;
            if !exists {
                bail!("no {component} store: database {name} does not exist (--instance?)");
            }
        }
    }
    Ok(shop_eventing::db::open(&platform.database, component, &[]).await?)
}

/// A stored event as a CloudEvent line, with what an import needs.
fn export_line(event: &StoredEvent, service: Service) -> anyhow::Result<String> {
    let mut value = serde_json::to_value(event.to_cloud_event(service))?;
    value["aggregatetype"] = event.aggregate_type.clone().into();
    value["eventversion"] = event.event_version.clone().into();
    Ok(serde_json::to_string(&value)?)
}

/// A CloudEvent line back into the stored form.
fn import_line(line: &str) -> anyhow::Result<(Service, StoredEvent)> {
    let value: serde_json::Value = serde_json::from_str(line)?;
    let event: CloudEvent = serde_json::from_value(value.clone())?;
    let service = event
        .service()
        .with_context(|| format!("{}: not a Shop source", event.source))?;
    let prefix = format!("shop.{}.", service.name());
    let event_type = event
        .ty
        .strip_prefix(&prefix)
        .with_context(|| format!("{}: not a {} event type", event.ty, service.name()))?
        .to_string();
    let text = |key: &str| {
        value[key]
            .as_str()
            .map(String::from)
            .with_context(|| format!("event {}: no {key}", event.id))
    };
    Ok((
        service,
        StoredEvent {
            position: 0,
            aggregate_type: text("aggregatetype")?,
            aggregate_id: event.subject.clone(),
            sequence: event.sequence as i64,
            event_id: event.id,
            event_type,
            event_version: text("eventversion")?,
            data: event.data.clone(),
            metadata: EventMetadata {
                correlation_id: event.correlationid.clone(),
                causation_id: event.causationid.clone(),
                traceparent: event.traceparent.clone(),
            },
            recorded_at: event.time,
        },
    ))
}

fn human(event: &StoredEvent) -> String {
    format!(
        "{:>8}  {}  {:<28} {}  #{}  correlation {}",
        event.position,
        event.recorded_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        event.event_type,
        event.aggregate_id,
        event.sequence,
        event.metadata.correlation_id
    )
}

pub async fn events(common: &Common, args: EventsArgs) -> anyhow::Result<()> {
    let platform = platform(common, &args.target).await?;
    let pool = existing_store(&platform, args.service).await?;
    let store = EventStore::new(pool);
    let mut stdout = std::io::stdout().lock();
    let mut print = |event: &StoredEvent| -> anyhow::Result<()> {
        if args.json {
            writeln!(stdout, "{}", export_line(event, args.service)?)?;
        } else {
            writeln!(stdout, "{}", human(event))?;
        }
        Ok(())
    };
    let mut after = args.from_position;
    loop {
        let batch: Vec<StoredEvent> = match &args.aggregate {
            Some(id) => store
                .aggregate_events(id)
                .await?
                .into_iter()
                .filter(|e| e.position > after)
                .collect(),
            None => store.events_after(after, 1000).await?,
        };
        for event in &batch {
            print(event)?;
            after = after.max(event.position);
        }
        if batch.len() == 1000 && args.aggregate.is_none() {
            continue;
        }
        if !args.follow {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

fn progress(total: u64, what: &str) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} events ({per_sec})")?
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    Ok(bar)
}

pub async fn export(common: &Common, args: ExportArgs) -> anyhow::Result<()> {
    let platform = platform(common, &args.target).await?;
    let services = if args.services.is_empty() {
        Service::ALL.to_vec()
    } else {
        args.services.clone()
    };
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut written = 0u64;
    for service in services {
        let pool = existing_store(&platform, service).await?;
        let total: i64 = sql::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await?;
        let bar = progress(total.max(0) as u64, service.name())?;
        let store = EventStore::new(pool.clone());
        let mut after = 0;
        loop {
            let batch = store.events_after(after, 1000).await?;
            let Some(last) = batch.last() else { break };
            after = last.position;
            for event in &batch {
                writeln!(out, "{}", export_line(event, service)?)?;
            }
            bar.inc(batch.len() as u64);
            written += batch.len() as u64;
        }
        bar.finish();
        pool.close().await;
    }
    out.flush()?;
    eprintln!("shop: exported {written} events");
    Ok(())
}

/// The saga reactions of each service: they replay imported events without commands.
fn saga_consumers(service: Service) -> &'static [&'static str] {
    match service {
        Service::Orders => &[shop_orders::reactions::SAGA],
        Service::Inventory => &[shop_inventory::reactions::RESERVATIONS],
        Service::Payments => &[shop_payments::reactions::CHARGES],
        Service::Shipping => &[shop_shipping::reactions::SHIPMENTS],
        Service::Customers => &[],
    }
}

pub async fn import(common: &Common, args: ImportArgs) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut by_service: Vec<(Service, Vec<StoredEvent>)> =
        Service::ALL.iter().map(|s| (*s, Vec::new())).collect();
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let (service, event) =
            import_line(&line).with_context(|| format!("line {}", number + 1))?;
        if let Some((_, events)) = by_service.iter_mut().find(|(s, _)| *s == service) {
            events.push(event);
        }
    }
    let platform = platform(common, &args.target).await?;
    let ids: Vec<uuid::Uuid> = by_service
        .iter()
        .flat_map(|(_, events)| events.iter().map(|e| e.event_id))
        .collect();
    let mut imported = 0;
    for (service, events) in &by_service {
        let store = match service {
            Service::Customers => shop_customers::service::import_store(&platform).await?,
            Service::Inventory => shop_inventory::service::import_store(&platform).await?,
            Service::Orders => {
                shop_orders::service::import_store(&platform, Default::default()).await?
            }
            Service::Payments => shop_payments::service::import_store(&platform).await?,
            Service::Shipping => shop_shipping::service::import_store(&platform).await?,
        };
        let pool = store.pool().clone();
        shop_eventing::db::run_script(&pool, shop_eventing::consumer::SCHEMA).await?;
        let present: i64 = sql::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await?;
        if present > 0 {
            bail!(
                "the {} store already has {present} events: import only into a fresh instance",
                service.name()
            );
        }
        // Saga reactions will read every imported event (theirs or others') from the log:
        // they replay them without issuing commands.
        for consumer in saga_consumers(*service) {
            let mut tx = pool.begin().await?;
            for id in &ids {
                sql::query("INSERT INTO replay_only (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(*consumer)
                    .bind(*id)
                    .execute(&mut tx)
                    .await?;
            }
            tx.commit().await?;
        }
        let bar = progress(events.len() as u64, service.name())?;
        for chunk in events.chunks(500) {
            store
                .import(chunk)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", service.name()))?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish();
        imported += events.len();
        pool.close().await;
    }
    eprintln!(
        "shop: imported {imported} events; start the instance to publish them and rebuild its read models"
    );
    Ok(())
}

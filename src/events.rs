//! `shop events`, `shop export` and `shop import`: the event stores read and written
//! directly — PostgreSQL (the usual database flags and `--instance`) or a `shop dev`
//! data directory (`--data-dir`; `events` and `export` open its databases read-only, also
//! while `shop dev` runs).
//!
//! The exchange format is JSON Lines of CloudEvents (structured mode, SPEC §4) with two
//! more extension attributes an import needs: `aggregatetype` and `eventversion`.
//!
//! Events are printed and exported as stored, at the version they were written at;
//! `shop events --upcast` prints them as this build reads them (upcast to the newest
//! version, `docs/src/evolution.md`), and `shop import` refuses a file with an event this
//! build cannot read after upcasting, before writing anything. Imported events are stored
//! as they were written: readers upcast them.

use std::io::{BufRead, Write};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shop_eventing::platform::Platform;
use shop_eventing::store::{EventStore, StoredEvent};
use shop_eventing::CancellationToken;
use shop_schemas::{CloudEvent, EventMetadata, Service};
use shop_sql::db::DatabaseConfig;
use shop_sql::{self as sql, Pool};
use shop_web::auth::JwtKeys;
use sqlx::postgres::PgConnectOptions;

use crate::args::{Common, EventsArgs, ExportArgs, ImportArgs, StoreTarget};

/// Where the target instance's databases are.
fn database_config(common: &Common, target: &StoreTarget) -> DatabaseConfig {
    match &target.data_dir {
        Some(dir) => DatabaseConfig {
            server_url: String::new(),
            instance: "dev".into(),
            max_connections: 2,
            sqlite_dir: Some(dir.clone()),
        },
        None => DatabaseConfig {
            server_url: common.database_url.clone(),
            instance: common.instance.clone(),
            max_connections: 2,
            sqlite_dir: None,
        },
    }
}

/// The platform of the target instance, for `shop import` (which writes through each
/// service's store; the log is not used: starting the instance publishes the outbox).
async fn platform(common: &Common, target: &StoreTarget) -> anyhow::Result<Platform> {
    let log: Arc<dyn shop_log::EventLog> = match &target.data_dir {
        Some(dir) => Arc::new(
            shop_log::embedded::EmbeddedLog::open(
                &dir.join(crate::dev::LOG_FILE),
                common.topic_partitions,
            )
            .await?,
        ),
        None => crate::serve::kafka(common)?,
    };
    Ok(Platform {
        database: database_config(common, target),
        log,
        topic_prefix: common.topic_prefix.clone(),
        jwt: JwtKeys::new("unused", 60),
        consumer: Default::default(),
        relay: Default::default(),
        shutdown: CancellationToken::new(),
    })
}

/// An existing service store, opened to read only: nothing is created, no schema applied,
/// no log opened — a `shop dev` directory is read while `shop dev` writes it.
async fn read_store(config: &DatabaseConfig, service: Service) -> anyhow::Result<Pool> {
    let component = service.name();
    match &config.sqlite_dir {
        Some(dir) => {
            let file = dir.join(format!("{component}.db"));
            if !file.exists() {
                bail!("no {component} store at {}", file.display());
            }
            let db = shop_sql::lite::LiteDb::open(&file, true)
                .with_context(|| format!("cannot open {}", file.display()))?;
            Ok(db.into())
        }
        None => {
            let name = config.database_name(component);
            let server = PgConnectOptions::from_str(&config.server_url)
                .context("--database-url is not a PostgreSQL URL")?;
            let admin = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_with(server.clone())
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
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_with(server.database(&name))
                .await?;
            Ok(pool.into())
        }
    }
}

/// A stored event as a CloudEvent line, with what an import needs.
fn export_line(event: &StoredEvent, service: Service) -> anyhow::Result<String> {
    let mut value = serde_json::to_value(event.to_cloud_event(service))?;
    value["aggregatetype"] = event.aggregate_type.clone().into();
    value["eventversion"] = event.event_version.clone().into();
    Ok(serde_json::to_string(&value)?)
}

/// A stored event's data as this build reads it: upcast to the newest version of its type
/// and checked by decoding it into its service's event enum. Returns that version and data
/// (fields the Rust type does not know are kept).
///
/// # Errors
/// The event's type or its upcast data is not one this build can read.
fn newest(
    service: Service,
    event_type: &str,
    version: &str,
    data: &serde_json::Value,
) -> anyhow::Result<(u32, serde_json::Value)> {
    use shop_schemas::{customers, inventory, notifications, orders, payments, shipping};
    fn decodes<E: serde::de::DeserializeOwned>(
        name: &str,
        data: &serde_json::Value,
    ) -> Result<(), serde_json::Error> {
        shop_schemas::decode_event::<E>(name, data).map(|_| ())
    }
    let (version, data) = shop_schemas::upcast(
        event_type,
        version.parse().unwrap_or(1),
        std::borrow::Cow::Borrowed(data),
    );
    match service {
        Service::Customers => decodes::<customers::CustomerEvent>(event_type, &data),
        Service::Inventory => decodes::<inventory::InventoryEvent>(event_type, &data),
        Service::Orders => decodes::<orders::OrderEvent>(event_type, &data),
        Service::Payments => decodes::<payments::PaymentEvent>(event_type, &data),
        Service::Shipping => decodes::<shipping::ShippingEvent>(event_type, &data),
        Service::Notifications => decodes::<notifications::NotificationEvent>(event_type, &data),
    }
    .with_context(|| {
        format!(
            "{} {event_type} v{version} is not readable by this build",
            service.name()
        )
    })?;
    Ok((version, data.into_owned()))
}

/// [`export_line`] of the event as this build reads it (`shop events --upcast`): its data
/// upcast to the newest version, which its `dataschema` and `eventversion` name.
fn upcast_line(event: &StoredEvent, service: Service) -> anyhow::Result<String> {
    let (version, data) = newest(
        service,
        &event.event_type,
        &event.event_version,
        &event.data,
    )
    .with_context(|| format!("event {}", event.event_id))?;
    let upcast = StoredEvent {
        event_version: version.to_string(),
        data,
        ..event.clone()
    };
    export_line(&upcast, service)
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
    let event_version = text("eventversion")?;
    // Readable by this build once upcast; stored as it was written.
    newest(service, &event_type, &event_version, &event.data)?;
    Ok((
        service,
        StoredEvent {
            position: 0,
            aggregate_type: text("aggregatetype")?,
            aggregate_id: event.subject.clone(),
            sequence: event.sequence as i64,
            event_id: event.id,
            event_type,
            event_version,
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

/// Page size of store reads.
const PAGE: i64 = 1000;

/// How long `--follow` waits for a position it has not seen before deciding it will never
/// commit (positions are taken at insert and commit in any order; a rolled-back append —
/// a lost race — leaves a gap for good).
const GAP_PATIENCE: Duration = Duration::from_secs(10);

/// What `shop events --follow` has printed: every position up to `floor`, and those above
/// it in `seen`; `gaps` are positions between `floor` and `scanned` not seen yet, with when
/// they were noticed.
struct Cursor {
    floor: i64,
    scanned: i64,
    seen: std::collections::BTreeSet<i64>,
    gaps: std::collections::BTreeMap<i64, std::time::Instant>,
}

impl Cursor {
    fn new(from: i64) -> Self {
        Cursor {
            floor: from,
            scanned: from,
            seen: Default::default(),
            gaps: Default::default(),
        }
    }

    /// Whether `position` is new (and notes it).
    fn fresh(&mut self, position: i64) -> bool {
        position > self.floor && self.seen.insert(position)
    }

    /// Moves `floor` over what is settled. One aggregate's events: everything up to the
    /// last one seen (its next event is appended after that one committed, so it takes a
    /// higher position). The whole store: seen positions, and gaps older than
    /// [`GAP_PATIENCE`].
    fn settle(&mut self, whole_store: bool) {
        let Some(&top) = self.seen.last() else { return };
        if !whole_store {
            self.floor = top;
            self.seen.clear();
            return;
        }
        let now = std::time::Instant::now();
        for position in self.scanned.max(self.floor) + 1..top {
            if !self.seen.contains(&position) {
                self.gaps.insert(position, now);
            }
        }
        self.scanned = self.scanned.max(top);
        loop {
            let next = self.floor + 1;
            if self.seen.remove(&next) {
                self.floor = next;
            } else if self
                .gaps
                .get(&next)
                .is_some_and(|since| since.elapsed() >= GAP_PATIENCE)
            {
                self.gaps.remove(&next);
                self.floor = next;
            } else {
                break;
            }
        }
    }
}

pub async fn events(common: &Common, args: EventsArgs) -> anyhow::Result<()> {
    let pool = read_store(&database_config(common, &args.target), args.service).await?;
    let store = EventStore::new(pool);
    let mut stdout = std::io::stdout().lock();
    let mut cursor = Cursor::new(args.from_position);
    let aggregate = args.aggregate.map(|id| id.to_string());
    if let Some(id) = &aggregate {
        if !args.follow && store.events_page(Some(id), 0, 1).await?.is_empty() {
            anyhow::bail!(
                "no events of aggregate {id} in the {} store",
                args.service.name()
            );
        }
    }
    loop {
        // Following, from the lowest position not settled, skipping what was printed.
        let mut after = cursor.floor;
        loop {
            let batch = store.events_page(aggregate.as_deref(), after, PAGE).await?;
            for event in &batch {
                if !args.follow || cursor.fresh(event.position) {
                    if args.upcast {
                        writeln!(stdout, "{}", upcast_line(event, args.service)?)?;
                    } else if args.json {
                        writeln!(stdout, "{}", export_line(event, args.service)?)?;
                    } else {
                        writeln!(stdout, "{}", human(event))?;
                    }
                }
            }
            if args.follow {
                cursor.settle(aggregate.is_none());
            }
            match batch.last() {
                Some(last) if batch.len() as i64 == PAGE => after = last.position,
                _ => break,
            }
        }
        stdout.flush()?;
        if !args.follow {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

fn progress(total: u64, what: &str, quiet: bool) -> anyhow::Result<ProgressBar> {
    if quiet {
        return Ok(ProgressBar::hidden());
    }
    // Drawn only when standard error is a terminal.
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} events ({per_sec})")?
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    Ok(bar)
}

pub async fn export(common: &Common, args: ExportArgs) -> anyhow::Result<()> {
    let config = database_config(common, &args.target);
    let services = if args.services.is_empty() {
        Service::ALL.to_vec()
    } else {
        args.services.clone()
    };
    // Every store first: a missing one fails before anything is written.
    let mut stores = Vec::new();
    for service in services {
        stores.push((service, read_store(&config, service).await?));
    }
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut written = 0u64;
    for (service, pool) in stores {
        let total: i64 = sql::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await?;
        let bar = progress(total.max(0) as u64, service.name(), args.quiet)?;
        let store = EventStore::new(pool.clone());
        let mut after = 0;
        loop {
            let batch = store.events_after(after, PAGE).await?;
            let Some(last) = batch.last() else { break };
            after = last.position;
            for event in &batch {
                writeln!(out, "{}", export_line(event, service)?)?;
            }
            bar.inc(batch.len() as u64);
            written += batch.len() as u64;
        }
        bar.finish_and_clear();
        pool.close().await;
    }
    out.flush()?;
    if !args.quiet {
        eprintln!("shop: exported {written} events");
    }
    Ok(())
}

/// The saga reactions of each service and the services they read: they replay imported
/// events of those services without issuing commands (pure projections replay normally).
fn saga_consumers(service: Service) -> &'static [(&'static str, &'static [Service])] {
    match service {
        Service::Orders => &[(
            shop_orders::reactions::SAGA,
            shop_orders::reactions::SAGA_SOURCES,
        )],
        Service::Inventory => &[(
            shop_inventory::reactions::RESERVATIONS,
            shop_inventory::reactions::RESERVATIONS_SOURCES,
        )],
        Service::Payments => &[(
            shop_payments::reactions::CHARGES,
            shop_payments::reactions::CHARGES_SOURCES,
        )],
        Service::Shipping => &[(
            shop_shipping::reactions::SHIPMENTS,
            shop_shipping::reactions::SHIPMENTS_SOURCES,
        )],
        Service::Notifications => &[(
            shop_notifications::reactions::WEBHOOKS,
            shop_notifications::reactions::WEBHOOKS_SOURCES,
        )],
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

    // 1. Every store, checked fresh before anything is written.
    let mut stores = Vec::new();
    for (service, events) in &by_service {
        let store = match service {
            Service::Customers => shop_customers::service::import_store(&platform).await?,
            Service::Inventory => shop_inventory::service::import_store(&platform).await?,
            Service::Orders => {
                shop_orders::service::import_store(&platform, Default::default()).await?
            }
            Service::Payments => shop_payments::service::import_store(&platform).await?,
            Service::Shipping => shop_shipping::service::import_store(&platform).await?,
            Service::Notifications => shop_notifications::service::import_store(&platform).await?,
        };
        let present: i64 = sql::query_scalar("SELECT count(*) FROM events")
            .fetch_one(store.pool())
            .await?;
        if present > 0 {
            bail!(
                "the {} store already has {present} events: import only into a fresh instance (nothing was imported)",
                service.name()
            );
        }
        stores.push((*service, store, events));
    }

    // 2. Replay marks, before any imported event can reach the log: each saga reaction
    //    applies the imported events of the topics it reads to its own tables, without
    //    issuing commands (their outcomes are in the history already).
    for (service, store, _) in &stores {
        let pool = store.pool();
        shop_sql::db::run_script(pool, shop_eventing::consumer::SCHEMA).await?;
        for (consumer, sources) in saga_consumers(*service) {
            let mut tx = pool.begin().await?;
            for (_, events) in by_service.iter().filter(|(s, _)| sources.contains(s)) {
                for event in events {
                    sql::query("INSERT INTO replay_only (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                        .bind(*consumer)
                        .bind(event.event_id)
                        .execute(&mut tx)
                        .await?;
                }
            }
            tx.commit().await?;
        }
    }

    // 3. The events, as they were, through each store's hook and outbox.
    let mut imported = 0;
    for (service, store, events) in &stores {
        let bar = progress(events.len() as u64, service.name(), args.quiet)?;
        for chunk in events.chunks(500) {
            store
                .import(chunk)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", service.name()))?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        imported += events.len();
        store.pool().close().await;
    }
    if !args.quiet {
        eprintln!(
            "shop: imported {imported} events; the instance's relays publish them (at its start) and its read models follow"
        );
    }
    Ok(())
}

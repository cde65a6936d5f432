//! `shop serve`: runs the chosen components in this process until SIGINT/SIGTERM.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::Router;
use shop_eventing::platform::{ConsumerTuning, Platform, RelayTuning};
use shop_eventing::CancellationToken;
use shop_log::kafka::{KafkaConfig, KafkaLog};
use shop_log::EventLog;
use shop_sql::db::DatabaseConfig;
use shop_web::auth::JwtKeys;
use shop_web::http::{bind, serve, Deferred};
use tokio::task::JoinHandle;
use tracing::info;

use crate::args::{Common, Component, ServeArgs, ServeOptions};

/// The Kafka client from the common flags.
pub fn kafka(common: &Common) -> anyhow::Result<Arc<KafkaLog>> {
    Ok(Arc::new(KafkaLog::new(KafkaConfig {
        brokers: common.kafka_brokers.clone(),
        partitions: common.topic_partitions,
        replication_factor: common.topic_replication,
        session_timeout_ms: common.kafka_session_timeout_ms,
    })?))
}

/// The platform (PostgreSQL databases, the given event log, keys) from the common flags.
pub fn platform(
    common: &Common,
    log: Arc<dyn EventLog>,
    jwt: JwtKeys,
    consumer: ConsumerTuning,
    relay: RelayTuning,
) -> Platform {
    Platform {
        database: DatabaseConfig {
            server_url: common.database_url.clone(),
            instance: common.instance.clone(),
            max_connections: common.db_pool_size,
            sqlite_dir: None,
        },
        log,
        topic_prefix: common.topic_prefix.clone(),
        jwt,
        consumer,
        relay,
        shutdown: CancellationToken::new(),
    }
}

/// Every topic of the deployment: one per service, and the dead letters.
pub fn all_topics(prefix: &str) -> Vec<String> {
    let mut topics: Vec<String> = shop_schemas::Service::ALL
        .iter()
        .map(|s| s.topic(prefix))
        .collect();
    topics.push(shop_schemas::topics::dead_letter_topic(prefix));
    topics
}

/// `shop serve`: the chosen components against Kafka and PostgreSQL.
pub async fn run(common: &Common, args: ServeArgs) -> anyhow::Result<()> {
    let options = &args.options;
    let secret = options
        .jwt_secret
        .clone()
        .filter(|s| !s.is_empty())
        .context("set SHOP_JWT_SECRET (or --jwt-secret): the secret that signs tokens")?;
    let platform = platform(
        common,
        kafka(common)?,
        JwtKeys::new(&secret, options.jwt_ttl_secs),
        consumer_tuning(options, shop_eventing::platform::CONSUMER_LINGER),
        relay_tuning(options),
    );
    prepare_topics(&platform, &common.kafka_brokers).await;
    let admin_password = options.admin_password.clone().filter(|p| !p.is_empty());
    run_components(
        &platform,
        &args.components,
        options,
        admin_password,
        &|_| {},
    )
    .await
}

/// Creates the deployment's missing topics. When Kafka does not answer within a few
/// seconds the components start anyway (the gateway routes, command services take
/// commands into their outboxes, `/ready` names the broker) and the topics are created in
/// the background as soon as it does.
async fn prepare_topics(platform: &Platform, brokers: &str) {
    let topics = all_topics(&platform.topic_prefix);
    let first = tokio::time::timeout(Duration::from_secs(5), platform.log.ensure_topics(&topics));
    let why = match first.await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 5 s".to_string(),
    };
    tracing::warn!(error = %why, "waiting for Kafka at {brokers} (start it with `scripts/infra.sh up`); starting meanwhile");
    let log = platform.log.clone();
    let shutdown = platform.shutdown.clone();
    let brokers = brokers.to_string();
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(500);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            match log.ensure_topics(&topics).await {
                Ok(()) => {
                    info!("Kafka at {brokers} answers: topics ready");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "waiting for Kafka at {brokers}"),
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    });
}

/// The consumers' tuning; `linger` unless `--consumer-linger-ms` says otherwise.
pub fn consumer_tuning(options: &ServeOptions, linger: Duration) -> ConsumerTuning {
    ConsumerTuning {
        batch_size: options.consumer_batch_size,
        linger: options
            .consumer_linger_ms
            .map_or(linger, Duration::from_millis),
        max_attempts: options.consumer_max_attempts,
        retry_backoff: Duration::from_millis(options.consumer_retry_backoff_ms),
        projection_members: options.projection_members as usize,
        rebuild_members: options.rebuild_members as usize,
    }
}

pub fn relay_tuning(options: &ServeOptions) -> RelayTuning {
    RelayTuning {
        batch_size: options.relay_batch_size,
        poll_interval: Duration::from_millis(options.relay_poll_ms),
    }
}

/// Starts the components on `platform`, prints their addresses and `shop: ready`, and
/// runs until SIGINT/SIGTERM, then drains ([`drain`]) and returns.
///
/// Every component listens at once, whatever is down (SPEC §1): until it has started —
/// its database reachable — its `/health` answers, its `/ready` says 503 and what it
/// waits for, and its routes a 503 with `Retry-After`; it retries with backoff and takes
/// traffic as soon as it can. The gateway needs nothing to route; a command service needs
/// no broker to take commands (its outbox keeps their events until the broker is back).
pub async fn run_components(
    platform: &Platform,
    components: &[Component],
    args: &ServeOptions,
    admin_password: Option<String>,
    announce: &dyn Fn(&str),
) -> anyhow::Result<()> {
    let mut components: BTreeSet<Component> = components.iter().copied().collect();
    if components.remove(&Component::All) {
        components.extend([
            Component::Customers,
            Component::Inventory,
            Component::Orders,
            Component::Payments,
            Component::Shipping,
            Component::Notifications,
            Component::Projector,
            Component::ReadApi,
            Component::Gateway,
        ]);
    }
    if components.is_empty() {
        bail!("no component to run");
    }
    // A missing setting is no dependency to wait for: refused before anything listens.
    let admin_password = if components.contains(&Component::Customers) {
        Some(admin_password.context(
            "set SHOP_ADMIN_PASSWORD (or --admin-password): the password of admin@shop.local",
        )?)
    } else {
        None
    };
    let waiting_for = match &platform.database.sqlite_dir {
        Some(_) => "its database".to_string(),
        None => format!("PostgreSQL at {}", redact(&platform.database.server_url)),
    };

    // Every component listens at once.
    let mut slots: Vec<Slot> = Vec::new();
    let mut local = LocalUpstreams::default();
    for component in components.iter().copied() {
        let Some((name, port)) = listening(component, args) else {
            continue;
        };
        let (listener, addr) = bind(&args.bind, port)
            .await
            .with_context(|| format!("{name}: cannot listen on {}:{port}", args.bind))?;
        let deferred = Deferred::new(format!("waiting for {waiting_for}"));
        let base = match component {
            Component::Projector | Component::Gateway => None,
            _ => Some(local.here(addr, &deferred.router())),
        };
        match component {
            Component::Customers => local.customers = base,
            Component::Inventory => local.inventory = base,
            Component::Orders => local.orders = base,
            Component::Payments => local.payments = base,
            Component::Shipping => local.shipping = base,
            Component::Notifications => local.notifications = base,
            Component::ReadApi => local.read_api = base,
            _ => {}
        }
        slots.push(Slot {
            component,
            name,
            listener,
            deferred,
        });
    }
    let mut gateway_url: Option<String> = None;
    if let Some(slot) = slots.iter().find(|s| s.component == Component::Gateway) {
        slot.deferred.started(gateway(platform, args, &mut local)?);
        gateway_url = Some(format!("http://{}", slot.listener.local_addr()?));
    }

    let shutdown = platform.shutdown.clone();
    // The servers stop accepting on their own token, after the drain's grace period and
    // before the consumers and relays stop (`platform.shutdown`).
    let serving = CancellationToken::new();
    let deferreds: Vec<Deferred> = slots.iter().map(|s| s.deferred.clone()).collect();
    let mut handles = Vec::new();
    let mut starting = Vec::new();
    for slot in slots {
        // One line per component on stdout, for people and for the tests that start us.
        println!(
            "shop: {} listening on http://{}",
            slot.name,
            slot.listener.local_addr()?
        );
        handles.push(tokio::spawn(serve(
            slot.listener,
            slot.deferred.router(),
            serving.clone(),
            slot.name,
            args.http_max_connections,
        )));
        if slot.component != Component::Gateway {
            starting.push((slot.component, slot.name, slot.deferred));
        }
    }

    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    let startup = async {
        for (component, name, deferred) in &starting {
            let mut pause = Duration::from_millis(250);
            let (router, started) = loop {
                match start(platform, *component, args, admin_password.as_deref()).await {
                    Ok(started) => break started,
                    Err(e) => {
                        let why = format!("{e:#}");
                        tracing::warn!(component = name, error = %why, retry_in_ms = pause.as_millis() as u64, "waiting for {waiting_for}");
                        deferred.waiting(format!("waiting for {waiting_for}: {why}"));
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                }
            };
            deferred.started(router);
            tasks.extend(started);
            info!(component = name, "started");
        }
    };
    let stopped_early = tokio::select! {
        _ = startup => false,
        _ = wait_for_signal() => true,
    };
    if !stopped_early {
        if let Some(gateway) = &gateway_url {
            announce(gateway);
        }
        println!("shop: ready");
        wait_for_signal().await;
    }
    // A process stopped before it was ready has nobody's traffic to drain.
    let grace = if stopped_early {
        Duration::ZERO
    } else {
        Duration::from_millis(args.drain_grace_ms.unwrap_or(DRAIN_GRACE_MS))
    };
    drain(&deferreds, grace, serving, handles, shutdown, tasks).await;
    Ok(())
}

/// `--drain-grace-ms` of `shop serve` when not set: longer than a load balancer's
/// readiness check (the gateway's every second, a Kubernetes probe's as configured).
pub const DRAIN_GRACE_MS: u64 = 5_000;

/// How long, after the grace period, in-flight requests and then the consumers and
/// relays may take to stop before the process exits anyway.
pub const STOP_BOUND: Duration = Duration::from_secs(15);

/// What in-flight requests leave of [`STOP_BOUND`] to the consumers and relays, however
/// long they take.
const REQUESTS_LEAVE: Duration = Duration::from_secs(5);

/// The graceful drain after SIGTERM/Ctrl-C, each phase logged:
/// 1. `/ready` answers 503 (`draining`) on every component at once; all else is served;
/// 2. after `grace` (or a second signal) the servers stop accepting connections and
///    their in-flight requests finish;
/// 3. then the consumers finish and commit their batch and leave their groups, and the
///    relays release their advisory locks (a standby relay takes over within a second);
///
/// phases 2 and 3 together within [`STOP_BOUND`] (requests at most 10 s of it), after
/// which the process exits anyway (an unfinished batch rolls back and is read again by
/// the group's next member).
async fn drain(
    deferreds: &[Deferred],
    grace: Duration,
    serving: CancellationToken,
    servers: Vec<JoinHandle<std::io::Result<()>>>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
) {
    let began = std::time::Instant::now();
    let elapsed_ms = || began.elapsed().as_millis() as u64;
    for deferred in deferreds {
        deferred.drain();
    }
    info!(
        grace_ms = grace.as_millis() as u64,
        "draining: /ready answers 503; still serving during the grace period (a second signal ends it)"
    );
    if !grace.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = wait_for_signal() => info!("second signal: the grace period ends now"),
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_BOUND;
    info!(
        elapsed_ms = elapsed_ms(),
        "draining: no longer accepting connections; finishing in-flight requests"
    );
    serving.cancel();
    // Requests get as long as the gateway waits for an upstream (10 s by default), and the
    // consumers and relays at least the rest of the bound.
    let requests_deadline = deadline - REQUESTS_LEAVE;
    if tokio::time::timeout_at(requests_deadline, futures::future::join_all(servers))
        .await
        .is_err()
    {
        tracing::warn!(
            "draining: requests still running after {} s; stopping anyway",
            (STOP_BOUND - REQUESTS_LEAVE).as_secs()
        );
    }
    info!(
        elapsed_ms = elapsed_ms(),
        "draining: requests finished; stopping consumers (commit, leave the group) and relays (hand over)"
    );
    shutdown.cancel();
    if tokio::time::timeout_at(deadline, futures::future::join_all(tasks))
        .await
        .is_err()
    {
        tracing::warn!(
            "draining: some tasks did not stop within {} s of the grace period's end; exiting anyway",
            STOP_BOUND.as_secs()
        );
    }
    info!(elapsed_ms = elapsed_ms(), "stopped");
}

/// A component's listener, bound before it starts.
struct Slot {
    component: Component,
    name: &'static str,
    listener: tokio::net::TcpListener,
    deferred: Deferred,
}

/// A component's name and port (`None`: not a component that listens).
fn listening(component: Component, args: &ServeOptions) -> Option<(&'static str, u16)> {
    Some(match component {
        Component::Customers => (shop_customers::COMPONENT, args.customers_port),
        Component::Inventory => (shop_inventory::service::COMPONENT, args.inventory_port),
        Component::Orders => (shop_orders::COMPONENT, args.orders_port),
        Component::Payments => (shop_payments::COMPONENT, args.payments_port),
        Component::Shipping => (shop_shipping::COMPONENT, args.shipping_port),
        Component::Notifications => (shop_notifications::COMPONENT, args.notifications_port),
        Component::Projector => (shop_projections::COMPONENT, args.projector_port),
        Component::ReadApi => (shop_read_api::COMPONENT, args.read_api_port),
        Component::Gateway => (shop_gateway::COMPONENT, args.port),
        Component::All => return None,
    })
}

/// Starts one component (not the gateway): its router and background tasks.
async fn start(
    platform: &Platform,
    component: Component,
    args: &ServeOptions,
    admin_password: Option<&str>,
) -> anyhow::Result<(Router, Vec<JoinHandle<()>>)> {
    let error = |e: shop_sql::db::DbError| anyhow::anyhow!("{e}");
    Ok(match component {
        Component::Customers => {
            let started = shop_customers::start(platform, admin_password.unwrap_or_default())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            (started.router, started.tasks)
        }
        Component::Inventory => {
            let started = shop_inventory::start(platform).await.map_err(error)?;
            (started.router, started.tasks)
        }
        Component::Orders => {
            let config = shop_orders::OrdersConfig {
                saga_timeout: Duration::from_millis(args.saga_timeout_ms),
                max_pending: args.orders_max_pending,
            };
            let started = shop_orders::start(platform, config).await.map_err(error)?;
            (started.router, started.tasks)
        }
        Component::Payments => {
            let started = shop_payments::start(platform).await.map_err(error)?;
            (started.router, started.tasks)
        }
        Component::Shipping => {
            let config = shop_shipping::ShippingConfig {
                countries: shop_shipping::shipment::SupportedCountries::parse(
                    &args.shipping_countries,
                ),
            };
            let started = shop_shipping::start(platform, config)
                .await
                .map_err(error)?;
            (started.router, started.tasks)
        }
        Component::Notifications => {
            let started = shop_notifications::start(platform, notifications_config(args)?)
                .await
                .map_err(error)?;
            (started.router, started.tasks)
        }
        Component::Projector => {
            let started = shop_projections::start(platform).await.map_err(error)?;
            (started.router, started.tasks)
        }
        Component::ReadApi => {
            let config = shop_read_api::ReadApiConfig {
                consistency_wait: Duration::from_millis(args.consistency_wait_ms),
            };
            let router = shop_read_api::start(platform, config)
                .await
                .map_err(error)?;
            (router, Vec::new())
        }
        Component::Gateway | Component::All => bail!("not started this way"),
    })
}

/// The notifications service's settings; its key defaults to the JWT secret.
fn notifications_config(
    args: &ServeOptions,
) -> anyhow::Result<shop_notifications::NotificationsConfig> {
    let key = args
        .webhooks_key
        .clone()
        .filter(|k| !k.is_empty())
        .or_else(|| args.jwt_secret.clone().filter(|k| !k.is_empty()))
        .context(
            "set SHOP_WEBHOOKS_KEY (or SHOP_JWT_SECRET): the key webhook secrets derive from",
        )?;
    let mut config = shop_notifications::NotificationsConfig::with_key(key);
    config.allow = shop_notifications::address::AllowList::parse(&args.webhooks_allow)
        .map_err(anyhow::Error::msg)?;
    config.timeout = Duration::from_millis(args.webhooks_timeout_ms.max(1));
    config.retry = shop_notifications::delivery::RetryPolicy {
        base: Duration::from_millis(args.webhooks_retry_base_ms),
        max: Duration::from_millis(args.webhooks_retry_max_ms),
        max_attempts: args.webhooks_max_attempts,
    };
    config.concurrency = args.webhooks_concurrency as usize;
    config.per_endpoint = args.webhooks_per_endpoint as usize;
    config.poll = Duration::from_millis(args.webhooks_poll_ms.max(10));
    if let Some(path) = &args.webhooks_ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("SHOP_WEBHOOKS_CA_FILE: cannot read {}", path.display()))?;
        config.roots = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
            format!(
                "SHOP_WEBHOOKS_CA_FILE: {} is not a PEM bundle of certificates",
                path.display()
            )
        })?;
        if config.roots.is_empty() {
            anyhow::bail!(
                "SHOP_WEBHOOKS_CA_FILE: {} holds no certificate",
                path.display()
            );
        }
    }
    Ok(config)
}

/// The gateway's router: it needs no database and no broker.
fn gateway(
    platform: &Platform,
    args: &ServeOptions,
    local: &mut LocalUpstreams,
) -> anyhow::Result<Router> {
    let upstream = |flag: &Option<String>, here: &Option<String>, port: u16| {
        flag.clone()
            .or_else(|| here.clone())
            .unwrap_or_else(|| format!("http://127.0.0.1:{port}"))
    };
    let config = shop_gateway::GatewayConfig {
        upstreams: shop_gateway::Upstreams {
            customers: upstream(&args.customers_url, &local.customers, args.customers_port),
            inventory: upstream(&args.inventory_url, &local.inventory, args.inventory_port),
            orders: upstream(&args.orders_url, &local.orders, args.orders_port),
            payments: upstream(&args.payments_url, &local.payments, args.payments_port),
            shipping: upstream(&args.shipping_url, &local.shipping, args.shipping_port),
            notifications: upstream(
                &args.notifications_url,
                &local.notifications,
                args.notifications_port,
            ),
            read_api: upstream(&args.read_api_url, &local.read_api, args.read_api_port),
        },
        body_limit: args.gateway_body_limit,
        cache_ttl: Duration::from_millis(args.gateway_cache_ttl_ms),
        canaries: args
            .gateway_canary
            .split(';')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(shop_gateway::Canary::parse)
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?,
        resilience: shop_gateway::Resilience {
            breaker_failures: args.gateway_breaker_failures.max(1),
            breaker_cooldown: Duration::from_millis(args.gateway_breaker_cooldown_ms),
            health_interval: Duration::from_millis(args.gateway_health_interval_ms.max(50)),
        },
        rate_limit: std::num::NonZeroU32::new(args.gateway_rate_limit).map(|per_second| {
            shop_gateway::RateLimit {
                per_second,
                burst: std::num::NonZeroU32::new(args.gateway_rate_burst).unwrap_or(per_second),
            }
        }),
        upstream_timeout: Duration::from_millis(args.upstream_timeout_ms),
        openapi: Some(std::sync::Arc::new(crate::openapi::document())),
        in_process: std::mem::take(&mut local.routers),
        metrics_token: args.metrics_token.clone().filter(|t| !t.is_empty()),
        max_in_flight: args.gateway_max_in_flight,
    };
    Ok(shop_gateway::router(config, platform.jwt.clone()))
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[derive(Default)]
struct LocalUpstreams {
    customers: Option<String>,
    inventory: Option<String>,
    orders: Option<String>,
    payments: Option<String>,
    shipping: Option<String>,
    notifications: Option<String>,
    read_api: Option<String>,
    /// Every component above with its router, for the gateway to call in-process.
    routers: Vec<(String, Router)>,
}

impl LocalUpstreams {
    /// The base URL of a component listening at `addr` in this process.
    fn here(&mut self, addr: std::net::SocketAddr, router: &Router) -> String {
        let base = format!("http://{addr}");
        self.routers.push((base.clone(), router.clone()));
        base
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

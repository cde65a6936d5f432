//! `shop serve`: runs the chosen components in this process until SIGINT/SIGTERM.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::Router;
use shop_eventing::auth::JwtKeys;
use shop_eventing::db::DatabaseConfig;
use shop_eventing::http::{bind, serve};
use shop_eventing::kafka::{KafkaConfig, KafkaLog};
use shop_eventing::log::EventLog;
use shop_eventing::platform::{ConsumerTuning, Platform, RelayTuning};
use shop_eventing::CancellationToken;
use tokio::task::JoinHandle;
use tracing::info;

use crate::cli::{Common, Component, ServeArgs, ServeOptions};

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
    platform
        .log
        .ensure_topics(&all_topics(&platform.topic_prefix))
        .await
        .context("cannot prepare topics (is Kafka running? `scripts/infra.sh up`)")?;
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
/// runs until SIGINT/SIGTERM, then shuts down cleanly.
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
            Component::Projector,
            Component::ReadApi,
            Component::Gateway,
        ]);
    }
    let mut servers: Vec<(&'static str, Router, tokio::net::TcpListener)> = Vec::new();
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    let mut local = LocalUpstreams::default();
    let mut gateway_url: Option<String> = None;

    if components.contains(&Component::Customers) {
        let password = admin_password.clone().context(
            "set SHOP_ADMIN_PASSWORD (or --admin-password): the password of admin@shop.local",
        )?;
        let started = shop_customers::start(platform, &password)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tasks.extend(started.tasks);
        let (listener, addr) = bind(&args.bind, args.customers_port).await?;
        local.customers = Some(local.here(addr, &started.router));
        servers.push((shop_customers::COMPONENT, started.router, listener));
    }
    if components.contains(&Component::Inventory) {
        let started = shop_inventory::start(platform).await?;
        let (listener, addr) = bind(&args.bind, args.inventory_port).await?;
        local.inventory = Some(local.here(addr, &started.router));
        servers.push((shop_inventory::service::COMPONENT, started.router, listener));
        tasks.extend(started.tasks);
    }
    if components.contains(&Component::Orders) {
        let config = shop_orders::OrdersConfig {
            saga_timeout: Duration::from_millis(args.saga_timeout_ms),
        };
        let started = shop_orders::start(platform, config).await?;
        let (listener, addr) = bind(&args.bind, args.orders_port).await?;
        local.orders = Some(local.here(addr, &started.router));
        servers.push((shop_orders::COMPONENT, started.router, listener));
        tasks.extend(started.tasks);
    }
    if components.contains(&Component::Payments) {
        let started = shop_payments::start(platform).await?;
        let (listener, addr) = bind(&args.bind, args.payments_port).await?;
        local.payments = Some(local.here(addr, &started.router));
        servers.push((shop_payments::COMPONENT, started.router, listener));
        tasks.extend(started.tasks);
    }
    if components.contains(&Component::Shipping) {
        let config = shop_shipping::ShippingConfig {
            countries: shop_shipping::shipment::SupportedCountries::parse(&args.shipping_countries),
        };
        let started = shop_shipping::start(platform, config).await?;
        let (listener, addr) = bind(&args.bind, args.shipping_port).await?;
        local.shipping = Some(local.here(addr, &started.router));
        servers.push((shop_shipping::COMPONENT, started.router, listener));
        tasks.extend(started.tasks);
    }
    if components.contains(&Component::Projector) {
        let started = shop_projections::start(platform).await?;
        let (listener, _) = bind(&args.bind, args.projector_port).await?;
        servers.push((shop_projections::COMPONENT, started.router, listener));
        tasks.extend(started.tasks);
    }
    if components.contains(&Component::ReadApi) {
        let config = shop_read_api::ReadApiConfig {
            consistency_wait: Duration::from_millis(args.consistency_wait_ms),
        };
        let router = shop_read_api::start(platform, config).await?;
        let (listener, addr) = bind(&args.bind, args.read_api_port).await?;
        local.read_api = Some(local.here(addr, &router));
        servers.push((shop_read_api::COMPONENT, router, listener));
    }
    if components.contains(&Component::Gateway) {
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
        };
        let router = shop_gateway::router(config, platform.jwt.clone());
        let (listener, addr) = bind(&args.bind, args.port).await?;
        gateway_url = Some(format!("http://{addr}"));
        servers.push((shop_gateway::COMPONENT, router, listener));
    }
    if servers.is_empty() {
        bail!("no component to run");
    }

    let shutdown = platform.shutdown.clone();
    let mut handles = Vec::new();
    for (name, router, listener) in servers {
        // One line per component on stdout, for people and for the tests that start us.
        println!(
            "shop: {name} listening on http://{}",
            listener.local_addr()?
        );
        handles.push(tokio::spawn(serve(
            listener,
            router,
            shutdown.clone(),
            name,
        )));
    }
    if let Some(gateway) = &gateway_url {
        announce(gateway);
    }
    println!("shop: ready");

    wait_for_signal().await;
    info!("shutting down");
    shutdown.cancel();
    let servers_done = futures::future::join_all(handles);
    let tasks_done = futures::future::join_all(tasks);
    let all = futures::future::join(servers_done, tasks_done);
    if tokio::time::timeout(Duration::from_secs(15), all)
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 15 s");
    }
    Ok(())
}

#[derive(Default)]
struct LocalUpstreams {
    customers: Option<String>,
    inventory: Option<String>,
    orders: Option<String>,
    payments: Option<String>,
    shipping: Option<String>,
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

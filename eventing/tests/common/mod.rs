//! What the event-plumbing integration tests share: a fresh database per test on the
//! PostgreSQL that `scripts/infra.sh up` starts, and a small aggregate to append with.
#![allow(dead_code)]

use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use shop_sql::db::{self, DatabaseConfig};
use shop_sql::{self as sql, Dialect, Pool};

/// A database of its own for one test; [`TestDatabase::drop`] removes it.
pub struct TestDatabase {
    pub pool: Pool,
    config: DatabaseConfig,
    component: String,
}

/// Creates a fresh PostgreSQL database with `schema` applied; fails (never skips) when
/// PostgreSQL is unreachable, saying how to start it.
pub async fn fresh_database(component: &str, schema: &[&str]) -> TestDatabase {
    fresh_database_on(Dialect::Postgres, component, schema).await
}

/// Like [`fresh_database`] on either backend (SQLite: a file in a fresh temp directory).
pub async fn fresh_database_on(backend: Dialect, component: &str, schema: &[&str]) -> TestDatabase {
    let instance = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let config = DatabaseConfig {
        server_url: std::env::var("SHOP_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into()),
        sqlite_dir: (backend == Dialect::Sqlite)
            .then(|| std::env::temp_dir().join(format!("shop-{instance}"))),
        instance,
        max_connections: 4,
    };
    let pool = db::open(&config, component, schema)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n(start PostgreSQL with `scripts/infra.sh up`, or set SHOP_TEST_DATABASE_URL)"
            )
        });
    TestDatabase {
        pool,
        config,
        component: component.to_string(),
    }
}

impl TestDatabase {
    /// The instance name, also usable as a fresh topic prefix.
    pub fn instance(&self) -> &str {
        &self.config.instance
    }

    /// Ends every other connection to the database, as a server restart does, and waits
    /// until they are gone (PostgreSQL).
    pub async fn terminate_other_connections(&self) {
        let mut conn = self.pool.acquire().await.unwrap();
        sql::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        for _ in 0..100 {
            let left: i64 = sql::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            if left == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the terminated connections did not go");
    }

    pub async fn drop(self) {
        self.pool.close().await;
        match &self.config.sqlite_dir {
            Some(dir) => std::fs::remove_dir_all(dir).unwrap(),
            None => db::drop_database(
                &self.config.server_url,
                &self.config.database_name(&self.component),
            )
            .await
            .unwrap(),
        }
    }
}

/// A counter: `Command` is the amount to add.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counter {
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CounterEvent {
    Incremented { by: i64 },
}

impl cqrs_es::DomainEvent for CounterEvent {
    fn event_type(&self) -> String {
        "Incremented".into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

/// The counter refuses to go below zero.
#[derive(Debug, thiserror::Error)]
#[error("the total would go below zero")]
pub struct BelowZero;

impl cqrs_es::Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = i64;
    type Event = CounterEvent;
    type Error = BelowZero;
    type Services = ();
    async fn handle(&mut self, by: i64, _: &(), sink: &EventSink<Self>) -> Result<(), BelowZero> {
        if self.total + by < 0 {
            return Err(BelowZero);
        }
        sink.write(CounterEvent::Incremented { by }, self).await;
        Ok(())
    }
    fn apply(&mut self, CounterEvent::Incremented { by }: CounterEvent) {
        self.total += by;
    }
}

//! `shop-bench` runs end to end on a small size and reports every stage with its
//! baseline. (Figures are read by people from the command's output; no test asserts a
//! speed.)

use std::path::{Path, PathBuf};

/// PostgreSQL and Kafka of the tests, which must be reachable.
struct Infra {
    database_url: String,
    kafka_brokers: String,
}

fn infra() -> Infra {
    let database_url = std::env::var("SHOP_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
    let kafka_brokers =
        std::env::var("SHOP_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let pg_host = database_url
        .rsplit('@')
        .next()
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5432")
        .to_string();
    assert!(
        reachable(&pg_host),
        "PostgreSQL is not reachable at {pg_host}. Start it with `scripts/infra.sh up` (or set SHOP_TEST_DATABASE_URL)."
    );
    let first_broker = kafka_brokers
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        reachable(&first_broker),
        "Kafka is not reachable at {first_broker}. Start it with `scripts/infra.sh up` (or set SHOP_TEST_KAFKA_BROKERS)."
    );
    Infra {
        database_url,
        kafka_brokers,
    }
}

fn reachable(address: &str) -> bool {
    use std::net::ToSocketAddrs;
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok()
        })
}

/// Builds the `shop` binary beside `shop-bench` (same target directory and profile): the
/// end-to-end stage runs the system as that binary.
fn build_shop_beside(bench: &Path) {
    let dir = bench.parent().expect("shop-bench has a directory");
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(name) => name.to_string(),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--locked",
            "-p",
            "shop",
            "--bin",
            "shop",
            "--profile",
        ])
        .arg(&profile)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p shop failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_each_stage_beside_its_baseline() {
    let infra = infra();
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_shop-bench"));
    build_shop_beside(&bench);
    let json_path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-{}.json", uuid::Uuid::new_v4().simple()));
    let output = tokio::process::Command::new(&bench)
        .args([
            "--events",
            "300",
            "--products",
            "5",
            "--clients",
            "4",
            "--e2e-rates",
            "10,embedded:15",
            "--e2e-seconds",
            "2",
            "--replay-orders",
            "200",
            "--long-stream",
            "250",
            "--json",
        ])
        .arg(&json_path)
        .env("SHOP_DATABASE_URL", &infra.database_url)
        .env("SHOP_KAFKA_BROKERS", &infra.kafka_brokers)
        .env("SHOP_TOPIC_PARTITIONS", "3")
        .env("SHOP_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for stage in [
        "append x1",
        "append x4",
        "250-event stream",
        "publish",
        "first fill",
        "replay",
    ] {
        assert!(stdout.contains(stage), "{stdout}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let stages = report["stages"].as_array().unwrap();
    // Append with 1 and 4 clients (the latter beside raw inserts and the peer), the long
    // stream, publish, and replay: a fresh projector's first fill, then a rebuild (beside
    // consumers that only read, and beside consumers that also write a row per event).
    assert_eq!(stages.len(), 8, "{stages:?}");
    assert_eq!(
        stages[7]["baseline"].as_str(),
        Some("consumers that read, write a row per event"),
        "{stages:?}"
    );
    let e2e = report["e2e"].as_array().unwrap();
    // 10 orders/s on each backend and on the plain floor of Kafka + PostgreSQL, and 15 on
    // the embedded one only.
    let loads: Vec<(String, f64, u64)> = e2e
        .iter()
        .map(|run| {
            (
                run["backend"].as_str().unwrap().to_string(),
                run["offered_per_s"].as_f64().unwrap(),
                run["accepted"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        loads,
        [
            ("kafka".to_string(), 10.0, 20),
            ("floor".to_string(), 10.0, 20),
            ("embedded".to_string(), 10.0, 20),
            ("embedded".to_string(), 15.0, 30),
        ],
        "{e2e:?}"
    );
    for run in e2e {
        assert!(run["decided_per_s"].as_f64().unwrap() > 0.0, "{run}");
        assert!(run["p99_ms"].as_f64().unwrap() > 0.0, "{run}");
        if run["backend"] == "floor" {
            // Every order of the floor is decided, each through its three hops; it runs
            // in the bench's own process, so it has no memory figure of its own.
            assert_eq!(run["confirmed"], run["accepted"], "{run}");
            assert_eq!(run["steps"].as_array().unwrap().len(), 3, "{run}");
            assert!(run["peak_rss_mib"].is_null(), "{run}");
        } else {
            assert!(run["peak_rss_mib"].as_f64().unwrap() > 10.0, "{run}");
        }
        // What each decided order cost: CPU always; the broker, PostgreSQL and records
        // on Kafka + PostgreSQL only; statements where the server loads
        // pg_stat_statements, else a note says why not.
        let cost = &run["cost"];
        assert!(cost["cpu_ms_per_order"].as_f64().unwrap() > 0.0, "{run}");
        assert!(cost["window_s"].as_f64().unwrap() > 0.0, "{run}");
        if run["backend"] == "embedded" {
            assert!(cost["kafka_records_per_order"].is_null(), "{run}");
            assert!(cost["broker_cpu_ms_per_order"].is_null(), "{run}");
            assert!(cost["sql_statements_per_order"].is_null(), "{run}");
            continue;
        }
        assert!(
            cost["postgres_cpu_ms_per_order"].as_f64().unwrap() > 0.0,
            "{run}"
        );
        let records = cost["kafka_records_per_order"].as_f64().unwrap();
        if run["backend"] == "floor" {
            // The placement's record and one per hop but the last.
            assert_eq!(records, 3.0, "{run}");
        } else {
            assert!(records >= 4.0, "{run}");
            assert!(cost["cpu_vs_floor"].as_f64().unwrap() > 0.0, "{run}");
        }
        match cost["sql_statements_per_order"].as_f64() {
            Some(statements) => assert!(statements >= 1.0, "{run}"),
            None => assert!(
                cost["notes"].to_string().contains("pg_stat_statements"),
                "{run}"
            ),
        }
    }
    assert!(stdout.contains("end to end"), "{stdout}");
    assert!(stdout.contains("cost per decided order"), "{stdout}");
    for stage in stages {
        assert!(stage["rate"].as_f64().unwrap() > 0.0, "{stage}");
        assert!(stage["baseline_rate"].as_f64().unwrap() > 0.0, "{stage}");
        assert!(stage["ratio"].as_f64().is_some());
    }
}

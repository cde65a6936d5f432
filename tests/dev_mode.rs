//! `shop dev` (SPEC §2): no external service, a generated admin password kept in the data
//! directory, a clean stop on Ctrl-C, and a restart that finds every product, order,
//! wallet and read model where it was and finishes the sagas that were in flight.

mod common;

use std::time::Duration;

use common::{Client, Instance, ShopProcess};
use reqwest::StatusCode;
use serde_json::json;
use shop_sql::Dialect;

const WAIT: Duration = Duration::from_secs(60);

/// Without SHOP_ADMIN_PASSWORD / SHOP_JWT_SECRET: `shop dev` makes and keeps its own.
const GENERATED_SECRETS: &[(&str, &str)] = &[("SHOP_ADMIN_PASSWORD", ""), ("SHOP_JWT_SECRET", "")];

fn steps(order: &serde_json::Value) -> Vec<String> {
    order["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|s| s["event_type"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Ctrl-C: the process stops by itself, successfully.
async fn interrupt(mut process: ShopProcess) {
    let pid = process.child.id().expect("the process is running");
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = process.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "shop dev exited with {status}");
}

async fn admin(instance: &Instance) -> Client {
    let password = std::fs::read_to_string(instance.data_dir.join("admin-password")).unwrap();
    let mut admin = Client::new(instance.gateway_url());
    let login = admin
        .post(
            "/api/auth/token",
            json!({"email": "admin@shop.local", "password": password.trim()}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{login:?}");
    admin.token = Some(login.body["access_token"].as_str().unwrap().to_string());
    admin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_everything_and_finishes_the_sagas_in_flight() {
    let instance = Instance::on(Dialect::Sqlite);
    let dev = instance.spawn(&["all"], GENERATED_SECRETS).await;
    let admin = admin(&instance).await;
    let tea = admin.add_product("TEA-1", 1000, 50).await;
    let (hanako, hanako_id) =
        Client::customer(instance.gateway_url(), "Hanako", "hanako@example.com").await;
    let deposit = hanako
        .post(
            &format!("/api/customers/{hanako_id}/wallet/deposits"),
            json!({"amount": 100_000}),
        )
        .await;
    assert_eq!(deposit.status, StatusCode::ACCEPTED);
    instance.wait_for_catalogue(1).await;
    let first = hanako
        .post(
            "/api/orders",
            json!({"lines": [{"product_id": tea, "quantity": 2}]}),
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let first = first.body["order_id"].as_str().unwrap().to_string();
    hanako
        .get_until(&format!("/api/orders/{first}"), WAIT, |o| {
            o["status"] == "CONFIRMED"
        })
        .await;

    interrupt(dev).await;

    // Sagas in flight at Ctrl-C: payments' events are held back (relay stalled), so the
    // orders stay PENDING until the next start publishes them.
    let stalled = [
        GENERATED_SECRETS,
        &[("SHOP_FAULT_INJECT", "relay.stall:payments")],
    ]
    .concat();
    let dev = instance.spawn(&["all"], &stalled).await;
    assert_eq!(
        hanako.get(&format!("/api/orders/{first}")).await.body["status"],
        "CONFIRMED",
        "a token from before the restart still works, and the order is there"
    );
    let mut in_flight = Vec::new();
    for _ in 0..10 {
        let answer = hanako
            .post(
                "/api/orders",
                json!({"lines": [{"product_id": tea, "quantity": 1}]}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
        in_flight.push(answer.body["order_id"].as_str().unwrap().to_string());
    }
    let last = in_flight.last().unwrap();
    let view = hanako
        .get_until(&format!("/api/orders/{last}"), WAIT, |o| {
            steps(o).contains(&"StockReserved".to_string())
        })
        .await;
    assert_eq!(view["status"], "PENDING");
    interrupt(dev).await;

    // The same data directory again: the held events go out and the sagas finish.
    let dev = instance.spawn(&["all"], GENERATED_SECRETS).await;
    let admin = self::admin(&instance).await;
    for order in &in_flight {
        hanako
            .get_until(&format!("/api/orders/{order}"), WAIT, |o| {
                o["status"] == "CONFIRMED"
            })
            .await;
    }
    hanako
        .get_until(&format!("/api/customers/{hanako_id}"), WAIT, |c| {
            c["wallet_balance"] == 100_000 - 12 * 1000 && c["orders_count"] == 11
        })
        .await;
    admin
        .get_until(&format!("/api/products/{tea}"), WAIT, |p| {
            p["available"] == 38 && p["reserved"] == 0 && p["sold"] == 12
        })
        .await;

    // A second `shop dev` on the same directory refuses to start.
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .args(["dev", "--port", "0", "--data-dir"])
        .arg(&instance.data_dir)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another `shop dev` is running"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    // SIGKILL, then a restart: nothing acknowledged is lost either.
    dev.kill().await;
    let dev = instance.spawn(&["all"], GENERATED_SECRETS).await;
    let view = hanako.get(&format!("/api/customers/{hanako_id}")).await;
    assert_eq!(view.body["orders_count"], 11, "{view:?}");
    assert_eq!(
        Client::new(instance.gateway_url())
            .get("/api/products")
            .await
            .body
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    interrupt(dev).await;
    instance.cleanup().await;
}

/// Issue 26: `shop dev` prints the admin password only when it generated it (one given in
/// SHOP_ADMIN_PASSWORD is the operator's and stays out of the output), and its data —
/// password hashes, emails — is readable by its owner only.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_password_is_not_printed_and_the_data_is_private() {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncBufReadExt;
    let instance = Instance::on(Dialect::Sqlite);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .arg("dev")
        .arg("--data-dir")
        .arg(&instance.data_dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SHOP_ADMIN_PASSWORD", "operator-chosen-secret")
        .env("SHOP_PORT", common::free_port().to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline.into(), lines.next_line()).await
    {
        let ready = line == "shop: ready";
        printed.push(line);
        if ready {
            break;
        }
    }
    let output = printed.join("\n");
    assert!(output.contains("shop: ready"), "{output}");
    assert!(output.contains("admin login admin@shop.local"), "{output}");
    assert!(
        !output.contains("operator-chosen-secret"),
        "the given password was printed:\n{output}"
    );
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&instance.data_dir), 0o700, "the data directory");
    let mut files = 0;
    for entry in std::fs::read_dir(&instance.data_dir).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            files += 1;
            assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
        }
    }
    assert!(files > 0);
    child.kill().await.ok();
    instance.cleanup().await;
}

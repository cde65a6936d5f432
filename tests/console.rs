//! The operator console (`/console`, served by the read API through the gateway), loaded
//! in headless Chromium on both backends: an order's saga timeline across services and
//! the projections table render from the live API. Screenshots are kept as test
//! artifacts in `target/tmp/shop-logs/console-*.png`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::Instance;
use shop_sql::Dialect;

shop_sql::on_both_backends!(the_console_shows_a_saga_and_the_projections);

fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("SHOP_CHROMIUM") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.exists())
    });
    let found = found.or_else(|| {
        let debian = PathBuf::from("/usr/bin/chromium");
        debian.exists().then_some(debian)
    });
    found.unwrap_or_else(|| {
        panic!("Chromium is not installed: run `scripts/infra.sh up` (it installs Debian's chromium), or set SHOP_CHROMIUM")
    })
}

/// Loads `url` headless; its DOM after scripts ran, and a screenshot at `screenshot`.
async fn load(url: &str, screenshot: &PathBuf) -> String {
    let profile = common::logs_dir().join(format!("chromium-{}", uuid::Uuid::new_v4().simple()));
    let run = |extra: Vec<String>| {
        let mut command = tokio::process::Command::new(chromium());
        command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--window-size=1400,900",
                "--virtual-time-budget=8000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(url)
            .kill_on_drop(true);
        command
    };
    let dom = tokio::time::timeout(
        Duration::from_secs(90),
        run(vec!["--dump-dom".into()]).output(),
    )
    .await
    .expect("chromium hung")
    .unwrap();
    assert!(dom.status.success(), "chromium failed: {dom:?}");
    let shot = tokio::time::timeout(
        Duration::from_secs(90),
        run(vec![format!("--screenshot={}", screenshot.display())]).output(),
    )
    .await
    .expect("chromium hung")
    .unwrap();
    assert!(shot.status.success(), "chromium failed: {shot:?}");
    let size = std::fs::metadata(screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "{} is only {size} bytes",
        screenshot.display()
    );
    std::fs::remove_dir_all(&profile).ok();
    String::from_utf8(dom.stdout).unwrap()
}

async fn the_console_shows_a_saga_and_the_projections(backend: Dialect) {
    let instance = Instance::on(backend);
    let _shop = instance.spawn(&["all"], &[]).await;
    let base = instance.gateway_url();
    let (admin, _, order_id) = common::confirmed_order(
        &instance,
        "CONSOLE-1",
        "Hanako Yamada",
        "console@example.com",
    )
    .await;
    let token = admin.token.clone().unwrap();
    let label = format!("{backend:?}").to_lowercase();

    // The order's saga, step by step, with the service of each step.
    let shot = common::logs_dir().join(format!("console-{label}-order.png"));
    let dom = load(
        &format!("{base}/console/#token={token}&order={order_id}"),
        &shot,
    )
    .await;
    for needle in [
        "id=\"timeline\"",
        "data-event-type=\"OrderPlaced\"",
        "data-event-type=\"StockReserved\"",
        "data-event-type=\"PaymentCompleted\"",
        "data-event-type=\"OrderConfirmed\"",
        "data-source=\"inventory\"",
        "data-source=\"payments\"",
        "Hanako Yamada",
        &order_id,
    ] {
        assert!(
            dom.contains(needle),
            "the order view lacks {needle}:\n{dom}"
        );
    }

    // The projections with their status and lag.
    let shot = common::logs_dir().join(format!("console-{label}-projections.png"));
    let dom = load(
        &format!("{base}/console/#token={token}&view=projections"),
        &shot,
    )
    .await;
    for name in ["products", "customers", "orders"] {
        let needle = format!("data-projection=\"{name}\"");
        assert!(dom.contains(&needle), "no row for {name}:\n{dom}");
    }
    assert!(dom.contains("badge live"), "{dom}");
    instance.cleanup().await;
}

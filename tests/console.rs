//! The operator console (`/console`, served by the read API through the gateway), driven
//! in headless Chromium on both backends as an operator would use it, over the DevTools
//! protocol (a pipe, no extra crate): each feature is an action (sign in, type an id,
//! click a link, a button, a checkbox) followed by assertions on the DOM it produced —
//!
//! - a wrong password shows the API's own message; the right one signs in;
//! - the orders list shows whole ids, refreshes live (an order placed meanwhile appears),
//!   and pages with next/previous; an order shows its saga timeline across services;
//! - the search box finds an order, a customer, an aggregate's events, and says when
//!   nothing has an id;
//! - the event browser shows an aggregate's CloudEvents in sequence with their
//!   attributes and data, is reached from an order, and follows new events as they come;
//! - a dead letter shows its error and payload; its retry, and a projection's rebuild,
//!   ask for confirmation first (cancel does nothing, OK does it);
//! - the projections page charts throughput and lag from its polls;
//! - the webhooks page lists an endpoint and its delivery log (failed attempts with
//!   their status codes); a redelivery asks for confirmation first; the endpoint is
//!   paused and resumed;
//! - the console's responses carry the security headers.
//!
//! Screenshots are kept as test artifacts in `target/tmp/shop-logs/console-*.png`.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Client, Instance};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shop_sql::{self as sql, Dialect};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

shop_sql::on_both_backends!(an_operator_uses_the_console);

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

/// Standard base64 (Chromium's screenshots), without a crate for it.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=' && c != b'\n').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        let [_, a, b, c] = n.to_be_bytes();
        out.push(a);
        if chunk.len() > 2 {
            out.push(b);
        }
        if chunk.len() > 3 {
            out.push(c);
        }
    }
    out
}

/// A JavaScript string literal.
fn js(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// Headless Chromium driven over `--remote-debugging-pipe` (fd 3 in, fd 4 out: the shell
/// maps them onto our pipes): one page, its session, and a label for screenshots.
struct Browser {
    child: tokio::process::Child,
    input: tokio::process::ChildStdin,
    output: BufReader<tokio::process::ChildStdout>,
    next_id: u64,
    session: String,
    label: String,
    profile: PathBuf,
}

impl Browser {
    async fn launch(label: &str) -> Browser {
        let profile =
            common::logs_dir().join(format!("chromium-{}", uuid::Uuid::new_v4().simple()));
        let stderr =
            std::fs::File::create(common::logs_dir().join(format!("console-{label}-chromium.log")))
                .unwrap();
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#)
            .arg(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-pipe",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .expect("chromium does not start");
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        let mut browser = Browser {
            child,
            input,
            output,
            next_id: 0,
            session: String::new(),
            label: label.to_string(),
            profile,
        };
        let target = browser
            .call("Target.createTarget", json!({"url": "about:blank"}), false)
            .await;
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
                false,
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
                true,
            )
            .await;
        browser
    }

    async fn call(&mut self, method: &str, params: Value, in_page: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if in_page {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.input.write_all(&bytes).await.unwrap();
        self.input.flush().await.unwrap();
        loop {
            let mut reply = Vec::new();
            let read = tokio::time::timeout(
                Duration::from_secs(60),
                self.output.read_until(0, &mut reply),
            )
            .await
            .unwrap_or_else(|_| panic!("chromium did not answer {method}"))
            .unwrap();
            assert!(read > 0, "chromium closed its pipe during {method}");
            reply.pop();
            let reply: Value = serde_json::from_slice(&reply).unwrap();
            if reply["id"] == json!(id) {
                if let Some(error) = reply.get("error") {
                    panic!("{method}: {error}");
                }
                return reply["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
                true,
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}), true).await;
        self.wait(
            "the page to load",
            "document.readyState === 'complete' && document.querySelector('#error') !== null",
        )
        .await;
    }

    /// Waits (up to 60 s) until `condition` holds in the page; else a screenshot and the
    /// page's text explain why not.
    async fn wait(&mut self, what: &str, condition: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.eval(&format!("Boolean({condition})")).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let name = format!(
                    "failed-{}",
                    what.replace(|c: char| !c.is_alphanumeric(), "-")
                );
                let shot = self.screenshot_file(&name).await;
                let text = self.eval("document.body.innerText").await;
                panic!(
                    "{}: no {what} after 60 s ({condition}); see {}. The page:\n{}",
                    self.label,
                    shot.display(),
                    text.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn click(&mut self, selector: &str) {
        let clicked = self
            .eval(&format!(
                "(() => {{ const n = document.querySelector({}); if (!n) return false; n.click(); return true; }})()",
                js(selector)
            ))
            .await;
        assert_eq!(
            clicked,
            json!(true),
            "{}: nothing to click at {selector}",
            self.label
        );
    }

    async fn fill(&mut self, selector: &str, value: &str) {
        let filled = self
            .eval(&format!(
                "(() => {{ const n = document.querySelector({}); if (!n) return false; n.value = {}; n.dispatchEvent(new Event('input', {{ bubbles: true }})); return true; }})()",
                js(selector),
                js(value)
            ))
            .await;
        assert_eq!(filled, json!(true), "{}: no field {selector}", self.label);
    }

    async fn submit(&mut self, form: &str) {
        let submitted = self
            .eval(&format!(
                "(() => {{ const f = document.querySelector({}); if (!f) return false; f.requestSubmit(); return true; }})()",
                js(form)
            ))
            .await;
        assert_eq!(submitted, json!(true), "{}: no form {form}", self.label);
    }

    /// The text of the first element matching `selector` (hidden parts included).
    async fn text(&mut self, selector: &str) -> String {
        let text = self
            .eval(&format!(
                "(document.querySelector({}) || {{ textContent: '' }}).textContent",
                js(selector)
            ))
            .await;
        text.as_str().unwrap_or("").to_string()
    }

    async fn count(&mut self, selector: &str) -> usize {
        let n = self
            .eval(&format!(
                "document.querySelectorAll({}).length",
                js(selector)
            ))
            .await;
        n.as_u64().unwrap() as usize
    }

    async fn screenshot_file(&mut self, name: &str) -> PathBuf {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}), true)
            .await;
        let png = base64_decode(shot["data"].as_str().unwrap());
        let path = common::logs_dir().join(format!("console-{}-{name}.png", self.label));
        std::fs::write(&path, &png).unwrap();
        path
    }

    async fn screenshot(&mut self, name: &str) {
        let path = self.screenshot_file(name).await;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is only {size} bytes", path.display());
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.call("Browser.close", json!({}), false),
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        std::fs::remove_dir_all(&self.profile).ok();
    }
}

async fn confirmed(admin: &Client, order_id: &str) {
    admin
        .get_until(
            &format!("/api/orders/{order_id}"),
            Duration::from_secs(60),
            |o| o["status"] == "CONFIRMED",
        )
        .await;
}

async fn an_operator_uses_the_console(backend: Dialect) {
    let instance = Instance::on(backend);
    let _shop = instance
        .spawn(
            &["all"],
            &[
                ("SHOP_WEBHOOKS_ALLOW", "127.0.0.1/32"),
                ("SHOP_WEBHOOKS_RETRY_BASE_MS", "200"),
                ("SHOP_WEBHOOKS_RETRY_MAX_MS", "1000"),
                ("SHOP_WEBHOOKS_MAX_ATTEMPTS", "100"),
            ],
        )
        .await;
    let base = instance.gateway_url();
    let label = format!("{backend:?}").to_lowercase();

    // A webhook endpoint whose receiver always fails: its deliveries keep retrying.
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hooks", receiver.local_addr().unwrap());
    let failing =
        axum::Router::new().fallback(|| async { axum::http::StatusCode::INTERNAL_SERVER_ERROR });
    tokio::spawn(async move { axum::serve(receiver, failing).await.ok() });
    let registered = Client::admin(&base)
        .await
        .post(
            "/api/webhooks",
            json!({"url": hook_url, "event_types": ["shop.orders.OrderPlaced"], "description": "console"}),
        )
        .await;
    assert_eq!(registered.status, StatusCode::CREATED, "{registered:?}");
    let endpoint = registered.body["endpoint_id"].as_str().unwrap().to_string();

    // Two confirmed orders of one customer.
    let (admin, customer, first) = common::confirmed_order(
        &instance,
        "CONSOLE-1",
        "Hanako Yamada",
        "console@example.com",
    )
    .await;
    // The products read model is another projector's: it may be behind the orders one.
    let products = admin
        .get_until("/api/products", Duration::from_secs(30), |p| {
            p[0]["product_id"].is_string()
        })
        .await;
    let product = products[0]["product_id"].as_str().unwrap().to_string();
    let customer_id = admin.get(&format!("/api/orders/{first}")).await.body["customer_id"]
        .as_str()
        .unwrap()
        .to_string();
    let order = |quantity: i64| {
        let customer = &customer;
        let product = product.clone();
        async move {
            let answer = customer
                .post(
                    "/api/orders",
                    json!({"lines": [{"product_id": product, "quantity": quantity}]}),
                )
                .await;
            assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
            answer.body["order_id"].as_str().unwrap().to_string()
        }
    };
    let second = order(2).await;
    confirmed(&admin, &second).await;

    // A dead letter: the products projection's table refuses one SKU.
    let read = instance.store("read").await;
    match backend {
        Dialect::Postgres => {
            sql::query("CREATE FUNCTION poison() RETURNS trigger AS $body$ BEGIN IF NEW.sku = 'POISON' THEN RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; END $body$ LANGUAGE plpgsql")
                .execute(&read).await.unwrap();
            sql::query("CREATE TRIGGER poison BEFORE INSERT ON products FOR EACH ROW EXECUTE FUNCTION poison()")
                .execute(&read).await.unwrap();
        }
        Dialect::Sqlite => {
            sql::query("CREATE TRIGGER poison BEFORE INSERT ON products WHEN NEW.sku = 'POISON' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END")
                .execute(&read).await.unwrap();
        }
    }
    admin.add_product("POISON", 4242, 5).await;
    let letters = admin
        .get_until("/api/dlq", Duration::from_secs(60), |l| {
            l.as_array().is_some_and(|l| !l.is_empty())
        })
        .await;
    let letter = letters[0]["id"].as_str().unwrap().to_string();

    // The console's own responses: never sniffed, framed or cached.
    let http = reqwest::Client::new();
    for path in [
        "/console/",
        "/console/console.js",
        "/console/webhooks.js",
        "/console/console.css",
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let h = response.headers();
        let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}: {h:?}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}: {h:?}");
        assert_eq!(header("cache-control"), "no-store", "{path}: {h:?}");
        let csp = header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
    }

    // What the API says to a wrong password.
    let wrong = Client::new(&base)
        .post(
            "/api/auth/token",
            json!({"email": "admin@shop.local", "password": "not-the-password"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{wrong:?}");
    let detail = wrong.body["detail"].as_str().unwrap().to_string();

    let mut b = Browser::launch(&label).await;

    // Sign in: a wrong password shows the API's message, the right one the orders.
    b.goto(&format!("{base}/console/")).await;
    b.wait("sign-in form", "!document.querySelector('#login').hidden")
        .await;
    b.fill("#login-form [name=password]", "not-the-password")
        .await;
    b.submit("#login-form").await;
    b.wait(
        "sign-in error",
        "document.querySelector('#login-error').textContent !== ''",
    )
    .await;
    let shown = b.text("#login-error").await;
    assert_eq!(shown, detail, "{label}");
    assert!(!shown.contains("please sign in"), "{shown}");
    b.screenshot("login-error").await;
    b.fill("#login-form [name=password]", common::ADMIN_PASSWORD)
        .await;
    b.submit("#login-form").await;
    b.wait(
        "two orders",
        "document.querySelectorAll('#orders tbody tr[data-order]').length === 2",
    )
    .await;
    assert_eq!(b.text("#login-error").await, "");

    // Whole ids; live: an order placed now appears without reloading.
    let rows = b.text("#orders tbody").await;
    for id in [&first, &second] {
        assert!(
            rows.contains(id.as_str()),
            "{label}: {id} not shown whole:\n{rows}"
        );
    }
    // The customer by the end of its id (what tells UUIDv7s apart), the whole in the title.
    assert!(
        rows.contains(&customer_id[customer_id.len() - 12..]),
        "{rows}"
    );
    let selector = format!("#orders tbody [title=\"{customer_id}\"]");
    assert_eq!(b.count(&selector).await, 2, "{label}: {rows}");
    assert_eq!(
        b.eval("document.querySelector('#live').checked").await,
        json!(true)
    );
    assert_eq!(b.text("#live-state").await, "live");
    let third = order(1).await;
    b.wait(
        "the new order, live",
        &format!("document.querySelector('#orders tr[data-order=\"{third}\"]')"),
    )
    .await;

    // An order's saga, step by step, with the service of each step.
    b.click(&format!("#orders tr[data-order=\"{first}\"]"))
        .await;
    b.wait(
        "the saga timeline",
        "document.querySelector('#order-detail #timeline li[data-event-type=\"OrderConfirmed\"]')",
    )
    .await;
    let detail_text = b.text("#order-detail").await;
    for needle in [
        "Hanako Yamada",
        first.as_str(),
        "OrderPlaced",
        "StockReserved",
        "PaymentCompleted",
    ] {
        assert!(
            detail_text.contains(needle),
            "{label}: the order view lacks {needle}:\n{detail_text}"
        );
    }
    for source in ["inventory", "payments", "orders"] {
        let selector = format!("#timeline li[data-source=\"{source}\"]");
        assert!(
            b.count(&selector).await > 0,
            "{label}: no step from {source}"
        );
    }
    b.screenshot("order").await;

    // Pages: one order a page, newest first; next and previous.
    let on_page = |page: u32, order: &str| {
        format!(
            "document.querySelector('#page-number').dataset.page === '{page}' && document.querySelectorAll('#orders tbody tr[data-order]').length === 1 && document.querySelector('#orders tbody tr[data-order=\"{order}\"]')"
        )
    };
    b.eval("location.hash = 'view=orders&limit=1'").await;
    b.wait("page 1", &on_page(1, &third)).await;
    assert_eq!(
        b.eval("document.querySelector('#prev').hidden").await,
        json!(true)
    );
    b.click("#next").await;
    b.wait("page 2", &on_page(2, &second)).await;
    assert_eq!(
        b.eval("document.querySelector('#prev').hidden").await,
        json!(false)
    );
    b.screenshot("orders-page-2").await;
    b.click("#next").await;
    b.wait("page 3", &on_page(3, &first)).await;
    b.click("#prev").await;
    b.wait("page 2 again", &on_page(2, &second)).await;

    // Search: an order id shows the order and where its events are.
    b.fill("#search input", &first).await;
    b.submit("#search").await;
    b.wait(
        "the order found",
        "document.querySelector('#search-matches li[data-kind=\"order\"]') && document.querySelector('#search-detail #timeline li[data-event-type=\"OrderConfirmed\"]')",
    )
    .await;
    for context in ["orders", "inventory"] {
        let selector =
            format!("#search-matches li[data-kind=\"events\"][data-context=\"{context}\"]");
        assert!(
            b.count(&selector).await == 1,
            "{label}: no {context} events of the order"
        );
    }
    assert!(b.text("#search-detail").await.contains(&first));
    b.screenshot("search-order").await;

    // A customer id shows the customer, their orders and their events.
    b.fill("#search input", &customer_id).await;
    b.submit("#search").await;
    b.wait(
        "the customer found",
        "document.querySelector('#search-matches li[data-kind=\"customer\"]') && document.querySelectorAll('#customer-orders tbody tr[data-order]').length === 3",
    )
    .await;
    assert!(b.text("#search-detail").await.contains("Hanako Yamada"));
    for context in ["customers", "payments"] {
        let selector =
            format!("#search-matches li[data-kind=\"events\"][data-context=\"{context}\"]");
        assert!(
            b.count(&selector).await == 1,
            "{label}: no {context} events of the customer"
        );
    }
    b.screenshot("search-customer").await;

    // An id nothing has.
    b.fill("#search input", &uuid::Uuid::new_v4().to_string())
        .await;
    b.submit("#search").await;
    b.wait("no match", "document.querySelector('#no-match')")
        .await;

    // From an order to its events in the orders service: CloudEvents in sequence.
    b.eval(&format!("location.hash = 'view=orders&order={first}'"))
        .await;
    b.wait(
        "the order's streams",
        "document.querySelector('#order-streams a[data-context=\"orders\"]')",
    )
    .await;
    b.click("#order-streams a[data-context=\"orders\"]").await;
    b.wait(
        "the order's events",
        "document.querySelector('#events details.event[data-sequence=\"1\"]')",
    )
    .await;
    let types: Value = b
        .eval("[...document.querySelectorAll('#events details.event')].map((e) => [e.dataset.sequence, e.dataset.type])")
        .await;
    let types = types.as_array().unwrap();
    assert!(types.len() >= 2, "{types:?}");
    assert_eq!(types[0][0], "1", "{types:?}");
    assert!(
        types[0][1].as_str().unwrap().ends_with("OrderPlaced"),
        "{types:?}"
    );
    for (i, t) in types.iter().enumerate() {
        assert_eq!(
            t[0],
            json!((i + 1).to_string()),
            "out of sequence: {types:?}"
        );
    }
    let first_event = b.text("#events details.event[data-sequence=\"1\"]").await;
    for needle in [
        "specversion",
        "correlationid",
        "traceparent",
        customer_id.as_str(),
        product.as_str(),
    ] {
        assert!(
            first_event.contains(needle),
            "{label}: the event lacks {needle}:\n{first_event}"
        );
    }
    b.screenshot("events").await;

    // Following the shipment: a dispatch appears without reloading.
    b.eval("document.querySelector('#events-form').context.value = 'shipping'")
        .await;
    b.fill("#events-form [name=aggregate]", &first).await;
    b.submit("#events-form").await;
    b.wait(
        "the shipment's events",
        "document.querySelector('#events details.event[data-type$=\"ShipmentScheduled\"]')",
    )
    .await;
    b.click("#follow").await;
    assert_eq!(
        b.eval("document.querySelector('#follow').checked").await,
        json!(true)
    );
    common::dispatch(&admin, &first).await;
    b.wait(
        "the dispatch, followed",
        "document.querySelector('#events details.event.new[data-type$=\"ShipmentDispatched\"]')",
    )
    .await;
    b.screenshot("events-follow").await;
    b.click("#follow").await;

    // The whole store of a service, in store order.
    b.fill("#events-form [name=aggregate]", "").await;
    b.eval("document.querySelector('#events-form').context.value = 'orders'")
        .await;
    b.submit("#events-form").await;
    b.wait(
        "the orders store",
        "document.querySelectorAll('#events details.event a.subject').length >= 3",
    )
    .await;

    // A dead letter with its error and payload; its retry asks first.
    b.eval("location.hash = 'view=dlq'").await;
    b.wait(
        "the dead letter",
        &format!("document.querySelector('tr[data-dead-letter=\"{letter}\"]')"),
    )
    .await;
    b.click(&format!("tr[data-dead-letter=\"{letter}\"]")).await;
    b.wait(
        "its payload",
        "document.querySelector('tr.letter-detail pre.payload')",
    )
    .await;
    let payload = b.text("tr.letter-detail pre.payload").await;
    assert!(
        payload.contains("\"POISON\"") && payload.contains("4242"),
        "{label}: {payload}"
    );
    assert!(payload.contains('\n'), "not pretty-printed: {payload}");
    assert!(b
        .text("tr.letter-detail pre.error-text")
        .await
        .contains("poisoned row"));
    b.click(&format!("tr[data-dead-letter=\"{letter}\"] button.retry"))
        .await;
    b.wait(
        "the retry's confirmation",
        "document.querySelector('#confirm').open",
    )
    .await;
    assert!(b.text("#confirm-title").await.contains(&letter));
    b.screenshot("dlq-confirm").await;
    b.click("#confirm-cancel").await;
    b.wait("the retry not done", "!document.querySelector('#confirm').open && document.querySelector('#notice').textContent.includes('not re-driven')")
        .await;
    b.screenshot("dlq").await;
    let letters = admin.get("/api/dlq").await.body;
    assert!(
        letters[0]["retried_at"].is_null(),
        "retried without confirmation: {letters}"
    );

    // Webhooks: the endpoint, its delivery log (attempts, status codes, next retry), and
    // a redelivery that asks first.
    b.eval("location.hash = 'view=webhooks'").await;
    let row = format!("tr[data-endpoint=\"{endpoint}\"]");
    b.wait(
        "the webhook endpoint",
        &format!("document.querySelector({})", js(&row)),
    )
    .await;
    assert!(b.text(&row).await.contains("OrderPlaced"), "{label}");
    b.click(&row).await;
    b.wait(
        "the delivery log with failed attempts",
        "[...document.querySelectorAll('#webhook-detail table.attempts td')].some((td) => td.textContent === '500')",
    )
    .await;
    assert!(
        b.count("#webhook-detail .delivery").await >= 2,
        "{label}: one per order"
    );
    assert!(b.text("#webhook-detail .delivery").await.contains("msg_"));
    b.click("#webhook-detail .delivery button.redeliver").await;
    b.wait(
        "the redelivery's confirmation",
        "document.querySelector('#confirm').open",
    )
    .await;
    assert!(b.text("#confirm-title").await.starts_with("Redeliver msg_"));
    b.screenshot("webhooks-confirm").await;
    b.click("#confirm-cancel").await;
    b.wait(
        "the redelivery not asked",
        "document.querySelector('#notice').textContent.includes('not redelivered')",
    )
    .await;
    b.click("#webhook-detail .delivery button.redeliver").await;
    b.wait(
        "the redelivery's confirmation",
        "document.querySelector('#confirm').open",
    )
    .await;
    b.click("#confirm-ok").await;
    b.wait(
        "the redelivery asked",
        "document.querySelector('#notice').textContent.includes('will be redelivered')",
    )
    .await;
    b.screenshot("webhooks").await;
    b.click("#webhook-detail button.pause").await;
    b.wait(
        "the endpoint paused",
        "document.querySelector('#notice').textContent.includes('is paused')",
    )
    .await;
    assert_eq!(
        admin.get(&format!("/api/webhooks/{endpoint}")).await.body["status"],
        "paused"
    );
    b.wait(
        "the resume button",
        "document.querySelector('#webhook-detail button.resume')",
    )
    .await;
    b.click("#webhook-detail button.resume").await;
    b.wait(
        "the endpoint resumed",
        "document.querySelector('#notice').textContent.includes('is active')",
    )
    .await;

    // Projections: throughput and lag over time; the rebuild asks first.
    b.eval("location.hash = 'view=projections'").await;
    b.wait(
        "the projections",
        "document.querySelector('tr[data-projection=\"orders\"]')",
    )
    .await;
    for name in ["products", "customers", "orders"] {
        assert_eq!(
            b.count(&format!("tr[data-projection=\"{name}\"]")).await,
            1,
            "{label}: no {name}"
        );
    }
    assert!(b.count("#projections .badge.live").await > 0);
    b.wait(
        "the charts",
        "document.querySelector('#throughput-chart svg polyline[data-series=\"orders\"]') && document.querySelector('#lag-chart svg polyline[data-series=\"orders\"]')",
    )
    .await;
    b.click("tr[data-projection=\"orders\"] button.rebuild")
        .await;
    b.wait(
        "the rebuild's confirmation",
        "document.querySelector('#confirm').open",
    )
    .await;
    assert_eq!(b.text("#confirm-title").await, "Rebuild projection orders?");
    b.screenshot("projections-confirm").await;
    b.click("#confirm-cancel").await;
    b.wait(
        "the rebuild not started",
        "document.querySelector('#notice').textContent.includes('not started')",
    )
    .await;
    let projections = admin.get("/api/projections").await.body;
    let orders = projections
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "orders")
        .unwrap();
    assert!(
        orders["rebuild"].is_null(),
        "rebuilt without confirmation: {orders}"
    );
    b.click("tr[data-projection=\"orders\"] button.rebuild")
        .await;
    b.wait(
        "the rebuild's confirmation",
        "document.querySelector('#confirm').open",
    )
    .await;
    b.click("#confirm-ok").await;
    b.wait(
        "the rebuild started",
        "document.querySelector('#notice').textContent.includes('rebuild of orders started')",
    )
    .await;
    b.screenshot("projections").await;
    b.close().await;
    instance.cleanup().await;
}

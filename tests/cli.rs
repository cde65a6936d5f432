//! The command line's manners (SPEC §7): a reader that stops early ends a command quietly,
//! `shop dev` refuses the flags of `shop serve` and does not list them, the admin tools
//! never sign in to a guessed address, and `shop topics list` shows this deployment's
//! topics with their partitions' end offsets.

mod common;

use std::process::Stdio;

use common::Instance;
use shop_sql::Dialect;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

fn shop() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
    command.env_clear().kill_on_drop(true);
    command
}

#[tokio::test]
async fn a_reader_that_stops_early_ends_the_command_quietly() {
    // `shop openapi | head -c 10`: the document (~180 KB) outgrows the pipe, so the
    // writer meets the closed pipe.
    for _ in 0..3 {
        let mut child = shop()
            .arg("openapi")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 10];
        stdout.read_exact(&mut first).await.unwrap();
        drop(stdout);
        let out = child.wait_with_output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(stderr.is_empty(), "{stderr}");
    }
}

#[tokio::test]
async fn shop_dev_refuses_and_hides_the_flags_of_shop_serve() {
    for args in [
        &["dev", "--customers-port", "9"][..],
        &["dev", "--read-api-url", "http://127.0.0.1:9"],
        &["--kafka-brokers", "127.0.0.1:9", "dev"],
        &["dev", "--database-url", "postgres://x@127.0.0.1:9/x"],
    ] {
        let dir = std::env::temp_dir().join(format!("shop-cli-{}", uuid::Uuid::new_v4()));
        let out = shop()
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("is a flag of `shop serve`"),
            "{args:?}: {stderr}"
        );
        assert!(!dir.exists(), "{args:?}: nothing starts");
    }
    let help = shop().args(["dev", "--help"]).output().await.unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for hidden in [
        "--customers-port",
        "--projector-port",
        "--orders-url",
        "--projection-members",
    ] {
        assert!(!help.contains(hidden), "{hidden} in shop dev --help");
    }
    // The global flags that reach Kafka and PostgreSQL are under a heading saying so.
    let (_, production) = help
        .split_once("Kafka and PostgreSQL (shop serve and the tools; not shop dev):")
        .expect("the production heading");
    assert!(production.contains("--kafka-brokers") && production.contains("--database-url"));
    let serve = shop().args(["serve", "--help"]).output().await.unwrap();
    assert!(String::from_utf8_lossy(&serve.stdout).contains("--customers-port"));
}

#[tokio::test]
async fn the_admin_tools_need_to_be_told_where_shop_is() {
    // Something listens where a default would have pointed: it must get no request.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    for args in [&["replay", "orders"][..], &["dlq", "list"]] {
        let out = shop()
            .args(args)
            .env("SHOP_ADMIN_PASSWORD", "some-password")
            .env("SHOP_PORT", port.to_string())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("--url (or SHOP_URL)"), "{args:?}: {stderr}");
    }
    let accepted =
        tokio::time::timeout(std::time::Duration::from_millis(200), listener.accept()).await;
    assert!(accepted.is_err(), "a connection was made");
}

#[tokio::test]
async fn topics_list_shows_this_deployments_topics_and_their_end_offsets() {
    let mine = Instance::on(Dialect::Postgres);
    let other = Instance::on(Dialect::Postgres);
    for instance in [&mine, &other] {
        common::shop_on_stores(instance, &["topics", "ensure"]).await;
    }
    let listed = common::shop_on_stores(&mine, &["topics", "list"]).await;
    let mut lines = listed.lines();
    let header = lines.next().unwrap();
    assert!(
        header.contains("RECORDS") && header.contains("END OFFSETS"),
        "{header}"
    );
    let names: Vec<&str> = lines
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        7,
        "six services' topics and the dead letters: {listed}"
    );
    assert!(
        names.iter().all(|n| n.starts_with(&mine.topic_prefix)),
        "{listed}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&common::shop_on_stores(&mine, &["topics", "list", "--json"]).await)
            .unwrap();
    let first = &json[0];
    assert_eq!(
        first["end_offsets"].as_array().unwrap().len() as i64,
        first["partitions"].as_i64().unwrap()
    );
    let all = common::shop_on_stores(&mine, &["topics", "list", "--all"]).await;
    assert!(all.contains(&other.topic_prefix), "--all lists every topic");
    mine.cleanup().await;
    other.cleanup().await;
}

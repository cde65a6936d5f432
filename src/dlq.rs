//! `shop dlq list|retry`: the events consumers gave up on (`GET /api/dlq`), and their
//! re-drive once the cause is fixed (`POST /api/dlq/{id}/retry`).

use reqwest::Method;
use serde_json::Value;

use crate::admin::AdminClient;
use crate::args::{DlqAction, DlqArgs};

pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.target).await?;
    let letters = client.call(Method::GET, "/api/dlq").await?;
    let letters: Vec<Value> = letters.as_array().cloned().unwrap_or_default();
    let pending = |l: &Value| l["retried_at"].is_null();
    match args.action {
        DlqAction::List {
            json,
            pending: only_pending,
        } => {
            let shown: Vec<&Value> = letters
                .iter()
                .filter(|l| !only_pending || pending(l))
                .collect();
            if json {
                outln!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                outln!(
                    "{:<10} {:<26} {:<28} {:<24} {:>8}  ERROR",
                    "ID",
                    "CONSUMER",
                    "EVENT",
                    "FROM",
                    "RETRIED"
                );
                for l in shown {
                    outln!(
                        "{:<10} {:<26} {:<28} {:<24} {:>8}  {}",
                        l["id"].as_str().unwrap_or(""),
                        l["consumer"].as_str().unwrap_or(""),
                        l["event_type"].as_str().unwrap_or("?"),
                        format!(
                            "{}/{}@{}",
                            l["topic"].as_str().unwrap_or(""),
                            l["partition"],
                            l["offset"]
                        ),
                        if pending(l) { "no" } else { "yes" },
                        l["error"].as_str().unwrap_or("")
                    );
                }
            }
        }
        DlqAction::Retry { ids, all } => {
            let ids: Vec<String> = if all {
                letters
                    .iter()
                    .filter(|l| pending(l))
                    .filter_map(|l| l["id"].as_str().map(String::from))
                    .collect()
            } else {
                ids
            };
            if ids.is_empty() {
                outln!("nothing to retry");
            }
            for id in ids {
                let answer = client
                    .call(Method::POST, &format!("/api/dlq/{id}/retry"))
                    .await?;
                outln!(
                    "{id}: published to {} again",
                    answer["topic"].as_str().unwrap_or("?")
                );
            }
        }
    }
    Ok(())
}

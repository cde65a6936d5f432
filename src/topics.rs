//! `shop topics ensure|list`, on Kafka or on a `shop dev` data directory's embedded log.

use std::io::Write;

use shop_log::EventLog;

use crate::args::{Common, TopicsAction, TopicsArgs};

pub async fn run(common: &Common, args: TopicsArgs) -> anyhow::Result<()> {
    let log: std::sync::Arc<dyn EventLog> = match &args.data_dir {
        Some(dir) => {
            let file = dir.join(crate::dev::LOG_FILE);
            anyhow::ensure!(
                file.exists(),
                "no event log at {} (is it a `shop dev` data directory?)",
                file.display()
            );
            std::sync::Arc::new(
                shop_log::embedded::EmbeddedLog::open(&file, common.topic_partitions).await?,
            )
        }
        None => crate::serve::kafka(common)?,
    };
    match args.action {
        TopicsAction::Ensure => {
            let topics = crate::serve::all_topics(&common.topic_prefix);
            log.ensure_topics(&topics).await?;
            let mut out = std::io::stdout().lock();
            for topic in topics {
                writeln!(out, "{topic}")?;
            }
        }
        TopicsAction::List { json, all } => {
            // This deployment's topics: the prefix's, or Shop's own names without one.
            let ours = crate::serve::all_topics(&common.topic_prefix);
            let mine = |name: &str| {
                all || ours.iter().any(|t| t == name)
                    || (!common.topic_prefix.is_empty() && name.starts_with(&common.topic_prefix))
            };
            let mut rows = Vec::new();
            for topic in log.list_topics().await? {
                if !mine(&topic.name) {
                    continue;
                }
                let ends = log.end_offsets(&topic.name).await?;
                // Shop's topics keep every record (unlimited retention) and are written
                // without transactions: the end offsets add up to the records written.
                let records: i64 = ends.iter().map(|(_, end)| end).sum();
                rows.push(serde_json::json!({
                    "name": topic.name,
                    "partitions": topic.partitions,
                    "records": records,
                    "end_offsets": ends.iter().map(|(p, e)| serde_json::json!({"partition": p, "end_offset": e})).collect::<Vec<_>>(),
                }));
            }
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                writeln!(
                    out,
                    "{:<40} {:>10} {:>10}  END OFFSETS (partition:offset)",
                    "TOPIC", "PARTITIONS", "RECORDS"
                )?;
                for row in rows {
                    let ends: Vec<String> = row["end_offsets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| format!("{}:{}", e["partition"], e["end_offset"]))
                        .collect();
                    writeln!(
                        out,
                        "{:<40} {:>10} {:>10}  {}",
                        row["name"].as_str().unwrap_or(""),
                        row["partitions"].as_i64().unwrap_or(0),
                        row["records"].as_i64().unwrap_or(0),
                        ends.join(" ")
                    )?;
                }
            }
        }
    }
    Ok(())
}

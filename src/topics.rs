//! `shop topics ensure|list`, on Kafka or on a `shop dev` data directory's embedded log.

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
            for topic in topics {
                println!("{topic}");
            }
        }
        TopicsAction::List { json } => {
            let mut rows = Vec::new();
            for topic in log.list_topics().await? {
                let ends = log.end_offsets(&topic.name).await?;
                let records: i64 = ends.iter().map(|(_, end)| end).sum();
                rows.push(serde_json::json!({"name": topic.name, "partitions": topic.partitions, "end_offsets": ends.iter().map(|(p, e)| serde_json::json!({"partition": p, "end_offset": e})).collect::<Vec<_>>(), "records": records}));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<40} {:>10} {:>12}", "TOPIC", "PARTITIONS", "END OFFSETS");
                for row in rows {
                    println!(
                        "{:<40} {:>10} {:>12}",
                        row["name"].as_str().unwrap_or(""),
                        row["partitions"].as_i64().unwrap_or(0),
                        row["records"].as_i64().unwrap_or(0)
                    );
                }
            }
        }
    }
    Ok(())
}

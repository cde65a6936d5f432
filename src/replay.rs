//! `shop replay PROJECTION|all`: rebuilds read models from the log without taking the
//! read API down. It asks the running system for a rebuild (`POST
//! /api/projections/{name}/rebuild`): the projector fills a new version from offset 0
//! beside the live one and switches reads to it once caught up. The command follows the
//! progress until every rebuilt version is live.

use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde_json::{json, Value};

use crate::admin::AdminClient;
use crate::args::ReplayArgs;

struct Tracked {
    name: String,
    version: i64,
    bar: ProgressBar,
    started: Instant,
    done: Option<Duration>,
    events: i64,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let client = AdminClient::connect(&args.target).await?;
    let projections = client.call(Method::GET, "/api/projections").await?;
    let known: Vec<String> = projections
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect();
    let names: Vec<String> = if args.projection == "all" {
        known.clone()
    } else if known.contains(&args.projection) {
        vec![args.projection.clone()]
    } else {
        bail!(
            "no projection {:?}; one of: {}, all",
            args.projection,
            known.join(", ")
        );
    };
    let bars = MultiProgress::with_draw_target(if args.json {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let style = ProgressStyle::with_template(
        "{prefix:>10} v{msg:<3} [{bar:30}] {pos}/{len} events ({per_sec}, eta {eta})",
    )?
    .progress_chars("=> ");
    let mut tracked = Vec::new();
    for name in names {
        let path = format!("/api/projections/{name}/rebuild");
        let version = match client.call(Method::POST, &path).await {
            Ok(answer) => answer["version"].as_i64().unwrap_or(0),
            Err(e) if e.to_string().contains("409") => {
                // Already under way: follow that one.
                let now = client.call(Method::GET, "/api/projections").await?;
                find(&now, &name)["rebuild"]["version"]
                    .as_i64()
                    .unwrap_or(0)
            }
            Err(e) => return Err(e),
        };
        let bar = bars.add(ProgressBar::new(0).with_style(style.clone()));
        bar.set_prefix(name.clone());
        bar.set_message(version.to_string());
        tracked.push(Tracked {
            name,
            version,
            bar,
            started: Instant::now(),
            done: None,
            events: 0,
        });
    }
    if !args.no_wait {
        let deadline = Instant::now() + Duration::from_secs(args.timeout);
        while tracked.iter().any(|t| t.done.is_none()) {
            if Instant::now() > deadline {
                bail!("the rebuild goes on, but stopped following after {} s (GET /api/projections shows it)", args.timeout);
            }
            let now = client.call(Method::GET, "/api/projections").await?;
            for t in tracked.iter_mut().filter(|t| t.done.is_none()) {
                let view = find(&now, &t.name);
                let total: i64 = view["positions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| p["end_offset"].as_i64().unwrap_or(0))
                    .sum();
                t.bar.set_length(total.max(0) as u64);
                if view["version"].as_i64() == Some(t.version) {
                    t.done = Some(t.started.elapsed());
                    t.events = view["events_applied"].as_i64().unwrap_or(0);
                    t.bar.set_position(total.max(0) as u64);
                    t.bar.finish_with_message(format!("{} live", t.version));
                } else {
                    let lag = view["rebuild"]["lag"].as_i64().unwrap_or(total);
                    t.bar.set_position((total - lag).max(0) as u64);
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let outcome: Vec<Value> = tracked
        .iter()
        .map(|t| {
            json!({
                "projection": t.name,
                "version": t.version,
                "status": if t.done.is_some() { "live" } else { "rebuilding" },
                "events_applied": t.events,
                "seconds": t.done.map(|d| d.as_secs_f64()),
            })
        })
        .collect();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        for t in &tracked {
            match t.done {
                Some(took) => outln!(
                    "{}: version {} is live ({} events applied, {:.1} s)",
                    t.name,
                    t.version,
                    t.events,
                    took.as_secs_f64()
                ),
                None => outln!("{}: version {} is rebuilding", t.name, t.version),
            }
        }
    }
    Ok(())
}

fn find<'v>(projections: &'v Value, name: &str) -> &'v Value {
    projections
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == name))
        .unwrap_or(&Value::Null)
}

//! The embedded event log of `shop dev` on its own: per-key order, end offsets, consumer
//! groups sharing partitions and taking over a departed member's, committed positions and
//! records surviving a reopen.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use shop_log::embedded::EmbeddedLog;
use shop_log::{EventLog, LogRecord, OutgoingRecord, Position, StartFrom, Subscription};

/// A log file in a fresh directory, removed by [`Dir::drop`].
struct Dir(PathBuf);

impl Dir {
    fn fresh() -> Self {
        let dir = std::env::temp_dir().join(format!("shop-log-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn log(&self) -> PathBuf {
        self.0.join("log.db")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn record(key: &str, n: usize) -> OutgoingRecord {
    OutgoingRecord {
        topic: "orders.events".into(),
        key: key.into(),
        headers: vec![("n".into(), n.to_string())],
        payload: n.to_string().into_bytes(),
    }
}

fn n(record: &LogRecord) -> usize {
    String::from_utf8_lossy(record.payload.as_deref().unwrap())
        .parse()
        .unwrap()
}

/// Publishes `count` records round robin over `keys`; returns them by key, in order.
async fn publish(log: &EmbeddedLog, keys: &[&str], count: usize) -> BTreeMap<String, Vec<usize>> {
    let mut sent: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let records: Vec<OutgoingRecord> = (0..count)
        .map(|i| {
            let key = keys[i % keys.len()];
            sent.entry(key.to_string()).or_default().push(i);
            record(key, i)
        })
        .collect();
    for chunk in records.chunks(7) {
        log.publish(chunk.to_vec()).await.unwrap();
    }
    sent
}

/// Polls until `count` records came (or fails after a generous timeout).
async fn read(subscription: &mut dyn Subscription, count: usize) -> Vec<LogRecord> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {count}",
            got.len()
        );
        got.extend(
            subscription
                .poll(50, Duration::from_millis(200))
                .await
                .unwrap(),
        );
    }
    got
}

/// Opens the log in `dir` again (its earlier handle dropped) and reads `count` records
/// of `orders.events` from the beginning as a new group.
async fn read_after_reopen(
    dir: &Dir,
    partitions: i32,
    group: &str,
    count: usize,
) -> Vec<LogRecord> {
    let log = EmbeddedLog::open(&dir.log(), partitions).await.unwrap();
    let mut subscription = log
        .subscribe(group, &["orders.events".into()], StartFrom::Beginning)
        .await
        .unwrap();
    read(subscription.as_mut(), count).await
}

fn by_key(records: &[LogRecord]) -> BTreeMap<String, Vec<usize>> {
    let mut keyed: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for r in records {
        keyed.entry(r.key.clone().unwrap()).or_default().push(n(r));
    }
    keyed
}

fn positions(records: &[LogRecord]) -> Vec<Position> {
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for r in records {
        let e = next.entry((r.topic.clone(), r.partition)).or_default();
        *e = (*e).max(r.offset + 1);
    }
    next.into_iter()
        .map(|((topic, partition), next_offset)| Position {
            topic,
            partition,
            next_offset,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_keep_their_order_per_key_and_survive_a_reopen() {
    let dir = Dir::fresh();
    let log = EmbeddedLog::open(&dir.log(), 3).await.unwrap();
    log.ensure_topics(&["orders.events".into()]).await.unwrap();
    let sent = publish(&log, &["a", "b", "c", "d", "e"], 100).await;
    let ends = log.end_offsets("orders.events").await.unwrap();
    assert_eq!(ends.len(), 3);
    assert_eq!(ends.iter().map(|(_, end)| end).sum::<i64>(), 100);
    let topics = log.list_topics().await.unwrap();
    assert_eq!(
        (topics[0].name.as_str(), topics[0].partitions),
        ("orders.events", 3)
    );

    let mut subscription = log
        .subscribe("g", &["orders.events".into()], StartFrom::Beginning)
        .await
        .unwrap();
    let got = read(subscription.as_mut(), 100).await;
    assert_eq!(by_key(&got), sent, "every record, in order per key");
    assert!(got
        .iter()
        .all(|r| r.headers.iter().next().map(|(k, _)| k) == Some("n") && r.timestamp_ms.is_some()));
    drop(subscription);
    drop(log);

    let again = read_after_reopen(&dir, 3, "other", 100).await;
    assert_eq!(by_key(&again), sent, "durable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_shares_partitions_and_takes_over_a_departed_members() {
    let dir = Dir::fresh();
    let log = EmbeddedLog::open(&dir.log(), 4).await.unwrap();
    let topic = vec!["orders.events".to_string()];
    log.ensure_topics(&topic).await.unwrap();
    let mut first = log
        .subscribe("g", &topic, StartFrom::Beginning)
        .await
        .unwrap();
    let mut second = log
        .subscribe("g", &topic, StartFrom::Beginning)
        .await
        .unwrap();
    let sent = publish(&log, &["a", "b", "c", "d", "e", "f", "g", "h"], 80).await;

    // Each member reads its own partitions; together they read everything once.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (mut from_first, mut from_second) = (0, 0);
    while seen.len() < 80 {
        assert!(std::time::Instant::now() < deadline);
        let a = first.poll(20, Duration::from_millis(100)).await.unwrap();
        let b = second.poll(20, Duration::from_millis(100)).await.unwrap();
        from_first += a.len();
        from_second += b.len();
        let partitions_a: std::collections::HashSet<i32> = a.iter().map(|r| r.partition).collect();
        assert!(
            b.iter().all(|r| !partitions_a.contains(&r.partition)),
            "a partition read by both"
        );
        seen.extend(a);
        seen.extend(b);
    }
    assert!(
        from_first > 0 && from_second > 0,
        "both members got partitions"
    );
    assert_eq!(by_key(&seen), sent);

    // The first commits what it read and leaves; the second takes over its partitions
    // from the committed positions and sees what comes next.
    first.commit(&positions(&seen)).unwrap();
    second.commit(&positions(&seen)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(first);
    let more = publish(&log, &["a", "b", "c", "d", "e", "f", "g", "h"], 40).await;
    let next = read(second.as_mut(), 40).await;
    assert_eq!(
        by_key(&next),
        more,
        "every new record, from every partition, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_positions_survive_a_reopen_and_new_groups_may_start_at_the_end() {
    let dir = Dir::fresh();
    let topic = vec!["orders.events".to_string()];
    {
        let log = EmbeddedLog::open(&dir.log(), 2).await.unwrap();
        publish(&log, &["a", "b"], 10).await;
        let mut subscription = log
            .subscribe("g", &topic, StartFrom::Beginning)
            .await
            .unwrap();
        let got = read(subscription.as_mut(), 10).await;
        subscription.commit(&positions(&got)).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = EmbeddedLog::open(&dir.log(), 2).await.unwrap();
    publish(&log, &["c"], 1).await;
    let mut resumed = log
        .subscribe("g", &topic, StartFrom::Beginning)
        .await
        .unwrap();
    let got = read(resumed.as_mut(), 1).await;
    assert_eq!(
        got.iter().map(n).collect::<Vec<_>>(),
        [0],
        "only what came after the commit"
    );
    let mut late = log.subscribe("late", &topic, StartFrom::End).await.unwrap();
    assert!(late
        .poll(10, Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());

    // A poll waiting for records returns once one is published from elsewhere.
    let publisher = log.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        publisher.publish(vec![record("d", 7)]).await.unwrap();
    });
    let got = late.poll(10, Duration::from_secs(20)).await.unwrap();
    assert_eq!(got.iter().map(n).collect::<Vec<_>>(), [7]);
}

/// The newest records of a partition are served from memory, older ones from the file:
/// a group reading a history longer than the in-memory tail gets every record, in order,
/// exactly as a reader of the file alone (after a reopen) gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_read_from_memory_and_from_the_file_are_the_same() {
    let dir = Dir::fresh();
    let log = EmbeddedLog::open(&dir.log(), 1).await.unwrap();
    log.ensure_topics(&["orders.events".into()]).await.unwrap();
    let sent = publish(&log, &["a", "b"], 1_000).await;
    let fields = |records: &[LogRecord]| -> Vec<_> {
        records
            .iter()
            .map(|r| {
                (
                    r.partition,
                    r.offset,
                    r.key.clone(),
                    r.headers.clone(),
                    r.payload.clone(),
                    r.timestamp_ms,
                )
            })
            .collect()
    };
    let mut live = log
        .subscribe("live", &["orders.events".into()], StartFrom::Beginning)
        .await
        .unwrap();
    let got = read(live.as_mut(), 1_000).await;
    assert_eq!(by_key(&got), sent, "every record, in order per key");
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..1_000).collect::<Vec<i64>>(),
        "consecutive offsets across the file and memory"
    );
    // More records after the group caught up come from memory.
    let more: Vec<OutgoingRecord> = (1_000..1_010).map(|i| record("a", i)).collect();
    log.publish(more).await.unwrap();
    let mut got = got;
    got.extend(read(live.as_mut(), 10).await);
    drop(live);
    drop(log);

    let again = read_after_reopen(&dir, 1, "file", 1_010).await;
    assert_eq!(fields(&got), fields(&again), "the same records either way");
}

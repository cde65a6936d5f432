//! What an end-to-end row costs per decided order, measured from outside the system:
//! CPU time of the system's processes, of the Kafka broker and of PostgreSQL (from
//! `/proc/<pid>/stat`, Linux), SQL statements (from `pg_stat_statements`, when the server
//! loads it) and Kafka records produced (from the topics' end offsets).
//!
//! CPU is read as a delta between two snapshots of `/proc`: a process seen in both
//! counts what it used in between, one that appeared counts all it used, and a process
//! tree's reaped children count through their parent's `cutime`/`cstime`. Whose CPU is
//! whose:
//!
//! - the system: the process the bench started (`shop serve all`, `shop dev`) and any
//!   process under it; for the floor, which runs in the bench's process, that process
//!   (the floor's hops and its placing of orders; nothing else runs in it meanwhile);
//! - the load generator (system rows only): the bench's own process, its children not
//!   counted (the system is one);
//! - the broker: the `kafka.Kafka` Java process(es) and what runs under them;
//! - PostgreSQL: the postmaster's own time, its background processes (WAL writer,
//!   checkpointer, …), and the backends connected to the row's databases — not the
//!   backends of other databases on a shared server, nor backends that ended during the
//!   row (their time joins the postmaster's children's, which others' add to too).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use shop_log::EventLog;

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`USER_HZ`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// One process as `/proc/<pid>/stat` has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    ppid: u32,
    /// Start time (ticks after boot): tells a reused pid from the process seen before.
    start: u64,
    /// User + system time.
    own: u64,
    /// User + system time of its children it waited for.
    children: u64,
}

/// Parses `/proc/<pid>/stat`: `(comm, stat)`. The command name is in parentheses and
/// may itself hold spaces and parentheses, so the fields are counted after the last `)`.
fn parse_stat(text: &str) -> Option<(String, ProcStat)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // fields[0] is field 3 (state) of proc(5).
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some((
        comm,
        ProcStat {
            ppid: field(4)? as u32,
            own: field(14)? + field(15)?,
            children: field(16)? + field(17)?,
            start: field(22)?,
        },
    ))
}

#[derive(Debug, Clone)]
struct Proc {
    comm: String,
    stat: ProcStat,
    cmdline: String,
}

/// Every process of the machine at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    procs: HashMap<u32, Proc>,
}

impl Snapshot {
    /// Reads `/proc` (empty where there is none).
    pub fn take() -> Snapshot {
        let mut procs = HashMap::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Snapshot { procs };
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Some((comm, stat)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|text| parse_stat(&text))
            else {
                continue; // gone meanwhile
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
                .unwrap_or_default();
            procs.insert(
                pid,
                Proc {
                    comm,
                    stat,
                    cmdline: cmdline.trim_end().to_string(),
                },
            );
        }
        Snapshot { procs }
    }

    /// `pid` and every process under it.
    fn tree(&self, pid: u32) -> Vec<u32> {
        let mut members = vec![pid];
        let mut i = 0;
        while i < members.len() {
            let parent = members[i];
            members.extend(
                self.procs
                    .iter()
                    .filter(|(child, p)| p.stat.ppid == parent && **child != parent)
                    .map(|(child, _)| *child),
            );
            i += 1;
        }
        members.retain(|pid| self.procs.contains_key(pid));
        members
    }

    /// Ticks of each member of `group` now, keyed by pid and start time.
    fn members(&self, group: &Group) -> Vec<((u32, u64), u64)> {
        let with_children = |pid: &u32| {
            self.procs
                .get(pid)
                .map(|p| ((*pid, p.stat.start), p.stat.own + p.stat.children))
        };
        match group {
            Group::Tree(root) => self.tree(*root).iter().filter_map(with_children).collect(),
            Group::Process(pid) => self
                .procs
                .get(pid)
                .map(|p| ((*pid, p.stat.start), p.stat.own))
                .into_iter()
                .collect(),
            Group::Broker => {
                let roots = self
                    .procs
                    .iter()
                    .filter(|(_, p)| p.cmdline.contains("kafka.Kafka"))
                    .map(|(pid, _)| *pid);
                let mut pids: Vec<u32> = roots.flat_map(|root| self.tree(root)).collect();
                pids.sort_unstable();
                pids.dedup();
                pids.iter().filter_map(with_children).collect()
            }
            Group::Postgres { databases } => {
                let is_postgres =
                    |pid: &u32| self.procs.get(pid).is_some_and(|p| p.comm == "postgres");
                let mut members = Vec::new();
                for (pid, p) in &self.procs {
                    if p.comm != "postgres" {
                        continue;
                    }
                    let key = (*pid, p.stat.start);
                    if !is_postgres(&p.stat.ppid) {
                        // The postmaster: its own time only (its children's is everyone's).
                        members.push((key, p.stat.own));
                        continue;
                    }
                    match backend_database(&p.cmdline) {
                        Some(db) if !db.starts_with(databases.as_str()) => {}
                        _ => members.push((key, p.stat.own + p.stat.children)),
                    }
                }
                members
            }
        }
    }

    /// Whether a process like `group`'s is there at all.
    fn has(&self, group: &Group) -> bool {
        !self.members(group).is_empty()
    }
}

/// The database of a PostgreSQL client backend from its process title (`postgres:
/// [cluster: ]user database host(port) activity`); `None` for a background process.
fn backend_database(cmdline: &str) -> Option<&str> {
    let tokens: Vec<&str> = cmdline.split_whitespace().collect();
    let host = tokens
        .iter()
        .position(|t| *t == "[local]" || (t.contains('(') && t.ends_with(')')))?;
    (host >= 2).then(|| tokens[host - 1])
}

/// Whose CPU time a figure is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    /// A process and every process under it (children it reaped included).
    Tree(u32),
    /// One process alone.
    Process(u32),
    /// The Kafka broker(s) of this machine.
    Broker,
    /// PostgreSQL: the postmaster, its background processes and the backends of the
    /// databases whose names start with this.
    Postgres { databases: String },
}

/// CPU seconds `group` used between two snapshots; `None` when no such process is in
/// the later one.
pub fn cpu_seconds(before: &Snapshot, after: &Snapshot, group: &Group) -> Option<f64> {
    if !after.has(group) {
        return None;
    }
    let ticks = match group {
        // A process of the tree that ended was reaped in it: its time moved to its
        // parent's children's time, so the tree's sum only grows.
        Group::Tree(_) | Group::Process(_) | Group::Broker => {
            let sum = |s: &Snapshot| s.members(group).iter().map(|(_, t)| t).sum::<u64>();
            sum(after).saturating_sub(sum(before))
        }
        // A backend that ended joined the postmaster's children's time, which is not
        // counted (other databases' backends add to it too): each process counts what
        // it used while seen.
        Group::Postgres { .. } => {
            let earlier: HashMap<(u32, u64), u64> = before.members(group).into_iter().collect();
            after
                .members(group)
                .into_iter()
                .map(|(key, now)| now.saturating_sub(earlier.get(&key).copied().unwrap_or(0)))
                .sum()
        }
    };
    Some(ticks as f64 / TICKS_PER_S)
}

/// Ticks of a process tree now (cheap enough to sample often).
fn tree_ticks(pid: u32) -> u64 {
    let snapshot = Snapshot::take();
    snapshot
        .members(&Group::Tree(pid))
        .into_iter()
        .map(|(_, t)| t)
        .sum()
}

/// The CPU ticks a process tree uses per half second when nothing is asked of it
/// (measured over one second); [`idle_percent`] of one core.
pub async fn idle_ticks(pid: u32) -> u64 {
    let before = tree_ticks(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    tree_ticks(pid).saturating_sub(before).div_ceil(2)
}

/// [`idle_ticks`] as a percentage of one core.
pub fn idle_percent(ticks: u64) -> f64 {
    ticks as f64 * 2.0 / TICKS_PER_S * 100.0
}

/// Waits until the process tree is back to its idle use (two half seconds in a row at
/// most half as busy again as `idle`, and two ticks), at most `max`; whether it got
/// there.
pub async fn settle(pid: u32, idle: u64, max: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + max;
    let limit = idle + idle / 2 + 2;
    let mut quiet = 0;
    let mut last = tree_ticks(pid);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = tree_ticks(pid);
        quiet = if now.saturating_sub(last) <= limit {
            quiet + 1
        } else {
            0
        };
        last = now;
        if quiet >= 2 {
            return true;
        }
    }
    false
}

/// SQL statements and commits counted by `pg_stat_statements`, per database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Statements {
    /// Calls per database (every statement, `BEGIN` and `COMMIT` included).
    pub calls: BTreeMap<String, i64>,
    /// `COMMIT`s over all those databases.
    pub commits: i64,
}

impl Statements {
    /// What was counted between `before` and `self`.
    fn since(&self, before: &Statements) -> Statements {
        Statements {
            calls: self
                .calls
                .iter()
                .map(|(db, n)| (db.clone(), n - before.calls.get(db).copied().unwrap_or(0)))
                .collect(),
            commits: self.commits - before.commits,
        }
    }
}

/// Reads `pg_stat_statements` through a database of the bench's own (`<instance>_stats`,
/// where the bench creates the extension; dropped with the instance's other databases).
/// Nothing is reset: a row's figures are the difference of two readings, so other users
/// of the server lose nothing and nothing needs restoring.
pub struct StatementCounter {
    pool: sqlx::PgPool,
    /// Its own database, whose statements are not counted.
    own: String,
}

impl StatementCounter {
    /// Opens it, or says why statements cannot be counted on this server.
    pub async fn open(database: &shop_sql::db::DatabaseConfig) -> Result<StatementCounter, String> {
        let pool = shop_sql::db::open(database, "stats", &[])
            .await
            .map_err(|e| format!("cannot open the bench's statistics database: {e}"))?;
        let pool = pool
            .as_postgres()
            .ok_or("statements are counted on PostgreSQL only")?
            .clone();
        let preloaded: String = sqlx::query_scalar("SHOW shared_preload_libraries")
            .fetch_one(&pool)
            .await
            .map_err(|e| e.to_string())?;
        if !preloaded
            .split(',')
            .any(|l| l.trim() == "pg_stat_statements")
        {
            pool.close().await;
            return Err("SQL statements not counted: the server does not load \
                        pg_stat_statements (add it to shared_preload_libraries and restart \
                        PostgreSQL to count them)"
                .to_string());
        }
        if let Err(e) = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&pool)
            .await
        {
            pool.close().await;
            return Err(format!(
                "SQL statements not counted: cannot create pg_stat_statements: {e}"
            ));
        }
        Ok(StatementCounter {
            pool,
            own: database.database_name("stats"),
        })
    }

    /// Statements of the databases whose names start with `databases` so far.
    pub async fn read(&self, databases: &str) -> Result<Statements, sqlx::Error> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT d.datname::text, sum(s.calls)::bigint,
                    coalesce(sum(s.calls) FILTER (WHERE upper(s.query) IN ('COMMIT', 'END')), 0)::bigint
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
             WHERE starts_with(d.datname, $1) AND d.datname <> $2
             GROUP BY d.datname",
        )
        .bind(databases)
        .bind(&self.own)
        .fetch_all(&self.pool)
        .await?;
        Ok(Statements {
            commits: rows.iter().map(|(_, _, c)| c).sum(),
            calls: rows.into_iter().map(|(db, n, _)| (db, n)).collect(),
        })
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// Records on these topics so far (the sum of their partitions' end offsets); `None`
/// when the log does not answer.
pub async fn records(log: &dyn EventLog, topics: &[String]) -> Option<i64> {
    let mut total = 0;
    for topic in topics {
        total += log
            .end_offsets(topic)
            .await
            .ok()?
            .iter()
            .map(|(_, end)| end)
            .sum::<i64>();
    }
    Some(total)
}

/// Where a row's figures come from.
pub struct Sources<'a> {
    /// The system's CPU: its process tree (or, for the floor, the bench's process).
    pub system: Group,
    /// The load generator's process, when it is not the system.
    pub load: Option<Group>,
    /// The prefix of the row's database names (PostgreSQL backends and statements);
    /// `None` on embedded storage.
    pub databases: Option<String>,
    pub statements: Option<&'a StatementCounter>,
    /// The event log and the row's topics, for the records produced.
    pub log: Option<(&'a dyn EventLog, Vec<String>)>,
}

/// The readings at a row's start.
pub struct Start {
    at: std::time::Instant,
    processes: Snapshot,
    statements: Option<Statements>,
    records: Option<i64>,
}

/// Takes the readings at a row's start.
pub async fn start(sources: &Sources<'_>) -> Start {
    let statements = match (sources.statements, &sources.databases) {
        (Some(counter), Some(databases)) => counter.read(databases).await.ok(),
        _ => None,
    };
    let records = match &sources.log {
        Some((log, topics)) => records(*log, topics).await,
        None => None,
    };
    Start {
        at: std::time::Instant::now(),
        processes: Snapshot::take(),
        statements,
        records,
    }
}

/// What a row used between [`start`] and now.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub seconds: f64,
    pub system_cpu_s: f64,
    pub load_cpu_s: Option<f64>,
    pub broker_cpu_s: Option<f64>,
    pub postgres_cpu_s: Option<f64>,
    pub statements: Option<Statements>,
    pub records: Option<i64>,
}

/// Takes the readings at a row's end.
pub async fn finish(sources: &Sources<'_>, start: Start) -> Usage {
    let processes = Snapshot::take();
    let seconds = start.at.elapsed().as_secs_f64();
    let cpu = |group: &Group| cpu_seconds(&start.processes, &processes, group);
    let statements = match (sources.statements, &sources.databases, &start.statements) {
        (Some(counter), Some(databases), Some(before)) => counter
            .read(databases)
            .await
            .ok()
            .map(|after| after.since(before)),
        _ => None,
    };
    let records = match (&sources.log, start.records) {
        (Some((log, topics)), Some(before)) => records(*log, topics).await.map(|n| n - before),
        _ => None,
    };
    Usage {
        seconds,
        system_cpu_s: cpu(&sources.system).unwrap_or(0.0),
        load_cpu_s: sources.load.as_ref().and_then(cpu),
        broker_cpu_s: sources.log.as_ref().and_then(|_| cpu(&Group::Broker)),
        postgres_cpu_s: sources.databases.as_ref().and_then(|databases| {
            cpu(&Group::Postgres {
                databases: databases.clone(),
            })
        }),
        statements,
        records,
    }
}

/// A row's cost per decided order.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Cost {
    /// Seconds measured: from the first order sent until the system was idle again (the
    /// floor: until its last decision).
    pub window_s: f64,
    /// CPU milliseconds of the system's processes per decided order (the floor: the
    /// bench's process, which runs it).
    pub cpu_ms_per_order: f64,
    /// The Kafka broker's, when one runs on this machine and the row uses Kafka.
    pub broker_cpu_ms_per_order: Option<f64>,
    /// PostgreSQL's (background processes and the row's databases' backends), when the
    /// row uses PostgreSQL and it runs on this machine.
    pub postgres_cpu_ms_per_order: Option<f64>,
    /// The system's, the broker's and PostgreSQL's together.
    pub total_cpu_ms_per_order: f64,
    /// The load generator's (the bench's process; system rows only).
    pub load_cpu_ms_per_order: Option<f64>,
    /// SQL statements per decided order (`pg_stat_statements`; `BEGIN`/`COMMIT` included).
    pub sql_statements_per_order: Option<f64>,
    /// Transactions committed per decided order (`COMMIT`s among those statements).
    pub sql_commits_per_order: Option<f64>,
    /// Statements per decided order in each database (by the name after the instance's).
    pub sql_statements_by_database: BTreeMap<String, f64>,
    /// Records produced to the row's topics per decided order.
    pub kafka_records_per_order: Option<f64>,
    /// The system's CPU per order against the floor's at the same load (Kafka rows).
    pub cpu_vs_floor: Option<f64>,
    /// The total CPU per order against the floor's total at the same load.
    pub total_cpu_vs_floor: Option<f64>,
    /// The system's CPU while idle in the second before the row, in % of one core
    /// (system rows): what its background work costs whatever the load.
    pub system_idle_cpu_pct: Option<f64>,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
}

impl Cost {
    /// Per order from a row's usage and its decided orders.
    pub fn per_order(usage: &Usage, decided: usize) -> Cost {
        let n = decided.max(1) as f64;
        let ms = |s: f64| s * 1000.0 / n;
        let cpu_ms_per_order = ms(usage.system_cpu_s);
        let broker = usage.broker_cpu_s.map(ms);
        let postgres = usage.postgres_cpu_s.map(ms);
        Cost {
            window_s: usage.seconds,
            cpu_ms_per_order,
            broker_cpu_ms_per_order: broker,
            postgres_cpu_ms_per_order: postgres,
            total_cpu_ms_per_order: cpu_ms_per_order
                + broker.unwrap_or(0.0)
                + postgres.unwrap_or(0.0),
            load_cpu_ms_per_order: usage.load_cpu_s.map(ms),
            sql_statements_per_order: usage
                .statements
                .as_ref()
                .map(|s| s.calls.values().sum::<i64>() as f64 / n),
            sql_commits_per_order: usage.statements.as_ref().map(|s| s.commits as f64 / n),
            sql_statements_by_database: usage
                .statements
                .as_ref()
                .map(|s| {
                    s.calls
                        .iter()
                        .map(|(db, calls)| {
                            let short = db.split_once('_').map_or(db.as_str(), |(_, c)| c);
                            (short.to_string(), *calls as f64 / n)
                        })
                        .collect()
                })
                .unwrap_or_default(),
            kafka_records_per_order: usage.records.map(|r| r as f64 / n),
            cpu_vs_floor: None,
            total_cpu_vs_floor: None,
            system_idle_cpu_pct: None,
            notes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(comm: &str, ppid: u32, start: u64, own: u64, children: u64, cmdline: &str) -> Proc {
        Proc {
            comm: comm.to_string(),
            stat: ProcStat {
                ppid,
                start,
                own,
                children,
            },
            cmdline: cmdline.to_string(),
        }
    }

    #[test]
    fn a_stat_line_is_read_after_the_command_name() {
        let line = "4242 (tokio (rt) x) S 17 4242 4242 0 -1 4194304 100 0 0 0 250 50 7 3 20 0 9 0 123456 1000 10";
        let (comm, stat) = parse_stat(line).unwrap();
        assert_eq!(comm, "tokio (rt) x");
        assert_eq!(
            stat,
            ProcStat {
                ppid: 17,
                start: 123456,
                own: 300,
                children: 10
            }
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_backend_is_known_by_its_database_and_a_background_process_is_not() {
        assert_eq!(
            backend_database("postgres: 15/main: postgres t40_customers 127.0.0.1(42266) idle"),
            Some("t40_customers")
        );
        assert_eq!(
            backend_database("postgres: bob shop_orders [local] COMMIT"),
            Some("shop_orders")
        );
        assert_eq!(backend_database("postgres: 15/main: walwriter"), None);
        assert_eq!(
            backend_database("postgres: 15/main: autovacuum launcher"),
            None
        );
    }

    #[test]
    fn cpu_is_counted_per_group_between_two_snapshots() {
        let snapshot = |procs: Vec<(u32, Proc)>| Snapshot {
            procs: procs.into_iter().collect(),
        };
        let pg = "/usr/lib/postgresql/15/bin/postgres -D /data";
        let before = snapshot(vec![
            (1, process("bench", 0, 1, 100, 0, "shop-bench")),
            (2, process("shop", 1, 5, 1000, 0, "shop serve all")),
            (10, process("postgres", 0, 1, 50, 900, pg)),
            (
                11,
                process("postgres", 10, 2, 20, 0, "postgres: 15/main: walwriter"),
            ),
            (
                12,
                process(
                    "postgres",
                    10,
                    3,
                    300,
                    0,
                    "postgres: 15/main: postgres run_orders 127.0.0.1(1) idle",
                ),
            ),
            (
                13,
                process(
                    "postgres",
                    10,
                    3,
                    700,
                    0,
                    "postgres: 15/main: postgres other_db 127.0.0.1(2) idle",
                ),
            ),
            (
                20,
                process(
                    "java",
                    0,
                    1,
                    5000,
                    0,
                    "java -cp x kafka.Kafka server.properties",
                ),
            ),
            (30, process("sh", 2, 9, 4, 0, "sh -c x")),
        ]);
        let after = snapshot(vec![
            (1, process("bench", 0, 1, 130, 0, "shop-bench")),
            // The system reaped its child (pid 30: 4 ticks, then 6 more) meanwhile.
            (2, process("shop", 1, 5, 1400, 10, "shop serve all")),
            (10, process("postgres", 0, 1, 55, 5000, pg)),
            (
                11,
                process("postgres", 10, 2, 30, 0, "postgres: 15/main: walwriter"),
            ),
            (
                12,
                process(
                    "postgres",
                    10,
                    3,
                    500,
                    0,
                    "postgres: 15/main: postgres run_orders 127.0.0.1(1) idle",
                ),
            ),
            (
                13,
                process(
                    "postgres",
                    10,
                    3,
                    900,
                    0,
                    "postgres: 15/main: postgres other_db 127.0.0.1(2) idle",
                ),
            ),
            // A new backend of the run: all its time counts.
            (
                14,
                process(
                    "postgres",
                    10,
                    8,
                    40,
                    0,
                    "postgres: 15/main: postgres run_payments 127.0.0.1(3) idle",
                ),
            ),
            (
                20,
                process(
                    "java",
                    0,
                    1,
                    5600,
                    0,
                    "java -cp x kafka.Kafka server.properties",
                ),
            ),
        ]);
        let cpu = |group: Group| cpu_seconds(&before, &after, &group);
        // 400 of its own, and its child's 6 ticks after the first snapshot.
        assert_eq!(cpu(Group::Tree(2)), Some(4.06));
        assert_eq!(cpu(Group::Process(1)), Some(0.30));
        assert_eq!(cpu(Group::Broker), Some(6.0));
        // Postmaster 5 + walwriter 10 + run_orders 200 + run_payments 40; other_db not.
        assert_eq!(
            cpu(Group::Postgres {
                databases: "run_".into()
            }),
            Some(2.55)
        );
        assert_eq!(cpu(Group::Tree(99)), None, "no such process");
    }

    #[test]
    fn a_rows_cost_is_per_decided_order() {
        let usage = Usage {
            seconds: 12.0,
            system_cpu_s: 5.0,
            load_cpu_s: Some(1.0),
            broker_cpu_s: Some(2.0),
            postgres_cpu_s: None,
            statements: Some(Statements {
                calls: [
                    ("b1_orders".to_string(), 3000),
                    ("b1_read".to_string(), 1000),
                ]
                .into_iter()
                .collect(),
                commits: 800,
            }),
            records: Some(7000),
        };
        let cost = Cost::per_order(&usage, 1000);
        assert_eq!(cost.cpu_ms_per_order, 5.0);
        assert_eq!(cost.broker_cpu_ms_per_order, Some(2.0));
        assert_eq!(cost.total_cpu_ms_per_order, 7.0);
        assert_eq!(cost.load_cpu_ms_per_order, Some(1.0));
        assert_eq!(cost.sql_statements_per_order, Some(4.0));
        assert_eq!(cost.sql_commits_per_order, Some(0.8));
        assert_eq!(cost.sql_statements_by_database["orders"], 3.0);
        assert_eq!(cost.kafka_records_per_order, Some(7.0));
    }
}

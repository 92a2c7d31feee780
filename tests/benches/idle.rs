//! The idle cost of a rosterd process by how many workspaces its authorization cache holds: the CPU
//! it and PostgreSQL spend, and the transactions it commits, while nobody calls it.
//!
//! The database holds `BENCH_MANY` workspaces, each with its admin: one made through the API, the
//! others copied from it in SQL (no bcrypt per workspace). For each size, `BENCH_FEW` then
//! `BENCH_MANY`, a fresh release `rosterd` process checks one user of that many workspaces (16
//! checks in flight), which makes it hold them, then gets no calls for `BENCH_IDLE_SECONDS`. Over
//! that window it reports the process's CPU seconds, those of every `postgres` process (the whole
//! server: other databases' work counts too, so their transactions are shown beside), and the
//! transactions committed in the test database.
//!
//! Run: `cargo bench -p roster-tests --bench idle`.
//! Settings: `BENCH_FEW` (default 10), `BENCH_MANY` (default 10000), `BENCH_IDLE_SECONDS` (default
//! 30), `ROSTER_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`).

use roster_proto::v1 as pb;
use roster_tests::*;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
#[allow(dead_code, reason = "the idle bench uses only the settings and CPU clocks of the shared benchmark code")]
mod common;
use common::{CpuClock, cpu_seconds_of_all, setting};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The checks in flight while a process loads its workspaces.
const IN_FLIGHT: usize = 16;

fn main() {
    if std::env::var("ROSTER_TEST_DATABASE_URL").is_err() {
        // SAFETY: no other thread runs yet.
        unsafe { std::env::set_var("ROSTER_TEST_DATABASE_URL", DEFAULT_URL) };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

/// The id of the `g`-th copied workspace and of its admin: 32 hex digits, as the server's own ids.
fn copy_ids(g: usize) -> (String, String) {
    (format!("a{g:031}"), format!("b{g:031}"))
}

/// Copies the workspace `template` and its users `copies` times, each copy's ids from [`copy_ids`]
/// and its slug `idle-<g>`. Every other column, the password hash among them, is the template's,
/// whatever columns the tables have grown.
async fn copy_workspace(db: &DatabaseConnection, template: &str, copies: usize) {
    for (table, key, overrides) in [
        ("workspaces", "id", "'id', 'a' || lpad(g::text, 31, '0'), 'slug', 'idle-' || g, 'create_request_id', NULL"),
        (
            "users",
            "workspace_id",
            "'id', 'b' || lpad(g::text, 31, '0'), 'workspace_id', 'a' || lpad(g::text, 31, '0'), \
             'create_request_id', NULL",
        ),
    ] {
        db.execute_unprepared(&format!(
            "INSERT INTO {table} SELECT copy.* FROM {table} t, generate_series(1, {copies}) AS g, \
             jsonb_populate_record(t, jsonb_build_object({overrides})) AS copy WHERE t.{key} = '{template}'"
        ))
        .await
        .unwrap_or_else(|e| panic!("copy {table}: {e}"));
    }
    db.execute_unprepared("ANALYZE").await.expect("analyze");
}

/// Transactions committed so far in this database, and in all the server's databases.
async fn commits(db: &DatabaseConnection) -> (i64, i64) {
    let sql = "SELECT (sum(xact_commit) FILTER (WHERE datname = current_database()))::bigint AS ours, \
               sum(xact_commit)::bigint AS all FROM pg_stat_database";
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await;
    let row = row.expect("pg_stat_database").expect("a row");
    (row.try_get("", "ours").expect("ours"), row.try_get("", "all").expect("all"))
}

/// What one idle window cost.
struct Idle {
    rosterd: f64,
    postgres: f64,
    commits: i64,
    other_commits: i64,
}

/// Makes a fresh process hold the workspaces of `pairs` (workspace, user), then measures it idle.
async fn idle(app: &TestApp, db: &DatabaseConnection, pairs: &[(String, String)], seconds: u64) -> Idle {
    let peer = app.spawn_peer_process().await;
    let started = Instant::now();
    let pairs = Arc::new(pairs.to_vec());
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..IN_FLIGHT {
        let (mut authz, pairs) = (peer.authz(), pairs.clone());
        lanes.spawn(async move {
            for (workspace_id, user_id) in pairs.iter().skip(lane).step_by(IN_FLIGHT) {
                let request = pb::CheckPermissionRequest {
                    workspace_id: workspace_id.clone(),
                    user_id: user_id.clone(),
                    permission: "users.read".into(),
                    resource: None,
                };
                let answer = authz.check_permission(service(request)).await.expect("check").into_inner();
                // An admin may read users: any other answer means the copy is not a workspace.
                assert!(answer.decision.expect("decision").allowed, "{workspace_id}: the admin may read users");
            }
        });
    }
    while let Some(lane) = lanes.join_next().await {
        lane.expect("checks");
    }
    let held = pairs.len();
    println!("idle: {held} workspaces held in {:.1} s", started.elapsed().as_secs_f64());
    // Let the loading's last queries and their statistics settle before the window opens: an idle
    // PostgreSQL backend reports its transactions up to 10 s late (PGSTAT_IDLE_INTERVAL).
    tokio::time::sleep(Duration::from_secs(11)).await;

    let rosterd = CpuClock::of(peer.pid().expect("rosterd runs"));
    let (rosterd_before, postgres_before, commits_before) =
        (rosterd.seconds(), cpu_seconds_of_all("postgres"), commits(db).await);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (rosterd_after, postgres_after, commits_after) =
        (rosterd.seconds(), cpu_seconds_of_all("postgres"), commits(db).await);
    // A process that started in the window counts whole; one that exited in it is lost (idle
    // processes keep their connections, so there should be none).
    let postgres = postgres_after.iter().map(|(pid, after)| after - postgres_before.get(pid).unwrap_or(&0.0)).sum();
    let ours = commits_after.0 - commits_before.0;
    Idle {
        rosterd: rosterd_after - rosterd_before,
        postgres,
        commits: ours,
        other_commits: commits_after.1 - commits_before.1 - ours,
    }
}

async fn run() {
    let (few, many) = (setting("BENCH_FEW", 10) as usize, setting("BENCH_MANY", 10_000) as usize);
    let seconds = setting("BENCH_IDLE_SECONDS", 30);
    assert!(0 < few && few <= many, "BENCH_FEW must be between 1 and BENCH_MANY");
    let mut app = spawn_app().await;
    assert!(app.db.is_postgres(), "this benchmark runs on PostgreSQL");
    let template = app.workspace_on_trial("idle").await;
    let db = Database::connect(app.db.url.as_str()).await.expect("connect");
    let started = Instant::now();
    copy_workspace(&db, &template.id, many - 1).await;
    println!("idle: {many} workspaces in the database, copied in {:.1} s", started.elapsed().as_secs_f64());
    // The in-process server polls the database too; only the measured process should.
    app.signal_shutdown();

    let pairs: Vec<(String, String)> =
        std::iter::once((template.id.clone(), template.admin.id.clone())).chain((1..many).map(copy_ids)).collect();
    let refresh = app.config.authz_refresh_ms;
    println!("idle: {seconds} s without calls per size, a fresh release rosterd each, authorization poll {refresh} ms");
    let mut results = Vec::new();
    for held in [few, many] {
        let cost = idle(&app, &db, &pairs[..held], seconds).await;
        println!(
            "idle: {held} held: rosterd {:.2} s CPU, PostgreSQL {:.2} s CPU, {} transactions ({} in other databases)",
            cost.rosterd, cost.postgres, cost.commits, cost.other_commits
        );
        results.push(cost);
    }
    let (f, m) = (&results[0], &results[1]);
    println!(
        "idle: {many}/{few} held: rosterd CPU {:.1}x, PostgreSQL CPU {:.1}x, transactions {:.1}x",
        m.rosterd / f.rosterd,
        m.postgres / f.postgres,
        m.commits as f64 / f.commits as f64
    );
    drop(db);
    let _ = app.stop().await;
}

//! Roster at many tenants: `BENCH_TENANTS` small workspaces (1 to 10 users each, 2 teams, 10
//! conversations of which half resolved) on one PostgreSQL, served by three release `rosterd`
//! processes. See docs/BENCHMARKS.md, "Tenants", for the figures and how each is taken.
//!
//! 1. Data: one workspace made through the API is the template; the others are copied from its
//!    rows in SQL (`jsonb_populate_record`, so every column the tables grow is filled), then
//!    `ANALYZE`. No bcrypt per user: every copy shares the template's password hash.
//! 2. Start-up: `BENCH_STARTS` release processes started one after another, spawn to SERVING.
//! 3. Idle: three fresh processes each check one user of `BENCH_FEW` workspaces, then of all of
//!    them; after each, `BENCH_IDLE_SECONDS` without calls: the CPU of the three processes and of
//!    PostgreSQL, the transactions committed, and each process's RSS against its cache budget.
//! 4. Mixed load: three fresh processes, which first read the workspaces the load draws from (a
//!    steady state), then `BENCH_CLIENTS` closed-loop clients spread over them for
//!    `BENCH_SECONDS`: 95% CheckPermission, 4% AssignConversation, 1% UpdateUser (a rename, or an
//!    agent made supervisor and back), each call's workspace drawn with Zipf popularity (s = 1).
//!    Beside it, one prober per process alternates a check of the most popular workspace (held)
//!    with one of a workspace no process has read (a cold load), and a revoker demotes an admin on
//!    the first process each second and times how long until the other two answer "denied".
//! 5. Queries: `EXPLAIN (ANALYZE, BUFFERS)` of the hot queries and of every background task's, at
//!    this size: the index each uses and its time.
//!
//! Run: `cargo bench -p roster-tests --bench tenants` (100,000 workspaces; about 13 minutes here);
//! `BENCH_TENANTS=10000` runs in under 10 minutes. PostgreSQL at `ROSTER_TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`); each run loads a new database.
//! Settings: `BENCH_TENANTS` (100000), `BENCH_FEW` (100), `BENCH_IDLE_SECONDS` (30),
//! `BENCH_SECONDS` (30), `BENCH_CLIENTS` (24), `BENCH_STARTS` (5), `BENCH_CACHE_MIB` (the
//! server's default budget when unset).

use roster_proto::v1 as pb;
use roster_tests::*;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[path = "common/mod.rs"]
#[allow(dead_code, reason = "the tenants bench uses only part of the shared benchmark code")]
mod common;
use common::{CpuClock, cpu_seconds_of_all, median, setting, team};

/// The checks in flight per process while it reads its workspaces.
const IN_FLIGHT: usize = 16;
/// The processes serving the load.
const PROCESSES: usize = 3;

fn main() {
    common::on_postgres(run);
}

/// The users of the `g`-th copied workspace: 1 to 10, spread evenly (the same formula as the SQL).
fn users_of(g: usize) -> usize {
    1 + (g * 7919) % 10
}

/// Ids of the copies, 32 hex digits as the server's own: workspace `g`, its user `k` (the first is
/// its admin, the others agents), its team `t`.
fn workspace_id(g: usize) -> String {
    format!("a{g:031}")
}

fn user_id(g: usize, k: usize) -> String {
    format!("b{g:023}{k:08}")
}

fn team_id(g: usize, t: usize) -> String {
    format!("c{g:023}{t:08}")
}

/// The same ids in SQL, `g`, `k` and `t` being integer expressions.
const WORKSPACE: &str = "'a' || lpad(g::text, 31, '0')";
const USERS_OF: &str = "LATERAL (SELECT 1 + (g * 7919) % 10 AS n) size";

fn sql_user(k: &str) -> String {
    format!("'b' || lpad(g::text, 23, '0') || lpad(({k})::text, 8, '0')")
}

fn sql_team(t: &str) -> String {
    format!("'c' || lpad(g::text, 23, '0') || lpad(({t})::text, 8, '0')")
}

async fn exec(db: &DatabaseConnection, what: &str, sql: &str) {
    let started = Instant::now();
    let result = db.execute_unprepared(sql).await.unwrap_or_else(|e| panic!("{what}: {e}\n{sql}"));
    println!("tenants: {what}: {} rows in {:.1} s", result.rows_affected(), started.elapsed().as_secs_f64());
}

async fn scalar<T: sea_orm::TryGetable>(db: &DatabaseConnection, sql: &str) -> T {
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await;
    row.unwrap_or_else(|e| panic!("{sql}: {e}")).expect("a row").try_get_by_index(0).expect("a value")
}

/// The template: a workspace made through the API with an agent in a load-balanced team and one
/// assigned conversation, so that every table the copies fill has a row to copy.
struct Template {
    workspace: String,
    agent: String,
    team: String,
    role: String,
}

async fn template(app: &TestApp) -> Template {
    let workspace = app.workspace("tenants-template").await;
    let (team, agents) = team(app, &workspace.id, "Template", 1).await;
    let request = pb::AssignConversationRequest {
        workspace_id: workspace.id.clone(),
        conversation_id: "template".into(),
        team_id: team.clone(),
        ..Default::default()
    };
    app.assignments().assign_conversation(service(request)).await.expect("a template conversation");
    let request = pb::CreateRoleRequest {
        workspace_id: workspace.id.clone(),
        name: "Reviewer".into(),
        grants: vec![pb::Grant { permission: "conversations.read".into(), scope: pb::Scope::All as i32 }],
        ..Default::default()
    };
    let role = app.roles().create_role(service(request)).await.expect("a template role").into_inner().role;
    Template { workspace: workspace.id, agent: agents[0].clone(), team, role: role.expect("role").id }
}

/// Copies the template `tenants` times; see the module documentation.
async fn load(db: &DatabaseConnection, t: &Template, tenants: usize) {
    let started = Instant::now();
    let copy = |table: &str, alias: &str, series: &str, overrides: &str, template: &str| {
        format!(
            "INSERT INTO {table} SELECT {alias}.* FROM {table} t, generate_series(1, {tenants}) AS g{series}, \
             jsonb_populate_record(t, jsonb_build_object({overrides})) AS {alias} WHERE {template}"
        )
    };
    let plan = "CASE WHEN size.n = 1 THEN 'FREE_TRIAL' WHEN size.n <= 5 THEN 'GROWTH' ELSE 'SCALE' END";
    let sql = copy(
        "workspaces",
        "w",
        &format!(", {USERS_OF}"),
        &format!(
            "'id', {WORKSPACE}, 'slug', 'tenant-' || g, 'name', 'Tenant ' || g, 'create_request_id', NULL, \
             'plan', {plan}, 'extra_seats', 0"
        ),
        &format!("t.id = '{}'", t.workspace),
    );
    exec(db, "workspaces", &sql).await;
    // Every fifth workspace has a custom role, held by its last user when it has three or more.
    let sql = copy(
        "roles",
        "r",
        "",
        &format!("'id', 'd' || lpad(g::text, 31, '0'), 'workspace_id', {WORKSPACE}"),
        &format!("t.id = '{}' AND g % 5 = 0", t.role),
    );
    exec(db, "custom roles", &sql).await;
    // The first user is the admin; one workspace in a hundred has everyone away, and a queue.
    let sql = copy(
        "users",
        "u",
        &format!(", {USERS_OF}, generate_series(1, size.n) AS k"),
        &format!(
            "'id', {}, 'workspace_id', {WORKSPACE}, 'email', 'u' || k || '@w' || g || '.example', \
             'full_name', 'User ' || k, 'role_id', CASE WHEN k = 1 THEN 'admin' \
             WHEN g % 5 = 0 AND k = size.n AND k >= 3 THEN 'd' || lpad(g::text, 31, '0') ELSE 'agent' END, \
             'availability', CASE WHEN g % 100 = 0 THEN 'AWAY' ELSE 'ONLINE' END, 'create_request_id', NULL, \
             'reactivate_request_id', NULL, 'open_conversations', 0, 'last_assigned_at', NULL",
            sql_user("k")
        ),
        &format!("t.id = '{}'", t.agent),
    );
    exec(db, "users", &sql).await;
    let sql = copy(
        "teams",
        "x",
        ", generate_series(1, 2) AS tn",
        &format!(
            "'id', {}, 'workspace_id', {WORKSPACE}, 'name', 'Team ' || tn, 'name_key', 'team ' || tn, \
             'assignments', 10, 'last_position', NULL, 'next_position', 11",
            sql_team("tn")
        ),
        &format!("t.id = '{}'", t.team),
    );
    exec(db, "teams", &sql).await;
    // User k is in team 1 when odd, team 2 when even.
    let sql = copy(
        "team_members",
        "m",
        &format!(", {USERS_OF}, generate_series(1, size.n) AS k"),
        &format!(
            "'team_id', {}, 'user_id', {}, 'workspace_id', {WORKSPACE}, 'position', k, 'max_open', NULL",
            sql_team("(k - 1) % 2 + 1"),
            sql_user("k")
        ),
        &format!("t.team_id = '{}' AND t.user_id = '{}'", t.team, t.agent),
    );
    exec(db, "team members", &sql).await;
    // Conversation j is its workspace's user 1 + (j - 1) % n's, in that user's team; the first
    // five are resolved.
    let sql = copy(
        "conversations",
        "c",
        &format!(", {USERS_OF}, generate_series(1, 10) AS j, LATERAL (SELECT 1 + (j - 1) % size.n AS k) who"),
        &format!(
            "'workspace_id', {WORKSPACE}, 'id', 'conversation-' || j, 'team_id', {}, 'assignee_id', {}, \
             'status', CASE WHEN j <= 5 THEN 'RESOLVED' ELSE 'OPEN' END, \
             'resolved_at', CASE WHEN j <= 5 THEN t.assigned_at END, 'sequence', j",
            sql_team("(who.k - 1) % 2 + 1"),
            sql_user("who.k")
        ),
        &format!("t.workspace_id = '{}' AND t.id = 'template'", t.workspace),
    );
    exec(db, "conversations", &sql).await;
    let sql = copy(
        "conversations",
        "c",
        "",
        &format!(
            "'workspace_id', {WORKSPACE}, 'id', 'queued', 'team_id', {}, 'assignee_id', NULL, 'assigned_at', NULL, \
             'sequence', NULL",
            sql_team("1")
        ),
        &format!("t.workspace_id = '{}' AND t.id = 'template' AND g % 100 = 0", t.workspace),
    );
    exec(db, "queued conversations", &sql).await;
    exec(
        db,
        "open conversations counted",
        "UPDATE users SET open_conversations = c.n FROM (SELECT assignee_id, count(*) AS n FROM conversations \
         WHERE status = 'OPEN' AND assignee_id IS NOT NULL GROUP BY assignee_id) c WHERE users.id = c.assignee_id",
    )
    .await;
    // A session for every other admin, the emails sent to the template's people for every
    // workspace, and five events per workspace from yesterday: the tables the background tasks read.
    let sql = copy(
        "sessions",
        "s",
        "",
        &format!("'token_hash', md5(g::text), 'user_id', {}, 'workspace_id', {WORKSPACE}", sql_user("1")),
        &format!("t.workspace_id = '{}' AND g % 2 = 0", t.workspace),
    );
    exec(db, "sessions", &sql).await;
    let sql = copy(
        "outbox",
        "o",
        "",
        &format!("'id', md5(g || t.id), 'workspace_id', {WORKSPACE}, 'status', 'SENT', 'link', NULL"),
        &format!("t.workspace_id = '{}'", t.workspace),
    );
    exec(db, "sent emails", &sql).await;
    let sql = format!(
        "INSERT INTO events (txid, workspace_id, event_type, actor, request_id, target, details, created_at) \
         SELECT e.txid, {WORKSPACE}, e.event_type, e.actor, '', e.target, e.details, e.created_at - 86400000 \
         FROM generate_series(1, {tenants}) AS g, LATERAL (SELECT * FROM events WHERE workspace_id = '{}' \
         ORDER BY txid, id LIMIT 5) e",
        t.workspace
    );
    exec(db, "events", &sql).await;
    exec(db, "analyze", "ANALYZE").await;
    let size: String = scalar(db, "SELECT pg_size_pretty(pg_database_size(current_database()))").await;
    let counts: String = scalar(
        db,
        "SELECT format('%s workspaces, %s users, %s teams, %s conversations (%s resolved)', \
         (SELECT count(*) FROM workspaces), (SELECT count(*) FROM users), (SELECT count(*) FROM teams), \
         (SELECT count(*) FROM conversations), (SELECT count(*) FROM conversations WHERE status = 'RESOLVED'))",
    )
    .await;
    println!("tenants: {counts}; database {size}; loaded in {:.0} s", started.elapsed().as_secs_f64());
}

/// Transactions committed so far in this database.
async fn commits(db: &DatabaseConnection) -> i64 {
    scalar(db, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").await
}

/// A process's resident memory, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

fn check(workspace_id: String, user_id: String, permission: &str) -> tonic::Request<pb::CheckPermissionRequest> {
    service(pb::CheckPermissionRequest { workspace_id, user_id, permission: permission.into(), resource: None })
}

/// Three fresh processes on the database.
async fn processes(app: &TestApp, cache_mib: Option<u64>) -> Vec<PeerProcess> {
    let args = cache_mib.map(|mib| vec!["--authz-cache-mib".to_owned(), mib.to_string()]).unwrap_or_default();
    let mut peers = Vec::new();
    for _ in 0..PROCESSES {
        peers.push(app.spawn_peer_process_with(PeerOptions { args: args.clone(), ..Default::default() }).await);
    }
    peers
}

/// Each process checks the admin of workspaces `1..=count` once, `IN_FLIGHT` at a time, all at once.
async fn hold(peers: &[PeerProcess], count: usize) -> Duration {
    let started = Instant::now();
    let mut lanes = tokio::task::JoinSet::new();
    for peer in peers {
        for lane in 0..IN_FLIGHT {
            let mut authz = peer.authz();
            lanes.spawn(async move {
                for g in (1..=count).skip(lane).step_by(IN_FLIGHT) {
                    let answer = authz.check_permission(check(workspace_id(g), user_id(g, 1), "users.read")).await;
                    let decision = answer.expect("check").into_inner().decision.expect("decision");
                    assert!(decision.allowed, "workspace {g}: its admin may read users");
                }
            });
        }
    }
    while let Some(lane) = lanes.join_next().await {
        lane.expect("checks");
    }
    started.elapsed()
}

/// What an idle window cost, and what the processes held after it.
struct Idle {
    rosterd: f64,
    postgres: f64,
    commits: i64,
    rss: Vec<f64>,
    held: f64,
    cache_mib: f64,
    evictions: f64,
}

async fn idle(app: &TestApp, db: &DatabaseConnection, count: usize, seconds: u64, cache_mib: Option<u64>) -> Idle {
    let peers = processes(app, cache_mib).await;
    let took = hold(&peers, count).await;
    println!("tenants: idle: {PROCESSES} processes each read {count} workspaces in {:.1} s", took.as_secs_f64());
    // An idle PostgreSQL backend reports its transactions up to 10 s late (PGSTAT_IDLE_INTERVAL).
    tokio::time::sleep(Duration::from_secs(11)).await;
    let clocks: Vec<CpuClock> = peers.iter().map(|p| CpuClock::of(p.pid().expect("running"))).collect();
    let rosterd_before: f64 = clocks.iter().map(CpuClock::seconds).sum();
    let (postgres_before, commits_before) = (cpu_seconds_of_all("postgres"), commits(db).await);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let rosterd_after: f64 = clocks.iter().map(CpuClock::seconds).sum();
    let (postgres_after, commits_after) = (cpu_seconds_of_all("postgres"), commits(db).await);
    let postgres = postgres_after.iter().map(|(pid, after)| after - postgres_before.get(pid).unwrap_or(&0.0)).sum();
    let rss = peers.iter().map(|p| rss_mib(p.pid().expect("running"))).collect();
    let (mut held, mut bytes, mut evictions) = (0.0, 0.0, 0.0);
    for peer in &peers {
        let scrape = metrics::scrape(peer.metrics_addr).await;
        held += scrape.sum("roster_authz_cache_workspaces", &[]);
        bytes += scrape.sum("roster_authz_cache_bytes", &[]);
        evictions += scrape.sum("roster_authz_cache_evictions_total", &[]);
    }
    let n = PROCESSES as f64;
    Idle {
        rosterd: rosterd_after - rosterd_before,
        postgres,
        commits: commits_after - commits_before,
        rss,
        held: held / n,
        cache_mib: bytes / n / f64::from(1 << 20),
        evictions: evictions / n,
    }
}

/// Zipf popularity (s = 1) over ranks `1..=n`: a rank from a uniform draw in [0, 1).
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let mut total = 0.0;
        let mut cumulative: Vec<f64> = (1..=n)
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        cumulative.iter_mut().for_each(|c| *c /= total);
        Zipf { cumulative }
    }

    fn rank(&self, uniform: f64) -> usize {
        self.cumulative.partition_point(|&c| c < uniform).min(self.cumulative.len() - 1) + 1
    }
}

/// A small, fast random number generator (splitmix64): the load's draws, not secrets.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Check,
    Assign,
    Change,
    HeldCheck,
    ColdCheck,
}

type Timings = HashMap<Kind, Vec<Duration>>;

/// One call of the mixed load, on workspace `g`.
async fn mixed_call(channel: Channel, draws: &mut Draws, g: usize, name: &str) -> Kind {
    let n = users_of(g);
    let roll = draws.below(100);
    if roll < 95 {
        let permission = ["users.read", "conversations.read", "users.manage", "teams.manage"][draws.below(4)];
        let mut client = pb::authorization_service_client::AuthorizationServiceClient::new(channel);
        let k = 1 + draws.below(n);
        client.check_permission(check(workspace_id(g), user_id(g, k), permission)).await.expect("check");
        Kind::Check
    } else if roll < 99 {
        let request = pb::AssignConversationRequest {
            workspace_id: workspace_id(g),
            conversation_id: name.to_owned(),
            team_id: team_id(g, 1),
            ..Default::default()
        };
        let mut client = pb::assignment_service_client::AssignmentServiceClient::new(channel);
        client.assign_conversation(service(request)).await.expect("assign");
        Kind::Assign
    } else {
        // Users 3 and up go between agent and supervisor; user 2 is the revoker's.
        let mut client = pb::user_service_client::UserServiceClient::new(channel);
        let (k, path, user) = if n >= 3 && draws.below(2) == 0 {
            let role = ["agent", "supervisor"][draws.below(2)];
            let k = 3 + draws.below(n - 2);
            (k, "role", pb::User { id: user_id(g, k), role: role.into(), ..Default::default() })
        } else {
            let k = 1 + draws.below(n);
            (
                k,
                "full_name",
                pb::User { id: user_id(g, k), full_name: format!("User {k} {name}"), ..Default::default() },
            )
        };
        let request = pb::UpdateUserRequest {
            workspace_id: workspace_id(g),
            user: Some(user),
            update_mask: Some(prost_types::FieldMask { paths: vec![path.into()] }),
        };
        client.update_user(service(request)).await.unwrap_or_else(|e| panic!("update user {k} of {g}: {e:?}"));
        Kind::Change
    }
}

/// What the mixed load measured.
struct Mixed {
    timings: Timings,
    elapsed: Duration,
    revocations: Vec<Duration>,
    rosterd: f64,
    postgres: f64,
    /// The authorization cache's reads of the database in the window: loads and catch-ups.
    reads: f64,
}

async fn mixed(app: &TestApp, tenants: usize, seconds: u64, clients: usize, cache_mib: Option<u64>) -> Mixed {
    let peers = processes(app, cache_mib).await;
    // The coldest tenth (at most 5,000) is kept out of the load: the probers' cold loads.
    let cold = (tenants / 10).min(5_000);
    let zipf = Arc::new(Zipf::new(tenants - cold));
    // The revoker's workspaces: the most popular ones with an agent to promote and demote.
    let revoked: Vec<usize> = (1..=tenants - cold).filter(|&g| users_of(g) >= 2).take(20).collect();
    // Steady state: every process holds what the load asks for (within its budget) before the
    // window opens.
    let took = hold(&peers, tenants - cold).await;
    println!(
        "tenants: mixed load: {PROCESSES} processes each read {} workspaces in {:.1} s",
        tenants - cold,
        took.as_secs_f64()
    );
    let reads_before = cache_reads(&peers).await;
    let channels: Vec<Channel> = peers.iter().map(|p| p.channel.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let clocks: Vec<CpuClock> = peers.iter().map(|p| CpuClock::of(p.pid().expect("running"))).collect();
    let rosterd_before: f64 = clocks.iter().map(CpuClock::seconds).sum();
    let postgres_before = cpu_seconds_of_all("postgres");
    let started = Instant::now();

    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let (channel, zipf) = (channels[client % PROCESSES].clone(), zipf.clone());
        tasks.spawn(async move {
            let mut draws = Draws(client as u64 + 1);
            let mut timings = Timings::new();
            let mut n = 0;
            while Instant::now() < deadline {
                let g = zipf.rank(draws.uniform());
                let name = format!("mixed-{client}-{n}");
                let t = Instant::now();
                let kind = mixed_call(channel.clone(), &mut draws, g, &name).await;
                timings.entry(kind).or_default().push(t.elapsed());
                n += 1;
            }
            (timings, Vec::new())
        });
    }
    // The probers: a held workspace, then one no process has read, in turn.
    let next_cold = Arc::new(AtomicU64::new((tenants - cold + 1) as u64));
    for channel in channels.clone() {
        let next_cold = next_cold.clone();
        tasks.spawn(async move {
            let mut authz = pb::authorization_service_client::AuthorizationServiceClient::new(channel);
            let mut timings = Timings::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                authz.check_permission(check(workspace_id(1), user_id(1, 1), "users.read")).await.expect("check");
                timings.entry(Kind::HeldCheck).or_default().push(t.elapsed());
                let g = next_cold.fetch_add(1, Ordering::Relaxed) as usize;
                if g > tenants {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let t = Instant::now();
                authz.check_permission(check(workspace_id(g), user_id(g, 1), "users.read")).await.expect("check");
                timings.entry(Kind::ColdCheck).or_default().push(t.elapsed());
            }
            (timings, Vec::new())
        });
    }
    // The revoker: once a second, user 2 of a popular workspace is made admin and, once every
    // process says so, demoted to agent on the first process; then the others are asked until
    // they say no.
    let revoker_channels = channels.clone();
    tasks.spawn(async move {
        let mut revocations = Vec::new();
        let mut round = 0;
        while Instant::now() + Duration::from_secs(2) < deadline {
            let g = revoked[round % revoked.len()];
            round += 1;
            let set_role = |role: &str| pb::UpdateUserRequest {
                workspace_id: workspace_id(g),
                user: Some(pb::User { id: user_id(g, 2), role: role.into(), ..Default::default() }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["role".into()] }),
            };
            let mut users = pb::user_service_client::UserServiceClient::new(revoker_channels[0].clone());
            users.update_user(service(set_role("admin"))).await.expect("promote");
            let allowed = move |channel: Channel| async move {
                let mut authz = pb::authorization_service_client::AuthorizationServiceClient::new(channel);
                let answer = authz.check_permission(check(workspace_id(g), user_id(g, 2), "users.manage")).await;
                answer.expect("check").into_inner().decision.expect("decision").allowed
            };
            for channel in &revoker_channels {
                let until = Instant::now() + Duration::from_secs(5);
                while !allowed(channel.clone()).await {
                    assert!(Instant::now() < until, "a promotion not seen in 5 s");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let t = Instant::now();
            users.update_user(service(set_role("agent"))).await.expect("demote");
            let mut waits = tokio::task::JoinSet::new();
            for channel in &revoker_channels[1..] {
                let channel = channel.clone();
                waits.spawn(async move {
                    while allowed(channel.clone()).await {
                        assert!(t.elapsed() < Duration::from_secs(10), "a revocation not seen in 10 s");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    t.elapsed()
                });
            }
            while let Some(wait) = waits.join_next().await {
                revocations.push(wait.expect("revocation"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (Timings::new(), revocations)
    });
    let mut timings = Timings::new();
    let mut revocations = Vec::new();
    while let Some(task) = tasks.join_next().await {
        let (some, revoked) = task.expect("load task");
        for (kind, mut values) in some {
            timings.entry(kind).or_default().append(&mut values);
        }
        revocations.extend(revoked);
    }
    let elapsed = started.elapsed();
    let rosterd = clocks.iter().map(CpuClock::seconds).sum::<f64>() - rosterd_before;
    let postgres = cpu_seconds_of_all("postgres")
        .iter()
        .map(|(pid, after)| after - postgres_before.get(pid).unwrap_or(&0.0))
        .sum();
    let reads = cache_reads(&peers).await - reads_before;
    Mixed { timings, elapsed, revocations, rosterd, postgres, reads }
}

/// The authorization cache's reads of the database so far, all processes together.
async fn cache_reads(peers: &[PeerProcess]) -> f64 {
    let mut reads = 0.0;
    for peer in peers {
        reads += metrics::scrape(peer.metrics_addr).await.sum("roster_authz_cache_reads_total", &[]);
    }
    reads
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    values.sort();
    values[((values.len() as f64 * p) as usize).min(values.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The hot queries and every background task's, with values of this data set: the same SQL the
/// server sends, its bound values inlined; `cursor` is a position in the feed, `(txid, id)`.
fn queries(tenants: usize, cursor: &str) -> Vec<(&'static str, String)> {
    let g = tenants / 2;
    let (w, u, t) = (workspace_id(g), user_id(g, 1), team_id(g, 1));
    let now = "(extract(epoch from now()) * 1000)::bigint";
    vec![
        (
            "check, cold load: version and members",
            format!(
                "SELECT workspaces.authz_version, workspaces.roles_version, users.id, users.role_id, users.status \
                 FROM workspaces LEFT JOIN users ON users.workspace_id = workspaces.id WHERE workspaces.id = '{w}'"
            ),
        ),
        ("check, cold load: roles", format!("SELECT * FROM roles WHERE workspace_id IS NULL OR workspace_id = '{w}'")),
        (
            "check, catching up: members changed",
            format!(
                "SELECT workspaces.authz_version, workspaces.roles_version, users.id, users.role_id, users.status \
                 FROM workspaces LEFT JOIN users ON users.workspace_id = workspaces.id \
                 AND users.authz_version > workspaces.authz_version - 1 WHERE workspaces.id = '{w}'"
            ),
        ),
        ("login: the workspace", format!("SELECT * FROM workspaces WHERE slug = 'tenant-{g}'")),
        ("login: the user", format!("SELECT * FROM users WHERE workspace_id = '{w}' AND email = 'u1@w{g}.example'")),
        ("session", format!("SELECT * FROM sessions WHERE token_hash = md5('{g}')")),
        ("seats in use", format!("SELECT count(*) FROM users WHERE workspace_id = '{w}' AND status = 'ACTIVE'")),
        ("ListUsers page", format!("SELECT * FROM users WHERE workspace_id = '{w}' ORDER BY email LIMIT 51")),
        ("assignment: the team", format!("SELECT * FROM teams WHERE id = '{t}' FOR UPDATE")),
        ("assignment: its members", format!("SELECT * FROM team_members WHERE team_id = '{t}'")),
        (
            "assignment: the conversation",
            format!("SELECT * FROM conversations WHERE workspace_id = '{w}' AND id = 'conversation-7'"),
        ),
        (
            "ListConversationAssignments by assignee",
            format!(
                "SELECT * FROM conversations WHERE workspace_id = '{w}' AND status = 'OPEN' AND assignee_id = '{u}' \
                 ORDER BY id LIMIT 51"
            ),
        ),
        (
            "ListConversationAssignments by team",
            format!(
                "SELECT * FROM conversations WHERE workspace_id = '{w}' AND status = 'OPEN' AND team_id = '{t}' \
                 ORDER BY id LIMIT 51"
            ),
        ),
        ("ListTeams by member", format!("SELECT * FROM team_members WHERE user_id = '{u}'")),
        (
            "Watch / ListEvents of a workspace",
            format!(
                "SELECT * FROM events WHERE workspace_id = '{w}' AND (txid, id) > (0, 0) ORDER BY txid, id LIMIT 100"
            ),
        ),
        (
            "background, every 200 ms: the feed's head",
            "SELECT txid, id FROM events WHERE txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
             ORDER BY txid DESC, id DESC LIMIT 1"
                .into(),
        ),
        (
            "background, every 200 ms: workspaces changed",
            format!(
                "SELECT DISTINCT workspace_id FROM events WHERE (txid, id) > {cursor} \
                 AND event_type NOT LIKE 'conversation.%'"
            ),
        ),
        (
            "background, every 5 s: queues of workspaces changed",
            format!(
                "SELECT DISTINCT workspace_id FROM conversations WHERE status = 'OPEN' AND assignee_id IS NULL \
                 AND workspace_id IN (SELECT workspace_id FROM events WHERE (txid, id) > {cursor})"
            ),
        ),
        (
            "background, at start: every queue",
            "SELECT DISTINCT workspace_id FROM conversations WHERE status = 'OPEN' AND assignee_id IS NULL".into(),
        ),
        (
            "background, every 2 s: the outbox",
            format!(
                "SELECT * FROM outbox WHERE status = 'PENDING' AND next_attempt_at <= {now} \
                 AND lease_until <= {now} ORDER BY next_attempt_at LIMIT 10"
            ),
        ),
        ("background, every 10 min: expired sessions", format!("DELETE FROM sessions WHERE expires_at <= {now}")),
        (
            "background, every 16.8 h: event retention",
            format!(
                "SELECT txid, id FROM events WHERE created_at < {now} - 604800000 \
                 ORDER BY txid DESC, id DESC LIMIT 1"
            ),
        ),
        (
            "background, after logins: old login attempts",
            format!("DELETE FROM login_attempts WHERE started_at < {now} - 960000"),
        ),
    ]
}

/// EXPLAIN ANALYZE of each query, rolled back: its plan's scans and its time.
async fn explain(db: &DatabaseConnection, tenants: usize) {
    println!("tenants: queries at this size (EXPLAIN ANALYZE; scans and execution time):");
    // A cursor as the background tasks hold it: a few changes behind the head.
    let cursor: String =
        scalar(db, "SELECT format('(%s, %s)', txid, id) FROM events ORDER BY txid DESC, id DESC LIMIT 1 OFFSET 20")
            .await;
    for (name, sql) in queries(tenants, &cursor) {
        db.execute_unprepared("BEGIN").await.expect("begin");
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"),
            ))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{sql}"));
        db.execute_unprepared("ROLLBACK").await.expect("rollback");
        let lines: Vec<String> = rows.iter().map(|r| r.try_get_by_index::<String>(0).expect("plan line")).collect();
        let scans: Vec<String> = lines
            .iter()
            .filter(|l| l.contains(" Scan ") || l.contains("Seq Scan"))
            .map(|l| {
                let l = l.trim().trim_start_matches("->").trim();
                l.split("  (").next().unwrap_or(l).to_owned()
            })
            .collect();
        let time = lines.iter().find_map(|l| l.strip_prefix("Execution Time: ")).unwrap_or("?");
        println!("  {name}: {time}; {}", scans.join("; "));
    }
}

async fn run() {
    let tenants = setting("BENCH_TENANTS", 100_000) as usize;
    let few = setting("BENCH_FEW", 100) as usize;
    let idle_seconds = setting("BENCH_IDLE_SECONDS", 30);
    let seconds = setting("BENCH_SECONDS", 30);
    let clients = setting("BENCH_CLIENTS", 24) as usize;
    let starts = setting("BENCH_STARTS", 5) as usize;
    let cache_mib = std::env::var("BENCH_CACHE_MIB").ok().and_then(|v| v.parse().ok());
    assert!(0 < few && few <= tenants && tenants >= 100, "BENCH_TENANTS at least 100, BENCH_FEW between 1 and it");
    // Built now, not within the first start timed.
    rosterd_binary();
    let mut app = spawn_app().await;
    assert!(app.db.is_postgres(), "this benchmark runs on PostgreSQL");
    let template = template(&app).await;
    // Only the measured processes should poll the database.
    app.signal_shutdown();
    let db = Database::connect(app.db.url.as_str()).await.expect("connect");
    load(&db, &template, tenants).await;

    let mut startups = Vec::new();
    for _ in 0..starts {
        let started = Instant::now();
        let mut peer = app.spawn_peer_process().await;
        startups.push(ms(started.elapsed()));
        peer.terminate();
        peer.wait(Duration::from_secs(10)).await.expect("stopped");
    }
    let max = startups.iter().copied().fold(0.0, f64::max);
    println!("tenants: start-up to SERVING: median {:.0} ms, max {max:.0} ms over {starts}", median(startups));

    let budget = cache_mib.map_or("the default".to_owned(), |mib| format!("{mib} MiB"));
    println!("tenants: idle {idle_seconds} s after reading {few}, then {tenants} workspaces; cache budget {budget}");
    let mut results = Vec::new();
    for count in [few, tenants] {
        let cost = idle(&app, &db, count, idle_seconds, cache_mib).await;
        let rss: Vec<String> = cost.rss.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "tenants: idle with {count} read: rosterd {:.2} s CPU (3 processes), PostgreSQL {:.2} s CPU, \
             {} transactions; RSS {} MiB; cache {:.0} workspaces, {:.0} MiB estimated, {:.0} evicted (per process)",
            cost.rosterd,
            cost.postgres,
            cost.commits,
            rss.join(", "),
            cost.held,
            cost.cache_mib,
            cost.evictions
        );
        results.push(cost);
    }
    let (f, m) = (&results[0], &results[1]);
    println!(
        "tenants: idle {tenants}/{few}: rosterd CPU {:.2}x, PostgreSQL CPU {:.2}x, transactions {:.2}x",
        m.rosterd / f.rosterd,
        m.postgres / f.postgres,
        m.commits as f64 / f.commits as f64
    );

    let mut load = mixed(&app, tenants, seconds, clients, cache_mib).await;
    let calls: usize = load.timings.iter().filter(|(k, _)| **k <= Kind::Change).map(|(_, v)| v.len()).sum();
    let rate = calls as f64 / load.elapsed.as_secs_f64();
    println!(
        "tenants: mixed load, {clients} clients over {PROCESSES} processes for {seconds} s: {rate:.0} calls/s; \
         server CPU {:.0} µs a call (rosterd), PostgreSQL {:.0} µs",
        load.rosterd / calls as f64 * 1e6,
        load.postgres / calls as f64 * 1e6
    );
    println!("tenants:   authorization cache reads of the database: {:.0}/s", load.reads / load.elapsed.as_secs_f64());
    let mut kinds: Vec<Kind> = load.timings.keys().copied().collect();
    kinds.sort();
    for kind in kinds {
        let values = load.timings.get_mut(&kind).expect("a kind");
        let count = values.len();
        let (p50, p99) = (ms(percentile(values, 0.5)), ms(percentile(values, 0.99)));
        println!(
            "tenants:   {kind:?}: {count} calls ({:.0}/s), p50 {p50:.2} ms, p99 {p99:.2} ms",
            count as f64 / load.elapsed.as_secs_f64()
        );
    }
    if load.revocations.is_empty() {
        println!("tenants: no revocation measured (BENCH_SECONDS too short)");
    } else {
        let count = load.revocations.len();
        let (p50, p99) = (percentile(&mut load.revocations, 0.5), percentile(&mut load.revocations, 0.99));
        let max = load.revocations.iter().max().copied().unwrap_or_default();
        println!(
            "tenants: revocation seen by the other processes: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({count})",
            ms(p50),
            ms(p99),
            ms(max)
        );
    }
    explain(&db, tenants).await;
    drop(db);
    let _ = app.stop().await;
}

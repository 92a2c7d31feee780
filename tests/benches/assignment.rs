//! The Teams/assignment figures (see docs/BENCHMARKS.md), on PostgreSQL, each measured side by
//! side in one run:
//!
//! 1. AssignConversation throughput with 16 concurrent clients against pgbench's default script
//!    (TPC-B-like, scale factor 10, the same 16 clients) on the same PostgreSQL server. The calls go
//!    to the release `rosterd` binary in its own process. Rounds alternate; medians are compared.
//! 2. Latency of a load-balanced AssignConversation and of ListConversationAssignments (by assignee
//!    and by team, a page of 50) with 100k open conversations in the team against 1k.
//!
//! Run: `cargo build --release -p rosterd && cargo bench -p roster-tests --bench assignment`.
//! Needs PostgreSQL (`ROSTER_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`)
//! and `pgbench` on the PATH (Debian's postgresql-contrib / postgresql-client).
//! Settings: `BENCH_SECONDS` (per phase, default 10), `BENCH_ROUNDS` (default 3).

use roster_proto::v1 as pb;
use roster_tests::*;
use sea_orm::{ConnectionTrait, Database};
use std::time::Instant;
use tonic::transport::Channel;

#[path = "common/mod.rs"]
mod common;
use common::{Load, assign_load, closed_loop, median, setting, team};

/// The clients on both sides, as the issue sets it; `BENCH_CLIENTS` changes it for exploring.
fn clients() -> usize {
    setting("BENCH_CLIENTS", 16) as usize
}

fn main() {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("machine: {cores} cores");
    common::on_postgres(run);
}

/// pgbench's default script with [`clients`] clients for `seconds` on `url`: transactions per second.
fn pgbench(url: &str, seconds: u64) -> f64 {
    let output = std::process::Command::new("pgbench")
        .args(["-n", "-c", &clients().to_string(), "-j", "2", "-T", &seconds.to_string(), url])
        .output()
        .expect("run pgbench (apt-get install postgresql-contrib)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "pgbench failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    text.lines()
        .find_map(|line| line.strip_prefix("tps = ").and_then(|rest| rest.split_whitespace().next()?.parse().ok()))
        .unwrap_or_else(|| panic!("no tps in pgbench's output: {text}"))
}

async fn run() {
    let seconds = setting("BENCH_SECONDS", 10);
    let rounds = setting("BENCH_ROUNDS", 3) as usize;
    let app = spawn_app().await;
    assert!(app.db.is_postgres(), "this benchmark runs on PostgreSQL");
    let ws = app.workspace("bench").await;
    // Seats for every agent below.
    let seats = pb::SetExtraSeatsRequest { workspace_id: ws.id.clone(), extra_seats: 1_000 };
    app.billing().set_extra_seats(service(seats)).await.expect("seats");

    // 1. Throughput.
    let mut teams = Vec::new();
    for i in 0..clients() {
        teams.push(team(&app, &ws.id, &format!("T{i:02}"), 4).await.0);
    }
    let peer = app.spawn_peer_process().await;
    let channels: Vec<Channel> =
        (0..4).map(|_| Channel::from_shared(peer.uri.clone()).expect("uri").connect_lazy()).collect();
    let pgbench_db = TestDatabase::fresh().await;
    let init = std::process::Command::new("pgbench").args(["-i", "-q", "-s", "10", &pgbench_db.url]).output();
    let init = init.expect("run pgbench -i (apt-get install postgresql-contrib)");
    assert!(init.status.success(), "pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
    assign_load(&channels, clients(), &ws.id, &teams, "warm", 2).await;
    let (mut pg, mut spread, mut one) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        pg.push(pgbench(&pgbench_db.url, seconds));
        spread.push(assign_load(&channels, clients(), &ws.id, &teams, &format!("s{round}"), seconds).await.rate());
        one.push(assign_load(&channels, clients(), &ws.id, &teams[..1], &format!("o{round}"), seconds).await.rate());
        let clients = clients();
        println!(
            "round {round}: pgbench {:.0} tps, AssignConversation over {clients} teams {:.0}/s, into one team {:.0}/s",
            pg[round], spread[round], one[round]
        );
    }
    let (pg, spread, one) = (median(pg), median(spread), median(one));
    let clients = clients();
    println!(
        "throughput medians ({clients} clients, {seconds} s each): pgbench {pg:.0} tps; AssignConversation {spread:.0}/s \
         spread over {clients} teams, ratio {:.2} (target >= 0.5); {one:.0}/s into one team, ratio {:.2}",
        spread / pg,
        one / pg
    );

    // 2. Latency with 1k and 100k open conversations in a team of 10.
    let db = Database::connect(app.db.url.as_str()).await.expect("connect");
    let mut sizes = Vec::new();
    for (name, open) in [("Small", 1_000u64), ("Large", 100_000)] {
        let (team_id, agents) = team(&app, &ws.id, name, 10).await;
        let started = Instant::now();
        let list = agents.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(",");
        db.execute_unprepared(&format!(
            "INSERT INTO conversations (workspace_id, id, team_id, assignee_id, status, reason, queued_at, assigned_at, \
             resolved_at, version, created_at, updated_at) \
             SELECT '{ws}', '{name}-bulk-' || g, '{team_id}', (ARRAY[{list}])[1 + g % {k}], 'OPEN', 'bulk', g, g, NULL, 1, g, g \
             FROM generate_series(1, {open}) AS g",
            ws = ws.id,
            k = agents.len(),
        ))
        .await
        .expect("bulk conversations");
        db.execute_unprepared(&format!(
            "UPDATE users SET open_conversations = (SELECT count(*) FROM conversations c \
             WHERE c.assignee_id = users.id AND c.status = 'OPEN') WHERE id IN ({list})"
        ))
        .await
        .expect("loads");
        db.execute_unprepared("ANALYZE").await.expect("analyze");
        println!("{name}: {open} open conversations loaded in {:.1} s", started.elapsed().as_secs_f64());
        sizes.push((name, open, team_id, agents));
    }
    let one_channel = &channels[..1];
    let mut results: Vec<Vec<[f64; 3]>> = vec![Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (i, (name, _, team_id, agents)) in sizes.iter().enumerate() {
            let assign = {
                let (ws, team_id, tag) = (ws.id.clone(), team_id.clone(), format!("{name}-lat{round}"));
                closed_loop(one_channel, 1, seconds / 2 + 1, move |channel, n| {
                    let request = service(pb::AssignConversationRequest {
                        workspace_id: ws.clone(),
                        conversation_id: format!("{tag}-{n}"),
                        team_id: team_id.clone(),
                        assignee_id: String::new(),
                        transfer: false,
                        override_availability: false,
                    });
                    async move {
                        let mut client = pb::assignment_service_client::AssignmentServiceClient::new(channel);
                        client.assign_conversation(request).await.expect("assign");
                    }
                })
                .await
            };
            let list = |by_team: bool| {
                let (ws, team_id, agent) = (ws.id.clone(), team_id.clone(), agents[0].clone());
                closed_loop(one_channel, 1, seconds / 2 + 1, move |channel, _| {
                    let request = service(pb::ListConversationAssignmentsRequest {
                        workspace_id: ws.clone(),
                        assignee_id: if by_team { String::new() } else { agent.clone() },
                        team_id: if by_team { team_id.clone() } else { String::new() },
                        page_size: 50,
                        ..Default::default()
                    });
                    async move {
                        let mut client = pb::assignment_service_client::AssignmentServiceClient::new(channel);
                        let page = client.list_conversation_assignments(request).await.expect("list").into_inner();
                        assert_eq!(page.assignments.len(), 50);
                    }
                })
            };
            let by_assignee = list(false).await;
            let by_team = list(true).await;
            let p50 = |load: &Load| load.percentile(0.5).as_secs_f64() * 1e6;
            results[i].push([p50(&assign), p50(&by_assignee), p50(&by_team)]);
        }
    }
    let medians: Vec<[f64; 3]> =
        results.iter().map(|runs| [0, 1, 2].map(|j| median(runs.iter().map(|r| r[j]).collect()))).collect();
    for (j, what) in [
        "AssignConversation (load balanced)",
        "ListConversationAssignments by assignee",
        "ListConversationAssignments by team",
    ]
    .iter()
    .enumerate()
    {
        println!(
            "latency p50, median of {rounds} rounds: {what}: 1k open {:.0} µs, 100k open {:.0} µs, ratio {:.2} (target <= 1.5)",
            medians[0][j],
            medians[1][j],
            medians[1][j] / medians[0][j]
        );
    }
    drop(peer);
    drop(db);
    let _ = app.stop().await;
}

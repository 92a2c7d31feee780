//! Soak: mixed load at a steady rate on the release `rosterd` binary for ten minutes, reporting
//! every error and the server's resident memory from start to end.
//!
//! `cargo bench -p roster-tests --bench soak` (SQLite); with `ROSTER_TEST_DATABASE_URL` set, on
//! PostgreSQL. `SOAK_SECONDS` (600) and `SOAK_RATE` (calls per second, 200) change the run, and
//! `SOAK_CALLS` (for example `check,login`) keeps only some kinds of call.

#[allow(dead_code, reason = "the soak uses only `setting` of the shared benchmark code")]
mod common;

use common::setting;
use roster_proto::v1 as pb;
use roster_tests::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tonic::transport::Channel;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

/// The server's state at one moment of the run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds into the run.
    at: u64,
    /// Resident memory, KiB (`VmRSS`).
    rss: u64,
    /// Threads: each open SQLite connection runs on one of its own, so they show the pool's growth.
    threads: u64,
}

/// A sample at `at` into the run, from `/proc/<pid>/status`.
fn sample(peer: &PeerProcess, at: Duration) -> Sample {
    let pid = peer.pid().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/<pid>/status"))
    };
    Sample { at: at.as_secs(), rss: field("VmRSS:"), threads: field("Threads:") }
}

struct Fixture {
    ws: String,
    team: String,
    agents: Vec<String>,
}

async fn fixture(app: &TestApp) -> Fixture {
    let acme = app.workspace("acme").await;
    let seats = pb::SetExtraSeatsRequest { workspace_id: acme.id.clone(), extra_seats: 100_000 };
    app.billing().set_extra_seats(service(seats)).await.expect("seats");
    let request = pb::CreateTeamRequest {
        workspace_id: acme.id.clone(),
        name: "Support".into(),
        strategy: pb::Strategy::LoadBalanced as i32,
    };
    let team = app.teams().create_team(service(request)).await.expect("team").into_inner().team.expect("team");
    let mut agents = Vec::new();
    for i in 0..5 {
        let user =
            app.create_user(&acme.admin_token, &format!("agent-{i}@acme.example"), "agent").await.expect("agent");
        let request = pb::AddTeamMemberRequest {
            workspace_id: acme.id.clone(),
            team_id: team.id.clone(),
            user_id: user.id.clone(),
            max_open_conversations: None,
        };
        app.teams().add_team_member(service(request)).await.expect("member");
        agents.push(user.id);
    }
    Fixture { ws: acme.id, team: team.id, agents }
}

/// The kinds of call in the mix, by the slots of 20 they take: half permission checks, the rest
/// reads and writes of every kind.
const MIX: [(&str, std::ops::Range<u64>); 7] = [
    ("check", 0..10),
    ("assign", 10..13),
    ("resolve", 13..15),
    ("get", 15..17),
    ("create", 17..18),
    ("login", 18..19),
    ("list", 19..20),
];

/// Whether slot `n % 20` is a kind `SOAK_CALLS` (comma-separated kinds; all when unset) asks for.
fn wanted(n: u64) -> bool {
    let Ok(kinds) = std::env::var("SOAK_CALLS") else { return true };
    MIX.iter().any(|(kind, slots)| slots.contains(&(n % 20)) && kinds.split(',').any(|k| k == *kind))
}

/// Call number `n` of the mix.
async fn call(channel: Channel, f: Arc<Fixture>, n: u64) -> Result<(), tonic::Status> {
    let ws = f.ws.clone();
    let agent = f.agents[(n % f.agents.len() as u64) as usize].clone();
    match n % 20 {
        0..10 => {
            let request = pb::CheckPermissionRequest {
                workspace_id: ws,
                user_id: agent,
                permission: "contacts.read".into(),
                resource: None,
            };
            pb::authorization_service_client::AuthorizationServiceClient::new(channel)
                .check_permission(service(request))
                .await?;
        }
        10..13 => {
            let request = pb::AssignConversationRequest {
                workspace_id: ws,
                conversation_id: format!("wa:{n}"),
                team_id: f.team.clone(),
                ..Default::default()
            };
            pb::assignment_service_client::AssignmentServiceClient::new(channel)
                .assign_conversation(service(request))
                .await?;
        }
        13..15 => {
            // Resolves a conversation routed 40 calls ago, so that open counts stay bounded.
            let earlier = n.saturating_sub(40) / 20 * 20 + 10;
            let request = pb::ResolveConversationRequest { workspace_id: ws, conversation_id: format!("wa:{earlier}") };
            match pb::assignment_service_client::AssignmentServiceClient::new(channel)
                .resolve_conversation(service(request))
                .await
            {
                Err(status) if status.code() == tonic::Code::NotFound => {}
                other => {
                    other?;
                }
            }
        }
        15..17 => {
            let request = pb::GetUserRequest { workspace_id: ws, user_id: agent };
            pb::user_service_client::UserServiceClient::new(channel).get_user(service(request)).await?;
        }
        17 => {
            let request = pb::CreateUserRequest {
                workspace_id: ws,
                email: format!("soak-{n}@acme.example"),
                full_name: "Soak".into(),
                password: PASSWORD.into(),
                role: "agent".into(),
                ..Default::default()
            };
            pb::user_service_client::UserServiceClient::new(channel).create_user(service(request)).await?;
        }
        18 => {
            // Each agent in turn, 2 logins a second each: attempts in flight count against the
            // account's limit of failures until bcrypt has judged them, so a stall with many
            // logins of one account in flight would refuse the newest LOGIN_THROTTLED, as the
            // limit means to (docs/RELIABILITY.md, "Soak").
            let request = pb::LoginRequest {
                workspace_slug: "acme".into(),
                email: format!("agent-{}@acme.example", n / 20 % f.agents.len() as u64),
                password: PASSWORD.into(),
            };
            pb::auth_service_client::AuthServiceClient::new(channel).login(request).await?;
        }
        _ => {
            let request = pb::ListUsersRequest { workspace_id: ws, page_size: 50, ..Default::default() };
            pb::user_service_client::UserServiceClient::new(channel).list_users(service(request)).await?;
        }
    }
    Ok(())
}

async fn run() {
    let seconds = setting("SOAK_SECONDS", 600);
    let rate = setting("SOAK_RATE", 200);
    let app = spawn_app().await;
    let backend = if app.db.is_postgres() { "PostgreSQL" } else { "SQLite" };
    let f = Arc::new(fixture(&app).await);
    let peer = app.spawn_peer_process().await;
    println!("soak: {rate} calls/s for {seconds} s on {backend}, release rosterd pid {}", peer.pid().expect("running"));

    let errors: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let in_flight = Arc::new(Semaphore::new(256));
    let mut samples = Vec::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = seconds * rate;
    let mut next_sample = Duration::ZERO;
    for n in (0..u64::MAX).filter(|n| wanted(*n)).take(total as usize) {
        tick.tick().await;
        if started.elapsed() >= next_sample {
            samples.push(sample(&peer, started.elapsed()));
            next_sample += Duration::from_secs(30);
        }
        let permit = in_flight.clone().acquire_owned().await.expect("semaphore");
        let (channel, f, errors, latencies) = (peer.channel.clone(), f.clone(), errors.clone(), latencies.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            let answer = call(channel, f, n).await;
            latencies.lock().expect("lock").push(sent.elapsed());
            if let Err(status) = answer {
                let key = format!("{:?} {}", status.code(), error_reason(&status).unwrap_or_default());
                *errors.lock().expect("lock").entry(key).or_default() += 1;
            }
            drop(permit);
        });
    }
    let _ = in_flight.acquire_many(256).await;
    let elapsed = started.elapsed();
    samples.push(sample(&peer, elapsed));

    let mut latencies = std::mem::take(&mut *latencies.lock().expect("lock"));
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let errors = errors.lock().expect("lock").clone();
    // From the sample at 30 s: the first one is taken before any load.
    let (first, last) = (samples[1.min(samples.len() - 1)], samples[samples.len() - 1]);
    let max = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    println!(
        "soak: {} calls in {:.0} s ({:.0}/s); errors {errors:?}; latency p50 {:?} p99 {:?} max {:?}",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        p(0.5),
        p(0.99),
        latencies.last().copied().unwrap_or_default()
    );
    println!(
        "soak: RSS at {} s {} KiB, at the end {} KiB ({:+.1}%), highest {} KiB",
        first.at,
        first.rss,
        last.rss,
        (last.rss as f64 - first.rss as f64) / first.rss as f64 * 100.0,
        max
    );
    println!("soak: samples (s, RSS KiB, threads):");
    for s in &samples {
        println!("  {:>5} {:>7} {:>3}", s.at, s.rss, s.threads);
    }
}

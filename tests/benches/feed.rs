//! The change feed's latency (see docs/BENCHMARKS.md): how long after a change's call starts its
//! event reaches a watcher on the process that made the change, and one on another process.
//!
//! Two release `rosterd` processes share one database (PostgreSQL by default). Each has a watcher
//! of the workspace's feed; one writer renames a user on the first process at a steady rate, while
//! `BENCH_LOAD_CLIENTS` clients assign conversations over as many teams through the first process
//! (the assignment benchmark's load). Each rename's event is timed from the start of the call that
//! made it to its arrival at each watcher.
//!
//! Run: `cargo bench -p roster-tests --bench feed`.
//! Settings: `BENCH_CHANGES` (default 500), `BENCH_RATE` (changes per second, default 20),
//! `BENCH_LOAD_CLIENTS` (default 16; 0 for a quiet server),
//! `ROSTER_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`).

use roster_proto::v1 as pb;
use roster_tests::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
#[allow(dead_code, reason = "the feed bench uses only part of the shared benchmark code")]
mod common;
use common::{assign_load, setting, team};
use tonic::transport::Channel;

fn main() {
    common::on_postgres(run);
}

/// When each renamed-to name arrived at a watcher.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// Watches `workspace` on `peer` from `after`, recording when each user event's name arrives.
async fn watch(peer: &PeerProcess, workspace: &str, after: &str) -> Arrivals {
    let arrivals = Arrivals::default();
    let request = pb::WatchEventsRequest { workspace_id: workspace.into(), after: after.into(), ..Default::default() };
    let mut stream = peer.events().watch_events(service(request)).await.expect("watch").into_inner();
    let record = arrivals.clone();
    tokio::spawn(async move {
        while let Ok(Some(batch)) = stream.message().await {
            let now = Instant::now();
            let mut arrivals = record.lock().expect("arrivals");
            for event in batch.events {
                if let Some(pb::event::Payload::User(user)) = event.payload {
                    arrivals.insert(user.full_name, now);
                }
            }
        }
    });
    arrivals
}

/// The p-th percentile of `values` in milliseconds (nearest rank).
fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

async fn run() {
    let changes = setting("BENCH_CHANGES", 500) as usize;
    let rate = setting("BENCH_RATE", 20);
    let app = spawn_app().await;
    let backend = if app.db.is_postgres() { "PostgreSQL" } else { "SQLite" };
    let (near, far) = (app.spawn_peer_process().await, app.spawn_peer_process().await);
    let acme = app.workspace("acme").await;
    let clients = setting("BENCH_LOAD_CLIENTS", 16) as usize;
    let seats = pb::SetExtraSeatsRequest { workspace_id: acme.id.clone(), extra_seats: 1_000 };
    app.billing().set_extra_seats(service(seats)).await.expect("seats");
    let mut teams = Vec::new();
    for i in 0..clients {
        teams.push(team(&app, &acme.id, &format!("T{i:02}"), 4).await.0);
    }
    let user = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("user");
    let request = pb::ListEventsRequest { workspace_id: acme.id.clone(), page_size: 500, ..Default::default() };
    let start = app.events().list_events(service(request)).await.expect("events").into_inner().next_cursor;
    let (near_arrivals, far_arrivals) = (watch(&near, &acme.id, &start).await, watch(&far, &acme.id, &start).await);
    println!(
        "feed: {changes} changes at {rate}/s on {backend}, two release rosterd processes, default poll (200 ms), \
         {clients} clients assigning conversations meanwhile"
    );
    let load = (clients > 0).then(|| {
        let channels: Vec<Channel> =
            (0..4).map(|_| Channel::from_shared(near.uri.clone()).expect("uri").connect_lazy()).collect();
        let (workspace, seconds) = (acme.id.clone(), changes as u64 / rate + 2);
        tokio::spawn(async move { assign_load(&channels, clients, &workspace, &teams, "load", seconds).await })
    });

    let mut started = Vec::with_capacity(changes);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for i in 0..changes {
        tick.tick().await;
        let name = format!("Maria {i}");
        let update = pb::UpdateUserRequest {
            workspace_id: acme.id.clone(),
            user: Some(pb::User { id: user.id.clone(), full_name: name.clone(), ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["full_name".into()] }),
        };
        let at = Instant::now();
        near.users().update_user(service(update)).await.expect("rename");
        started.push((name, at));
    }
    if let Some(load) = load {
        let load = load.await.expect("assignment load");
        println!("feed: meanwhile {:.0} assignments/s", load.rate());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    for (label, arrivals) in [("same process", &near_arrivals), ("other process", &far_arrivals)] {
        let arrivals = arrivals.lock().expect("arrivals");
        let mut millis: Vec<f64> = started
            .iter()
            .filter_map(|(name, at)| arrivals.get(name).map(|got| got.duration_since(*at).as_secs_f64() * 1000.0))
            .collect();
        let missing = changes - millis.len();
        let (p50, p99) = (percentile(&mut millis, 50.0), percentile(&mut millis, 99.0));
        let max = millis.last().copied().unwrap_or_default();
        println!("feed: {label}: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms, {missing} missing");
    }
}

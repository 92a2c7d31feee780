//! The Authorization figures, each measured side by side in one run (see docs/BENCHMARKS.md):
//!
//! 1. In-process decision: `roster_authz::Directory::check` against casbin-rs's `Enforcer` on an
//!    equivalent RBAC model (user → role → (feature, action)), with 10k users / 1k roles and with
//!    100k users / 10k roles.
//! 2. CheckPermission throughput over gRPC against `grpc.health.v1.Health/Check` on the same
//!    server (the release `rosterd` binary in its own process), with the same load generator,
//!    connections and concurrency.
//! 3. CheckPermissions with 100 items against one CheckPermission: time per call.
//! 4. p99 latency of CheckPermission while a role changes once per second, against without.
//!
//! Run: `cargo bench -p roster-tests --bench authz --features casbin`.
//! Settings: `BENCH_SECONDS` (per gRPC phase, default 10; the saturated batch phases run that many
//! pairs of 1 s phases), `BENCH_CONCURRENCY` (default 32),
//! `BENCH_CONNECTIONS` (default 4), `BENCH_USERS` (users of the gRPC workspace, default 2000),
//! `BENCH_GRPC=0` (the in-process comparison only).

use casbin::prelude::*;
use roster_authz::{Directory, Grants, Permission, Role, RoleKind, Scope};
use roster_proto::v1 as pb;
use roster_tests::*;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[path = "common/mod.rs"]
mod common;
use common::{CpuClock, closed_loop, median, pin, setting};

/// A small deterministic generator, so both sides see the same data and requests.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn main() {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("machine: {cores} cores");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let small = runtime.block_on(InProcess::prepare(10_000, 1_000));
    let large = runtime.block_on(InProcess::prepare(100_000, 10_000));
    // This virtual machine's timings wander, by up to half for the same code and for seconds at
    // a time (its host runs other machines). So roster and the floor are timed in many short
    // repetitions, the two sizes back to back in each (in turns, first one then the other), and
    // growth is the median of each repetition's ratio: a slow spell lifts both sides of a ratio
    // alike. The fastest and the median timing of each size are printed too. casbin is a hundred
    // thousand times slower; one timing of it is plenty.
    let (mut roster, mut floor) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for repetition in 0..REPETITIONS {
        let order = if repetition % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let case = [&small, &large][i];
            roster[i].push(case.time_roster());
            floor[i].push(case.time_floor());
        }
    }
    let paired =
        |[small, large]: &[Vec<f64>; 2]| median(small.iter().zip(large).map(|(small, large)| large / small).collect());
    let (roster_growth, floor_growth) = (paired(&roster), paired(&floor));
    let [roster_small, roster_large] = roster.map(Spread::of);
    let [floor_small, floor_large] = floor.map(Spread::of);
    for (name, case, roster, floor) in
        [("10k/1k", &small, &roster_small, &floor_small), ("100k/10k", &large, &roster_large, &floor_large)]
    {
        println!(
            "in-process {name} ({} casbin policies): roster {:.1} ns/check median of {REPETITIONS}, {:.1} fastest; \
             casbin {:.0} ns/check; ratio {:.1e} (target <= 0.05); a plain HashMap<u128, u32> lookup of that size \
             {:.1} ns median, {:.1} fastest",
            case.policies,
            roster.median,
            roster.fastest,
            case.casbin,
            roster.median / case.casbin,
            floor.median,
            floor.fastest,
        );
    }
    println!(
        "in-process: growth from 10k/1k to 100k/10k: roster {roster_growth:.2}x, the median of {REPETITIONS} paired \
         ratios (target <= 1.5x; of the medians {:.2}x, of the fastest {:.2}x); casbin {:.1}x (one timing each); \
         plain HashMap lookup {floor_growth:.2}x",
        roster_large.median / roster_small.median,
        roster_large.fastest / roster_small.fastest,
        large.casbin / small.casbin,
    );
    if setting("BENCH_GRPC", 1) != 0 {
        runtime.block_on(over_grpc());
    }
}

/// How many times roster's checks and the floor are timed at each size.
const REPETITIONS: usize = 201;

/// Calls per timing: a few milliseconds, shorter than the machine's slow spells.
const CALLS: usize = 200_000;

/// The fastest and the median of repeated timings.
struct Spread {
    fastest: f64,
    median: f64,
}

impl Spread {
    fn of(timings: Vec<f64>) -> Self {
        let fastest = timings.iter().copied().fold(f64::INFINITY, f64::min);
        Self { fastest, median: median(timings) }
    }
}

/// One size of the in-process comparison: roster's directory and casbin's enforcer on the same
/// random roles, members and requests, and casbin's time per check.
struct InProcess {
    directory: Directory,
    requests: Vec<(String, Permission)>,
    policies: usize,
    casbin: f64,
    /// The floor: a plain std HashMap of the same size, and random keys of it. It is on ordinary
    /// pages, where the directory's table of 100k members is on huge pages.
    plain: std::collections::HashMap<u128, u32>,
    keys: Vec<u128>,
}

impl InProcess {
    async fn prepare(users: usize, roles: usize) -> Self {
        let mut rng = Lcg(42);
        // Each role grants 3..=8 random unscoped-or-ALL permissions, as an admin screen would.
        let role_grants: Vec<Vec<Permission>> = (0..roles)
            .map(|_| (0..3 + rng.below(6)).map(|_| Permission::ALL[rng.below(Permission::ALL.len())]).collect())
            .collect();
        let user_roles: Vec<usize> = (0..users).map(|_| rng.below(roles)).collect();

        let members: Vec<(String, String)> =
            user_roles.iter().enumerate().map(|(u, r)| (user_id(u), format!("role{r}"))).collect();
        let directory = Directory::new(
            role_grants
                .iter()
                .enumerate()
                .map(|(i, grants)| Role {
                    id: format!("role{i}"),
                    name: format!("Role {i}"),
                    kind: RoleKind::Custom,
                    grants: Grants::only(grants.iter().map(|p| (*p, Scope::All))),
                })
                .collect(),
            members.iter().map(|(u, r)| (u.clone(), r.as_str(), true)),
        );

        let model = DefaultModel::from_str(
            "[request_definition]\nr = sub, obj, act\n\n\
             [policy_definition]\np = sub, obj, act\n\n\
             [role_definition]\ng = _, _\n\n\
             [policy_effect]\ne = some(where (p.eft == allow))\n\n\
             [matchers]\nm = g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act\n",
        )
        .await
        .expect("casbin model");
        let mut enforcer = Enforcer::new(model, MemoryAdapter::default()).await.expect("enforcer");
        let mut policies: Vec<Vec<String>> = Vec::new();
        for (i, grants) in role_grants.iter().enumerate() {
            let mut seen = std::collections::BTreeSet::new();
            for p in grants {
                if seen.insert(*p) {
                    policies.push(vec![format!("role{i}"), p.feature().as_str().to_owned(), p.action().to_owned()]);
                }
            }
        }
        let policy_count = policies.len();
        enforcer.add_policies(policies).await.expect("policies");
        let groupings: Vec<Vec<String>> =
            user_roles.iter().enumerate().map(|(u, r)| vec![user_id(u), format!("role{r}")]).collect();
        enforcer.add_grouping_policies(groupings).await.expect("groupings");

        let requests: Vec<(String, Permission)> = (0..10_000)
            .map(|_| (user_id(rng.below(users)), Permission::ALL[rng.below(Permission::ALL.len())]))
            .collect();
        // Both must agree on every request before either is timed.
        let agree = requests.iter().take(300).all(|(user, p)| {
            let ours = directory.check(user, *p, None).expect("member").allowed;
            let theirs = enforcer.enforce((user.as_str(), p.feature().as_str(), p.action())).expect("enforce");
            ours == theirs
        });
        assert!(agree, "roster and casbin disagree on the equivalent model");
        let casbin_calls = (2_000_000 / policy_count.max(1)).clamp(50, 100_000);
        let casbin = time_per_call(&requests, 1000, casbin_calls, |(user, p)| {
            black_box(enforcer.enforce((user.as_str(), p.feature().as_str(), p.action())).expect("enforce"));
        });

        let plain = (0..users).map(|u| (u as u128 * 7919, u as u32)).collect();
        let keys = (0..10_000).map(|_| rng.below(users) as u128 * 7919).collect();
        Self { directory, requests, policies: policy_count, casbin, plain, keys }
    }

    /// Nanoseconds per check by roster's directory.
    fn time_roster(&self) -> f64 {
        time_per_call(&self.requests, self.requests.len(), CALLS, |(user, p)| {
            black_box(self.directory.check(user, *p, None).expect("member").allowed);
        })
    }

    /// Nanoseconds per lookup of a random key in the plain map.
    fn time_floor(&self) -> f64 {
        time_per_call(&self.keys, self.keys.len(), CALLS, |key| {
            black_box(self.plain.get(key));
        })
    }
}

/// Calls answered, wall time and the server's CPU time over a closed loop, or a sum of them.
#[derive(Default)]
struct Second {
    calls: u64,
    elapsed: f64,
    cpu: f64,
}

impl Second {
    /// One second of `call` from `concurrency` clients.
    async fn of<F, Fut>(channels: &[Channel], concurrency: usize, cpu: &CpuClock, call: F) -> Self
    where
        F: Fn(Channel, usize) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let before = cpu.seconds();
        let load = closed_loop(channels, concurrency, 1, call).await;
        Self { calls: load.calls, elapsed: load.elapsed.as_secs_f64(), cpu: cpu.seconds() - before }
    }

    fn add(&mut self, other: &Second) {
        self.calls += other.calls;
        self.elapsed += other.elapsed;
        self.cpu += other.cpu;
    }

    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed
    }

    fn cpu_per_call(&self) -> f64 {
        self.cpu / self.calls as f64
    }
}

/// A user id shaped like the ones Roster issues (32 hex digits), different for each `n`.
fn user_id(n: usize) -> String {
    format!("{:032x}", (n as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

/// Nanoseconds per call of `f` over `calls` requests in turn, after a warm-up on the first `warm`.
fn time_per_call<T>(requests: &[T], warm: usize, calls: usize, mut f: impl FnMut(&T)) -> f64 {
    for request in requests.iter().take(warm) {
        f(request);
    }
    let started = Instant::now();
    for i in 0..calls {
        f(&requests[i % requests.len()]);
    }
    started.elapsed().as_nanos() as f64 / calls as f64
}

async fn over_grpc() {
    let seconds = setting("BENCH_SECONDS", 10);
    let concurrency = setting("BENCH_CONCURRENCY", 32) as usize;
    let connections = setting("BENCH_CONNECTIONS", 4) as usize;
    let users = setting("BENCH_USERS", 2000) as usize;

    // The in-process server only prepares the data; the load goes to a separate release process.
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let mut role_ids = Vec::new();
    for i in 0..20 {
        let request = pb::CreateRoleRequest {
            workspace_id: acme.id.clone(),
            name: format!("Role {i}"),
            grants: vec![
                pb::Grant { permission: "contacts.read".into(), scope: pb::Scope::All as i32 },
                pb::Grant { permission: "templates.read".into(), scope: pb::Scope::Unspecified as i32 },
            ],
            ..Default::default()
        };
        role_ids.push(app.roles().create_role(service(request)).await.expect("role").into_inner().role.expect("r").id);
    }
    let hash = roster_identity::PasswordHash::new(
        &roster_identity::Password::parse(PASSWORD).expect("password"),
        roster_identity::BcryptCost::new(4).expect("cost"),
        [7; 16],
    );
    let seats = pb::SetExtraSeatsRequest { workspace_id: acme.id.clone(), extra_seats: users as i32 };
    app.billing().set_extra_seats(service(seats)).await.expect("seats");
    let mut user_ids = Vec::with_capacity(users);
    let ctx = roster_store::Context {
        actor: roster_store::Actor::Service("bench".into()),
        request_id: String::new(),
        now: 0,
    };
    for i in 0..users {
        let email = roster_identity::Email::parse(&format!("user{i}@acme.example")).expect("email");
        let new = roster_store::NewUser {
            email: email.clone(),
            full_name: roster_identity::FullName::parse("Bench User").expect("name"),
            password_hash: hash.clone(),
            role: roster_identity::RoleId::parse(&role_ids[i % role_ids.len()]).expect("role id"),
        };
        let mail = roster_store::Mail { to: email, subject: "Welcome".into(), body: "Hello".into() };
        user_ids.push(app.store.create_user(&ctx, &acme.id, new, mail, None, None).await.expect("user").id);
    }
    println!("grpc: workspace with {users} users and {} roles on SQLite", role_ids.len() + 3);

    let peer = app.spawn_peer_process().await;
    let cpu = CpuClock::of(peer.pid().expect("the server runs"));
    let channels: Vec<Channel> =
        (0..connections).map(|_| Channel::from_shared(peer.uri.clone()).expect("uri").connect_lazy()).collect();
    let workspace_id = Arc::new(acme.id.clone());
    let user_ids = Arc::new(user_ids);

    let check = {
        let (workspace_id, user_ids) = (workspace_id.clone(), user_ids.clone());
        move |channel: Channel, n: usize| {
            let request = service(pb::CheckPermissionRequest {
                workspace_id: workspace_id.to_string(),
                user_id: user_ids[n % user_ids.len()].clone(),
                permission: "contacts.read".into(),
                resource: None,
            });
            async move {
                let mut client = pb::authorization_service_client::AuthorizationServiceClient::new(channel);
                let decision = client.check_permission(request).await.expect("check").into_inner();
                assert!(decision.decision.expect("decision").allowed);
            }
        }
    };
    // The same client configuration for both: the service key's header goes with every call.
    let health = |channel: Channel, _n: usize| async move {
        let request = service(HealthCheckRequest { service: String::new() });
        HealthClient::new(channel).check(request).await.expect("health");
    };

    // Warm up both paths (connections, the peer's cache).
    closed_loop(&channels, concurrency, 1, check.clone()).await;
    closed_loop(&channels, concurrency, 1, health).await;

    let health_load = closed_loop(&channels, concurrency, seconds, health).await;
    let check_load = closed_loop(&channels, concurrency, seconds, check.clone()).await;
    println!(
        "grpc throughput ({concurrency} clients, {connections} connections, {seconds} s each): Health/Check {:.0}/s, \
         CheckPermission {:.0}/s, ratio {:.2} (target >= 0.8)",
        health_load.rate(),
        check_load.rate(),
        check_load.rate() / health_load.rate()
    );

    // 2 and 3 again with h2load, a load tool in C whose own cost per call is small and the same
    // for every body: pre-encoded requests, the same header set, connections and streams.
    if let Some(h2) = H2load::find() {
        let uri = &peer.uri;
        let one = pb::CheckPermissionRequest {
            workspace_id: workspace_id.to_string(),
            user_id: user_ids[0].clone(),
            permission: "contacts.read".into(),
            resource: None,
        };
        let hundred = pb::CheckPermissionsRequest {
            workspace_id: workspace_id.to_string(),
            checks: (0..100)
                .map(|i| pb::PermissionCheck {
                    user_id: user_ids[i % user_ids.len()].clone(),
                    permission: "contacts.read".into(),
                    resource: None,
                })
                .collect(),
        };
        let health_rate = h2.rate(uri, "/grpc.health.v1.Health/Check", &HealthCheckRequest::default(), seconds);
        let before = cpu.seconds();
        let check_rate = h2.rate(uri, "/roster.v1.AuthorizationService/CheckPermission", &one, seconds);
        let check_cpu = (cpu.seconds() - before) / (check_rate * seconds as f64);
        let before = cpu.seconds();
        let batch_rate = h2.rate(uri, "/roster.v1.AuthorizationService/CheckPermissions", &hundred, seconds);
        let batch_cpu = (cpu.seconds() - before) / (batch_rate * seconds as f64);
        println!(
            "h2load ({} connections x {} streams, {seconds} s each): Health/Check {health_rate:.0}/s, CheckPermission \
             {check_rate:.0}/s, ratio {:.2} (target >= 0.8)",
            h2.connections,
            h2.streams,
            check_rate / health_rate
        );
        println!(
            "h2load batch: CheckPermission {check_rate:.0}/s, CheckPermissions x100 {batch_rate:.0}/s, cost ratio {:.2} \
             (target <= 3); server CPU per call {:.1} µs and {:.1} µs, ratio {:.2}",
            check_rate / batch_rate,
            check_cpu * 1e6,
            batch_cpu * 1e6,
            batch_cpu / check_cpu
        );
    } else {
        println!("h2load: not installed (apt-get install nghttp2-client); skipped");
    }

    // 3. Batch cost: sequential calls from one client, time per call.
    let batch = {
        let (workspace_id, user_ids) = (workspace_id.clone(), user_ids.clone());
        move |channel: Channel, n: usize| {
            let checks = (0..100)
                .map(|i| pb::PermissionCheck {
                    user_id: user_ids[(n * 100 + i) % user_ids.len()].clone(),
                    permission: "contacts.read".into(),
                    resource: None,
                })
                .collect();
            let request = service(pb::CheckPermissionsRequest { workspace_id: workspace_id.to_string(), checks });
            async move {
                let mut client = pb::authorization_service_client::AuthorizationServiceClient::new(channel);
                let results = client.check_permissions(request).await.expect("batch").into_inner().results;
                assert_eq!(results.len(), 100);
            }
        }
    };
    let one_seq = closed_loop(&channels[..1], 1, seconds, check.clone()).await;
    let batch_seq = closed_loop(&channels[..1], 1, seconds, batch.clone()).await;
    let (one, hundred) = (
        one_seq.elapsed.as_secs_f64() / one_seq.calls as f64,
        batch_seq.elapsed.as_secs_f64() / batch_seq.calls as f64,
    );
    println!(
        "grpc batch (1 client, sequential): CheckPermission {:.1} µs/call, CheckPermissions x100 {:.1} µs/call, ratio {:.2} (target <= 3)",
        one * 1e6,
        hundred * 1e6,
        hundred / one
    );
    // At saturation the load generator shares the two cores with the server, so calls per second
    // also count the client decoding 100 answers; the server's own CPU time per call does not.
    // Each is run for one second at a time, in turns (which goes first alternating), `seconds`
    // times: a slow spell of the machine weighs on both sides of a pair alike, and the ratio is
    // also given as the median of the pairs'.
    let saturated = async |setup: &str| {
        let (mut one, mut hundred, mut ratios) = (Second::default(), Second::default(), Vec::new());
        for round in 0..seconds.max(1) {
            let (a, b) = if round % 2 == 0 {
                let a = Second::of(&channels, concurrency, &cpu, check.clone()).await;
                (a, Second::of(&channels, concurrency, &cpu, batch.clone()).await)
            } else {
                let b = Second::of(&channels, concurrency, &cpu, batch.clone()).await;
                (Second::of(&channels, concurrency, &cpu, check.clone()).await, b)
            };
            ratios.push(b.cpu_per_call() / a.cpu_per_call());
            one.add(&a);
            hundred.add(&b);
        }
        println!(
            "grpc batch ({concurrency} clients{setup}, {seconds} pairs of 1 s): CheckPermission {:.0} calls/s, \
             CheckPermissions x100 {:.0} calls/s, cost ratio {:.2}; server CPU per call {:.1} µs and {:.1} µs, ratio \
             {:.2}, median of the pairs {:.2} (target <= 3)",
            one.rate(),
            hundred.rate(),
            one.rate() / hundred.rate(),
            one.cpu_per_call() * 1e6,
            hundred.cpu_per_call() * 1e6,
            hundred.cpu_per_call() / one.cpu_per_call(),
            median(ratios),
        );
    };
    saturated("").await;
    // The same with the server on one core and the load generator on the other, so neither's
    // work (the generator encodes 100 items and decodes 100 answers per batch) lands in the
    // other's caches or time slices.
    let server = peer.pid().expect("the server runs");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus >= 2 && pin(server, "1") && pin(std::process::id(), "0") {
        saturated(", server pinned to CPU 1, generator to CPU 0").await;
        let all = format!("0-{}", cpus - 1);
        assert!(pin(server, &all) && pin(std::process::id(), &all), "unpin");
    } else {
        println!("grpc batch, pinned: skipped (needs two CPUs and taskset)");
    }

    // 4. p99 with and without a role change every second. Latency is measured at a fixed
    // concurrency below saturation, so queueing does not dominate it.
    let quiet = closed_loop(&channels, 8, seconds, check.clone()).await;
    let churning = Arc::new(AtomicBool::new(true));
    let churn = {
        let churning = churning.clone();
        let channel = channels[0].clone();
        let workspace_id = workspace_id.clone();
        let role_id = role_ids[0].clone();
        tokio::spawn(async move {
            let mut client = pb::role_service_client::RoleServiceClient::new(channel);
            let mut changes = 0u32;
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            while churning.load(Ordering::Relaxed) {
                ticker.tick().await;
                // Toggle a grant the checks do not use, so every check still answers the same.
                let mut grants = vec![
                    pb::Grant { permission: "contacts.read".into(), scope: pb::Scope::All as i32 },
                    pb::Grant { permission: "templates.read".into(), scope: pb::Scope::Unspecified as i32 },
                ];
                if changes.is_multiple_of(2) {
                    grants
                        .push(pb::Grant { permission: "analytics.read".into(), scope: pb::Scope::Unspecified as i32 });
                }
                let request = service(pb::UpdateRoleRequest {
                    workspace_id: workspace_id.to_string(),
                    role: Some(pb::Role { id: role_id.clone(), grants, ..Default::default() }),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["grants".into()] }),
                });
                client.update_role(request).await.expect("update role");
                changes += 1;
            }
            changes
        })
    };
    let busy = closed_loop(&channels, 8, seconds, check).await;
    churning.store(false, Ordering::Relaxed);
    let changes = churn.await.expect("churn");
    println!(
        "grpc p99 (8 clients): without changes {:.0} µs (p50 {:.0} µs), with {changes} role changes at 1/s {:.0} µs (p50 {:.0} µs), \
         ratio {:.2} (target <= 1.5)",
        quiet.percentile(0.99).as_secs_f64() * 1e6,
        quiet.percentile(0.5).as_secs_f64() * 1e6,
        busy.percentile(0.99).as_secs_f64() * 1e6,
        busy.percentile(0.5).as_secs_f64() * 1e6,
        busy.percentile(0.99).as_secs_f64() / quiet.percentile(0.99).as_secs_f64()
    );
    drop(peer);
    let _ = app.stop().await;
}

/// h2load (Debian's nghttp2-client) driving a unary gRPC call with a pre-encoded body.
struct H2load {
    connections: usize,
    streams: usize,
    dir: tempfile::TempDir,
}

impl H2load {
    fn find() -> Option<Self> {
        let found = std::process::Command::new("h2load").arg("--version").output().is_ok_and(|o| o.status.success());
        found.then(|| Self {
            connections: setting("BENCH_CONNECTIONS", 4) as usize,
            streams: (setting("BENCH_CONCURRENCY", 32) / setting("BENCH_CONNECTIONS", 4)).max(1) as usize,
            dir: tempfile::tempdir().expect("temporary directory"),
        })
    }

    /// Requests per second of `path` with `message` for `seconds` (the server is warm already).
    /// h2load counts HTTP 200 as success and does not show gRPC trailers, so the body is first
    /// checked to get an answer with data (an error is a trailers-only answer, without), and the
    /// run must then receive that many data bytes for every call done.
    fn rate(&self, uri: &str, path: &str, message: &impl prost::Message, seconds: u64) -> f64 {
        let payload = message.encode_to_vec();
        let mut body = vec![0u8];
        body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        body.extend_from_slice(&payload);
        let file = self.dir.path().join(path.replace('/', "_"));
        std::fs::write(&file, &body).expect("write body");
        let run = |duration: Option<u64>| {
            let mut command = std::process::Command::new("h2load");
            command
                .args(["-c", &self.connections.to_string(), "-m", &self.streams.to_string()])
                .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
                .args(["-H", &format!("authorization: Bearer {SERVICE_KEY}")])
                .arg("-d")
                .arg(&file);
            match duration {
                Some(d) => command.args(["-D", &d.to_string()]),
                None => command.args(["-n", "1", "-c", "1", "-m", "1", "-v"]),
            };
            let output = command.arg(format!("{uri}{path}")).output().expect("run h2load");
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        // "traffic: 171B (171) total, 76B (76) headers (space savings 36.13%), 7B (7) data"
        let data_bytes = |report: &str| -> u64 {
            let line = report.lines().find(|l| l.starts_with("traffic:")).expect("traffic line");
            let data = line.rsplit(", ").next().expect("data part");
            data.split(['(', ')']).nth(1).and_then(|n| n.parse().ok()).expect("data bytes")
        };
        let done = |report: &str| -> u64 {
            let line = report.lines().find(|l| l.starts_with("requests:")).expect("requests line");
            line.split(", ").find_map(|p| p.strip_suffix(" done")?.parse().ok()).expect("done count")
        };
        let probe = run(None);
        let per_call = data_bytes(&probe);
        assert!(per_call > 0, "{path} does not succeed with this body:\n{probe}");
        let report = run(Some(seconds));
        assert!(report.contains(" 0 failed, 0 errored"), "h2load saw failures on {path}:\n{report}");
        // A call still in flight when the clock stops may add one more whole answer.
        let answers = data_bytes(&report) / per_call;
        assert!(data_bytes(&report) % per_call == 0 && answers >= done(&report), "some {path} calls failed:\n{report}");
        report
            .lines()
            .find_map(|line| {
                line.strip_prefix("finished in ")?.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no rate in h2load's report:\n{report}"))
    }
}

//! The Authorization figures of docs/BENCHMARKS.md, each measured side by side in one run:
//!
//! 1. In-process decision: `roster_authz::Directory::check` against casbin-rs's `Enforcer` on an
//!    equivalent RBAC model (user → role → (feature, action)), at 10k users / 1k roles and at
//!    100k users / 10k roles, and roster's growth between the two.
//! 2. CheckPermission throughput against `grpc.health.v1.Health/Check` on the same server (the
//!    release `rosterd` binary in its own process), both driven by h2load with the same
//!    connections, streams and headers.
//! 3. CheckPermissions with 100 items against one CheckPermission: the server's CPU time per call
//!    under the same h2load load, read from `/proc` (h2load shares the two cores with the server).
//! 4. p99 latency of CheckPermission while a role changes once per second, against without.
//!
//! Run: `cargo bench -p roster-tests --bench authz --features casbin` (h2load from Debian's
//! `nghttp2-client` for 2 and 3). Settings: `BENCH_SECONDS` (per gRPC phase, default 10),
//! `BENCH_USERS` (users of the gRPC workspace, default 2000), `BENCH_GRPC=0` (1 only),
//! `BENCH_IN_PROCESS=0` (2 to 4 only).

use casbin::prelude::*;
use roster_authz::{Directory, Grants, Permission, Role, RoleKind, Scope};
use roster_proto::v1 as pb;
use roster_tests::*;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[path = "common/mod.rs"]
mod common;
use common::{CpuClock, closed_loop, median, setting};

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

/// How many times each size is timed; the sizes take turns, and each figure is the median.
const REPETITIONS: usize = 21;

/// Checks per timing.
const CALLS: usize = 1_000_000;

fn main() {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("machine: {cores} cores");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if setting("BENCH_IN_PROCESS", 1) != 0 {
        in_process(&runtime);
    }
    if setting("BENCH_GRPC", 1) != 0 {
        runtime.block_on(over_grpc());
    }
}

/// 1: roster's directory and casbin's enforcer, at both sizes.
fn in_process(runtime: &tokio::runtime::Runtime) {
    let small = runtime.block_on(InProcess::prepare(10_000, 1_000));
    let large = runtime.block_on(InProcess::prepare(100_000, 10_000));
    let mut timings = [Vec::new(), Vec::new()];
    for _ in 0..REPETITIONS {
        timings[0].push(small.time_roster());
        timings[1].push(large.time_roster());
    }
    let [small_ns, large_ns] = timings.map(median);
    for (name, case, roster) in [("10k/1k", &small, small_ns), ("100k/10k", &large, large_ns)] {
        println!(
            "in-process {name} ({} casbin policies): roster {roster:.1} ns/check (median of {REPETITIONS}), casbin {:.0} \
             ns/check, ratio {:.1e} (target <= 0.05)",
            case.policies,
            case.casbin,
            roster / case.casbin,
        );
    }
    println!(
        "in-process growth from 10k/1k to 100k/10k: roster {:.2}x (target <= 1.5x), casbin {:.1}x",
        large_ns / small_ns,
        large.casbin / small.casbin,
    );
}

/// One size of the in-process comparison: roster's directory and casbin's enforcer on the same
/// random roles, members and requests, and casbin's time per check.
struct InProcess {
    directory: Directory,
    requests: Vec<(String, Permission)>,
    policies: usize,
    casbin: f64,
}

impl InProcess {
    async fn prepare(users: usize, roles: usize) -> Self {
        let mut rng = Lcg(42);
        // Each role grants 3..=8 random permissions, as an admin screen would.
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
        let casbin = time_per_call(&requests, casbin_calls, |(user, p)| {
            black_box(enforcer.enforce((user.as_str(), p.feature().as_str(), p.action())).expect("enforce"));
        });
        Self { directory, requests, policies: policy_count, casbin }
    }

    /// Nanoseconds per check by roster's directory.
    fn time_roster(&self) -> f64 {
        time_per_call(&self.requests, CALLS, |(user, p)| {
            black_box(self.directory.check(user, *p, None).expect("member").allowed);
        })
    }
}

/// A user id shaped like the ones Roster issues (32 hex digits), different for each `n`.
fn user_id(n: usize) -> String {
    format!("{:032x}", (n as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

/// Nanoseconds per call of `f` over `calls` requests in turn, after one warm-up call per request.
fn time_per_call<T>(requests: &[T], calls: usize, mut f: impl FnMut(&T)) -> f64 {
    requests.iter().for_each(&mut f);
    let started = Instant::now();
    for i in 0..calls {
        f(&requests[i % requests.len()]);
    }
    started.elapsed().as_nanos() as f64 / calls as f64
}

async fn over_grpc() {
    let seconds = setting("BENCH_SECONDS", 10);
    let users = setting("BENCH_USERS", 2000) as usize;

    // The in-process server only prepares the data; the load goes to a separate release process.
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let mut role_ids = Vec::new();
    for i in 0..20 {
        let request = pb::CreateRoleRequest {
            workspace_id: acme.id.clone(),
            name: format!("Role {i}"),
            grants: grants(false),
            ..Default::default()
        };
        role_ids.push(app.roles().create_role(service(request)).await.expect("role").into_inner().role.expect("r").id);
    }
    let hash = roster_identity::PasswordHash::new(
        &roster_identity::Password::parse(PASSWORD).expect("password"),
        roster_identity::BcryptCost::new(4).expect("cost"),
        [7; 16],
    )
    .expect("hash");
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
            role: roster_authz::RoleId::parse(&role_ids[i % role_ids.len()]).expect("role id"),
        };
        let mail = roster_store::Mail { to: email, subject: "Welcome".into(), body: "Hello".into() };
        let welcome = roster_store::Welcome::Password(hash.clone(), mail);
        user_ids.push(app.store.create_user(&ctx, &acme.id, new, welcome, None).await.expect("user").value.id);
    }
    println!("grpc: workspace with {users} users and {} roles on SQLite", role_ids.len() + 3);

    let peer = app.spawn_peer_process().await;
    let cpu = CpuClock::of(peer.pid().expect("the server runs"));
    let workspace_id = acme.id.clone();

    // 2 and 3 with h2load, a load tool in C whose own cost per call is small and the same for
    // every body: pre-encoded requests, the same headers, connections and streams.
    match H2load::find() {
        Some(h2) => {
            let uri = &peer.uri;
            let check = |i: usize| pb::PermissionCheck {
                user_id: user_ids[i % user_ids.len()].clone(),
                permission: "contacts.read".into(),
                resource: None,
            };
            let one = pb::CheckPermissionRequest {
                workspace_id: workspace_id.clone(),
                user_id: user_ids[0].clone(),
                permission: "contacts.read".into(),
                resource: None,
            };
            let hundred = pb::CheckPermissionsRequest {
                workspace_id: workspace_id.clone(),
                checks: (0..100).map(check).collect(),
            };
            let health = tonic_health::pb::HealthCheckRequest::default();
            // Warm up the connection paths and the server's copy of the workspace.
            h2.rate(uri, "/grpc.health.v1.Health/Check", &health, 1);
            h2.rate(uri, "/roster.v1.AuthorizationService/CheckPermission", &one, 1);
            let health_rate = h2.rate(uri, "/grpc.health.v1.Health/Check", &health, seconds);
            let before = cpu.seconds();
            let check_rate = h2.rate(uri, "/roster.v1.AuthorizationService/CheckPermission", &one, seconds);
            let check_cpu = (cpu.seconds() - before) / (check_rate * seconds as f64);
            let before = cpu.seconds();
            let batch_rate = h2.rate(uri, "/roster.v1.AuthorizationService/CheckPermissions", &hundred, seconds);
            let batch_cpu = (cpu.seconds() - before) / (batch_rate * seconds as f64);
            println!(
                "h2load throughput ({} connections x {} streams, {seconds} s each): Health/Check {health_rate:.0}/s, \
                 CheckPermission {check_rate:.0}/s, ratio {:.2} (target >= 0.8)",
                H2load::CONNECTIONS,
                H2load::STREAMS,
                check_rate / health_rate
            );
            println!(
                "h2load batch: server CPU per call: CheckPermission {:.1} µs, CheckPermissions x100 {:.1} µs, ratio \
                 {:.2} (target <= 3); calls/s {check_rate:.0} and {batch_rate:.0}",
                check_cpu * 1e6,
                batch_cpu * 1e6,
                batch_cpu / check_cpu
            );
        }
        None => println!("h2load: not installed (apt-get install nghttp2-client); throughput and batch skipped"),
    }

    // 4. p99 with and without a role change every second, at a concurrency below saturation so
    // that queueing does not dominate it.
    let channels: Vec<Channel> =
        (0..4).map(|_| Channel::from_shared(peer.uri.clone()).expect("uri").connect_lazy()).collect();
    let call = {
        let (workspace_id, user_ids) = (Arc::new(workspace_id.clone()), Arc::new(user_ids));
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
    closed_loop(&channels, 8, 1, call.clone()).await;
    let quiet = closed_loop(&channels, 8, seconds, call.clone()).await;
    let churning = Arc::new(AtomicBool::new(true));
    let churn = {
        let churning = churning.clone();
        let mut client = pb::role_service_client::RoleServiceClient::new(channels[0].clone());
        let (workspace_id, role_id) = (workspace_id.clone(), role_ids[0].clone());
        tokio::spawn(async move {
            let mut changes = 0u32;
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            while churning.load(Ordering::Relaxed) {
                ticker.tick().await;
                // Toggle a grant the checks do not use, so every check still answers the same.
                let request = service(pb::UpdateRoleRequest {
                    workspace_id: workspace_id.clone(),
                    role: Some(pb::Role {
                        id: role_id.clone(),
                        grants: grants(changes.is_multiple_of(2)),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["grants".into()] }),
                });
                client.update_role(request).await.expect("update role");
                changes += 1;
            }
            changes
        })
    };
    let busy = closed_loop(&channels, 8, seconds, call).await;
    churning.store(false, Ordering::Relaxed);
    let changes = churn.await.expect("churn");
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "grpc p99 (8 clients): without changes {:.0} µs (p50 {:.0} µs), with {changes} role changes at 1/s {:.0} µs \
         (p50 {:.0} µs), ratio {:.2} (target <= 1.5)",
        micros(quiet.percentile(0.99)),
        micros(quiet.percentile(0.5)),
        micros(busy.percentile(0.99)),
        micros(busy.percentile(0.5)),
        busy.percentile(0.99).as_secs_f64() / quiet.percentile(0.99).as_secs_f64()
    );
    drop(peer);
    let _ = app.stop().await;
}

/// The bench roles' grants: what the checks ask for, and a grant they do not use when `extra`.
fn grants(extra: bool) -> Vec<pb::Grant> {
    let mut grants = vec![
        pb::Grant { permission: "contacts.read".into(), scope: pb::Scope::All as i32 },
        pb::Grant { permission: "templates.read".into(), scope: pb::Scope::Unspecified as i32 },
    ];
    if extra {
        grants.push(pb::Grant { permission: "analytics.read".into(), scope: pb::Scope::Unspecified as i32 });
    }
    grants
}

/// h2load (Debian's nghttp2-client) driving a unary gRPC call with a pre-encoded body.
struct H2load {
    dir: tempfile::TempDir,
}

impl H2load {
    const CONNECTIONS: usize = 4;
    const STREAMS: usize = 8;

    fn find() -> Option<Self> {
        let found = std::process::Command::new("h2load").arg("--version").output().is_ok_and(|o| o.status.success());
        found.then(|| Self { dir: tempfile::tempdir().expect("temporary directory") })
    }

    /// Requests per second of `path` with `message` for `seconds`. h2load counts HTTP 200 as
    /// success and does not show gRPC trailers, so one call first checks that the body gets an
    /// answer with data (an error is a trailers-only answer), and the run must then receive that
    /// many data bytes for every call done.
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
                .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
                .args(["-H", &format!("authorization: Bearer {SERVICE_KEY}")])
                .arg("-d")
                .arg(&file);
            match duration {
                Some(d) => command
                    .args(["-c", &Self::CONNECTIONS.to_string(), "-m", &Self::STREAMS.to_string()])
                    .args(["-D", &d.to_string()]),
                None => command.args(["-n", "1", "-c", "1", "-m", "1"]),
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

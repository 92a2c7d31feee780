//! The Foundation's figures, measured in one run (see docs/BENCHMARKS.md):
//!
//! 1. Login throughput against the bcrypt bound: cores ÷ the time of one bcrypt verification at
//!    the configured cost. Login is bcrypt-bound by design, so the server should reach the bound.
//! 2. Start-up to SERVING of the release `rosterd` binary on a fresh SQLite file.
//!
//! Run: `cargo build --release -p rosterd && cargo bench -p roster-tests --bench foundation`.
//! Settings: `BENCH_BCRYPT_COST` (default 12), `BENCH_SECONDS` (default 20), `BENCH_CONCURRENCY`
//! (default 4 × cores), `BENCH_STARTS` (default 10).

use roster_identity::{BcryptCost, Password, PasswordHash};
use roster_proto::v1 as pb;
use roster_tests::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cost = setting("BENCH_BCRYPT_COST", 12) as u32;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    println!("machine: {cores} cores; bcrypt cost {cost}");
    runtime.block_on(login_throughput(cores, cost));
    runtime.block_on(startup());
}

async fn login_throughput(cores: usize, cost: u32) {
    // One verification, timed alone, a few times.
    let password = Password::parse(PASSWORD).expect("password");
    let hash = PasswordHash::new(&password, BcryptCost::new(cost).expect("cost"), [7; 16]).expect("hash");
    let samples: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            assert!(hash.verify(&password));
            started.elapsed()
        })
        .collect();
    let one_hash = median(samples);
    let bound = cores as f64 / one_hash.as_secs_f64();

    // Login throttling counts attempts in flight against the account's limit (5), and the failed
    // logins below would be refused unhashed after 5: this measures bcrypt's share, not the limits.
    let app = spawn_app_with(|c| {
        c.bcrypt_cost = cost;
        c.login_max_failures = 1_000;
        c.login_max_failures_per_address = 1_000;
    })
    .await;
    app.workspace("bench").await;
    let seconds = setting("BENCH_SECONDS", 20);
    let concurrency = setting("BENCH_CONCURRENCY", 4 * cores as u64);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        let mut auth = app.auth();
        clients.push(tokio::spawn(async move {
            let mut ok = 0u64;
            while Instant::now() < deadline {
                let request = pb::LoginRequest {
                    workspace_slug: "bench".into(),
                    email: "admin@bench.example".into(),
                    password: PASSWORD.into(),
                };
                auth.login(request).await.expect("login");
                ok += 1;
            }
            ok
        }));
    }
    let mut logins = 0;
    for client in clients {
        logins += client.await.expect("client");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let throughput = logins as f64 / elapsed;
    println!("login: one bcrypt verification {:.1} ms (median of 5)", one_hash.as_secs_f64() * 1000.0);
    println!("login: bound {bound:.2}/s = {cores} cores / {:.1} ms", one_hash.as_secs_f64() * 1000.0);
    println!(
        "login: {logins} logins in {elapsed:.1} s with {concurrency} clients = {throughput:.2}/s = {:.2} of the bound (target >= 0.9)",
        throughput / bound
    );

    // The same bcrypt work whether or not the email exists: sequential failed logins, timed.
    let auth = app.auth();
    let timed = |email: &'static str| {
        let mut auth = auth.clone();
        async move {
            let mut samples = Vec::new();
            for _ in 0..10 {
                let request = pb::LoginRequest {
                    workspace_slug: "bench".into(),
                    email: email.into(),
                    password: "not the password".into(),
                };
                let started = Instant::now();
                auth.login(request).await.expect_err("refused");
                samples.push(started.elapsed());
            }
            median(samples)
        }
    };
    let wrong_password = timed("admin@bench.example").await;
    let unknown_email = timed("nobody@bench.example").await;
    println!(
        "login: failed login, median of 10: wrong password {:.1} ms, unknown email {:.1} ms",
        wrong_password.as_secs_f64() * 1000.0,
        unknown_email.as_secs_f64() * 1000.0
    );
    app.stop().await.expect("stop");
}

async fn startup() {
    let exe = std::env::current_exe().expect("exe");
    let rosterd = exe.parent().and_then(|deps| deps.parent()).map(|dir| dir.join("rosterd")).expect("target dir");
    assert!(rosterd.exists(), "build it first: cargo build --release -p rosterd ({})", rosterd.display());
    let runs = setting("BENCH_STARTS", 10);
    let mut samples = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir().expect("dir");
        let port = unused_port();
        let started = Instant::now();
        let mut child = Command::new(&rosterd)
            .env_clear()
            .env("ROSTER_LISTEN", format!("127.0.0.1:{port}"))
            .env("ROSTER_DATABASE_URL", format!("sqlite://{}", dir.path().join("roster.db").display()))
            .env("ROSTER_SERVICE_KEYS", format!("{SERVICE_NAME}={SERVICE_KEY}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rosterd");
        let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("uri");
        let serving = loop {
            if let Ok(channel) = channel.connect().await {
                let mut health = HealthClient::new(channel);
                if let Ok(answer) = health.check(HealthCheckRequest { service: String::new() }).await
                    && answer.into_inner().status() == ServingStatus::Serving
                {
                    break started.elapsed();
                }
            }
            assert!(started.elapsed() < Duration::from_secs(30), "rosterd did not start");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        samples.push(serving);
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let _ = child.wait();
    }
    let max = samples.iter().max().copied().unwrap_or_default();
    println!(
        "startup: fresh SQLite file to SERVING, {runs} runs: median {:.0} ms, max {:.0} ms (target <= 300 ms)",
        median(samples).as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    );
}

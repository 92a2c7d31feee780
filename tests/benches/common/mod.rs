//! What the gRPC benchmarks share: settings from the environment and a closed-loop load generator.

use roster_proto::v1 as pb;
use roster_tests::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Where the PostgreSQL benchmarks run when `ROSTER_TEST_DATABASE_URL` is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Runs a PostgreSQL benchmark's `run` on a multi-threaded runtime, at `ROSTER_TEST_DATABASE_URL`
/// or [`DEFAULT_URL`].
#[allow(dead_code, reason = "each benchmark compiles this module; only the PostgreSQL ones use it")]
pub fn on_postgres<F: std::future::Future<Output = ()>>(run: impl FnOnce() -> F) {
    if std::env::var("ROSTER_TEST_DATABASE_URL").is_err() {
        // SAFETY: no other thread runs yet.
        unsafe { std::env::set_var("ROSTER_TEST_DATABASE_URL", DEFAULT_URL) };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

/// A numeric setting from the environment, or `default`.
pub fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The median of `values` (the mean of the middle two when there is an even number of them).
#[allow(dead_code, reason = "each benchmark compiles this module; only some take medians")]
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) { (values[middle - 1] + values[middle]) / 2.0 } else { values[middle] }
}

/// The CPU time a process has used (user and system), from `/proc/<pid>/stat`: what a call costs
/// the server, apart from the load generator sharing its cores.
#[allow(dead_code, reason = "each benchmark compiles this module; only some measure CPU time")]
pub struct CpuClock {
    stat: String,
    ticks_per_second: f64,
}

#[allow(dead_code, reason = "each benchmark compiles this module; only some measure CPU time")]
impl CpuClock {
    pub fn of(pid: u32) -> Self {
        Self { stat: format!("/proc/{pid}/stat"), ticks_per_second: ticks_per_second() }
    }

    /// CPU seconds used so far.
    pub fn seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(&self.stat).expect("read /proc/<pid>/stat");
        stat_ticks(&stat).1 / self.ticks_per_second
    }
}

/// The CPU seconds used so far by each running process whose command name is `comm`, by pid: the
/// cost of a server that forks a process per connection, as PostgreSQL does.
#[allow(dead_code, reason = "each benchmark compiles this module; only some measure CPU time")]
pub fn cpu_seconds_of_all(comm: &str) -> std::collections::HashMap<u32, f64> {
    let ticks_per_second = ticks_per_second();
    let mut seconds = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        // A process may exit between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let (name, ticks) = stat_ticks(&stat);
        if name == comm {
            seconds.insert(pid, ticks / ticks_per_second);
        }
    }
    seconds
}

fn ticks_per_second() -> f64 {
    let ticks = std::process::Command::new("getconf").arg("CLK_TCK").output().expect("getconf CLK_TCK");
    String::from_utf8_lossy(&ticks.stdout).trim().parse().expect("CLK_TCK")
}

/// A `/proc/<pid>/stat` line's command name and CPU ticks (user and system).
fn stat_ticks(stat: &str) -> (&str, f64) {
    // "pid (comm) state ...": the name may hold spaces and parentheses, so it ends at the last ')'.
    let (open, close) = (stat.find('(').expect("comm"), stat.rfind(')').expect("comm"));
    // After "pid (comm) ", the fields start at the state (field 3); utime and stime are 14 and 15.
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    let ticks = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    (&stat[open + 1..close], ticks)
}

/// What a closed loop measured.
#[allow(dead_code, reason = "each benchmark compiles this module; only some read every figure")]
pub struct Load {
    pub calls: u64,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Load {
    #[allow(dead_code, reason = "each benchmark compiles this module; only some read every figure")]
    pub fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
    }
}

/// `concurrency` tasks over `channels`, each calling `call` back to back for `seconds`.
pub async fn closed_loop<F, Fut>(channels: &[Channel], concurrency: usize, seconds: u64, call: F) -> Load
where
    F: Fn(Channel, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let channel = channels[i % channels.len()].clone();
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = i;
            while Instant::now() < deadline {
                let t = Instant::now();
                call(channel.clone(), n).await;
                latencies.push(t.elapsed());
                n += concurrency;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("load task"));
    }
    Load { calls: latencies.len() as u64, elapsed: started.elapsed(), latencies }
}

/// Creates `k` agents in a new load-balanced team; their ids.
pub async fn team(app: &TestApp, workspace_id: &str, name: &str, k: usize) -> (String, Vec<String>) {
    let request = pb::CreateTeamRequest {
        workspace_id: workspace_id.into(),
        name: name.into(),
        strategy: pb::Strategy::LoadBalanced as i32,
    };
    let team = app.teams().create_team(service(request)).await.expect("team").into_inner().team.expect("team");
    let mut agents = Vec::new();
    for i in 0..k {
        let request = pb::CreateUserRequest {
            workspace_id: workspace_id.into(),
            email: format!("{}-{i}@bench.example", name.to_lowercase()),
            full_name: format!("{name} {i}"),
            password: PASSWORD.into(),
            role: "agent".into(),
            request_id: String::new(),
        };
        let user = app.users().create_user(service(request)).await.expect("agent").into_inner().user.expect("user");
        let request = pb::AddTeamMemberRequest {
            workspace_id: workspace_id.into(),
            team_id: team.id.clone(),
            user_id: user.id.clone(),
            max_open_conversations: None,
        };
        app.teams().add_team_member(service(request)).await.expect("member");
        agents.push(user.id);
    }
    (team.id, agents)
}

/// `clients` callers of AssignConversation for `seconds`, each conversation new, spread over `teams`.
pub async fn assign_load(
    channels: &[Channel],
    clients: usize,
    workspace_id: &str,
    teams: &[String],
    round: &str,
    seconds: u64,
) -> Load {
    let (workspace_id, teams, round) =
        (Arc::new(workspace_id.to_owned()), Arc::new(teams.to_vec()), Arc::new(round.to_owned()));
    closed_loop(channels, clients, seconds, move |channel, n| {
        let request = service(pb::AssignConversationRequest {
            workspace_id: workspace_id.to_string(),
            conversation_id: format!("{round}-{n}"),
            team_id: teams[n % teams.len()].clone(),
            assignee_id: String::new(),
            transfer: false,
            override_availability: false,
        });
        async move {
            let mut client = pb::assignment_service_client::AssignmentServiceClient::new(channel);
            let answer = client.assign_conversation(request).await.expect("assign").into_inner();
            assert!(!answer.assignment.expect("assignment").assignee_id.is_empty(), "unlimited capacity: assigned");
        }
    })
    .await
}

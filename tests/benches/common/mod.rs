//! What the gRPC benchmarks share: settings from the environment and a closed-loop load generator.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

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
        let ticks = std::process::Command::new("getconf").arg("CLK_TCK").output().expect("getconf CLK_TCK");
        let ticks_per_second = String::from_utf8_lossy(&ticks.stdout).trim().parse().expect("CLK_TCK");
        Self { stat: format!("/proc/{pid}/stat"), ticks_per_second }
    }

    /// CPU seconds used so far.
    pub fn seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(&self.stat).expect("read /proc/<pid>/stat");
        // After "pid (comm) ", the fields start at the state (field 3); utime and stime are 14 and 15.
        let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..].split(' ').collect();
        let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
        ticks / self.ticks_per_second
    }
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

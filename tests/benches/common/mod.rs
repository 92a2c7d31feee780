//! What the gRPC benchmarks share: settings from the environment and a closed-loop load generator.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// A numeric setting from the environment, or `default`.
pub fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What a closed loop measured.
pub struct Load {
    pub calls: u64,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Load {
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

//! Numbers about processes and samples: latency percentiles, CPU time and
//! resident memory read from `/proc` (the server's, given its pid, and the
//! bench's own).

use std::time::{Duration, Instant};

use serde::Serialize;

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub n: u64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Percentiles {
    /// Summarises microsecond samples (sorts them in place).
    pub fn of_us(samples: &mut [u32]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i] as f64 / 1000.0
        };
        Percentiles {
            n: samples.len() as u64,
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// Clock ticks per second of `/proc/*/stat` times (USER_HZ; 100 on Linux).
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds consumed so far by `pid` ("self" for the bench).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// A `/proc/<pid>/status` field in kB (e.g. "VmRSS", "VmHWM"), as MiB.
pub fn status_mib(pid: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Open-file limit of this process (soft), from `/proc/self/limits`.
pub fn nofile_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// CPU use of the server and the bench over one measured interval, and the
/// server's peak resident memory sampled during it.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    /// Server CPU, in cores (1.0 = one core busy the whole time); None without a pid.
    pub server_cpu: Option<f64>,
    /// Server CPU seconds consumed during the interval.
    pub server_cpu_s: Option<f64>,
    /// Peak server RSS sampled during the interval, MiB.
    pub server_rss_peak_mib: Option<f64>,
    /// The bench's own CPU, in cores.
    pub bench_cpu: f64,
}

/// Samples the server's RSS in the background while a workload runs.
pub struct UsageMeter {
    pid: Option<u32>,
    started: Instant,
    server_cpu0: Option<f64>,
    bench_cpu0: f64,
    peak: std::sync::Arc<std::sync::Mutex<Option<f64>>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl UsageMeter {
    /// Starts measuring (samples RSS every 50 ms).
    pub fn start(pid: Option<u32>) -> UsageMeter {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let peak = std::sync::Arc::new(std::sync::Mutex::new(None::<f64>));
        if let Some(pid) = pid {
            let peak = peak.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if let Some(rss) = status_mib(&pid.to_string(), "VmRSS") {
                                let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                                *p = Some(p.map_or(rss, |old: f64| old.max(rss)));
                            }
                        }
                        _ = stopped.changed() => break,
                    }
                }
            });
        }
        UsageMeter {
            pid,
            started: Instant::now(),
            server_cpu0: pid.and_then(|p| cpu_seconds(&p.to_string())),
            bench_cpu0: cpu_seconds("self").unwrap_or(0.0),
            peak,
            stop,
        }
    }

    /// Stops and reports.
    pub fn finish(self) -> Usage {
        let _ = self.stop.send(true);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let server_cpu_s = match (self.pid, self.server_cpu0) {
            (Some(pid), Some(c0)) => cpu_seconds(&pid.to_string()).map(|c1| c1 - c0),
            _ => None,
        };
        let server_cpu = server_cpu_s.map(|s| s / secs);
        let bench_cpu = (cpu_seconds("self").unwrap_or(0.0) - self.bench_cpu0) / secs;
        let mut peak = *self.peak.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rss) = self
            .pid
            .and_then(|pid| status_mib(&pid.to_string(), "VmRSS"))
        {
            peak = Some(peak.map_or(rss, |p| p.max(rss)));
        }
        Usage {
            server_cpu,
            server_cpu_s,
            server_rss_peak_mib: peak,
            bench_cpu,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_nearest_rank() {
        let mut v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        let p = Percentiles::of_us(&mut v);
        assert_eq!((p.p50_ms, p.p99_ms, p.max_ms), (50.0, 99.0, 100.0));
    }

    #[test]
    fn own_process_usage_is_readable() {
        assert!(cpu_seconds("self").is_some());
        assert!(status_mib("self", "VmRSS").unwrap() > 0.0);
    }
}

//! Numbers about processes and samples: latency percentiles, CPU time and
//! resident memory read from `/proc` (the server's, given its pid, and the
//! bench's own), and what the disk did meanwhile ([`DiskProbe`]).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// How often the [`DiskProbe`] syncs a write.
pub const DISK_PROBE_EVERY: Duration = Duration::from_millis(50);

/// A probe sync longer than this marks a row's disk as stalled (a calm
/// disk here syncs a small write in 0.2-1 ms).
pub const DISK_STALL_MS: f64 = 20.0;

/// Times a small synced write (`pwrite` of 100 bytes over a preallocated
/// file, then `fdatasync`) every [`DISK_PROBE_EVERY`] on a thread of its
/// own while a workload runs, in the directory servers keep their data in.
///
/// A server that is durable before it broadcasts waits for each of its
/// syncs, so a disk stall (on this project's VMs a sync now and then takes
/// 50 ms to over a second) is every delivery's tail in those seconds,
/// whatever the server does; an in-memory server never sees it. The probe
/// says, for each row, whether that happened: its longest sync is the
/// disk's, not the server's. 20 small syncs a second load the disk by
/// about 1 % of what the fan-out points' servers sync.
pub struct DiskProbe {
    stop: Arc<AtomicBool>,
    took_us: Arc<Mutex<Vec<u32>>>,
    thread: std::thread::JoinHandle<()>,
    path: PathBuf,
}

impl DiskProbe {
    /// Starts probing with a fresh file in `dir`; None if it cannot be made.
    pub fn start(dir: &Path) -> Option<DiskProbe> {
        static PROBES: AtomicU64 = AtomicU64::new(0);
        let n = PROBES.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(
            "tandem-bench-disk-probe-{}-{n}",
            std::process::id()
        ));
        let file = std::fs::File::create(&path).ok()?;
        // Written and synced whole first: a probe write changes no size.
        let prepared = file
            .write_all_at(&[0u8; 16 * 4096], 0)
            .and_then(|()| file.sync_all());
        if prepared.is_err() {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let took_us = Arc::new(Mutex::new(Vec::new()));
        let (stopped, took) = (stop.clone(), took_us.clone());
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !stopped.load(Ordering::Relaxed) {
                let at = (i % 16) * 4096;
                i += 1;
                let started = Instant::now();
                if file.write_all_at(&[0x5a; 100], at).is_err() || file.sync_data().is_err() {
                    break;
                }
                let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                took.lock().unwrap_or_else(|e| e.into_inner()).push(us);
                std::thread::sleep(DISK_PROBE_EVERY);
            }
        });
        Some(DiskProbe {
            stop,
            took_us,
            thread,
            path,
        })
    }

    /// Syncs timed so far.
    pub fn timed(&self) -> usize {
        self.took_us.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Stops probing and summarises the syncs it timed.
    pub fn finish(self) -> Percentiles {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let _ = std::fs::remove_file(&self.path);
        let mut took = std::mem::take(&mut *self.took_us.lock().unwrap_or_else(|e| e.into_inner()));
        Percentiles::of_us(&mut took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_probe_times_syncs_until_finished_and_removes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let probe = DiskProbe::start(dir.path()).expect("probe starts in a temp dir");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while probe.timed() < 3 {
            assert!(Instant::now() < deadline, "no 3 syncs timed in 30 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = probe.finish();
        assert!(took.n >= 3, "the syncs timed are summarised: {took:?}");
        assert!(took.max_ms >= took.p50_ms);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "file removed"
        );
    }

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

//! One result row per workload point, printed as a Markdown table row and as
//! a JSON line, and the comparison of two servers (ratios, and their median
//! over rounds).

use serde::Serialize;

use crate::measure::{Percentiles, Usage};

/// One measured point of one workload on one server.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// "fanout", "throughput", "connections", "cold-join", "restart".
    pub workload: String,
    /// The point's parameters, e.g. "10x5@10/s".
    pub point: String,
    /// Which server.
    pub server: String,
    /// Latency percentiles (what "latency" means depends on the workload).
    pub latency: Option<Percentiles>,
    /// The workload's rate figure (deliveries/s, updates/s, ...).
    pub rate: Option<f64>,
    /// Unit of `rate`.
    pub rate_unit: String,
    /// Deliveries that never arrived (fan-out/connections probe), or edits
    /// lost (durability).
    pub missing: Option<u64>,
    /// Updates the server delivered to clients during the measured interval:
    /// the denominator of the CPU-per-delivered-update column.
    pub delivered: Option<u64>,
    /// Server CPU (cores) and peak RSS, bench CPU.
    pub usage: Usage,
    /// Did the point complete with correct content and no errors?
    pub ok: bool,
    /// What else a reader needs (content check, saturation, errors).
    pub note: String,
    /// Workload-specific numbers.
    pub detail: serde_json::Value,
}

/// Markdown header matching [`Row::markdown`].
pub const HEADER: &str = "| workload | point | server | p50 ms | p99 ms | max ms | rate | missing | server CPU | CPU µs/deliv | server RSS MiB | bench CPU | ok | note |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|";

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.digits$}"))
}

impl Row {
    /// An empty, not-ok row of `workload` at `point` on `server`, to fill in.
    pub fn new(workload: &str, point: &str, server: &str) -> Row {
        Row {
            workload: workload.to_string(),
            point: point.to_string(),
            server: server.to_string(),
            latency: None,
            rate: None,
            rate_unit: String::new(),
            missing: None,
            delivered: None,
            usage: Usage::default(),
            ok: false,
            note: String::new(),
            detail: serde_json::Value::Null,
        }
    }

    /// Server CPU microseconds per update delivered to a client: what each
    /// delivery costs, durability included.
    pub fn cpu_us_per_delivery(&self) -> Option<f64> {
        match (self.usage.server_cpu_s, self.delivered) {
            (Some(s), Some(n)) if n > 0 => Some(s * 1e6 / n as f64),
            _ => None,
        }
    }

    /// The row as a Markdown table line.
    pub fn markdown(&self) -> String {
        let l = self.latency;
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} |",
            self.workload,
            self.point,
            self.server,
            opt(l.map(|l| l.p50_ms), 2),
            opt(l.map(|l| l.p99_ms), 2),
            opt(l.map(|l| l.max_ms), 2),
            self.rate
                .map_or("-".to_string(), |r| format!("{r:.0} {}", self.rate_unit)),
            self.missing.map_or("-".to_string(), |m| m.to_string()),
            opt(self.usage.server_cpu, 2),
            opt(self.cpu_us_per_delivery(), 1),
            opt(self.usage.server_rss_peak_mib, 1),
            self.usage.bench_cpu,
            if self.ok { "yes" } else { "NO" },
            self.note.replace('|', "/"),
        )
    }

    /// The row as one JSON line.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Prints the row: Markdown to stdout, JSON to stderr-free stdout after it.
    pub fn print(&self) {
        println!("{}", self.markdown());
        println!("{}", self.json());
    }
}

/// Tandem / reference for the same workload point.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// Workload.
    pub workload: String,
    /// Point.
    pub point: String,
    /// p99 latency ratio (lower is better for Tandem).
    pub p99: Option<f64>,
    /// Rate ratio (higher is better for Tandem).
    pub rate: Option<f64>,
    /// Peak RSS ratio (lower is better).
    pub rss: Option<f64>,
    /// Server CPU ratio (lower is better).
    pub cpu: Option<f64>,
    /// CPU per delivered update ratio (lower is better).
    pub cpu_per_delivery: Option<f64>,
}

fn div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Pairs rows of `a` with rows of `b` by (workload, point) and divides.
pub fn ratios(a: &[Row], b: &[Row]) -> Vec<Ratio> {
    a.iter()
        .filter_map(|ra| {
            let rb = b
                .iter()
                .find(|rb| rb.workload == ra.workload && rb.point == ra.point)?;
            Some(Ratio {
                workload: ra.workload.clone(),
                point: ra.point.clone(),
                p99: div(ra.latency.map(|l| l.p99_ms), rb.latency.map(|l| l.p99_ms)),
                rate: div(ra.rate, rb.rate),
                rss: div(ra.usage.server_rss_peak_mib, rb.usage.server_rss_peak_mib),
                cpu: div(ra.usage.server_cpu, rb.usage.server_cpu),
                cpu_per_delivery: div(ra.cpu_us_per_delivery(), rb.cpu_us_per_delivery()),
            })
        })
        .collect()
}

/// The median of each ratio over several rounds of the same suite, per
/// (workload, point), in the order of the first round that has the point.
/// A round without a value for a ratio does not count for it; an even
/// count takes the mean of the middle two.
pub fn median_ratios(rounds: &[Vec<Ratio>]) -> Vec<Ratio> {
    let mut points: Vec<(String, String)> = Vec::new();
    for r in rounds.iter().flatten() {
        let key = (r.workload.clone(), r.point.clone());
        if !points.contains(&key) {
            points.push(key);
        }
    }
    points
        .into_iter()
        .map(|(workload, point)| {
            let at: Vec<&Ratio> = rounds
                .iter()
                .flatten()
                .filter(|r| r.workload == workload && r.point == point)
                .collect();
            let median_of = |field: fn(&Ratio) -> Option<f64>| {
                median(at.iter().filter_map(|r| field(r)).collect())
            };
            Ratio {
                p99: median_of(|r| r.p99),
                rate: median_of(|r| r.rate),
                rss: median_of(|r| r.rss),
                cpu: median_of(|r| r.cpu),
                cpu_per_delivery: median_of(|r| r.cpu_per_delivery),
                workload,
                point,
            }
        })
        .collect()
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Markdown table of ratios.
pub fn ratio_table(ratios: &[Ratio], a: &str, b: &str) -> String {
    let mut out = format!(
        "| workload | point | p99 {a}/{b} | rate {a}/{b} | RSS {a}/{b} | CPU {a}/{b} | CPU/deliv {a}/{b} |\n|---|---|---:|---:|---:|---:|---:|\n"
    );
    for r in ratios {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.workload,
            r.point,
            opt(r.p99, 2),
            opt(r.rate, 2),
            opt(r.rss, 2),
            opt(r.cpu, 2),
            opt(r.cpu_per_delivery, 2)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratio(point: &str, p99: Option<f64>, cpu_per_delivery: Option<f64>) -> Ratio {
        Ratio {
            workload: "fanout".to_string(),
            point: point.to_string(),
            p99,
            rate: None,
            rss: None,
            cpu: None,
            cpu_per_delivery,
        }
    }

    #[test]
    fn the_median_of_rounds_is_taken_per_point_and_per_ratio() {
        let rounds = vec![
            vec![
                ratio("a", Some(0.9), Some(0.4)),
                ratio("b", Some(2.0), None),
            ],
            vec![
                ratio("a", Some(0.3), Some(0.6)),
                ratio("b", Some(1.0), None),
            ],
            vec![ratio("a", Some(0.5), Some(0.5))],
        ];
        let m = median_ratios(&rounds);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].point.as_str(), m[0].p99), ("a", Some(0.5)));
        assert_eq!(m[0].cpu_per_delivery, Some(0.5));
        // Two rounds measured b: the mean of the middle two; none had a CPU ratio.
        assert_eq!((m[1].point.as_str(), m[1].p99), ("b", Some(1.5)));
        assert_eq!(m[1].cpu_per_delivery, None);
        assert_eq!(m[1].rate, None);
    }
}

//! What a run measured, as the printed table and as JSON: per operation count, ops/s,
//! p50/p99/p999 latency and errors by code; the bare echo baseline and the ratio to it; the
//! services' memory; how logins were rationed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use crate::echo::EchoFigures;
use crate::memory::Measurement;
use crate::mix::{Mix, OPS, Op};
use crate::stats::{Latencies, OpStats, ms};

/// One row of the table.
#[derive(Clone, Debug)]
pub struct OpSummary {
    pub name: String,
    pub count: usize,
    pub rate: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub errors: BTreeMap<String, u64>,
}

impl OpSummary {
    fn new(name: &str, latencies: &Latencies, errors: BTreeMap<String, u64>, elapsed: Duration) -> Self {
        Self {
            name: name.to_owned(),
            count: latencies.len(),
            rate: latencies.len() as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
            p50: latencies.percentile(0.5),
            p99: latencies.percentile(0.99),
            p999: latencies.percentile(0.999),
            errors,
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "count": self.count,
            "ops_per_second": self.rate,
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "p999_ms": ms(self.p999),
            "errors": self.errors,
        })
    }
}

/// How logins were rationed under the once-per-TOTP-step rule.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoginRationing {
    /// Whether the mesh's clock could be moved (the test kit) or is real time.
    pub movable_clock: bool,
    /// Times the clock was moved on 30 s.
    pub clock_advances: u64,
    /// 2 ms waits for a login turn (movable clock), not timed.
    pub waits: u64,
    /// Logins drawn when every user had logged in during the current step (real time): not run.
    pub unavailable: u64,
}

/// A run's results.
#[derive(Clone, Debug)]
pub struct Report {
    pub label: String,
    pub patients: usize,
    pub doctors: usize,
    pub workers: usize,
    pub mix: Mix,
    pub elapsed: Duration,
    pub operations: Vec<OpSummary>,
    pub total: OpSummary,
    pub echo: EchoFigures,
    pub memory_scope: String,
    pub memory: Vec<Measurement>,
    pub logins: LoginRationing,
    pub session_refreshes: u64,
    pub setup: Duration,
}

impl Report {
    pub(crate) fn summarize(stats: &BTreeMap<Op, OpStats>, elapsed: Duration) -> (Vec<OpSummary>, OpSummary) {
        let mut operations = Vec::new();
        let mut all = Vec::new();
        let mut all_errors = BTreeMap::new();
        for op in OPS {
            let Some(stats) = stats.get(&op) else {
                continue;
            };
            let latencies = Latencies::sorted(stats.latencies.clone());
            all.extend_from_slice(&stats.latencies);
            for (kind, count) in &stats.errors {
                *all_errors.entry(kind.clone()).or_default() += count;
            }
            operations.push(OpSummary::new(op.name(), &latencies, stats.errors.clone(), elapsed));
        }
        let total = OpSummary::new("all", &Latencies::sorted(all), all_errors, elapsed);
        (operations, total)
    }

    /// The operation named `name`, if it ran.
    pub fn operation(&self, name: &str) -> Option<&OpSummary> {
        self.operations.iter().find(|op| op.name == name)
    }

    /// Mesh ops/s over echo ops/s.
    pub fn ratio(&self) -> f64 {
        self.total.rate / self.echo.rate.max(f64::MIN_POSITIVE)
    }

    /// The printed table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "mesh load benchmark on {}: {} patients, {} doctors, 1 auditor, {} workers, {:.1} s, mix {}",
            self.label,
            self.patients,
            self.doctors,
            self.workers,
            self.elapsed.as_secs_f64(),
            self.mix
        );
        let _ = writeln!(
            out,
            "  {:<14} {:>8} {:>9} {:>9} {:>9} {:>9}  errors",
            "operation", "count", "ops/s", "p50 ms", "p99 ms", "p999 ms"
        );
        for op in &self.operations {
            let errors = if op.errors.is_empty() {
                "-".to_owned()
            } else {
                op.errors
                    .iter()
                    .map(|(kind, count)| format!("{kind}: {count}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "  {:<14} {:>8} {:>9.1} {:>9.2} {:>9.2} {:>9.2}  {errors}",
                op.name,
                op.count,
                op.rate,
                ms(op.p50),
                ms(op.p99),
                ms(op.p999)
            );
        }
        let _ = writeln!(
            out,
            "  {:<14} {:>8} {:>9.1} {:>9.2} {:>9.2} {:>9.2}  {} errors",
            "all",
            self.total.count,
            self.total.rate,
            ms(self.total.p50),
            ms(self.total.p99),
            ms(self.total.p999),
            self.total.error_count()
        );
        let _ = writeln!(
            out,
            "  bare tonic unary echo, same TLS, {} tasks, 1 KB: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms",
            self.echo.tasks,
            self.echo.rate,
            ms(self.echo.p50),
            ms(self.echo.p99),
            ms(self.echo.p999)
        );
        let _ = writeln!(out, "  mesh ops/s / echo ops/s: {:.2} %", self.ratio() * 100.0);
        if self.memory.is_empty() {
            let _ = writeln!(out, "  memory: not measured ({})", self.memory_scope);
        }
        for process in &self.memory {
            let _ = writeln!(out, "  memory ({}): {}", self.memory_scope, process.line());
        }
        let logins = &self.logins;
        let rationing = if logins.movable_clock {
            format!(
                "the mesh clock moved {} x 30 s for logins ({} 2 ms waits for a login turn, not timed)",
                logins.clock_advances, logins.waits
            )
        } else {
            format!(
                "{} logins drawn when every user had logged in during the current 30 s TOTP step (not run; another operation drawn)",
                logins.unavailable
            )
        };
        let _ = writeln!(
            out,
            "  setup {:.1} s; {rationing}; {} session refreshes",
            self.setup.as_secs_f64(),
            self.session_refreshes
        );
        out
    }

    /// The same figures as JSON.
    pub fn json(&self) -> serde_json::Value {
        let operations: serde_json::Map<String, serde_json::Value> =
            self.operations.iter().map(|op| (op.name.clone(), op.json())).collect();
        let peaks: Option<Vec<u64>> = self.memory.iter().map(|m| m.peak_during_load_kib).collect();
        json!({
            "target": self.label,
            "patients": self.patients,
            "doctors": self.doctors,
            "auditors": 1,
            "workers": self.workers,
            "seconds": self.elapsed.as_secs_f64(),
            "mix": self.mix.to_string(),
            "operations": operations,
            "total": {
                "count": self.total.count,
                "errors": self.total.error_count(),
                "errors_by_code": self.total.errors,
                "ops_per_second": self.total.rate,
                "p50_ms": ms(self.total.p50),
                "p99_ms": ms(self.total.p99),
                "p999_ms": ms(self.total.p999),
            },
            "echo_baseline": self.echo.json(),
            "mesh_to_echo_ratio": self.ratio(),
            "memory": {
                "scope": self.memory_scope,
                "peak_rss_during_load_kib": peaks.filter(|peaks| !peaks.is_empty()).map(|peaks| peaks.iter().sum::<u64>()),
                "processes": self.memory.iter().map(Measurement::json).collect::<Vec<_>>(),
            },
            "logins": {
                "clock": if self.logins.movable_clock { "manual" } else { "real time" },
                "clock_advances": self.logins.clock_advances,
                "turn_waits": self.logins.waits,
                "unavailable": self.logins.unavailable,
            },
            "session_refreshes": self.session_refreshes,
            "setup_seconds": self.setup.as_secs_f64(),
        })
    }
}

/// The machine the run was on, for the JSON.
pub fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|line| {
                line.strip_prefix("model name")
                    .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let memory_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        info.lines().find_map(|line| {
            line.strip_prefix("MemTotal:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })
    });
    json!({
        "cpus": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        "cpu_model": cpu,
        "memory_kib": memory_kib,
        "os": std::env::consts::OS,
    })
}

//! The services' memory, read from Linux's `/proc`: the peak resident set (`VmHWM`) is reset to the
//! current one by writing `5` to `/proc/<pid>/clear_refs` (Linux >= 4.0) just before the load, and
//! read with the current one (`VmRSS`) from `/proc/<pid>/status` after it. When a figure cannot be
//! read (another OS, another user's process, a process that has exited) the report says why.

use serde_json::json;

/// Which process to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pid {
    /// The load generator's own process (the test kit's mesh runs in it).
    This,
    Of(u32),
}

impl Pid {
    fn dir(&self) -> String {
        match self {
            Pid::This => "/proc/self".to_owned(),
            Pid::Of(pid) => format!("/proc/{pid}"),
        }
    }

    /// The process id, for the report.
    pub fn id(&self) -> u32 {
        match self {
            Pid::This => std::process::id(),
            Pid::Of(pid) => *pid,
        }
    }
}

/// One process whose memory the report shows.
#[derive(Clone, Debug)]
pub struct Process {
    /// What runs in it (`caremesh up`, `auth-svc`, ...).
    pub name: String,
    pub pid: Pid,
    /// Its resident set before the mesh started, when the caller measured it.
    pub rss_before_kib: Option<u64>,
}

/// How the run reads the services' memory.
#[derive(Clone, Debug)]
pub struct MemoryProbe {
    /// What the figures cover, in words (e.g. "one process: the five services and the load
    /// generator").
    pub scope: String,
    pub processes: Vec<Process>,
}

impl MemoryProbe {
    /// Nothing to measure.
    pub fn none(reason: &str) -> Self {
        Self {
            scope: reason.to_owned(),
            processes: Vec::new(),
        }
    }

    pub(crate) fn after_setup(&self) -> Vec<Measurement> {
        self.processes
            .iter()
            .map(|process| {
                let rss_after_setup_kib = status_kib(&process.pid, "VmRSS");
                let peak_reset = std::fs::write(format!("{}/clear_refs", process.pid.dir()), "5").is_ok();
                Measurement {
                    name: process.name.clone(),
                    pid: process.pid.id(),
                    rss_before_kib: process.rss_before_kib,
                    rss_after_setup_kib,
                    peak_reset,
                    peak_during_load_kib: None,
                    rss_after_load_kib: None,
                    problem: None,
                }
            })
            .collect()
    }

    pub(crate) fn after_load(&self, measurements: &mut [Measurement]) {
        for (process, measurement) in self.processes.iter().zip(measurements.iter_mut()) {
            measurement.peak_during_load_kib = status_kib(&process.pid, "VmHWM");
            measurement.rss_after_load_kib = status_kib(&process.pid, "VmRSS");
            measurement.problem = match (measurement.peak_during_load_kib, measurement.peak_reset) {
                (None, _) => Some(format!(
                    "cannot read {}/status (not Linux, not this user's process, or it has exited)",
                    process.pid.dir()
                )),
                (Some(_), false) => Some(format!(
                    "cannot write {}/clear_refs: the peak is since the process started",
                    process.pid.dir()
                )),
                (Some(_), true) => None,
            };
        }
    }
}

/// One process's figures.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub name: String,
    pub pid: u32,
    pub rss_before_kib: Option<u64>,
    pub rss_after_setup_kib: Option<u64>,
    /// Whether the peak was reset just before the load.
    pub peak_reset: bool,
    pub peak_during_load_kib: Option<u64>,
    pub rss_after_load_kib: Option<u64>,
    /// Why a figure is missing or means less than it says.
    pub problem: Option<String>,
}

impl Measurement {
    pub(crate) fn line(&self) -> String {
        let mut line = format!(
            "{} (pid {}): peak RSS during the load {}",
            self.name,
            self.pid,
            mib(self.peak_during_load_kib)
        );
        if let Some(before) = self.rss_before_kib {
            line.push_str(&format!(", RSS before the mesh started {}", mib(Some(before))));
        }
        line.push_str(&format!(
            ", after setup {}, after the load {}",
            mib(self.rss_after_setup_kib),
            mib(self.rss_after_load_kib)
        ));
        if let Some(problem) = &self.problem {
            line.push_str(&format!(" ({problem})"));
        }
        line
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        json!({
            "name": self.name,
            "pid": self.pid,
            "peak_rss_during_load_kib": self.peak_during_load_kib,
            "peak_reset_before_load": self.peak_reset,
            "rss_before_mesh_kib": self.rss_before_kib,
            "rss_after_setup_kib": self.rss_after_setup_kib,
            "rss_after_load_kib": self.rss_after_load_kib,
            "problem": self.problem,
        })
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmHWM`, `VmRSS`).
pub fn status_kib(pid: &Pid, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("{}/status", pid.dir())).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// `n/a` or whole MiB.
pub fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".to_owned(), |kib| format!("{:.0} MiB", kib as f64 / 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_measured_on_linux_and_a_missing_one_is_reported() {
        let probe = MemoryProbe {
            scope: "test".to_owned(),
            processes: vec![
                Process {
                    name: "me".to_owned(),
                    pid: Pid::This,
                    rss_before_kib: None,
                },
                Process {
                    name: "gone".to_owned(),
                    pid: Pid::Of(u32::MAX),
                    rss_before_kib: None,
                },
            ],
        };
        let mut measurements = probe.after_setup();
        probe.after_load(&mut measurements);
        if cfg!(target_os = "linux") {
            assert!(measurements[0].peak_during_load_kib.is_some());
        }
        assert!(measurements[1].peak_during_load_kib.is_none());
        assert!(measurements[1].problem.as_deref().unwrap().contains("cannot read"));
        assert!(measurements[1].line().contains("n/a"));
    }
}

//! Latency and error statistics: per operation, successes are timed and errors are counted by
//! gRPC code (or `local`, `protocol`, `tls`, `other` for failures on the SDK's side).

use std::collections::BTreeMap;
use std::time::Duration;

use caremesh_sdk::SdkError;

/// Latencies sorted ascending, for percentiles.
#[derive(Clone, Debug, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn sorted(mut latencies: Vec<Duration>) -> Self {
        latencies.sort_unstable();
        Self(latencies)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p` quantile (nearest rank, rounded); zero when empty.
    pub fn percentile(&self, p: f64) -> Duration {
        let Some(last) = self.0.len().checked_sub(1) else {
            return Duration::ZERO;
        };
        let index = ((last as f64) * p).round() as usize;
        self.0.get(index.min(last)).copied().unwrap_or_default()
    }
}

/// Milliseconds, for tables and JSON.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// What one operation kind did in a phase.
#[derive(Clone, Debug, Default)]
pub struct OpStats {
    /// Latency of every success.
    pub latencies: Vec<Duration>,
    /// Errors by kind (the gRPC code's name, or the SDK-side kind).
    pub errors: BTreeMap<String, u64>,
}

impl OpStats {
    pub fn merge(&mut self, other: OpStats) {
        self.latencies.extend(other.latencies);
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// How an error is counted: the gRPC code, or what failed on the SDK's side.
pub fn error_kind(error: &SdkError) -> String {
    match (error.code(), error) {
        (Some(code), _) => format!("{code:?}"),
        (None, SdkError::Local(_)) => "local".to_owned(),
        (None, SdkError::Protocol(_)) => "protocol".to_owned(),
        (None, SdkError::Tls(_)) => "tls".to_owned(),
        (None, _) => "other".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let latencies = Latencies::sorted((1..=1000).rev().map(Duration::from_millis).collect());
        assert_eq!(latencies.percentile(0.5), Duration::from_millis(501));
        assert_eq!(latencies.percentile(0.99), Duration::from_millis(990));
        assert_eq!(latencies.percentile(0.999), Duration::from_millis(999));
        assert_eq!(Latencies::default().percentile(0.5), Duration::ZERO);
    }

    #[test]
    fn errors_are_counted_by_code() {
        assert_eq!(
            error_kind(&SdkError::Status(tonic::Status::unavailable("x"))),
            "Unavailable"
        );
        assert_eq!(error_kind(&SdkError::Local("x".to_owned())), "local");
    }
}

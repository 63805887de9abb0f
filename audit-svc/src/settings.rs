//! audit-svc's own settings (`CAREMESH_AUDIT_*`), read through the same injectable environment
//! source as the mesh settings: the log's origin, the checkpoint cadence and the alert thresholds.

use std::time::Duration;

use caremesh_runtime::config::{ConfigError, EnvSource, bounded_u32};

/// One burst rule: `threshold` matching events within `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Burst {
    pub threshold: u32,
    pub window: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditSettings {
    /// The checkpoint origin line and signer key name.
    pub origin: String,
    /// How often the checkpointer looks for growth (a checkpoint is signed only if the tree grew).
    pub checkpoint_interval: Duration,
    /// Failed logins for one account.
    pub failed_login_account: Burst,
    /// Failed logins from one source address.
    pub failed_login_source: Burst,
    /// Denied accesses by one actor (logins excluded: they have their own rules).
    pub denial: Burst,
    /// Distinct patients read by one actor.
    pub many_patients: Burst,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            origin: "caremesh.local/audit".to_owned(),
            checkpoint_interval: Duration::from_secs(1),
            failed_login_account: Burst {
                threshold: 5,
                window: Duration::from_secs(300),
            },
            failed_login_source: Burst {
                threshold: 20,
                window: Duration::from_secs(300),
            },
            denial: Burst {
                threshold: 10,
                window: Duration::from_secs(300),
            },
            many_patients: Burst {
                threshold: 20,
                window: Duration::from_secs(600),
            },
        }
    }
}

pub const ORIGIN: &str = "CAREMESH_AUDIT_ORIGIN";
pub const CHECKPOINT_INTERVAL_MS: &str = "CAREMESH_AUDIT_CHECKPOINT_INTERVAL_MS";
pub const FAILED_LOGIN_ACCOUNT_THRESHOLD: &str = "CAREMESH_AUDIT_FAILED_LOGIN_ACCOUNT_THRESHOLD";
pub const FAILED_LOGIN_SOURCE_THRESHOLD: &str = "CAREMESH_AUDIT_FAILED_LOGIN_SOURCE_THRESHOLD";
pub const FAILED_LOGIN_WINDOW_SECONDS: &str = "CAREMESH_AUDIT_FAILED_LOGIN_WINDOW_SECONDS";
pub const DENIAL_THRESHOLD: &str = "CAREMESH_AUDIT_DENIAL_THRESHOLD";
pub const DENIAL_WINDOW_SECONDS: &str = "CAREMESH_AUDIT_DENIAL_WINDOW_SECONDS";
pub const MANY_PATIENTS_THRESHOLD: &str = "CAREMESH_AUDIT_MANY_PATIENTS_THRESHOLD";
pub const MANY_PATIENTS_WINDOW_SECONDS: &str = "CAREMESH_AUDIT_MANY_PATIENTS_WINDOW_SECONDS";

impl AuditSettings {
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut settings = Self::default();
        if let Some(origin) = env.get(ORIGIN) {
            let origin = origin.trim().to_owned();
            let valid = !origin.is_empty()
                && origin.len() <= 200
                && !origin.contains(char::is_whitespace)
                && !origin.contains('+');
            if !valid {
                return Err(invalid(
                    ORIGIN,
                    &origin,
                    "a non-empty name without spaces or '+', e.g. caremesh.local/audit",
                ));
            }
            settings.origin = origin;
        }
        if let Some(ms) = bounded_u32(env, CHECKPOINT_INTERVAL_MS, 10, 3_600_000, "10 to 3600000 milliseconds")? {
            settings.checkpoint_interval = Duration::from_millis(ms.into());
        }
        let thresholds = [
            (
                FAILED_LOGIN_ACCOUNT_THRESHOLD,
                &mut settings.failed_login_account.threshold,
            ),
            (
                FAILED_LOGIN_SOURCE_THRESHOLD,
                &mut settings.failed_login_source.threshold,
            ),
            (DENIAL_THRESHOLD, &mut settings.denial.threshold),
            (MANY_PATIENTS_THRESHOLD, &mut settings.many_patients.threshold),
        ];
        for (key, slot) in thresholds {
            if let Some(value) = bounded_u32(env, key, 1, 100_000, "1 to 100000")? {
                *slot = value;
            }
        }
        if let Some(seconds) = bounded_u32(env, FAILED_LOGIN_WINDOW_SECONDS, 1, 86_400, "1 to 86400 seconds")? {
            settings.failed_login_account.window = Duration::from_secs(seconds.into());
            settings.failed_login_source.window = Duration::from_secs(seconds.into());
        }
        if let Some(seconds) = bounded_u32(env, DENIAL_WINDOW_SECONDS, 1, 86_400, "1 to 86400 seconds")? {
            settings.denial.window = Duration::from_secs(seconds.into());
        }
        if let Some(seconds) = bounded_u32(env, MANY_PATIENTS_WINDOW_SECONDS, 1, 86_400, "1 to 86400 seconds")? {
            settings.many_patients.window = Duration::from_secs(seconds.into());
        }
        Ok(settings)
    }
}

fn invalid(key: &str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_owned(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use caremesh_runtime::config::MapEnv;

    use super::*;

    #[test]
    fn reads_thresholds_and_refuses_nonsense() {
        let env = MapEnv::default()
            .set(DENIAL_THRESHOLD, "3")
            .set(MANY_PATIENTS_WINDOW_SECONDS, "60");
        let settings = AuditSettings::from_env(&env).unwrap();
        assert_eq!(settings.denial.threshold, 3);
        assert_eq!(settings.many_patients.window, Duration::from_secs(60));
        assert!(AuditSettings::from_env(&MapEnv::default().set(DENIAL_THRESHOLD, "0")).is_err());
        assert!(AuditSettings::from_env(&MapEnv::default().set(ORIGIN, "a b")).is_err());
    }
}

//! abe-authority-svc's own settings, read through the injectable environment source
//! (`CAREMESH_ABE_*`).

use std::time::Duration;

use caremesh_runtime::config::{ConfigError, EnvSource, bounded_u32};

#[derive(Clone, Debug)]
pub struct AbeSettings {
    /// How long an ordinary user key is valid before the SDK must ask again.
    pub user_key_ttl: Duration,
    /// An emergency grant's window when the request names none.
    pub emergency_default: Duration,
    /// The longest emergency window granted (longer requests are lowered to it).
    pub emergency_max: Duration,
}

impl Default for AbeSettings {
    fn default() -> Self {
        Self {
            user_key_ttl: Duration::from_secs(24 * 3600),
            emergency_default: Duration::from_secs(3600),
            emergency_max: Duration::from_secs(4 * 3600),
        }
    }
}

pub const USER_KEY_TTL_SECONDS: &str = "CAREMESH_ABE_USER_KEY_TTL_SECONDS";
pub const EMERGENCY_DEFAULT_SECONDS: &str = "CAREMESH_ABE_EMERGENCY_DEFAULT_SECONDS";
pub const EMERGENCY_MAX_SECONDS: &str = "CAREMESH_ABE_EMERGENCY_MAX_SECONDS";

impl AbeSettings {
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut settings = Self::default();
        if let Some(seconds) = bounded_u32(env, USER_KEY_TTL_SECONDS, 60, 30 * 86_400, "60 to 2592000 seconds")? {
            settings.user_key_ttl = Duration::from_secs(seconds.into());
        }
        if let Some(seconds) = bounded_u32(env, EMERGENCY_MAX_SECONDS, 60, 86_400, "60 to 86400 seconds")? {
            settings.emergency_max = Duration::from_secs(seconds.into());
        }
        if let Some(seconds) = bounded_u32(env, EMERGENCY_DEFAULT_SECONDS, 60, 86_400, "60 to 86400 seconds")? {
            settings.emergency_default = Duration::from_secs(seconds.into());
        }
        settings.emergency_default = settings.emergency_default.min(settings.emergency_max);
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use caremesh_runtime::config::MapEnv;

    #[test]
    fn settings_are_read_bounded_and_consistent() {
        let defaults = AbeSettings::from_env(&MapEnv::default()).unwrap();
        assert_eq!(defaults.emergency_default, Duration::from_secs(3600));
        let env = MapEnv::default()
            .set(EMERGENCY_MAX_SECONDS, "600")
            .set(USER_KEY_TTL_SECONDS, "3600");
        let settings = AbeSettings::from_env(&env).unwrap();
        assert_eq!(settings.emergency_max, Duration::from_secs(600));
        assert_eq!(settings.emergency_default, Duration::from_secs(600));
        assert_eq!(settings.user_key_ttl, Duration::from_secs(3600));
        assert!(AbeSettings::from_env(&MapEnv::default().set(USER_KEY_TTL_SECONDS, "5")).is_err());
    }
}

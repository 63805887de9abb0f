//! messaging-svc's own settings, read through the same injectable environment source as the mesh
//! settings (`CAREMESH_MESSAGING_*`).

use std::time::Duration;

use caremesh_runtime::attachments::AttachmentLimits;
use caremesh_runtime::config::{ConfigError, EnvSource, bounded_u32};

#[derive(Clone, Debug)]
pub struct MessagingSettings {
    /// Below this many one-time prekeys the SDK is told to upload more.
    pub prekey_low_watermark: u32,
    /// Most one-time prekeys a user may have in stock.
    pub prekey_stock_limit: u32,
    /// How often expired messages are purged.
    pub purge_interval: Duration,
    /// How long a user's role and status (from auth-svc) are cached.
    pub profile_cache_ttl: Duration,
    /// How often a live stream re-checks storage even without a notification (a safety net for
    /// a lost PostgreSQL notification or listener reconnect).
    pub stream_poll_interval: Duration,
    /// Attachments: the largest file, each user's quota, how long an unsent one is kept
    /// (`CAREMESH_MESSAGING_ATTACHMENT_*`, see [`AttachmentLimits::from_env`]).
    pub attachments: AttachmentLimits,
}

impl Default for MessagingSettings {
    fn default() -> Self {
        Self {
            prekey_low_watermark: 20,
            prekey_stock_limit: 1000,
            purge_interval: Duration::from_secs(30),
            profile_cache_ttl: Duration::from_secs(30),
            stream_poll_interval: Duration::from_secs(5),
            attachments: AttachmentLimits::default(),
        }
    }
}

pub const PREKEY_LOW_WATERMARK: &str = "CAREMESH_MESSAGING_PREKEY_LOW_WATERMARK";
pub const PREKEY_STOCK_LIMIT: &str = "CAREMESH_MESSAGING_PREKEY_STOCK_LIMIT";
pub const PURGE_INTERVAL_SECONDS: &str = "CAREMESH_MESSAGING_PURGE_INTERVAL_SECONDS";
pub const PROFILE_CACHE_SECONDS: &str = "CAREMESH_MESSAGING_PROFILE_CACHE_SECONDS";
pub const STREAM_POLL_MILLIS: &str = "CAREMESH_MESSAGING_STREAM_POLL_MILLIS";

impl MessagingSettings {
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut settings = Self::default();
        if let Some(count) = bounded_u32(env, PREKEY_LOW_WATERMARK, 0, 100, "0 to 100")? {
            settings.prekey_low_watermark = count;
        }
        if let Some(count) = bounded_u32(env, PREKEY_STOCK_LIMIT, 100, 100_000, "100 to 100000")? {
            settings.prekey_stock_limit = count;
        }
        if let Some(seconds) = bounded_u32(env, PURGE_INTERVAL_SECONDS, 1, 86_400, "1 to 86400 seconds")? {
            settings.purge_interval = Duration::from_secs(seconds.into());
        }
        if let Some(seconds) = bounded_u32(env, PROFILE_CACHE_SECONDS, 0, 3_600, "0 to 3600 seconds")? {
            settings.profile_cache_ttl = Duration::from_secs(seconds.into());
        }
        if let Some(millis) = bounded_u32(env, STREAM_POLL_MILLIS, 50, 600_000, "50 to 600000 milliseconds")? {
            settings.stream_poll_interval = Duration::from_millis(millis.into());
        }
        settings.attachments = AttachmentLimits::from_env(env, crate::SERVICE)?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use caremesh_runtime::config::MapEnv;

    #[test]
    fn settings_are_read_and_bounded() {
        let env = MapEnv::default().set(PURGE_INTERVAL_SECONDS, "2");
        assert_eq!(
            MessagingSettings::from_env(&env).unwrap().purge_interval,
            Duration::from_secs(2)
        );
        let bad = MapEnv::default().set(PREKEY_LOW_WATERMARK, "1000");
        assert!(
            MessagingSettings::from_env(&bad)
                .unwrap_err()
                .to_string()
                .contains("0 to 100")
        );
    }
}

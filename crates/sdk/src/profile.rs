//! Where a CLI keeps its sessions: one JSON file per profile under a home directory, readable
//! only by the user, written atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::SdkError;
use crate::auth::Session;

/// A directory of profiles.
#[derive(Clone, Debug)]
pub struct ProfileStore {
    dir: PathBuf,
}

impl ProfileStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, profile: &str) -> Result<PathBuf, SdkError> {
        let valid = !profile.is_empty()
            && profile.len() <= 64
            && profile
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_'));
        if !valid {
            return Err(SdkError::Local(format!(
                "invalid profile name {profile:?}: use letters, digits, '-' and '_'"
            )));
        }
        Ok(self.dir.join(format!("{profile}.session.json")))
    }

    /// The session saved under `profile`, if any.
    pub fn load(&self, profile: &str) -> Result<Option<Session>, SdkError> {
        let path = self.path(profile)?;
        match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes = zeroize::Zeroizing::new(bytes);
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|error| SdkError::Local(format!("{} is not a session file: {error}", path.display())))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(SdkError::Local(format!("cannot read {}: {error}", path.display()))),
        }
    }

    /// Saves `session` under `profile` (mode 0600, directory 0700).
    pub fn save(&self, profile: &str, session: &Session) -> Result<(), SdkError> {
        let path = self.path(profile)?;
        let local = |error: std::io::Error| SdkError::Local(format!("cannot write {}: {error}", path.display()));
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&self.dir).map_err(local)?;
        // Sessions are credentials: the directory is the user's alone, even if it existed.
        #[cfg(unix)]
        std::fs::set_permissions(&self.dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(local)?;
        let json = zeroize::Zeroizing::new(
            serde_json::to_vec_pretty(session).map_err(|error| SdkError::Local(error.to_string()))?,
        );
        let tmp = self.dir.join(format!(".{profile}.tmp-{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(local)?;
        file.write_all(&json).map_err(local)?;
        file.sync_all().map_err(local)?;
        std::fs::rename(&tmp, &path).map_err(local)
    }

    /// Forgets `profile`'s session.
    pub fn remove(&self, profile: &str) -> Result<(), SdkError> {
        let path = self.path(profile)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(SdkError::Local(format!("cannot remove {}: {error}", path.display()))),
        }
    }
}

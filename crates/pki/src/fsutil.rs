//! File helpers: reading with path-carrying errors, and atomic writes with explicit modes.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Mode of certificate files (public material).
pub(crate) const CERT_MODE: u32 = 0o644;
/// Mode of private key files.
pub(crate) const KEY_MODE: u32 = 0o600;
/// Mode of a PKI directory created by [`crate::init`].
pub(crate) const DIR_MODE: u32 = 0o700;

/// Whether an atomic write may replace an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replace {
    /// Atomically replace an existing file (readers see the old or the new contents, never a mix).
    Allow,
    /// Fail with [`Error::AlreadyExists`] if the file exists (checked atomically by the rename).
    Never,
}

pub(crate) fn read_string(path: &Path, what: &'static str) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Reads a secret file into a buffer that is wiped when dropped.
pub(crate) fn read_secret(path: &Path, what: &'static str) -> Result<Zeroizing<String>> {
    read_string(path, what).map(Zeroizing::new)
}

/// Whether `path` exists (without following a dangling symlink into "missing").
pub(crate) fn exists(path: &Path, what: &'static str) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::Read {
            what,
            path: path.to_owned(),
            source,
        }),
    }
}

/// Creates `dir` (and missing parents) with mode 0700. An existing directory is left as it is.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(DIR_MODE);
    }
    builder.create(dir).map_err(|source| Error::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory is created with
/// `mode`, filled, synced to disk and renamed over (or, with [`Replace::Never`], next to) `path`.
/// A crash leaves either no file or the complete one (plus, at worst, a stray
/// `.caremesh-pki-*.tmp` file), never a half-written key.
pub(crate) fn write_atomic(
    path: &Path,
    contents: &[u8],
    mode: u32,
    replace: Replace,
    what: &'static str,
) -> Result<()> {
    let write_err = |source: io::Error| Error::Write {
        what,
        path: path.to_owned(),
        source,
    };
    let dir = parent_dir(path);
    let mut builder = tempfile::Builder::new();
    builder.prefix(".caremesh-pki-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut tmp = builder.tempfile_in(&dir).map_err(write_err)?;
    // The creation mode is filtered by the umask; set it exactly.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(write_err)?;
    }
    tmp.write_all(contents).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    let persisted = match replace {
        Replace::Allow => tmp.persist(path),
        Replace::Never => tmp.persist_noclobber(path),
    };
    if let Err(e) = persisted {
        return Err(if e.error.kind() == io::ErrorKind::AlreadyExists {
            Error::AlreadyExists {
                what,
                path: path.to_owned(),
            }
        } else {
            write_err(e.error)
        });
    }
    sync_dir(&dir);
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Makes the rename durable. Best effort: some file systems refuse to sync a directory, and the
/// file itself is already complete on disk.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

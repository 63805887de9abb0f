//! The crate's error type. Messages name the file involved; they never contain key material.

use std::io;
use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while generating, loading or writing PKI material.
///
/// `what` fields describe the file ("CA key", "certificate", ...); `reason` fields are produced by
/// this crate or by the parsing libraries and never quote the file's contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A file could not be written (or its temporary file created, synced or renamed).
    #[error("cannot write {what} {}: {source}", path.display())]
    Write {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The PKI directory could not be created.
    #[error("cannot create PKI directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A file exists where a new one was to be created; it is never overwritten.
    #[error("{what} {} already exists; refusing to overwrite it", path.display())]
    AlreadyExists { what: &'static str, path: PathBuf },

    /// Only one half of a certificate/key pair exists, and it cannot be completed without
    /// overwriting something.
    #[error(
        "{} exists but {} does not; delete {} to have a new pair generated",
        present.display(), missing.display(), present.display()
    )]
    IncompletePair { present: PathBuf, missing: PathBuf },

    /// A file exists but does not hold what it should (unparsable, wrong key, not issued by the
    /// CA, expired, wrong identity...).
    #[error("invalid {what} {}: {reason}", path.display())]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },

    /// A service or operator name that cannot be used in a certificate or file name.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        kind: &'static str,
        name: String,
        reason: &'static str,
    },

    /// Key generation or certificate signing failed, or the certificate parameters were rejected.
    #[error("cannot generate {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },

    /// A certificate's validity period cannot be represented.
    #[error("invalid validity period for {what}: {reason}")]
    Validity { what: String, reason: &'static str },

    /// The system random number generator failed.
    #[error("cannot generate a certificate serial number: {reason}")]
    Random { reason: String },
}

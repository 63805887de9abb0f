//! The error type of caremesh domain code. It carries no tonic types: a small [`ErrorCode`], a
//! stable UPPER_SNAKE reason (AIP-193), and a message that tells the caller what to fix.
//! [`crate::grpc::to_status`] maps it to a gRPC status in exactly one place.
//!
//! Messages never contain secrets or health data. Internal errors keep their cause for the log
//! and show the caller only a reference to it.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure, as the caller should understand it (one gRPC code each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    /// A concurrency conflict, e.g. a stale etag.
    Aborted,
    ResourceExhausted,
    FailedPrecondition,
    /// A dependency (database, another service) is down; retrying later may succeed.
    Unavailable,
    /// The RPC exists in the API but its behaviour is not built yet.
    Unimplemented,
    /// A bug or an unexpected fault; details go to the log only.
    Internal,
}

/// A domain error. Build one with the constructors, e.g. [`Error::invalid_argument`].
pub struct Error {
    code: ErrorCode,
    reason: Cow<'static, str>,
    message: String,
    metadata: Vec<(String, String)>,
    retry_after: Option<Duration>,
    cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub fn new(code: ErrorCode, reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            message: message.into(),
            metadata: Vec::new(),
            retry_after: None,
            cause: None,
        }
    }

    pub fn invalid_argument(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, reason, message)
    }

    pub fn unauthenticated(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, reason, message)
    }

    pub fn permission_denied(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, reason, message)
    }

    pub fn not_found(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, reason, message)
    }

    pub fn already_exists(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AlreadyExists, reason, message)
    }

    pub fn aborted(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Aborted, reason, message)
    }

    pub fn failed_precondition(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, reason, message)
    }

    /// Too many requests; the caller may retry after `retry_after`.
    pub fn resource_exhausted(
        reason: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
        retry_after: Duration,
    ) -> Self {
        let mut error = Self::new(ErrorCode::ResourceExhausted, reason, message);
        error.retry_after = Some(retry_after);
        error
    }

    pub fn unavailable(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, reason, message)
    }

    /// An RPC whose behaviour belongs to a later piece of work: `what` names what is missing.
    pub fn unimplemented(what: impl Into<String>) -> Self {
        Self::new(
            ErrorCode::Unimplemented,
            "NOT_IMPLEMENTED",
            format!("not implemented yet: {}", what.into()),
        )
    }

    /// An unexpected fault. `context` says what we were doing (for the log); the cause is logged
    /// and never sent to the caller.
    pub fn internal(context: &'static str, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let mut error = Self::new(ErrorCode::Internal, "INTERNAL", context);
        error.cause = Some(cause.into());
        error
    }

    /// Adds a key/value to the error's `ErrorInfo` metadata (no secrets, no health data).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.cause.as_deref()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("code", &self.code)
            .field("reason", &self.reason)
            .field("message", &self.message)
            .field("cause", &self.cause.as_ref().map(ToString::to_string))
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}: {}", self.code, self.reason, self.message)?;
        if let Some(cause) = &self.cause {
            write!(f, " ({cause})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Whether a database error means the database could not be reached or dropped the connection
/// (so retrying later may succeed), as opposed to a bad statement or a bug.
fn lost_database(error: &sea_orm::DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    use sea_orm::{DbErr, RuntimeErr};
    let runtime = match error {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(runtime) | DbErr::Exec(runtime) | DbErr::Query(runtime) => runtime,
        _ => return false,
    };
    let RuntimeErr::SqlxError(sqlx) = runtime else {
        return matches!(error, DbErr::Conn(_));
    };
    match sqlx.as_ref() {
        Sqlx::Io(_)
        | Sqlx::Tls(_)
        | Sqlx::Protocol(_)
        | Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::WorkerCrashed => true,
        // PostgreSQL: connection exceptions (08xxx), the server shutting down or starting
        // (57P01-57P03), too many connections (53300).
        Sqlx::Database(database) => database.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => matches!(error, DbErr::Conn(_)),
    }
}

/// Whether the database refused a text value the caller sent (PostgreSQL stores no NUL
/// character in text: SQLSTATE 22021 or 22P05).
fn unstorable_text(error: &sea_orm::DbErr) -> bool {
    use sea_orm::{DbErr, RuntimeErr};
    let (DbErr::Exec(RuntimeErr::SqlxError(sqlx)) | DbErr::Query(RuntimeErr::SqlxError(sqlx))) = error else {
        return false;
    };
    matches!(sqlx.as_ref(), sea_orm::sqlx::Error::Database(database)
        if database.code().is_some_and(|code| matches!(code.as_ref(), "22021" | "22P05")))
}

impl From<sea_orm::DbErr> for Error {
    fn from(error: sea_orm::DbErr) -> Self {
        match error {
            text if unstorable_text(&text) => Error::invalid_argument(
                "INVALID_TEXT",
                "a text field holds a character that cannot be stored (such as NUL): remove it",
            ),
            lost if lost_database(&lost) => {
                let mut mapped = Error::unavailable(
                    "DATABASE_UNAVAILABLE",
                    "the service's database is unavailable; retry shortly",
                );
                mapped.cause = Some(Box::new(lost));
                mapped
            }
            // SQLite's writer lock stayed taken longer than the busy timeout: a load problem the
            // caller can retry, not a bug.
            other if other.to_string().contains("database is locked") => {
                let mut mapped = Error::unavailable("DATABASE_BUSY", "the service's database is busy; retry shortly");
                mapped.cause = Some(Box::new(other));
                mapped
            }
            other => Error::internal("database operation failed", other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_database_connection_is_unavailable_and_a_bad_statement_is_internal() {
        use sea_orm::{DbErr, RuntimeErr};
        use std::sync::Arc;
        let dropped = DbErr::Query(RuntimeErr::SqlxError(Arc::new(sea_orm::sqlx::Error::Io(
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        ))));
        assert_eq!(Error::from(dropped).code(), ErrorCode::Unavailable);
        let closed = DbErr::Exec(RuntimeErr::SqlxError(Arc::new(sea_orm::sqlx::Error::PoolClosed)));
        assert_eq!(Error::from(closed).reason(), "DATABASE_UNAVAILABLE");
        let bad = DbErr::Query(RuntimeErr::Internal("syntax error at or near".to_owned()));
        assert_eq!(Error::from(bad).code(), ErrorCode::Internal);
        let decode = DbErr::Query(RuntimeErr::SqlxError(Arc::new(sea_orm::sqlx::Error::RowNotFound)));
        assert_eq!(Error::from(decode).code(), ErrorCode::Internal);
    }

    #[test]
    fn internal_errors_keep_their_cause_out_of_the_message() {
        let error = Error::internal("loading the session", std::io::Error::other("disk on fire"));
        assert_eq!(error.code(), ErrorCode::Internal);
        assert!(!error.message().contains("disk on fire"));
        assert!(
            error.to_string().contains("disk on fire"),
            "the log line keeps the cause"
        );
    }

    #[test]
    fn unimplemented_names_what_is_missing() {
        let error = Error::unimplemented("TOTP enrollment (auth-svc issue)");
        assert_eq!(error.code(), ErrorCode::Unimplemented);
        assert!(error.message().contains("TOTP enrollment"));
    }
}

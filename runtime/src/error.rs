//! The runtime's error type. Every message is lower-case and names what failed: the container id,
//! the path or the spec field.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// config.json could not be read or parsed.
    #[error("config.json in {bundle}: {reason}")]
    SpecFile { bundle: PathBuf, reason: String },

    /// A field of the spec has a value the runtime cannot honour.
    #[error("invalid spec: {field}: {reason}")]
    InvalidSpec { field: String, reason: String },

    /// A system call or file operation failed; `context` says on what. (The cause is part of the
    /// message, not a separate source, so that error chains do not print it twice.)
    #[error("{context}: {}", lower(source))]
    Io { context: String, source: io::Error },

    /// The container's init reported a failure (for example an executable that does not exist).
    #[error("{0}")]
    Init(String),

    #[error("container {0} does not exist")]
    NotFound(String),

    #[error("container {0} already exists")]
    AlreadyExists(String),

    /// The operation does not fit the container's current state.
    #[error("container {id}: {reason}")]
    State { id: String, reason: String },

    #[error("invalid container id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },

    #[error("{0}")]
    Unsupported(String),

    /// CRIU could not checkpoint or restore; `log` is its log file.
    #[error("{what}: {reason} (criu log: {})", log.display())]
    Criu { what: String, reason: String, log: PathBuf },

    /// CRIU is missing, too old, or does not run.
    #[error("{0}")]
    CriuUnavailable(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io { context: context.into(), source: source.into() }
    }

    pub fn spec(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidSpec { field: field.into(), reason: reason.into() }
    }

    /// The same error with `what` (a spec field, say) in front of an I/O error's context.
    pub fn prefixed(self, what: &str) -> Error {
        match self {
            Error::Io { context, source } => Error::Io { context: format!("{what}: {context}"), source },
            other => other,
        }
    }

    /// True when the error is an I/O error of this kind (for callers that tolerate "already gone").
    pub fn is_io_kind(&self, kind: io::ErrorKind) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == kind)
    }
}

/// Adds "what was being done" to `io::Error`s and `nix` errnos.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<io::Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}

/// An I/O error's text in lower case, as runc prints it ("no such file or directory").
pub(crate) fn lower(error: &io::Error) -> String {
    let text = error.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    text.to_lowercase()
}

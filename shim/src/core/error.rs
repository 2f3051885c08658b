//! The task core's error: a class containerd understands, and a message naming what failed. The
//! transports map the class to a status code in one place (`api::status`).

use myshim_runtime::Error as RuntimeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    Unimplemented,
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    pub kind: ErrorKind,
    pub message: String,
}

impl TaskError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        TaskError { kind, message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }

    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unimplemented, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The same error with what was being done in front: "create c1: …".
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        TaskError { kind: self.kind, message: format!("{what}: {}", self.message) }
    }
}

impl From<RuntimeError> for TaskError {
    fn from(error: RuntimeError) -> Self {
        let kind = match &error {
            RuntimeError::NotFound(_) => ErrorKind::NotFound,
            RuntimeError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            RuntimeError::SpecFile { .. } | RuntimeError::InvalidSpec { .. } | RuntimeError::InvalidId { .. } => {
                ErrorKind::InvalidArgument
            }
            RuntimeError::State { .. } | RuntimeError::CriuUnavailable(_) => ErrorKind::FailedPrecondition,
            RuntimeError::Unsupported(_) => ErrorKind::Unimplemented,
            RuntimeError::Init(_) | RuntimeError::Io { .. } | RuntimeError::Criu { .. } => ErrorKind::Internal,
        };
        TaskError::new(kind, error.to_string())
    }
}

pub type TaskResult<T> = Result<T, TaskError>;

//! The one place where task errors become wire status codes (gRPC's numbering, which ttrpc shares).

use crate::core::error::{ErrorKind, TaskError};

/// The gRPC/ttrpc status code for an error class.
pub fn code_of(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::NotFound => 5,
        ErrorKind::AlreadyExists => 6,
        ErrorKind::FailedPrecondition => 9,
        ErrorKind::InvalidArgument => 3,
        ErrorKind::Unimplemented => 12,
        ErrorKind::Internal => 2, // Unknown: what containerd's runc shim returns for runtime failures
    }
}

pub fn to_ttrpc(error: &TaskError) -> ttrpc::Status {
    let code = match error.kind {
        ErrorKind::NotFound => ttrpc::Code::NOT_FOUND,
        ErrorKind::AlreadyExists => ttrpc::Code::ALREADY_EXISTS,
        ErrorKind::FailedPrecondition => ttrpc::Code::FAILED_PRECONDITION,
        ErrorKind::InvalidArgument => ttrpc::Code::INVALID_ARGUMENT,
        ErrorKind::Unimplemented => ttrpc::Code::UNIMPLEMENTED,
        ErrorKind::Internal => ttrpc::Code::UNKNOWN,
    };
    debug_assert_eq!(code as i32, code_of(error.kind));
    ttrpc::get_status(code, error.message.clone())
}

pub fn to_grpc(error: &TaskError) -> tonic::Status {
    tonic::Status::new(tonic::Code::from_i32(code_of(error.kind)), error.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_grpc_numbering() {
        assert_eq!(code_of(ErrorKind::NotFound), 5);
        assert_eq!(to_ttrpc(&TaskError::already_exists("x")).code(), ttrpc::Code::ALREADY_EXISTS);
        assert_eq!(to_ttrpc(&TaskError::unimplemented("x")).code(), ttrpc::Code::UNIMPLEMENTED);
        assert_eq!(to_ttrpc(&TaskError::precondition("x")).code(), ttrpc::Code::FAILED_PRECONDITION);
        assert_eq!(to_ttrpc(&TaskError::invalid("x")).code(), ttrpc::Code::INVALID_ARGUMENT);
        assert_eq!(to_grpc(&TaskError::not_found("x")).code(), tonic::Code::NotFound);
        assert_eq!(to_grpc(&TaskError::internal("x")).code(), tonic::Code::Unknown);
    }
}

//! The one place where task errors become wire status codes. ttrpc shares gRPC's numbering, so the
//! ttrpc code is the table and the gRPC code is the same number.

use crate::core::error::{ErrorKind, TaskError};

fn code(kind: ErrorKind) -> ttrpc::Code {
    match kind {
        ErrorKind::NotFound => ttrpc::Code::NOT_FOUND,
        ErrorKind::AlreadyExists => ttrpc::Code::ALREADY_EXISTS,
        ErrorKind::FailedPrecondition => ttrpc::Code::FAILED_PRECONDITION,
        ErrorKind::InvalidArgument => ttrpc::Code::INVALID_ARGUMENT,
        ErrorKind::Unimplemented => ttrpc::Code::UNIMPLEMENTED,
        // Unknown: what containerd's runc shim returns for runtime failures.
        ErrorKind::Internal => ttrpc::Code::UNKNOWN,
    }
}

pub fn to_ttrpc(error: &TaskError) -> ttrpc::Status {
    ttrpc::get_status(code(error.kind), error.message.clone())
}

pub fn to_grpc(error: &TaskError) -> tonic::Status {
    tonic::Status::new(tonic::Code::from_i32(code(error.kind) as i32), error.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_transports_get_the_same_codes() {
        assert_eq!(to_ttrpc(&TaskError::already_exists("x")).code(), ttrpc::Code::ALREADY_EXISTS);
        assert_eq!(to_ttrpc(&TaskError::unimplemented("x")).code(), ttrpc::Code::UNIMPLEMENTED);
        assert_eq!(to_ttrpc(&TaskError::precondition("x")).code(), ttrpc::Code::FAILED_PRECONDITION);
        assert_eq!(to_ttrpc(&TaskError::invalid("x")).code(), ttrpc::Code::INVALID_ARGUMENT);
        assert_eq!(to_grpc(&TaskError::not_found("x")).code(), tonic::Code::NotFound);
        assert_eq!(to_grpc(&TaskError::already_exists("x")).code(), tonic::Code::AlreadyExists);
        assert_eq!(to_grpc(&TaskError::precondition("x")).code(), tonic::Code::FailedPrecondition);
        assert_eq!(to_grpc(&TaskError::invalid("x")).code(), tonic::Code::InvalidArgument);
        assert_eq!(to_grpc(&TaskError::unimplemented("x")).code(), tonic::Code::Unimplemented);
        assert_eq!(to_grpc(&TaskError::internal("x")).code(), tonic::Code::Unknown);
    }
}

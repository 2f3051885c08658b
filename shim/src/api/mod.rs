//! containerd's wire protocol around the task core: conversions, the transports, event envelopes.

pub mod events;
pub mod grpc;
pub mod metrics;
pub mod status;
pub mod task;
pub mod ttrpc;

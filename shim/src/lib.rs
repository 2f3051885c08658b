//! The shim's parts, as a library for its binary (`main.rs`) and its fuzz targets (`fuzz/`).
//!
//! `bootstrap` answers containerd's `start` and `delete`; `serve` is the daemon; `api` holds the
//! transport-neutral task functions and the thin ttrpc and gRPC adapters over `core`, the task
//! lifecycle.

pub mod api;
pub mod bootstrap;
pub mod config;
pub mod containerd_channel;
pub mod core;
pub mod flags;
pub mod keepalive;
pub mod logging;
pub mod publisher;
pub mod serve;

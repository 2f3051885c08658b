//! Test harness: private containerd instances, locally built images, and leak checks.
//!
//! Every instance gets its own directory (root, state, sockets, config, log) and its own containerd
//! namespace, so tests run in parallel and never touch the host's containerd. Dropping an instance
//! stops the containerd it started (by pid) and removes whatever its containers left behind, also when
//! a test fails.

pub mod api;
pub mod bundle;
pub mod containerd;
pub mod cri;
pub mod direct;
pub mod docker;
pub mod events;
pub mod host;
pub mod image;
pub mod leaks;
pub mod node;
pub mod paths;
pub mod podman;
pub mod procfs;
pub mod ttrpc;

pub use containerd::{Containerd, Version};

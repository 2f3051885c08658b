//! An OCI runtime library: it creates, starts, signals and destroys containers from an OCI bundle,
//! with namespaces, mounts, `pivot_root` and cgroups. It knows nothing of containerd; the shim and the
//! runc-compatible CLI are its callers.
//!
//! How processes are started without running Rust code after `clone` in a threaded caller is
//! described in [`process`].

pub mod cgroups;
pub mod checkpoint;
pub mod container;
pub mod error;
pub mod features;
pub mod hooks;
pub mod mounts;
pub mod mount_api;
pub mod process;
mod rootfs;
mod seccomp;
pub mod spec;
pub mod state;
pub mod sys;
mod sysctl;
pub mod validate;

pub use container::{Container, CreateOptions, ExecOptions, Runtime, Started, Stdio};
pub use error::{Error, Result};
pub use mounts::RootfsMount;
pub use process::run_helper_if_requested;
pub use state::State;

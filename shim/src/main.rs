//! `containerd-shim-myshim-v1`: a containerd runtime v2 shim that runs containers itself.
//!
//! Modes: `start` and `delete` (run by containerd), `-info` and `-v`, the internal `serve` (the
//! daemon `start` launches), and the runtime's container-init helper.

use std::io::Write;

use myshim_shim::{bootstrap, flags, logging, serve};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything else (and before any thread exists): maybe we are a container's init.
    myshim_runtime::run_helper_if_requested();
    // Run as a script's interpreter or through a container's view of the binary: say no before
    // reading stdin or a configuration file.
    if let Err(reason) = myshim_runtime::process::executable::check_invocation() {
        eprintln!("containerd-shim-myshim-v1: {reason}");
        return ExitCode::FAILURE;
    }

    let flags = match flags::parse(std::env::args().skip(1)) {
        Ok(flags) => flags,
        Err(e) => {
            println!("containerd-shim-myshim-v1: {e}");
            return ExitCode::FAILURE;
        }
    };
    if flags.version {
        print!("{}", bootstrap::info::version_text());
        return ExitCode::SUCCESS;
    }
    if flags.info {
        return write_stdout(&bootstrap::info::runtime_info());
    }
    let bundle = flags.bundle.clone().or_else(|| std::env::current_dir().ok()).unwrap_or_default();
    logging::init(&bundle, flags.debug);
    match flags.action.as_deref() {
        // containerd reads start's stdout and stderr as one reply: errors go to stdout too.
        Some("start") => match bootstrap::start::start(&flags) {
            Ok(reply) => write_stdout(reply.as_bytes()),
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "start failed");
                println!("start {}: {e:#}", flags.id);
                ExitCode::FAILURE
            }
        },
        Some("delete") => match bootstrap::delete::delete(&flags) {
            Ok(response) => write_stdout(&response),
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "delete failed");
                eprintln!("delete {}: {e:#}", flags.id);
                ExitCode::FAILURE
            }
        },
        Some("serve") => match serve::serve(&flags) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "shim daemon failed");
                ExitCode::FAILURE
            }
        },
        Some(other) => {
            println!("containerd-shim-myshim-v1: unknown action {other:?} (expected start or delete)");
            ExitCode::FAILURE
        }
        None => {
            println!("containerd-shim-myshim-v1: no action given (expected start or delete)");
            ExitCode::FAILURE
        }
    }
}

fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

//! A process's standard streams. The container gets pipes; the shim copies between them and what the
//! client named: fifos (created by the client before Create) or nothing.
//!
//! The shim keeps a reader open on every output fifo and a writer on the input fifo, so the container
//! never gets EPIPE and the input never sees a false end while containerd restarts or a client
//! re-attaches; CloseIO drops the input writer.

use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use super::error::{TaskError, TaskResult};
use super::types::StdioPaths;

pub struct ProcessIo {
    input: Option<JoinHandle<()>>,
    outputs: Vec<JoinHandle<()>>,
    /// Our writer on the stdin fifo; dropping it lets the input copy see end-of-file once the client
    /// has closed its own end.
    stdin_keeper: Mutex<Option<pipe::Sender>>,
    /// Readers held on output fifos (never read), so writes never fail while nobody else reads.
    _output_keepers: Vec<pipe::Receiver>,
}

/// What the container's init gets, and what the shim keeps.
pub async fn setup(paths: &StdioPaths) -> TaskResult<(myshim_runtime::Stdio, ProcessIo)> {
    for (name, path) in [("stdin", &paths.stdin), ("stdout", &paths.stdout), ("stderr", &paths.stderr)] {
        if let Some((scheme, _)) = path.split_once("://") {
            return Err(TaskError::unimplemented(format!("{name} {path:?}: stdio scheme {scheme}:// is not supported")));
        }
    }
    let null = || -> TaskResult<OwnedFd> {
        std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| TaskError::internal(format!("open /dev/null: {e}")))
    };
    let mut io = ProcessIo { input: None, outputs: Vec::new(), stdin_keeper: Mutex::new(None), _output_keepers: Vec::new() };

    let stdin = if paths.stdin.is_empty() {
        null()?
    } else {
        let fifo_reader = pipe::OpenOptions::new().open_receiver(&paths.stdin).map_err(|e| fifo_error("stdin", &paths.stdin, e))?;
        let keeper = pipe::OpenOptions::new().open_sender(&paths.stdin).map_err(|e| fifo_error("stdin", &paths.stdin, e))?;
        *io.stdin_keeper.lock().unwrap() = Some(keeper);
        let (to_container, container_end) = pipe::pipe().map_err(|e| TaskError::internal(format!("create stdin pipe: {e}")))?;
        io.input = Some(tokio::spawn(copy_input(fifo_reader, to_container)));
        container_end.into_blocking_fd().map_err(|e| TaskError::internal(format!("stdin pipe: {e}")))?
    };
    let mut output = |name: &str, path: &str| -> TaskResult<OwnedFd> {
        if path.is_empty() {
            return null();
        }
        let keeper = pipe::OpenOptions::new().open_receiver(path).map_err(|e| fifo_error(name, path, e))?;
        let fifo_writer = pipe::OpenOptions::new().open_sender(path).map_err(|e| fifo_error(name, path, e))?;
        io._output_keepers.push(keeper);
        let (container_end, from_container) = pipe::pipe().map_err(|e| TaskError::internal(format!("create {name} pipe: {e}")))?;
        io.outputs.push(tokio::spawn(copy_output(from_container, fifo_writer)));
        container_end.into_blocking_fd().map_err(|e| TaskError::internal(format!("{name} pipe: {e}")))
    };
    let stdout = output("stdout", &paths.stdout)?;
    let stderr = output("stderr", &paths.stderr)?;
    Ok((myshim_runtime::Stdio { stdin, stdout, stderr }, io))
}

fn fifo_error(name: &str, path: &str, e: std::io::Error) -> TaskError {
    TaskError::invalid(format!("open {name} fifo {path}: {}", e.to_string().to_lowercase()))
}

async fn copy_input(mut from: pipe::Receiver, mut to: pipe::Sender) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}

async fn copy_output(mut from: pipe::Receiver, mut to: pipe::Sender) {
    // Ends when every process holding the pipe has exited; dropping `to` then gives the client EOF.
    let _ = tokio::io::copy(&mut from, &mut to).await;
}

impl ProcessIo {
    /// Waits (bounded) until the process's output has been copied out.
    pub async fn wait_for_output(&mut self, timeout: Duration) {
        let copies = std::mem::take(&mut self.outputs);
        let all = async {
            for copy in copies {
                let _ = copy.await;
            }
        };
        let _ = tokio::time::timeout(timeout, all).await;
    }

    /// Lets stdin reach end-of-file once the client closes its end.
    pub fn close_stdin(&self) {
        self.stdin_keeper.lock().unwrap().take();
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        for copy in self.input.iter().chain(&self.outputs) {
            copy.abort();
        }
    }
}

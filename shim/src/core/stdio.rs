//! A process's standard streams, in every form containerd names them:
//!
//! * a fifo path (created by the client before Create): the container gets a pipe and the shim copies
//!   between pipe and fifo. The shim keeps a reader open on every output fifo and a writer on the input
//!   fifo, so the container never gets EPIPE and the input never sees a false end while containerd
//!   restarts or a client re-attaches; CloseIO drops the input writer;
//! * empty: `/dev/null`;
//! * `file:///path` (stdout; stderr goes to the same file): the container writes to the file directly;
//! * `binary:///path?k=v`: a logging driver started with the container's stdout and stderr pipes as fds
//!   3 and 4 and a readiness pipe as fd 5; Create waits until it is ready, Delete stops it with SIGTERM
//!   and, after 12 s, SIGKILL.
//!
//! With a terminal the container gets a pty instead, and the shim copies stdin to its master and its
//! master to stdout (stderr is unused). Any other scheme is an error.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::error::{TaskError, TaskResult};
use super::sync::LockAnyway;
use super::types::{Exit, StdioPaths};

/// How long Create waits for a logging driver to say it is ready.
const LOGGER_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a logging driver gets between SIGTERM and SIGKILL.
const LOGGER_STOP_TIMEOUT: Duration = Duration::from_secs(12);
/// Draining output gives up when nothing moved for this long (the client stopped reading).
const OUTPUT_STALL: Duration = Duration::from_secs(1);
/// How long Create and Exec wait for the client to open an output fifo for reading.
const OUTPUT_READER_WAIT: Duration = Duration::from_secs(5);

type Sink = Box<dyn AsyncWrite + Send + Unpin>;

/// Who the streams belong to, and how to wait for a child the IO starts (a logging driver).
pub struct IoContext<'a> {
    pub container_id: &'a str,
    pub namespace: &'a str,
    /// Registers a pid with the shim's reaper and returns its exit.
    pub watch_pid: &'a (dyn Fn(u32) -> oneshot::Receiver<Exit> + Sync),
}

struct Logger {
    pid: u32,
    exited: oneshot::Receiver<Exit>,
}

pub struct ProcessIo {
    input: Option<JoinHandle<()>>,
    outputs: Vec<JoinHandle<()>>,
    /// Bytes the output copies moved so far, to tell a slow drain from a stuck one.
    copied: Arc<AtomicU64>,
    stdin_keeper: Mutex<Option<pipe::Sender>>,
    /// Readers held on output fifos (never read), and pipe ends that must outlive the container's.
    _keep_open: Vec<OwnedFd>,
    /// Until the terminal arrives: the client's stdin and the sink for the terminal's output.
    terminal_ends: Option<(Option<pipe::Receiver>, Option<Sink>)>,
    /// A duplicate of the terminal's master, for ResizePty.
    console: Option<OwnedFd>,
    logger: Option<Logger>,
}

enum Scheme<'a> {
    Fifo,
    File(&'a str),
    Binary(&'a str),
}

fn scheme<'a>(name: &str, value: &'a str) -> TaskResult<Scheme<'a>> {
    match value.split_once("://") {
        None => Ok(Scheme::Fifo),
        Some(("file", rest)) => Ok(Scheme::File(rest)),
        Some(("binary", rest)) => Ok(Scheme::Binary(rest)),
        Some((other, _)) => Err(TaskError::invalid(format!("{name} {value:?}: unsupported stdio scheme {other}://"))),
    }
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> TaskError {
    move |e| TaskError::invalid(format!("{what}: {}", e.to_string().to_lowercase()))
}

fn null() -> TaskResult<OwnedFd> {
    std::fs::File::options().read(true).write(true).open("/dev/null").map(OwnedFd::from).map_err(io_error("open /dev/null".into()))
}

fn blocking(end: impl FnOnce() -> std::io::Result<OwnedFd>, what: &str) -> TaskResult<OwnedFd> {
    end().map_err(|e| TaskError::internal(format!("{what}: {e}")))
}

/// Opens a fifo for writing once the client reads it, then a reader of our own, held.
///
/// The writer waits for the client's reader (a non-blocking open fails with ENXIO until there is
/// one). A client opens its reader with a blocking open, which returns only when a writer opens
/// after it began: a writer that came and went before (a short exec's output, copied and closed
/// within a millisecond while containerd's goroutine had not opened yet) leaves the client waiting
/// for good — containerd's "exec process exits but the io is still held", once in ~800 ExecSyncs
/// under churn. runc's shim opens its writer blocking for the same reason. Our reader, opened next,
/// keeps writes from failing with EPIPE while the client is away (containerd restarting). A client
/// that has not opened its reader after [`OUTPUT_READER_WAIT`] gets the writer anyway.
async fn open_output_fifo(name: &str, path: &str, keep_open: &mut Vec<OwnedFd>) -> TaskResult<pipe::Sender> {
    let failed = || io_error(format!("open {name} fifo {path}"));
    let deadline = Instant::now() + OUTPUT_READER_WAIT;
    let mut pause = Duration::from_micros(100);
    let writer = loop {
        match pipe::OpenOptions::new().open_sender(path) {
            Ok(writer) => break Some(writer),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break None,
            Err(e) => return Err(failed()(e)),
        }
    };
    let keeper = pipe::OpenOptions::new().open_receiver(path).map_err(failed())?;
    let writer = match writer {
        Some(writer) => writer,
        None => {
            tracing::warn!(fifo = path, "nobody opened the {name} fifo for reading within {OUTPUT_READER_WAIT:?}");
            pipe::OpenOptions::new().open_sender(path).map_err(failed())?
        }
    };
    keep_open.push(keeper.into_nonblocking_fd().map_err(io_error(format!("{name} fifo {path}")))?);
    Ok(writer)
}

/// Opens `file://` output: parent directories 0755, the file 0644, appending.
fn open_log_file(path: &str) -> TaskResult<std::fs::File> {
    let path = Path::new(path);
    if !path.is_absolute() {
        return Err(TaskError::invalid(format!("file://{}: not an absolute path", path.display())));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(format!("create {}", parent.display())))?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::File::options().create(true).append(true).mode(0o644).open(path).map_err(io_error(format!("open {}", path.display())))
}

/// Sets up the streams. Returns what the container's process gets as 0, 1, 2, and what the shim keeps.
pub async fn setup(paths: &StdioPaths, context: &IoContext<'_>) -> TaskResult<(myshim_runtime::Stdio, ProcessIo)> {
    let mut io = ProcessIo {
        input: None,
        outputs: Vec::new(),
        copied: Arc::default(),
        stdin_keeper: Mutex::new(None),
        _keep_open: Vec::new(),
        terminal_ends: None,
        console: None,
        logger: None,
    };
    if !paths.stdin.is_empty() && !matches!(scheme("stdin", &paths.stdin)?, Scheme::Fifo) {
        return Err(TaskError::invalid(format!("stdin {:?}: only a fifo can be stdin", paths.stdin)));
    }
    let stdout_scheme = scheme("stdout", &paths.stdout)?;
    if !paths.stderr.is_empty() && matches!(stdout_scheme, Scheme::Fifo) {
        scheme("stderr", &paths.stderr)?;
    }

    // stdin: a fifo read by the shim, plus a writer held so the copy sees no end until CloseIO.
    let stdin_reader = if paths.stdin.is_empty() {
        None
    } else {
        let reader = pipe::OpenOptions::new().open_receiver(&paths.stdin).map_err(io_error(format!("open stdin fifo {}", paths.stdin)))?;
        let keeper = pipe::OpenOptions::new().open_sender(&paths.stdin).map_err(io_error(format!("open stdin fifo {}", paths.stdin)))?;
        *io.stdin_keeper.locked() = Some(keeper);
        Some(reader)
    };

    if paths.terminal {
        let sink: Option<Sink> = match stdout_scheme {
            Scheme::Fifo if paths.stdout.is_empty() => None,
            Scheme::Fifo => Some(Box::new(open_output_fifo("stdout", &paths.stdout, &mut io._keep_open).await?)),
            Scheme::File(path) => Some(Box::new(tokio::fs::File::from_std(open_log_file(path)?))),
            Scheme::Binary(uri) => {
                let (stdout, _stderr) = start_logger(uri, context, &mut io).await?;
                Some(Box::new(stdout))
            }
        };
        io.terminal_ends = Some((stdin_reader, sink));
        return Ok((myshim_runtime::Stdio { stdin: null()?, stdout: null()?, stderr: null()? }, io));
    }

    let stdin = match stdin_reader {
        None => null()?,
        Some(reader) => {
            let (to_container, container_end) = pipe::pipe().map_err(io_error("create stdin pipe".into()))?;
            io.input = Some(tokio::spawn(copy_input(reader, to_container)));
            blocking(|| container_end.into_blocking_fd(), "stdin pipe")?
        }
    };
    let (stdout, stderr) = match stdout_scheme {
        Scheme::File(path) => {
            let file = OwnedFd::from(open_log_file(path)?);
            let copy = file.try_clone().map_err(io_error(format!("file://{path}")))?;
            (file, copy)
        }
        Scheme::Binary(uri) => {
            let (stdout, stderr) = start_logger(uri, context, &mut io).await?;
            (blocking(|| stdout.into_blocking_fd(), "stdout pipe")?, blocking(|| stderr.into_blocking_fd(), "stderr pipe")?)
        }
        Scheme::Fifo => (output_to_fifo("stdout", &paths.stdout, &mut io).await?, output_to_fifo("stderr", &paths.stderr, &mut io).await?),
    };
    Ok((myshim_runtime::Stdio { stdin, stdout, stderr }, io))
}

/// The container's end of a pipe whose other end the shim copies into the fifo at `path`.
async fn output_to_fifo(name: &str, path: &str, io: &mut ProcessIo) -> TaskResult<OwnedFd> {
    if path.is_empty() {
        return null();
    }
    let fifo = open_output_fifo(name, path, &mut io._keep_open).await?;
    let (container_end, from_container) = pipe::pipe().map_err(io_error(format!("create {name} pipe")))?;
    io.outputs.push(tokio::spawn(copy_output(from_container, Box::new(fifo), io.copied.clone())));
    blocking(|| container_end.into_blocking_fd(), &format!("{name} pipe"))
}

/// Starts a `binary://` logging driver. Returns the write ends of the stdout and stderr pipes it reads.
async fn start_logger(uri: &str, context: &IoContext<'_>, io: &mut ProcessIo) -> TaskResult<(pipe::Sender, pipe::Sender)> {
    let (program, args) = parse_binary_uri(uri)?;
    let (stdout_w, stdout_r) = pipe::pipe().map_err(io_error("create the logger's stdout pipe".into()))?;
    let (stderr_w, stderr_r) = pipe::pipe().map_err(io_error("create the logger's stderr pipe".into()))?;
    let (ready_w, ready_r) = pipe::pipe().map_err(io_error("create the logger's ready pipe".into()))?;
    let fds = [
        blocking(|| stdout_r.into_blocking_fd(), "logger stdout")?,
        blocking(|| stderr_r.into_blocking_fd(), "logger stderr")?,
        blocking(|| ready_w.into_blocking_fd(), "logger ready")?,
    ];
    let devnull = null()?;
    let mut argv = vec![program.display().to_string()];
    argv.extend(args);
    let env = vec![format!("CONTAINER_ID={}", context.container_id), format!("CONTAINER_NAMESPACE={}", context.namespace)];
    let placed = [(&devnull, 0), (&devnull, 1), (&devnull, 2), (&fds[0], 3), (&fds[1], 4), (&fds[2], 5)];
    let pid = myshim_runtime::process::spawn::spawn(&program, &argv, &env, &placed)
        .map_err(io_error(format!("start the logging driver {}", program.display())))?;
    let exited = (context.watch_pid)(pid);
    drop(fds);
    io.logger = Some(Logger { pid, exited });

    // Ready when the driver writes a byte or closes its end.
    let mut ready_r = ready_r;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(LOGGER_READY_TIMEOUT, ready_r.read(&mut byte)).await {
        Ok(Ok(_)) => Ok((stdout_w, stderr_w)),
        Ok(Err(e)) => Err(TaskError::internal(format!("logging driver {}: {e}", program.display()))),
        Err(_) => Err(TaskError::internal(format!("logging driver {} not ready after {LOGGER_READY_TIMEOUT:?}", program.display()))),
    }
}

/// `binary:///path/to/driver?key=value&k2=v2` → the program and its arguments `key value k2 v2`.
fn parse_binary_uri(uri: &str) -> TaskResult<(PathBuf, Vec<String>)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let path = percent_decode(path);
    if !path.starts_with('/') {
        return Err(TaskError::invalid(format!("binary://{uri}: the driver must be an absolute path")));
    }
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        args.push(percent_decode(key));
        args.push(percent_decode(value));
    }
    Ok((PathBuf::from(path), args))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn copy_input(mut from: pipe::Receiver, mut to: pipe::Sender) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}

/// The buffer an output copy starts with, and the largest it grows to: a pod's shim holds one copy per
/// stream of every container, most of them quiet, so only a stream that fills its buffer gets more.
const OUTPUT_BUFFER_START: usize = 4 << 10;
const OUTPUT_BUFFER_MAX: usize = 64 << 10;

/// Copies until every writer of `from` is gone (for a pty master: until the read fails with EIO once
/// every slave is closed); dropping `to` then gives the client end-of-file.
async fn copy_output(mut from: impl AsyncRead + Unpin, mut to: Sink, copied: Arc<AtomicU64>) {
    let mut buffer = vec![0u8; OUTPUT_BUFFER_START];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if n == buffer.len() && buffer.len() < OUTPUT_BUFFER_MAX {
            buffer.resize(buffer.len() * 2, 0);
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
        copied.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.flush().await;
}

impl ProcessIo {
    /// Connects a terminal's master: stdin → master, master → stdout.
    pub fn attach_terminal(&mut self, master: OwnedFd) -> TaskResult<()> {
        let Some((stdin, stdout)) = self.terminal_ends.take() else {
            return Ok(());
        };
        let nonblocking = |fd: &OwnedFd| fcntl(fd.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK | OFlag::O_RDWR)).map(drop);
        nonblocking(&master).map_err(|e| TaskError::internal(format!("terminal: {e}")))?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| TaskError::internal(format!("terminal: {e}")));
        self.console = Some(dup(&master)?);
        if let Some(stdin) = stdin {
            let to_master = pipe::Sender::from_owned_fd_unchecked(dup(&master)?).map_err(io_error("terminal input".into()))?;
            self.input = Some(tokio::spawn(copy_input(stdin, to_master)));
        }
        if let Some(stdout) = stdout {
            let from_master = pipe::Receiver::from_owned_fd_unchecked(master).map_err(io_error("terminal output".into()))?;
            self.outputs.push(tokio::spawn(copy_output(from_master, stdout, self.copied.clone())));
        }
        Ok(())
    }

    /// Sets the terminal's size; without a terminal there is nothing to do.
    pub fn resize(&self, width: u32, height: u32) -> TaskResult<()> {
        match &self.console {
            Some(master) => myshim_runtime::sys::set_window_size(master.as_fd(), width as u16, height as u16)
                .map_err(|e| TaskError::internal(format!("resize the terminal: {e}"))),
            None => Ok(()),
        }
    }

    /// Waits until the process's output has been copied out, at most `limit`, and gives up sooner when
    /// the copies stop moving (a client that went away leaves its fifo full). Copies still running
    /// then are stopped when this is dropped.
    pub async fn wait_for_output(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut moved = self.copied.load(Ordering::Relaxed);
        for copy in &mut self.outputs {
            loop {
                if tokio::time::timeout(OUTPUT_STALL, &mut *copy).await.is_ok() {
                    break;
                }
                let now = self.copied.load(Ordering::Relaxed);
                if now == moved || Instant::now() >= deadline {
                    tracing::warn!(copied = now, "output not drained: nobody reads it");
                    return;
                }
                moved = now;
            }
        }
    }

    /// Lets stdin reach end-of-file once the client closes its end.
    pub fn close_stdin(&self) {
        self.stdin_keeper.locked().take();
    }

    /// Stops the copies and the logging driver (SIGTERM, then SIGKILL after 12 s).
    pub async fn close(mut self) {
        if let Some(logger) = self.logger.take() {
            let _ = myshim_runtime::sys::send_signal(logger.pid, libc::SIGTERM as u32);
            let mut exited = logger.exited;
            if tokio::time::timeout(LOGGER_STOP_TIMEOUT, &mut exited).await.is_err() {
                let _ = myshim_runtime::sys::send_signal(logger.pid, libc::SIGKILL as u32);
                let _ = tokio::time::timeout(Duration::from_secs(2), exited).await;
            }
        }
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        for copy in self.input.iter().chain(&self.outputs) {
            copy.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_uri_becomes_program_and_arguments() {
        let (program, args) = parse_binary_uri("/usr/bin/log%20driver?a=1&path=%2Fvar%2Flog&flag").unwrap();
        assert_eq!(program, PathBuf::from("/usr/bin/log driver"));
        assert_eq!(args, ["a", "1", "path", "/var/log", "flag", ""]);
        assert!(parse_binary_uri("relative/driver").is_err());
    }

    #[test]
    fn unknown_schemes_are_errors() {
        assert!(matches!(scheme("stdout", "/run/fifo"), Ok(Scheme::Fifo)));
        assert!(matches!(scheme("stdout", "file:///x"), Ok(Scheme::File("/x"))));
        let err = scheme("stdout", "tcp://host:1").err().unwrap();
        assert!(err.message.contains("unsupported stdio scheme tcp://"), "{}", err.message);
    }
}
